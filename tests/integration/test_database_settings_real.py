"""Database settings and comments pgdr puts back (postgres, template1) come back exactly as the server held them:
each value is set on one database by hand, read from pg_db_role_setting, rebuilt by pgdr's builders on another
database, and read again. The server is the reference for how a list setting (search_path) is quoted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from pgdr.postgres.sql import (
    database_access_query,
    database_access_statements,
    database_property_statements,
    identifier,
    literal,
)

SETTINGS = [
    "search_path = \"$user\", public",
    "search_path = a, \"b c\", \"odd \"\"name\"\"\", \"Upper\"",
    "search_path = ''",
    "work_mem = '8MB'",
    "default_transaction_read_only = on",
    "statement_timeout = '1ms'",
    "application_name = 'it''s; -- not a comment'",
    "\"myapp.flavour\" = 'vanilla, with comma'",
    "temp_tablespaces = ''",
    "DateStyle = 'ISO, DMY'",
]


def stored(connection, database: str) -> list[list[str] | None]:
    return [row[0] for row in connection.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = %s ORDER BY s.setrole", (database,))]


def comment_of(connection, database: str) -> str | None:
    return connection.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                              (database,)).fetchone()[0]


@pytest.fixture(scope="module")
def two_databases():
    root = Path(tempfile.mkdtemp(prefix="pgdr-test-"))
    root.chmod(0o755)
    server = harness.start_test_server(root)
    try:
        with server.connect() as connection:
            connection.execute("CREATE DATABASE source")
            connection.execute("CREATE DATABASE target")
            connection.execute("CREATE ROLE app")
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("setting", SETTINGS)
def test_a_setting_rebuilt_by_pgdr_is_stored_as_the_original(two_databases, setting) -> None:
    with two_databases.connect() as connection:
        connection.execute("ALTER DATABASE source RESET ALL")
        connection.execute(f"ALTER DATABASE source SET {setting}")
        connection.execute(f"ALTER ROLE app IN DATABASE source SET {setting}")
        original = stored(connection, "source")
        [database_config, role_config] = original
        for statement in database_property_statements("target", None, database_config,
                                                      [("app", item) for item in role_config]):
            connection.execute(statement)
        assert stored(connection, "target") == original
        connection.execute("ALTER ROLE app IN DATABASE source RESET ALL")
        connection.execute("ALTER ROLE app IN DATABASE target RESET ALL")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(comment=st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00",
                                                         blacklist_categories=("Cs",)), max_size=40)),
       names=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                              min_size=1, max_size=12), min_size=1, max_size=3))
def test_any_comment_and_any_search_path_of_names_round_trip(two_databases, comment, names) -> None:
    with two_databases.connect() as connection:
        connection.execute("ALTER DATABASE source RESET ALL")
        path = ", ".join(identifier(name[:63]) for name in names)
        connection.execute(f"ALTER DATABASE source SET search_path = {path}")
        connection.execute(f"COMMENT ON DATABASE source IS {literal(comment) if comment is not None else 'NULL'}")
        [config] = stored(connection, "source")
        for statement in database_property_statements("target", comment_of(connection, "source"), config, []):
            connection.execute(statement)
        assert stored(connection, "target") == [config]
        assert comment_of(connection, "target") == comment_of(connection, "source")  # '' is no comment to both


def privileges(connection, database: str) -> list[tuple[str, str, str, bool]]:
    return connection.execute(
        "SELECT pg_get_userbyid(d.datdba), coalesce(nullif(pg_get_userbyid(a.grantee), '-'), 'PUBLIC'), "
        "a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(coalesce(d.datacl, "
        "acldefault('d', d.datdba))) a WHERE d.datname = %s ORDER BY 2, 3", (database,)).fetchall()


ACCESS = [
    [],
    ["REVOKE ALL ON DATABASE source FROM PUBLIC"],
    ["ALTER DATABASE source OWNER TO app", "REVOKE CONNECT ON DATABASE source FROM PUBLIC",
     'GRANT CONNECT ON DATABASE source TO "odd ""role"""', "GRANT CREATE ON DATABASE source TO postgres"],
    ['GRANT ALL ON DATABASE source TO "odd ""role""" WITH GRANT OPTION',
     "REVOKE TEMPORARY ON DATABASE source FROM app"],
]


@pytest.mark.parametrize("changes", ACCESS)
def test_owner_and_privileges_rebuilt_by_pgdr_are_effectively_the_originals(two_databases, changes) -> None:
    with two_databases.connect() as connection:
        connection.execute("DROP DATABASE IF EXISTS source")
        connection.execute("DROP DATABASE IF EXISTS target")
        connection.execute("CREATE DATABASE source")
        connection.execute("CREATE DATABASE target")
        connection.execute('DO $$ BEGIN CREATE ROLE "odd ""role"""; EXCEPTION WHEN duplicate_object THEN END $$')
        for change in changes:
            connection.execute(change)
        rows = connection.execute(database_access_query("source")).fetchall()
        owner, default = rows[0][0], rows[0][1]
        grants = None if default else [(grantee, privilege, grantable) for _, _, grantee, privilege, grantable in rows]
        for statement in database_access_statements("target", owner, grants):
            connection.execute(statement)
        assert privileges(connection, "target") == privileges(connection, "source")
