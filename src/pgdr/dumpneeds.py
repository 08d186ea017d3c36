"""Reads what a plain SQL script needs from the server it is restored into, when no manifest says so: the old shell
pipeline's files, and pgdr backups from before manifests recorded `requirements`.

The statements are the ones psql will run, found by the psql-exact lexer (pgdr.sqllexer), never by matching lines:
text inside a string, a dollar-quoted body, a comment, a quoted name or a COPY row is never taken for one.

- ``CREATE EXTENSION [IF NOT EXISTS] name [WITH] [SCHEMA s] [VERSION v] [CASCADE]``: needed in the database of the
  last ``\\connect`` before it (``postgres`` before any: the restore's psql starts there);
- ``CREATE DATABASE name ... LOCALE_PROVIDER [=] icu`` (or ``'icu'``): the database needs ICU;
- ``CREATE COLLATION [IF NOT EXISTS] name (... provider [=] icu ...)``: the collation needs ICU;
- ``CREATE TABLESPACE name [OWNER role] LOCATION 'dir'``: the directory must exist on the server.

pg_dump writes no extension versions (CREATE EXTENSION installs the target's default), so none are known here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgdr.artifact import ExtensionNeed, Requirements, TablespaceNeed
from pgdr.dumpscan import parse_connect_database, qualified_name
from pgdr.sqllexer import PsqlLexer, QuietListener, Statement, Word

WATCHED_NOUNS = ("extension", "database", "collation", "tablespace")
FIRST_DATABASE = "postgres"  # where the restore's psql starts (restore.psql_restore_argv)


def watched(first: Word, second: Word) -> bool:
    """Only CREATE EXTENSION|DATABASE|COLLATION|TABLESPACE have their words kept; the rest is lexed at full speed."""
    return first.is_keyword("create") and second.kind == "ident" and second.text.lower() in WATCHED_NOUNS


def created_name(statement: Statement) -> tuple[str, int]:
    """The object's (dotted) name after CREATE <noun> [IF NOT EXISTS], and the index of the word after it."""
    start = 5 if [statement.keyword(index) for index in (2, 3, 4)] == ["if", "not", "exists"] else 2
    names, after = qualified_name(statement.words, start)
    return ".".join(names), after


def is_icu(word: Word | None) -> bool:
    """icu, 'icu' or "icu" (the server compares provider names without regard to case)."""
    return word is not None and word.kind in ("ident", "quoted", "string") and word.text.lower() == "icu"


def option_value(words: list[Word], index: int) -> Word | None:
    """The value of the option whose name is at index: the next word, after an optional '='."""
    index += 1
    if index < len(words) and words[index].kind == "other" and words[index].text == "=":
        index += 1
    return words[index] if index < len(words) else None


def extension_need(statement: Statement, database: str) -> ExtensionNeed | None:
    name, index = created_name(statement)
    if not name:
        return None
    words, version = statement.words, ""
    index += 1 if statement.keyword(index) == "with" else 0
    while index < len(words):
        keyword = statement.keyword(index)
        if keyword in ("schema", "version", "from"):  # each takes one argument
            if keyword == "version" and index + 1 < len(words):
                version = words[index + 1].text
            index += 2
        else:
            index += 1
    return ExtensionNeed(database=database, name=name, version=version)


def database_uses_icu(statement: Statement) -> bool:
    """CREATE DATABASE name [WITH] ... LOCALE_PROVIDER [=] icu ...: options are name-value pairs after the name."""
    _, index = created_name(statement)
    words = statement.words
    return any(statement.keyword(position) == "locale_provider" and is_icu(option_value(words, position))
               for position in range(index, len(words)))


def collation_uses_icu(statement: Statement) -> bool:
    """CREATE COLLATION name (provider = icu, ...): only an option of the parenthesized list counts."""
    _, index = created_name(statement)
    words, depth = statement.words, 0
    for position in range(index, len(words)):
        word = words[position]
        if word.kind == "symbol" and word.text in ("(", ")"):
            depth += 1 if word.text == "(" else -1
        elif depth == 1 and statement.keyword(position) == "provider" and \
                words[position - 1].text in ("(", ",") and is_icu(option_value(words, position)):
            return True
    return False


def tablespace_need(statement: Statement) -> TablespaceNeed | None:
    """CREATE TABLESPACE name [OWNER role] LOCATION 'dir': the first LOCATION keyword followed by a string (an owner
    may be called location)."""
    name, index = created_name(statement)
    words = statement.words
    for position in range(index, len(words) - 1):
        if statement.keyword(position) == "location" and words[position + 1].kind == "string":
            return TablespaceNeed(name=name, location=words[position + 1].text)
    return None


@dataclass
class NeedsReader(QuietListener):
    """Feed it the uncompressed script chunk by chunk, then finish() and read requirements()."""

    extensions: list[ExtensionNeed] = field(default_factory=list)
    icu: list[str] = field(default_factory=list)
    tablespaces: list[TablespaceNeed] = field(default_factory=list)
    database: str = FIRST_DATABASE
    lexer: PsqlLexer = field(init=False)

    def __post_init__(self) -> None:
        self.lexer = PsqlLexer(self, watch=watched)

    def feed(self, chunk: bytes) -> None:
        self.lexer.feed(chunk)

    def finish(self) -> None:
        self.lexer.finish()

    def requirements(self) -> Requirements:
        unique = list({(need.database, need.name): need for need in self.extensions}.values())
        return Requirements(extensions=unique, icu=list(dict.fromkeys(self.icu)), tablespaces=self.tablespaces)

    # ---- the lexer's listener -----------------------------------------------------------------------------
    def statement(self, statement: Statement) -> None:
        if statement.keyword(0) != "create":
            return
        noun = statement.keyword(1)
        if noun == "extension":
            need = extension_need(statement, self.database)
            if need is not None:
                self.extensions.append(need)
        elif noun == "database" and database_uses_icu(statement):
            self.icu.append(f"database {created_name(statement)[0]}")
        elif noun == "collation" and collation_uses_icu(statement):
            self.icu.append(f"collation {self.database}.{created_name(statement)[0]}")
        elif noun == "tablespace":
            tablespace = tablespace_need(statement)
            if tablespace is not None and tablespace.location:
                self.tablespaces.append(tablespace)

    def meta_command(self, offset: int, end: int, text: str) -> None:
        name, _, argument = text.partition(" ")
        if name in ("\\connect", "\\c"):
            self.database = parse_connect_database("\\connect " + argument)
