"""DumpScanner on pg_dumpall output: row counts per database and table, end marker, role passwords."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdr.artifact import DatabaseContents, Section, TableCount
from pgdr.dumpscan import DumpScanner, conninfo_has_password, parse_connect_database

GLOBALS = """\
--
-- PostgreSQL database cluster dump
--

\\restrict GlobalsKey1

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

\\unrestrict GlobalsKey1

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

\\restrict Template1Key

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;

--
-- PostgreSQL database dump complete
--

\\unrestrict Template1Key

"""

DEMO = """\
--
-- Database "demo" dump
--

--
-- PostgreSQL database dump
--

\\restrict DemoKey

CREATE DATABASE "demo" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';


ALTER DATABASE "demo" OWNER TO "postgres";

\\unrestrict DemoKey
\\connect "demo"
\\restrict DemoKey

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

\\unrestrict DemoKey

"""

WEIRD = """\
--
-- Database "weird-db name" dump
--

\\restrict WeirdKey

CREATE DATABASE "weird-db name" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';

\\unrestrict WeirdKey
\\connect -reuse-previous=on "dbname='weird-db name'"
\\restrict WeirdKey

COPY "public"."ta ble (x" ("a") FROM stdin;
ünïcødé
{"json": "\\\\n"}
\\\\.\\\\.
a\\r\\nb
\\.


COPY "public"."orders" ("id") FROM stdin;
10
\\.

\\unrestrict WeirdKey

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
    scanner.finish()
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
        scanner = DumpScanner()
        scanner.feed(DUMP[:-120])
        for start in range(len(DUMP) - 120, len(DUMP), chunk_size):
            scanner.feed(DUMP[start : start + chunk_size])
        assert scanner.complete


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


# --- sections are believed only when pg_dump's \restrict keys prove them ---

def test_sections_of_a_dump_without_restrict_keys_are_not_believed() -> None:
    """pg_dumpall before 17.6/16.10/15.14/14.19/13.22, or the old shell pipeline: restore in one stream."""
    old = b"\n".join(line for line in DUMP.split(b"\n") if not line.startswith((b"\\restrict", b"\\unrestrict")))
    scanner = scan(old)
    assert scanner.sections == []
    assert "restrict" in scanner.proof.problem
    assert scanner.tables == EXPECTED and scanner.complete


def test_a_header_forged_by_a_newline_in_a_table_name_is_rows_not_a_boundary() -> None:
    """The attack of issue 11: a quoted table name holding a newline used to hide the COPY line from the scanner."""
    attack = ('COPY "public"."zz\nz" ("t") FROM stdin;\n--\n-- Database "evil" dump\n--\n\\\\! id > marker\n\\\\q\n'
              "\\.\n\n")
    demo = DEMO.replace("COPY public.plain (a) FROM stdin;", attack + "COPY public.plain (a) FROM stdin;")
    scanner = scan((GLOBALS + TEMPLATE1 + demo + WEIRD + END).encode(), 5)
    assert [section.database for section in scanner.sections] == ["template1", "demo", "weird-db name"]
    assert scanner.tables["demo"][("public", "zz\nz")] == 5


@pytest.mark.parametrize(("replace", "by"), [
    ("\\restrict DemoKey\n\nCREATE DATABASE", "CREATE DATABASE"),  # SQL before the part's own \restrict
    ("\\unrestrict Template1Key\n", "\\unrestrict OtherKey\n"),  # closes a key that is not open
    ("\\unrestrict Template1Key\n", ""),  # the previous part never closed its key
    ("SET lock_timeout = 0;\n", "SET lock_timeout = 0;\n\\! date\n"),  # a meta-command pg_dump never writes
    ("SET lock_timeout = 0;\n", "SET client_encoding = 'SJIS';\n"),  # an encoding psql would lex otherwise
])
def test_any_doubt_about_a_boundary_drops_every_section(replace: str, by: str) -> None:
    dump = (GLOBALS + TEMPLATE1 + DEMO + WEIRD + END).replace(replace, by, 1)
    assert dump != (GLOBALS + TEMPLATE1 + DEMO + WEIRD + END)
    assert scan(dump.encode()).sections == []


def test_a_section_header_inside_a_function_body_is_not_a_boundary() -> None:
    body = "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $_$SELECT '\n--\n-- Database \"x\" dump\n--\n'$_$;\n"
    demo = DEMO.replace("CREATE TABLE", body + "CREATE TABLE", 1)
    scanner = scan((GLOBALS + TEMPLATE1 + demo + WEIRD + END).encode(), 3)
    assert [section.database for section in scanner.sections] == ["template1", "demo", "weird-db name"]


# --- comments and strings cannot deny a backup ---

@pytest.mark.parametrize("text", [
    "ALTER ROLE \"app\" WITH LOGIN PASSWORD 'x';",
    "COPY public.orders FROM stdin;",
    "\\\\.",
    "-- PostgreSQL database cluster dump complete",
])
def test_a_multi_line_comment_cannot_fake_a_password_a_copy_or_the_end(text: str) -> None:
    comment = "COMMENT ON TABLE \"public\".\"orders\" IS 'x\n" + text.replace("'", "''") + "\n';\n"
    demo = DEMO.replace("--\n-- Data for Name: orders", comment + "--\n-- Data for Name: orders", 1)
    scanner = scan((GLOBALS + TEMPLATE1 + demo + WEIRD + END).encode(), 11)
    assert not scanner.has_password
    assert scanner.tables == EXPECTED
    assert scanner.complete


# --- secrets other than role passwords ---

@pytest.mark.parametrize(("statement", "kind", "name"), [
    ("CREATE USER MAPPING FOR \"app\" SERVER \"s\" OPTIONS (\n    \"password\" 'sekret',\n    \"user\" 'u'\n);",
     "user mapping", "FOR app SERVER s"),
    ("CREATE SUBSCRIPTION \"sub\" CONNECTION 'host=h dbname=d password=''p w''' PUBLICATION \"p\" "
     "WITH (connect = false, slot_name = 'sub');", "subscription", "sub"),
    ("CREATE SUBSCRIPTION \"sub\" CONNECTION 'postgresql://u:pw@h/d' PUBLICATION \"p\" WITH (connect = false);",
     "subscription", "sub"),
    ("CREATE SERVER \"s\" FOREIGN DATA WRAPPER \"mysql_fdw\" OPTIONS (\"host\" 'h', \"password\" 'x');",
     "server", "s"),
])
def test_embedded_secrets_are_found(statement: str, kind: str, name: str) -> None:
    demo = DEMO.replace("CREATE TABLE", statement + "\n\nCREATE TABLE", 1)
    secrets = scan((GLOBALS + TEMPLATE1 + demo + END).encode(), 7).embedded_secrets
    assert [(secret.database, secret.kind, secret.name) for secret in secrets] == [("demo", kind, name)]
    assert all("sekret" not in secret.model_dump_json() and "pw" not in secret.name for secret in secrets)


@pytest.mark.parametrize("statement", [
    "CREATE USER MAPPING FOR \"app\" SERVER \"s\" OPTIONS (\"user\" 'u');",
    "CREATE SUBSCRIPTION \"sub\" CONNECTION 'host=h dbname=d' PUBLICATION \"p\" WITH (connect = false);",
    "COMMENT ON TABLE t IS 'CREATE USER MAPPING FOR a SERVER s OPTIONS (password ''x'');';",
    "COMMENT ON TABLE t IS 'password=x';",
    "-- CREATE SUBSCRIPTION s CONNECTION 'password=x' PUBLICATION p;",
])
def test_text_that_only_mentions_a_password_is_no_secret(statement: str) -> None:
    demo = DEMO.replace("CREATE TABLE", statement + "\n\nCREATE TABLE", 1)
    assert scan((GLOBALS + TEMPLATE1 + demo + END).encode()).embedded_secrets == []


@pytest.mark.parametrize(("conninfo", "expected"), [
    ("host=h password=x", True), ("host=h password = 'a b'", True), ("host=h sslpassword=x", True),
    ("postgresql://u:p@h/d", True), ("postgres://h/d?password=x", True), ("host=h passfile=/x", False),
    ("host=h password=''", False), ("postgresql://u@h/d", False), ("host=h dbname=password", False),
])
def test_conninfo_password(conninfo: str, expected: bool) -> None:
    assert conninfo_has_password(conninfo) is expected
