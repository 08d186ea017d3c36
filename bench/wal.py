"""Point-in-time recovery measured (issue 15): base backups, the WAL stream under load, a recovery timed apart.

    python3 bench/wal.py --size 200MB --wal-size 300MB --rounds 1    # a quick look, about 4 minutes on 2 cores
    python3 bench/wal.py --size 1GB --wal-size 1GB --rounds 3        # the issue's figures

In one run, on one local-mode pgdr project filled by generate.py:
1. **Base backup**, rounds interleaved: raw `pg_basebackup -Ft -D - -X fetch --checkpoint=fast > /dev/null` (the
   reference) against `pgdr backup` with `backup.format = "physical"` (gzip), wall time, CPU and peak RSS, ratio.
2. **The stream under load**: `pgdr wal stream` (under rusage_run.py) while pgbench writes at full speed on every
   core for --load-seconds (synchronous_commit off: no commit waits for the disk), then while bulk INSERTs write
   WAL as fast as one session can until --wal-size of WAL was written in all (the WAL step 3 replays). Every
   second: the server's WAL position and the local target's wal/status.json; per load the WAL generated (MB/s),
   how long storage took to hold all of it after, and the RPO (now - caught_up_at) p50/p99/max against
   wal.rpo_objective; then the streamer's CPU and peak RSS.
3. **Recovery** of everything (`pgdr recover --clean`, no target): the base backup checked, extracted, verified,
   then the WAL written under load replayed, each phase timed from pgdr's own step lines.

It changes nothing outside its folder (/var/tmp/pgdr-bench-wal; --folder), stops every server it started, and
prints a summary; --output writes the JSON too. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from clusters import SUPERUSER_PASSWORD, Project, SetupFailed
from generate import generate, parse_size
from measure import Result, Stage, run_pipeline

SERVER = "postgres (server)"
PHYSICAL = {"PGDR_BACKUP__FORMAT": "physical"}
FULL_SPEED = "-c synchronous_commit=off"  # commits do not wait for the disk: the WAL comes as fast as 2 cores write it


def log(message: str) -> None:
    print(message, flush=True)


def default_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"),
                   key=lambda path: int(path.parent.parent.name))
    if not found:
        raise SystemExit("no /usr/lib/postgresql/*/bin: pass --bin-dir")
    return found[-1].parent


def parse_seconds(text: str) -> float:
    return float(text[:-1]) * {"s": 1, "m": 60}[text[-1]] if text[-1] in "sm" else float(text)


def client_env(project: Project) -> dict[str, str]:
    return project.environment({"PGHOST": "127.0.0.1", "PGPORT": str(project.port), "PGUSER": "postgres",
                                "PGPASSWORD": SUPERUSER_PASSWORD, "LC_ALL": "C"})


def server_lsn(project: Project) -> int:
    with project.target.connect() as connection:
        text = connection.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def run_pgdr(project: Project, args: list[str], env: dict[str, str], children: str) -> Result:
    with tempfile.TemporaryDirectory(prefix="pgdr-bench-rusage-") as scratch:
        rusage = Path(scratch) / "rusage.json"
        stage = Stage("pgdr", project.argv(*args, rusage_file=rusage), rusage, children)
        return run_pipeline([stage], env=project.environment(env), timeout=3600, cwd=project.root,
                            capture_output=True, servers={SERVER: project.pid()})


def case_raw_basebackup(project: Project) -> Result:
    argv = [str(project.bin_dir / "pg_basebackup"), "--pgdata=-", "--format=tar", "--wal-method=fetch",
            "--checkpoint=fast", "--no-password"]
    return run_pipeline([Stage("pg_basebackup", argv)], env=client_env(project), timeout=3600,
                        servers={SERVER: project.pid()})


def case_pgdr_basebackup(project: Project) -> Result:
    result = run_pgdr(project, ["backup"], PHYSICAL, "pg_basebackup (child)")
    manifests = sorted(project.backups.rglob("*.base.tar.gz.manifest.json"), key=lambda path: path.stat().st_mtime)
    manifest = json.loads(manifests[-1].read_text())
    result.output_bytes, result.extra["uncompressed_bytes"] = manifest["size"], manifest["uncompressed_size"]
    return result


def base_backups(project: Project, rounds: int) -> dict[str, list[Result]]:
    results: dict[str, list[Result]] = {"raw pg_basebackup > /dev/null": [], "pgdr backup (physical, gzip)": []}
    cases = list(zip(results, (case_raw_basebackup, case_pgdr_basebackup), strict=True))
    for index in range(rounds):
        for name, case in cases[index % 2:] + cases[:index % 2]:  # interleaved, the order alternating
            subprocess.run(["sync"], check=False)
            results[name].append(case(project))
            log(f"  round {index + 1}: {name}: {results[name][-1].wall_s:.1f} s")
    return results


class StatusSampler(threading.Thread):
    """Every second: (monotonic time, server LSN, stored LSN, RPO seconds) from the server and wal/status.json."""

    def __init__(self, project: Project) -> None:
        super().__init__(daemon=True)
        self.project, self.samples, self.stop_event = project, list[tuple[float, int, int, float]](), threading.Event()

    def run(self) -> None:
        status = self.project.backups / "wal" / "status.json"
        while not self.stop_event.wait(1.0):
            try:
                data = json.loads(status.read_text())
                lsn = server_lsn(self.project)
            except (OSError, ValueError):
                continue
            now = time.time()
            caught_up = _epoch(data["caught_up_at"])
            self.samples.append((time.monotonic(), lsn, parse_lsn(data["stored_lsn"]), now - caught_up))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def stream_under_load(project: Project, seconds: float, rpo: str, wal_size: int) -> dict[str, object]:
    """pgbench for `seconds`, then bulk INSERTs until `wal_size` bytes of WAL were written in all: each load's
    WAL rate against what storage held, and the RPO under each."""
    environment = client_env(project)
    subprocess.run([str(project.bin_dir / "pgbench"), "-i", "-q", "-s", "20", "postgres"], env=environment,
                   check=True, capture_output=True)
    scratch = Path(tempfile.mkdtemp(prefix="pgdr-bench-wal-"))
    rusage = scratch / "rusage.json"
    with open(scratch / "stream.log", "wb") as stream_log:  # the child keeps its own copy of the descriptor
        streamer = subprocess.Popen(project.argv("wal", "stream", rusage_file=rusage), cwd=project.root,
                                    env=project.environment({**PHYSICAL, "PGDR_WAL__RPO_OBJECTIVE": rpo}),
                                    stdout=stream_log, stderr=subprocess.STDOUT)
    sampler = StatusSampler(project)
    loads: dict[str, dict[str, object]] = {}
    try:
        while not (project.backups / "wal" / "status.json").exists():
            if streamer.poll() is not None:
                raise SetupFailed("pgdr wal stream ended:\n" + (scratch / "stream.log").read_text())
            time.sleep(0.2)
        sampler.start()
        first_lsn = server_lsn(project)
        cores = str(os.cpu_count() or 2)
        loads["pgbench"] = timed_load(project, sampler, lambda: subprocess.run(
            [str(project.bin_dir / "pgbench"), "-c", cores, "-j", cores, "-T", str(int(seconds)), "postgres"],
            env={**environment, "PGOPTIONS": FULL_SPEED}, check=True, capture_output=True))
        loads["bulk INSERT"] = timed_load(project, sampler, lambda: bulk_writes(project, first_lsn + wal_size))
        wal_total = (server_lsn(project) - first_lsn) / 1e6
    finally:
        sampler.stop_event.set()
        streamer.send_signal(signal.SIGTERM)
        streamer.wait(timeout=180)
    usage = json.loads(rusage.read_text()) if rusage.exists() else {}
    shutil.rmtree(scratch, ignore_errors=True)
    return {"loads": loads, "wal_total_mb": round(wal_total, 1), "rpo_objective": rpo,
            "streamer_cpu_s": round(sum(usage.get("self", {}).get(key, 0) for key in ("cpu_user_s", "cpu_system_s"))
                                    + sum(usage.get("children", {}).values()), 1),
            "streamer_peak_rss_mb": round(usage.get("self", {}).get("peak_rss_kib", 0) / 1024, 1)}


def timed_load(project: Project, sampler: StatusSampler, load: Callable[[], object]) -> dict[str, object]:
    """One load: the WAL it made, how fast, how long storage took to hold it all after, the RPO meanwhile."""
    start_lsn, started = server_lsn(project), time.monotonic()
    load()
    end_lsn, load_seconds = server_lsn(project), time.monotonic() - started
    caught_up = _wait_stored(sampler, end_lsn, timeout=120)
    rpos = [sample[3] for sample in sampler.samples if started <= sample[0] <= started + load_seconds]
    generated = (end_lsn - start_lsn) / 1e6
    return {"seconds": round(load_seconds, 1), "wal_generated_mb": round(generated, 1),
            "wal_mb_per_s": round(generated / load_seconds, 2), "caught_up_after_load_s": caught_up,
            "rpo_p50_s": _quantile(rpos, 0.5), "rpo_p99_s": _quantile(rpos, 0.99),
            "rpo_max_s": round(max(rpos), 1) if rpos else None}


def bulk_writes(project: Project, until_lsn: int) -> None:
    """INSERTs of 100,000 rows, each its own transaction, until the server's WAL reaches `until_lsn`: WAL as fast
    as one session writes it, and the WAL a recovery then replays."""
    with project.target.connect() as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute("CREATE TABLE IF NOT EXISTS pgdr_bench_bulk (id bigint, filler text)")
        while server_lsn(project) < until_lsn:
            connection.execute("INSERT INTO pgdr_bench_bulk SELECT g, repeat(md5(g::text), 4) "
                               "FROM generate_series(1, 100000) g")


def _wait_stored(sampler: StatusSampler, lsn: int, timeout: float) -> float | None:
    """Seconds after the load until storage held the WAL the server had written at its end (None: not within)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sampler.samples and sampler.samples[-1][2] >= lsn:
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def _quantile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


PHASES = [("check", "→ Checking"), ("extract", "→ Extracting"), ("verify", "→ Verifying"),
          ("replay", "→ Replaying"), ("after", "removed the data directory set aside")]


def recovery(project: Project) -> dict[str, object]:
    """All the WAL there is, phases timed by the step lines pgdr prints as it starts each."""
    result = run_pgdr(project, ["recover", "--clean", "--yes"], PHYSICAL, "pg_verifybackup, pg_ctl (children)")
    marks = {name: next((at for at, line in result.lines if prefix in line), None) for name, prefix in PHASES}
    times = [marks[name] for name, _ in PHASES]
    phases = {name: round(end - start, 1) for (name, _), start, end in zip(PHASES, times, times[1:], strict=False)
              if start is not None and end is not None}  # each phase runs until the next one's line
    return {"wall_s": round(result.wall_s, 1), "phases_s": phases, "peak_rss_mb": result.peak_rss_mb}


def summary(backups: dict[str, list[Result]], streamed: dict[str, object], recovered: dict[str, object]) -> str:
    medians = {name: statistics.median(result.wall_s for result in results) for name, results in backups.items()}
    raw, pgdr = medians.values()
    rows = [f"| {name} | {wall:.1f} s | {wall / raw:.2f}x | "
            f"{max(max(result.peak_rss_mb.values(), default=0) for result in backups[name]):.0f} MB |"
            for name, wall in medians.items()]
    return "\n".join([
        "| base backup | wall (median) | ratio | peak RSS |", "|---|---|---|---|", *rows, "",
        f"stream under load: {json.dumps(streamed)}", f"recovery: {json.dumps(recovered)}",
        f"base backup ratio pgdr / raw: {pgdr / raw:.2f}x"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default="200MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--rpo", default="5s")
    parser.add_argument("--wal-size", type=parse_size, default="1GB",
                        help="WAL written in all (pgbench, then bulk INSERTs), which the recovery replays")
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--folder", type=Path, default=Path("/var/tmp/pgdr-bench-wal"))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    bin_dir = args.bin_dir or default_bin_dir()
    shutil.rmtree(args.folder, ignore_errors=True)
    args.folder.mkdir(parents=True)
    args.folder.chmod(0o755)
    project = Project.open(args.folder / "project", bin_dir, args.folder / "backups", reuse=False)
    try:
        project.pgdr("up")
        project.pgdr("init")
        log(f"Generating {args.size / 1e6:.0f} MB")
        generate(project.target, args.size, log=lambda message: None)
        log("Base backups")
        backups = base_backups(project, args.rounds)
        log(f"The stream under pgbench for {args.load_seconds:.0f} s, then bulk INSERTs up to "
            f"{args.wal_size / 1e6:.0f} MB of WAL")
        streamed = stream_under_load(project, args.load_seconds, args.rpo, args.wal_size)
        log("Recovery of everything")
        recovered = recovery(project)
    finally:
        project.stop()
    text = summary(backups, streamed, recovered)
    log("\n" + text)
    if args.output:
        args.output.write_text(json.dumps({"size": args.size, "streamed": streamed, "recovered": recovered,
                                           "base_backups": {name: [result.as_json() for result in results]
                                                            for name, results in backups.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
