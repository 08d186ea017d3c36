"""Benchmark pgdr against the shell pipelines it replaces, in one run of interleaved rounds.

    python3 bench/harness.py --size 100MB --rounds 3
    python3 bench/harness.py --size 100MB,1GB --rounds 3 --many-databases 50     # issue 17's whole run
    python3 bench/harness.py --startup-only

A run measures pgdr's start-up first (bench/startup.py), then each size in turn, then the many-database cluster
(bench/many.py), then each in-process step and guarantee alone (bench/components.py, bench/guarantees.py).
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

import guarantees
import many
import psutil
import report
import startup
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
from generate import SIZES, Planned, Target, generate, generate_plan, parse_size, passfile
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
    """One cluster's benchmark: the source project (size bytes of generate.py's data, or the many-database plan),
    the restore target, the scratch cluster of the baseline restore."""

    args: argparse.Namespace
    size: int
    folder: Path
    bin_dir: Path
    source: Project
    target: Project
    scratch: ScratchCluster
    variants: list[str]
    plan: list[Planned] | None = None  # the many-database cluster; None: generate.py's three databases
    verify_tables: tuple[tuple[str, str], ...] = VERIFY_TABLES
    moto: Moto | None = None
    counts: dict[str, int] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)
    passfiles: dict[int, str] = field(default_factory=dict)
    closed: bool = False

    @property
    def timeout(self) -> float:
        """Seconds a case may take: by size, and 10 s a database more for the many-database cluster."""
        return float(self.args.case_timeout or 120 + 360 * self.size / 1e9 + 10 * len(self.plan or []))

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
    for name in ("baseline.sql.gz", BIGGEST_BASELINE):
        (folder / name).unlink(missing_ok=True)


def size_label(size: int) -> str:
    return f"{size / 1e9:g}GB" if size >= 1e9 else f"{size / 1e6:g}MB"


def make_bench(args: argparse.Namespace, size: int, folder: Path, plan: list[Planned] | None = None) -> Bench:
    folder, bin_dir = folder.resolve(), args.bin_dir or default_bin_dir()
    if str(folder).startswith("/root"):
        raise SystemExit(f"{folder}: the postgres OS user cannot reach /root; pick a folder like {DEFAULT_FOLDER}")
    if not args.reuse:
        wipe(folder, bin_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    backups = folder / "backups"
    backups.mkdir(exist_ok=True)
    databases: list[str] | None = [] if plan is not None else None  # many databases: no application roles
    source = Project.open(folder / "source", bin_dir, backups, args.reuse, databases)
    target = Project.open(folder / "target", bin_dir, backups, args.reuse, databases)
    scratch = ScratchCluster(folder / "scratch", free_port(), bin_dir)
    if plan is not None:
        variants = ["gzip", *(["split"] if split_supported() else [])]
        return Bench(args, size, folder, bin_dir, source, target, scratch, variants, plan, many.verify_tables(plan))
    variants = [*COMPRESSIONS, *(["split"] if split_supported() else [])]
    return Bench(args, size, folder, bin_dir, source, target, scratch, variants)


def prepare(bench: Bench) -> dict[str, object]:
    """Source cluster up and provisioned, data generated (or reused), moto started, caches warm."""
    args, source = bench.args, bench.source
    log(f"Source cluster: {source.root} (port {source.port}); restore target: {bench.target.root} "
        f"(port {bench.target.port}); scratch: port {bench.scratch.port}")
    source.pgdr("up")
    if bench.plan is None:
        try:
            source.pgdr("init")  # roles and grants, so the dump carries them like a real one
        except SetupFailed as error:
            log(f"warning: `pgdr init` failed, the data has no application roles: {str(error)[:500]}")
    clock = time.monotonic()
    if bench.plan is None:
        generated = generate(source.target, bench.size, args.seed, force=not args.reuse, log=log)
    else:
        generated = generate_plan(source.target, bench.plan, args.seed, force=not args.reuse, log=log,
                                  label=f"{bench.size / 1e6:,.0f} MB of data")
    generate_s = round(time.monotonic() - clock, 1) if generated else None
    bench.counts = row_counts(source.target, bench.verify_tables)
    if bench.plan is not None:
        dump_biggest(bench)
    elif s3_available(args):
        bench.moto = Moto(free_port())
        bench.moto.start()
        source.write(source.s3_config, ["s3"], bench.moto.url)
        log(f"moto S3 server on {bench.moto.url}, bucket {MOTO_BUCKET}")
    case_dump(bench, Round(-1))  # warm the page cache
    source.pgdr("list")  # and Python's bytecode caches
    settle()
    return {"generate_seconds": generate_s, "database_bytes": database_sizes(source.target)}


def row_counts(server: Target, tables: tuple[tuple[str, str], ...]) -> dict[str, int]:
    counts = {}
    for database, table in tables:
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


def verify(bench: Bench, server: Target, only: str = "") -> dict[str, object]:
    """Row counts of the verified tables against the source's (only: those of this database)."""
    tables = tuple((database, table) for database, table in bench.verify_tables if not only or database == only)
    counts = row_counts(server, tables)
    expected = {name: rows for name, rows in bench.counts.items() if name in counts}
    return {"restored_rows_match": counts == expected, "restored_rows": counts}


def restore_with_psql(bench: Bench, dump: Path, only: str = "") -> Result:
    """`gunzip -c dump | psql` into a fresh scratch cluster, verified."""
    bench.scratch.reset()
    settle()
    try:
        psql = [bench.tool("psql"), "--no-psqlrc", "--quiet", "--dbname", "postgres"]
        result = run_pipeline([Stage("gunzip", ["gunzip", "-c", str(dump)]), Stage("psql", psql)],
                              env=bench.client_env(bench.scratch.target), timeout=bench.timeout,
                              servers={SERVER: bench.scratch.pid()})
        result.extra |= verify(bench, bench.scratch.target, only)
        result.extra["psql_errors"] = result.stderr.get("psql", "").count("ERROR:")
    finally:
        bench.scratch.stop()
        settle()
    return result


def case_restore_baseline(bench: Bench, state: Round) -> Result:
    if not state.baseline.exists():
        raise CaseFailed(f"{state.baseline} is missing: the `{DUMP_GZIP}` case failed this round")
    return restore_with_psql(bench, state.baseline)


# --- the many-database cluster's own cases (bench/many.py) -----------------------------------------------------------
BIGGEST_BASELINE = "biggest.sql.gz"
DECODE_CODE = """import sys
try:
    from pgdr.streams.compression import make_decompressor
    decoder = make_decompressor("gzip")
except ImportError:
    from isal import isal_zlib
    decoder = isal_zlib.decompressobj(47)
    decoder.finish = decoder.flush
with open(sys.argv[1], "rb") as source:
    while chunk := source.read(1 << 20):
        decoder.decompress(chunk)
decoder.finish()
"""


def dump_biggest(bench: Bench) -> None:
    """The biggest database alone, `pg_dump --create | gzip -6` (untimed), for its restore by psql."""
    dump = [bench.tool("pg_dump"), "--create", "--no-password", "--dbname", many.BIGGEST]
    run_pipeline([Stage("pg_dump", dump), Stage("gzip", ["gzip", "-6"])], env=bench.client_env(bench.source.target),
                 timeout=bench.timeout, stdout=bench.folder / BIGGEST_BASELINE)


def case_biggest_psql(bench: Bench, state: Round) -> Result:
    return restore_with_psql(bench, bench.folder / BIGGEST_BASELINE, only=many.BIGGEST)


def case_biggest_pgdr(bench: Bench, state: Round) -> Result:
    """pgdr restoring the biggest database alone from this round's split backup."""
    key = state.keys.get("split")
    if key is None:
        raise CaseFailed("no split backup from this round (its backup case failed)")
    bench.target.fresh()
    settle()
    try:
        result = run_pgdr(bench, bench.target, ["restore", "file", key, "--database", many.BIGGEST], {},
                          "psql/pg_restore (children)")
        result.extra |= verify(bench, bench.target.target, only=many.BIGGEST)
    finally:
        bench.target.stop()
        settle()
    return result


def case_decompress(bench: Bench, state: Round) -> Result:
    """pgdr's decoder over this round's whole plain gzip backup, alone: the decompression a restore cannot avoid."""
    key = state.keys.get("gzip")
    if key is None:
        raise CaseFailed("no gzip backup from this round (its backup case failed)")
    backup = bench.source.backups / key
    result = run_pipeline([Stage("decoder", [sys.executable, "-c", DECODE_CODE, str(backup)])],
                          env=bench.source.environment(), timeout=bench.timeout)
    result.output_bytes = backup.stat().st_size
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
        log(f"  {name:<34} FAILED: {str(error)[:600]}")
        return
    state.results[name] = result
    settle()
    size = f"{result.output_bytes / 1e6:9.1f} MB" if result.output_bytes else ""
    checked = result.extra.get("restored_rows_match")
    rows = "" if checked is None else "  rows match" if checked else "  ROWS DIFFER"
    log(f"  {name:<34} {result.wall_s:8.2f} s{size}{rows}")


def run_round(bench: Bench, index: int) -> Round:
    state = Round(index, baseline=bench.folder / "baseline.sql.gz")
    backups: list[tuple[str, Case]] = [(DUMP, case_dump), (DUMP_GZIP, case_dump_gzip)]
    if bench.plan is None:
        backups.append((PGDR_STARTUP, case_pgdr_startup))
    backups += [(backup_case(variant), case_pgdr_backup(variant)) for variant in bench.variants]
    uploads: list[tuple[str, Case]] = [(S3_BACKUP, case_s3_backup), (S3_UPLOAD, case_s3_upload)] if bench.moto \
        else []
    restores: list[tuple[str, Case]] = [(RESTORE_BASELINE, case_restore_baseline)]
    restores += [(restore_case(variant), case_pgdr_restore(variant)) for variant in bench.variants]
    if bench.plan is not None:
        restores += [(many.BIGGEST_PSQL, case_biggest_psql), (many.DECOMPRESS, case_decompress)]
        restores += [(many.BIGGEST_PGDR, case_biggest_pgdr)] if "split" in bench.variants else []
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


def component_costs(bench: Bench, megabytes: int) -> tuple[list[dict[str, object]], dict[str, float] | None]:
    """bench/components.py on the start of this run's dump: what each in-process step costs per GB, alone; and
    bench/guarantees.py's fsync on the same bytes, written to the backups' folder."""
    baseline = bench.folder / "baseline.sql.gz"
    if megabytes <= 0 or not baseline.exists():
        return [], None
    sample = bench.folder / "sample.sql"
    fsync = None
    try:
        with gzip.open(baseline, "rb") as source, open(sample, "wb") as target:
            target.write(source.read(megabytes * 1000**2))
        completed = subprocess.run([sys.executable, str(BENCH_DIR / "components.py"), str(sample), "--mb",
                                    str(megabytes), "--json"], capture_output=True, text=True, timeout=1800,
                                   check=False)
        try:
            fsync = guarantees.fsync_cost(sample, bench.source.backups)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            log(f"guarantees.py failed: {str(error)[:1000]}")
    except subprocess.TimeoutExpired:
        log("components.py timed out")
        return [], fsync
    finally:
        sample.unlink(missing_ok=True)
    if completed.returncode != 0:
        log(f"components.py failed: {completed.stderr[-1000:]}")
        return [], fsync
    rows: list[dict[str, object]] = json.loads(completed.stdout)
    return rows, fsync


# --- one cluster: setup, rounds, summary -------------------------------------------------------------------------
@dataclass
class ClusterRun:
    """What one cluster's rounds measured, summarized."""

    label: str
    size: int
    rounds: list[Round]
    data: dict[str, object]
    summaries: list[report.CaseSummary]
    checks: list[dict[str, object]]
    many_checks: list[dict[str, object]] = field(default_factory=list)
    components: list[dict[str, object]] = field(default_factory=list)
    fsync: dict[str, float] | None = None

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "size_bytes": self.size, "data": self.data,
                "summary": report.as_json(self.summaries), "targets": self.checks, "many_databases": self.many_checks,
                "results": [{"round": state.index + 1, "cases": {name: result.as_json() for name, result in
                                                                 state.results.items()}, "errors": state.errors}
                            for state in self.rounds]}

    def stored_share(self) -> float | None:
        """Bytes stored per byte of SQL by the gzip backup."""
        entry = next((item for item in self.summaries if item.name == backup_case("gzip")), None)
        dump = self.data.get("dump_bytes")
        return entry.output_bytes / dump if entry and entry.output_bytes and isinstance(dump, int) else None


def run_cluster(args: argparse.Namespace, label: str, size: int, folder: Path, rounds: int,
                plan: list[Planned] | None = None, components_mb: int = 0) -> ClusterRun:
    """Set one cluster up, run its rounds, stop everything, print its tables and targets."""
    log(f"\n=== {label} ===")
    bench = make_bench(args, size, folder, plan)
    atexit.register(bench.close)
    results: list[Round] = []
    try:
        prepared = prepare(bench)
        for index in range(rounds):
            log(f"\nRound {index + 1}/{rounds} ({label})")
            results.append(run_round(bench, index))
    finally:
        bench.close()
    data = data_report(results, prepared)
    dump_bytes = data.get("dump_bytes")
    summaries = report.summarize(list(results), dump_bytes if isinstance(dump_bytes, int) else None)
    run = ClusterRun(label, size, results, data, summaries, report.target_checks(summaries, size) if plan is None
                     else [])
    if plan is not None:
        run.many_checks = many.checks(summaries)
    log(f"\n{label}. " + data_line(data) + "\n\n" + report.tables(summaries))
    log("\n" + (report.targets_text(run.checks, size) if plan is None else many.text(run.many_checks)))
    if components_mb > 0:
        log(f"\nMeasuring each in-process step alone on {components_mb} MB of the dump (bench/components.py) "
            "and the fsync (bench/guarantees.py)")
        run.components, run.fsync = component_costs(bench, components_mb)
        if run.components:
            log(components_table(run.components))
    for name in ("baseline.sql.gz", BIGGEST_BASELINE):
        (bench.folder / name).unlink(missing_ok=True)
    return run


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


def versions(bin_dir: Path) -> dict[str, object]:
    import pgdr

    repo = str(BENCH_DIR.parent)
    return {"postgresql": output_of([str(bin_dir / "postgres"), "--version"]), "pgdr": pgdr.__version__,
            "git_commit": output_of(["git", "-C", repo, "rev-parse", "HEAD"]),
            "git_changed_files": len(output_of(["git", "-C", repo, "status", "--porcelain"]).splitlines()),
            "gzip": (output_of(["gzip", "--version"]).splitlines() or [""])[0]}


def data_report(rounds: list[Round], prepared: dict[str, object]) -> dict[str, object]:
    """Cluster size, raw dump size (from a plain backup's manifest) and what gzip -6 made of it."""
    plain = [backup_case(variant) for variant in COMPRESSIONS]  # a split manifest counts pg_dump's archives
    raw = next((result.extra["uncompressed_bytes"] for state in rounds for name, result in state.results.items()
                if name in plain and result.extra.get("uncompressed_bytes")), None)
    gzipped = next((state.results[DUMP_GZIP].output_bytes for state in rounds if DUMP_GZIP in state.results), None)
    databases = prepared["database_bytes"]
    cluster = sum(databases.values()) if isinstance(databases, dict) else None
    ratio = round(raw / gzipped, 2) if isinstance(raw, int) and gzipped else None
    return {**prepared, "cluster_bytes": cluster, "dump_bytes": raw, "gzip6_bytes": gzipped, "gzip6_ratio": ratio}


def data_line(data: dict[str, object]) -> str:
    def megabytes(value: object) -> str:
        return f"{value / 1e6:,.0f} MB" if isinstance(value, int | float) else "?"

    databases = data.get("database_bytes")
    count = f" in {len(databases)} databases" if isinstance(databases, dict) else ""
    return (f"Data: cluster {megabytes(data['cluster_bytes'])}{count}, pg_dumpall {megabytes(data['dump_bytes'])}, "
            f"gzip -6 {megabytes(data['gzip6_bytes'])} (ratio {data['gzip6_ratio']}x); {os.cpu_count()} cores; "
            "rounds interleaved, medians shown")


def final_text(startup_result: dict[str, object] | None, clusters: list[ClusterRun],
               guarantee_rows: list[dict[str, object]]) -> str:
    """Every target of the run in one place, the many-database ratios, pgdr's CPU per GB, each guarantee's cost."""
    lines = ["", "=" * 40, f"Summary of the run ({os.cpu_count()} cores; load average now "
             f"{' '.join(f'{value:.1f}' for value in os.getloadavg())})"]
    if startup_result:
        summary = startup_result["summary"]
        assert isinstance(summary, dict)
        floor = summary.get(startup.PYTHON_FLOOR, {}).get("wall_s")
        lines.append(f"\nStart-up (median wall; python3 -c pass {floor} s)")
        lines += startup.check_lines(startup_result["targets"])  # type: ignore[arg-type]
    for run in clusters:
        lines.append(f"\n{run.label}: pgdr's own CPU per GB of SQL (pgdr process only; its children and the "
                     "server apart)")
        lines += [f"  {entry.name:<36} {entry.pgdr_cpu_per_gb:>6.2f} CPU s/GB" + (
                  f" ({entry.pgdr_cpu_per_gb_net:.2f} less start-up)" if entry.pgdr_cpu_per_gb_net is not None else "")
                  for entry in run.summaries if entry.pgdr_cpu_per_gb is not None]
        lines.append(report.targets_text(run.checks, run.size) if run.checks else many.text(run.many_checks))
    if clusters:
        lines.append("\n" + guarantees.text(guarantee_rows))
    return "\n".join(lines)


def write_results(path: Path, args: argparse.Namespace, started: datetime, started_versions: dict[str, object],
                  fingerprints: dict[str, str], startup_result: dict[str, object] | None, clusters: list[ClusterRun],
                  guarantee_rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    measured = next((run for run in clusters if run.components), None)
    path.write_text(json.dumps({
        "started": started.isoformat(), "finished": datetime.now(UTC).isoformat(),
        "sizes_bytes": args.size, "rounds": args.rounds, "seed": args.seed, "machine": machine(),
        "versions": started_versions, "pgdr_source_sha256": fingerprints, "startup": startup_result,
        "clusters": [run.as_json() for run in clusters], "guarantees": guarantee_rows,
        "components": measured.components if measured else [], "fsync": measured.fsync if measured else None,
    }, indent=2, default=str) + "\n")


def parse_sizes(text: str) -> list[int]:
    """'100MB' or '100MB,1GB': the sizes run one after the other, smallest first."""
    return sorted({parse_size(item) for item in text.split(",") if item.strip()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_sizes, default=[SIZES["100MB"]],
                        help="100MB, 1GB or 5GB (approximate); several, comma-separated (100MB,1GB), run in turn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help=f"work folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--reuse", action="store_true", help="reuse the folder's projects and data if current")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--bin-dir", type=Path, default=None, help="PostgreSQL binaries (default: newest installed)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) cases")
    parser.add_argument("--case-timeout", type=float, default=0, help="seconds per case (default: by size)")
    parser.add_argument("--components-mb", type=int, default=256,
                        help="MB of the largest size's dump for bench/components.py's per-step costs and "
                             "bench/guarantees.py's fsync (0: skip)")
    parser.add_argument("--startup-rounds", type=int, default=20,
                        help="runs of each start-up case, interleaved (bench/startup.py; 0: skip)")
    parser.add_argument("--startup-only", action="store_true", help="measure the start-up only (no cluster)")
    parser.add_argument("--many-databases", type=int, default=0,
                        help="also a cluster of this many databases (issue 17: 50), restored whole and its "
                             "biggest alone (0: skip)")
    parser.add_argument("--many-size", type=parse_size, default=SIZES["100MB"] * 2,
                        help="data in the many-database cluster, all databases together (default 200MB)")
    parser.add_argument("--many-rounds", type=int, default=0, help="rounds of the many-database cases "
                                                                     "(default: --rounds)")
    parser.add_argument("--output", type=Path, default=None, help="result JSON (default bench/results/<time>.json)")
    return parser.parse_args(argv)


def interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_all(args: argparse.Namespace, started: datetime) -> int:
    folder, bin_dir = args.folder.resolve(), args.bin_dir or default_bin_dir()
    fingerprint, started_versions = source_fingerprint(), versions(bin_dir)
    startup_result = None
    if args.startup_rounds > 0 or args.startup_only:
        log(f"=== start-up: {max(1, args.startup_rounds)} runs of each case, interleaved (bench/startup.py) ===")
        startup_result = startup.run(folder / "startup", max(1, args.startup_rounds))
    clusters: list[ClusterRun] = []
    if not args.startup_only:
        for size in args.size:
            label = size_label(size)
            where = folder if len(args.size) == 1 else folder / label
            components_mb = args.components_mb if size == args.size[-1] else 0
            clusters.append(run_cluster(args, f"{label} cluster", size, where, args.rounds, None, components_mb))
        if args.many_databases > 0:
            plan = many.plan(args.many_databases, args.many_size)
            clusters.append(run_cluster(args, f"{args.many_databases}-database cluster", args.many_size,
                                        folder / "many", args.many_rounds or args.rounds, plan))
    measured = next((run for run in clusters if run.components or run.fsync), None)
    guarantee_rows = guarantees.table(measured.components, measured.fsync, measured.stored_share()) if measured \
        else []
    fingerprints = {"start": fingerprint, "end": source_fingerprint()}
    if fingerprints["start"] != fingerprints["end"]:
        log("\nWARNING: pgdr's source changed during the run: the rounds did not all measure the same code")
    log(final_text(startup_result, clusters, guarantee_rows))
    labels = "-".join([size_label(size) for size in args.size] if not args.startup_only else ["startup"])
    labels += f"-many{args.many_databases}" if args.many_databases and not args.startup_only else ""
    output = args.output or BENCH_DIR / "results" / f"{started:%Y%m%d-%H%M%S}-{labels}.json"
    write_results(output, args, started, started_versions, fingerprints, startup_result, clusters, guarantee_rows)
    log(f"\nWrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        return run_all(args, started)
    except KeyboardInterrupt:
        log("\nInterrupted: servers stopped, no results written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
