"""A parallel plain restore into the managed cluster (a bulk load) creates each database by copying its template's
files (CREATE DATABASE ... STRATEGY = FILE_COPY, PostgreSQL 15+), seen in the server's own statement log, and the
databases come back with the owner, encoding, locale, connection limit, template flag and settings the dump gave them
(tests/fidelity compares whole pg_dumpall outputs of such restores)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faults.fault_helpers import cluster_project
from harness import Project, load_sample_data

DATABASES = ("app", "ascii db", "tmpl")
SETUP = (
    "CREATE ROLE owner_role",
    'CREATE DATABASE app OWNER owner_role TEMPLATE template0 CONNECTION LIMIT 7',
    """CREATE DATABASE "ascii db" TEMPLATE template0 ENCODING 'SQL_ASCII' LOCALE 'C'""",
    "CREATE DATABASE tmpl TEMPLATE template0 IS_TEMPLATE true",
    "ALTER DATABASE app SET work_mem = '3MB'",
)
PROPERTIES = ("SELECT datname, pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, "
              "datconnlimit, datistemplate, datallowconn, (SELECT setconfig FROM pg_db_role_setting "
              "WHERE setdatabase = d.oid AND setrole = 0) FROM pg_database d WHERE datname = ANY(%s) ORDER BY 1")
LOGGED = "{ fsync = false, synchronous_commit = false, full_page_writes = false, log_statement = 'ddl' }"


@pytest.fixture(scope="module")
def backed_up() -> Iterator[Project]:
    with cluster_project(settings=LOGGED) as project:
        load_sample_data(project, 300)
        with project.connect() as connection:
            for statement in SETUP:
                connection.execute(statement)
        project.ok("backup")
        yield project


def properties(project: Project) -> list[tuple[object, ...]]:
    with project.connect() as connection:
        return connection.execute(PROPERTIES, (list(DATABASES),)).fetchall()


def created(server_log: str, database: str) -> list[str]:
    """The CREATE DATABASE statements the server logged for this database."""
    quoted = f'"{database}"'
    return [line.split("statement: ", 1)[1] for line in server_log.splitlines()
            if "statement: CREATE DATABASE" in line and (f" {quoted} " in line or f" {database} " in line)]


def test_each_database_is_created_as_a_copy_of_template0s_files_and_keeps_its_properties(backed_up: Project) -> None:
    before = properties(backed_up)
    backed_up.ok("clean", "hard", "--yes")
    backed_up.ok("up")
    log = backed_up.root / ".pgdr" / "postgres.log"
    start = log.stat().st_size
    restored = backed_up.ok("restore", "latest", env={"PGDR_BACKUP__JOBS": "2"})
    assert "each created as a copy of its template's files" in restored.stdout + restored.stderr
    with log.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        server_log = handle.read()
    for database in (*DATABASES, "demo"):
        statements = created(server_log, database)
        assert len(statements) == 1, f"{database}: {statements}"
        assert statements[0].endswith(" STRATEGY = FILE_COPY;"), statements[0]
        assert "TEMPLATE = template0" in statements[0]
    assert properties(backed_up) == before
    assert len(before) == len(DATABASES)


def test_one_stream_restores_leave_the_dumps_create_database_as_it_is(backed_up: Project) -> None:
    """jobs = 1 feeds the whole script to one psql: pgdr changes nothing in it."""
    backed_up.ok("clean", "hard", "--yes")
    backed_up.ok("up")
    log = backed_up.root / ".pgdr" / "postgres.log"
    start = log.stat().st_size
    restored = backed_up.ok("restore", "latest", env={"PGDR_BACKUP__JOBS": "1"})
    assert "copy of its template's files" not in restored.stdout + restored.stderr
    with log.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        server_log = handle.read()
    statements = created(server_log, "app")
    assert len(statements) == 1 and "STRATEGY" not in statements[0], statements
