"""The old runbook's task names still work: mise.toml maps each one to a pgdr command.

The task files are read with tomllib everywhere; running them needs mise (`npm install -g @jdxcode/mise`;
.ci/run installs it). Without mise only the tests that run it are skipped, and pytest's summary (-ra) says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import keys
from harness import count_orders, load_sample_data

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
RUNBOOK_TASKS = [
    "up:postgres", "dev:backup", "backup:list", "restore:postgres:latest", "restore:postgres:file",
    "restore:postgres:s3:list", "restore:postgres:s3:latest", "restore:postgres:s3:file", "env:admin", "db:init",
    "clean:postgres:soft", "clean:postgres:hard", "db", "migrate:hono", "recover", "drill",
]

needs_mise = pytest.mark.skipif(shutil.which("mise") is None,
                                reason="mise is not installed: mise itself is not seen listing and running the task "
                                       "files (npm install -g @jdxcode/mise; .ci/run does)")


def mise_environment(home: Path, trusted: list[Path], base: dict[str, str] | None = None) -> dict[str, str]:
    """mise with its own folders (nothing read from or written to the user's), the given files trusted, and the
    pgdr of this interpreter first on PATH."""
    environment = dict(base if base is not None else os.environ)
    for name in ("MISE_DATA_DIR", "MISE_CONFIG_DIR", "MISE_CACHE_DIR", "MISE_STATE_DIR"):
        folder = home / name.lower()
        folder.mkdir(exist_ok=True)
        environment[name] = str(folder)
    environment["MISE_TRUSTED_CONFIG_PATHS"] = os.pathsep.join(str(path) for path in trusted)
    environment["PATH"] = str(Path(sys.executable).parent) + os.pathsep + environment.get("PATH", "")
    return environment


def mise(cwd: Path, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mise", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


def mise_ok(cwd: Path, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = mise(cwd, environment, *args)
    assert result.returncode == 0, f"mise {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    return result


def listed_tasks(cwd: Path, environment: dict[str, str]) -> dict[str, dict[str, object]]:
    return {task["name"]: task for task in json.loads(mise_ok(cwd, environment, "tasks", "ls", "--json").stdout)}


def run_lines(task: dict[str, object]) -> list[str]:
    run = task["run"]
    return [run] if isinstance(run, str) else [str(line) for line in run]  # type: ignore[union-attr]


def test_both_task_files_define_every_runbook_name_as_the_same_pgdr_command():
    """Read as TOML, without mise: the demo's file and the root's hold the same tasks, each running pgdr."""
    demo = tomllib.loads((DEMO / "mise.toml").read_text())["tasks"]
    root = tomllib.loads((ROOT / "mise.toml").read_text())["tasks"]
    assert [name for name in RUNBOOK_TASKS if name not in demo] == []
    assert root == demo
    for name in RUNBOOK_TASKS:
        assert all(line.startswith("pgdr ") for line in run_lines(demo[name])), f"{name} does not run pgdr"
    assert "./pgdr.toml" in (ROOT / "mise.toml").read_text()  # the comment saying which config it drives


@needs_mise
def test_every_runbook_task_name_is_defined_by_the_demo_mise_toml(workdir):
    environment = mise_environment(workdir, [DEMO, ROOT])

    tasks = listed_tasks(DEMO, environment)

    missing = [name for name in RUNBOOK_TASKS if name not in tasks]
    assert not missing, f"runbook tasks missing from {DEMO / 'mise.toml'}: {missing}"
    for name in RUNBOOK_TASKS:
        assert Path(str(tasks[name]["source"])) == DEMO / "mise.toml", f"{name} does not come from the demo's file"
        assert all(str(line).startswith("pgdr ") for line in tasks[name]["run"]), f"{name} does not run pgdr"
    table = mise_ok(DEMO, environment, "tasks", "ls").stdout
    assert all(name in table for name in RUNBOOK_TASKS)


@needs_mise
def test_the_root_mise_toml_maps_the_same_names_to_the_same_pgdr_commands(workdir):
    environment = mise_environment(workdir, [ROOT])

    tasks = listed_tasks(ROOT, environment)

    assert [name for name in RUNBOOK_TASKS if name not in tasks] == []
    root = tomllib.loads((ROOT / "mise.toml").read_text())["tasks"]
    demo = tomllib.loads((DEMO / "mise.toml").read_text())["tasks"]
    assert root == demo
    assert "./pgdr.toml" in (ROOT / "mise.toml").read_text()  # the comment saying which config it drives


@needs_mise
def test_mise_run_executes_pgdr_on_the_project_beside_it(project, workdir):
    shutil.copy(DEMO / "mise.toml", project.root / "mise.toml")
    environment = mise_environment(workdir, [project.root], project.environment)

    up = mise_ok(project.root, environment, "run", "up:postgres")
    assert f"running on 127.0.0.1:{project.port}" in up.stdout  # this project's pgdr.toml, not the demo's
    mise_ok(project.root, environment, "run", "db:init")
    load_sample_data(project, 250)
    mise_ok(project.root, environment, "run", "dev:backup")
    [key] = keys(project)

    listed = mise_ok(project.root, environment, "run", "backup:list")
    assert key in listed.stdout
    assert "verified" in listed.stdout

    with project.connect("demo") as connection:
        connection.execute("DELETE FROM orders")
    refused = mise(project.root, environment, "run", "restore:postgres:file", key)
    assert refused.returncode == 3  # pgdr's exit code for a refusal comes through mise
    assert "--clean" in refused.stderr
    mise_ok(project.root, environment, "run", "restore:postgres:file", key, "--clean", "--yes")
    assert count_orders(project) == 250
    mise_ok(project.root, environment, "run", "db:init")
    verified = mise_ok(project.root, environment, "run", "migrate:hono")
    assert "Application can connect" in verified.stdout

    psql = mise_ok(project.root, environment, "run", "db", "-d", "demo", "-tA", "-c", "SELECT count(*) FROM orders")
    assert psql.stdout.strip() == "250"
