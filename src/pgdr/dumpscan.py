"""Reads a pg_dumpall SQL stream as it passes, through the psql-exact lexer (pgdr.sqllexer), in flat memory.

Everything pgdr learns from a dump comes from what psql itself would do with the same bytes, never from a line
that merely looks like something: the rows of every COPY block per database and table (the counts `verify`
checks), whether the dump reached its end marker, whether it carries role passwords (a backup must not) or other
secrets (user-mapping options, subscription connection strings), and where each database's part starts.

A part boundary is believed only when it cannot be forged. Since PostgreSQL 17.6, 16.10, 15.14, 14.19 and 13.22,
pg_dump wraps its output in ``\\restrict KEY`` ... ``\\unrestrict KEY`` with a random key no database user knows
when the data is written, and psql refuses every other meta-command in between. A header
``-- Database "x" dump`` starts a part only when it is a top-level comment, the previous part's ``\\unrestrict``
closed the key its ``\\restrict`` opened with nothing but comments since, and the new part's own ``\\restrict``
comes before anything but comments and ``\\connect``. Any doubt (older pg_dumpall, the old shell pipeline's files,
a script psql would read differently from a pg_dump's) and the dump has no sections: it restores in one stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from pgdr.artifact import DatabaseContents, EmbeddedSecret, Section, TableCount
from pgdr.sqllexer import PsqlLexer, Statement, Word, is_copy_from_stdin

END_COMMENT = "-- PostgreSQL database cluster dump complete"
SECTION_HEADER = re.compile(r'-- Database "(.*)" dump\Z')
SECRET_OPTIONS = {"password", "sslpassword"}
WATCHED = {("create", "role"), ("alter", "role"), ("create", "user"), ("alter", "user"), ("create", "group"),
           ("alter", "group"), ("create", "subscription"), ("alter", "subscription"), ("create", "server"),
           ("alter", "server"), ("create", "foreign"), ("alter", "foreign")}
# `\encoding SQL_ASCII` is what pg_dump writes before it reconnects to a database whose name is not ASCII (the
# name is sent as the bytes it is); like UTF8, an encoding in which a quote or a backslash byte is always one.
DUMP_ENCODINGS = ("SQL_ASCII", "UTF8")
NO_RESTRICT = ("the dump has no \\restrict keys (pg_dumpall older than 17.6, 16.10, 15.14, 14.19 or 13.22, or the "
               "old shell pipeline)")


def watched(first: Word, second: Word) -> bool:
    """The statements whose words pgdr reads; every other statement is lexed at full speed."""
    verb, noun = first.text.lower(), second.text.lower()
    return verb in ("copy", "set", "reset") or (verb, noun) in WATCHED


def parse_connect_database(line: str) -> str:
    r"""'\connect demo' -> 'demo'; '\connect -reuse-previous=on "dbname=''we ird''"' -> 'we ird'."""
    argument = line[len("\\connect ") :].strip()
    if argument.startswith("-reuse-previous=on "):
        argument = argument[len("-reuse-previous=on ") :].strip()
    if argument.startswith('"') and argument.endswith('"'):
        argument = argument[1:-1].replace('""', '"')
    if argument.startswith("dbname="):
        value = argument[len("dbname=") :]
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1]
        return value.replace("\\'", "'").replace("\\\\", "\\")
    return argument


def qualified_name(words: list[Word], start: int) -> tuple[list[str], int]:
    """Words from start as a dotted name ("public"."t" or public.t): its parts, and the index after it."""
    names: list[str] = []
    index = start
    while index < len(words) and words[index].kind in ("ident", "quoted"):
        word = words[index]
        names.append(word.text if word.kind == "quoted" else word.text.lower())
        index += 1
        if index < len(words) and words[index].text == ".":
            index += 1
            continue
        break
    return names, index


def copy_table(statement: Statement) -> tuple[str, str]:
    names, _ = qualified_name(statement.words, 1)
    if len(names) == 1:
        return "public", names[0]
    return (names[-2], names[-1]) if names else ("", "")


def sets_role_password(statement: Statement) -> bool:
    """CREATE/ALTER ROLE|USER|GROUP name ... [ENCRYPTED] PASSWORD 'x' (PASSWORD NULL sets none)."""
    if (statement.keyword(0), statement.keyword(1)) not in WATCHED or statement.keyword(2) == "mapping":
        return False
    if statement.keyword(1) not in ("role", "user", "group"):
        return False
    words = statement.words
    return any(word.is_keyword("password") and following.kind == "string"
               for word, following in zip(words, words[1:], strict=False))


def embedded_secret(statement: Statement, database: str) -> EmbeddedSecret | None:
    """A user mapping, server or foreign object whose options hold a password, or a subscription whose connection
    string does: the dump stores it in plain text (pg_dumpall --no-role-passwords leaves these in)."""
    verb, noun = statement.keyword(0), statement.keyword(1)
    if (verb, noun) not in WATCHED or noun in ("role", "group"):
        return None
    words = statement.words
    if noun == "subscription":
        for word, following in zip(words, words[1:], strict=False):
            if word.is_keyword("connection") and following.kind == "string" and conninfo_has_password(following.text):
                return EmbeddedSecret(database=database, kind="subscription", name=_object_name(words, 2))
        return None
    if noun == "user" and statement.keyword(2) != "mapping":
        return None
    for word, following in zip(words, words[1:], strict=False):
        if word.kind in ("ident", "quoted") and word.text.lower() in SECRET_OPTIONS and following.kind == "string":
            if noun == "user":
                return EmbeddedSecret(database=database, kind="user mapping",
                                      name=_object_name(words, 3, stop="options"))
            kind = "server" if noun == "server" else "foreign object"
            return EmbeddedSecret(database=database, kind=kind, name=_object_name(words, 2, stop="foreign"))
    return None


def _object_name(words: list[Word], start: int, stop: str = "") -> str:
    """The statement's words from start up to a keyword (e.g. FOR "app" SERVER "s"), as text, for a message."""
    parts = []
    for word in words[start : start + 8]:
        if word.is_keyword(stop) or word.is_keyword("options") or word.kind in ("string", "symbol", "other") or \
                word.is_keyword("connection"):
            break
        parts.append(word.text)
    return " ".join(parts)


def conninfo_has_password(conninfo: str) -> bool:
    """libpq connection strings: key=value pairs (values quoted with '...', backslash escapes) or a URI."""
    text = conninfo.strip()
    if text.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(text)
        query = parse_qs(parts.query)
        return bool(parts.password) or any(key.lower() in SECRET_OPTIONS for key in query)
    for match in re.finditer(r"([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)", text):
        if match.group(1).lower() in SECRET_OPTIONS and match.group(2) not in ("", "''"):
            return True
    return False


@dataclass
class SectionProof:
    """Follows \\restrict / \\unrestrict and the part headers; keeps only the part boundaries that are proven."""

    sections: list[Section] = field(default_factory=list)
    problem: str = ""
    _open_key: str | None = None
    _closed_any: bool = False
    _quiet: bool = False  # nothing but comments since the last \unrestrict closed its key
    _pending: Section | None = None  # a header seen; its \restrict not yet
    _previous_comment: tuple[str, int] = ("", -2)  # text and end of the last top-level comment

    def fail(self, problem: str) -> None:
        if not self.problem:
            self.problem = problem

    def restrict(self, key: str) -> None:
        if self._open_key is not None:
            self.fail("a \\restrict inside another")
        self._open_key, self._quiet = key, False
        if self._pending is not None:
            self.sections.append(self._pending)
            self._pending = None

    def unrestrict(self, key: str) -> None:
        if key != self._open_key or not key:
            self.fail("a \\unrestrict that does not close the open key")
        self._open_key, self._closed_any, self._quiet = None, True, True

    def connect(self) -> None:
        if self._pending is None:
            self._quiet = False

    def content(self) -> None:
        """A statement or another meta-command: before the part's \\restrict it breaks the proof."""
        if self._pending is not None:
            self.fail(f"database {self._pending.database}: SQL before the part's \\restrict")
            self._pending = None
        self._quiet = False

    def comment(self, offset: int, end: int, text: str) -> None:
        header = SECTION_HEADER.match(text)
        previous_text, previous_end = self._previous_comment
        self._previous_comment = (text, end)
        if header is None or previous_text != "--" or previous_end + 1 != offset:
            return
        if not self._closed_any:
            self.fail(NO_RESTRICT)
        elif self._open_key is not None or not self._quiet or self._pending is not None:
            self.fail(f"the header of database {header.group(1)} is not where a part can end")
        else:
            self._pending = Section(database=header.group(1), offset=offset - 3)

    def finish(self) -> list[Section]:
        if self._pending is not None or self._open_key is not None:
            self.fail("the dump ends inside a part")
        return [] if self.problem else self.sections


@dataclass
class DumpScanner:
    """Feed it the uncompressed dump chunk by chunk; finish(), then read what it found."""

    tables: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    has_password: bool = False
    embedded_secrets: list[EmbeddedSecret] = field(default_factory=list)
    proof: SectionProof = field(default_factory=SectionProof)
    _database: str = ""
    _table: tuple[str, str] | None = None
    _end_seen: bool = False
    _finished: bool = False
    _sections: list[Section] = field(default_factory=list)
    lexer: PsqlLexer = field(init=False)

    def __post_init__(self) -> None:
        self.lexer = PsqlLexer(self, watch=watched)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        self.lexer.feed(chunk)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.lexer.finish()
        for anomaly in self.lexer.anomalies:
            self.proof.fail(f"the script holds {anomaly}, which pg_dump never writes")
        self._sections = self.proof.finish()

    @property
    def sections(self) -> list[Section]:
        """The proven part boundaries; [] when any is in doubt (restore in one stream)."""
        self.finish()
        return self._sections

    @property
    def complete(self) -> bool:
        """The end-of-dump comment at top level, with nothing after it but comments, outside any quote or COPY."""
        self.finish()
        return self._end_seen and self.lexer.at_top_level

    def databases(self) -> list[DatabaseContents]:
        self.finish()
        return [
            DatabaseContents(
                name=name,
                tables=[TableCount(schema=schema, table=table, rows=rows)
                        for (schema, table), rows in sorted(counts.items())],
            )
            for name, counts in sorted(self.tables.items())
            if name
        ]

    # ---- the lexer's listener -----------------------------------------------------------------------------
    def statement(self, statement: Statement) -> None:
        self._end_seen = False
        self.proof.content()
        if is_copy_from_stdin(statement):
            self._table = copy_table(statement)
            self.tables.setdefault(self._database, {}).setdefault(self._table, 0)
        elif sets_role_password(statement):
            self.has_password = True
        else:
            secret = embedded_secret(statement, self._database)
            if secret is not None:
                self.embedded_secrets.append(secret)

    def meta_command(self, offset: int, end: int, text: str) -> None:
        self._end_seen = False
        name, _, argument = text.partition(" ")
        if name in ("\\connect", "\\c"):
            self._database = parse_connect_database("\\connect " + argument)
            self.tables.setdefault(self._database, {})
            self.proof.connect()
        elif name == "\\restrict":
            self.proof.restrict(argument.strip())
        elif name == "\\unrestrict":
            self.proof.unrestrict(argument.strip())
        elif name == "\\encoding" and argument.strip() in DUMP_ENCODINGS:
            self.proof.connect()  # pg_dump's, before the \connect to a database whose name is not ASCII
        else:
            self.proof.content()
            self.proof.fail(f"a meta-command pg_dump never writes ({name})")

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None:
        if in_statement:
            return
        if text == END_COMMENT:
            self._end_seen = True
        self.proof.comment(offset, end, text)

    def copy_rows(self, rows: int) -> None:
        if self._table is not None:
            counts = self.tables.setdefault(self._database, {})
            counts[self._table] = counts.get(self._table, 0) + rows

    def copy_end(self) -> None:
        self._table = None
