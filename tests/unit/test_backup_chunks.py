"""The backup gathers pg_dumpall's small reads into full chunks before handing them to its worker thread."""

from __future__ import annotations

from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from pgdr.formats.plain import gathered as _gathered
from pgdr.run import Stream


class PipeOfPieces:
    """Reads like a pipe: each read returns at most what was asked of the piece pg_dumpall wrote next."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.data = b"".join(pieces)
        self.lengths = [len(piece) for piece in pieces if piece]
        self.position = 0

    def read(self, size: int) -> bytes:
        if not self.lengths:
            return b""
        length = min(size, self.lengths[0])
        self.lengths[0] -= length
        if self.lengths[0] == 0:
            self.lengths.pop(0)
        data = self.data[self.position : self.position + length]
        self.position += length
        return data


@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(min_value=1, max_value=500))
def test_chunks_are_full_except_the_last_and_keep_every_byte_in_order(pieces: list[bytes], size: int) -> None:
    chunks = list(_gathered(cast(Stream, PipeOfPieces(pieces)), size))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) == size for chunk in chunks[:-1])
    assert all(0 < len(chunk) <= size for chunk in chunks)
