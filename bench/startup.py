"""pgdr's start-up against the interpreter's own (issue 17): what every command pays before doing anything.

    python3 bench/startup.py --rounds 20            # alone, about a minute on 2 cores
    python3 bench/harness.py ...                    # also runs it first, in the same run as the rest

Cases, run --rounds times each, interleaved (the order rotated every round): `python3 -c pass` with the same
interpreter (the floor: what any Python program pays), `pgdr --version`, `pgdr --help`, and `pgdr list` of a
local folder holding a few backups (plain ones with manifests, and files of the old shell pipeline without one).
pgdr is started the way its console script starts it (the entry point its pyproject.toml names, e.g.
`from pgdr.entry import main`), by the interpreter running this file, so it is the pgdr this interpreter imports.
No server is needed: `list` reads the folder only.

As installed: pip compiles a package's bytecode when it installs it, so pgdr's own modules are compiled here
(compileall) before the first run, and PYTHONDONTWRITEBYTECODE is not passed to the measured processes (with it,
a source tree's modules would be compiled again at every start).

Each run's wall time (start to exit) and CPU time (user + system, from wait4) are recorded; the summary gives
medians and the 90th percentile, pgdr's excess over `python3 -c pass`, and issue 17's targets (`pgdr --version`
<= 0.15 s and `pgdr list` <= 0.35 s). A missed target is explained by `python -X importtime` of the same command:
the top-level packages whose import took longest, with their time.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_FOLDER = Path("/var/tmp/pgdr-bench-startup")
PYTHON_FLOOR = "python3 -c pass"
VERSION = "pgdr --version"
HELP = "pgdr --help"
LIST = "pgdr list (local folder)"
TARGETS = {VERSION: 0.15, LIST: 0.35}  # issue 17, seconds of wall time (median) on the 2-core machine
BACKUPS_WITH_MANIFEST = 8
OLD_PIPELINE_BACKUPS = 4
RUN_TIMEOUT = 60
TOP_IMPORTS = 5


def log(message: str) -> None:
    print(message, flush=True)


def entry_point() -> tuple[str, str]:
    """(module, function) of the `pgdr` console script of the pgdr this interpreter imports: as the pyproject.toml
    of its source tree names it (this checkout, or another one on PYTHONPATH), else as its installed metadata does,
    else `pgdr.cli:main` (versions before the entry module had no other)."""
    import pgdr

    pyproject = Path(pgdr.__file__).resolve().parents[2] / "pyproject.toml"
    named = None
    if pyproject.is_file():
        named = tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}).get("pgdr")
    if named is None:
        from importlib.metadata import entry_points

        named = next((item.value for item in entry_points(group="console_scripts", name="pgdr")), "pgdr.cli:main")
    module, _, function = named.partition(":")
    return module, function


def console_script(folder: Path) -> Path:
    """A `pgdr` launcher as pip writes it (`from pgdr.entry import main`), for the interpreter running this file:
    the installed one may name another interpreter (a copied virtualenv)."""
    module, function = entry_point()
    launcher = folder / "pgdr"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {function}\n\n"
                        f"if __name__ == '__main__':\n    sys.exit({function}())\n")
    launcher.chmod(0o755)
    return launcher


def compile_pgdr() -> None:
    """pgdr's bytecode, as pip writes it at install time (a no-op for modules already compiled)."""
    import pgdr

    compileall.compile_dir(Path(pgdr.__file__).parent, quiet=1)


def write_backups(backups: Path) -> None:
    """A few backups as `pgdr list` meets them: plain gzip ones with a manifest (three databases, row counts,
    sections) and old-pipeline files without one. Their bytes are small gzip streams: list never opens them."""
    import gzip

    from pgdr.artifact import DatabaseContents, Manifest, Section, TableCount, make_key

    backups.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
    for index in range(BACKUPS_WITH_MANIFEST):
        created = start + timedelta(days=index)
        key = make_key(created, "gzip")
        data = gzip.compress(f"-- bench backup {index}\n".encode() * 2000)
        path = backups / str(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        databases = [DatabaseContents(name=name, tables=[TableCount(schema="public", table=f"{name}_{number}",
                                                                    rows=1000 * number) for number in range(1, 6)])
                     for name in ("shop", "events", "crm")]
        manifest = Manifest(key=str(key), compression="gzip", server_version="15.18", pg_dumpall_version="15.18",
                            pgdr_version="bench", started_at=created, size=len(data),
                            sha256=hashlib.sha256(data).hexdigest(), uncompressed_size=40_000,
                            finished_at=created + timedelta(seconds=5), databases=databases,
                            sections=[Section(database=name, offset=1000 * number)
                                      for number, name in enumerate(("shop", "events", "crm"), 1)])
        (backups / key.manifest_key).write_bytes(manifest.to_json())
    for index in range(OLD_PIPELINE_BACKUPS):
        created = start - timedelta(days=index + 1)
        path = backups / f"{created:%Y%m%d}" / f"postgres-all-{created:%Y%m%d-%H%M%S}.sql.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(b"-- old pipeline\n" * 2000))


def prepare(folder: Path) -> dict[str, list[str]]:
    """The folder (config, launcher, backups) and each case's argv."""
    folder.mkdir(parents=True, exist_ok=True)
    backups = folder / "backups"
    if not any(backups.rglob("*.manifest.json")):
        write_backups(backups)
    config = folder / "pgdr.toml"
    config.write_text(f'# written by bench/startup.py\n[backup]\ndir = "{backups}"\ntargets = ["local"]\n'
                      'min_size = "1kB"\n')
    launcher = str(console_script(folder))
    return {PYTHON_FLOOR: [sys.executable, "-c", "pass"], VERSION: [launcher, "--version"],
            HELP: [launcher, "--help"], LIST: [launcher, "--config", str(config), "list"]}


def environment() -> dict[str, str]:
    """Ours without what would steer pgdr or libpq, and no terminal: what a script or a cron job sees. PYTHONPATH
    stays: a run may measure another checkout's src that way, as the harness's cases do. PYTHONDONTWRITEBYTECODE
    goes: an installed pgdr has its bytecode (compile_pgdr)."""
    kept = {name: value for name, value in os.environ.items()
            if not name.startswith(("PG", "PGDR_", "AWS_")) and name not in ("DATABASE_URL", "PYTHONDONTWRITEBYTECODE")}
    return kept | {"NO_COLOR": "1", "COLUMNS": "120"}


def run_once(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, exact from wait4) of one run; RuntimeError if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=environment(), stdin=subprocess.DEVNULL,  # noqa: S603
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = started + RUN_TIMEOUT
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"{' '.join(argv)} took more than {RUN_TIMEOUT} s")
        time.sleep(0.001)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {stderr[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def top_imports(argv: list[str], cwd: Path) -> list[tuple[str, float]]:
    """Where one run of argv spends its imports (python -X importtime): the self time of every module summed by
    top-level package (pydantic, typer, pgdr...), longest first."""
    program = argv[1:] if argv[0] == sys.executable else argv  # the launcher is a script: run it by path
    completed = subprocess.run([sys.executable, "-X", "importtime", *program], cwd=cwd, env=environment(),
                               capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    totals: dict[str, float] = {}
    for line in completed.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + int(parts[0]) / 1e6
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:TOP_IMPORTS]


def summarize(runs: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
    floor = statistics.median(wall for wall, _ in runs[PYTHON_FLOOR]) if runs.get(PYTHON_FLOOR) else 0.0
    summary = {}
    for name, values in runs.items():
        walls, cpus = [wall for wall, _ in values], [cpu for _, cpu in values]
        wall = statistics.median(walls)
        summary[name] = {"runs": len(values), "wall_s": round(wall, 4), "wall_p90_s": round(percentile(walls, 0.9), 4),
                         "wall_min_s": round(min(walls), 4), "cpu_s": round(statistics.median(cpus), 4),
                         "over_python_s": round(wall - floor, 4)}
    return summary


def target_checks(summary: dict[str, dict[str, float]], argvs: dict[str, list[str]], cwd: Path
                  ) -> list[dict[str, object]]:
    checks: list[dict[str, object]] = []
    for name, limit in TARGETS.items():
        if name not in summary:
            continue
        measured = summary[name]["wall_s"]
        check: dict[str, object] = {"target": f"{name}: wall <= {limit} s (median)", "measured": measured,
                                    "limit": limit, "met": measured <= limit, "issue": 17}
        if measured > limit:
            imports = top_imports(argvs[name], cwd)
            check["bottleneck"] = (f"CPU {summary[name]['cpu_s']:.3f} s of the {measured:.3f} s (the rest: waiting "
                                   "for a core or the disk); imports (self time by package, one run): "
                                   + ", ".join(f"{package} {seconds:.3f} s" for package, seconds in imports)
                                   + f"; the interpreter alone: {summary[PYTHON_FLOOR]['wall_s']:.3f} s")
        checks.append(check)
    return checks


def run(folder: Path, rounds: int, say: Callable[[str], None] = log) -> dict[str, object]:
    """Every case `rounds` times, interleaved; the summary, issue 17's checks and the raw runs."""
    argvs = prepare(folder)
    compile_pgdr()
    names = list(argvs)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:  # untimed: compile the bytecode caches, warm the page cache
        run_once(argvs[name], folder)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            runs[name].append(run_once(argvs[name], folder))
    summary = summarize(runs)
    checks = target_checks(summary, argvs, folder)
    say(text(summary, checks, rounds))
    return {"rounds": rounds, "summary": summary, "targets": checks,
            "runs": {name: [[round(wall, 4), round(cpu, 4)] for wall, cpu in values] for name, values in runs.items()}}


def text(summary: dict[str, dict[str, float]], checks: list[dict[str, object]], rounds: int) -> str:
    lines = [f"Start-up ({rounds} runs each, interleaved; wall and CPU seconds, medians)",
             f"  {'case':<26} {'wall s':>7} {'p90':>7} {'min':>7} {'CPU s':>7} {'- python':>9}"]
    for name, entry in summary.items():
        lines.append(f"  {name:<26} {entry['wall_s']:>7.3f} {entry['wall_p90_s']:>7.3f} {entry['wall_min_s']:>7.3f} "
                     f"{entry['cpu_s']:>7.3f} {entry['over_python_s']:>+9.3f}")
    lines += ["Targets of issue 17 (start-up)", *check_lines(checks)]
    return "\n".join(lines)


def check_lines(checks: list[dict[str, object]]) -> list[str]:
    lines = []
    for item in checks:
        lines.append(f"  {'met ' if item['met'] else 'MISS'}  {item['target']}: {item['measured']}")
        if not item["met"] and item.get("bottleneck"):
            lines.append(f"        -> {item['bottleneck']}")
    return lines


def instructions(argvs: dict[str, list[str]], cwd: Path) -> dict[str, int]:
    """Instructions each case executes, counted by valgrind (cachegrind without its cache model): the same count
    run after run, where wall and CPU time move by a third on a shared machine. One run of each case."""
    counts = {}
    for name, argv in argvs.items():
        program = argv if argv[0] == sys.executable else [sys.executable, *argv]  # the launcher: run it by path
        counter = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        completed = subprocess.run([*counter, *program], cwd=cwd, env=environment() | {"PYTHONHASHSEED": "0"},
                                   capture_output=True, text=True, timeout=RUN_TIMEOUT * 10, check=False)
        found = [line for line in completed.stderr.splitlines() if line.split("==")[-1].strip().startswith("I")
                 and "refs:" in line]
        if completed.returncode != 0 or not found:
            raise RuntimeError(f"valgrind {' '.join(argv)} exited {completed.returncode}: {completed.stderr[-500:]}")
        counts[name] = int(found[-1].split(":")[1].replace(",", ""))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="runs of each case, interleaved (default 20)")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help=f"work folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each case's instructions under valgrind (slow; the same count every run)")
    args = parser.parse_args(argv)
    result = run(args.folder.resolve(), max(1, args.rounds))
    if args.instructions:
        folder = args.folder.resolve()
        counts = instructions(prepare(folder), folder)
        log("Instructions (valgrind, one run each, millions)\n" + "\n".join(
            f"  {name:<26} {count / 1e6:>9.1f}" for name, count in counts.items()))
        result["instructions"] = counts
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
