"""What a backup needs from the server it is restored into, and what a server offers: queries that change nothing.

At backup time, `requirements_of_cluster` records what the cluster uses that a target server may lack: each
database's installed extensions (with versions), what uses ICU (databases whose locale provider is ICU, collations
created with ``provider = icu``; a column or index using such a collation is covered by the collation itself) and
the tablespaces with their directories. The caller's connection (the backup's one session on `postgres`, which also
reads the database properties) reads the cluster's databases and tablespaces and its own database's needs; every
other database that allows connections (pg_dumpall dumps no other) gets one connection and one query, side by side:
each connection is a backend start on the server, mostly waiting, and they were a third of a small backup's
fixed cost before pg_dumpall started (bench/README.md).

Before a restore touches anything, `offer_of_server` reads the same things on the target: the extensions it can
install (`pg_available_extensions`: the control files of its binaries), whether it was built with ICU (initdb
imports ICU's collations into `pg_collation` only then; without them, an ICU collation created in a transaction
that is rolled back decides), and whether each tablespace directory exists, asked of the server itself
(`pg_stat_file`), so a server in a container answers about its own filesystem (a login that may not look at files,
such as a managed service's administrator, leaves that to CREATE TABLESPACE).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from pgdr.artifact import ExtensionNeed, Requirements, TablespaceNeed
from pgdr.postgres.connect import Endpoint, session

# pg_dumpall never creates these (it connects to them): their locale provider is the target's own.
NOT_CREATED_BY_THE_DUMP = ("template0", "template1", "postgres")
ICU_PROVIDER_SINCE = 15  # pg_database.datlocprovider
SESSIONS_AT_ONCE = 4  # per-database sessions side by side: backend starts, mostly waiting


def databases_query(server_major: int) -> str:
    """Every database: name, whether it allows connections (pg_dumpall skips the others), whether it uses ICU."""
    icu = "d.datlocprovider = 'i'" if server_major >= ICU_PROVIDER_SINCE else "false"
    return f"SELECT d.datname, d.datallowconn, {icu} FROM pg_catalog.pg_database d ORDER BY d.datname"


def tablespaces_query() -> str:
    """User tablespaces and their directories (pg_default and pg_global live in the data directory)."""
    return ("SELECT t.spcname, pg_catalog.pg_tablespace_location(t.oid) FROM pg_catalog.pg_tablespace t "
            "WHERE t.spcname NOT IN ('pg_default', 'pg_global') ORDER BY t.spcname")


def database_needs_query() -> str:
    """One database's installed extensions and its user-created ICU collations, one row each: kind, name, version."""
    return ("SELECT 'extension', e.extname, e.extversion FROM pg_catalog.pg_extension e "
            "UNION ALL SELECT 'collation', n.nspname || '.' || c.collname, '' FROM pg_catalog.pg_collation c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace "
            "WHERE c.collprovider = 'i' AND n.nspname <> 'pg_catalog' ORDER BY 1, 2")


def offer_query() -> str:
    """The extensions the server can install, and whether it has ICU: initdb imports ICU's collations (und-x-icu, ...)
    only then (PostgreSQL 16's built-in `unicode` collation is an ICU one in every build, usable or not)."""
    return ("SELECT ARRAY(SELECT a.name FROM pg_catalog.pg_available_extensions a ORDER BY 1), "
            "EXISTS (SELECT 1 FROM pg_catalog.pg_collation c WHERE c.collprovider = 'i' AND c.collname LIKE '%-x-icu')")


def icu_probe() -> str:
    """Run in a transaction that is rolled back: fails with feature_not_supported on a build without ICU."""
    return "CREATE COLLATION pg_temp.pgdr_icu_probe (provider = icu, locale = 'und')"


def may_stat_files_query() -> str:
    """Whether this login may look at absolute paths with pg_stat_file (superusers and pg_read_server_files)."""
    return ("SELECT pg_catalog.has_function_privilege('pg_catalog.pg_stat_file(text, boolean)', 'EXECUTE') "
            "AND pg_catalog.pg_has_role('pg_read_server_files', 'USAGE')")


def directory_query() -> str:
    """true: a directory; false: a file; NULL: nothing there (missing_ok). Needs superuser or pg_read_server_files.
    The location is a parameter: it comes from the backup."""
    return "SELECT (pg_catalog.pg_stat_file(%s, true)).isdir"


def requirements_of_cluster(endpoint: Endpoint, connection: psycopg.Connection) -> Requirements:
    """What the cluster behind endpoint (a superuser, any database) needs from a server it is restored into;
    connection: a session on endpoint, used for the cluster-wide queries and for endpoint's own database."""
    major = int(connection.info.server_version) // 10000
    databases = connection.execute(databases_query(major)).fetchall()  # type: ignore[call-overload]
    tablespaces = connection.execute(tablespaces_query()).fetchall()  # type: ignore[call-overload]
    needs = Requirements(
        icu=[f"database {name}" for name, _, icu in databases if icu and name not in NOT_CREATED_BY_THE_DUMP],
        tablespaces=[TablespaceNeed(name=name, location=location) for name, location in tablespaces if location])
    names = [name for name, allows_connections, _ in databases if allows_connections]
    others = [name for name in names if name != endpoint.database]
    rows = {name: _rows(connection) for name in names if name == endpoint.database}
    if others:
        with ThreadPoolExecutor(max_workers=min(len(others), SESSIONS_AT_ONCE),
                                thread_name_prefix="pgdr-needs") as pool:
            rows.update(zip(others, pool.map(lambda name: _database_rows(endpoint.on(name)), others), strict=True))
    for name in names:  # in the catalog's order, whichever session answered first
        _add_database_needs(name, rows[name], needs)
    return needs


def _database_rows(endpoint: Endpoint) -> list[tuple[str, str, str]]:
    with session(endpoint) as connection:
        return _rows(connection)


def _rows(connection: psycopg.Connection) -> list[tuple[str, str, str]]:
    return connection.execute(database_needs_query()).fetchall()  # type: ignore[call-overload, no-any-return]


def _add_database_needs(database: str, rows: list[tuple[str, str, str]], needs: Requirements) -> None:
    for kind, name, version in rows:
        if kind == "extension":
            needs.extensions.append(ExtensionNeed(database=database, name=name, version=version or ""))
        else:
            needs.icu.append(f"collation {database}.{name}")


@dataclass(frozen=True)
class Offer:
    """What a target server offers: installable extensions, ICU, and for each tablespace directory asked about,
    '' when it is a directory, else what is wrong with it."""

    extensions: frozenset[str]
    icu: bool
    directories: dict[str, str] = field(default_factory=dict)


def offer_of_server(endpoint: Endpoint, locations: list[str]) -> Offer:
    with session(endpoint) as connection:
        row = connection.execute(offer_query()).fetchone()  # type: ignore[call-overload]
        assert row is not None
        icu = bool(row[1]) or _icu_probe_succeeds(connection)
        checkable = bool(locations) and _may_stat_files(connection)
        directories = {location: _directory_problem(connection, location) if checkable else ""
                       for location in dict.fromkeys(locations)}
    return Offer(extensions=frozenset(row[0]), icu=icu, directories=directories)


def _may_stat_files(connection: psycopg.Connection) -> bool:
    """A managed service's "superuser" may not look at files: its directories are left to CREATE TABLESPACE."""
    row = connection.execute(may_stat_files_query()).fetchone()  # type: ignore[call-overload]
    return bool(row and row[0])


def _icu_probe_succeeds(connection: psycopg.Connection) -> bool:
    """Without ICU collations in pg_collation (a cluster initialised by a build without ICU, maybe run by one with
    it now), a collation created and rolled back decides. Only "not supported in this build" means no ICU."""
    try:
        with connection.transaction(force_rollback=True):
            connection.execute(icu_probe())  # type: ignore[call-overload]
    except psycopg.errors.FeatureNotSupported:
        return False
    except psycopg.Error:
        return True  # ICU is there; the probe failed for another reason (and changed nothing)
    return True


def _directory_problem(connection: psycopg.Connection, location: str) -> str:
    try:
        row = connection.execute(directory_query(), (location,)).fetchone()  # type: ignore[call-overload]
    except psycopg.Error as error:  # e.g. permission denied on a parent: the server cannot use it either
        return "the server cannot read it: " + (str(error).strip().splitlines() or [type(error).__name__])[0]
    if row is None or row[0] is None:
        return "missing"
    return "" if row[0] else "not a directory"
