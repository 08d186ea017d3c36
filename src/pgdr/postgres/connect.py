"""Connections without passwords in argv or DSNs.

Child processes (psql, pg_dumpall) get a temporary PGPASSFILE created 0600 from the start; in-process
connections pass the password to libpq directly. Connection errors are translated into the runbook's fixes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pgdr.errors import AuthenticationFailed, PgdrError, RestoreFailed, ServerUnreachable
from pgdr.redact import register_secret

if TYPE_CHECKING:
    import psycopg

    from pgdr.run import RunAs

HINT_PASSWORD = "run `pgdr secrets pull && pgdr init` to reset passwords from the secret store"
HINT_MISSING = "the restore did not complete: run `pgdr list` and restore again"
HINT_UNREACHABLE = "start the server with `pgdr up`, then check `pgdr status`"
# pgdr's superuser sessions (clean, init, verify's checks) must work in a database or as a role whose own settings
# make sessions read-only or time them out: those settings are the data pgdr restores, not rules for pgdr.
ADMIN_SESSION_OPTIONS = ("-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 "
                         "-c idle_in_transaction_session_timeout=0")


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect; the password stays out of repr and argv."""

    host: str
    port: int
    user: str
    password: str = ""
    database: str = "postgres"
    connect_timeout: int = 10
    options: str = ""  # libpq options (-c name=value) for pgdr's own sessions, e.g. ADMIN_SESSION_OPTIONS

    def __repr__(self) -> str:
        return f"Endpoint({self.user}@{self.host}:{self.port}/{self.database})"

    def as_user(self, user: str, password: str, database: str | None = None) -> Endpoint:
        """The application's view: its sessions get the database's and role's own settings, none of ours."""
        return replace(self, user=user, password=password, database=database or self.database, options="")

    def on(self, database: str) -> Endpoint:
        return replace(self, database=database)

    def libpq_environment(self) -> dict[str, str]:
        """PG* variables for child processes; the password goes through PGPASSFILE, never here."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
            "PGAPPNAME": "pgdr",
        }


def passfile_line(host: str, port: int, user: str, password: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"{escape(host)}:{port}:*:{escape(user)}:{escape(password)}\n"


@contextmanager
def temporary_passfile(endpoint: Endpoint, owner: RunAs | None = None) -> Iterator[str]:
    """A PGPASSFILE readable only by us, or by owner (a client run as that OS user): 0600 from creation, given to
    owner before anything is written, removed afterwards."""
    if endpoint.password:
        register_secret(endpoint.password)
    descriptor, path = tempfile.mkstemp(prefix="pgdr-pgpass-")  # mkstemp creates with 0600
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(descriptor, owner.uid, owner.gid)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(passfile_line(endpoint.host, endpoint.port, endpoint.user, endpoint.password))
        yield path
    finally:
        Path(path).unlink(missing_ok=True)


@contextmanager
def client_environment(endpoint: Endpoint, owner: RunAs | None = None) -> Iterator[dict[str, str]]:
    """Environment for a libpq child process (psql, pg_dumpall) connecting to endpoint, run as owner if given."""
    from pgdr.run import child_environment

    with temporary_passfile(endpoint, owner) as passfile:
        home = {"HOME": owner.home} if owner is not None else {}
        yield child_environment({**endpoint.libpq_environment(), "PGPASSFILE": passfile, **home})


def translate_error(error: psycopg.Error, endpoint: Endpoint) -> PgdrError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = f"{endpoint.user}@{endpoint.host}:{endpoint.port}/{endpoint.database}"
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return AuthenticationFailed(f"password authentication failed for {where}", HINT_PASSWORD)
    if "does not exist" in lowered and ("database" in lowered or "role" in lowered):
        return RestoreFailed(f"{text} ({where})", HINT_MISSING)
    if any(word in lowered for word in ("connection refused", "no such file", "timeout", "could not connect",
                                         "server closed", "could not translate host")):
        return ServerUnreachable(f"cannot connect to {endpoint.host}:{endpoint.port}: {text}", HINT_UNREACHABLE)
    return PgdrError(f"{where}: {text}")


def connect(endpoint: Endpoint, autocommit: bool = True) -> psycopg.Connection:
    import psycopg  # here, not at the top: commands that never connect (list, --help) start faster

    if endpoint.password:
        register_secret(endpoint.password)
    try:
        return psycopg.connect(
            host=endpoint.host,
            port=endpoint.port,
            user=endpoint.user,
            password=endpoint.password or None,
            dbname=endpoint.database,
            connect_timeout=endpoint.connect_timeout,
            application_name="pgdr",
            autocommit=autocommit,
            options=endpoint.options or None,
        )
    except psycopg.OperationalError as error:
        raise translate_error(error, endpoint) from None


@contextmanager
def session(endpoint: Endpoint, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    connection = connect(endpoint, autocommit)
    try:
        yield connection
    finally:
        connection.close()


def is_reachable(endpoint: Endpoint) -> bool:
    try:
        with session(endpoint):
            return True
    except ServerUnreachable:
        return False
