"""pgdr clean soft / hard.

soft: drop every user database, tablespace and role except the bootstrap superuser, and recreate `template1` and
`postgres` empty from template0; the server keeps running. What would block a drop (subscriptions, logical slots,
prepared transactions) is found first and removed before anything is dropped.
hard: stop the managed cluster and delete its data directory (local mode), or run down_command (external mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from pgdr.context import Context
from pgdr.errors import CleanFailed, PgdrError, Refused
from pgdr.locking import locked
from pgdr.postgres import inventory, sql
from pgdr.postgres.connect import Endpoint, session
from pgdr.state import clear_restore_record
from pgdr.ui import Output


@dataclass(frozen=True)
class Blocker:
    """Something that makes DROP DATABASE fail even WITH (FORCE)."""

    kind: str  # "subscription", "replication slot", "prepared transaction"
    database: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name} in {self.database}"


def find_blockers(endpoint: Endpoint, databases: list[str]) -> list[Blocker]:
    with session(endpoint) as connection:
        rows = connection.execute(sql.blockers_query(databases)).fetchall()  # type: ignore[call-overload]
    return [Blocker(str(kind), str(database), str(name)) for kind, database, name in rows]


def remove_blockers(endpoint: Endpoint, blockers: list[Blocker], output: Output) -> None:
    """Subscriptions first (each holds nothing of the publisher once detached), then prepared transactions, then
    the replication slots left on the databases to drop."""
    order = {"subscription": 0, "prepared transaction": 1, "replication slot": 2}
    for blocker in sorted(blockers, key=lambda item: order[item.kind]):
        if blocker.kind == "subscription":
            statements, database = sql.remove_subscription(blocker.name), blocker.database
        elif blocker.kind == "prepared transaction":
            statements, database = [sql.rollback_prepared(blocker.name)], blocker.database
        else:
            statements, database = sql.remove_replication_slot(blocker.name), "postgres"
        with session(endpoint.on(database)) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[call-overload]
        output.info(f"   removed {blocker}")


def _connectable(endpoint: Endpoint, blockers: list[Blocker]) -> None:
    """A subscription or prepared transaction is removed from inside its database: a database that refuses
    connections (datallowconn = false) is opened first; it is about to be dropped anyway."""
    inside = sorted({blocker.database for blocker in blockers if blocker.kind != "replication slot"})
    if not inside:
        return
    with session(endpoint) as connection:
        closed = {row[0] for row in connection.execute(  # type: ignore[call-overload]
            "SELECT datname FROM pg_catalog.pg_database WHERE NOT datallowconn")}
        for database in inside:
            if database in closed:
                connection.execute(sql.allow_connections(database))  # type: ignore[call-overload]


@locked("clean soft")
def clean_soft(context: Context, confirmed: bool = False, safety_backup: str | None = None) -> list[str]:
    """Drop every user database, role and tablespace, and recreate template1 and postgres from template0.

    Everything that would make a drop fail (subscriptions, logical replication slots, prepared transactions) is
    found before anything is dropped and named in the confirmation; it is removed first. A clean that still
    stops midway raises CleanFailed naming what was dropped (and safety_backup, which holds the state before).
    """
    superuser = context.settings.postgres.superuser
    endpoint = context.superuser_endpoint("template1")
    databases = inventory.user_databases(endpoint)
    roles = inventory.user_roles(endpoint, superuser)
    blockers = find_blockers(endpoint, [*databases, *sql.SYSTEM_DATABASES])
    if not confirmed:
        context.confirm_destructive(
            f"Drop databases {', '.join(databases) or '(none)'} and roles {', '.join(roles) or '(none)'}"
            + (f", and remove {', '.join(map(str, blockers))}" if blockers else "")
            + "; recreate template1 and postgres empty"
        )
    done: list[str] = []
    try:
        _connectable(endpoint, blockers)
        remove_blockers(endpoint, blockers, context.output)
        done += [str(blocker) for blocker in blockers]
        _drop_databases(endpoint, databases, done)
        _recreate_system_databases(endpoint, done)
        _drop_roles_and_tablespaces(endpoint, roles, superuser, done)
    except (psycopg.Error, PgdrError) as error:
        raise _clean_failed(error, done, safety_backup) from None
    clear_restore_record(context.settings.state_dir)
    context.output.success(f"Cleaned: dropped {len(databases)} databases and {len(roles)} roles; template1 and "
                           "postgres recreated from template0")
    return databases


def _drop_databases(endpoint: Endpoint, databases: list[str], done: list[str]) -> None:
    with session(endpoint) as connection:
        for database in databases:
            for statement in sql.drop_any_database(database):
                connection.execute(statement)  # type: ignore[call-overload]
            done.append(f"database {database}")


def _recreate_system_databases(endpoint: Endpoint, done: list[str]) -> None:
    """template1 from a session on postgres, then postgres from a session on the new template1."""
    for database, connected_to in (("template1", "postgres"), ("postgres", "template1")):
        with session(endpoint.on(connected_to)) as connection:
            for statement in sql.recreate_from_template0(database):
                connection.execute(statement)  # type: ignore[call-overload]
        done.append(f"database {database} (recreated from template0)")


def _drop_roles_and_tablespaces(endpoint: Endpoint, roles: list[str], superuser: str, done: list[str]) -> None:
    """Only postgres and template1 remain, both fresh: what a role still owns or is granted is shared (a
    tablespace, a database's ACL), which REASSIGN/DROP OWNED in one database reaches."""
    with session(endpoint.on("postgres")) as connection:
        for role in roles:
            for statement in sql.drop_role_statements(role, superuser):
                connection.execute(statement)  # type: ignore[call-overload]
        tablespaces = [row[0] for row in connection.execute(sql.user_tablespaces_query())]  # type: ignore[call-overload]
        for tablespace in tablespaces:
            connection.execute(sql.drop_tablespace(tablespace))  # type: ignore[call-overload]
            done.append(f"tablespace {tablespace}")
        for role in roles:
            connection.execute(f"DROP ROLE IF EXISTS {sql.identifier(role)}")  # type: ignore[call-overload]
            done.append(f"role {role}")


def _clean_failed(error: BaseException, done: list[str], safety_backup: str | None) -> CleanFailed:
    text = error.message if isinstance(error, PgdrError) else (str(error).strip().splitlines() or [""])[0]
    dropped = ", ".join(done) if done else "nothing"
    where = (f"safety backup {safety_backup} holds the state from before" if safety_backup
             else "nothing else was changed")
    return CleanFailed(f"clean stopped: {text}; already done: {dropped}; {where}",
                       "fix the cause, then run the same command again"
                       + (f" (or restore the old state: `pgdr restore file {safety_backup} --clean`)"
                          if safety_backup else ""))


def drop_database(context: Context, database: str) -> None:
    """Drop one database (restore --database --clean); roles stay, they may own objects elsewhere. What blocks the
    drop (a subscription in it, a slot on it, a prepared transaction) is removed first and named."""
    endpoint = context.superuser_endpoint("template1")
    blockers = find_blockers(endpoint, [database])
    _connectable(endpoint, blockers)
    remove_blockers(endpoint, blockers, context.output)
    with session(endpoint) as connection:
        for statement in sql.drop_any_database(database):
            connection.execute(statement)  # type: ignore[call-overload]
    context.output.success(f"Dropped database {database}")


@locked("clean hard")
def clean_hard(context: Context) -> None:
    postgres = context.settings.postgres
    if context.is_local:  # needs no binaries unless the cluster runs (an older major's is removed too: UPGRADE.md)
        major = context.cluster.major_version()
        cluster = f"PostgreSQL {major} cluster" if major is not None else "cluster"
        context.confirm_destructive(f"Stop the {cluster} and delete {postgres.data_dir}")
        context.cluster.remove()
        clear_restore_record(context.settings.state_dir)
        context.output.success(f"{cluster[:1].upper() + cluster[1:]} removed ({postgres.data_dir} deleted)")
        return
    if not postgres.down_command:
        raise Refused(
            "clean hard in external mode needs postgres.down_command (pgdr does not own that server's data)",
            "set down_command (e.g. \"docker compose down -v\") or use `pgdr clean soft`",
        )
    context.confirm_destructive(f"Run {postgres.down_command!r}")
    context.external.stop()
    clear_restore_record(context.settings.state_dir)
    context.output.success(f"Ran down_command: {postgres.down_command}")
