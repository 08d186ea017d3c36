"""Streaming compression for backups: gzip (gunzip-compatible, ISA-L when available), zstd, none.

All codecs work chunk by chunk so memory stays flat whatever the database size.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from typing import Protocol

import zstandard

try:  # ISA-L is several times faster than zlib at the same gzip format
    from isal import isal_zlib as gzip_zlib  # type: ignore[import-untyped]

    GZIP_DEFAULT_LEVEL = 2  # ISA-L levels are 0..3; level 2 compresses like gzip -6 at a fraction of the cost
except ImportError:  # pragma: no cover - isal is a dependency, this is only a safety net
    gzip_zlib = zlib  # type: ignore[assignment,misc]
    GZIP_DEFAULT_LEVEL = 6

GZIP_WBITS = 31  # zlib container = gzip
GZIP_AUTO_WBITS = 47  # accept gzip or zlib headers
ZSTD_DEFAULT_LEVEL = 3  # where two cores are free beside the dump for zstd's workers
# On fewer cores zstd's level 3 costs 2.3x ISA-L's CPU (6.9 against 3.0 s per GB of SQL), and that CPU is taken
# from the dump: level 1 compresses about as fast as gzip (ISA-L level 2) to about its size (issue 17: zstd no
# slower than gzip on 2 cores; bench/README.md). backup.compression_level always wins.
ZSTD_FEW_CORES_LEVEL = 1
ZSTD_JOB_SIZE = 2 * 1024 * 1024
ZSTD_INPUT_PIECE = 16 * 1024  # compressed bytes per call when decompressing in parts (ZstdDecompressor.pieces)
# A dump keeps about two cores busy (the server's COPY and pg_dump or pg_dumpall); more zstd worker threads only help
# on cores beyond those. One worker already compresses (level 3) faster than one COPY stream produces. None at all
# (zstd in the calling thread) was measured 20% more CPU per backup than one or two on 2 cores (bench/README.md).
DUMP_CORES = 2
ZSTD_MIN_WORKERS = 1
ZSTD_MAX_WORKERS = 2


class Compressor(Protocol):
    def compress(self, data: bytes | memoryview) -> bytes | memoryview: ...

    def flush(self) -> bytes: ...


class Decompressor(Protocol):
    def decompress(self, data: bytes | memoryview) -> bytes | memoryview: ...

    def pieces(self, data: bytes | memoryview, size: int) -> Iterator[bytes]: ...

    def finish(self) -> bytes: ...


class Identity:
    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return data

    def decompress(self, data: bytes | memoryview) -> bytes | memoryview:
        return data

    def flush(self) -> bytes:
        return b""

    def pieces(self, data: bytes | memoryview, size: int) -> Iterator[bytes]:
        """data copied in parts of `size` bytes: the caller's buffer is reused, what it yields may be kept."""
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])

    def finish(self) -> bytes:
        return b""


class GzipCompressor:
    def __init__(self, level: int | None) -> None:
        chosen = GZIP_DEFAULT_LEVEL if level is None else level
        self._compressor = gzip_zlib.compressobj(chosen, zlib.DEFLATED, GZIP_WBITS)

    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush()


class GzipDecompressor:
    """Decompresses concatenated gzip members too (``cat a.gz b.gz`` is a valid gzip stream)."""

    def __init__(self) -> None:
        self._decompressor = gzip_zlib.decompressobj(GZIP_AUTO_WBITS)
        self._seen_data = False

    def decompress(self, data: bytes | memoryview) -> bytes | memoryview:
        output = []
        while data:
            self._seen_data = True
            output.append(self._decompressor.decompress(data))
            if not self._decompressor.eof:
                break
            data = self._decompressor.unused_data
            if data:
                self._decompressor = gzip_zlib.decompressobj(GZIP_AUTO_WBITS)
        return b"".join(output)

    def pieces(self, data: bytes | memoryview, size: int) -> Iterator[bytes]:
        """decompress(data) as outputs of at most `size` bytes each (however well the data compresses), so none
        needs fresh pages from the OS (pgdr.streams.buffers). Feed it small inputs: the input a call leaves
        unconsumed is copied for the next one."""
        cut = True  # the last output filled `size`: more may be waiting inside without more input
        while data or cut:
            self._seen_data = self._seen_data or bool(data)
            output = self._decompressor.decompress(data, size)
            if output:
                yield output
            if self._decompressor.eof:
                data, cut = self._decompressor.unused_data, False
                if data:
                    self._decompressor = gzip_zlib.decompressobj(GZIP_AUTO_WBITS)
            else:
                data, cut = self._decompressor.unconsumed_tail, len(output) == size

    def finish(self) -> bytes:
        if not self._seen_data or not self._decompressor.eof:
            raise ValueError("compressed stream is truncated (gzip end of stream missing)")
        return self._decompressor.flush()


def zstd_workers(cores: int, load: float) -> int:
    """zstd's worker threads for a new stream: one, and a second only on a core free beside the dump (the usable
    cores minus the two the dump keeps busy and the load average of the rest of the machine), so that on 2 cores
    zstd does not add a thread to those of pg_dump and the server."""
    return max(ZSTD_MIN_WORKERS, min(cores - DUMP_CORES - round(load), ZSTD_MAX_WORKERS))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_zstd_workers() -> int:
    return zstd_workers(usable_cores(), os.getloadavg()[0])


def zstd_default_level(cores: int) -> int:
    """zstd's level when backup.compression_level is unset: 3 where its two workers have cores of their own beside
    the dump's two, else 1. From the cores only, not the load, so one machine always writes the same size."""
    return ZSTD_DEFAULT_LEVEL if cores - DUMP_CORES >= ZSTD_MAX_WORKERS else ZSTD_FEW_CORES_LEVEL


class ZstdCompressor:
    def __init__(self, level: int | None, workers: int | None = None) -> None:
        # The frame checksum makes a corrupted backup fail to decompress. Jobs of 2 MiB instead of zstd's default
        # (4 windows, 8 MiB at level 3) keep its worker threads' buffers to ~12 MB instead of ~60 MB at the same
        # speed and size (measured on the 1 GB bench dump: 248.09 vs 248.07 MB). Any worker count writes one frame.
        parameters = zstandard.ZstdCompressionParameters.from_level(
            zstd_default_level(usable_cores()) if level is None else level,
            threads=free_zstd_workers() if workers is None else workers, job_size=ZSTD_JOB_SIZE, write_checksum=True)
        self._compressor = zstandard.ZstdCompressor(compression_params=parameters).compressobj()

    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return self._compressor.compress(data)

    def flush(self) -> bytes:
        return self._compressor.flush()


class ZstdDecompressor:
    """Decompresses concatenated frames too (``cat a.zst b.zst``, pzstd); bytes after a frame that are not
    another frame raise instead of being silently ignored."""

    def __init__(self) -> None:
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._seen_data = False

    def decompress(self, data: bytes | memoryview) -> bytes | memoryview:
        output = []
        while data:
            self._seen_data = True
            if self._decompressor.eof:
                self._decompressor = zstandard.ZstdDecompressor().decompressobj()
            output.append(self._decompressor.decompress(data))
            data = self._decompressor.unused_data if self._decompressor.eof else b""
        return b"".join(output)

    def pieces(self, data: bytes | memoryview, size: int) -> Iterator[bytes]:
        """decompress(data) in parts: zstd's objects take no output limit, so the input is cut instead (pieces of
        ZSTD_INPUT_PIECE give outputs of ~40 KiB on SQL; more when it compresses far better)."""
        view = memoryview(data)
        for start in range(0, len(view), ZSTD_INPUT_PIECE):
            output = self.decompress(view[start : start + ZSTD_INPUT_PIECE])
            if output:
                yield bytes(output)

    def finish(self) -> bytes:
        if not self._seen_data or not self._decompressor.eof:
            raise ValueError("compressed stream is truncated (zstd end of frame missing)")
        return b""


def make_compressor(compression: str, level: int | None = None) -> Compressor:
    if compression == "gzip":
        return GzipCompressor(level)
    if compression == "zstd":
        return ZstdCompressor(level)
    return Identity()


def make_decompressor(compression: str) -> Decompressor:
    if compression == "gzip":
        return GzipDecompressor()
    if compression == "zstd":
        return ZstdDecompressor()
    return Identity()


DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = (zlib.error, gzip_zlib.error, zstandard.ZstdError, ValueError)  # type: ignore[assignment]
