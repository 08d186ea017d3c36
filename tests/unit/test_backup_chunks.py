"""The backup's byte loop: pg_dumpall's small reads gathered into full chunks read straight into reused buffers,
each given back only once the worker has used it, every byte encoded and fed in order, memory bounded.

No clock decides an outcome: the worker is held by a gate the test opens.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgdr.errors import IntegrityError, StorageError
from pgdr.streams import Codec
from pgdr.streams.buffers import PIECE_SIZE, BufferPool, pieces, read_and_consume
from pgdr.streams.compression import make_decompressor
from pgdr.streams.decoder import chunks_of, decoded
from pgdr.streams.encoder import Encoder
from pgdr.streams.handoff import DEFAULT_CAPACITY
from sync_helpers import parked_in, poll_until

pytestmark = pytest.mark.timeout(60)


class PipeOfPieces:
    """Reads like a pipe: each read returns at most what was asked of the piece pg_dumpall wrote next."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.data = b"".join(pieces)
        self.lengths = [len(piece) for piece in pieces if piece]
        self.position = 0

    def read_into(self, view: memoryview) -> int:
        if not self.lengths:
            return 0
        length = min(len(view), self.lengths[0])
        self.lengths[0] -= length
        if self.lengths[0] == 0:
            self.lengths.pop(0)
        view[:length] = self.data[self.position : self.position + length]
        self.position += length
        return length


@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(min_value=1, max_value=500))
def test_chunks_are_full_except_the_last_and_keep_every_byte_in_order(written: list[bytes], size: int) -> None:
    pool = BufferPool(size)
    chunks = []
    for chunk in pool.filled(PipeOfPieces(written).read_into):
        chunks.append(bytes(chunk))
        pool.give_back(chunk)
    assert b"".join(chunks) == b"".join(written)
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert all(0 < len(chunk) <= size for chunk in chunks)


def test_a_buffer_given_back_is_the_next_one_read_into() -> None:
    pool = BufferPool(4)
    first = pool.take()
    pool.give_back(memoryview(first)[:2])
    assert pool.take() is first
    assert pool.made == 1


def test_the_pool_keeps_at_most_keep_buffers_and_never_foreign_ones() -> None:
    pool = BufferPool(4, keep=2)
    buffers = [pool.take() for _ in range(3)]
    for buffer in buffers:
        pool.give_back(memoryview(buffer))
    pool.give_back(memoryview(bytearray(8)))  # not one of its size: a slice of something else
    pool.give_back(memoryview(b"abcd"))  # immutable: never written into
    assert len(pool._free) == 2
    assert all(buffer in buffers for buffer in pool._free)


def test_every_byte_is_encoded_and_fed_in_order_with_a_few_reused_buffers() -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB: many more chunks than buffers
    source, fed, written = io.BytesIO(data), bytearray(), bytearray()
    size = read_and_consume(source.readinto, written.extend, fed.extend)
    assert size == len(data)
    assert bytes(fed) == data and bytes(written) == data


def test_buffers_in_flight_are_bounded_by_the_handoff_while_the_worker_is_slow() -> None:
    """The worker is held on its first chunk: the reader fills the queue, then waits in put instead of reading (and
    allocating) further; then everything goes through."""
    gate = threading.Event()
    pool, consumed = BufferPool(), bytearray()

    def held_consume(chunk: memoryview) -> None:
        gate.wait()
        consumed.extend(chunk)

    data = bytes(range(256)) * 4096 * 30  # 30 MiB: three times the handoff's capacity
    reader = threading.Thread(target=read_and_consume, args=(io.BytesIO(data).readinto, held_consume,
                                                             lambda chunk: None),
                              kwargs={"pool": pool})
    reader.start()
    poll_until(lambda: parked_in(reader, "handoff.py", "put"))
    assert pool.made <= DEFAULT_CAPACITY + 2
    gate.set()
    reader.join()
    assert bytes(consumed) == data
    assert pool.made <= DEFAULT_CAPACITY + 2


def test_a_failing_worker_stops_the_loop_with_its_own_error() -> None:
    def disk_full(chunk: memoryview) -> None:
        raise StorageError("disk full while writing /backups/x.sql.gz", "free space")

    source = io.BytesIO(b"y" * (1024 * 1024 * 20))
    with pytest.raises(StorageError, match="disk full"):
        read_and_consume(source.readinto, disk_full, lambda chunk: None)
    assert source.tell() < 1024 * 1024 * 20  # stopped before the end


def test_a_chunk_is_given_back_only_after_the_worker_used_it() -> None:
    """The worker hashes each chunk as it gets it; had the reader reused a buffer still queued, the bytes hashed
    would differ from the bytes read."""
    data = bytes(range(251)) * 100_000
    digest, copy = hashlib.sha256(), bytearray()

    def consume(chunk: memoryview) -> None:
        digest.update(chunk)

    read_and_consume(io.BytesIO(data).readinto, consume, copy.extend)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert bytes(copy) == data


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_the_encoder_fed_reused_chunks_writes_the_same_stream(compression: str) -> None:
    """The encoder compresses pieces of the chunk and writes memoryviews for `none`: what the sink keeps (a copy,
    as uploads do) decodes to the input even though the chunk's buffer is overwritten right after."""
    data = b"".join(b"%d\tsome row text %d\n" % (number, number * 7) for number in range(200_000))
    stored = bytearray()
    with Encoder(stored.extend, Codec(compression)) as encoder:
        buffer = bytearray(1024 * 1024)
        for start in range(0, len(data), len(buffer)):
            part = data[start : start + len(buffer)]
            buffer[: len(part)] = part
            encoder.write(memoryview(buffer)[: len(part)])
            buffer[:] = bytes(len(buffer))  # reused: overwritten as soon as write returned
    decompressor = make_decompressor(compression)
    assert bytes(decompressor.decompress(bytes(stored))) + decompressor.finish() == data
    assert encoder.sha256 == hashlib.sha256(stored).hexdigest()


@given(st.binary(max_size=200_000), st.integers(min_value=1, max_value=70_000))
def test_pieces_cut_without_losing_or_copying(data: bytes, size: int) -> None:
    cut = list(pieces(data, size))
    assert b"".join(cut) == data
    assert all(isinstance(piece, memoryview) and len(piece) <= size for piece in cut)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_decoded_pieces_are_bytes_the_consumer_may_keep(compression: str) -> None:
    """The decoder reads into one reused buffer; what it yields must not change when the next chunk is read."""
    data = b"".join(b"%d\t%s\n" % (number, b"text " * (number % 50)) for number in range(100_000))
    stored = bytearray()
    with Encoder(stored.extend, Codec(compression)) as encoder:
        encoder.write(data)
    seen: list[bytes] = []
    with decoded(io.BytesIO(bytes(stored)), Codec(compression), None, "test") as chunks:
        seen.extend(chunks)
    assert all(isinstance(chunk, bytes) for chunk in seen)
    assert b"".join(seen) == data
    assert max(len(chunk) for chunk in seen) <= PIECE_SIZE  # under the mmap threshold: malloc reuses them


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.integers(min_value=1, max_value=5000),
       st.integers(min_value=1, max_value=4000))
def test_gzip_parts_are_bounded_and_whole_across_members_and_any_cut(members: list[bytes], cut: int,
                                                                       size: int) -> None:
    """Concatenated members (as `cat a.gz b.gz`), very compressible or not, fed in inputs of any size: every part
    at most `size` bytes, nothing lost, the end of the stream still seen."""
    members = [member * 7 for member in members]
    stored = b"".join(gzip_member(member) for member in members)
    decompressor = make_decompressor("gzip")
    parts = [part for start in range(0, len(stored), cut)
             for part in decompressor.pieces(memoryview(stored)[start : start + cut], size)]
    assert b"".join(parts) + decompressor.finish() == b"".join(members)
    assert all(0 < len(part) <= size for part in parts)


def gzip_member(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def test_chunks_of_reads_everything_into_one_buffer() -> None:
    data = bytes(range(256)) * 20_000
    views = []
    total = bytearray()
    for chunk in chunks_of(io.BytesIO(data)):
        views.append(chunk.obj)
        total += chunk
    assert bytes(total) == data
    assert len({id(buffer) for buffer in views}) == 1


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_truncated_stream_read_in_parts_is_still_refused(compression: str) -> None:
    data = bytes(range(256)) * 4000
    stored = bytearray()
    with Encoder(stored.extend, Codec(compression)) as encoder:
        encoder.write(data)
    with pytest.raises(IntegrityError, match="does not decompress"), decoded(
            io.BytesIO(bytes(stored[:-20])), Codec(compression), None, "backup x") as chunks:
        for _ in chunks:
            pass
