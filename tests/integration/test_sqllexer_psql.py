"""The lexer against psql itself: the same script, and psql's own account of what it sent to the server.

psql run with --echo-queries prints every query exactly as it sends it; the lexer must cut the script into the
same statements (byte for byte) and count the same COPY rows, whatever hostile text the quoted parts hold:
newlines, quotes, backslashes, comment and dollar-quote openers, `\\.`, psql meta-commands, section headers.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import TestServer, run_as_postgres_kwargs, start_test_server
from pgdr.postgres.binaries import find_toolset
from pgdr.sqllexer import PsqlLexer, Statement

HOSTILE = ["'", '"', "\\", ";", "\n", "\r\n", "--", "/*", "*/", "$$", "$a$", "\\.", "E'", "\\! touch marker",
           "COPY x FROM stdin;", '-- Database "x" dump', "\\connect db", "ü", "(", ")", "BEGIN", "END", " ", "x"]
TABLE = "lexer_copy"


@pytest.fixture(scope="module")
def server() -> Iterator[TestServer]:
    root = Path(tempfile.mkdtemp(prefix="pgdr-lexer-"))
    root.chmod(0o755)
    started = start_test_server(root)
    yield started
    started.stop()
    shutil.rmtree(root, ignore_errors=True)


def standard_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def escape_string(text: str) -> str:
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dollar_string(text: str) -> str:
    tag = "$q$"
    while tag in text or text.endswith(tag[:-1]):
        tag = tag[:-1] + "q$"
    return tag + text + tag


def copy_row(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


texts = st.lists(st.sampled_from(HOSTILE), max_size=6).map("".join)


@st.composite
def statements(draw: st.DrawFn) -> str:
    text = draw(texts)
    kind = draw(st.sampled_from(["standard", "escape", "dollar", "identifier", "line comment", "block comment",
                                 "copy", "continued", "function", "no standard strings"]))
    if kind == "standard":
        return f"SELECT {standard_string(text)};\n"
    if kind == "escape":
        return f"SELECT {escape_string(text)};\n"
    if kind == "dollar":
        return f"SELECT {dollar_string(text)};\n"
    if kind == "identifier":
        name = text.replace('"', '""')[:40].replace("\x00", "")
        return f'SELECT 1 AS "{name or "x"}";\n'
    if kind == "line comment":
        return f"-- {text.replace(chr(10), ' ').replace(chr(13), ' ')}\nSELECT 2;\n"
    if kind == "block comment":
        return f"/* {text.replace('*/', '* /').replace('/*', '/ *')} */ SELECT 3;\n"
    if kind == "copy":
        rows = draw(st.lists(texts, max_size=3))
        return f'COPY "{TABLE}" (a) FROM stdin;\n' + "".join(copy_row(row) + "\n" for row in rows) + "\\.\n"
    if kind == "continued":
        return f"SELECT {standard_string(text)}\n  {standard_string(text)};\n"
    if kind == "function":
        return (f"CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql BEGIN ATOMIC SELECT "
                f"{standard_string(text)}; SELECT CASE WHEN true THEN 'x' END; END;\n")
    body = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"SET standard_conforming_strings = off;\nSELECT '{body}';\nSET standard_conforming_strings = on;\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(statements(), min_size=1, max_size=8).map("".join))
def test_the_lexer_cuts_statements_and_copy_rows_exactly_where_psql_does(server: TestServer, body: str) -> None:
    script = (f'DROP TABLE IF EXISTS "{TABLE}";\nCREATE TABLE "{TABLE}" (a text);\n' + body).encode()
    sent_by_psql = run_psql(server, script)
    recorder = _Statements()
    lexer = PsqlLexer(recorder)
    for start in range(0, len(script), 7):  # small chunks: boundaries everywhere
        lexer.feed(script[start : start + 7])
    lexer.finish()
    assert b"".join(script[item.offset : item.end] + b"\n" for item in recorder.found) == sent_by_psql
    with server.connect() as connection:
        row = connection.execute(f'SELECT count(*) FROM "{TABLE}"').fetchone()
    assert row is not None and recorder.rows == row[0]
    assert recorder.meta == []  # every backslash above is inside a quote, a comment or COPY data


class _Statements:
    def __init__(self) -> None:
        self.found: list[Statement] = []
        self.meta: list[str] = []
        self.rows = 0

    def statement(self, statement: Statement) -> None:
        self.found.append(statement)

    def meta_command(self, offset: int, end: int, text: str) -> None:
        self.meta.append(text)

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None:
        pass

    def copy_rows(self, rows: int) -> None:
        self.rows += rows

    def copy_end(self) -> None:
        pass


def run_psql(server: TestServer, script: bytes) -> bytes:
    psql = find_toolset("", ("psql",)).path("psql")
    result = subprocess.run(
        [psql, "-X", "-q", "--echo-queries", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1", "-h", str(server.socket_dir),
         "-p", str(server.port), "-U", server.superuser, "-d", "postgres", "-f", "-"],
        input=script, capture_output=True, check=False, env={"PGPASSWORD": server.password, "PATH": "/usr/bin:/bin"},
        **run_as_postgres_kwargs(),  # type: ignore[arg-type]
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout
