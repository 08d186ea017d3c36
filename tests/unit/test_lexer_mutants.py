"""Cases found by the mutation pass (tests/mutants/mutation_pass.py): each kills mutants of the lexer or of dumpscan
that the other lexer tests let through. Most run the lexer the way dumpscan runs it, with statements whose words
are not watched, so its fast path (runs of words skipped in one match) is the one under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pgdr.dumpscan import DumpScanner, parse_connect_database
from pgdr.sqllexer import PsqlLexer, Statement, Word

WORD_LIMIT = 512  # the documented limits, written out: a test reading them from the module would follow a mutant
TEXT_LIMIT = 64 * 1024


@dataclass
class Events:
    script: bytes = b""
    statements: list[Statement] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # statements as cut from the script
    metas: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    rows: int = 0

    def statement(self, statement: Statement) -> None:
        self.statements.append(statement)
        self.texts.append(self.script[statement.offset : statement.end].decode("utf-8", "replace"))

    def meta_command(self, offset: int, end: int, text: str) -> None:
        self.metas.append(text)

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None:
        self.comments.append(text)

    def copy_rows(self, rows: int) -> None:
        self.rows += rows

    def copy_end(self) -> None:
        pass


def never(first: Word, second: Word) -> bool:
    return False


def lex(*chunks: bytes, watch=never) -> tuple[Events, PsqlLexer]:  # type: ignore[no-untyped-def]
    events = Events(b"".join(chunks))
    lexer = PsqlLexer(events, watch=watch)
    for chunk in chunks:
        lexer.feed(chunk)
    lexer.finish()
    return events, lexer


def texts(*chunks: bytes, watch=never) -> list[str]:  # type: ignore[no-untyped-def]
    return lex(*chunks, watch=watch)[0].texts


# ---- what the fast path must not skip -----------------------------------------------------------------------


def test_create_or_replace_function_is_spotted_even_when_its_words_are_not_watched():
    body = b"CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;"
    assert texts(body + b"\nSELECT 3;\n") == [body.decode(), "SELECT 3;"]


def test_an_end_outside_any_begin_does_not_keep_the_function_statement_open():
    body = b"CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN CASE WHEN true THEN 1 ELSE 0 END;"
    assert texts(body + b"\nSELECT 2;\n") == [body.decode(), "SELECT 2;"]


@pytest.mark.parametrize("before", [b" ", b"=", b"\x7f"])  # \x7f is an operator byte for psql, not a word byte
@pytest.mark.parametrize("prefix", [b"b", b"B", b"x", b"X"])
def test_a_bit_string_takes_no_backslash_escape_after_any_run_of_words(before, prefix):
    script = (b"SET standard_conforming_strings = off;\nSELECT 1 FROM t WHERE c =" + before + prefix
              + b"'\\';\nSELECT 2;\n")
    assert texts(script)[1:] == ["SELECT 1 FROM t WHERE c =" + before.decode() + prefix.decode() + "'\\';",
                                 "SELECT 2;"]


@pytest.mark.parametrize("prefix", [b"e", b"E"])
def test_a_lone_e_after_a_run_of_words_starts_an_escape_string(prefix):
    script = b"SELECT 1 FROM t WHERE c = " + prefix + b"'\\'';\nSELECT 2;\n"
    assert texts(script) == [script[:-11].decode(), "SELECT 2;"]


@pytest.mark.parametrize("word", [b"type", b"tab", b"max"])  # end in e, b, x: identifiers, not string prefixes
def test_a_word_ending_in_e_b_or_x_before_a_quote_is_no_string_prefix(word):
    script = b"SELECT 1 FROM t WHERE c = " + word + b"'\\';\nSELECT 2;\n"
    assert texts(script) == [script[:-11].decode(), "SELECT 2;"]


def test_an_e_at_the_start_of_a_chunk_starts_an_escape_string_whatever_ends_the_chunk():
    first, second = b"SELECT 1 FROM t WHERE c = ", b"E'\\'';\nSELECT 2;\nSELECT x"
    assert texts(first, second) == [(first + second[:6]).decode(), "SELECT 2;"]


def test_a_statement_with_two_words_only_is_not_captured_when_not_watched():
    events, _ = lex(b"VACUUM t;\nANALYZE t;\n")
    assert [statement.words for statement in events.statements] == [[], []]


# ---- what psql's own settings change ------------------------------------------------------------------------

BACKSLASH_THEN_NEXT = b"SELECT '\\';\nSELECT 2;\n"  # two statements when standard_conforming_strings is on


@pytest.mark.parametrize("setting", [
    b"RESET standard_conforming_strings;", b"RESET all;", b"SET standard_conforming_strings TO on;",
    b"SET standard_conforming_strings = 1;", b"SET SESSION standard_conforming_strings = on;",
    b"SET LOCAL standard_conforming_strings TO on;",
])
def test_standard_conforming_strings_back_on(setting):
    script = b"SET standard_conforming_strings = off;\n" + setting + b"\n" + BACKSLASH_THEN_NEXT
    assert texts(script)[2:] == ["SELECT '\\';", "SELECT 2;"]


@pytest.mark.parametrize("setting", [b"SET SESSION standard_conforming_strings = off;",
                                     b"SET LOCAL standard_conforming_strings TO off;"])
def test_standard_conforming_strings_off_for_the_session_or_transaction(setting):
    assert texts(setting + b"\n" + BACKSLASH_THEN_NEXT) == [setting.decode()]  # the rest is one open string


# every name in the lexer's list, written out here: a name dropped from the list must fail
ENCODINGS = ["sjis", "shiftjis", "shiftjis2004", "big5", "gbk", "uhc", "gb18030", "johab", "win932", "win936",
             "win949", "win950", "cp932", "cp936", "cp949", "cp950"]


@pytest.mark.parametrize("name", ENCODINGS + ["Shift_JIS", "SHIFT-JIS-2004", "WIN-949"])
def test_every_client_encoding_psql_would_lex_otherwise_is_an_anomaly(name):
    _, lexer = lex(f"SET client_encoding = '{name}';\n".encode())
    assert lexer.anomalies == [f"client_encoding {name.lower()}"]


# ---- meta-commands, comments, COPY across chunks ------------------------------------------------------------


def test_backslash_colon_is_text_not_a_meta_command():
    events, _ = lex(b"SELECT a \\:b;\nSELECT 2;\n")
    assert events.metas == []
    assert events.texts == ["SELECT a \\:b;", "SELECT 2;"]


@pytest.mark.parametrize("cut", [4, 5])
def test_a_comment_cut_by_a_chunk_ends_at_its_newline_not_at_a_later_carriage_return(cut):
    script = b"-- a\nSELECT 1;\r\nSELECT 2;\n"
    events, _ = lex(script[:cut], script[cut:])
    assert events.comments == ["-- a"]
    assert events.texts == ["SELECT 1;", "SELECT 2;"]


def test_text_after_copy_from_stdin_on_its_line_is_an_anomaly_even_at_a_chunk_end():
    _, lexer = lex(b"COPY t (a) FROM stdin; x", b"\n1\n\\.\n")
    assert lexer.anomalies == ["text after COPY ... FROM stdin; on the same line"]


def test_in_copy_from_the_statement_on():
    events = Events()
    lexer = PsqlLexer(events, watch=never)
    lexer.feed(b"COPY t (a) FROM stdin;")
    assert lexer.in_copy
    lexer.feed(b"\n1\n")
    assert lexer.in_copy
    lexer.feed(b"\\.\n")
    assert not lexer.in_copy


# ---- what a captured statement keeps ------------------------------------------------------------------------


def test_a_statement_of_exactly_word_limit_words_is_kept_whole():
    script = b"SET a" + b" b" * (WORD_LIMIT - 3) + b";\n"
    [statement] = lex(script, watch=lambda first, second: True)[0].statements
    assert len(statement.words) == WORD_LIMIT
    assert statement.truncated is False
    [longer] = lex(b"SET a b" + script[5:], watch=lambda first, second: True)[0].statements
    assert len(longer.words) == WORD_LIMIT
    assert longer.truncated is True


@pytest.mark.parametrize(("size", "truncated"), [(TEXT_LIMIT, False), (TEXT_LIMIT + 1, True),
                                                 (TEXT_LIMIT + 4096, True)])
def test_a_captured_string_is_cut_at_text_limit(size, truncated):
    value = b"v" * size
    events, _ = lex(b"SET a = '", value[:1000], value[1000:] + b"';\n", watch=lambda first, second: True)
    [statement] = events.statements
    string = next(word for word in statement.words if word.kind == "string")
    assert string.text == "v" * min(size, TEXT_LIMIT)
    assert statement.truncated is truncated


def test_an_identifier_that_is_not_utf8_is_decoded_with_replacement():
    [statement] = lex(b"SET \xff = on;\n", watch=lambda first, second: True)[0].statements
    assert statement.words[1] == Word("ident", "\ufffd")


# ---- dumpscan -------------------------------------------------------------------------------------------------


def scan(script: str) -> DumpScanner:
    scanner = DumpScanner()
    scanner.feed(script.encode())
    scanner.finish()
    return scanner


@pytest.mark.parametrize("statement", [
    "CREATE ROLE r PASSWORD 'x';", "ALTER ROLE r PASSWORD 'x';", "CREATE USER r PASSWORD 'x';",
    "ALTER USER r WITH PASSWORD 'x';", "CREATE GROUP r PASSWORD 'x';", "ALTER GROUP r PASSWORD 'x';",
])
def test_every_statement_that_can_set_a_role_password_is_watched(statement):
    assert scan(statement + "\n").has_password


@pytest.mark.parametrize(("statement", "kind", "name"), [
    ("CREATE SUBSCRIPTION s CONNECTION 'password=x' PUBLICATION p;", "subscription", "s"),
    ("ALTER SUBSCRIPTION s CONNECTION 'host=h password=x';", "subscription", "s"),
    ("CREATE SERVER s FOREIGN DATA WRAPPER w OPTIONS (password 'x');", "server", "s"),
    ("ALTER SERVER s OPTIONS (ADD password 'x');", "server", "s"),
    ("CREATE SERVER s TYPE 'pw' VERSION '1' FOREIGN DATA WRAPPER w OPTIONS (password 'x');", "server", "s TYPE"),
    ("CREATE FOREIGN TABLE ft (a int) SERVER s OPTIONS (password 'x');", "foreign object", "TABLE ft"),
    ("ALTER FOREIGN TABLE ft OPTIONS (ADD sslpassword 'x');", "foreign object", "TABLE ft"),
    ("CREATE USER MAPPING FOR u SERVER s OPTIONS (password 'x');", "user mapping", "FOR u SERVER s"),
    ("ALTER USER MAPPING FOR u SERVER s OPTIONS (SET password 'x');", "user mapping", "FOR u SERVER s"),
])
def test_every_statement_that_can_hold_a_secret_is_watched_and_named_without_its_strings(statement, kind, name):
    secrets = scan("\\connect db\n" + statement + "\n").embedded_secrets
    assert [(secret.database, secret.kind, secret.name) for secret in secrets] == [("db", kind, name)]


def test_a_database_name_ending_but_not_starting_with_a_quote_is_taken_as_written():
    assert parse_connect_database('\\connect -reuse-previous=on "dbname=a\'"') == "a'"


HEADER = '--\n-- Database "{name}" dump\n--\n\n'


def two_parts(between: str = "", inside: str = "") -> str:
    """Globals, then two database parts, each inside its own \\restrict key, as pg_dumpall writes them."""
    return ("\\restrict G\nCREATE ROLE a;\n\\unrestrict G\n\n" + between + HEADER.format(name="one")
            + "\\connect one\n\\restrict K1\nCREATE TABLE t (a int);\n" + inside + "\\unrestrict K1\n\n"
            + HEADER.format(name="two") + "\\connect two\n\\restrict K2\nCREATE TABLE u (a int);\n"
            + "\\unrestrict K2\n\n--\n-- PostgreSQL database cluster dump complete\n--\n\n")


def test_two_parts_are_proven():
    assert [section.database for section in scan(two_parts()).sections] == ["one", "two"]


@pytest.mark.parametrize("between", [
    "SELECT 1;\n\n",  # SQL after the previous part's \\unrestrict, before the header
    HEADER.format(name="zero"),  # a header whose part never opened its \\restrict
])
def test_a_header_after_anything_but_comments_since_the_last_unrestrict_drops_every_section(between):
    scanner = scan(two_parts(between=between))
    assert scanner.sections == []
    assert "is not where a part can end" in scanner.proof.problem


def test_a_header_like_comment_inside_a_statement_is_no_header():
    inside = "SELECT 1\n" + HEADER.format(name="evil").rstrip("\n") + "\n;\n"
    assert [section.database for section in scan(two_parts(inside=inside)).sections] == ["one", "two"]
