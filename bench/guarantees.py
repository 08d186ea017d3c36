"""What each guarantee of a backup costs (issue 17, item 6): the checksum, the psql-exact lexer, the fsync.

    python3 bench/guarantees.py SAMPLE.sql --dir /var/tmp/pgdr-bench/backups [--repeat 3]

The checksum (sha256 of the stored bytes) and the lexer (DumpScanner on the backup's SQL; GlobalsFilter on the
restore's) are bench/components.py's per-step figures, taken from its rows: CPU s per GB they read. The fsync is
measured here, in a fresh process: the same bytes written in 1 MiB chunks through pgdr's own LocalUpload (early
writeback every 16 MiB, fsync of the file and of its folder at commit) and through a plain file that is closed
without either; the difference is what durability costs, in CPU and wall seconds per GB written. Runs alternate,
with `sync` before each, and the median is kept. None of these can be switched off in pgdr: they are measured
apart instead. A backup stores compressed bytes, so the checksum and the fsync are also given per GB of SQL at
the gzip backup's ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHUNK = 1024 * 1024
TIMEOUT = 900
MAX_MB = 512


def timed_write(sample: Path, target: Path, durable: bool) -> dict[str, float]:
    """Write the sample to target in 1 MiB chunks: through LocalUpload (durable) or a plain file; CPU and wall."""
    from pgdr.storage.local import LocalUpload

    data = sample.read_bytes()[: MAX_MB * 1000**2]
    subprocess.run(["sync"], check=False)
    wall, cpu = time.perf_counter(), time.process_time()
    view = memoryview(data)
    if durable:
        upload = LocalUpload(target)
        for start in range(0, len(data), CHUNK):
            upload.write(bytes(view[start : start + CHUNK]))
        written_wall, written_cpu = time.perf_counter(), time.process_time()
        upload.commit()
    else:
        with open(target, "wb") as handle:
            for start in range(0, len(data), CHUNK):
                handle.write(bytes(view[start : start + CHUNK]))
            written_wall, written_cpu = time.perf_counter(), time.process_time()
    done_wall, done_cpu = time.perf_counter(), time.process_time()
    target.unlink()
    return {"bytes": len(data), "wall_s": done_wall - wall, "cpu_s": done_cpu - cpu,
            "commit_wall_s": done_wall - written_wall, "commit_cpu_s": done_cpu - written_cpu}


def fsync_cost(sample: Path, folder: Path, repeat: int = 3) -> dict[str, float]:
    """Durable (LocalUpload) against plain writes of the sample, each in a fresh process, alternating: medians."""
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(max(1, repeat)):
        for durable in (True, False):
            argv = [sys.executable, __file__, str(sample), "--dir", str(folder), "--one", "durable" if durable
                    else "plain"]
            completed = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
            if completed.returncode != 0:
                raise RuntimeError(f"guarantees.py --one failed: {completed.stderr[-500:]}")
            runs[durable].append(json.loads(completed.stdout))
    safe = {name: statistics.median(run[name] for run in runs[True]) for name in runs[True][0]}
    plain = {name: statistics.median(run[name] for run in runs[False]) for name in runs[False][0]}
    gigabytes = safe["bytes"] / 1e9
    return {"written_mb": round(safe["bytes"] / 1e6, 1), "runs": max(1, repeat),
            "durable_wall_s_per_gb": round(safe["wall_s"] / gigabytes, 3),
            "plain_wall_s_per_gb": round(plain["wall_s"] / gigabytes, 3),
            "durable_cpu_s_per_gb": round(safe["cpu_s"] / gigabytes, 3),
            "plain_cpu_s_per_gb": round(plain["cpu_s"] / gigabytes, 3),
            "fsync_wall_s_per_gb": round((safe["wall_s"] - plain["wall_s"]) / gigabytes, 3),
            "fsync_cpu_s_per_gb": round((safe["cpu_s"] - plain["cpu_s"]) / gigabytes, 3),
            "commit_wall_s": round(safe["commit_wall_s"], 3)}


def step(rows: list[dict[str, object]], *words: str) -> dict[str, object] | None:
    """The first components.py row whose step name holds every word (names may gain detail over time)."""
    return next((row for row in rows if "error" not in row and all(word in str(row["step"]) for word in words)),
                None)


def table(components: list[dict[str, object]], fsync: dict[str, float] | None, stored_share: float | None
          ) -> list[dict[str, object]]:
    """One row per guarantee: CPU s per GB it reads or writes, and per GB of SQL (stored_share: stored bytes per
    byte of SQL, the gzip backup's output over the dump)."""
    rows: list[dict[str, object]] = []

    def add(guarantee: str, source: str, per_gb: float | None, per_sql: float | None, wall: float | None = None
            ) -> None:
        if per_gb is not None:
            rows.append({"guarantee": guarantee, "measured_by": source, "cpu_s_per_gb": round(per_gb, 3),
                         "cpu_s_per_gb_of_sql": None if per_sql is None else round(per_sql, 3),
                         "wall_s_per_gb": None if wall is None else round(wall, 3)})

    sha = step(components, "sha256")
    if sha and isinstance(sha.get("cpu_s_per_gb"), float | int):
        per_gb = float(sha["cpu_s_per_gb"])  # type: ignore[arg-type]
        add("checksum (sha256 of the stored bytes)", "components.py sha256", per_gb,
            per_gb * stored_share if stored_share else None)
    for words, guarantee in ((("pgdr", "DumpScanner"), "lexer, backup (DumpScanner: rows, end marker, sections)"),
                             (("pgdr", "GlobalsFilter"), "lexer, restore (GlobalsFilter on the globals)")):
        row = step(components, *words)
        if row and isinstance(row.get("cpu_s_per_gb"), float | int):
            per_gb = float(row["cpu_s_per_gb"])  # type: ignore[arg-type]
            add(guarantee, f"components.py {row['step']}", per_gb, per_gb)
    if fsync:
        add("fsync (LocalUpload: writeback + fsync at commit)", "guarantees.py, durable - plain write",
            fsync["fsync_cpu_s_per_gb"], fsync["fsync_cpu_s_per_gb"] * stored_share if stored_share else None,
            fsync["fsync_wall_s_per_gb"])
    return rows


def text(rows: list[dict[str, object]]) -> str:
    def number(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float | int) else "-"

    lines = ["Each guarantee's cost (issue 17): CPU s per GB it handles / per GB of SQL (backup at the gzip ratio); "
             "wall s per GB for the fsync",
             f"  {'guarantee':<56} {'CPU s/GB':>9} {'per GB SQL':>11} {'wall s/GB':>10}  measured by"]
    for row in rows:
        lines.append(f"  {row['guarantee']:<56} {number(row['cpu_s_per_gb']):>9} "
                     f"{number(row['cpu_s_per_gb_of_sql']):>11} {number(row['wall_s_per_gb']):>10}  "
                     f"{row['measured_by']}")
    if len(lines) == 2:
        lines.append("  (nothing measured: components.py skipped or failed)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sample", type=Path, help="the bytes to write (e.g. the first MB of a dump)")
    parser.add_argument("--dir", type=Path, required=True, help="folder written to (the backups' disk)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", choices=("durable", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    target = args.dir / f"guarantees-{os.getpid()}.bin"
    if args.one:
        print(json.dumps(timed_write(args.sample, target, args.one == "durable")))
        return 0
    print(json.dumps(fsync_cost(args.sample, args.dir, args.repeat), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
