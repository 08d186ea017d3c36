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
backends, from /proc) per case; the machine may be shared, so CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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


def timed_restore(project: Project, jobs: int, work: Path) -> dict[str, float]:
    project.fresh()
    usage = work / "rusage.json"
    started = time.monotonic()
    run(project.argv("restore", "latest", rusage_file=usage), cwd=project.root,
        env=project.environment({"PGDR_BACKUP__JOBS": str(jobs)}), timeout=3600)
    wall = time.monotonic() - started
    figures = json.loads(usage.read_text())
    return {"wall_s": wall, "pgdr_cpu_s": figures["self"]["cpu_user_s"] + figures["self"]["cpu_system_s"],
            "psql_cpu_s": figures["children"]["cpu_user_s"] + figures["children"]["cpu_system_s"],
            "server_cpu_s": server_cpu(project.pid()), "pgdr_peak_rss_mb": figures["self"]["peak_rss_kib"] / 1024}


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
                manifest_path.write_text(json.dumps(variant, indent=2))
                figures = timed_restore(project, jobs, work)
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


if __name__ == "__main__":
    sys.exit(main())
