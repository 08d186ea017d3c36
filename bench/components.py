"""What each in-process step of pgdr's streams costs, alone, on the real dump: the numbers behind a bottleneck.

    python3 bench/components.py DUMP.sql [--mb 256] [--repeat 3] [--steps scanner,globals]
    python3 bench/components.py --hostile [--hostile-mb 32,64,128]

Reads the first MB of a plain pg_dumpall file into memory, then pushes it through each step in 1 MiB chunks, one
step at a time, in this process: sha256, pgdr's DumpScanner (feed and finish, the psql-exact lexer of issue 11),
pgdr's GlobalsFilter, the same two steps as they were before issue 11 (bench/previous_dumpscan.py, the line
scanner, measured as the baseline only), the compressors (pgdr's defaults and the levels around them) and the
decompressors. CPU time includes every thread (zstd's workers too). With --repeat, the steps run that many times,
interleaved, and the median is shown. A step with a baseline shows its CPU cost as a multiple of the baseline's
("vs prev"). Prints a table and, with --json, the figures as JSON. Steps whose pgdr API is missing are skipped.

--hostile needs no dump: it builds, in memory, the shapes a database user can put in a dump (issue 11) - a single
COPY row, a COMMENT string made of '' pairs, a dollar-quoted function body, each one line of N MiB - and feeds each
in 1 MiB chunks to the old and new scanner and (but the COPY row) GlobalsFilter, each case in a fresh process:
seconds (CPU and wall) and peak RSS growth (VmHWM after minus VmRSS before), and how the time grows with the size
(linear: 2.0x per doubling).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import subprocess
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


def consume_with(factory: Callable[[], Any], method: str, finish: str = "") -> Step:
    def step(source: Iterator[bytes]) -> int:
        consumer = factory()
        produced = sum(len(getattr(consumer, method)(chunk) or b"") for chunk in source)
        return produced + len((getattr(consumer, finish)() or b"") if finish else b"")

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
        from pgdr.streams.compression import make_compressor

        steps["pgdr make_compressor('gzip')"] = compress_with(lambda: make_compressor("gzip"))
        steps["pgdr make_compressor('zstd')"] = compress_with(lambda: make_compressor("zstd"))
    except ImportError:
        pass
    return steps


PREVIOUS_SCANNER = "previous line scanner (feed)"
PREVIOUS_GLOBALS = "previous GlobalsFilter.feed+finish"
PREVIOUS_END_MARKER = "previous EndMarker.feed"
# step -> the step it replaced (issue 11): its CPU cost is also shown as a multiple of the baseline's
BASELINES = {"pgdr DumpScanner.feed+finish": PREVIOUS_SCANNER, "pgdr GlobalsFilter.feed+finish": PREVIOUS_GLOBALS}


def has_finish(factory: Callable[[], Any]) -> str:
    return "finish" if callable(getattr(factory(), "finish", None)) else ""


def pgdr_steps() -> dict[str, Step]:
    steps: dict[str, Step] = {}
    try:
        from pgdr.dumpscan import DumpScanner

        steps["pgdr DumpScanner.feed+finish"] = consume_with(DumpScanner, "feed", has_finish(DumpScanner))
    except ImportError:
        pass
    try:
        from pgdr.formats.psql_feed import GlobalsFilter

        steps["pgdr GlobalsFilter.feed+finish"] = consume_with(lambda: GlobalsFilter("postgres"), "feed", "finish")
    except ImportError:
        pass
    return steps


def previous_steps() -> dict[str, Step]:
    """The line scanner, GlobalsFilter and EndMarker from before issue 11 (bench/previous_dumpscan.py): baselines.
    EndMarker was the restore pre-check's scanner for backups without a manifest; DumpScanner does that now."""
    try:
        import previous_dumpscan as previous
    except ImportError:
        return {}
    return {PREVIOUS_SCANNER: consume_with(previous.DumpScanner, "feed"),
            PREVIOUS_GLOBALS: consume_with(lambda: previous.GlobalsFilter("postgres"), "feed", "finish"),
            PREVIOUS_END_MARKER: consume_with(previous.EndMarker, "feed")}


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
        from pgdr.streams.compression import make_decompressor

        steps["pgdr make_decompressor('gzip')"] = (gzipped, decompress_with(lambda: make_decompressor("gzip"),
                                                                             "finish"))
    except ImportError:
        pass
    return steps


def measure(step: Step, data: bytes) -> tuple[float, float, int]:
    wall, cpu = time.perf_counter(), time.process_time()
    produced = step(chunks(data))
    return time.perf_counter() - wall, time.process_time() - cpu, produced


def selected(name: str, only: list[str]) -> bool:
    return not only or any(word.lower() in name.lower() for word in only)


def run(path: Path, megabytes: int, repeat: int = 1, only: list[str] | None = None) -> list[dict[str, object]]:
    with open(path, "rb") as handle:
        data = handle.read(megabytes * 1000**2)
    steps = {"sha256": (data, sha256), **{name: (data, step) for name, step in pgdr_steps().items()},
             **{name: (data, step) for name, step in previous_steps().items()},
             **{name: (data, step) for name, step in compressors().items()}, **decompressors(data)}
    steps = {name: item for name, item in steps.items() if selected(name, only or [])}
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in steps}
    errors: dict[str, str] = {}
    for _ in range(max(1, repeat)):  # interleaved: load from other processes hits every step alike
        for name, (payload, step) in steps.items():
            if name in errors:
                continue
            try:
                runs[name].append(measure(step, payload))
            except Exception as error:  # noqa: BLE001 - a step broken by a pgdr change is reported, not fatal
                errors[name] = repr(error)[:200]
    rows: list[dict[str, object]] = []
    for name, (payload, _) in steps.items():
        if name in errors:
            rows.append({"step": name, "error": errors[name]})
            continue
        wall = statistics.median(item[0] for item in runs[name])
        cpu = statistics.median(item[1] for item in runs[name])
        produced = runs[name][0][2]
        compressing = name.startswith(("zlib level", "isal level", "zstd level", "pgdr make_compressor"))
        rows.append({"step": name, "input_mb": round(len(payload) / 1e6, 1), "wall_s": round(wall, 3),
                     "cpu_s": round(cpu, 3), "mb_per_s": round(len(data) / 1e6 / wall, 1) if wall else None,
                     "cpu_s_per_gb": round(cpu / len(data) * 1e9, 2) if data else None,
                     "cpu_s_per_gb_runs": [round(item[1] / len(data) * 1e9, 3) for item in runs[name]] if data
                     else [],
                     "ratio": round(len(data) / produced, 2) if compressing and produced else None})
    by_name = {str(row["step"]): row for row in rows if "error" not in row}
    for name, baseline in BASELINES.items():
        if name in by_name and baseline in by_name:
            baseline_cpu = statistics.median(item[1] for item in runs[baseline])
            if baseline_cpu > 0:
                by_name[name]["baseline"] = baseline
                by_name[name]["vs_previous"] = round(statistics.median(item[1] for item in runs[name]) / baseline_cpu,
                                                     2)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    sample_mb = next((row["input_mb"] for row in rows if row["step"] == "sha256"), 0)
    if not sample_mb:
        sample_mb = next((row["input_mb"] for row in rows if "input_mb" in row), 0)
    runs = max((len(row.get("cpu_s_per_gb_runs") or []) for row in rows), default=1)  # type: ignore[arg-type]
    lines = [f"Per-step cost in one process, on the first {sample_mb:.0f} MB of the dump "
             f"(speed and CPU per GB of uncompressed SQL{f'; median of {runs} runs' if runs > 1 else ''})",
             f"  {'step':<36} {'MB/s':>8} {'CPU s/GB':>9} {'ratio':>6} {'vs prev':>8}"]
    for row in rows:
        if "error" in row:
            lines.append(f"  {row['step']:<36} failed: {row['error']}")
            continue
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else ""
        versus = f"{row['vs_previous']:.2f}x" if row.get("vs_previous") else ""
        lines.append(f"  {row['step']:<36} {row['mb_per_s']:>8} {row['cpu_s_per_gb']:>9} {ratio:>6} {versus:>8}")
    return "\n".join(lines)


# --- hostile shapes (issue 11) -----------------------------------------------------------------------------------
MIB = 1024 * 1024
# shape -> (SQL before the body, the unit the body repeats, SQL after it): each body is one line, no newline
SHAPES: dict[str, tuple[bytes, bytes, bytes]] = {
    "COPY row": (b"SET standard_conforming_strings = on;\nCOPY public.blobs (id, data) FROM stdin;\n1\t\\\\x",
                 b"0123456789abcdef", b"\n\\.\n\n"),
    "COMMENT of '' pairs": (b"SET standard_conforming_strings = on;\nCOMMENT ON TABLE public.t IS '", b"''",
                            b"';\n\n"),
    "dollar-quoted body": (b"CREATE FUNCTION public.f() RETURNS text LANGUAGE sql AS $body$SELECT ",
                           b"'x' || \"y\" -- /* ; \\ $x ", b"$body$;\n\n"),
}
HOSTILE_CONSUMERS = ("previous line scanner", "pgdr DumpScanner", "previous GlobalsFilter", "pgdr GlobalsFilter")
# GlobalsFilter reads only the globals (before the first \connect), where pg_dumpall writes role settings and
# comments as strings but never a COPY: the COPY row goes to the scanners only (the new GlobalsFilter's lexer
# watches CREATE ROLE only, so it would not even see the COPY ... FROM stdin and would read the row as SQL).
SCANNERS_ONLY = {"COPY row"}
HOSTILE_TIMEOUT = 900


def hostile_stream(shape: str, size: int) -> Iterator[bytes]:
    """The shape with a body of `size` bytes, in 1 MiB chunks, made as it is read (the input costs ~1 MiB)."""
    head, unit, tail = SHAPES[shape]
    size -= size % len(unit)
    tile = unit * (CHUNK // len(unit) + 2)
    total = len(head) + size + len(tail)
    for start in range(0, total, CHUNK):
        end, pieces = min(start + CHUNK, total), []
        if start < len(head):
            pieces.append(head[start:end])
        body_start, body_end = max(start, len(head)) - len(head), min(end, len(head) + size) - len(head)
        if body_end > body_start:
            phase = body_start % len(unit)
            pieces.append(tile[phase : phase + body_end - body_start])
        tail_start = max(start, len(head) + size) - len(head) - size
        if end > len(head) + size:
            pieces.append(tail[tail_start : end - len(head) - size])
        yield b"".join(pieces)


def hostile_consumer(name: str) -> tuple[Any, Callable[[Any], str]]:
    """A fresh consumer, and what it found (a sanity check that it read the shape as a whole)."""
    if name.endswith("DumpScanner") or name.endswith("line scanner"):
        if name.startswith("previous"):
            import previous_dumpscan

            scanner: Any = previous_dumpscan.DumpScanner()
        else:
            from pgdr.dumpscan import DumpScanner

            scanner = DumpScanner()

        def found(done: Any) -> str:
            rows = sum(sum(counts.values()) for counts in done.tables.values())
            return f"rows {rows}, password {done.has_password}"

        return scanner, found
    if name.startswith("previous"):
        import previous_dumpscan

        return previous_dumpscan.GlobalsFilter("postgres"), lambda done: ""
    from pgdr.formats.psql_feed import GlobalsFilter

    return GlobalsFilter("postgres"), lambda done: ""


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def hostile_case(shape: str, megabytes: int, consumer_name: str) -> dict[str, object]:
    """One case, in this (fresh) process: time and peak RSS growth of feeding the shape to the consumer."""
    consumer, found = hostile_consumer(consumer_name)
    globals_filter = "GlobalsFilter" in consumer_name
    source = hostile_stream(shape, megabytes * MIB)
    gc.collect()
    try:  # reset VmHWM to the current RSS (Linux >= 4.0), so the peak is this case's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss_before = proc_status_kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    produced = 0
    for chunk in source:
        output = consumer.feed(chunk)
        produced += len(output) if globals_filter else 0
    finish = getattr(consumer, "finish", None)
    if callable(finish):
        produced += len(finish() or b"") if globals_filter else 0
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    peak = proc_status_kb("VmHWM")
    return {"shape": shape, "mb": megabytes, "consumer": consumer_name, "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3), "rss_growth_mb": round((peak - rss_before) / 1024, 1),
            "found": found(consumer) if not globals_filter else f"passed {produced / MIB:.1f} MiB"}


def run_hostile(sizes: list[int], log: Callable[[str], None]) -> list[dict[str, object]]:
    """Every shape x size x consumer, each case in a fresh interpreter (its RSS and heap are its own)."""
    rows: list[dict[str, object]] = []
    for shape in SHAPES:
        for megabytes in sizes:
            for consumer in consumers_of(shape):
                argv = [sys.executable, __file__, "--hostile-case", shape, str(megabytes), consumer]
                try:
                    completed = subprocess.run(argv, capture_output=True, text=True, timeout=HOSTILE_TIMEOUT,
                                               check=False)
                except subprocess.TimeoutExpired:
                    row: dict[str, object] = {"shape": shape, "mb": megabytes, "consumer": consumer,
                                              "error": f"timed out after {HOSTILE_TIMEOUT} s"}
                else:
                    row = json.loads(completed.stdout) if completed.returncode == 0 else {
                        "shape": shape, "mb": megabytes, "consumer": consumer, "error": completed.stderr[-300:]}
                rows.append(row)
                log(hostile_line(row))
    return rows


def consumers_of(shape: str) -> tuple[str, ...]:
    return tuple(name for name in HOSTILE_CONSUMERS if shape not in SCANNERS_ONLY or "GlobalsFilter" not in name)


def hostile_line(row: dict[str, object]) -> str:
    label = f"  {row['shape']:<20} {row['mb']:>4} MiB  {row['consumer']:<22}"
    if "error" in row:
        return f"{label} failed: {row['error']}"
    return (f"{label} {row['cpu_s']:>8.2f} {row['wall_s']:>8.2f} {row['rss_growth_mb']:>8.1f}  {row['found']}")


def growth(rows: list[dict[str, object]]) -> list[str]:
    """For each shape and consumer, the time ratio between consecutive sizes (linear: 2.0 per doubling)."""
    lines = []
    for shape in SHAPES:
        for consumer in consumers_of(shape):
            timed = sorted((int(row["mb"]), float(row["cpu_s"])) for row in rows  # type: ignore[arg-type]
                           if row["shape"] == shape and row["consumer"] == consumer and "error" not in row)
            ratios = [f"{big}/{small}: {cpu_big / cpu_small:.1f}x" for (small, cpu_small), (big, cpu_big)
                      in zip(timed, timed[1:], strict=False) if cpu_small > 0]
            if ratios:
                seconds = " / ".join(f"{cpu:.2f}" for _, cpu in timed)
                sizes = "/".join(str(mb) for mb, _ in timed)
                lines.append(f"  {shape:<20} {consumer:<22} {sizes} MiB: {seconds} CPU s; {', '.join(ratios)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path, nargs="?")
    parser.add_argument("--mb", type=int, default=256, help="how much of the dump to use (MB)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each step, interleaved; the median is shown")
    parser.add_argument("--steps", default="", help="only the steps whose names hold one of these words (a,b,...)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--hostile", action="store_true", help="the hostile shapes of issue 11 instead of a dump")
    parser.add_argument("--hostile-mb", default="32,64,128", help="body sizes of the hostile shapes, MiB")
    parser.add_argument("--hostile-case", nargs=3, metavar=("SHAPE", "MIB", "CONSUMER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hostile_case:
        shape, megabytes, consumer = args.hostile_case
        print(json.dumps(hostile_case(shape, int(megabytes), consumer)))
        return 0
    if args.hostile:
        quiet = args.json
        log: Callable[[str], None] = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
        log("Hostile shapes (issue 11): one line of N MiB fed in 1 MiB chunks, each case in a fresh process")
        log(f"  {'shape':<20} {'size':>8}  {'consumer':<22} {'CPU s':>8} {'wall s':>8} {'RSS +MB':>8}  found")
        rows = run_hostile([int(item) for item in args.hostile_mb.split(",") if item], log)
        if quiet:
            print(json.dumps(rows))
        else:
            print("\nGrowth with the size (CPU s; linear is 2.0x per doubling)")
            print("\n".join(growth(rows)))
        return 0
    if args.dump is None:
        parser.error("give a dump file, or --hostile")
    rows = run(args.dump, args.mb, args.repeat, [word for word in args.steps.split(",") if word])
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
