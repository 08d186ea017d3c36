"""DumpScanner on the output of the real pg_dumpall, checked against SELECT count(*) on the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness
from pgdr.dumpscan import DumpScanner
from pgdr.formats.plain import dump_argv
from pgdr.postgres.binaries import find_toolset
from pgdr.postgres.sql import count_rows, identifier

DATABASES = ["demo", "weird-db name", 'it\'s "q" \\ x', "Ünï Cødé"]


def populate(server) -> None:
    with server.connect() as connection:
        for name in DATABASES:
            connection.execute(f"CREATE DATABASE {identifier(name)}")
        connection.execute("CREATE ROLE \"x PASSWORD 'y\" LOGIN")  # a name that looks like a password clause
        connection.execute("CREATE ROLE app_user LOGIN PASSWORD 'app-secret' CONNECTION LIMIT 5")
        connection.execute("ALTER ROLE app_user SET application_name = 'a WITH b PASSWORD ''c'''")
    with server.connect("demo") as connection:
        connection.execute("CREATE TABLE orders (id serial PRIMARY KEY, note text, blob bytea)")
        connection.execute(
            "INSERT INTO orders (note, blob) SELECT "
            "CASE g % 5 WHEN 0 THEN E'line\\nbreak' WHEN 1 THEN E'tab\\there' WHEN 2 THEN E'\\\\.' "
            "WHEN 3 THEN E'\\\\' ELSE '-- PostgreSQL database cluster dump complete' END, "
            "decode(md5(g::text), 'hex') FROM generate_series(1, 2500) g"
        )
        connection.execute("INSERT INTO orders (note) VALUES (NULL), (E'\\\\.\\n\\\\.'), (E'\\r\\n')")
        connection.execute("CREATE TABLE empty (a int)")
        connection.execute("CREATE SCHEMA sales")
        connection.execute('CREATE TABLE sales."we""ird tab le" ("co l" text)')
        connection.execute('INSERT INTO sales."we""ird tab le" SELECT repeat(\'x\', g) FROM generate_series(1, 300) g')
        connection.execute("CREATE TABLE measurements (day date, v int) PARTITION BY RANGE (day)")
        connection.execute("CREATE TABLE measurements_2024 PARTITION OF measurements "
                           "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
        connection.execute("CREATE TABLE measurements_2025 PARTITION OF measurements "
                           "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
        connection.execute("INSERT INTO measurements SELECT date '2024-06-01' + g, g FROM generate_series(1, 400) g")
    with server.connect("weird-db name") as connection:
        connection.execute('CREATE TABLE "ta ble (x" (a text)')
        connection.execute('INSERT INTO "ta ble (x" VALUES (\'ünïcødé\'), (E\'\\\\.\'), (\'{"json": 1}\')')
        connection.execute("CREATE TABLE orders (id int)")  # same name as in demo, counted separately
        connection.execute("INSERT INTO orders SELECT generate_series(1, 7)")
    with server.connect('it\'s "q" \\ x') as connection:
        connection.execute("CREATE TABLE t (a int)")
        connection.execute("INSERT INTO t VALUES (1), (2)")


def run_pg_dumpall(server, *extra: str) -> bytes:
    pg_dumpall = find_toolset(str(server.bin_dir), ("pg_dumpall",)).path("pg_dumpall")
    argv = [*dump_argv(pg_dumpall), *extra, "--host", server.host, "--port", str(server.port),
            "--username", server.superuser]
    result = subprocess.run(argv, capture_output=True, check=True, timeout=120,
                            env={**os.environ, "PGPASSWORD": server.password})
    return result.stdout


def actual_counts(server, database: str, tables: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    with server.connect(database) as connection:
        return {(schema, table): connection.execute(count_rows(schema, table)).fetchone()[0]
                for schema, table in tables}


def regular_tables(server, database: str) -> set[tuple[str, str]]:
    query = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
             "AND n.nspname !~ '^pg_toast'")
    with server.connect(database) as connection:
        return {(row[0], row[1]) for row in connection.execute(query)}


@pytest.fixture(scope="module")
def server() -> Iterator[harness.TestServer]:
    """One real server for the module (pg_server is per test; populating it once keeps this file fast)."""
    root = Path(tempfile.mkdtemp(prefix="pgdr-test-"))
    root.chmod(0o755)
    started = harness.start_test_server(root)
    try:
        populate(started)
        yield started
    finally:
        started.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def dump(server: harness.TestServer) -> tuple[harness.TestServer, bytes]:
    return server, run_pg_dumpall(server)


def test_real_dump_counts_match_select_count(dump) -> None:
    server, data = dump
    scanner = DumpScanner()
    scanner.feed(data)
    assert scanner.complete
    assert not scanner.has_password
    for name in DATABASES:
        assert name in scanner.tables, f"{name!r} not seen in the dump's \\connect lines"
        counted = scanner.tables[name]
        assert set(counted) == regular_tables(server, name)
        assert counted == actual_counts(server, name, list(counted))
    demo = scanner.tables["demo"]
    assert demo[("public", "orders")] == 2503
    assert demo[("public", "empty")] == 0
    assert demo[("sales", 'we"ird tab le')] == 300
    assert demo[("public", "measurements_2024")] + demo[("public", "measurements_2025")] == 400
    assert scanner.tables["weird-db name"] == {("public", "ta ble (x"): 3, ("public", "orders"): 7}
    assert scanner.tables['it\'s "q" \\ x'] == {("public", "t"): 2}
    names = [contents.name for contents in scanner.databases()]
    assert names == sorted(names) and "" not in names


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 4096, 1 << 20])
def test_real_dump_in_chunks_gives_identical_results(dump, chunk_size: int) -> None:
    _, data = dump
    whole = DumpScanner()
    whole.feed(data)
    chunked = DumpScanner()
    for start in range(0, len(data), chunk_size):
        chunked.feed(data[start : start + chunk_size])
    assert chunked.tables == whole.tables
    assert chunked.complete and not chunked.has_password


def test_real_dump_cut_short_is_incomplete(dump) -> None:
    _, data = dump
    for cut in (len(data) // 3, len(data) // 2, len(data) - 60):
        scanner = DumpScanner()
        scanner.feed(data[:cut])
        assert not scanner.complete


def test_dump_with_role_passwords_is_detected(server: harness.TestServer) -> None:
    pg_server = server
    pg_dumpall = find_toolset(str(pg_server.bin_dir), ("pg_dumpall",)).path("pg_dumpall")
    argv = [pg_dumpall, "--globals-only", "--quote-all-identifiers", "--host", pg_server.host,
            "--port", str(pg_server.port), "--username", pg_server.superuser]
    data = subprocess.run(argv, capture_output=True, check=True, timeout=120,
                          env={**os.environ, "PGPASSWORD": pg_server.password}).stdout
    assert b" PASSWORD 'SCRAM-SHA-256$" in data
    scanner = DumpScanner()
    scanner.feed(data)
    assert scanner.has_password
    assert scanner.complete


def test_connect_lines_for_weird_names_are_what_the_scanner_parses(dump) -> None:
    _, data = dump
    expected_line = b"\\connect -reuse-previous=on \"dbname='weird-db name'\"\n"
    assert expected_line in data


def test_a_database_whose_name_is_not_ascii_keeps_its_proven_section(pg_server) -> None:
    """pg_dump writes `\\encoding SQL_ASCII` before it reconnects to a database whose name is not ASCII: still
    pg_dump's own bytes, so that database's boundary stays proven and it restores in parallel."""
    with pg_server.connect() as connection:
        connection.execute('CREATE DATABASE "dätabase ünï"')
        connection.execute("CREATE DATABASE plain_name")
    data = run_pg_dumpall(pg_server)
    scanner = DumpScanner()
    scanner.feed(data)
    scanner.finish()
    assert b"\n\\encoding SQL_ASCII\n" in data
    assert scanner.proof.problem == ""
    assert {section.database for section in scanner.sections} >= {"dätabase ünï", "plain_name", "postgres"}
