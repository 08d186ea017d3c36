"""GlobalsFilter: drop only the bootstrap superuser's CREATE ROLE statement (as psql lexes it: never text inside a
string, comment or quoted name), only before the first \\connect, any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdr.formats.psql_feed import GlobalsFilter

SKIPPED = b"-- pgdr: skipped, exists already: "

GLOBALS = b"""\
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

CREATE ROLE "demo_user";
ALTER ROLE "demo_user" WITH NOSUPERUSER INHERIT LOGIN;
CREATE ROLE "postgres";
ALTER ROLE "postgres" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE postgres;
CREATE ROLE "postgres2";
CREATE ROLE postgresql;
CREATE ROLE "postgres" ;
 CREATE ROLE postgres;
COMMENT ON ROLE "demo_user" IS 'CREATE ROLE postgres;';
COMMENT ON ROLE "demo_user" IS '
CREATE ROLE "postgres";
';

"""

DATABASES = b"""\
\\connect template1

--
-- PostgreSQL database dump
--

CREATE ROLE "postgres";
CREATE ROLE postgres;
CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$
CREATE ROLE postgres;
$$;

\\connect -reuse-previous=on "dbname='weird-db name'"

COPY "public"."t" ("a") FROM stdin;
CREATE ROLE postgres;
CREATE ROLE "postgres";
\\.

--
-- PostgreSQL database cluster dump complete
--

"""

DUMP = GLOBALS + DATABASES
EXPECTED = GLOBALS
for statement in (b'\nCREATE ROLE "postgres";\nALTER', b"\nCREATE ROLE postgres;\n", b'\nCREATE ROLE "postgres" ;\n',
                  b"\n CREATE ROLE postgres;\n"):
    EXPECTED = EXPECTED.replace(statement, statement.replace(b"CREATE", SKIPPED + b"CREATE"), 1)
EXPECTED += DATABASES


def run_filter(data: bytes, chunk_size: int | None = None, superuser: str = "postgres") -> bytes:
    globals_filter = GlobalsFilter(superuser)
    if chunk_size is None:
        return globals_filter.feed(data) + globals_filter.finish()
    output = [globals_filter.feed(data[start : start + chunk_size]) for start in range(0, len(data), chunk_size)]
    return b"".join(output) + globals_filter.finish()


def test_drops_exactly_the_superusers_create_role_statements_in_the_globals() -> None:
    output = run_filter(DUMP)
    assert output == EXPECTED
    globals_part = output.split(b"\\connect ", 1)[0]
    assert globals_part.count(SKIPPED) == 4
    lines = globals_part.split(b"\n")
    for kept in (b'CREATE ROLE "postgres2";', b"CREATE ROLE postgresql;", b'CREATE ROLE "demo_user";',
                 b'ALTER ROLE "postgres" WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;',
                 b"COMMENT ON ROLE \"demo_user\" IS 'CREATE ROLE postgres;';", b'CREATE ROLE "postgres";'):
        assert kept in lines  # the last one: the line inside the multi-line comment string


def test_text_inside_a_string_is_never_taken_for_a_statement() -> None:
    data = b"COMMENT ON ROLE r IS '\nCREATE ROLE \"postgres\";\n';\n\\connect x\n"
    assert run_filter(data) == data


def test_a_skipped_name_with_a_line_break_cannot_leave_the_comment() -> None:
    data = b'CREATE ROLE "ad\nmin";\nSELECT 1;\n'
    output = run_filter(data, superuser="ad\nmin")
    assert output == SKIPPED + b'CREATE ROLE "ad min";\n\nSELECT 1;\n'
    assert output.count(b"\n") == data.count(b"\n")


def test_everything_from_the_first_connect_on_is_untouched() -> None:
    output = run_filter(DUMP)
    start = output.index(b"\\connect template1")
    assert output[start:] == DATABASES
    assert SKIPPED not in output[start:]


def test_only_the_line_changes_so_line_count_is_kept() -> None:
    assert run_filter(DUMP).count(b"\n") == DUMP.count(b"\n")


@pytest.mark.parametrize("chunk_size", range(1, 65))
def test_every_chunk_size_gives_the_same_output(chunk_size: int) -> None:
    assert run_filter(DUMP, chunk_size) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=30))
def test_arbitrary_split_points_give_the_same_output(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(DUMP)]
    globals_filter = GlobalsFilter("postgres")
    output = b"".join(globals_filter.feed(DUMP[start:end]) for start, end in zip(points, points[1:], strict=False))
    assert output + globals_filter.finish() == EXPECTED


def test_another_superuser_name() -> None:
    data = b'CREATE ROLE postgres;\nCREATE ROLE "we""ird admin";\nCREATE ROLE "admin";\n\\connect x\n'
    assert run_filter(data, superuser='we"ird admin') == (
        b"CREATE ROLE postgres;\n" + SKIPPED + b'CREATE ROLE "we""ird admin";\n' + b'CREATE ROLE "admin";\n'
        b"\\connect x\n"
    )
    assert run_filter(b"CREATE ROLE admin;\n", superuser="admin") == SKIPPED + b"CREATE ROLE admin;\n"


def test_globals_only_dump_without_connect() -> None:
    data = b'CREATE ROLE "postgres";\nCREATE ROLE "app";\n--\n-- PostgreSQL database cluster dump complete\n--\n'
    for chunk_size in (None, 1, 5):
        assert run_filter(data, chunk_size) == SKIPPED + data


def test_last_line_without_newline_is_passed_on_by_finish() -> None:
    for chunk_size in (None, 1, 3):
        assert run_filter(b"SELECT 1;\nSELECT 2;", chunk_size) == b"SELECT 1;\nSELECT 2;"
    assert run_filter(b"") == b""


def test_a_huge_statement_in_the_globals_passes_through_in_flat_memory() -> None:
    """Only a statement that could be skipped (CREATE ROLE ...) is held until its end; others flow on."""
    globals_filter = GlobalsFilter("postgres")
    output = [globals_filter.feed(b"COMMENT ON ROLE r IS '")]
    for _ in range(64):
        output.append(globals_filter.feed(b"x" * 65536))
        assert len(globals_filter._held) <= 65536 + 16
    output.append(globals_filter.feed(b"';\nCREATE ROLE \"postgres\";\n") + globals_filter.finish())
    data = b"".join(output)
    assert data.endswith(SKIPPED + b'CREATE ROLE "postgres";\n') and len(data) > 64 * 65536
