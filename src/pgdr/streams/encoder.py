"""Encoding, as one object: compress, then encrypt with age when recipients are given, then count and hash what
is stored, then hand it to a sink (an upload). rohmu's `file_writer` and WAL-G's compressors work the same way."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pgdr.streams import Codec
from pgdr.streams.buffers import Data, pieces
from pgdr.streams.compression import Compressor, Identity, make_compressor
from pgdr.streams.encryption import StreamEncryptor


class Encoder:
    """write() plain bytes, close() at the end; sha256 and size are those of the stored (encoded) bytes.

    The sink gets bytes or a memoryview of the caller's buffer, and must not keep it after it returns (uploads
    copy what they buffer): the backup's buffers are reused (pgdr.streams.buffers).
    """

    def __init__(self, sink: Callable[[Data], None], codec: Codec, level: int | None = None,
                 recipients: list[object] | None = None) -> None:
        if codec.encrypted and not recipients:
            raise ValueError("an encrypted codec needs age recipients")
        self.codec = codec
        self.size = 0
        self._level = level
        self._sink = sink
        self._digest = hashlib.sha256()
        self._compressor: Compressor = make_compressor(codec.compression, level)
        self._encryptor = StreamEncryptor(recipients, self._store) if codec.encrypted and recipients else None

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def write(self, data: Data) -> None:
        """Compressed in pieces of PIECE_SIZE bytes, so each output is small enough for malloc to reuse (a 1 MiB
        chunk at once would make a new ~450 KB output, fresh pages from the OS, every time); uncompressed data
        goes on as it is, without a copy."""
        if isinstance(self._compressor, Identity):
            self._encrypt(data)
            return
        for piece in pieces(data):
            self._encrypt(self._compressor.compress(piece))

    def end_member(self) -> int:
        """End the gzip member (zstd frame) here and start a new one: the stored bytes from the returned offset on
        decompress alone. Concatenated members are still one valid stream for gunzip, zstd -d and every pgdr.
        Unencrypted only: an offset into age's ciphertext is no place to start reading."""
        assert self._encryptor is None, "an encrypted stream cannot be cut into members"
        self._store(self._compressor.flush())
        self._compressor = make_compressor(self.codec.compression, self._level)
        return self.size

    def close(self) -> None:
        """Flush the compressor and finish the encryption: after this, size and sha256 are final."""
        self._encrypt(self._compressor.flush())
        if self._encryptor is not None:
            encryptor, self._encryptor = self._encryptor, None
            encryptor.close()

    def discard(self) -> None:
        """Stop without finishing (the upload is being aborted): the encryption thread ends, its error unread."""
        if self._encryptor is not None:
            encryptor, self._encryptor = self._encryptor, None
            try:
                encryptor.close()
            except Exception:  # noqa: BLE001 - aborting anyway; the original error is what matters
                pass

    def _encrypt(self, data: Data) -> None:
        if self._encryptor is not None:
            self._encryptor.write(data)
        else:
            self._store(data)

    def _store(self, data: Data) -> None:
        if data:
            self._digest.update(data)
            self.size += len(data)
            self._sink(data)

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        """A normal exit finishes the stream (close); an exception discards it, and the upload below aborts."""
        if kind is None:
            self.close()
        else:
            self.discard()
