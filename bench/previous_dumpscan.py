"""The pre-issue-11 line scanner: src/pgdr/dumpscan.py at commit ab5e911, with the GlobalsFilter of that commit's
src/pgdr/actions/restore.py appended (code unchanged; only this docstring and one import added). Kept ONLY as the
baseline that bench/components.py measures the psql-exact lexer (src/pgdr/sqllexer.py) against.

It is NOT safe: it guesses statements and COPY blocks line by line, so a table name holding a newline makes it read
rows as SQL (forged section boundaries, see issue 11), text in a comment or string can pass for a role password
or a COPY statement, and a single long row or string makes it quadratic. Never import it from pgdr.

Its own docstring follows.

Reads a pg_dumpall SQL stream as it passes, without holding it in memory.

It counts the rows of every COPY block per database and table (the counts `verify` checks after a restore are
exactly what the dump holds, consistent with the dump's snapshot), notices whether the dump reached its end
marker, and whether it carries role passwords (a backup must not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pgdr.artifact import DatabaseContents, Section, TableCount
from pgdr.postgres.sql import identifier

END_MARKER = b"\n-- PostgreSQL database cluster dump complete\n"  # a line of its own, not text inside a row
# pg_dumpall writes `ALTER ROLE <name> WITH <options> PASSWORD '...'`; the name is matched as an identifier so a
# role called "x PASSWORD y", or `ALTER ROLE r SET ... TO ' PASSWORD '`, is not taken for a password.
PASSWORD_CLAUSE = re.compile(rb"^(?:CREATE|ALTER) ROLE (?:\"(?:[^\"]|\"\")*\"|[^\s\"]+) WITH\b.* PASSWORD '")
COPY_END = b"\\.\n"
# pg_dumpall starts each database's part (one pg_dump's output, runnable on its own once the roles exist) with
# `--\n-- Database "<name>" dump\n--\n\n`; the restore runs those parts concurrently.
SECTION_HEADER = re.compile(rb'^-- Database "(.*)" dump$')


def parse_identifier_list(text: str) -> list[str]:
    """'public."ta ble (x"' -> ['public', 'ta ble (x']: a dotted name of quoted or plain identifiers."""
    names: list[str] = []
    position = 0
    while position < len(text):
        if text[position] == '"':
            end = position + 1
            name = ""
            while end < len(text):
                if text[end] == '"':
                    if text[end + 1 : end + 2] == '"':
                        name += '"'
                        end += 2
                        continue
                    break
                name += text[end]
                end += 1
            names.append(name)
            position = end + 1
        else:
            match = re.match(r"[^.\s(]+", text[position:])
            if not match:
                break
            names.append(match.group(0))
            position += match.end()
        if text[position : position + 1] != ".":
            break
        position += 1
    return names


def parse_copy_table(line: str) -> tuple[str, str]:
    """'COPY public.t (a, b) FROM stdin;' -> ('public', 't')."""
    names = parse_identifier_list(line[len("COPY ") :])
    if len(names) == 1:
        return "public", names[0]
    return names[-2], names[-1]


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


class EndMarker:
    """Only whether the stream ends with pg_dumpall's end-of-dump line: the cheap check a restore's pre-flight pass
    needs (checksums and the compressors' own CRCs cover the rest), at a fraction of DumpScanner's cost."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-256:])[-256:]

    @property
    def complete(self) -> bool:
        return END_MARKER in self._tail


@dataclass
class DumpScanner:
    """Feed it the uncompressed dump chunk by chunk; read `databases` and `complete` at the end."""

    tables: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    has_password: bool = False
    sections: list[Section] = field(default_factory=list)
    _database: str = ""
    _table: tuple[str, str] | None = None
    _carry: bytes = b""
    _tail: bytes = b""
    _buffer_offset: int = 0  # offset in the whole stream of the buffer being scanned
    _previous_line: bytes = b""
    _previous_line_offset: int = 0

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk[-256:])[-256:]
        buffer = self._carry + chunk if self._carry else chunk
        self._buffer_offset -= len(self._carry)
        try:
            self._scan(buffer)
        finally:
            self._buffer_offset += len(buffer)

    def _scan(self, buffer: bytes) -> None:
        position = 0
        while position < len(buffer):
            if self._table is not None:
                position = self._scan_copy(buffer, position)
                if position < 0:
                    return
            else:
                newline = buffer.find(b"\n", position)
                if newline < 0:
                    self._carry = buffer[position:]
                    return
                self._scan_line(buffer[position:newline], self._buffer_offset + position)
                position = newline + 1
        self._carry = b""

    def _scan_copy(self, buffer: bytes, position: int) -> int:
        """Count COPY rows from position; return where normal lines resume, or -1 when the buffer ran out."""
        assert self._table is not None
        if buffer.startswith(COPY_END, position):
            self._table = None
            return position + len(COPY_END)
        end = buffer.find(b"\n" + COPY_END, position)
        if end >= 0:
            self._count(buffer.count(b"\n", position, end + 1))
            self._table = None
            return end + 1 + len(COPY_END)
        last_newline = buffer.rfind(b"\n", position)
        if last_newline < 0:
            self._carry = buffer[position:]
            return -1
        self._count(buffer.count(b"\n", position, last_newline + 1))
        self._carry = buffer[last_newline + 1 :]
        return -1

    def _count(self, rows: int) -> None:
        assert self._table is not None
        counts = self.tables.setdefault(self._database, {})
        counts[self._table] = counts.get(self._table, 0) + rows

    def _scan_line(self, line_bytes: bytes, offset: int) -> None:
        previous, previous_offset = self._previous_line, self._previous_line_offset
        self._previous_line, self._previous_line_offset = line_bytes, offset
        if line_bytes.startswith(b"-- Database ") and previous == b"--":
            header = SECTION_HEADER.match(line_bytes)
            if header:
                self.sections.append(Section(database=header.group(1).decode("utf-8", "replace"),
                                             offset=previous_offset))
        elif line_bytes.startswith(b"COPY ") and line_bytes.endswith(b"FROM stdin;"):
            self._table = parse_copy_table(line_bytes.decode("utf-8", "replace"))
            self.tables.setdefault(self._database, {}).setdefault(self._table, 0)
        elif line_bytes.startswith(b"\\connect "):
            self._database = parse_connect_database(line_bytes.decode("utf-8", "replace"))
            self.tables.setdefault(self._database, {})
        elif PASSWORD_CLAUSE.match(line_bytes):
            self.has_password = True

    @property
    def complete(self) -> bool:
        return self._table is None and END_MARKER in self._tail

    def databases(self) -> list[DatabaseContents]:
        return [
            DatabaseContents(
                name=name,
                tables=[TableCount(schema=schema, table=table, rows=rows)
                        for (schema, table), rows in sorted(counts.items())],
            )
            for name, counts in sorted(self.tables.items())
            if name
        ]


# --- from src/pgdr/actions/restore.py at ab5e911 (same caveat: line-based, NOT safe) ---
class GlobalsFilter:
    """Drops the dump's `CREATE ROLE <bootstrap superuser>;`: it always exists in a fresh cluster, so the one
    expected difference is handled instead of failing the restore. Only the globals section (before the first
    \\connect) is looked at; the rest passes through untouched.
    """

    def __init__(self, superuser: str, existing_roles: set[str] | frozenset[str] = frozenset()) -> None:
        self.skip = {statement for role in {superuser, *existing_roles}
                     for statement in (f"CREATE ROLE {role};".encode(), f"CREATE ROLE {identifier(role)};".encode())}
        self.in_globals = True
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.in_globals:
            return chunk
        data = self._carry + chunk
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            self._carry = data
            return b""
        self._carry = data[last_newline + 1 :]
        lines = data[: last_newline + 1].split(b"\n")
        output = []
        for index, line in enumerate(lines[:-1]):
            if line.startswith(b"\\connect "):
                self.in_globals = False
                output.append(b"\n".join(lines[index:-1]) + b"\n")
                break
            output.append(b"-- pgdr: skipped, exists already: " + line + b"\n" if line in self.skip else line + b"\n")
        if not self.in_globals:
            output.append(self._carry)
            self._carry = b""
        return b"".join(output)

    def finish(self) -> bytes:
        carry, self._carry = self._carry, b""
        return carry
