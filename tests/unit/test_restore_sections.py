"""Where a plain backup's database parts start, and reading one part back out of the compressed file."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import pytest

from pgdr.artifact import Manifest, Section, make_key
from pgdr.catalog import BackupRecord
from pgdr.errors import IntegrityError
from pgdr.formats.plain_sections import (
    GLOBALS_LABEL,
    SectionRange,
    restricted_from_the_start,
    section_ranges,
    uncompressed_range,
)
from pgdr.streams.compression import make_compressor

WHEN = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SQL = b"".join(b"line %06d of the dump\n" % number for number in range(200_000))  # 4.6 MB, several chunks


def manifest(sections: list[tuple[str, int]], size: int = len(SQL), format_name: str = "plain",
             proof: str = "restrict") -> Manifest:
    return Manifest(key="20261126/postgres-all-20261126-100000.sql.gz", format=format_name, compression="gzip",
                    size=1, sha256="ab" * 32, uncompressed_size=size, server_version="15", pg_dumpall_version="15",
                    pgdr_version="0", started_at=WHEN, finished_at=WHEN, sections_proof=proof,
                    sections=[Section(database=name, offset=offset) for name, offset in sections])


def test_ranges_are_the_globals_then_each_database_up_to_the_next() -> None:
    ranges = section_ranges(manifest([("template1", 100), ("crm", 250), ("shop", 900)], size=1000))
    assert ranges == [
        SectionRange(GLOBALS_LABEL, 0, 100),
        SectionRange("database template1", 100, 250),
        SectionRange("database crm", 250, 900),
        SectionRange("database shop", 900, 1000),
    ]
    assert sum(part.size for part in ranges) == 1000


@pytest.mark.parametrize("sections", [
    [],  # a manifest from before sections were recorded
    [("only", 10)],  # one database: nothing to run side by side
    [("a", 0), ("b", 50)],  # no globals before the first database
    [("a", 50), ("b", 40)],  # out of order
    [("a", 50), ("b", 50)],  # twice the same offset
    [("a", 50), ("b", 1000)],  # at or past the end of the SQL
])
def test_unusable_sections_mean_one_stream(sections: list[tuple[str, int]]) -> None:
    assert section_ranges(manifest(sections, size=1000)) == []


def test_sections_of_a_manifest_without_proof_are_never_used() -> None:
    """Older manifests' sections came from a line scanner a table name holding a newline could fool."""
    assert section_ranges(manifest([("template1", 100), ("crm", 250)], size=1000, proof="")) == []


PREAMBLE = b'--\n-- Database "crm" dump\n--\n\n--\n-- PostgreSQL database dump\n--\n\n'


@pytest.mark.parametrize("cut", [1, 5, 17, 4096])
def test_a_part_starting_with_its_header_and_restrict_passes_unchanged(cut: int) -> None:
    part = PREAMBLE + b"\\restrict Key\nSET x = 1;\n" + b"y" * 10_000
    pieces = [part[start : start + cut] for start in range(0, len(part), cut)]
    assert b"".join(restricted_from_the_start(iter(pieces), "database crm")) == part


@pytest.mark.parametrize("part", [
    PREAMBLE + b"SET x = 1;\n\\restrict Key\n",  # SQL before the part's \restrict
    b"1\tdata row\n" + PREAMBLE + b"\\restrict Key\n",  # not at a header: inside COPY data
    PREAMBLE + b"no restrict at all\n",
])
def test_a_part_that_does_not_start_restricted_is_refused_before_psql_gets_a_byte(part: bytes) -> None:
    received = []
    with pytest.raises(IntegrityError, match="restrict"):
        for piece in restricted_from_the_start(iter([part[:7], part[7:]]), "database crm"):
            received.append(piece)
    assert received == []


def test_no_manifest_or_a_split_backup_has_no_ranges() -> None:
    assert section_ranges(None) == []
    assert section_ranges(manifest([("a", 10), ("b", 20)], size=100, format_name="split")) == []


def compressed(compression: str) -> bytes:
    compressor = make_compressor(compression)
    chunks = [compressor.compress(SQL[start : start + 65536]) for start in range(0, len(SQL), 65536)]
    return b"".join(chunks) + compressor.flush()


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.parametrize(("start", "end"), [
    (0, 17), (0, len(SQL)), (5, 3_000_001), (1_048_575, 1_048_577), (len(SQL) - 1, len(SQL)), (2_000_000, 4_000_000),
])
def test_a_range_reads_back_exactly_those_bytes(compression: str, start: int, end: int) -> None:
    key = make_key(WHEN, compression)
    record = BackupRecord(key=key, size=0, modified=WHEN, target="local")
    pieces = list(uncompressed_range(None, io.BytesIO(compressed(compression)), record, start, end))  # type: ignore[arg-type]
    assert b"".join(pieces) == SQL[start:end]
    assert all(pieces)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_range_without_an_end_reads_to_the_end_of_the_stream(compression: str) -> None:
    """The last database is read to the end of the file, whatever uncompressed_size the manifest says."""
    key = make_key(WHEN, compression)
    record = BackupRecord(key=key, size=0, modified=WHEN, target="local")
    start = len(SQL) - 3_000_000
    pieces = uncompressed_range(None, io.BytesIO(compressed(compression)), record, start, None)  # type: ignore[arg-type]
    assert b"".join(pieces) == SQL[start:]


def test_an_encrypted_range_read_partly_leaves_no_thread_and_no_descriptor() -> None:
    """Each section of an encrypted backup is decrypted by a worker thread through a pipe; a section that stops
    before the end of the file must end that thread and close the pipe (300 sections used to exhaust 256 fds)."""
    pyrage = pytest.importorskip("pyrage", reason="age encryption needs pyrage (a pgdr dependency)")
    import threading
    from types import SimpleNamespace

    identity = pyrage.x25519.Identity.generate()
    plain = os.urandom(4_000_000).hex().encode()  # 8 MB that outlast the pipe: the thread is still writing
    encrypted = pyrage.encrypt(plain, [identity.to_public()])
    key = make_key(WHEN, "none", encrypted=True)
    record = BackupRecord(key=key, size=len(encrypted), modified=WHEN, target="local")
    secrets = SimpleNamespace(lookup=lambda name: str(identity), get=lambda name: str(identity))
    context = SimpleNamespace(settings=SimpleNamespace(backup=SimpleNamespace(age_identity="PGDR_AGE_IDENTITY")),
                              secrets=secrets)
    threads, descriptors = threading.active_count(), len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        pieces = uncompressed_range(context, io.BytesIO(encrypted), record, 0, 100_000)  # type: ignore[arg-type]
        assert b"".join(pieces) == plain[:100_000]
    assert len(os.listdir("/proc/self/fd")) == descriptors
    assert threading.active_count() == threads
