"""DumpScanner on pg_dumpall output: row counts per database and table, end marker, role passwords."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdr.artifact import DatabaseContents, Section, TableCount
from pgdr.dumpscan import DumpScanner, parse_connect_database, parse_copy_table, parse_identifier_list

GLOBALS = """\
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "demo_user";
ALTER ROLE "demo_user" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION CONNECTION LIMIT 50;
CREATE ROLE "postgres";
ALTER ROLE "postgres" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE "x PASSWORD 'y";
ALTER ROLE "x PASSWORD 'y" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
ALTER ROLE "demo_user" SET "application_name" TO 'WITH x PASSWORD ''y''';
COMMENT ON ROLE "demo_user" IS 'ALTER ROLE x WITH LOGIN PASSWORD ''no''';

--
-- Role memberships
--

GRANT "demo_readwrite" TO "demo_user" GRANTED BY "postgres";

"""

TEMPLATE1 = """\
--
-- Databases
--

--
-- Database "template1" dump
--

\\connect template1

--
-- PostgreSQL database dump
--

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;

--
-- PostgreSQL database dump complete
--

"""

DEMO = """\
--
-- Database "demo" dump
--

--
-- PostgreSQL database dump
--

CREATE DATABASE "demo" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';


ALTER DATABASE "demo" OWNER TO "postgres";

\\connect "demo"

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE "public"."orders" (
    "id" integer NOT NULL,
    "note" "text"
);

--
-- Data for Name: orders; Type: TABLE DATA; Schema: public; Owner: demo_user
--

COPY "public"."orders" ("id", "note") FROM stdin;
1\tline one\\nline two
2\ttab\\there
3\t\\\\.
4\tCOPY "public"."fake" ("a") FROM stdin;
5\t\\\\connect other
6\tALTER ROLE x WITH LOGIN PASSWORD 'p';
7\t\\N
\\.


--
-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY "public"."empty" ("a") FROM stdin;
\\.


COPY "sales"."we""ird" ("a", "b") FROM stdin;
x\t-- PostgreSQL database cluster dump complete
y\t\\\\
\\.


COPY public.plain (a) FROM stdin;
1
\\.


--
-- PostgreSQL database dump complete
--

"""

WEIRD = """\
--
-- Database "weird-db name" dump
--

CREATE DATABASE "weird-db name" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';

\\connect -reuse-previous=on "dbname='weird-db name'"

COPY "public"."ta ble (x" ("a") FROM stdin;
ünïcødé
{"json": "\\\\n"}
\\\\.\\\\.
a\\r\\nb
\\.


COPY "public"."orders" ("id") FROM stdin;
10
\\.

"""

END = """\
--
-- PostgreSQL database cluster dump complete
--

"""

DUMP = (GLOBALS + TEMPLATE1 + DEMO + WEIRD + END).encode()

EXPECTED = {
    "template1": {},
    "demo": {
        ("public", "orders"): 7,
        ("public", "empty"): 0,
        ("sales", 'we"ird'): 2,
        ("public", "plain"): 1,
    },
    "weird-db name": {("public", "ta ble (x"): 4, ("public", "orders"): 1},
}


def scan(data: bytes, chunk_size: int | None = None) -> DumpScanner:
    scanner = DumpScanner()
    if chunk_size is None:
        scanner.feed(data)
    else:
        for start in range(0, len(data), chunk_size):
            scanner.feed(data[start : start + chunk_size])
    return scanner


def test_counts_rows_per_database_and_table() -> None:
    scanner = scan(DUMP)
    assert scanner.tables == EXPECTED
    assert scanner.complete
    assert not scanner.has_password


def test_databases_are_sorted_and_skip_the_globals_section() -> None:
    assert scan(DUMP).databases() == [
        DatabaseContents(name="demo", tables=[
            TableCount(schema="public", table="empty", rows=0),
            TableCount(schema="public", table="orders", rows=7),
            TableCount(schema="public", table="plain", rows=1),
            TableCount(schema="sales", table='we"ird', rows=2),
        ]),
        DatabaseContents(name="template1", tables=[]),
        DatabaseContents(name="weird-db name", tables=[
            TableCount(schema="public", table="orders", rows=1),
            TableCount(schema="public", table="ta ble (x", rows=4),
        ]),
    ]


@pytest.mark.parametrize("chunk_size", range(1, 65))
def test_every_chunk_size_gives_identical_results(chunk_size: int) -> None:
    whole = scan(DUMP)
    chunked = scan(DUMP, chunk_size)
    assert chunked.tables == whole.tables == EXPECTED
    assert chunked.databases() == whole.databases()
    assert chunked.complete is whole.complete is True
    assert chunked.has_password is whole.has_password is False


@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=40))
def test_arbitrary_split_points_give_identical_results(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DUMP)]
    scanner = DumpScanner()
    for start, end in zip(points, points[1:], strict=False):
        scanner.feed(DUMP[start:end])  # empty chunks included
    assert scanner.tables == EXPECTED
    assert scanner.complete and not scanner.has_password


def test_a_large_copy_block_is_counted_exactly() -> None:
    rows = b"".join(b"%d\tsome text \\\\ with \\t escapes\n" % number for number in range(100_000))
    data = b'\\connect "big"\nCOPY "public"."t" ("a", "b") FROM stdin;\n' + rows + b"\\.\n" + END.encode()
    for chunk_size in (1 << 16, 4093, 1 << 20):
        assert scan(data, chunk_size).tables == {"big": {("public", "t"): 100_000}}


# --- complete ---

EXPECTED_SECTIONS = [
    Section(database="template1", offset=len(GLOBALS) + len("--\n-- Databases\n--\n\n")),
    Section(database="demo", offset=len(GLOBALS + TEMPLATE1)),
    Section(database="weird-db name", offset=len(GLOBALS + TEMPLATE1 + DEMO)),
]


def test_sections_start_at_each_database_header() -> None:
    scanner = scan(DUMP)
    assert scanner.sections == EXPECTED_SECTIONS
    for section in scanner.sections:
        assert DUMP[section.offset :].startswith(f'--\n-- Database "{section.database}" dump\n--\n'.encode())


@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=40))
def test_section_offsets_do_not_depend_on_chunk_boundaries(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DUMP)]
    scanner = DumpScanner()
    for start, end in zip(points, points[1:], strict=False):
        scanner.feed(DUMP[start:end])
    assert scanner.sections == EXPECTED_SECTIONS


def test_a_database_header_inside_copy_data_or_without_its_dashes_is_not_a_section() -> None:
    copy_rows = '--\n-- Database "fake" dump\n--\n'
    dump = DEMO.replace("1\tline one", copy_rows + "1\tline one", 1)
    dump = dump.replace("CREATE TABLE", '-- Database "lonely" dump\nCREATE TABLE', 1)
    scanner = scan((GLOBALS + dump + END).encode(), 7)
    assert [section.database for section in scanner.sections] == ["demo"]
    assert scanner.tables["demo"][("public", "orders")] == 10  # the three fake header lines are rows


def test_complete_needs_the_end_marker() -> None:
    assert not scan((GLOBALS + TEMPLATE1 + DEMO + WEIRD).encode()).complete
    assert not DumpScanner().complete


@pytest.mark.parametrize(
    "ending",
    [
        "PostgreSQL database cluster dump complete",  # no comment, no line
        "--\n-- PostgreSQL database dump complete\n--\n\n",  # a single database's marker
        "--\n-- PostgreSQL database cluster dump\n--\n",
        "-- PostgreSQL database cluster dump complet",
        "SELECT 'x\n-- PostgreSQL database cluster dump compl",
    ],
)
def test_complete_refuses_near_misses(ending: str) -> None:
    assert not scan((GLOBALS + ending).encode()).complete


def test_marker_text_inside_copy_data_of_a_truncated_dump_is_not_the_end() -> None:
    truncated = (GLOBALS + '\\connect "demo"\nCOPY "public"."logs" ("line") FROM stdin;\n'
                 "--\n-- PostgreSQL database cluster dump complete\n--\n").encode()
    for chunk_size in (1, 7, 4096):
        scanner = scan(truncated, chunk_size)
        assert scanner.tables["demo"] == {("public", "logs"): 3}
        assert not scanner.complete


def test_marker_must_be_at_the_end() -> None:
    data = (GLOBALS + END + "\\connect demo\n" + "SELECT 1;\n" * 40).encode()
    assert not scan(data).complete


def test_marker_split_across_chunks_counts() -> None:
    for chunk_size in range(1, 50):
        assert scan(DUMP[-120:], chunk_size).complete


# --- passwords ---

PASSWORD_LINES = [
    "ALTER ROLE \"postgres\" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD "
    "'SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy';",
    "ALTER ROLE demo_user WITH NOSUPERUSER LOGIN PASSWORD 'md5abcdef0123456789abcdef0123456789';",
    "ALTER ROLE \"we\"\"ird user\" WITH LOGIN CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:x$y:z' "
    "VALID UNTIL '2030-01-01 00:00:00+00';",
    "CREATE ROLE app WITH LOGIN PASSWORD 'plain';",
]


@pytest.mark.parametrize("line", PASSWORD_LINES)
def test_role_password_is_detected(line: str) -> None:
    data = (GLOBALS + line + "\n\n" + TEMPLATE1 + END).encode()
    assert scan(data).has_password
    for chunk_size in (1, 3, 17, 64):
        assert scan(data, chunk_size).has_password


@pytest.mark.parametrize(
    "line",
    [
        "ALTER ROLE \"a PASSWORD 'b\" WITH LOGIN;",
        "CREATE ROLE \"x WITH y PASSWORD 'z\";",
        "ALTER ROLE \"demo_user\" SET \"search_path\" TO 'a WITH b PASSWORD ''c''';",
        "ALTER ROLE \"demo_user\" IN DATABASE \"demo\" SET \"x\" TO ' WITH PASSWORD ''';",
        "ALTER ROLE demo_user WITH LOGIN;",
        "-- ALTER ROLE x WITH LOGIN PASSWORD 'commented';",
        "COMMENT ON ROLE x IS 'ALTER ROLE y WITH PASSWORD ''z''';",
        "ALTER ROLE x WITH LOGIN PASSWORD NULL;",
    ],
)
def test_lines_that_only_look_like_passwords_are_not(line: str) -> None:
    assert not scan((GLOBALS + line + "\n" + END).encode()).has_password


def test_password_text_inside_copy_data_is_not_a_role_password() -> None:
    assert not scan(DUMP).has_password  # orders row 6 holds an ALTER ROLE ... PASSWORD text


# --- name parsing ---

@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('COPY "public"."ta ble (x" ("a") FROM stdin;', ("public", "ta ble (x")),
        ("COPY public.orders (id, note) FROM stdin;", ("public", "orders")),
        ('COPY "sales"."we""ird" ("a") FROM stdin;', ("sales", 'we"ird')),
        ('COPY "s.x"."t.y" ("a") FROM stdin;', ("s.x", "t.y")),
        ("COPY orders (id) FROM stdin;", ("public", "orders")),
        ('COPY "ünï"."cødé" FROM stdin;', ("ünï", "cødé")),
        ('COPY "a""""b"."""" ("x") FROM stdin;', ('a""b', '"')),
    ],
)
def test_parse_copy_table(line: str, expected: tuple[str, str]) -> None:
    assert parse_copy_table(line) == expected


def test_parse_identifier_list() -> None:
    assert parse_identifier_list('public."ta ble (x"') == ["public", "ta ble (x"]
    assert parse_identifier_list('"a"."b"."c" rest') == ["a", "b", "c"]
    assert parse_identifier_list("") == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("\\connect template1", "template1"),
        ('\\connect "demo"', "demo"),
        ('\\connect "Demo"', "Demo"),
        ('\\connect "a.b"', "a.b"),
        ("\\connect -reuse-previous=on \"dbname='weird-db name'\"", "weird-db name"),
        ('\\connect -reuse-previous=on "dbname=\'it\\\'s ""q"" \\\\ x\'"', 'it\'s "q" \\ x'),
        ("\\connect -reuse-previous=on \"dbname='ünïcødé db'\"", "ünïcødé db"),
        ("\\connect -reuse-previous=on \"dbname='x\\\\'\"", "x\\"),
    ],
)
def test_parse_connect_database(line: str, expected: str) -> None:
    assert parse_connect_database(line) == expected
