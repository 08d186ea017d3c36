"""Streaming codecs: round trips in small chunks, gunzip compatibility, truncation and corruption detection."""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import sys

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.streams.compression import (
    DECOMPRESSION_ERRORS,
    Identity,
    ZstdCompressor,
    make_compressor,
    make_decompressor,
    usable_cores,
    zstd_default_level,
    zstd_workers,
)

CODECS = ["gzip", "zstd", "none"]
COMPRESSED_CODECS = ["gzip", "zstd"]


def sample_data(size: int = 300_000, seed: int = 7) -> bytes:
    """SQL-ish text with some incompressible bytes: both the literal and the Huffman paths get exercised."""
    generator = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < size:
        lines.append(b"%d\tcustomer %d\tline\\nwith escapes \\\\ %s\n" % (
            generator.randrange(10**9), generator.randrange(1000), generator.randbytes(12).hex().encode()))
        if generator.random() < 0.01:
            lines.append(generator.randbytes(200))
    return b"".join(lines)[:size]


def compress(codec: str, data: bytes, chunk_size: int = 65536, level: int | None = None) -> bytes:
    compressor = make_compressor(codec, level)
    parts = [compressor.compress(data[start : start + chunk_size]) for start in range(0, len(data), chunk_size)]
    return b"".join(parts) + compressor.flush()


def decompress(codec: str, blob: bytes, chunk_size: int = 65536) -> bytes:
    decompressor = make_decompressor(codec)
    parts = [decompressor.decompress(blob[start : start + chunk_size]) for start in range(0, len(blob), chunk_size)]
    return b"".join(parts) + decompressor.finish()


DATA = sample_data()


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("compress_chunk", "decompress_chunk"), [(1, 1), (7, 13), (4096, 1), (65536, 65536),
                                                                  (1 << 20, 3)])
def test_round_trip_in_small_chunks(codec: str, compress_chunk: int, decompress_chunk: int) -> None:
    data = DATA if compress_chunk > 1 and decompress_chunk > 1 else DATA[:20_000]
    blob = compress(codec, data, compress_chunk)
    assert decompress(codec, blob, decompress_chunk) == data
    if codec != "none":
        assert len(blob) < len(data)


@pytest.mark.parametrize("codec", CODECS)
def test_empty_input_round_trips(codec: str) -> None:
    blob = compress(codec, b"")
    assert decompress(codec, blob) == b""
    if codec != "none":
        assert blob  # a valid empty stream still has a header and a trailer


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CODECS), st.binary(max_size=5000), st.integers(1, 600), st.integers(1, 600))
def test_round_trip_any_bytes_any_chunking(codec: str, data: bytes, compress_chunk: int, decompress_chunk: int) -> None:
    assert decompress(codec, compress(codec, data, compress_chunk), decompress_chunk) == data


@pytest.mark.parametrize("level", [None, 0, 1, 2, 3])
def test_gzip_output_is_read_by_the_stdlib_gzip_module(level: int | None) -> None:
    blob = compress("gzip", DATA, 1000, level)
    assert blob[:2] == b"\x1f\x8b"
    assert gzip.decompress(blob) == DATA


def test_gzip_output_is_read_by_gunzip() -> None:
    blob = compress("gzip", DATA, 777)
    result = subprocess.run(["gunzip", "-c"], input=blob, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    tested = subprocess.run(["gunzip", "-t"], input=blob, capture_output=True, check=False)
    assert tested.returncode == 0, tested.stderr


def test_gzip_cli_output_is_read_by_our_decompressor() -> None:
    blob = subprocess.run(["gzip", "-c", "-6"], input=DATA, capture_output=True, check=True).stdout
    assert decompress("gzip", blob, 333) == DATA


@pytest.mark.parametrize("chunk_size", [1, 5, 10, 4096, 1 << 20])
def test_concatenated_gzip_members_are_one_stream(chunk_size: int) -> None:
    first, second = DATA[:50_000], DATA[50_000:90_000]
    cli_member = subprocess.run(["gzip", "-c"], input=b"third member\n", capture_output=True, check=True).stdout
    blob = compress("gzip", first) + compress("gzip", second) + cli_member + compress("gzip", b"")
    assert gzip.decompress(blob) == first + second + b"third member\n"
    assert decompress("gzip", blob, chunk_size) == first + second + b"third member\n"


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI is not installed: that the zstd tool "
                    "reads pgdr's .zst backups is untested (apt-get install zstd)")
def test_zstd_output_is_read_by_the_zstd_cli_and_carries_a_checksum() -> None:
    blob = compress("zstd", DATA, 999)
    assert zstandard.get_frame_parameters(blob).has_checksum
    result = subprocess.run(["zstd", "-d", "-c", "-q"], input=blob, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA


@pytest.mark.parametrize("chunk_size", [1, 6, 4096, 1 << 20])
def test_concatenated_zstd_frames_are_one_stream(chunk_size: int) -> None:
    first, second = DATA[:50_000], DATA[50_000:]
    blob = compress("zstd", first) + compress("zstd", second)
    assert decompress("zstd", blob, chunk_size) == first + second


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
@pytest.mark.parametrize("trailer", [b"garbage", b"\x00" * 16, b"\x1f"])
def test_bytes_after_the_stream_are_not_ignored(codec: str, trailer: bytes) -> None:
    blob = compress(codec, DATA[:5000]) + trailer
    for chunk_size in (1, 4096, len(blob)):
        with pytest.raises(DECOMPRESSION_ERRORS):
            decompress(codec, blob, chunk_size)


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
def test_truncated_streams_raise_on_finish(codec: str) -> None:
    blob = compress(codec, DATA)
    for cut in [0, 1, 2, 9, 10, len(blob) // 3, len(blob) // 2, len(blob) - 9, len(blob) - 4, len(blob) - 1]:
        decompressor = make_decompressor(codec)
        for start in range(0, cut, 4096):
            decompressor.decompress(blob[start : min(start + 4096, cut)])
        with pytest.raises(DECOMPRESSION_ERRORS) as raised:
            decompressor.finish()
        assert isinstance(raised.value, ValueError)
        assert "truncated" in str(raised.value)


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
def test_every_truncation_of_a_small_stream_is_caught(codec: str) -> None:
    blob = compress(codec, DATA[:3000])
    for cut in range(len(blob)):
        with pytest.raises(DECOMPRESSION_ERRORS):
            decompress(codec, blob[:cut], 64)


def flipped(blob: bytes, bit: int) -> bytes:
    damaged = bytearray(blob)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
@pytest.mark.parametrize("seed", [1, 2])
def test_bit_flips_raise_and_never_silently_change_the_data(codec: str, seed: int) -> None:
    data = sample_data(4000, seed)
    blob = compress(codec, data)
    raised = unchanged = 0
    for bit in range(len(blob) * 8):
        try:
            output = decompress(codec, flipped(blob, bit), 512)
        except DECOMPRESSION_ERRORS:
            raised += 1
            continue
        # The only flips allowed through are in fields no decoder checks and that cannot change the data
        # (gzip's MTIME/XFL/OS/FTEXT header bytes, unused padding bits): the output must be intact.
        assert output == data, f"bit {bit} of {len(blob) * 8} changed the data without an error"
        unchanged += 1
    assert raised >= 0.95 * len(blob) * 8
    assert raised + unchanged == len(blob) * 8


def test_gzip_flips_in_the_deflate_data_and_trailer_all_raise() -> None:
    blob = compress("gzip", DATA[:4000])
    trailer_start = len(blob) - 8  # CRC32 and ISIZE
    for bit in range(trailer_start * 8, len(blob) * 8):
        with pytest.raises(DECOMPRESSION_ERRORS):
            decompress("gzip", flipped(blob, bit))
    body_bits = range(10 * 8, (trailer_start - 2) * 8, 3)
    failures = [bit for bit in body_bits if not _raises(lambda bit=bit: decompress("gzip", flipped(blob, bit)))]
    assert failures == []


def _raises(function) -> bool:
    try:
        function()
    except DECOMPRESSION_ERRORS:
        return True
    return False


def test_random_garbage_is_not_a_stream() -> None:
    garbage = os.urandom(4096)
    for codec in COMPRESSED_CODECS:
        with pytest.raises(DECOMPRESSION_ERRORS):
            decompress(codec, garbage)


def test_none_is_the_identity() -> None:
    assert isinstance(make_compressor("none"), Identity)
    assert isinstance(make_decompressor("none"), Identity)
    identity = Identity()
    assert identity.compress(b"abc") == b"abc" and identity.decompress(b"abc") == b"abc"
    assert identity.flush() == b"" and identity.finish() == b""


def test_zstd_levels_are_honoured() -> None:
    fast, strong = compress("zstd", DATA, level=1), compress("zstd", DATA, level=19)
    assert len(strong) < len(fast)
    assert decompress("zstd", strong) == decompress("zstd", fast) == DATA


@pytest.mark.parametrize(("cores", "load", "workers"), [(1, 0.0, 1), (2, 0.0, 1), (2, 1.7, 1), (3, 0.2, 1),
                                                        (4, 0.0, 2), (4, 1.4, 1), (4, 2.6, 1), (64, 0.0, 2)])
def test_zstd_takes_a_second_worker_thread_only_from_a_core_free_beside_the_dump(cores: int, load: float,
                                                                        workers: int) -> None:
    assert zstd_workers(cores, load) == workers


@pytest.mark.parametrize(("cores", "level"), [(1, 1), (2, 1), (3, 1), (4, 3), (64, 3)])
def test_zstd_default_level_is_as_fast_as_gzip_where_no_cores_are_free_for_its_workers(cores: int, level: int) -> None:
    assert zstd_default_level(cores) == level


def test_an_unset_zstd_level_writes_what_the_chosen_level_writes() -> None:
    chosen = zstd_default_level(usable_cores())
    unset, explicit = ZstdCompressor(None, 1), ZstdCompressor(chosen, 1)
    assert unset.compress(DATA) + unset.flush() == explicit.compress(DATA) + explicit.flush()


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_zstd_streams_with_any_worker_count_decode_alike(workers: int) -> None:
    """No workers (the calling thread compresses) or some: one checksummed frame, read by the same decompressor."""
    compressor = ZstdCompressor(None, workers)
    blob = b"".join(compressor.compress(DATA[start : start + 65536]) for start in range(0, len(DATA), 65536))
    blob += compressor.flush()
    assert decompress("zstd", blob) == DATA
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x55
    with pytest.raises(DECOMPRESSION_ERRORS):
        decompress("zstd", bytes(damaged))


def decompress_in_pieces(codec: str, blob: bytes, chunk_size: int, size: int) -> list[bytes]:
    """What the restore's reader does (pgdr.streams.decoder): each input chunk decompressed as pieces(chunk, size)."""
    decompressor = make_decompressor(codec)
    outputs = [piece for start in range(0, len(blob), chunk_size)
               for piece in decompressor.pieces(blob[start : start + chunk_size], size)]
    return [*outputs, decompressor.finish()]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("chunk_size", "size"), [(1, 1000), (997, 4096), (65536, 65536), (1 << 20, 8192)])
def test_decompressing_in_pieces_gives_the_data_back_in_outputs_no_larger_than_asked(codec: str, chunk_size: int,
                                                                                    size: int) -> None:
    """The piece size bounds every output of gzip and none (zstd cuts its input instead), whatever the chunking."""
    outputs = decompress_in_pieces(codec, compress(codec, DATA), chunk_size, size)
    assert b"".join(outputs) == DATA
    if codec != "zstd":
        assert max(map(len, outputs)) <= size


def test_a_small_input_that_inflates_hugely_comes_out_in_bounded_pieces() -> None:
    """8 MiB of zeros compress to a few KiB of gzip: one input chunk must still come out as pieces of at most the
    size asked, never the 8 MiB at once. (zstd's objects take no output limit: pieces cut its input instead, so such
    data comes out whole; see ZstdDecompressor.pieces.)"""
    zeros = bytes(8 << 20)
    blob = compress("gzip", zeros)
    assert len(blob) < 1 << 20
    outputs = decompress_in_pieces("gzip", blob, len(blob), 65536)
    assert b"".join(outputs) == zeros
    assert max(map(len, outputs)) <= 65536


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
def test_concatenated_streams_decompress_in_pieces_as_one(codec: str) -> None:
    """The backup ends a gzip member / zstd frame at each database section: the parts read as one stream."""
    halves = (DATA[: len(DATA) // 3], DATA[len(DATA) // 3 :])
    blob = b"".join(compress(codec, half) for half in halves)
    assert b"".join(decompress_in_pieces(codec, blob, 4093, 8192)) == DATA


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
def test_a_truncated_stream_read_in_pieces_raises_on_finish(codec: str) -> None:
    blob = compress(codec, DATA)
    decompressor = make_decompressor(codec)
    for _ in decompressor.pieces(blob[: len(blob) - 9], 4096):
        pass
    with pytest.raises(DECOMPRESSION_ERRORS):
        decompressor.finish()


def test_an_empty_stream_read_in_pieces_is_refused() -> None:
    """No data at all is no gzip stream: pieces(b"") must not count as having seen one."""
    decompressor = make_decompressor("gzip")
    assert list(decompressor.pieces(b"", 4096)) == []
    with pytest.raises(DECOMPRESSION_ERRORS):
        decompressor.finish()


def test_identity_pieces_are_copies_in_parts_of_the_size_asked() -> None:
    """The caller reuses its buffer for the next read: what pieces yields must not change with it."""
    buffer = bytearray(b"abcdefghij")
    pieces = list(Identity().pieces(buffer, 4))
    buffer[:] = bytes(10)
    assert pieces == [b"abcd", b"efgh", b"ij"]


def test_usable_cores_are_the_ones_this_process_may_run_on() -> None:
    """A container or taskset limits the cores pgdr may use below the machine's count: a process held to one core
    counts one, whatever the machine has."""
    assert usable_cores() == len(os.sched_getaffinity(0))
    probe = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "from pgdr.streams.compression import usable_cores; print(usable_cores())")
    held = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert held.stdout == "1\n"
