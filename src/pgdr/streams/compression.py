"""Streaming compression for backups: gzip (gunzip-compatible, ISA-L when available), zstd, none.

All codecs work chunk by chunk so memory stays flat whatever the database size.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
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
ZSTD_BLOCK_MAXIMUM = 128 * 1024  # what one zstd block decompresses to at most (RFC 8878, Block_Maximum_Size)
ZSTD_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50  # the low 4 bits are free: 16 magic numbers of skippable frames
ZSTD_DICTIONARY_ID_SIZES = (0, 1, 2, 4)  # by the frame header's Dictionary_ID_Flag
ZSTD_CONTENT_SIZE_SIZES = (0, 2, 4, 8)  # by Frame_Content_Size_Flag (0 means 1 byte in a single-segment frame)
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


class ZstdBlockCuts:
    """Where each zstd block and frame ends in the stored bytes (RFC 8878), read from the headers as they pass by.

    zstd's decompressobj takes no output limit: one call returns everything its input decodes to, and 4 bytes of
    input (an RLE block) decode to 128 KiB, so a crafted backup of a few MB would come out as one output of GBs.
    Fed no further than the end of the next block, one call decodes one block at most: ZSTD_BLOCK_MAXIMUM bytes.
    Only the headers are read (3 bytes a block); the decompressor checks everything, this only chooses the cuts.
    Frames end at a cut too, so each frame has a decompressobj of its own (`cat a.zst b.zst`, skippable frames).
    """

    def __init__(self) -> None:
        self._header = bytearray()  # the part read so far of the header being read
        self._header_size = 4  # the size of the header being read: a frame's magic number first
        self._on_header: Callable[[bytes], bool] = self._magic  # reads it once whole; True: a frame ends there
        self._skip = 0  # bytes to pass before the next header (a block's content, the rest of a frame header)
        self._cut_after_skip = False  # those bytes end a block or a frame
        self._checksum = False  # the current frame ends with a 4-byte checksum

    def span(self, data: memoryview) -> int:
        """How many of data's first bytes to decompress at once: up to the next end of a block or frame, or all."""
        position = 0
        while position < len(data):
            if self._skip:
                step = min(self._skip, len(data) - position)
                self._skip -= step
                position += step
                if not self._skip and self._cut_after_skip:
                    self._cut_after_skip = False
                    return position
                continue
            taken = data[position : position + self._header_size - len(self._header)]
            self._header += taken
            position += len(taken)
            if len(self._header) == self._header_size:
                header = bytes(self._header)
                self._header.clear()
                if self._on_header(header):
                    return position
        return position

    def _expect(self, size: int, on_header: Callable[[bytes], bool]) -> None:
        self._header_size, self._on_header = size, on_header

    def _magic(self, header: bytes) -> bool:
        magic = int.from_bytes(header, "little")
        if magic == ZSTD_MAGIC:
            self._expect(1, self._frame_header)
        elif magic & ~0xF == ZSTD_SKIPPABLE_MAGIC:
            self._expect(4, self._skippable_size)
        else:
            raise ValueError(f"not a zstd frame (magic number {header.hex()})")
        return False

    def _frame_header(self, header: bytes) -> bool:
        """The Frame_Header_Descriptor: the sizes of the rest of the header, and whether a checksum follows."""
        descriptor = header[0]
        single_segment = bool(descriptor & 0x20)
        content_size = ZSTD_CONTENT_SIZE_SIZES[descriptor >> 6] or int(single_segment)
        self._skip = int(not single_segment) + ZSTD_DICTIONARY_ID_SIZES[descriptor & 3] + content_size
        self._checksum = bool(descriptor & 0x04)
        self._expect(3, self._block_header)
        return False

    def _block_header(self, header: bytes) -> bool:
        value = int.from_bytes(header, "little")
        last, block_type, block_size = value & 1, (value >> 1) & 3, value >> 3
        self._skip = 1 if block_type == 1 else block_size  # an RLE block stores its one byte
        self._cut_after_skip = block_size > 0
        if not last:
            self._expect(3, self._block_header)
        elif self._checksum:
            self._expect(4, self._frame_end)
        else:
            self._expect(4, self._magic)
            self._cut_after_skip = True  # the frame ends with this block
            return self._skip == 0
        return False

    def _frame_end(self, header: bytes) -> bool:
        self._expect(4, self._magic)
        return True

    def _skippable_size(self, header: bytes) -> bool:
        self._skip = int.from_bytes(header, "little")
        self._cut_after_skip = True
        self._expect(4, self._magic)
        return self._skip == 0


class ZstdDecompressor:
    """Decompresses concatenated frames too (``cat a.zst b.zst``, pzstd); bytes after a frame that are not
    another frame raise instead of being silently ignored."""

    def __init__(self) -> None:
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._cuts = ZstdBlockCuts()
        self._seen_data = False

    def decompress(self, data: bytes | memoryview) -> bytes | memoryview:
        return b"".join(self.pieces(data, ZSTD_BLOCK_MAXIMUM))

    def pieces(self, data: bytes | memoryview, size: int) -> Iterator[bytes]:
        """decompress(data) as outputs of at most `size` bytes each, however well the data compresses: the input
        goes in one block at most at a time (ZstdBlockCuts), and a block's output is cut to `size`."""
        view = memoryview(data)
        while view:
            count = self._cuts.span(view)
            output = self._decompress_part(view[:count])
            view = view[count:]
            if len(output) <= size:
                if output:
                    yield output
                continue
            for start in range(0, len(output), size):
                yield output[start : start + size]

    def _decompress_part(self, data: memoryview) -> bytes:
        """Bytes that end a block or frame at most, so their output is one block at most."""
        self._seen_data = True
        if self._decompressor.eof:
            self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        output = self._decompressor.decompress(data)
        if self._decompressor.unused_data or len(output) > ZSTD_BLOCK_MAXIMUM:  # only if the cuts were wrong
            raise ValueError("zstd frame does not end where its headers say")
        return output

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
