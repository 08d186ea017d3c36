"""What a restore of many databases does to spare each one's fixed cost.

A plain backup's database part with its CREATE DATABASE told to copy template0's files (STRATEGY = FILE_COPY) in a
bulk load on 15+: the one statement pg_dump wrote, found by the psql-exact lexer, gets the option before its own `;`;
every other byte reaches psql as it was, and nothing a database user wrote can move or make that insertion. A split
backup's small databases in one pg_restore --jobs 1 each, the biggest in passes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgdr.formats.plain_sections import FILE_COPY_OPTION, created_by_file_copy
from pgdr.formats.split import SMALL_ARCHIVE, pass_jobs
from pgdr.postgres.bulk_load import creates_by_file_copy, is_bulk_load
from pgdr.sqllexer import PsqlLexer, QuietListener, Statement

KEY = b"Z8uJ2mWq"
PREAMBLE = (b'--\n-- Database "shop" dump\n--\n\n--\n-- PostgreSQL database dump\n--\n\n\\restrict ' + KEY + b"\n\n"
            b"-- Dumped from database version 15.10\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n"
            b"SET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n"
            b"SET row_security = off;\n\n--\n-- Name: shop; Type: DATABASE; Schema: -; Owner: app_owner\n--\n\n")
CREATE = (b"CREATE DATABASE \"shop\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc "
          b"LOCALE = 'C';")
AFTER = (b"\n\n\nALTER DATABASE \"shop\" OWNER TO \"app_owner\";\n\n\\unrestrict " + KEY + b"\n"
         b"\\connect \"shop\"\n\\restrict " + KEY + b"\n\nCREATE TABLE public.t (a int);\n"
         b"COPY public.t (a) FROM stdin;\n1\n\\.\n\n\\unrestrict " + KEY + b"\n")
PART = PREAMBLE + CREATE + AFTER


def rewritten(part: bytes, cut: int | None = None) -> bytes:
    pieces = [part] if cut is None else [part[:cut], part[cut:]]
    return b"".join(created_by_file_copy(iter(pieces)))


def with_option(part: bytes, statement: bytes) -> bytes:
    at = part.index(statement) + len(statement) - 1
    return part[:at] + FILE_COPY_OPTION + part[at:]


@pytest.mark.parametrize("cut", [None, 0, 1, len(PREAMBLE), len(PREAMBLE) + 17, len(PREAMBLE + CREATE) - 1,
                                 len(PREAMBLE + CREATE), len(PART) - 3])
def test_pg_dumps_create_database_gets_file_copy_before_its_semicolon_wherever_the_chunks_are_cut(
        cut: int | None) -> None:
    assert rewritten(PART, cut) == with_option(PART, CREATE)


def test_the_option_is_postgresqls_strategy_clause_at_the_end_of_the_statement() -> None:
    assert CREATE[:-1] + b" STRATEGY = FILE_COPY;" in rewritten(PART)
    assert rewritten(PART).count(b"STRATEGY") == 1


def test_the_part_is_handed_on_as_soon_as_its_create_database_is_found_not_held_whole() -> None:
    """Memory stays flat: once the statement is decided, the held bytes go out before the next piece is read."""
    consumed: list[int] = []

    def pieces() -> Iterator[bytes]:
        for number, piece in enumerate([PREAMBLE, CREATE + b"\n", AFTER, b"-- more\n" * 10_000]):
            consumed.append(number)
            yield piece

    rewriting = created_by_file_copy(pieces())
    first = next(rewriting)
    assert consumed == [0, 1] and first == with_option(PREAMBLE + CREATE + b"\n", CREATE)
    whole = PREAMBLE + CREATE + b"\n" + AFTER + b"-- more\n" * 10_000
    assert b"".join([first, *rewriting]) == with_option(whole, CREATE)


def test_each_chunk_cut_gives_the_same_bytes() -> None:
    expected = with_option(PART, CREATE)
    for cut in range(len(PREAMBLE + CREATE) + 40):
        assert rewritten(PART, cut) == expected, cut


def test_the_rewritten_part_is_still_one_create_database_statement_to_psqls_reading() -> None:
    """The lexer, reading the result as psql would, sees the same statements, the first one with the option."""
    assert statements(rewritten(PART))[:7] == [*statements(PART)[:5], CREATE[:-1] + FILE_COPY_OPTION + b";",
                                               statements(PART)[6]]
    assert len(statements(rewritten(PART))) == len(statements(PART))


@pytest.mark.parametrize("name", [
    b'"shop; DROP DATABASE x; CREATE DATABASE y"',  # statement words inside a quoted name
    b'"sh""op\nline; --"',  # doubled quote, newline and comment start inside the name
    b'"\xc3\x9cn\xc3\xaf ;"',  # UTF-8 and a semicolon
])
def test_a_crafted_database_name_cannot_move_the_insertion(name: bytes) -> None:
    create = CREATE.replace(b'"shop"', name, 1)
    part = PREAMBLE + create + AFTER
    assert rewritten(part) == with_option(part, create)


def test_a_locale_string_holding_a_semicolon_and_quotes_is_passed_through() -> None:
    create = CREATE.replace(b"LOCALE = 'C'", b"LOCALE = 'x'';STRATEGY = WAL_LOG;--'")
    part = PREAMBLE + create + AFTER
    assert rewritten(part) == with_option(part, create)


@pytest.mark.parametrize("part", [
    # postgres and template1: pg_dumpall writes \connect first, the part creates no database
    b'--\n-- Database "postgres" dump\n--\n\n\\connect postgres\n\n\\restrict ' + KEY + b"\nSET a = 1;\n"
    b"CREATE DATABASE later;\n",
    # a statement other than SET / SELECT comes first: not pg_dump's shape, left alone
    PREAMBLE + b"CREATE TABLE x (a int);\n" + CREATE + AFTER,
    # the option is there already (pg_dump never writes it): not doubled
    PREAMBLE + CREATE[:-1] + b" STRATEGY = wal_log;" + AFTER,
    # ended by \g, not ;
    PREAMBLE + CREATE[:-1] + b"\n\\g\n" + AFTER,
    # no CREATE DATABASE before the end
    PREAMBLE,
    b"",
])
def test_parts_not_shaped_like_pg_dumps_create_pass_unchanged(part: bytes) -> None:
    assert rewritten(part) == part


def test_create_database_inside_a_comment_or_string_is_not_a_statement() -> None:
    part = (PREAMBLE + b"-- CREATE DATABASE fake;\n/* CREATE DATABASE fake2; */\n"
            b"SELECT 'CREATE DATABASE fake3;';\n" + CREATE + AFTER)
    assert rewritten(part) == with_option(part, CREATE)


def test_only_the_first_create_database_is_touched() -> None:
    second = b"\nCREATE DATABASE other TEMPLATE template0;\n"
    part = PREAMBLE + CREATE + second + AFTER
    assert rewritten(part) == with_option(part, CREATE)


@pytest.mark.parametrize("piece", [1 << 20, 8 * 1024])
def test_a_create_database_past_the_search_limit_is_left_alone_however_the_part_is_cut(piece: int) -> None:
    part = PREAMBLE + b"SET a = 1;\n" * 20_000 + CREATE + AFTER
    assert b"".join(created_by_file_copy(part[at : at + piece] for at in range(0, len(part), piece))) == part


def statements(data: bytes) -> list[bytes]:
    found: list[bytes] = []

    class Collect(QuietListener):
        def statement(self, statement: Statement) -> None:
            found.append(data[statement.offset : statement.end])

    lexer = PsqlLexer(Collect())
    lexer.feed(data)
    lexer.finish()
    return found


@pytest.mark.parametrize(("bulk_load", "major", "expected"), [
    (True, 15, True), (True, 18, True),
    (True, 14, False),  # no STRATEGY option before 15
    (False, 17, False),  # no bulk load (an external server, one database): fsync may be on (two synced checkpoints)
])
def test_file_copy_only_in_a_bulk_load_on_15_or_newer(bulk_load: bool, major: int, expected: bool) -> None:
    assert creates_by_file_copy(bulk_load, major) is expected


def test_a_restore_of_one_database_or_into_an_external_server_is_no_bulk_load() -> None:
    assert is_bulk_load(True, None)
    assert not is_bulk_load(True, "demo") and not is_bulk_load(False, None)


@pytest.mark.parametrize(("sizes", "parallel", "expected"), [
    ([900, 500, 40, 30, 20], 2, [2, 2, 1, 1, 1]),  # the two biggest in passes, the small ones in one pass
    ([SMALL_ARCHIVE * 3, SMALL_ARCHIVE * 2, SMALL_ARCHIVE, SMALL_ARCHIVE - 1], 2, [2, 2, 2, 1]),  # big stays in passes
    ([50, 40], 4, [4, 4]),  # no more databases than sessions: every one may use the free cores
    ([50], 2, [2]),  # --database: the one database alone
    ([50, 40, 30], 1, [1, 1, 1]),  # jobs = 1: one pass each, as before
])
def test_split_passes_only_where_a_database_can_use_several_cores(sizes: list[int], parallel: int,
                                                                  expected: list[int]) -> None:
    assert pass_jobs(sizes, parallel) == expected
