"""CPU seconds of `pgdr backup` variants against the harness's source cluster, rounds interleaved: pgdr's own CPU,
its children's (pg_dump, pg_dumpall), the server's (the postmaster and the backends it reaped), wall and size.

    python3 bench/backup_cpu.py --rounds 3 \\
        old-split:/var/tmp/pgdr-old/src:split:gzip new-split::split:gzip zstd-level-2::plain:zstd:2

A case is LABEL:PYTHONPATH:FORMAT:COMPRESSION[:LEVEL[:NAME=VALUE...]] (the last: more environment for pgdr); an
empty PYTHONPATH runs the installed pgdr, another one runs the pgdr found there (`git archive COMMIT src | tar -x -C
/var/tmp/pgdr-old` gives an older version). FORMAT `raw` (`raw::raw:`) is the reference, `pg_dumpall > /dev/null`
with the harness's arguments: the medians then give each case's wall time as a ratio of its (issue 17's backup
targets). The source cluster must be running (`pgdr --config FOLDER/source/pgdr.toml up` after `harness.py --reuse`
stopped it); each backup is deleted after it is measured. CPU seconds, not wall time, compare versions on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import psutil
from generate import Target, client_env, passfile

BENCH_DIR = Path(__file__).resolve().parent
KEYS = ("wall", "pgdr", "children", "server", "total", "size_mb")


def server_cpu(source: Path) -> float:
    """The postmaster's CPU and that of the children it reaped (every backend that has ended)."""
    pid = int((source / ".pgdr" / "pgdata" / "postmaster.pid").read_text().split()[0])
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def clear(backups: Path) -> int:
    size = sum(path.stat().st_size for path in backups.rglob("*") if path.is_file())
    for item in backups.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    return size


def source_setting(source: Path, section: str, name: str) -> str:
    """A value of the source project's pgdr.toml (written by the harness)."""
    return str(tomllib.loads((source / "pgdr.toml").read_text())[section][name])


def secret(source: Path, name: str) -> str:
    for line in (source / ".env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit(f"{name} missing from {source / '.env'}")


def measure_raw(folder: Path, label: str) -> dict:
    """`pg_dumpall --no-role-passwords --no-password > /dev/null`, the password in a 0600 PGPASSFILE."""
    source = folder / "source"
    target = Target(source_setting(source, "postgres", "host"), int(source_setting(source, "postgres", "port")),
                    source_setting(source, "postgres", "superuser"), secret(source, "POSTGRES_PASSWORD"))
    pg_dumpall = str(Path(source_setting(source, "postgres", "bin_dir")) / "pg_dumpall")
    with passfile(target) as pgpassfile, open(os.devnull, "wb") as sink:
        before, start = server_cpu(source), time.monotonic()
        process = subprocess.Popen([pg_dumpall, "--no-role-passwords", "--no-password"], stdout=sink,
                                   env=client_env(target, pgpassfile))
        _, status, usage = os.wait4(process.pid, 0)
        wall, server = time.monotonic() - start, server_cpu(source) - before
    if status != 0:
        raise SystemExit(f"{label}: pg_dumpall failed ({status})")
    children = usage.ru_utime + usage.ru_stime
    return {"label": label, "wall": round(wall, 2), "pgdr": 0.0, "children": round(children, 2),
            "server": round(server, 2), "total": round(children + server, 2), "size_mb": 0.0,
            "load": round(os.getloadavg()[0], 1)}


def measure(folder: Path, label: str, path: str, backup_format: str, compression: str, level: str = "",
            *extra: str) -> dict:
    if backup_format == "raw":
        return measure_raw(folder, label)
    source = folder / "source"
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("PG", "PYTHONPATH"))}
    environment |= {"PGDR_BACKUP__FORMAT": backup_format, "PGDR_BACKUP__COMPRESSION": compression, "NO_COLOR": "1"}
    environment |= {"PYTHONPATH": path} if path else {}
    environment |= {"PGDR_BACKUP__COMPRESSION_LEVEL": level} if level else {}
    environment |= dict(setting.split("=", 1) for setting in extra)
    with tempfile.NamedTemporaryFile(suffix=".json") as usage_file:
        before, start = server_cpu(source), time.monotonic()
        done = subprocess.run([sys.executable, str(BENCH_DIR / "rusage_run.py"), usage_file.name, "-m", "pgdr",
                               "--config", str(source / "pgdr.toml"), "backup"], cwd=source, env=environment,
                              capture_output=True, text=True, check=False)
        wall, server = time.monotonic() - start, server_cpu(source) - before
        if done.returncode != 0:
            raise SystemExit(f"{label}: pgdr backup exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        usage = json.loads(Path(usage_file.name).read_text())
    return cpu_row(label, wall, usage, server) | {"size_mb": round(clear(folder / "backups") / 1e6, 1),
                                                  "load": round(os.getloadavg()[0], 1)}


def cpu_row(label: str, wall: float, usage: dict, server: float) -> dict:
    """One measured run: wall, pgdr's own CPU and its children's (from rusage_run.py's file), the server's."""
    own = usage["self"]["cpu_user_s"] + usage["self"]["cpu_system_s"]
    children = usage["children"]["cpu_user_s"] + usage["children"]["cpu_system_s"]
    return {"label": label, "wall": round(wall, 2), "pgdr": round(own, 2), "children": round(children, 2),
            "server": round(server, 2), "total": round(own + children + server, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", help="LABEL:PYTHONPATH:FORMAT:COMPRESSION[:LEVEL[:NAME=VALUE...]]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/var/tmp/pgdr-bench"), help="harness.py's --folder")
    args = parser.parse_args()
    cases = [case.split(":") for case in args.cases]
    results = []
    for number in range(args.rounds):
        for case in cases[number % len(cases):] + cases[:number % len(cases)]:
            results.append(measure(args.folder, *case))
            print(json.dumps(results[-1]), flush=True)
    print("medians (the upper one of an even count)")
    medians = {}
    for label, *_ in cases:
        rows = [result for result in results if result["label"] == label]
        medians[label] = {key: sorted(row[key] for row in rows)[len(rows) // 2] for key in KEYS}
    raw = next((medians[label] for label, _, backup_format, *_ in cases if backup_format == "raw"), None)
    for label, figures in medians.items():
        ratio = {"ratio": round(figures["wall"] / raw["wall"], 2)} if raw else {}
        print(label, json.dumps(figures | ratio))


if __name__ == "__main__":
    main()
