"""Streaming codecs: round trips in small chunks, gunzip compatibility, truncation and corruption detection."""

from __future__ import annotations

import gzip
import hashlib
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
    """The piece size bounds every output, whatever the codec and the chunking."""
    outputs = decompress_in_pieces(codec, compress(codec, DATA), chunk_size, size)
    assert b"".join(outputs) == DATA
    assert max(map(len, outputs)) <= size


@pytest.mark.parametrize("codec", COMPRESSED_CODECS)
@pytest.mark.parametrize("level", [None, 1, 19])
def test_a_small_input_that_inflates_hugely_comes_out_in_bounded_pieces(codec: str, level: int | None) -> None:
    """8 MiB of zeros compress to a few KiB: one input chunk must still come out as pieces of at most the size
    asked, never the 8 MiB at once."""
    zeros = bytes(8 << 20)
    blob = compress(codec, zeros, 1 << 20, level if codec == "zstd" else None)
    assert len(blob) < 1 << 20
    outputs = decompress_in_pieces(codec, blob, len(blob), 65536)
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


# A backup file is written by whoever can reach the bucket or the disk. The frames below are crafted by hand
# (RFC 8878), as an attacker would: 4 bytes per RLE block, each decompressing to 128 KiB.
RLE_BLOCK_SIZE = 128 * 1024
CRAFTED_BLOCKS = 2048  # 256 MiB from 8 KiB


def rle_frame(blocks: int, byte: int = 0x41, block_size: int = RLE_BLOCK_SIZE) -> bytes:
    """A zstd frame of `blocks` RLE blocks of `block_size` copies of `byte`: a 128 KiB window, no checksum."""
    header = ZSTD_FRAME_MAGIC + bytes([0x00, 0x38])  # no content size, window descriptor 2**17
    body = b"".join(rle_block(block_size, byte, last=number == blocks - 1) for number in range(blocks))
    return header + body


def rle_block(size: int, byte: int, last: bool) -> bytes:
    return ((size << 3) | (1 << 1) | int(last)).to_bytes(3, "little") + bytes([byte])


def skippable_frame(content: bytes, kind: int = 0) -> bytes:
    return (0x184D2A50 + kind).to_bytes(4, "little") + len(content).to_bytes(4, "little") + content


ZSTD_FRAME_MAGIC = (0xFD2FB528).to_bytes(4, "little")
CRAFTED = rle_frame(CRAFTED_BLOCKS)


def sha256_of_pieces(blob: bytes, chunk_size: int, size: int) -> tuple[str, int, int]:
    """sha256, total and largest output of blob decompressed in pieces, without keeping the output."""
    decompressor = make_decompressor("zstd")
    digest, total, largest = hashlib.sha256(), 0, 0
    for start in range(0, len(blob), chunk_size):
        for piece in decompressor.pieces(blob[start : start + chunk_size], size):
            digest.update(piece)
            total, largest = total + len(piece), max(largest, len(piece))
    assert decompressor.finish() == b""
    return digest.hexdigest(), total, largest


def sha256_of_repeated(byte: int, count: int) -> str:
    digest, block = hashlib.sha256(), bytes([byte]) * RLE_BLOCK_SIZE
    for _ in range(count // RLE_BLOCK_SIZE):
        digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize(("chunk_size", "size"), [(16 * 1024, 65536), (len(CRAFTED), 4096), (3, 65536)])
def test_a_crafted_zstd_bomb_comes_out_in_pieces_of_the_size_asked(chunk_size: int, size: int) -> None:
    """8 KiB of RLE blocks decompress to 256 MiB: every output at most `size`, whatever the input chunks."""
    assert len(CRAFTED) < 9000
    digest, total, largest = sha256_of_pieces(CRAFTED, chunk_size, size)
    assert total == CRAFTED_BLOCKS * RLE_BLOCK_SIZE
    assert largest <= size
    assert digest == sha256_of_repeated(0x41, total)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd CLI is not installed (apt-get install zstd)")
def test_the_zstd_cli_reads_the_crafted_frames_as_we_do() -> None:
    """The crafted frames are real zstd, not a quirk of our reader: the CLI decodes them to the same bytes."""
    blob = rle_frame(300, 0x7A) + skippable_frame(b"ignored") + compress("zstd", DATA) + rle_frame(3, 0x0A, 5)
    digest, total, largest = sha256_of_pieces(blob, 4096, 65536)
    cli = subprocess.run(["zstd", "-d", "-c", "-q"], input=blob, capture_output=True, check=True).stdout
    assert (hashlib.sha256(cli).hexdigest(), len(cli)) == (digest, total)
    assert total == 300 * RLE_BLOCK_SIZE + len(DATA) + 15
    assert largest <= 65536


MEMORY_PROBE = """
import io, resource, sys
from pgdr.streams import Codec
from pgdr.streams.decoder import decoded
sys.path.insert(0, {tests!r})
from test_compression import CRAFTED
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
total = largest = 0
with decoded(io.BytesIO(CRAFTED), Codec("zstd"), None, "crafted") as chunks:
    for chunk in chunks:
        total, largest = total + len(chunk), max(largest, len(chunk))
print(total, largest, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_crafted_zstd_bomb_restores_in_flat_memory() -> None:
    """The restore's own reader (pgdr.streams.decoder) over the 256 MiB bomb: the process's peak memory grows by
    a few MiB at most, not by the output (the old reader grew by 512 MiB: one 16 KiB input, one output)."""
    probe = MEMORY_PROBE.format(tests=os.path.dirname(__file__))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    total, largest, grown_kib = map(int, result.stdout.split())
    assert total == CRAFTED_BLOCKS * RLE_BLOCK_SIZE
    assert largest <= 64 * 1024
    assert grown_kib < 16 * 1024, f"peak memory grew by {grown_kib} KiB decompressing the crafted frame"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["compressed", "rle", "skippable", "empty"]), st.binary(max_size=3000),
                          st.integers(1, 40)), min_size=1, max_size=5),
       st.integers(1, 5000), st.integers(16, 200_000))
def test_zstd_frames_of_any_kind_come_out_whole_and_bounded_at_any_cut(frames: list[tuple[str, bytes, int]],
                                                                      cut: int, size: int) -> None:
    """Concatenated frames (compressed, crafted RLE, skippable, empty), fed in inputs of any size: every part at
    most `size` bytes, nothing lost, the end of the stream still seen."""
    stored, expected = b"", b""
    for kind, data, count in frames:
        if kind == "compressed":
            stored, expected = stored + compress("zstd", data * count, 7919), expected + data * count
        elif kind == "rle":
            stored, expected = stored + rle_frame(count, count, 101 * count), expected + bytes([count]) * 101 * count**2
        elif kind == "skippable":
            stored += skippable_frame(data, count % 16)
        else:
            stored += compress("zstd", b"")
    decompressor = make_decompressor("zstd")
    parts = [part for start in range(0, len(stored), cut)
             for part in decompressor.pieces(memoryview(stored)[start : start + cut], size)]
    assert b"".join(parts) + decompressor.finish() == expected
    assert all(0 < len(part) <= size for part in parts)


def test_every_truncation_of_crafted_frames_is_caught_but_at_the_end_of_a_frame() -> None:
    """A cut between two frames leaves a valid stream (as between two gzip members); any other cut raises."""
    frames = [rle_frame(4, 0x30), skippable_frame(b"xy"), compress("zstd", DATA[:2000])]
    blob = b"".join(frames)
    ends = {len(b"".join(frames[: count + 1])): count + 1 for count in range(len(frames))}
    for cut in range(len(blob)):
        if cut in ends:
            expected = bytes([0x30]) * 4 * RLE_BLOCK_SIZE + (DATA[:2000] if ends[cut] == 3 else b"")
            parts = decompress_in_pieces("zstd", blob[:cut], 5, 4096)
            assert b"".join(parts) == expected
            assert max(map(len, parts)) <= 4096
            continue
        with pytest.raises(DECOMPRESSION_ERRORS):
            decompress_in_pieces("zstd", blob[:cut], 5, 4096)
