"""Wall and CPU seconds of `pgdr restore` variants into the harness's target cluster, rounds interleaved: pgdr's own
CPU, its children's (psql, pg_restore) and the server's (every postmaster of the target's data directory: a bulk load
restarts it, and each one's reaped backends count).

    python3 bench/restore_cpu.py --folder /var/tmp/pgdr-bench/1GB --rounds 3 \\
        old:/var/tmp/pgdr-old/src new:

A case is LABEL:PYTHONPATH[:NAME=VALUE...] (an empty PYTHONPATH runs the installed pgdr; `git archive COMMIT src |
tar -x -C /var/tmp/pgdr-old` gives an older version; the rest is more environment for pgdr). Every case restores
the same backup (--key, default the newest split backup in FOLDER/backups, which `PGDR_BACKUP__FORMAT=split pgdr
backup` on the source project writes) into a fresh target cluster (`clean hard`, `up`: untimed). CPU seconds, not
wall time, compare versions on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from backup_cpu import cpu_row

BENCH_DIR = Path(__file__).resolve().parent
KEYS = ("wall", "pgdr", "children", "server", "total")
MANIFEST = ".manifest.json"


class ServerCpu(threading.Thread):
    """Polls the data directory's postmaster: the CPU of each one seen (its own and its reaped backends'), summed at
    the end, so the restarts of a bulk load lose at most the last poll's share of each stopped server."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.seen, self.done = data_dir, {}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.poll()

    def poll(self) -> None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            times = psutil.Process(pid).cpu_times()
        except (OSError, ValueError, IndexError, psutil.Error):
            return
        self.seen[pid] = times.user + times.system + times.children_user + times.children_system

    def total(self, before: dict[int, float]) -> float:
        self.done.set()
        self.join()
        self.poll()
        return sum(value - before.get(pid, 0.0) for pid, value in self.seen.items())


def newest_split_key(backups: Path) -> str:
    manifests = sorted(backups.glob(f"*/*.split{MANIFEST}"))
    if not manifests:
        raise SystemExit(f"no split backup in {backups}: run `PGDR_BACKUP__FORMAT=split pgdr backup` on the source")
    return str(manifests[-1].relative_to(backups))[: -len(MANIFEST)]


def pgdr(target: Path, environment: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "pgdr", "--config", str(target / "pgdr.toml"), *args], cwd=target,
                   env=environment, capture_output=True, check=True)


def measure(folder: Path, key: str, label: str, path: str, *extra: str) -> dict:
    target = folder / "target"
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("PG", "PYTHONPATH"))}
    environment |= {"NO_COLOR": "1"} | ({"PYTHONPATH": path} if path else {})
    environment |= dict(setting.split("=", 1) for setting in extra)
    if (target / ".pgdr" / "pgdata").exists():
        pgdr(target, environment, "clean", "hard", "--yes")
    pgdr(target, environment, "up")
    time.sleep(1)
    sampler = ServerCpu(target / ".pgdr" / "pgdata")
    sampler.poll()
    before = dict(sampler.seen)
    sampler.start()
    with tempfile.NamedTemporaryFile(suffix=".json") as usage_file:
        start = time.monotonic()
        done = subprocess.run([sys.executable, str(BENCH_DIR / "rusage_run.py"), usage_file.name, "-m", "pgdr",
                               "--config", str(target / "pgdr.toml"), "restore", "file", key], cwd=target,
                              env=environment, capture_output=True, text=True, check=False)
        wall, server = time.monotonic() - start, sampler.total(before)
        if done.returncode != 0:
            raise SystemExit(f"{label}: pgdr restore exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        usage = json.loads(Path(usage_file.name).read_text())
    return cpu_row(label, wall, usage, server) | {"load": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="LABEL:PYTHONPATH[:NAME=VALUE...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/var/tmp/pgdr-bench"), help="harness.py's --folder")
    parser.add_argument("--key", default=None, help="the backup to restore (default: the newest split backup)")
    args = parser.parse_args()
    key = args.key or newest_split_key(args.folder / "backups")
    cases = [case.split(":") for case in args.cases]
    results = []
    for number in range(args.rounds):
        for case in cases[number % len(cases):] + cases[:number % len(cases)]:
            results.append(measure(args.folder, key, *case))
            print(json.dumps(results[-1]), flush=True)
    print(f"{key}: medians (the upper one of an even count)")
    for label, *_ in cases:
        rows = [result for result in results if result["label"] == label]
        print(label, json.dumps({name: sorted(row[name] for row in rows)[len(rows) // 2] for name in KEYS}))


if __name__ == "__main__":
    main()
