"""Finding and undoing one mistake measured (issue 16): `pgdr wal timeline` over the archived WAL against
pg_waldump alone, and `pgdr undo` of one table, step by step, against a whole `pgdr recover --to-xid`.

    python3 bench/undo.py --size 200MB --wal-size 300MB --rounds 1     # a quick look, a few minutes on 2 cores
    python3 bench/undo.py --size 1GB --wal-size 1GB --rounds 3         # the issue's figures

In one run, on one local-mode pgdr project filled by generate.py, with `pgdr wal stream` running: a physical base
backup, bulk INSERTs into a table of its own until --wal-size of WAL, a DELETE of 1 row in 10 of that table (the
mistake, in one transaction), then the streamer stops (everything archived).
1. **Reading the WAL**, rounds interleaved: pg_waldump alone over the same segments, decoded beforehand into a
   folder (the reference; `> /dev/null`), against `pgdr wal timeline --since 1d --json > /dev/null` (fetching,
   decoding, pg_waldump, naming). Wall time, CPU and peak RSS.
2. **Undo**: `pgdr undo <table> --before <xid>`, its steps timed from pgdr's own step lines (recover: check,
   extract, replay; copy: pg_dump; load: pg_restore), against `pgdr recover --to-xid <xid> --clean` of the whole
   cluster (last: it replaces the project's cluster).

It changes nothing outside its folder (/var/tmp/pgdr-bench-undo; --folder), stops every server it started, and
prints a summary; --output writes the JSON too. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clusters import Project, SetupFailed
from generate import generate, parse_size
from measure import Result, Stage, run_pipeline
from wal import PHYSICAL, SERVER, client_env, default_bin_dir, log, run_pgdr, server_lsn

TABLE = "pgdr_bench_orders"
UNDO_PHASES = [("check", "→ Checking"), ("extract", "→ Extracting"), ("replay", "→ Replaying"),
               ("copy (pg_dump)", "→ Copying"), ("load (pg_restore)", "→ Loading"), ("end", "✅")]
RECOVER_PHASES = [("check", "→ Checking"), ("extract", "→ Extracting"), ("replay", "→ Replaying"),
                  ("secrets, init, verify", "removed the data directory set aside"), ("end", "✅")]


def the_mistake(project: Project, wal_size: int) -> int:
    """Bulk INSERTs until wal_size bytes of WAL, then the DELETE; its xid."""
    first = server_lsn(project)
    with project.target.connect() as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute(f"CREATE TABLE {TABLE} (id bigint, filler text)")
        start = 0
        while server_lsn(project) < first + wal_size:
            connection.execute(f"INSERT INTO {TABLE} SELECT g, repeat(md5(g::text), 4) "
                               "FROM generate_series(%s::bigint, %s::bigint) g", (start + 1, start + 100_000))
            start += 100_000
        with connection.transaction():
            xid = int(connection.execute("SELECT txid_current()").fetchone()[0])
            connection.execute(f"DELETE FROM {TABLE} WHERE id % 10 = 0")
    return xid


def archive(project: Project, wal_size: int) -> int:
    with open(project.root / "stream.log", "wb") as stream_log:
        streamer = subprocess.Popen(project.argv("wal", "stream"), cwd=project.root,
                                    env=project.environment({**PHYSICAL, "PGDR_WAL__RPO_OBJECTIVE": "5s"}),
                                    stdout=stream_log, stderr=subprocess.STDOUT)
    try:
        while not (project.backups / "wal" / "status.json").exists():
            if streamer.poll() is not None:
                raise SetupFailed("pgdr wal stream ended:\n" + (project.root / "stream.log").read_text())
            time.sleep(0.2)
        project.pgdr("backup", env=PHYSICAL)
        return the_mistake(project, wal_size)
    finally:
        streamer.send_signal(signal.SIGTERM)
        streamer.wait(timeout=300)


def decoded_segments(project: Project, folder: Path) -> tuple[str, str]:
    """The archive's segments decoded into folder (for the reference), and the LSN range pgdr reads."""
    names = []
    for path in sorted((project.backups / "wal").glob("*.gz")):
        name = path.name.removesuffix(".gz")
        target = folder / name.removesuffix(".partial")
        with gzip.open(path) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        names.append(target.name)
    status = json.loads((project.backups / "wal" / "status.json").read_text())
    first = names[0]
    start = f"{int(first[8:16], 16):X}/{int(first[16:24], 16) * 0x1000000:X}"
    return start, status["stored_lsn"]


def case_waldump(project: Project, folder: Path, start: str, end: str) -> Result:
    argv = [str(project.bin_dir / "pg_waldump"), "--path", str(folder), "--start", start, "--end", end]
    return run_pipeline([Stage("pg_waldump", argv)], env=client_env(project), timeout=3600)


def case_timeline(project: Project) -> Result:
    return run_pgdr(project, ["wal", "timeline", "--since", "1d", "--json"], PHYSICAL, "pg_waldump (children)")


def phases(result: Result, marks: list[tuple[str, str]]) -> dict[str, float]:
    times = [next((at for at, line in result.lines if prefix in line), None) for _, prefix in marks]
    return {name: round(end - start, 1) for (name, _), start, end in zip(marks, times, times[1:], strict=False)
            if start is not None and end is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default="200MB")
    parser.add_argument("--wal-size", type=parse_size, default="300MB")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--folder", type=Path, default=Path("/var/tmp/pgdr-bench-undo"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    shutil.rmtree(args.folder, ignore_errors=True)
    args.folder.mkdir(parents=True)
    args.folder.chmod(0o755)
    project = Project.open(args.folder / "project", args.bin_dir or default_bin_dir(), args.folder / "backups",
                           reuse=False)
    results: dict[str, object] = {}
    try:
        project.pgdr("up")
        project.pgdr("init")
        log(f"Generating {args.size / 1e6:.0f} MB, then {args.wal_size / 1e6:.0f} MB of WAL and the mistake")
        generate(project.target, args.size, log=lambda message: None)
        xid = archive(project, args.wal_size)
        with tempfile.TemporaryDirectory(prefix="pgdr-bench-waldump-", dir=args.folder) as scratch:
            start, end = decoded_segments(project, Path(scratch))
            reading: dict[str, list[Result]] = {"pg_waldump > /dev/null": [], "pgdr wal timeline --json": []}
            for index in range(args.rounds):
                cases = [("pg_waldump > /dev/null", lambda: case_waldump(project, Path(scratch), start, end)),
                         ("pgdr wal timeline --json", lambda: case_timeline(project))]
                for name, case in cases[index % 2:] + cases[:index % 2]:
                    reading[name].append(case())
                    log(f"  round {index + 1}: {name}: {reading[name][-1].wall_s:.1f} s")
        results["reading"] = {name: {"wall_s": statistics.median(result.wall_s for result in found),
                                     "peak_rss_mb": max(max(result.peak_rss_mb.values()) for result in found),
                                     "cpu_s": statistics.median(result.our_cpu_s for result in found)}
                              for name, found in reading.items()}
        log("Undo of one table, then a whole recovery to the same point")
        undone = run_pgdr(project, ["undo", TABLE, "--before", str(xid), "--database", "postgres"], PHYSICAL,
                          "children")
        results["undo"] = {"wall_s": round(undone.wall_s, 1), "phases_s": phases(undone, UNDO_PHASES)}
        recovered = run_pgdr(project, ["recover", "--to-xid", str(xid), "--clean", "--yes"], PHYSICAL, "children")
        results["recover"] = {"wall_s": round(recovered.wall_s, 1), "phases_s": phases(recovered, RECOVER_PHASES)}
        results["server"] = SERVER
    finally:
        project.stop()
    log("\n" + json.dumps(results, indent=2))
    reading_figures = results.get("reading", {})
    if isinstance(reading_figures, dict) and len(reading_figures) == 2:
        raw, ours = (figures["wall_s"] for figures in reading_figures.values())
        log(f"wal timeline / pg_waldump alone: {ours / raw:.2f}x")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
