"""What `pgdr wal stream` asks of the server, over a normal SQL session: that it can stream at all (preflight), the
replication slot, and one sample per round of how far the server and the receiver are. And what pg_receivewal's
own errors mean: a refusal that needs a fix (named: the exact setting or pg_hba.conf line) or a hiccup to retry.

The preflight reads what SQL can see: wal_level, max_wal_senders, max_replication_slots and the role's rights. A
missing replication line in pg_hba.conf is only seen when pg_receivewal connects; `receiver_refusal` turns its
FATAL line into the line to add.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from pgdr.errors import AuthenticationFailed, IntegrityError, PgdrError, Refused, ServerUnreachable, StorageError
from pgdr.postgres.connect import Endpoint, connect, session
from pgdr.wal.archive import DEFAULT_SEGMENT_SIZE, parse_lsn

DOCKER_CONF = "official Docker image: command: postgres -c {setting}"
DOCKER_HBA = "official Docker image: $PGDATA/pg_hba.conf, i.e. /var/lib/postgresql/data/pg_hba.conf"
HBA_REFUSAL = re.compile(r'no pg_hba\.conf entry for replication connection from host "(?P<host>[^"]+)", '
                         r'user "(?P<user>[^"]+)"')
ROLE_REFUSALS = ("must be superuser or replication role", "permission denied to start WAL sender")
TRANSIENT_HINT = "see the server's log; pgdr wal stream retries on its own"
SAMPLE_SQL = ("SELECT pg_current_wal_lsn()::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8), "
              "(SELECT r.write_lsn::text FROM pg_replication_slots s JOIN pg_stat_replication r "
              "ON r.pid = s.active_pid WHERE s.slot_name = %s)")


@dataclass(frozen=True)
class ServerFacts:
    """What the preflight learnt: the identity written to wal/status.json, and where pg_hba.conf is."""

    system_identifier: str
    segment_size: int
    hba_file: str


def where(endpoint: Endpoint) -> str:
    return f"{endpoint.host}:{endpoint.port}"


def setting_problem(endpoint: Endpoint, wal_level: str, senders: int, slots: int) -> Refused | None:
    """The first server setting that forbids streaming, with the fix (pure)."""
    if wal_level == "minimal":
        return Refused(f"server {where(endpoint)} has wal_level = minimal: it writes too little WAL to stream",
                       "set wal_level = replica and max_wal_senders = 10 in postgresql.conf and restart the server ("
                       + DOCKER_CONF.format(setting="wal_level=replica -c max_wal_senders=10") + ")")
    if senders == 0:
        return Refused(f"server {where(endpoint)} has max_wal_senders = 0: it accepts no replication connection",
                       "set max_wal_senders = 10 in postgresql.conf and restart the server ("
                       + DOCKER_CONF.format(setting="max_wal_senders=10") + ")")
    if slots == 0:
        return Refused(f"server {where(endpoint)} has max_replication_slots = 0: pgdr streams from a slot",
                       "set max_replication_slots = 10 in postgresql.conf and restart the server ("
                       + DOCKER_CONF.format(setting="max_replication_slots=10") + ")")
    return None


def role_problem(user: str, superuser: bool, replication: bool) -> Refused | None:
    if superuser or replication:
        return None
    quoted = '"' + user.replace('"', '""') + '"'
    return Refused(f"role {user} may not stream WAL (neither SUPERUSER nor REPLICATION)",
                   f"as a superuser run: ALTER ROLE {quoted} REPLICATION;")


def hba_line(host: str, user: str) -> str:
    mask = "/128" if ":" in host else "/32"
    return f"host replication {user} {host}{mask} scram-sha-256"


def receiver_refusal(output: str, hba_file: str, spool: str) -> PgdrError | None:
    """pg_receivewal's output when it stopped: an error that needs a fix, or None (retry: the server restarting,
    the network, another receiver still holding the slot)."""
    found = HBA_REFUSAL.search(output)
    if found:
        line = hba_line(found["host"], found["user"])
        return Refused(f"the server refused the replication connection of {found['user']} from {found['host']} "
                       "(no pg_hba.conf entry for replication connection)",
                       f"add the line `{line}` to {hba_file or 'pg_hba.conf'} and run SELECT pg_reload_conf(); "
                       f"({DOCKER_HBA})")
    if any(words in output for words in ROLE_REFUSALS):
        user = re.search(r'user "([^"]+)"', output)
        return role_problem(user[1] if user else "of postgres.superuser", False, False)
    if "password authentication failed" in output:
        return AuthenticationFailed("password authentication failed for the replication connection",
                                    "run `pgdr secrets pull`, or fix the postgres.password secret")
    if "No space left on device" in output:
        return StorageError(f"the WAL spool {spool} is full (No space left on device): nothing was deleted",
                            "free space on that disk, or point wal.spool_dir at a bigger one")
    if "has already been removed" in output:
        return IntegrityError("the server has already removed WAL the archive does not hold: the archive has a gap",
                              "take a new base backup (pgdr backup), move the spool folder aside, then start "
                              "pgdr wal stream again")
    return None


def preflight(endpoint: Endpoint) -> ServerFacts:
    """Refuse a server that cannot stream, with the fix; learn what the status file needs."""
    with session(endpoint) as connection:
        row = connection.execute(
            "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int, "
            "current_setting('max_replication_slots')::int, rolsuper, rolreplication, current_user, "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') "
            "FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row is not None
        wal_level, senders, slots, superuser, replication, user, segment_size = row
        problem = setting_problem(endpoint, wal_level, senders, slots) or role_problem(user, superuser, replication)
        if problem is not None:
            raise problem
        return ServerFacts(optional(connection, "SELECT system_identifier::text FROM pg_control_system()"),
                           int(segment_size or DEFAULT_SEGMENT_SIZE),
                           optional(connection, "SELECT current_setting('hba_file')"))


def optional(connection: psycopg.Connection, query: str) -> str:
    """One value a role without the right to read it does not get: ''."""
    try:
        row = connection.execute(query).fetchone()
    except psycopg.Error:
        return ""
    return str(row[0]) if row and row[0] is not None else ""


def ensure_slot(endpoint: Endpoint, slot: str) -> bool:
    """The physical slot, created (reserving WAL at once) if missing; whether it was created."""
    with session(endpoint) as connection:
        try:
            row = connection.execute("SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s",
                                     (slot,)).fetchone()
        except psycopg.OperationalError as error:  # the server going down under the query
            raise ServerUnreachable(f"cannot read the replication slots of {where(endpoint)}: {error}",
                                    "start the server") from None
        if row is not None:
            if row[0] != "physical":
                raise Refused(f"replication slot {slot} exists and is a {row[0]} slot",
                              "set wal.slot to another name (pgdr streams from a physical slot)")
            return False
        try:
            connection.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        except psycopg.errors.DuplicateObject:
            return False  # created meanwhile
        except psycopg.Error as error:
            raise Refused(f"cannot create replication slot {slot}: {str(error).strip().splitlines()[0]}",
                          "grant REPLICATION to postgres.superuser, or raise max_replication_slots") from None
        return True


@dataclass(frozen=True)
class Sample:
    """One look at the server: how far it had written by `at`, on which timeline, and how far the receiver had
    written (None when no receiver is connected to the slot)."""

    at: datetime
    server_lsn: int
    timeline: int
    receiver_lsn: int | None


class Sampler:
    """One query per round on a session kept open; None while the server does not answer (it is restarting)."""

    def __init__(self, endpoint: Endpoint, slot: str) -> None:
        self.endpoint = endpoint
        self.slot = slot
        self._connection: psycopg.Connection | None = None

    def sample(self) -> Sample | None:
        at = datetime.now(UTC)  # before the query: the server had written no more than it answers by then
        try:
            if self._connection is None or self._connection.closed:
                self._connection = connect(self.endpoint)
            row = self._connection.execute(SAMPLE_SQL, (self.slot,)).fetchone()
        except (psycopg.Error, PgdrError):
            self.close()
            return None
        if row is None or row[0] is None:
            return None
        return Sample(at, parse_lsn(row[0]), int(row[1], 16), parse_lsn(row[2]) if row[2] else None)

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except psycopg.Error:
                pass
            self._connection = None
