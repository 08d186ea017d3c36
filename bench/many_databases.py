"""Issue 17: a plain restore of a many-database cluster, each database's part read alone against each session
decompressing the backup from its start.

    python3 bench/many_databases.py [--databases 50] [--size 300MB] [--rounds 2] [--jobs 2] [--root DIR]

One cluster of `--databases` databases (one of them a fifth of the data, the others equal) is backed up once with
pgdr (gzip). The same backup is then restored into a fresh managed cluster, rounds interleaved:
- `alone`: the manifest as this pgdr writes it: each session reads and decompresses only its database's member;
- `from the start`: the same manifest without the compressed offsets (what an older pgdr recorded): each session
  decompresses the backup from its start and skips to its database, the restore before issue 17;
- `one stream`: jobs = 1, the whole script into one psql;
and, for scale, the biggest database's SQL alone into psql (what the parallel restore cannot beat) and the
decompression alone (`gzip -dc > /dev/null`). With `--designs`, the same backup is instead restored by
bench/section_designs.py, the three ways of reading the parts with the same code around them (`alone`,
`from-start`, and `fanout`: one reader spooling the parts to files, the design not taken).
Wall time, pgdr's own CPU, psql's CPU (pgdr's children) and the server's CPU (the postmaster and its exited
backends, from /proc) per case; the machine may be shared, so CPU seconds are the steadier figure. pgdr's cases also
split the server's CPU by what each backend was connected to (polled from /proc every few ms): `postgres` is where
each database's session runs pg_dump's CREATE DATABASE before its \\connect, the databases' own names are their load.
`--wait-after-clean S` waits S seconds between wiping the target cluster and restoring: on a file system that does
not reuse inodes freed moments ago (ext4 without a journal skips, one by one, inodes freed in the last minute, or five
when their table block is not yet written back), creating the files of 50 databases right after deleting those of
the last restore costs several times more kernel CPU (bench/README.md, "many databases").
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
from collections import Counter
from pathlib import Path

from clusters import BENCH_DIR, Project, SetupFailed, run
from generate import parse_size

from harness import default_bin_dir

BIGGEST_SHARE = 0.2
ROW_BYTES = 140  # per row of the table below, in the dump
TABLE_SQL = ("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS a, repeat(md5((g * 7)::text), 3) AS b "
             "FROM generate_series(1, {rows}) g")


def database_rows(databases: int, size: int) -> dict[str, int]:
    """db00..: the one in the middle holds BIGGEST_SHARE of the data, the others the rest in equal parts."""
    names = [f"db{number:02d}" for number in range(databases)]
    biggest = names[len(names) // 2]
    rest = int(size * (1 - BIGGEST_SHARE) / (databases - 1) / ROW_BYTES)
    return {name: int(size * BIGGEST_SHARE / ROW_BYTES) if name == biggest else rest for name in names}


def load(project: Project, rows: dict[str, int]) -> None:
    with project.target.connect() as connection:
        for name in rows:
            connection.execute(f'CREATE DATABASE "{name}"')
    for name, count in rows.items():
        with project.target.connect(name) as connection:
            connection.execute(TABLE_SQL.format(rows=count))


def ticks_seconds(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int | None) -> float:
    """The postmaster's CPU and that of its children it reaped (every backend that ended), in seconds."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ticks_seconds(sum(int(value) for value in fields[11:15]))  # utime, stime, cutime, cstime


class BackendCpu(threading.Thread):
    """The CPU of each process of the server (across its restarts), by the database a backend is connected to (from
    its process title); other processes by their kind. Polled: a backend's last few ms may be missed."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.done = data_dir, threading.Event()
        self.seen: dict[str, tuple[str, float]] = {}  # pid -> (label, CPU seconds)

    def run(self) -> None:
        while not self.done.wait(0.005):
            try:
                postmaster = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
                children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
            except OSError:
                continue
            for pid in [postmaster, *children]:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                self.seen[pid] = (self.seen.get(pid, ("", 0.0))[0] or label(title),
                                  ticks_seconds(int(fields[11]) + int(fields[12])))

    def by_label(self) -> Counter[str]:
        self.done.set()
        self.join()
        found: Counter[str] = Counter()
        for name, seconds in self.seen.values():
            found[name] += seconds
        return found


SERVER_PROCESSES = ("checkpointer", "background", "walwriter", "autovacuum", "logical", "startup")


def label(title: str) -> str:
    """`postgres: USER DATABASE HOST STATE` -> DATABASE; a server process -> [its kind]; else [postmaster]."""
    words = title.split()
    if words[:1] != ["postgres:"] or len(words) < 3:
        return "[postmaster]"
    return f"[{words[1]}]" if words[1] in SERVER_PROCESSES else words[2]


def timed_restore(project: Project, jobs: int, work: Path, wait_after_clean: float) -> dict[str, float]:
    project.fresh()
    time.sleep(wait_after_clean)
    usage = work / "rusage.json"
    backends = BackendCpu(project.data_dir)
    backends.start()
    started = time.monotonic()
    run(project.argv("restore", "latest", rusage_file=usage), cwd=project.root,
        env=project.environment({"PGDR_BACKUP__JOBS": str(jobs)}), timeout=3600)
    wall = time.monotonic() - started
    time.sleep(0.1)
    by_label = backends.by_label()
    databases = [seconds for name, seconds in by_label.items() if not name.startswith("[") and name != "postgres"]
    figures = json.loads(usage.read_text())
    return {"wall_s": wall, "pgdr_cpu_s": figures["self"]["cpu_user_s"] + figures["self"]["cpu_system_s"],
            "psql_cpu_s": figures["children"]["cpu_user_s"] + figures["children"]["cpu_system_s"],
            "server_cpu_s": server_cpu(project.pid()), "pgdr_peak_rss_mb": figures["self"]["peak_rss_kib"] / 1024,
            "server_sampled_cpu_s": sum(by_label.values()), "backends_in_postgres_cpu_s": by_label["postgres"],
            "backends_in_databases_cpu_s": sum(databases),
            "biggest_database_cpu_s": max(databases, default=0.0),
            "server_processes_cpu_s": sum(seconds for name, seconds in by_label.items() if name.startswith("["))}


def timed_command(argv: list[str], **kwargs: object) -> dict[str, float]:
    before = os.times()
    started = time.monotonic()
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]  # noqa: S603 - argv list
    after = os.times()
    return {"wall_s": time.monotonic() - started,
            "cpu_s": after.children_user + after.children_system - before.children_user - before.children_system}


def biggest_alone(project: Project, backup: Path, manifest: dict[str, object], work: Path) -> dict[str, float]:
    """The biggest database's SQL, decompressed beforehand, into one psql on a fresh cluster."""
    sections = manifest["sections"]
    assert isinstance(sections, list)
    ends = [section["offset"] for section in sections[1:]] + [manifest["uncompressed_size"]]
    start, end = max(((section["offset"], stop) for section, stop in zip(sections, ends, strict=True)),
                     key=lambda pair: pair[1] - pair[0])
    sql = work / "biggest.sql"
    with subprocess.Popen(["gzip", "-dc", str(backup)], stdout=subprocess.PIPE) as gunzip, sql.open("wb") as out:
        assert gunzip.stdout is not None
        gunzip.stdout.read(start)
        left = end - start
        while left and (data := gunzip.stdout.read(min(left, 1 << 20))):
            out.write(data)
            left -= len(data)
        gunzip.kill()
    sql.chmod(0o644)
    project.fresh()
    environment = {**project.environment(), "PGPASSWORD": project.target.password, "PGHOST": "127.0.0.1",
                   "PGPORT": str(project.port), "PGUSER": "postgres"}
    figures = timed_command([str(project.bin_dir / "psql"), "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
                             "--dbname", "postgres", "--file", str(sql)], env=environment,
                            stdout=subprocess.DEVNULL)
    sql.unlink()
    return figures


def timed_design(project: Project, mode: str, backup: Path, jobs: int, work: Path) -> dict[str, float]:
    project.fresh()
    usage = work / "design.json"
    environment = project.environment({"BENCH_PASSWORD": project.target.password})
    started = time.monotonic()
    run([sys.executable, str(BENCH_DIR / "section_designs.py"), mode, str(backup), "--port", str(project.port),
         "--password-env", "BENCH_PASSWORD", "--psql", str(project.bin_dir / "psql"), "--jobs", str(jobs),
         "--usage", str(usage)], env=environment, timeout=3600)
    wall = time.monotonic() - started
    figures = json.loads(usage.read_text())
    return {"wall_s": wall, "pgdr_cpu_s": figures["self"], "psql_cpu_s": figures["children"],
            "server_cpu_s": server_cpu(project.pid())}


def without_compressed_offsets(manifest: dict[str, object]) -> dict[str, object]:
    sections = manifest["sections"]
    assert isinstance(sections, list)
    return {**manifest, "sections": [{**section, "compressed_offset": None} for section in sections]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--databases", type=int, default=50)
    parser.add_argument("--size", default="300MB", help="SQL size of the cluster's data (default 300MB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/pgdr-bench-many"))
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--designs", nargs="*", choices=["alone", "from-start", "fanout"], default=None,
                        help="restore with bench/section_designs.py in these modes instead of pgdr's cases")
    parser.add_argument("--reuse", action="store_true", help="keep the cluster and backup of an earlier run")
    parser.add_argument("--wait-after-clean", type=float, default=0.0,
                        help="seconds between wiping the target cluster and each restore (default 0)")
    parser.add_argument("--cases", nargs="*", choices=["alone", "from the start", "one stream"],
                        default=["alone", "from the start", "one stream"], help="pgdr's cases to run")
    args = parser.parse_args(argv)
    bin_dir = args.bin_dir or default_bin_dir()
    args.root.mkdir(parents=True, exist_ok=True)
    args.root.chmod(0o755)
    project = Project.open(args.root / "project", bin_dir, args.root / "backups", reuse=args.reuse)
    try:
        return measure(project, args)
    except SetupFailed as error:
        print(f"setup failed: {error}", file=sys.stderr)
        return 1
    finally:
        project.stop()


def measure(project: Project, args: argparse.Namespace) -> int:
    if not (args.reuse and list(project.backups.rglob("*.sql.gz"))):
        rows = database_rows(args.databases, parse_size(args.size))
        print(f"loading {args.databases} databases ({args.size} of SQL, the biggest {BIGGEST_SHARE:.0%}) ...",
              flush=True)
        project.fresh()
        load(project, rows)
        for old in project.backups.rglob("*"):
            if old.is_file():
                old.unlink()
        project.pgdr("backup", timeout=3600)
    [backup] = list(project.backups.rglob("*.sql.gz"))
    manifest_path = backup.with_name(backup.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text())
    print(f"backup: {backup.stat().st_size / 1e6:.1f} MB stored, {manifest['uncompressed_size'] / 1e6:.1f} MB of SQL, "
          f"{len(manifest['sections'])} sections", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.root) as folder:
        work = Path(folder)
        work.chmod(0o755)
        for round_number in range(args.rounds):
            for mode in args.designs or []:
                figures = timed_design(project, mode, backup, args.jobs, work)
                results.setdefault(f"design {mode}", []).append(figures)
                print(f"round {round_number + 1} design {mode}: " + ", ".join(f"{key} {value:.2f}" for key, value
                                                                              in figures.items()), flush=True)
            if args.designs is not None:
                continue
            for case, variant, jobs in (("alone", manifest, args.jobs),
                                        ("from the start", without_compressed_offsets(manifest), args.jobs),
                                        ("one stream", manifest, 1)):
                if case not in args.cases:
                    continue
                manifest_path.write_text(json.dumps(variant, indent=2))
                figures = timed_restore(project, jobs, work, args.wait_after_clean)
                results.setdefault(case, []).append(figures)
                print(f"round {round_number + 1} {case}: " + ", ".join(f"{key} {value:.2f}" for key, value in
                                                                       figures.items()), flush=True)
            manifest_path.write_text(json.dumps(manifest, indent=2))
            results.setdefault("biggest database alone (psql -f)", []).append(
                biggest_alone(project, backup, manifest, work))
            results.setdefault("decompression alone (gzip -dc)", []).append(
                timed_command(["gzip", "-dc", str(backup)], stdout=subprocess.DEVNULL))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict[str, list[dict[str, float]]]) -> None:
    print("\n| case | wall s (best) | CPU s: pgdr / psql / server (best round's) |")
    print("| --- | --- | --- |")
    for case, rounds in results.items():
        best = min(rounds, key=lambda figures: figures["wall_s"])
        cpu = (f"{best['pgdr_cpu_s']:.1f} / {best['psql_cpu_s']:.1f} / {best['server_cpu_s']:.1f}"
               if "pgdr_cpu_s" in best else f"{best['cpu_s']:.1f} (the tool)")
        walls = ", ".join(f"{figures['wall_s']:.1f}" for figures in rounds)
        print(f"| {case} | {best['wall_s']:.1f} ({walls}) | {cpu} |")
    for case, rounds in results.items():
        if "backends_in_postgres_cpu_s" in rounds[0]:
            print(f"{case}: server CPU by backend (each round): " + "; ".join(
                f"all {item['server_sampled_cpu_s']:.1f} = CREATE DATABASE sessions (in postgres) "
                f"{item['backends_in_postgres_cpu_s']:.1f} + databases {item['backends_in_databases_cpu_s']:.1f} "
                f"(biggest {item['biggest_database_cpu_s']:.1f}) + server processes "
                f"{item['server_processes_cpu_s']:.1f}"
                for item in rounds))


if __name__ == "__main__":
    sys.exit(main())
