"""Reused buffers for the byte loops, so memory stays flat without the kernel paying for it on every chunk.

pgdr hands buffers of 128 KiB and more back to the OS as soon as they are freed (pgdr.memory). A loop that makes a
new 1 MiB `bytes` for every read, join or compressor output then pays, per MiB, an mmap, 256 page faults (each a
zeroed page) and a munmap, whose TLB flush interrupts the other threads: about 1 s of system CPU per GB per buffer.
Instead, a backup reads pg_dumpall's pipe straight into a few 1 MiB bytearrays taken from a pool and given back
once the worker thread has encoded them, and every other step works on slices of at most PIECE_SIZE (64 KiB):
below the mmap threshold, so malloc reuses the same memory instead of asking the OS for more.

Only the pool's owner takes buffers, the consumer gives them back; a buffer given back must not be read any
more (a step that keeps data after it returns copies it: the S3 part buffer, the lexer's few carried bytes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeAlias

from pgdr.run import CHUNK_SIZE
from pgdr.streams.handoff import DEFAULT_CAPACITY, Handoff

Data: TypeAlias = bytes | bytearray | memoryview  # what the byte loops pass on: a chunk, a piece of one

PIECE_SIZE = 64 * 1024  # the size every step below the reading loop works in: under the 128 KiB mmap threshold
Put = Callable[[memoryview], None]


class Relay(Protocol):
    """Hands the chunks on to the worker in its own time, after `feed` has read each (one held back at most):
    pgdr.formats.plain_members.MemberCuts, which must see where the scanner proves a section before the chunk
    holding it is compressed."""

    def pass_on(self, chunk: memoryview, put: Put) -> None: ...

    def finish(self, put: Put) -> None: ...


class BufferPool:
    """Buffers of `size` bytes, reused: `take` one (a new one when none is free), `give_back` it when done.

    It never waits: how many buffers are out is bounded by whoever holds them (the handoff's bounded queue), and
    a buffer that is not given back (a worker that failed and dropped its queue) is simply garbage-collected.
    `keep` buffers at most are kept for reuse.
    """

    def __init__(self, size: int = CHUNK_SIZE, keep: int = 12) -> None:
        self.size = size
        self.keep = keep
        self.made = 0  # buffers allocated so far: a loop that reuses them makes only a few, whatever its length
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        try:
            return self._free.pop()  # list.pop and list.append are atomic: the two threads need no lock
        except IndexError:
            self.made += 1
            return bytearray(self.size)

    def give_back(self, chunk: memoryview) -> None:
        """The chunk's buffer, for reuse by the next `take`."""
        buffer = chunk.obj
        if isinstance(buffer, bytearray) and len(buffer) == self.size and len(self._free) < self.keep:
            self._free.append(buffer)

    def filled(self, read_into: Callable[[memoryview], int]) -> Iterator[memoryview]:
        """The source in chunks of `size` bytes (the last one shorter), each read straight into a pooled buffer.

        read_into(view) reads at most len(view) bytes into view and returns how many (0 at the end), as
        `readinto` does. Once pgdr keeps up with pg_dumpall a read returns what the pipe holds, often a few KiB;
        filling the buffer first means one handoff and one call to the scanner, the compressor and the hash per
        MiB instead of hundreds. The consumer gives each chunk back (give_back, or `returning`).
        """
        while True:
            view = memoryview(self.take())
            filled = 0
            while filled < self.size and (count := read_into(view[filled:])):
                filled += count
            if filled == 0:
                self.give_back(view)
                return
            yield view[:filled]
            if filled < self.size:
                return

    def returning(self, consume: Callable[[memoryview], None]) -> Callable[[memoryview], None]:
        """consume(chunk), then the chunk's buffer given back, also when consume failed."""

        def consume_and_give_back(chunk: memoryview) -> None:
            try:
                consume(chunk)
            finally:
                self.give_back(chunk)

        return consume_and_give_back


def pieces(data: Data, size: int = PIECE_SIZE) -> Iterator[memoryview]:
    """data in slices of at most `size` bytes, without copying it."""
    view = memoryview(data)
    if len(view) <= size:
        yield view
        return
    for start in range(0, len(view), size):
        yield view[start : start + size]


def read_and_consume(read_into: Callable[[memoryview], int], consume: Callable[[memoryview], None],
                     feed: Callable[[memoryview], None], advance: Callable[[int], object] = lambda size: None,
                     name: str = "pgdr-compress", pool: BufferPool | None = None, relay: Relay | None = None
                     ) -> int:
    """The backup's byte loop: read the source into pooled 1 MiB chunks; this thread feeds each to `feed` (the
    lexer) while a worker thread runs `consume` (compress, encrypt, hash, write) on the chunks read before
    (pgdr.streams.handoff), then gives the buffer back. Returns the bytes read.

    At most DEFAULT_CAPACITY chunks wait for the worker, so DEFAULT_CAPACITY + 2 buffers are out at most (those,
    the one the worker encodes, the one being read and fed): memory is flat and, once they exist, nothing new is
    allocated per chunk. A chunk is given back only after `consume` and never taken again before `feed` returned,
    since only this thread takes. The worker's failure stops the loop at the next chunk, with its own type.
    With a relay, each chunk is fed first and the relay hands it on (one more buffer out: the one it holds back).
    """
    pool = pool or BufferPool(keep=DEFAULT_CAPACITY + 2 + (relay is not None))
    size = 0
    with Handoff(pool.returning(consume), name=name) as handoff:
        for chunk in pool.filled(read_into):
            size += len(chunk)
            advance(len(chunk))
            if relay is None:
                handoff.put(chunk)
                feed(chunk)
            else:
                feed(chunk)
                relay.pass_on(chunk, handoff.put)
        if relay is not None:
            relay.finish(handoff.put)
    return size
