"""pgdr.formats.base_backup_tar read as pg_basebackup's stream passes: the scanner must find in any chunking what
Python's tarfile (the reference reader) finds in the whole archive, and the manifest's facts come from
backup_label and backup_manifest as PostgreSQL writes them."""

from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.formats.base_backup_tar import ChunkReader, TarScanner, label_fields, manifest_end_lsn, member_size

LABEL_TEXT = (b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
              b"CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n"
              b"START TIME: 2026-12-03 10:00:00 UTC\nLABEL: pgdr 20261203/x\nSTART TIMELINE: 1\n")
MANIFEST_TEXT = (b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n],\n"WAL-Ranges": [\n'
                 b'{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],\n'
                 b'"Manifest-Checksum": "abc"}\n')


def archive(members: dict[str, bytes], tar_format: int = tarfile.USTAR_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as writer:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            writer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def scanned(data: bytes, cuts: list[int]) -> TarScanner:
    scanner = TarScanner()
    start = 0
    for cut in sorted({min(cut, len(data)) for cut in cuts}):
        scanner.feed(data[start:cut])
        start = cut
    scanner.feed(data[start:])
    return scanner


@settings(max_examples=60)
@given(padding=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 20_000), max_size=12),
       deep=st.booleans())
def test_the_scanner_finds_label_and_manifest_end_in_any_chunking(padding, cuts, deep):
    name = "base/16384/" + "x" * 90 if deep else "base/1/1259"  # a long name goes to ustar's prefix field
    data = archive({"backup_label": LABEL_TEXT, name: padding, "backup_manifest": b"x" * 70_000 + MANIFEST_TEXT})
    scanner = scanned(data, cuts)
    with tarfile.open(fileobj=io.BytesIO(data)) as reference:
        assert scanner.members == len(reference.getmembers())
    assert scanner.ended
    assert bytes(scanner.label) == LABEL_TEXT
    assert bytes(scanner.manifest_tail).endswith(MANIFEST_TEXT) and len(scanner.manifest_tail) <= 64 * 1024
    assert manifest_end_lsn(bytes(scanner.manifest_tail)) == "0/2000100"


@settings(max_examples=30)
@given(cuts=st.lists(st.integers(0, 200_000), max_size=12))
def test_the_manifest_sink_sees_the_whole_backup_manifest_in_any_chunking(cuts):
    """What the next incremental base backup is taken against: every byte of backup_manifest, nothing else."""
    whole = b"".join(b'{ "Path": "base/1/%d", "Size": 8192 },\n' % number for number in range(4000)) + MANIFEST_TEXT
    data = archive({"backup_label": LABEL_TEXT, "base/1/1259": b"\1" * 9000, "backup_manifest": whole})
    pieces: list[bytes] = []
    scanner = TarScanner(pieces.append)
    start = 0
    for cut in sorted({min(cut, len(data)) for cut in cuts}):
        scanner.feed(data[start:cut])
        start = cut
    scanner.feed(data[start:])
    assert b"".join(pieces) == whole


def test_a_cut_short_archive_has_not_ended():
    data = archive({"backup_label": LABEL_TEXT, "PG_VERSION": b"15\n"})
    inside_the_last_member = 3 * 512 + 2  # label header and data, PG_VERSION's header, two of its bytes
    assert not scanned(data[:inside_the_last_member], []).ended
    assert scanned(data, []).ended


def test_label_fields_are_what_postgresql_writes():
    fields = label_fields(LABEL_TEXT)
    assert fields["START WAL LOCATION"].split()[0] == "0/2000028"
    assert fields["START TIMELINE"] == "1"
    assert fields["START TIME"] == "2026-12-03 10:00:00 UTC"


def test_the_last_wal_range_gives_the_stop_lsn():
    two = MANIFEST_TEXT.replace(b'"End-LSN": "0/2000100" }', b'"End-LSN": "0/2000100" },\n'
                                b'{ "Timeline": 2, "Start-LSN": "0/2000100", "End-LSN": "0/3000060" }')
    assert manifest_end_lsn(two) == "0/3000060"
    assert manifest_end_lsn(b'{"Files": []}') is None


def test_sizes_in_octal_and_in_base_256():
    assert member_size(b"00000001750\0") == 1000
    assert member_size(bytes([0x80]) + (9 * 1024**3).to_bytes(11, "big")) == 9 * 1024**3


@settings(max_examples=40)
@given(chunks=st.lists(st.binary(max_size=50), max_size=20), sizes=st.lists(st.integers(1, 70), min_size=1))
def test_the_chunk_reader_returns_the_bytes_in_order_whatever_the_read_sizes(chunks, sizes):
    reader, whole, read = ChunkReader(iter(chunks)), b"".join(chunks), b""
    for size in sizes * (len(whole) + 1):
        part = reader.read(size)
        assert len(part) <= size
        if not part:
            break
        read += part
    assert read == whole and reader.read(10) == b""
