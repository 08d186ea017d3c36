"""Decoding, the encoder's reverse: what is read from storage is handed to an observer (sha256, progress, a local
copy) as stored, then decrypted when the codec says so, then decompressed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pgdr.errors import IntegrityError
from pgdr.run import CHUNK_SIZE
from pgdr.streams import Codec
from pgdr.streams.buffers import PIECE_SIZE, Data, pieces
from pgdr.streams.compression import DECOMPRESSION_ERRORS, make_decompressor
from pgdr.streams.encryption import DecryptingReader

DECOMPRESS_PIECE = 16 * 1024  # compressed bytes per decompress call: outputs stay under the mmap threshold
HINT_CORRUPT = "the backup is corrupt: restore another one (see `pgdr list`)"


class TeeReader:
    """Hands every chunk read to a callback (hash, progress, local copy) on its way to the reader."""

    def __init__(self, source: BinaryIO, on_chunk: Callable[[Data], None]) -> None:
        self._source = source
        self._on_chunk = on_chunk

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        if chunk:
            self._on_chunk(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:
        count = read_into(self._source, buffer)
        if count:
            self._on_chunk(buffer[:count])
        return count

    def close(self) -> None:
        """The source belongs to the caller: nothing to release here (DecryptingReader has a thread and a pipe)."""

    def __enter__(self) -> TeeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tally:
    """sha256 and size of the stored bytes, fed chunk by chunk."""

    def __init__(self) -> None:
        self.size = 0
        self._digest = hashlib.sha256()

    def __call__(self, chunk: Data) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def chunks_of(reader: TeeReader | DecryptingReader | BinaryIO) -> Iterator[memoryview]:
    """The reader's bytes in chunks of CHUNK_SIZE, read into one reused buffer: each chunk is valid until the next
    one is read (hash it, copy it, decompress it; never keep it). A new 1 MiB bytes per read would cost fresh
    pages from the OS every time (pgdr.streams.buffers)."""
    buffer = memoryview(bytearray(CHUNK_SIZE))
    while count := read_into(reader, buffer):
        yield buffer[:count]


def read_into(source: object, buffer: memoryview) -> int:
    """source.readinto(buffer) (files, S3 downloads, the readers here); read() copied in for a source without it."""
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        return int(readinto(buffer) or 0)
    data = source.read(len(buffer))  # type: ignore[attr-defined]
    buffer[: len(data)] = data
    return len(data)


@contextmanager
def decoded(source: BinaryIO, codec: Codec, identity: object | None, label: str,
            on_stored: Callable[[Data], None] | None = None) -> Iterator[Iterator[bytes]]:
    """The plain bytes of `source`, chunk by chunk; on_stored sees the bytes as stored. A stream that does not
    decompress is an IntegrityError naming `label`; decryption errors are IntegrityErrors already."""
    if codec.encrypted and identity is None:
        raise ValueError("an encrypted codec needs an age identity")
    tee = TeeReader(source, on_stored or (lambda chunk: None))
    with DecryptingReader(tee, identity) if codec.encrypted else tee as reader:  # type: ignore[arg-type]
        yield _decompressed(reader, codec, label)


def _decompressed(reader: TeeReader | DecryptingReader, codec: Codec, label: str) -> Iterator[bytes]:
    """The plain bytes in parts of at most PIECE_SIZE however well they compress (a crafted backup too), small
    enough for malloc to reuse: a whole 1 MiB chunk decompressed at once makes a new ~2.5 MiB output, fresh pages
    from the OS, every time (measured: 40% more CPU for gzip). The compressed input goes in DECOMPRESS_PIECE bytes
    at a time. Every part is a bytes object the consumer may keep; the read buffer below is reused."""
    decompressor = make_decompressor(codec.compression)
    piece_size = PIECE_SIZE if codec.compression == "none" else DECOMPRESS_PIECE
    try:
        for chunk in chunks_of(reader):
            for piece in pieces(chunk, piece_size):
                yield from decompressor.pieces(piece, PIECE_SIZE)
        yield decompressor.finish()
    except DECOMPRESSION_ERRORS as error:
        raise IntegrityError(f"{label} does not decompress as {codec.compression}: {error}", HINT_CORRUPT) from None
