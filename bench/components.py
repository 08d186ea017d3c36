"""What each in-process step of pgdr's streams costs, alone, on the real dump: the numbers behind a bottleneck.

    python3 bench/components.py DUMP.sql [--mb 256] [--repeat 3] [--steps scanner,globals]
    python3 bench/components.py DUMP.sql --loops [--rounds 3] [--mb 128] [--folder /var/tmp/pgdr-components]
    python3 bench/components.py --hostile [--hostile-mb 32,64,128]

Reads the first MB of a plain pg_dumpall file into memory, then pushes it through each step in 1 MiB chunks, one
step at a time, in this process: sha256, pgdr's DumpScanner (feed and finish, the psql-exact lexer of issue 11),
pgdr's GlobalsFilter, the same two steps as they were before issue 11 (bench/previous_dumpscan.py, the line
scanner, measured as the baseline only), the compressors (pgdr's defaults and the levels around them) and the
decompressors. CPU time includes every thread (zstd's workers too). With --repeat, the steps run that many times,
interleaved, and the median is shown. A step with a baseline shows its CPU cost as a multiple of the baseline's
("vs prev"). Prints a table and, with --json, the figures as JSON. Steps whose pgdr API is missing are skipped.

--loops (issue 17) measures pgdr's own CPU per GB of SQL: its whole backup loop (`cat DUMP` through the lexer, the
encoder and a local upload with its fsync; gzip, zstd, none) and restore loop (the check pass, then decode and the
globals filter into `dd`, standing for psql; gzip, none), in this process with getrusage (every thread of pgdr's,
no child's), with user and system time and minor page faults; the bytes alone (pipe -> file, file -> pipe); each
component in the loops' shapes (compress, hash, scan, decompress, filter); and what each guarantee costs apart
(checksums, lexer, durability). The same script measures an older source tree put first on PYTHONPATH.

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


# --- whole loops and components (issue 17) -----------------------------------------------------------------------
# The backup loop as pgdr runs it (a pipe from a process, the lexer on this thread, compress + sha256 + write on the
# worker, fsync at commit) and the restore's (sha256 check pass, then decode, the globals filter and writes into a
# pipe), in this process: getrusage(RUSAGE_SELF) counts every thread of pgdr's and none of the child's (`cat`, or
# `dd` standing for psql). Minor page faults show the price of memory kept flat by fresh buffers (pgdr.memory).
LOOP_BACKUPS = ("gzip", "zstd", "none")
LOOP_RESTORES = ("gzip", "none")
SUFFIXES = {"gzip": ".gz", "zstd": ".zst", "none": ""}


def rusage() -> dict[str, float]:
    import resource

    data = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_s": data.ru_utime, "system_s": data.ru_stime, "minor_faults": data.ru_minflt,
            "wall_s": time.perf_counter()}


def since(before: dict[str, float]) -> dict[str, float]:
    after = rusage()
    return {name: after[name] - before[name] for name in before}


def backup_loop_function() -> tuple[str, Callable[..., int]]:
    """pgdr's backup loop: read_and_consume (issue 17: pooled buffers) when present, else the loop before it (new
    bytes per read, joined into 1 MiB chunks), so this script measures either source tree."""
    try:
        from pgdr.streams.buffers import read_and_consume

        return "pooled buffers (read_and_consume)", lambda process, consume, feed: read_and_consume(
            process.read_into, consume, feed)
    except ImportError:
        from pgdr.formats.plain import gathered
        from pgdr.streams.handoff import Handoff

        def previous(process: Any, consume: Callable[[bytes], None], feed: Callable[[bytes], None]) -> int:
            size = 0
            with Handoff(consume, name="pgdr-compress") as handoff:
                for chunk in gathered(process):
                    size += len(chunk)
                    handoff.put(chunk)
                    feed(chunk)
            return size

        return "new bytes per read (gathered)", previous


def backup_loop(dump: Path, compression: str, folder: Path, durable: bool = True) -> dict[str, object]:
    """`cat DUMP` through pgdr's backup loop (lexer, compress, sha256, write) into folder/bench.sql<suffix>, then
    the commit (fsync, rename, fsync of the folder); the file is kept for restore_loop.

    durable=False: the same without what makes the file durable when pgdr says it is: no writeback started every
    16 MiB (LocalUpload), no fsync; the kernel's flusher thread then writes the file later, on its own CPU time."""
    import pgdr.storage.local as local
    from pgdr.dumpscan import DumpScanner
    from pgdr.run import stream
    from pgdr.streams import Codec
    from pgdr.streams.encoder import Encoder

    design, loop = backup_loop_function()
    storage, key = local.LocalStorage(folder), f"bench.sql{SUFFIXES[compression]}"
    storage.delete(key)  # outside the measurement: dropping the last run's file costs system time too
    scanner = DumpScanner()
    writeback_every = local.WRITEBACK_EVERY
    local.WRITEBACK_EVERY = writeback_every if durable else 1 << 62
    before = rusage()
    upload = storage.open_upload(key)
    try:
        with Encoder(upload.write, Codec(compression)) as encoder, stream(["cat", str(dump)], stage="cat",
                                                                           direction="read") as process:
            size = loop(process, encoder.write, scanner.feed)
    finally:
        local.WRITEBACK_EVERY = writeback_every
    scanner.finish()
    commit_start = rusage()
    if durable:
        upload.commit()
    else:
        upload._file.close()  # type: ignore[union-attr]
        upload.partial_path.replace(upload.final_path)
    commit = since(commit_start)
    total = since(before)
    return {"loop": f"backup {compression}" + ("" if durable else ", not durable"), "design": design,
            "sql_bytes": size, "stored_bytes": encoder.size, **rounded(total, size),
            "fsync_wall_s": round(commit["wall_s"], 3), "fsync_cpu_s": round(commit["user_s"] + commit["system_s"], 3),
            "complete": scanner.complete}


def copy_loop(dump: Path, folder: Path) -> dict[str, object]:
    """The backup loop's bytes alone: `cat DUMP` read into the loop's buffers and written to a file, no lexer, no
    compression, no hash, no fsync: the pipe reads, the handoff and the writes (copies and system calls)."""
    from pgdr.run import stream

    design, loop = backup_loop_function()
    target = folder / "copy.sql"
    target.unlink(missing_ok=True)
    before = rusage()
    with open(target, "wb") as handle, stream(["cat", str(dump)], stage="cat", direction="read") as process:
        size = loop(process, handle.write, lambda chunk: None)
    total = since(before)
    target.unlink()
    return {"loop": "backup copy only (pipe -> file)", "design": design, "sql_bytes": size, **rounded(total, size)}


def rounded(usage: dict[str, float], sql_bytes: int) -> dict[str, object]:
    cpu = usage["user_s"] + usage["system_s"]
    return {"user_s": round(usage["user_s"], 3), "system_s": round(usage["system_s"], 3), "cpu_s": round(cpu, 3),
            "wall_s": round(usage["wall_s"], 3), "cpu_s_per_gb": round(cpu / sql_bytes * 1e9, 2) if sql_bytes else None,
            "minor_faults_per_mb": round(usage["minor_faults"] / (sql_bytes / 1e6), 1) if sql_bytes else None}


def restore_loop(stored: Path, compression: str) -> dict[str, object]:
    """pgdr's restore of one plain stream: the check pass (sha256 of the stored file), then the file decoded,
    through the globals filter, into a pipe (`dd of=/dev/null` standing for psql)."""
    from pgdr.formats.plain import _read_all
    from pgdr.formats.psql_feed import GlobalsFilter
    from pgdr.run import stream
    from pgdr.streams import Codec
    from pgdr.streams.decoder import Tally, decoded

    before = rusage()
    tally = Tally()
    with open(stored, "rb") as handle:
        _read_all(handle, tally)
    check = since(before)
    size = 0
    globals_filter = GlobalsFilter("postgres")
    with open(stored, "rb") as handle, decoded(handle, Codec(compression), None, "bench") as chunks, stream(
            ["dd", "of=/dev/null", "bs=1M", "status=none"], stage="dd", direction="write") as sink:
        for chunk in chunks:
            size += len(chunk)
            sink.write(globals_filter.feed(chunk))
        sink.write(globals_filter.finish())
    total = since(before)
    return {"loop": f"restore {compression}", "design": "", "sql_bytes": size, "stored_bytes": tally.size,
            **rounded(total, size), "check_cpu_s": round(check["user_s"] + check["system_s"], 3)}


def restore_copy_loop(stored: Path) -> dict[str, object]:
    """The restore loop's bytes alone: an uncompressed backup read in pgdr's chunks and written into a pipe, no
    check pass, no filter (copies and system calls)."""
    from pgdr.run import stream
    from pgdr.streams import Codec
    from pgdr.streams.decoder import decoded

    before = rusage()
    size = 0
    with open(stored, "rb") as handle, decoded(handle, Codec("none"), None, "bench") as chunks, stream(
            ["dd", "of=/dev/null", "bs=1M", "status=none"], stage="dd", direction="write") as sink:
        for chunk in chunks:
            size += len(chunk)
            sink.write(chunk)
    return {"loop": "restore copy only (file -> pipe)", "design": "", "sql_bytes": size,
            **rounded(since(before), size)}


def views(data: bytes, size: int = CHUNK) -> Iterator[memoryview]:
    """data in the loops' chunks, without copies (the pooled buffers of the backup loop hold them the same way)."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield view[start : start + size]


def piecewise() -> Callable[[memoryview], Iterator[memoryview]]:
    """How the encoder cuts a chunk (pgdr.streams.buffers.pieces), or whole chunks in a tree without it."""
    try:
        from pgdr.streams.buffers import pieces

        return pieces
    except ImportError:
        return whole_chunks


def whole_chunks(chunk: memoryview) -> Iterator[memoryview]:
    return iter([chunk])


def issue17_components(data: bytes) -> list[tuple[str, str, Callable[[], object]]]:
    """(component, guarantee it pays for, the work) on the sample in memory, in the shapes the loops use: the
    backup's 1 MiB chunks (the encoder compresses them in pieces), the restore's decoder output."""
    import io

    from pgdr.dumpscan import DumpScanner
    from pgdr.formats.psql_feed import GlobalsFilter
    from pgdr.streams import Codec
    from pgdr.streams.compression import make_compressor
    from pgdr.streams.decoder import decoded

    cut = piecewise()

    def compress(compression: str) -> bytes:
        compressor, output = make_compressor(compression), []
        for chunk in views(data):
            output.extend(bytes(compressor.compress(piece)) for piece in cut(chunk))
        return b"".join([*output, compressor.flush()])

    stored = {name: compress(name) for name in ("gzip", "zstd")} | {"none": data}

    def compressing(compression: str) -> Callable[[], object]:
        def work() -> None:
            compressor = make_compressor(compression)
            for chunk in views(data):
                for piece in cut(chunk):
                    compressor.compress(piece)
            compressor.flush()

        return work

    def hashing(payload: bytes) -> Callable[[], object]:
        return lambda: [hashlib.sha256(chunk) for chunk in views(payload)]

    as_fed = (lambda chunk: chunk) if cut is not whole_chunks else bytes  # before issue 17 the lexer took bytes

    def scanning() -> None:
        scanner = DumpScanner()
        for chunk in views(data):
            scanner.feed(as_fed(chunk))
        scanner.finish()

    def decompressing(compression: str) -> Callable[[], object]:
        def work() -> None:
            with decoded(io.BytesIO(stored[compression]), Codec(compression), None, "bench") as chunks:
                for _ in chunks:
                    pass

        return work

    def filtering() -> None:
        globals_filter = GlobalsFilter("postgres")
        with decoded(io.BytesIO(data), Codec("none"), None, "bench") as chunks:
            for chunk in chunks:
                globals_filter.feed(chunk)
        globals_filter.finish()

    ratio = {name: len(data) / len(payload) for name, payload in stored.items() if payload}
    return [
        ("compress gzip", "", compressing("gzip")),
        ("compress zstd", "", compressing("zstd")),
        (f"hash: sha256 of the gzip file ({ratio['gzip']:.2f}x smaller)", "checksums", hashing(stored["gzip"])),
        ("hash: sha256 of the SQL (compression none)", "checksums", hashing(data)),
        ("scan: DumpScanner (row counts, end marker, sections)", "lexer", scanning),
        ("decompress gzip (pgdr decoder)", "", decompressing("gzip")),
        ("decompress zstd (pgdr decoder)", "", decompressing("zstd")),
        ("read none (pgdr decoder: its copies)", "", decompressing("none")),
        ("filter: GlobalsFilter, decoder included", "", filtering),
    ]


def run_components(dump: Path, megabytes: int, rounds: int, log: Callable[[str], None]) -> list[dict[str, object]]:
    """Each component `rounds` times, interleaved, on the first MB of the dump; CPU s per GB of SQL."""
    with open(dump, "rb") as handle:
        data = handle.read(megabytes * 1000**2)
    work = issue17_components(data)
    runs: dict[str, list[float]] = {name: [] for name, _, _ in work}
    for _ in range(max(1, rounds)):
        for name, _, step in work:
            cpu = time.process_time()
            step()
            runs[name].append(time.process_time() - cpu)
    rows: list[dict[str, object]] = []
    for name, guarantee, _ in work:
        rows.append({"component": name, "guarantee": guarantee, "input_mb": round(len(data) / 1e6, 1),
                     "cpu_s_per_gb": round(statistics.median(runs[name]) / len(data) * 1e9, 3),
                     "cpu_s_per_gb_runs": [round(cpu / len(data) * 1e9, 3) for cpu in runs[name]]})
        log(f"  {name:<58} {rows[-1]['cpu_s_per_gb']:>6} CPU s/GB")
    return rows


def components_table(rows: list[dict[str, object]]) -> str:
    lines = ["Components in one process, in the loops' shapes: CPU s per GB of SQL (median of runs)",
             f"  {'component':<58} {'CPU s/GB':>9}  guarantee"]
    lines += [f"  {row['component']:<58} {row['cpu_s_per_gb']:>9}  {row['guarantee']}" for row in rows]
    return "\n".join(lines)


def guarantees_table(parts: list[dict[str, object]], loops: list[dict[str, object]]) -> str:
    """What each guarantee costs, apart (issue 17, item 6: the hidden cost of guarantees stays visible)."""

    def median(rows: list[dict[str, object]], field: str) -> float:
        values = [float(row[field]) for row in rows if row.get(field) is not None]  # type: ignore[arg-type]
        return statistics.median(values) if values else float("nan")

    def part(word: str) -> float:
        return median([row for row in parts if word in str(row["component"])], "cpu_s_per_gb")

    restores = [row for row in loops if str(row["loop"]).startswith("restore ") and "check_cpu_s" in row]
    backups = [row for row in loops if "fsync_wall_s" in row and "not durable" not in str(row["loop"])]
    durable = median([row for row in loops if row["loop"] == "backup none"], "cpu_s_per_gb")
    not_durable = median([row for row in loops if row["loop"] == "backup none, not durable"], "cpu_s_per_gb")
    check = median([{"x": float(row["check_cpu_s"]) / float(row["sql_bytes"]) * 1e9}  # type: ignore[arg-type]
                    for row in restores if row["loop"] == "restore none"], "x")
    lines = ["The cost of each guarantee, apart (CPU s per GB of SQL unless said)",
             f"  {'checksums: sha256 while a gzip backup is written':<66} {part('sha256 of the gzip'):>7.3f}",
             f"  {'checksums: sha256 while an uncompressed backup is written':<66} {part('sha256 of the SQL'):>7.3f}",
             f"  {'checksums: the restore check pass (read + sha256, uncompressed)':<66} {check:>7.3f}",
             f"  {'lexer: DumpScanner on every backup (rows, end marker, proof)':<66} {part('DumpScanner'):>7.3f}",
             f"  {'durability: writeback every 16 MiB + fsync (backup none, loop diff.)':<66} "
             f"{durable - not_durable:>7.3f}",
             f"  {'fsync at commit: CPU s per backup (median)':<66} {median(backups, 'fsync_cpu_s'):>7.3f}",
             f"  {'fsync at commit: wall s per backup (median; writeback started early)':<66} "
             f"{median(backups, 'fsync_wall_s'):>7.3f}"]
    return "\n".join(lines)


def use_pgdr_memory_settings(mmap_threshold: int = 0) -> None:
    """pgdr's malloc settings (pgdr.memory), set before anything large is allocated, as pgdr's CLI does: once the
    heap has grown, malloc serves large requests from it whatever the threshold, and the loops would not pay what
    pgdr pays. mmap_threshold: another threshold (the design that keeps freed buffers in the heap instead)."""
    from pgdr.memory import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()
    if mmap_threshold:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD


def run_loops(dump: Path, folder: Path, rounds: int, log: Callable[[str], None]) -> list[dict[str, object]]:
    """Each loop `rounds` times, interleaved; every run is a row (the table shows medians)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for _ in range(max(1, rounds)):
        for compression in LOOP_BACKUPS:
            rows.append(backup_loop(dump, compression, folder))
            log(loop_line(rows[-1]))
        rows.append(backup_loop(dump, "none", folder, durable=False))
        log(loop_line(rows[-1]))
        rows.append(copy_loop(dump, folder))
        log(loop_line(rows[-1]))
        for compression in LOOP_RESTORES:
            rows.append(restore_loop(folder / f"bench.sql{SUFFIXES[compression]}", compression))
            log(loop_line(rows[-1]))
        rows.append(restore_copy_loop(folder / "bench.sql"))
        log(loop_line(rows[-1]))
    for compression in LOOP_BACKUPS:
        (folder / f"bench.sql{SUFFIXES[compression]}").unlink(missing_ok=True)
    return rows


def loop_line(row: dict[str, object]) -> str:
    extra = f"  fsync {row['fsync_wall_s']} s wall" if "fsync_wall_s" in row else ""
    return (f"  {row['loop']:<32} {row['cpu_s_per_gb']:>6} CPU s/GB (user {row['user_s']}, sys {row['system_s']}, "
            f"wall {row['wall_s']}) {row['minor_faults_per_mb']:>7} faults/MB{extra}")


def loops_table(rows: list[dict[str, object]]) -> str:
    names = list(dict.fromkeys(str(row["loop"]) for row in rows))
    design = next((row["design"] for row in rows if row["design"]), "")
    lines = [f"Whole loops in one process, pgdr's own CPU per GB of SQL (median of runs; backup loop: {design})",
             f"  {'loop':<32} {'CPU s/GB':>9} {'user s':>7} {'sys s':>7} {'faults/MB':>10} {'runs':>5}"]
    for name in names:
        runs = [row for row in rows if row["loop"] == name]

        def median(field: str, of: list[dict[str, object]] = runs) -> float:
            return statistics.median(float(row[field]) for row in of)  # type: ignore[arg-type]

        lines.append(f"  {name:<32} {median('cpu_s_per_gb'):>9.2f} {median('user_s'):>7.2f} "
                     f"{median('system_s'):>7.2f} {median('minor_faults_per_mb'):>10.1f} {len(runs):>5}")
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
    parser.add_argument("--loops", action="store_true",
                        help="the whole backup and restore loops on the dump (issue 17), with --rounds runs each")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each loop, interleaved (--loops)")
    parser.add_argument("--folder", type=Path, default=Path("/var/tmp/pgdr-components"),
                        help="where --loops writes its backups (deleted at the end)")
    parser.add_argument("--mmap-threshold", type=int, default=0, help=argparse.SUPPRESS)
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
    if args.loops:
        log = (lambda line: None) if args.json else (lambda line: print(line, flush=True))
        use_pgdr_memory_settings(args.mmap_threshold)  # first, as pgdr's CLI: malloc's state depends on history
        loops = run_loops(args.dump, args.folder, args.rounds, log)
        parts = run_components(args.dump, args.mb, args.rounds, log)
        if args.json:
            print(json.dumps({"components": parts, "loops": loops}))
        else:
            print("\n\n".join(["", components_table(parts), loops_table(loops), guarantees_table(parts, loops)]))
        return 0
    rows = run(args.dump, args.mb, args.repeat, [word for word in args.steps.split(",") if word])
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
