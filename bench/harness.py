"""Benchmark pgdr against the shell pipelines it replaces, in one run of interleaved rounds.

    python3 bench/harness.py --size 100MB --rounds 3

Each round runs every case once, in an order rotated from round to round; ratios are taken within a round
(case / its reference in the same round), then the median over rounds, so load from other processes on the
machine hits a case and its reference alike. See bench/README.md for what each case means and the targets.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
import report
from clusters import (
    MOTO_BUCKET,
    Moto,
    Project,
    ScratchCluster,
    SetupFailed,
    free_port,
    settle,
    stop_cluster,
)
from components import table as components_table
from generate import SIZES, Target, generate, parse_size, passfile
from measure import CaseFailed, Result, Server, Stage, run_pipeline
from report import (
    DUMP,
    DUMP_GZIP,
    MOTO,
    PGDR_STARTUP,
    RESTORE_BASELINE,
    S3_BACKUP,
    S3_UPLOAD,
    SERVER,
    RoundResults,
    backup_case,
    restore_case,
)

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_FOLDER = Path("/var/tmp/pgdr-bench")
COMPRESSIONS = ("gzip", "zstd", "none")
VERIFY_TABLES = (("shop", "order_items"), ("events", "events"), ("crm", "activities"))
UPLOAD_CODE = "import sys, boto3; boto3.client('s3').upload_file(sys.argv[1], sys.argv[2], sys.argv[3])"
MANIFEST_SUFFIX = ".manifest.json"


def log(message: str) -> None:
    print(message, flush=True)


@dataclass
class Round(RoundResults):
    """One round's results, and what its cases hand to each other: the baseline file, pgdr's backup keys."""

    baseline: Path = Path("baseline.sql.gz")
    keys: dict[str, str] = field(default_factory=dict)
    created: list[Path] = field(default_factory=list)


@dataclass
class Bench:
    args: argparse.Namespace
    folder: Path
    bin_dir: Path
    source: Project
    target: Project
    scratch: ScratchCluster
    variants: list[str]
    moto: Moto | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)
    passfiles: dict[int, str] = field(default_factory=dict)
    closed: bool = False

    @property
    def timeout(self) -> float:
        return float(self.args.case_timeout or 120 + 360 * self.args.size / 1e9)

    def client_env(self, server: Target) -> dict[str, str]:
        """libpq environment for a baseline pipeline; the password in a 0600 PGPASSFILE."""
        if server.port not in self.passfiles:
            self.passfiles[server.port] = self.stack.enter_context(passfile(server))
        return {name: value for name, value in os.environ.items() if not name.startswith("PG")} | {
            "PGHOST": server.host, "PGPORT": str(server.port), "PGUSER": server.user, "PGDATABASE": "postgres",
            "PGPASSFILE": self.passfiles[server.port]}

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def close(self) -> None:
        """Stop every server this run started and drop the restored copies; the source keeps its data (--reuse)."""
        if self.closed:
            return
        self.closed = True
        for stop in (self.scratch.stop, self.target.stop, lambda: self.source.stop("fast")):
            try:
                stop()
            except Exception as error:  # noqa: BLE001 - cleanup goes on whatever failed
                log(f"cleanup: {error}")
        if self.scratch.pid() is None:
            shutil.rmtree(self.scratch.root, ignore_errors=True)
        if self.target.pid() is None:
            shutil.rmtree(self.target.data_dir, ignore_errors=True)
        if self.moto is not None:
            self.moto.stop()
        self.stack.close()


# --- setup -------------------------------------------------------------------------------------------------------
def default_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name), reverse=True)
    if found:
        return found[0]
    pg_dumpall = shutil.which("pg_dumpall")
    if pg_dumpall is None:
        raise SystemExit("PostgreSQL binaries not found: pass --bin-dir")
    return Path(pg_dumpall).resolve().parent


def split_supported() -> bool:
    """True once pgdr has backup.format = "split" (issue 6); the harness then benchmarks it too."""
    try:
        from pgdr.config import BackupSettings
    except ImportError:
        return False
    return "format" in BackupSettings.model_fields


def s3_available(args: argparse.Namespace) -> bool:
    import importlib.util

    if args.no_s3:
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "boto3", "pgdr.storage.s3"))


def wipe(folder: Path, bin_dir: Path) -> None:
    """Remove what an earlier run left in the folder (only our own subfolders), stopping its clusters first."""
    for data_dir in (folder / "source/.pgdr/pgdata", folder / "target/.pgdr/pgdata", folder / "scratch/data"):
        stop_cluster(bin_dir, data_dir)
    for name in ("source", "target", "scratch", "backups"):
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / "baseline.sql.gz").unlink(missing_ok=True)


def make_bench(args: argparse.Namespace) -> Bench:
    folder, bin_dir = args.folder.resolve(), args.bin_dir or default_bin_dir()
    if str(folder).startswith("/root"):
        raise SystemExit(f"{folder}: the postgres OS user cannot reach /root; pick a folder like {DEFAULT_FOLDER}")
    if not args.reuse:
        wipe(folder, bin_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    backups = folder / "backups"
    backups.mkdir(exist_ok=True)
    source = Project.open(folder / "source", bin_dir, backups, args.reuse)
    target = Project.open(folder / "target", bin_dir, backups, args.reuse)
    scratch = ScratchCluster(folder / "scratch", free_port(), bin_dir)
    variants = [*COMPRESSIONS, *(["split"] if split_supported() else [])]
    return Bench(args, folder, bin_dir, source, target, scratch, variants)


def prepare(bench: Bench) -> dict[str, object]:
    """Source cluster up and provisioned, data generated (or reused), moto started, caches warm."""
    args, source = bench.args, bench.source
    log(f"Source cluster: {source.root} (port {source.port}); restore target: {bench.target.root} "
        f"(port {bench.target.port}); scratch: port {bench.scratch.port}")
    source.pgdr("up")
    try:
        source.pgdr("init")  # roles and grants, so the dump carries them like a real one
    except SetupFailed as error:
        log(f"warning: `pgdr init` failed, the data has no application roles: {str(error)[:500]}")
    clock = time.monotonic()
    generated = generate(source.target, args.size, args.seed, force=not args.reuse, log=log)
    generate_s = round(time.monotonic() - clock, 1) if generated else None
    bench.counts = row_counts(source.target)
    if s3_available(args):
        bench.moto = Moto(free_port())
        bench.moto.start()
        source.write(source.s3_config, ["s3"], bench.moto.url)
        log(f"moto S3 server on {bench.moto.url}, bucket {MOTO_BUCKET}")
    case_dump(bench, Round(-1))  # warm the page cache
    source.pgdr("list")  # and Python's bytecode caches
    settle()
    return {"generate_seconds": generate_s, "database_bytes": database_sizes(source.target)}


def row_counts(server: Target) -> dict[str, int]:
    counts = {}
    for database, table in VERIFY_TABLES:
        try:
            with server.connect(database) as connection:
                row = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[f"{database}.{table}"] = int(row[0]) if row else -1
        except Exception:  # noqa: BLE001 - a missing database is a failed restore, reported as such
            counts[f"{database}.{table}"] = -1
    return counts


def database_sizes(server: Target) -> dict[str, int]:
    with server.connect() as connection:
        rows = connection.execute("SELECT datname, pg_database_size(oid) FROM pg_database ORDER BY 1").fetchall()
    return {name: int(size) for name, size in rows}


# --- the cases ------------------------------------------------------------------------------------------------------
def dump_argv(bench: Bench) -> list[str]:
    return [bench.tool("pg_dumpall"), "--no-role-passwords", "--no-password"]


def source_server(bench: Bench) -> dict[str, int | None]:
    return {SERVER: bench.source.pid()}


def case_dump(bench: Bench, state: Round) -> Result:
    return run_pipeline([Stage("pg_dumpall", dump_argv(bench))], env=bench.client_env(bench.source.target),
                        timeout=bench.timeout, servers=source_server(bench))


def case_pgdr_startup(bench: Bench, state: Round) -> Result:
    """pgdr's fixed cost (interpreter, imports, config, secrets): what a tiny backup cannot amortize."""
    return run_pgdr(bench, bench.source, ["list"], {}, "children")


def case_dump_gzip(bench: Bench, state: Round) -> Result:
    result = run_pipeline([Stage("pg_dumpall", dump_argv(bench)), Stage("gzip", ["gzip", "-6"])],
                          env=bench.client_env(bench.source.target), timeout=bench.timeout,
                          stdout=state.baseline, servers=source_server(bench))
    result.output_bytes = state.baseline.stat().st_size
    return result


def backup_files(backups: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in backups.rglob("*") if path.is_file()}


def variant_env(variant: str) -> dict[str, str]:
    if variant == "split":
        return {"PGDR_BACKUP__FORMAT": "split"}
    return {"PGDR_BACKUP__COMPRESSION": variant}


def run_pgdr(bench: Bench, project: Project, args: list[str], env: dict[str, str], children: str,
             config: Path | None = None, servers: Mapping[str, Server | None] | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix="pgdr-bench-rusage-") as scratch:
        rusage = Path(scratch) / "rusage.json"
        stage = Stage("pgdr", project.argv(*args, config=config, rusage_file=rusage), rusage, children)
        return run_pipeline([stage], env=project.environment(env), timeout=bench.timeout, cwd=project.root,
                            capture_output=True, servers={SERVER: project.pid, **(servers or {})})  # restarts too


def case_pgdr_backup(variant: str) -> Callable[[Bench, Round], Result]:
    def case(bench: Bench, state: Round) -> Result:
        before = backup_files(bench.source.backups)
        try:
            result = run_pgdr(bench, bench.source, ["backup"], variant_env(variant), "pg_dumpall+pg_dump (children)")
        finally:
            new = {path: size for path, size in backup_files(bench.source.backups).items() if path not in before}
            state.created += list(new)
        manifests = [path for path in new if path.name.endswith(MANIFEST_SUFFIX)]
        if len(manifests) != 1:
            raise CaseFailed(f"expected one new manifest in {bench.source.backups}, found {len(manifests)}")
        state.keys[variant] = str(manifests[0].relative_to(bench.source.backups))[: -len(MANIFEST_SUFFIX)]
        result.output_bytes = sum(size for path, size in new.items() if path not in manifests)
        manifest = json.loads(manifests[0].read_text())
        result.extra["uncompressed_bytes"] = manifest.get("uncompressed_size")
        return result

    return case


def bucket_objects(moto: Moto) -> dict[str, int]:
    pages = moto.client().get_paginator("list_objects_v2").paginate(Bucket=MOTO_BUCKET)
    return {item["Key"]: int(item["Size"]) for page in pages for item in page.get("Contents", [])}


def moto_server(bench: Bench) -> dict[str, int | None]:
    process = bench.moto.process if bench.moto else None
    return {MOTO: process.pid if process else None}


def case_s3_backup(bench: Bench, state: Round) -> Result:
    assert bench.moto is not None
    before = bucket_objects(bench.moto)
    result = run_pgdr(bench, bench.source, ["backup"], bench.moto.environment(), "pg_dumpall+pg_dump (children)",
                      config=bench.source.s3_config, servers=moto_server(bench))
    new = {key: size for key, size in bucket_objects(bench.moto).items() if key not in before}
    result.output_bytes = sum(size for key, size in new.items() if not key.endswith(MANIFEST_SUFFIX))
    return result


def case_s3_upload(bench: Bench, state: Round) -> Result:
    assert bench.moto is not None
    key = state.keys.get("gzip")
    source = bench.source.backups / key if key else state.baseline
    if not source.exists():
        raise CaseFailed("nothing to upload: neither pgdr's gzip backup nor the baseline file exists this round")
    stage = Stage("boto3 upload_file", [sys.executable, "-c", UPLOAD_CODE, str(source), MOTO_BUCKET,
                                        f"upload-alone/round-{state.index}"])
    result = run_pipeline([stage], env=bench.source.environment(bench.moto.environment()), timeout=bench.timeout,
                          servers=moto_server(bench))
    result.output_bytes = source.stat().st_size
    return result


def verify(bench: Bench, server: Target) -> dict[str, object]:
    counts = row_counts(server)
    return {"restored_rows_match": counts == bench.counts, "restored_rows": counts}


def case_restore_baseline(bench: Bench, state: Round) -> Result:
    if not state.baseline.exists():
        raise CaseFailed(f"{state.baseline} is missing: the `{DUMP_GZIP}` case failed this round")
    bench.scratch.reset()
    settle()
    try:
        psql = [bench.tool("psql"), "--no-psqlrc", "--quiet", "--dbname", "postgres"]
        result = run_pipeline([Stage("gunzip", ["gunzip", "-c", str(state.baseline)]), Stage("psql", psql)],
                              env=bench.client_env(bench.scratch.target), timeout=bench.timeout,
                              servers={SERVER: bench.scratch.pid()})
        result.extra |= verify(bench, bench.scratch.target)
        result.extra["psql_errors"] = result.stderr.get("psql", "").count("ERROR:")
    finally:
        bench.scratch.stop()
        settle()
    return result


def case_pgdr_restore(variant: str) -> Callable[[Bench, Round], Result]:
    def case(bench: Bench, state: Round) -> Result:
        key = state.keys.get(variant)
        if key is None:
            raise CaseFailed(f"no {variant} backup from this round (its backup case failed)")
        bench.target.fresh()
        settle()
        try:
            result = run_pgdr(bench, bench.target, ["restore", "file", key], {}, "psql/pg_restore (children)")
            result.extra |= verify(bench, bench.target.target) | {"phases_s": restore_phases(result)}
        finally:
            bench.target.stop()
            settle()
        return result

    return case


def restore_phases(result: Result) -> dict[str, float]:
    """Seconds spent checking the backup (checksum, full decompression) before restoring, from pgdr's output."""
    marks = {}
    for at, line in result.lines:
        for phase in ("Checking", "Restoring"):
            if phase in line and phase not in marks:
                marks[phase] = at
    phases = {}
    if "Checking" in marks and "Restoring" in marks:
        phases["check"] = round(marks["Restoring"] - marks["Checking"], 2)
    if "Restoring" in marks:
        phases["restore"] = round(result.wall_s - marks["Restoring"], 2)
    return phases


# --- rounds ---------------------------------------------------------------------------------------------------------
Case = Callable[[Bench, Round], Result]


def rotate(items: list[tuple[str, Case]], by: int) -> list[tuple[str, Case]]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


def attempt(bench: Bench, state: Round, name: str, case: Case) -> None:
    try:
        result = case(bench, state)
    except (CaseFailed, SetupFailed) as error:
        state.errors[name] = str(error)[-3000:]
        log(f"  {name:<28} FAILED: {str(error)[:600]}")
        return
    state.results[name] = result
    settle()
    size = f"{result.output_bytes / 1e6:9.1f} MB" if result.output_bytes else ""
    checked = result.extra.get("restored_rows_match")
    rows = "" if checked is None else "  rows match" if checked else "  ROWS DIFFER"
    log(f"  {name:<28} {result.wall_s:8.2f} s{size}{rows}")


def run_round(bench: Bench, index: int) -> Round:
    state = Round(index, baseline=bench.folder / "baseline.sql.gz")
    backups: list[tuple[str, Case]] = [(DUMP, case_dump), (DUMP_GZIP, case_dump_gzip), (PGDR_STARTUP,
                                                                                          case_pgdr_startup)]
    backups += [(backup_case(variant), case_pgdr_backup(variant)) for variant in bench.variants]
    uploads: list[tuple[str, Case]] = [(S3_BACKUP, case_s3_backup), (S3_UPLOAD, case_s3_upload)] if bench.moto \
        else []
    restores: list[tuple[str, Case]] = [(RESTORE_BASELINE, case_restore_baseline)]
    restores += [(restore_case(variant), case_pgdr_restore(variant)) for variant in bench.variants]
    for name, case in rotate(backups, index) + rotate(uploads, index) + rotate(restores, index):
        attempt(bench, state, name, case)
    for path in state.created:  # this round's pgdr backups: keep the disk bounded
        path.unlink(missing_ok=True)
    for folder in sorted((path for path in bench.source.backups.rglob("*") if path.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # a split backup's folder, or a day's, now empty
    if bench.moto is not None:
        bench.moto.empty_bucket()
    return state


def component_costs(bench: Bench, megabytes: int) -> list[dict[str, object]]:
    """bench/components.py on the start of this run's dump: what each in-process step costs per GB, alone."""
    baseline = bench.folder / "baseline.sql.gz"
    if megabytes <= 0 or not baseline.exists():
        return []
    sample = bench.folder / "sample.sql"
    try:
        with gzip.open(baseline, "rb") as source, open(sample, "wb") as target:
            target.write(source.read(megabytes * 1000**2))
        completed = subprocess.run([sys.executable, str(BENCH_DIR / "components.py"), str(sample), "--mb",
                                    str(megabytes), "--json"], capture_output=True, text=True, timeout=1800,
                                   check=False)
    except subprocess.TimeoutExpired:
        log("components.py timed out")
        return []
    finally:
        sample.unlink(missing_ok=True)
    if completed.returncode != 0:
        log(f"components.py failed: {completed.stderr[-1000:]}")
        return []
    rows: list[dict[str, object]] = json.loads(completed.stdout)
    return rows


# --- main -----------------------------------------------------------------------------------------------------------
def machine() -> dict[str, object]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(psutil.virtual_memory().total / 1024**3, 1),
            "load_average_at_start": os.getloadavg(), "kernel": platform.release(),
            "python": platform.python_version()}


def output_of(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def source_fingerprint() -> str:
    """sha256 of pgdr's installed source: pgdr is imported afresh by every case, so an edit mid-run mixes versions."""
    import hashlib

    import pgdr

    digest = hashlib.sha256()
    for path in sorted(Path(pgdr.__file__).parent.rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def versions(bench: Bench) -> dict[str, object]:
    import pgdr

    repo = str(BENCH_DIR.parent)
    return {"postgresql": output_of([bench.tool("postgres"), "--version"]), "pgdr": pgdr.__version__,
            "git_commit": output_of(["git", "-C", repo, "rev-parse", "HEAD"]),
            "git_changed_files": len(output_of(["git", "-C", repo, "status", "--porcelain"]).splitlines()),
            "gzip": (output_of(["gzip", "--version"]).splitlines() or [""])[0]}


def data_report(rounds: list[Round], prepared: dict[str, object]) -> dict[str, object]:
    """Cluster size, raw dump size (from pgdr's manifest) and what gzip -6 made of it."""
    raw = next((result.extra["uncompressed_bytes"] for state in rounds for result in state.results.values()
                if result.extra.get("uncompressed_bytes")), None)
    gzipped = next((state.results[DUMP_GZIP].output_bytes for state in rounds if DUMP_GZIP in state.results), None)
    databases = prepared["database_bytes"]
    cluster = sum(databases.values()) if isinstance(databases, dict) else None
    ratio = round(raw / gzipped, 2) if isinstance(raw, int) and gzipped else None
    return {**prepared, "cluster_bytes": cluster, "dump_bytes": raw, "gzip6_bytes": gzipped, "gzip6_ratio": ratio}


def data_line(data: dict[str, object]) -> str:
    def megabytes(value: object) -> str:
        return f"{value / 1e6:,.0f} MB" if isinstance(value, int | float) else "?"

    return (f"Data: cluster {megabytes(data['cluster_bytes'])}, pg_dumpall {megabytes(data['dump_bytes'])}, "
            f"gzip -6 {megabytes(data['gzip6_bytes'])} (ratio {data['gzip6_ratio']}x); {os.cpu_count()} cores; "
            "rounds interleaved, medians shown")


def write_results(path: Path, args: argparse.Namespace, started: datetime, started_versions: dict[str, object],
                  rounds: list[Round], data: dict[str, object], summaries: list[report.CaseSummary],
                  checks: list[dict[str, object]], components: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "started": started.isoformat(), "finished": datetime.now(UTC).isoformat(), "size_bytes": args.size,
        "rounds": args.rounds, "seed": args.seed, "machine": machine(), "versions": started_versions, "data": data,
        "summary": report.as_json(summaries), "targets": checks, "components": components,
        "results": [{"round": state.index + 1, "cases": {name: result.as_json() for name, result in
                                                         state.results.items()}, "errors": state.errors}
                    for state in rounds],
    }, indent=2, default=str) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=SIZES["100MB"], help="100MB, 1GB or 5GB (approximate)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help=f"work folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--reuse", action="store_true", help="reuse the folder's projects and data if current")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--bin-dir", type=Path, default=None, help="PostgreSQL binaries (default: newest installed)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) cases")
    parser.add_argument("--case-timeout", type=float, default=0, help="seconds per case (default: by size)")
    parser.add_argument("--components-mb", type=int, default=256,
                        help="MB of the dump for bench/components.py's per-step costs (0: skip)")
    parser.add_argument("--output", type=Path, default=None, help="result JSON (default bench/results/<time>.json)")
    return parser.parse_args(argv)


def interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    bench = make_bench(args)
    atexit.register(bench.close)
    rounds: list[Round] = []
    fingerprint, started_versions = source_fingerprint(), versions(bench)
    try:
        prepared = prepare(bench)
        for index in range(args.rounds):
            log(f"\nRound {index + 1}/{args.rounds}")
            rounds.append(run_round(bench, index))
    except KeyboardInterrupt:
        log("\nInterrupted: servers stopped, no results written")
        return 130
    finally:
        bench.close()
    summaries = report.summarize(list(rounds))
    checks = report.target_checks(summaries)
    fingerprints = {"start": fingerprint, "end": source_fingerprint()}
    data = data_report(rounds, prepared) | {"pgdr_source_sha256": fingerprints}
    if fingerprints["start"] != fingerprints["end"]:
        log("\nWARNING: pgdr's source changed during the run: the rounds did not all measure the same code")
    log("\n" + data_line(data) + "\n\n" + report.tables(summaries) + "\n\n" + report.targets_text(checks, args.size))
    log(f"\nMeasuring each in-process step alone on {args.components_mb} MB of the dump (bench/components.py)")
    components = component_costs(bench, args.components_mb)
    if components:
        log(components_table(components))
    output = args.output or BENCH_DIR / "results" / f"{started:%Y%m%d-%H%M%S}-{args.size // 10**6}MB.json"
    write_results(output, args, started, started_versions, rounds, data, summaries, checks, components)
    (bench.folder / "baseline.sql.gz").unlink(missing_ok=True)
    log(f"\nWrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
