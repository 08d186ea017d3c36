"""What each in-process step of pgdr's streams costs, alone, on the real dump: the numbers behind a bottleneck.

    python3 bench/components.py DUMP.sql [--mb 256]

Reads the first MB of a plain pg_dumpall file into memory, then pushes it through each step in 1 MiB chunks, one
step at a time, in this process: sha256, pgdr's DumpScanner, the compressors (pgdr's defaults and the levels
around them), the decompressors, pgdr's GlobalsFilter. CPU time includes every thread (zstd's workers too).
Prints a table and, with --json, the figures as JSON. Steps whose pgdr API is missing are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHUNK = 1024 * 1024
GZIP_WBITS = 31
Step = Callable[[Iterator[bytes]], int]  # consumes chunks, returns bytes produced


def chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start : start + CHUNK])


def compress_with(factory: Callable[[], Any]) -> Step:
    def step(source: Iterator[bytes]) -> int:
        compressor = factory()
        size = sum(len(compressor.compress(chunk)) for chunk in source)
        return size + len(compressor.flush())

    return step


def decompress_with(factory: Callable[[], Any], finish: str) -> Step:
    def step(source: Iterator[bytes]) -> int:
        decompressor = factory()
        size = sum(len(decompressor.decompress(chunk)) for chunk in source)
        tail = getattr(decompressor, finish)() if finish else b""
        return size + len(tail)

    return step


def sha256(source: Iterator[bytes]) -> int:
    digest = hashlib.sha256()
    for chunk in source:
        digest.update(chunk)
    return 0


def consume_with(factory: Callable[[], Any], method: str) -> Step:
    def step(source: Iterator[bytes]) -> int:
        consumer = factory()
        return sum(len(getattr(consumer, method)(chunk) or b"") for chunk in source)

    return step


def compressors() -> dict[str, Step]:
    steps: dict[str, Step] = {
        "zlib level 1": compress_with(lambda: zlib.compressobj(1, zlib.DEFLATED, GZIP_WBITS)),
        "zlib level 6 (= gzip -6)": compress_with(lambda: zlib.compressobj(6, zlib.DEFLATED, GZIP_WBITS)),
    }
    try:
        from isal import isal_zlib

        def isal_level(level: int) -> Callable[[], Any]:
            return lambda: isal_zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)

        for level in (1, 2, 3):
            steps[f"isal level {level}"] = compress_with(isal_level(level))
    except ImportError:
        pass
    try:
        import zstandard

        steps["zstd level 3, 1 thread"] = compress_with(lambda: zstandard.ZstdCompressor(level=3).compressobj())
        steps["zstd level 3, threads=-1"] = compress_with(
            lambda: zstandard.ZstdCompressor(level=3, threads=-1).compressobj())
    except ImportError:
        pass
    try:
        from pgdr.compression import make_compressor

        steps["pgdr make_compressor('gzip')"] = compress_with(lambda: make_compressor("gzip"))
        steps["pgdr make_compressor('zstd')"] = compress_with(lambda: make_compressor("zstd"))
    except ImportError:
        pass
    return steps


def pgdr_steps() -> dict[str, Step]:
    steps: dict[str, Step] = {}
    try:
        from pgdr.dumpscan import DumpScanner

        steps["pgdr DumpScanner.feed"] = consume_with(DumpScanner, "feed")
    except ImportError:
        pass
    try:
        from pgdr.actions.restore import GlobalsFilter

        steps["pgdr GlobalsFilter.feed"] = consume_with(lambda: GlobalsFilter("postgres"), "feed")
    except ImportError:
        pass
    return steps


def decompressors(data: bytes) -> dict[str, tuple[bytes, Step]]:
    """name -> (compressed input, step); inputs made once, outside the timing."""
    steps: dict[str, tuple[bytes, Step]] = {}
    gzipped = zlib.compress(data, 6, wbits=GZIP_WBITS) if len(data) else b""
    steps["zlib decompress (gunzip)"] = (gzipped, decompress_with(lambda: zlib.decompressobj(47), "flush"))
    try:
        from isal import isal_zlib

        steps["isal decompress"] = (gzipped, decompress_with(lambda: isal_zlib.decompressobj(47), "flush"))
    except ImportError:
        pass
    try:
        import zstandard

        zstd_data = zstandard.ZstdCompressor(level=3).compress(data)
        steps["zstd decompress"] = (zstd_data, decompress_with(lambda: zstandard.ZstdDecompressor().decompressobj(),
                                                                 ""))
    except ImportError:
        pass
    try:
        from pgdr.compression import make_decompressor

        steps["pgdr make_decompressor('gzip')"] = (gzipped, decompress_with(lambda: make_decompressor("gzip"),
                                                                             "finish"))
    except ImportError:
        pass
    return steps


def measure(step: Step, data: bytes) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    produced = step(chunks(data))
    return time.perf_counter() - wall, time.process_time() - cpu, produced


def run(path: Path, megabytes: int) -> list[dict[str, object]]:
    with open(path, "rb") as handle:
        data = handle.read(megabytes * 1000**2)
    rows: list[dict[str, object]] = []
    steps = {"sha256": (data, sha256), **{name: (data, step) for name, step in pgdr_steps().items()},
             **{name: (data, step) for name, step in compressors().items()}, **decompressors(data)}
    for name, (payload, step) in steps.items():
        try:
            wall, cpu, produced = measure(step, payload)
        except Exception as error:  # noqa: BLE001 - a step broken by a pgdr change is reported, not fatal
            rows.append({"step": name, "error": repr(error)[:200]})
            continue
        compressing = name.startswith(("zlib level", "isal level", "zstd level", "pgdr make_compressor"))
        rows.append({"step": name, "input_mb": round(len(payload) / 1e6, 1), "wall_s": round(wall, 3),
                     "cpu_s": round(cpu, 3), "mb_per_s": round(len(data) / 1e6 / wall, 1) if wall else None,
                     "cpu_s_per_gb": round(cpu / len(data) * 1e9, 2) if data else None,
                     "ratio": round(len(data) / produced, 2) if compressing and produced else None})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    sample_mb = next((row["input_mb"] for row in rows if row["step"] == "sha256"), 0)
    lines = [f"Per-step cost in one process, on the first {sample_mb:.0f} MB of the dump "
             "(speed and CPU per GB of uncompressed SQL)",
             f"  {'step':<34} {'MB/s':>8} {'CPU s/GB':>9} {'ratio':>6}"]
    for row in rows:
        if "error" in row:
            lines.append(f"  {row['step']:<34} failed: {row['error']}")
            continue
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else ""
        lines.append(f"  {row['step']:<34} {row['mb_per_s']:>8} {row['cpu_s_per_gb']:>9} {ratio:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path)
    parser.add_argument("--mb", type=int, default=256, help="how much of the dump to use (MB)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    rows = run(args.dump, args.mb)
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
