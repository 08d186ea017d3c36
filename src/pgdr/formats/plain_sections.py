"""A plain backup restored database by database, several at a time.

pg_dumpall's script is the globals (roles, tablespaces, role settings) followed by one pg_dump script per database,
and once the globals are in, those scripts do not depend on each other. The backup's manifest records where each
starts in the uncompressed SQL (`sections`). The globals go first through one psql; then up to `jobs` psql
sessions each restore one database, biggest first, and stream that part only.

Where the manifest also records where each part's compressed member starts in the stored file (pgdr 17+, not
encrypted: pgdr.formats.plain_members), a session reads and decompresses its own bytes alone: the backup is
decompressed once in all, the sessions side by side. Those offsets are checked against the file before the first
psql starts (each must start a member that decompresses to a database header); if they do not hold, or the manifest
has none (older pgdr, encrypted backups), each session decompresses the backup from its start and skips to its
part, as before: work that grows with databases x size. Backups without sections (older manifests, the old shell
pipeline's files) are restored in one stream as before.

During a bulk load on PostgreSQL 15+ each database's CREATE DATABASE, the one pg_dump wrote, gets STRATEGY =
FILE_COPY before its `;` (created_by_file_copy; why in pgdr.postgres.bulk_load): found by the psql-exact lexer as the
part's first statement other than pg_dump's SETs, so nothing a database user wrote can move the insertion, and
every other byte reaches psql as it was.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, cast

from pgdr.artifact import Manifest
from pgdr.catalog import BackupRecord
from pgdr.concurrency import Sessions, run_all
from pgdr.context import Context
from pgdr.errors import IntegrityError
from pgdr.formats.codecs import age_identity
from pgdr.formats.psql_feed import GlobalsFilter, feed_psql, load_session_options, unprivileged_client
from pgdr.postgres.bulk_load import creates_by_file_copy
from pgdr.postgres.connect import client_environment
from pgdr.run import CHUNK_SIZE, RunAs
from pgdr.sqllexer import PsqlLexer, QuietListener, Statement, Word
from pgdr.storage import Storage
from pgdr.streams import Codec
from pgdr.streams.decoder import HINT_CORRUPT, decoded
from pgdr.ui import ProgressHandle

GLOBALS_LABEL = "globals"


@dataclass(frozen=True)
class SectionRange:
    """Bytes [start, end) of the uncompressed SQL, restored by one psql session."""

    label: str
    start: int
    end: int
    stored_start: int | None = None  # where its compressed member starts in the stored file; None: unknown
    stored_end: int | None = None  # where the next part's member starts; None: the end of the file

    @property
    def size(self) -> int:
        return self.end - self.start


def section_ranges(manifest: Manifest | None) -> list[SectionRange]:
    """The globals, then each database's part; [] when the manifest has no proven sections (restore in one stream).

    Only sections proven by the psql-exact lexer and pg_dump's \\restrict keys count: older manifests' sections
    came from a line scanner that a table name holding a newline could fool into a boundary inside COPY data.
    """
    if manifest is None or manifest.format != "plain" or len(manifest.sections) < 2:
        return []
    if manifest.sections_proof != "restrict":
        return []
    offsets = [section.offset for section in manifest.sections]
    if offsets != sorted(set(offsets)) or offsets[0] <= 0 or offsets[-1] >= manifest.uncompressed_size:
        return []
    ends = [*offsets[1:], manifest.uncompressed_size]
    stored = _stored_offsets(manifest)
    stored_ends: list[int | None] = [*stored[2:], None]
    return [SectionRange(GLOBALS_LABEL, 0, offsets[0], *stored[:2])] + [
        SectionRange(f"database {section.database}", section.offset, end, stored_start, stored_end)
        for section, end, stored_start, stored_end in zip(manifest.sections, ends, stored[1:], stored_ends,
                                                          strict=True)
    ]


def _stored_offsets(manifest: Manifest) -> list[int | None]:
    """0, then each section's compressed offset, when every section has one and they can be (increasing, inside
    the file); else all None (each part decompressed from the start of the file)."""
    stored = [section.compressed_offset for section in manifest.sections]
    known = [offset for offset in stored if offset is not None]
    if len(known) != len(stored) or known != sorted(set(known)) or known[0] <= 0 or known[-1] >= manifest.size:
        return [None] * (len(stored) + 1)
    return [0, *known]


def uncompressed_range(context: Context, handle: BinaryIO, record: BackupRecord, start: int,
                       end: int | None) -> Iterator[bytes]:
    """Bytes [start, end) of the backup's SQL, decompressed (and decrypted) from the beginning of the file; end None:
    to the end of the stream."""
    end = end if end is not None else sys.maxsize
    codec = Codec(record.key.compression, record.key.encrypted)
    identity = age_identity(context, codec, f"backup {record.key}")
    with decoded(handle, codec, identity, f"backup {record.key}") as chunks:  # closed: no thread, no fd left
        position = 0
        for data in chunks:
            if position + len(data) > start:
                yield data[max(0, start - position) : end - position]
            position += len(data)
            if position >= end:
                return


class _Bounded:
    """At most `length` bytes of `source` from where it stands (None: to its end), `block` bytes at most a read."""

    def __init__(self, source: BinaryIO, length: int | None, block: int) -> None:
        self._source, self._left, self._block = source, length, block

    def read(self, size: int = -1) -> bytes:
        size = self._block if size < 0 else min(size, self._block)
        if self._left is not None:
            size = min(size, self._left)
            if size == 0:
                return b""
        data = self._source.read(size)
        if self._left is not None:
            self._left -= len(data)
        return data


def stored_range(handle: BinaryIO, record: BackupRecord, part: SectionRange, to_the_end: bool,
                 block: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The part's own compressed bytes, read and decompressed alone: exactly the part's SQL (to the end of the
    stream when `to_the_end`); anything else is an IntegrityError."""
    assert part.stored_start is not None
    handle.seek(part.stored_start)
    length = None if part.stored_end is None else part.stored_end - part.stored_start
    label = f"backup {record.key} ({part.label})"
    reader = cast(BinaryIO, _Bounded(handle, length, block))
    with decoded(reader, Codec(record.key.compression, record.key.encrypted), None, label) as chunks:
        produced = 0
        for data in chunks:
            produced += len(data)
            if not to_the_end and produced > part.size:
                break
            if data:
                yield data
    if not to_the_end and produced != part.size:
        raise IntegrityError(f"{label}: its compressed member holds {produced} bytes, the manifest says {part.size}",
                             HINT_CORRUPT)


SECTION_START = b'--\n-- Database "'
CHECK_BLOCK = 8 * 1024


def stored_offsets_hold(storage: Storage, record: BackupRecord, ranges: list[SectionRange]) -> bool:
    """Each database's recorded member starts in the file and decompresses to a database header: checked before
    the first psql starts, so a manifest whose offsets are wrong costs the parallel speed, never a half restore."""
    if any(part.stored_start is None for part in ranges):
        return False
    with storage.open_download(record.key.key) as handle:
        for part in ranges[1:]:
            head = b""
            try:
                for data in stored_range(handle, record, part, to_the_end=True, block=CHECK_BLOCK):
                    head += data
                    if len(head) >= len(SECTION_START):
                        break
            except IntegrityError:
                return False
            if not head.startswith(SECTION_START):
                return False
    return True


def without_stored_offsets(ranges: list[SectionRange]) -> list[SectionRange]:
    return [SectionRange(part.label, part.start, part.end) for part in ranges]


def _readable_alone(context: Context, storage: Storage, record: BackupRecord, ranges: list[SectionRange]
                    ) -> list[SectionRange]:
    """The ranges with their stored offsets when each part can be read alone; else without (said why)."""
    from_the_start = "each session decompresses the backup from its start and skips to its database"
    if record.key.encrypted:
        context.output.info(f"   encrypted backup: {from_the_start}")
        return without_stored_offsets(ranges)
    if ranges[0].stored_start is None:
        context.output.info("   its manifest does not say where each database's compressed part starts (an older "
                            f"pgdr wrote it): {from_the_start}")
        return ranges
    if not stored_offsets_hold(storage, record, ranges):
        context.output.warn(f"the manifest of {record.key} says where each database's compressed part starts, but "
                            f"the file does not match; {from_the_start}")
        return without_stored_offsets(ranges)
    return ranges


def restore_sections(context: Context, psql: str, storage: Storage, record: BackupRecord,
                     ranges: list[SectionRange], jobs: int, bulk_load: bool) -> None:
    """The globals first (roles must exist before the databases' owners and grants), then the databases; during a
    bulk load each database is created as a copy of its template's files (created_by_file_copy)."""
    ranges = _readable_alone(context, storage, record, ranges)
    globals_range, *databases = ranges
    databases.sort(key=lambda part: part.size, reverse=True)
    manifest = record.manifest
    assert manifest is not None
    owner = unprivileged_client(context, psql)
    with client_environment(context.superuser_endpoint(), owner) as environment, context.output.progress(
        "Restoring", manifest.uncompressed_size
    ) as bar:
        session_environment = {**environment, "PGOPTIONS": load_session_options(context)}
        file_copy = creates_by_file_copy(bulk_load, context.server_version()[0])
        restorer = _RangeRestorer(context, psql, storage, record, session_environment, bar, owner, file_copy)
        run_all([restorer.task(globals_range)], jobs=1)
        created = " (each created as a copy of its template's files)" if file_copy else ""
        context.output.info(f"   {len(databases)} databases, {min(jobs, len(databases))} at a time{created}: "
                            f"{', '.join(part.label.removeprefix('database ') for part in databases)}")
        run_all([restorer.task(part) for part in databases], jobs=jobs)


PREAMBLE_LIMIT = 64 * 1024
PREAMBLE_LINE = re.compile(rb"(?:--[^\n\r]*|\\connect [^\n]*|)\Z")


def restricted_from_the_start(pieces: Iterator[bytes], label: str) -> Iterator[bytes]:
    """A database's part as psql gets it, once its start is shown to be pg_dump's: the section header, then only
    comments, blank lines and \\connect, then the part's own \\restrict, before any byte a database user could
    have written. The manifest's proof says so already; this holds it against the bytes actually restored."""
    held = b""
    for piece in pieces:
        if held is not None:
            held += piece
            restrict = held.find(b"\n\\restrict ")
            if restrict < 0 and len(held) < PREAMBLE_LIMIT:
                continue
            _check_preamble(held, restrict, label)
            piece, held = held, None  # type: ignore[assignment]
        yield piece
    if held is not None:
        _check_preamble(held, held.find(b"\n\\restrict "), label)
        yield held


def _check_preamble(data: bytes, restrict: int, label: str) -> None:
    lines = data[:restrict].split(b"\n") if restrict >= 0 else []
    if restrict < 0 or not data.startswith(b"--\n-- Database ") or not all(PREAMBLE_LINE.match(line)
                                                                            for line in lines):
        raise IntegrityError(
            f"backup section {label} does not start with pg_dump's header and \\restrict; refusing to restore it "
            "in parallel",
            "restore in one stream: set backup.jobs = 1 (or PGDR_BACKUP__JOBS=1) and run the restore again",
        )


FILE_COPY_OPTION = b" STRATEGY = FILE_COPY"
CREATE_LIMIT = 64 * 1024  # bytes of a part searched for its CREATE DATABASE (pg_dump's preamble is ~1 KB)


class _DatabaseCreation(QuietListener):
    """Where pg_dump's CREATE DATABASE ends in a database's part: the part's first statement that is not a SET or a
    SELECT (pg_dump's set_config), before any meta-command other than \\restrict; insert_at None when that statement
    is not a CREATE DATABASE ended by `;` without a STRATEGY of its own (postgres and template1 start with \\connect
    and create nothing)."""

    def __init__(self) -> None:
        self.decided = False
        self.insert_at: int | None = None

    def statement(self, statement: Statement) -> None:
        if self.decided or statement.keyword(0) in ("set", "select"):
            return
        self.decided = True
        if (statement.keyword(0), statement.keyword(1)) == ("create", "database") and not statement.truncated \
                and statement.last_words[-1:] == [Word("symbol", ";")] \
                and not any(word.is_keyword("strategy") for word in statement.words):
            self.insert_at = statement.end - 1

    def meta_command(self, offset: int, end: int, text: str) -> None:
        if not text.startswith(("\\restrict ", "\\unrestrict ")):
            self.decided = True


def created_by_file_copy(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """A database's part with FILE_COPY_OPTION inserted before the `;` of its CREATE DATABASE (see _DatabaseCreation);
    unchanged when there is none within CREATE_LIMIT bytes."""
    finder = _DatabaseCreation()
    lexer = PsqlLexer(finder)
    held = bytearray()
    rest = iter(pieces)
    for piece in rest:
        held += piece
        lexer.feed(piece)
        if finder.decided or len(held) >= CREATE_LIMIT:
            break
    else:
        lexer.finish()
    at = finder.insert_at
    if at is not None and at < CREATE_LIMIT and held[at : at + 1] == b";":
        held[at:at] = FILE_COPY_OPTION
    if held:
        yield bytes(held)
    yield from rest


@dataclass
class _RangeRestorer:
    context: Context
    psql: str
    storage: Storage
    record: BackupRecord
    environment: dict[str, str]
    bar: ProgressHandle
    owner: RunAs | None
    file_copy: bool  # each database's CREATE DATABASE copies template0's files (created_by_file_copy)

    def task(self, part: SectionRange) -> Callable[[Sessions], None]:
        return lambda sessions: self.restore(part, sessions)

    def restore(self, part: SectionRange, sessions: Sessions) -> None:
        globals_filter = GlobalsFilter(self.context.settings.postgres.superuser) if part.start == 0 else None
        with self.storage.open_download(self.record.key.key) as handle:
            # the last part is read to the end of the stream, not to the manifest's uncompressed_size: a wrong size
            # in the manifest must not drop the end of the last database silently
            last = self.record.manifest is not None and part.end == self.record.manifest.uncompressed_size
            pieces = (stored_range(handle, self.record, part, last) if part.stored_start is not None else
                      uncompressed_range(self.context, handle, self.record, part.start, None if last else part.end))
            chunks = pieces if globals_filter is not None else restricted_from_the_start(pieces, part.label)
            if globals_filter is None and self.file_copy:
                chunks = created_by_file_copy(chunks)
            feed_psql(self.psql, chunks, f"psql ({part.label})", self.environment, globals_filter, self.owner,
                      sessions, self.bar.advance)
