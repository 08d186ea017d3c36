"""PsqlLexer: statements, meta-commands, comments and COPY data exactly where psql finds them, whatever the chunking.

The expected splits follow psql (src/fe_utils/psqlscan.l); tests/security/ runs the same kind of scripts through
psql itself and compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.sqllexer import PsqlLexer, Statement


@dataclass
class Recorder:
    """Every event the lexer reports, with the statement and meta-command texts cut from the script itself."""

    script: bytes
    events: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0

    def statement(self, statement: Statement) -> None:
        self.events.append(("sql", self.script[statement.offset : statement.end].decode()))

    def meta_command(self, offset: int, end: int, text: str) -> None:
        self.events.append(("meta", text))

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None:
        self.events.append(("comment" if not in_statement else "inner comment", text))

    def copy_rows(self, rows: int) -> None:
        self.rows += rows

    def copy_end(self) -> None:
        self.events.append(("copy end", str(self.rows)))
        self.rows = 0


def lex(script: bytes, chunk_size: int | None = None) -> tuple[list[tuple[str, str]], PsqlLexer]:
    recorder = Recorder(script)
    lexer = PsqlLexer(recorder)
    if chunk_size is None:
        lexer.feed(script)
    else:
        for start in range(0, len(script), chunk_size):
            lexer.feed(script[start : start + chunk_size])
    lexer.finish()
    return recorder.events, lexer


def statements(script: bytes) -> list[str]:
    return [text for kind, text in lex(script)[0] if kind == "sql"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (b"SELECT 'a;b'; SELECT 2;", ["SELECT 'a;b';", "SELECT 2;"]),
        (b'SELECT "x;\ny" FROM t; SELECT 2;', ['SELECT "x;\ny" FROM t;', "SELECT 2;"]),
        (b"SELECT $$;$$; SELECT $a$ $$ ; $a$;", ["SELECT $$;$$;", "SELECT $a$ $$ ; $a$;"]),
        (b"SELECT E'\\';'; SELECT 2;", ["SELECT E'\\';';", "SELECT 2;"]),
        (b"SELECT 'it''s;'; SELECT 2;", ["SELECT 'it''s;';", "SELECT 2;"]),
        (b"SELECT a$b$c; SELECT 2;", ["SELECT a$b$c;", "SELECT 2;"]),  # a $ inside a word opens no quote
        (b"SELECT $1; SELECT 2;", ["SELECT $1;", "SELECT 2;"]),
        (b"SELECT 'a'\n'b;c'; SELECT 2;", ["SELECT 'a'\n'b;c';", "SELECT 2;"]),  # quote continuation
        (b"SELECT E'a'\n'\\';'; SELECT 2;", ["SELECT E'a'\n'\\';';", "SELECT 2;"]),  # continues as E'...'
        (b"SELECT 'a' 'b;'; SELECT 2;", ["SELECT 'a' 'b;';", "SELECT 2;"]),  # no newline: two strings
        (b"/* /* */ ; */ SELECT 1; SELECT 2;", ["/* /* */ ; */ SELECT 1;", "SELECT 2;"]),
        (b"SELECT 1 -- ;\n; SELECT 2;", ["SELECT 1 -- ;\n;", "SELECT 2;"]),
        (b"SELECT (1;2); SELECT 2;", ["SELECT (1;2);", "SELECT 2;"]),  # psql keeps ; inside parentheses
        (b"SELECT x\\;y; SELECT 2;", ["SELECT x\\;y;", "SELECT 2;"]),  # \; is text, not a meta-command
        (b"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; "
         b"END; SELECT 2;",
         ["CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 1 END; END;",
          "SELECT 2;"]),
        (b"create or replace procedure p() begin atomic select 1; end; SELECT 2;",
         ["create or replace procedure p() begin atomic select 1; end;", "SELECT 2;"]),
        (b"CREATE TABLE begin_x (a int); SELECT 2;", ["CREATE TABLE begin_x (a int);", "SELECT 2;"]),
        (b"SET standard_conforming_strings = off; SELECT 'a\\';b'; SELECT 2;",
         ["SET standard_conforming_strings = off;", "SELECT 'a\\';b';", "SELECT 2;"]),
        (b"SELECT e'x' ; SELECT namee'y'; SELECT 2;", ["SELECT e'x' ;", "SELECT namee'y';", "SELECT 2;"]),
        (b"SELECT 1e'\\'; SELECT 2;", ["SELECT 1e'\\';", "SELECT 2;"]),  # 1e is a number: '\' is standard
        (b"SET standard_conforming_strings = off; SELECT B'1\\'; SELECT X'\\';",  # bit strings: no escapes
         ["SET standard_conforming_strings = off;", "SELECT B'1\\';", "SELECT X'\\';"]),
    ],
)
def test_statements_end_where_psql_ends_them(script: bytes, expected: list[str]) -> None:
    assert statements(script) == expected
    for chunk_size in (1, 2, 3, 5, 8):
        assert [text for kind, text in lex(script, chunk_size)[0] if kind == "sql"] == expected


def test_a_backslash_outside_quotes_is_a_meta_command_even_mid_statement() -> None:
    events, _ = lex(b"SELECT 1 \\! id\nSELECT '\\! no';\n")
    assert ("meta", "\\! id") in events
    assert ("sql", "SELECT 1 \\! id\nSELECT '\\! no';") in events  # one statement around the meta-command
    assert [kind for kind, _ in events].count("meta") == 1


def test_a_carriage_return_ends_a_line_comment_as_in_psql() -> None:
    events, _ = lex(b"-- note\r\\! id\nSELECT 1;\n")
    assert events[:2] == [("comment", "-- note"), ("meta", "\\! id")]


def test_copy_data_follows_the_statement_however_it_is_laid_out() -> None:
    script = (b'COPY "public"."zz\nz" ("t") FROM stdin;\n--\n-- Database "evil" dump\n--\n\\! id\n\\.\n'
              b"SELECT 1;\n")
    events, lexer = lex(script)
    assert events == [("sql", 'COPY "public"."zz\nz" ("t") FROM stdin;'), ("copy end", "4"), ("sql", "SELECT 1;")]
    assert lexer.at_top_level


@pytest.mark.parametrize("ending", [b"\\.\n", b"\\.\r\n"])
def test_copy_ends_at_a_backslash_dot_line(ending: bytes) -> None:
    script = b"COPY t FROM stdin;\na\n\\.x\nb\\.\n" + ending + b"SELECT 1;\n"
    events, _ = lex(script)
    assert events == [("sql", "COPY t FROM stdin;"), ("copy end", "3"), ("sql", "SELECT 1;")]


def test_copy_statement_words_in_other_case_and_spread_over_lines() -> None:
    events, _ = lex(b"copy\n  t\n  from\n  STDIN\n;\nrow\n\\.\n")
    assert events[1] == ("copy end", "1")


def test_text_that_only_looks_like_copy_is_no_copy() -> None:
    for script in (b"COMMENT ON TABLE t IS 'x\nCOPY public.t FROM stdin;\n';\nSELECT 1;\n",
                   b"SELECT 'COPY t FROM stdin;';\nSELECT 1;\n",
                   b"-- COPY t FROM stdin;\nSELECT 1;\n"):
        events, _ = lex(script)
        assert all(kind != "copy end" for kind, _ in events)
        assert events[-1] == ("sql", "SELECT 1;")


def test_unterminated_quotes_leave_the_lexer_off_top_level() -> None:
    for script in (b"SELECT 'abc", b'SELECT "abc', b"SELECT $x$ abc $y$", b"/* abc", b"COPY t FROM stdin;\nrow\n"):
        _, lexer = lex(script)
        assert not lexer.at_top_level


def test_a_huge_row_keeps_memory_flat() -> None:
    """A single 8 MB row fed in 64 KiB chunks: what waits between chunks stays a few bytes (no re-scanning)."""
    recorder = Recorder(b"")
    lexer = PsqlLexer(recorder)
    lexer.feed(b"COPY t FROM stdin;\n")
    chunk = b"x" * 65536
    for _ in range(128):
        lexer.feed(chunk)
        assert len(lexer._carry) <= 4
    lexer.feed(b"\n\\.\n")
    lexer.finish()
    assert recorder.events[-1] == ("copy end", "1")


def test_a_huge_string_keeps_memory_flat() -> None:
    recorder = Recorder(b"")
    lexer = PsqlLexer(recorder)
    lexer.feed(b"COMMENT ON TABLE t IS '")
    for _ in range(128):
        lexer.feed(b"''ab" * 16384)
        assert len(lexer._carry) <= 4
    lexer.feed(b"';\n")
    lexer.finish()
    assert len(recorder.events) == 1 and lexer.at_top_level


CORPUS = (
    b"--\n-- header\n--\n\\restrict k\nSET standard_conforming_strings = on;\n"
    b"CREATE TABLE \"a\nb\" (\"c;\" text DEFAULT 'x''y;' /* c */);\n"
    b"COMMENT ON TABLE t IS E'line\\n\\'q\\'; \\\\';\n"
    b"CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $_$begin return '$$;'; end$_$;\n"
    b"CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
    b"SELECT a$b$, $1, 1e'x', 'p'\n  'q';\n"
    b"COPY \"s\".\"t\" (\"a\") FROM stdin;\n1\t\\\\.\n--\n\\.\n"
    b"\\unrestrict k\n\n--\n-- end\n--\n"
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(CORPUS)), max_size=25))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    expected, _ = lex(CORPUS)
    points = [0, *sorted(cuts), len(CORPUS)]
    recorder = Recorder(CORPUS)
    lexer = PsqlLexer(recorder)
    for start, end in zip(points, points[1:], strict=False):
        lexer.feed(CORPUS[start:end])
    lexer.finish()
    assert recorder.events == expected
    assert lexer.at_top_level


def test_copy_and_settings_are_followed_whatever_the_listener_watches() -> None:
    """COPY and SET change how psql reads what follows: captured even when the listener watches nothing."""
    script = b"SET standard_conforming_strings = off;\nSELECT 'a\\';b';\nCOPY t FROM stdin;\nSELECT 1;\n\\.\n"
    recorder = Recorder(script)
    lexer = PsqlLexer(recorder, watch=lambda first, second: False)
    lexer.feed(script)
    lexer.finish()
    assert recorder.events == [("sql", "SET standard_conforming_strings = off;"), ("sql", "SELECT 'a\\';b';"),
                               ("sql", "COPY t FROM stdin;"), ("copy end", "1")]
