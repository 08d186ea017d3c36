"""A plain backup restored database by database, several at a time.

pg_dumpall's script is the globals (roles, tablespaces, role settings) followed by one pg_dump script per database,
and once the globals are in, those scripts do not depend on each other. The backup's manifest records where each
starts in the uncompressed SQL (`sections`). The globals go first through one psql; then up to `jobs` psql
sessions each restore one database, biggest first: each reads the backup from its start, decompresses and skips to
its own part (decompressing runs several times faster than the server loads, so the skip is cheap next to the core
a second session gains), and streams that part only. Backups without sections (older manifests, the old shell
pipeline's files) are restored in one stream as before.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pgdr.artifact import Manifest
from pgdr.catalog import BackupRecord
from pgdr.concurrency import Sessions, run_all
from pgdr.context import Context
from pgdr.errors import IntegrityError
from pgdr.formats.codecs import age_identity
from pgdr.formats.psql_feed import GlobalsFilter, feed_psql, load_session_options, unprivileged_client
from pgdr.postgres.connect import client_environment
from pgdr.run import RunAs
from pgdr.storage import Storage
from pgdr.streams import Codec
from pgdr.streams.decoder import decoded
from pgdr.ui import ProgressHandle

GLOBALS_LABEL = "globals"


@dataclass(frozen=True)
class SectionRange:
    """Bytes [start, end) of the uncompressed SQL, restored by one psql session."""

    label: str
    start: int
    end: int

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
    return [SectionRange(GLOBALS_LABEL, 0, offsets[0])] + [
        SectionRange(f"database {section.database}", section.offset, end)
        for section, end in zip(manifest.sections, ends, strict=True)
    ]


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


def restore_sections(context: Context, psql: str, storage: Storage, record: BackupRecord,
                     ranges: list[SectionRange], jobs: int) -> None:
    """The globals first (roles must exist before the databases' owners and grants), then the databases."""
    globals_range, *databases = ranges
    databases.sort(key=lambda part: part.size, reverse=True)
    manifest = record.manifest
    assert manifest is not None
    owner = unprivileged_client(context, psql)
    with client_environment(context.superuser_endpoint(), owner) as environment, context.output.progress(
        "Restoring", manifest.uncompressed_size
    ) as bar:
        session_environment = {**environment, "PGOPTIONS": load_session_options(context)}
        restorer = _RangeRestorer(context, psql, storage, record, session_environment, bar, owner)
        run_all([restorer.task(globals_range)], jobs=1)
        context.output.info(f"   {len(databases)} databases, {min(jobs, len(databases))} at a time: "
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


@dataclass
class _RangeRestorer:
    context: Context
    psql: str
    storage: Storage
    record: BackupRecord
    environment: dict[str, str]
    bar: ProgressHandle
    owner: RunAs | None

    def task(self, part: SectionRange) -> Callable[[Sessions], None]:
        return lambda sessions: self.restore(part, sessions)

    def restore(self, part: SectionRange, sessions: Sessions) -> None:
        globals_filter = GlobalsFilter(self.context.settings.postgres.superuser) if part.start == 0 else None
        with self.storage.open_download(self.record.key.key) as handle:
            # the last part is read to the end of the stream, not to the manifest's uncompressed_size: a wrong size
            # in the manifest must not drop the end of the last database silently
            last = self.record.manifest is not None and part.end == self.record.manifest.uncompressed_size
            pieces = uncompressed_range(self.context, handle, self.record, part.start, None if last else part.end)
            chunks = pieces if globals_filter is not None else restricted_from_the_start(pieces, part.label)
            feed_psql(self.psql, chunks, f"psql ({part.label})", self.environment, globals_filter, self.owner,
                      sessions, self.bar.advance)
