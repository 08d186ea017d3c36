"""A plain backup's compressed stream ends a member at each database, so each part decompresses alone: the file
is still one stream for gunzip and zstd, each part read alone is byte for byte what decompressing from the start
gives, and offsets that do not hold are found before a restore uses them."""

from __future__ import annotations

import gzip
import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from pgdr.artifact import Manifest, Section, make_key
from pgdr.catalog import BackupRecord
from pgdr.dumpscan import DumpScanner
from pgdr.errors import IntegrityError
from pgdr.formats.plain_members import MemberCuts
from pgdr.formats.plain_sections import (
    section_ranges,
    stored_offsets_hold,
    stored_range,
    uncompressed_range,
    without_stored_offsets,
)
from pgdr.storage.local import LocalStorage
from pgdr.streams import Codec
from pgdr.streams.encoder import Encoder
from unit.test_dumpscan import DEMO, DUMP

WHEN = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
# rows between the parts' headers, so that parts span many chunks and members
ROWS = "".join(f"{row}\trow number {row}\n" for row in range(8, 60_000))
BIG_DEMO = DEMO.replace("\n\\.\n", "\n" + ROWS + "\\.\n", 1)
BIG_DUMP = DUMP.replace(DEMO.encode(), BIG_DEMO.encode())


def written(dump: bytes, compression: str, chunk_size: int) -> tuple[bytes, list[Section]]:
    """The dump as `stream_to_targets` stores it: scanned, then handed on one chunk late with its cuts."""
    stored = io.BytesIO()
    scanner = DumpScanner()
    cuts = MemberCuts(scanner.proof.sections)
    encoder = Encoder(stored.write, Codec(compression))
    consume = cuts.consumer(encoder)
    for start in range(0, len(dump), chunk_size):
        chunk = dump[start : start + chunk_size]
        scanner.feed(chunk)
        cuts.pass_on(chunk, consume)
    cuts.finish(consume)
    encoder.close()
    scanner.finish()
    return stored.getvalue(), cuts.sections(scanner.sections)


def manifest_of(dump: bytes, stored: bytes, sections: list[Section], compression: str) -> Manifest:
    return Manifest(key="20261204/postgres-all-20261204-090000.sql.gz", format="plain", compression=compression,
                    size=len(stored), sha256="ab" * 32, uncompressed_size=len(dump), server_version="18",
                    pg_dumpall_version="18", pgdr_version="0", started_at=WHEN, finished_at=WHEN,
                    sections_proof="restrict", sections=sections)


def record_of(compression: str, stored: bytes, manifest: Manifest | None = None) -> BackupRecord:
    return BackupRecord(key=make_key(WHEN, compression), size=len(stored), modified=WHEN, target="local",
                        manifest=manifest)


def decompressed_by_the_tools(stored: bytes, compression: str) -> bytes:
    """What gunzip and zstd -d make of the file: every member, one after the other."""
    if compression == "gzip":
        return gzip.decompress(stored)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(stored)
    return stored


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("chunk_size", [1024, 4093, 65536, 1 << 20])
def test_each_part_read_alone_is_what_decompressing_from_the_start_gives(compression: str, chunk_size: int) -> None:
    stored, sections = written(BIG_DUMP, compression, chunk_size)
    assert [section.database for section in sections] == ["template1", "demo", "weird-db name"]
    assert all(section.compressed_offset is not None for section in sections)
    assert decompressed_by_the_tools(stored, compression) == BIG_DUMP
    record = record_of(compression, stored)
    ranges = section_ranges(manifest_of(BIG_DUMP, stored, sections, compression))
    assert [part.stored_start for part in ranges] == [0, *(section.compressed_offset for section in sections)]
    for part, last in zip(ranges, [False] * (len(ranges) - 1) + [True], strict=True):
        alone = b"".join(stored_range(io.BytesIO(stored), record, part, last))  # type: ignore[arg-type]
        from_the_start = uncompressed_range(None, io.BytesIO(stored), record, part.start,  # type: ignore[arg-type]
                                            None if last else part.end)
        assert alone == b"".join(from_the_start) == BIG_DUMP[part.start : part.end]


@pytest.mark.parametrize(("compression", "tool"), [("gzip", ["gzip", "-dc"]), ("zstd", ["zstd", "-dc"])])
def test_gunzip_and_zstd_read_the_members_as_one_stream(compression: str, tool: list[str]) -> None:
    """The old shell pipeline's tools (and anyone's) restore such a backup as before: `gunzip -c | psql`."""
    stored, _ = written(BIG_DUMP, compression, 65536)
    assert subprocess.run(tool, input=stored, capture_output=True, check=True).stdout == BIG_DUMP


def test_a_member_ends_exactly_where_each_database_starts() -> None:
    """Read from the start of the file, the members' boundaries are the sections' starts (gzip stops at each)."""
    stored, sections = written(BIG_DUMP, "gzip", 4093)
    offsets = [0, *(section.compressed_offset or 0 for section in sections), len(stored)]
    members = [gzip.decompress(stored[start:end]) for start, end in zip(offsets, offsets[1:], strict=False)]
    starts = [0, *(section.offset for section in sections)]
    assert [len(member) for member in members] == [end - start for start, end in
                                                    zip(starts, [*starts[1:], len(BIG_DUMP)], strict=True)]


def test_chunks_are_handed_on_whole_and_in_order_with_each_start_noted_before_its_chunk() -> None:
    """One item per chunk, never a piece of one (a chunk's buffer is reused once it is consumed), and the worker
    knows every start inside a chunk when it gets that chunk."""
    items: list[bytes] = []
    scanner = DumpScanner()
    cuts = MemberCuts(scanner.proof.sections)
    chunks = [BIG_DUMP[start : start + 5000] for start in range(0, len(BIG_DUMP), 5000)]
    noted_when_handed_on: list[list[int]] = []

    def put(chunk: bytes) -> None:
        items.append(chunk)
        noted_when_handed_on.append(list(cuts.starts))

    for chunk in chunks:
        scanner.feed(chunk)
        cuts.pass_on(chunk, put)
    cuts.finish(put)
    assert items == chunks
    starts = [section.offset for section in scanner.sections]
    position = 0
    for chunk, noted in zip(items, noted_when_handed_on, strict=True):
        assert [start for start in starts if start < position + len(chunk)] == \
            [start for start in noted if start < position + len(chunk)]
        position += len(chunk)


def test_a_section_proven_after_its_chunk_was_handed_on_gets_no_offset_and_the_restore_reads_from_the_start() -> None:
    """With chunks smaller than a part's preamble the proof comes too late to cut: no offset, no wrong one."""
    stored, sections = written(DUMP, "gzip", 16)
    assert None in [section.compressed_offset for section in sections]
    assert gzip.decompress(stored) == DUMP
    ranges = section_ranges(manifest_of(DUMP, stored, sections, "gzip"))
    assert ranges and all(part.stored_start is None and part.stored_end is None for part in ranges)


@pytest.mark.parametrize("compressed_offsets", [
    [None, 10, 20],  # one missing
    [30, 20, 40],  # out of order
    [0, 20, 40],  # the first database at the start of the file, where the globals are
    [10, 20, 10**9],  # past the end of the file
])
def test_offsets_that_cannot_be_right_are_not_used(compressed_offsets: list[int | None]) -> None:
    sections = [Section(database=name, offset=offset, compressed_offset=stored) for name, offset, stored in
                zip(["template1", "demo", "weird-db name"], [100, 200, 300], compressed_offsets, strict=True)]
    ranges = section_ranges(manifest_of(b"x" * 400, b"y" * 100, sections, "gzip"))
    assert len(ranges) == 4 and all(part.stored_start is None for part in ranges)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
@pytest.mark.parametrize("shift", [-1, 1])
def test_a_part_whose_member_holds_another_size_is_refused(compression: str, shift: int) -> None:
    """template1's part ends where demo's starts: a demo offset one byte off makes template1's size wrong."""
    stored, sections = written(BIG_DUMP, compression, 65536)
    shifted = [sections[0], sections[1].model_copy(update={"offset": sections[1].offset + shift}), sections[2]]
    record = record_of(compression, stored)
    part = section_ranges(manifest_of(BIG_DUMP, stored, shifted, compression))[1]
    received = []
    with pytest.raises(IntegrityError, match="compressed member holds"):
        for data in stored_range(io.BytesIO(stored), record, part, to_the_end=False):  # type: ignore[arg-type]
            received.append(data)
    assert len(b"".join(received)) <= part.size  # never a byte past the part's end


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_part_cut_short_does_not_decompress(compression: str) -> None:
    stored, sections = written(BIG_DUMP, compression, 65536)
    record = record_of(compression, stored)
    last = section_ranges(manifest_of(BIG_DUMP, stored, sections, compression))[-1]
    truncated = stored[: (last.stored_start or 0) + 40]
    with pytest.raises(IntegrityError, match="does not decompress"):
        b"".join(stored_range(io.BytesIO(truncated), record, last, to_the_end=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_offsets_are_checked_against_the_file_before_a_restore_uses_them(compression: str, tmp_path: Path) -> None:
    stored, sections = written(BIG_DUMP, compression, 65536)
    storage = LocalStorage(tmp_path)
    manifest = manifest_of(BIG_DUMP, stored, sections, compression)
    record = record_of(compression, stored, manifest)
    (tmp_path / record.key.key).parent.mkdir(parents=True)
    (tmp_path / record.key.key).write_bytes(stored)
    ranges = section_ranges(manifest)
    assert stored_offsets_hold(storage, record, ranges)
    # a member boundary that is not a database's start (template1's member starts the demo's offset: wrong part)
    swapped = [sections[0].model_copy(update={"compressed_offset": (sections[0].compressed_offset or 0) + 1}),
               *sections[1:]]
    assert not stored_offsets_hold(storage, record, section_ranges(manifest_of(BIG_DUMP, stored, swapped,
                                                                                  compression)))
    assert not stored_offsets_hold(storage, record, without_stored_offsets(ranges))
