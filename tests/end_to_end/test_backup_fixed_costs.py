"""A small backup's fixed costs (issue 17): what pgdr does before pg_dumpall starts and after the backup is written.

Before: the server version is asked once, the database properties and the cluster's requirements are read over one
session on `postgres`, and each other database that allows connections gets one session for its extensions; nothing
more. The server logs every connection with a Unix-epoch timestamp; a sitecustomize module on PYTHONPATH records when
pgdr starts pg_dumpall (it wraps subprocess.Popen; pgdr starts every child through it).

After: the interpreter's last collection has nothing to walk, everything the command built is frozen (an atexit
handler registered by the same module runs after pgdr's own work and threads are done, and counts).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness import Project

OBSERVER = '''\
import atexit
import os
import subprocess
import time

_popen_init = subprocess.Popen.__init__


def _recorded(self, args, *rest, **options):
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    if os.path.basename(os.fsdecode(argv[0])) == "pg_dumpall" and "--version" not in argv:
        with open(os.environ["TEST_DUMP_STARTED"], "a") as handle:
            handle.write(f"{time.time()}\\n")
    _popen_init(self, args, *rest, **options)


subprocess.Popen.__init__ = _recorded


def _count_at_exit():
    import gc

    if os.environ.get("TEST_AT_EXIT"):
        with open(os.environ["TEST_AT_EXIT"], "w") as handle:
            handle.write(f"{len(gc.get_objects())} {gc.get_freeze_count()}\\n")


atexit.register(_count_at_exit)
'''


def observed_backup(project: Project, workdir: Path) -> tuple[float, Path]:
    """Runs `pgdr backup` with the observer; when pg_dumpall started, and the file the exit counts are in."""
    observer = workdir / "observer"
    observer.mkdir(exist_ok=True)
    (observer / "sitecustomize.py").write_text(OBSERVER)
    started, at_exit = workdir / "dump-started", workdir / "at-exit"
    started.unlink(missing_ok=True)
    python_path = os.pathsep.join([str(observer), *filter(None, [project.environment.get("PYTHONPATH")])])
    result = project.ok("backup", env={"PYTHONPATH": python_path, "TEST_DUMP_STARTED": str(started),
                                       "TEST_AT_EXIT": str(at_exit)})
    assert "written" in result.stdout + result.stderr  # the command's last line reached its stream
    return float(started.read_text().split()[0]), at_exit


def connections_before_the_dump(project: Project, workdir: Path) -> int:
    log = project.root / ".pgdr" / "postgres.log"
    offset = log.stat().st_size
    dump_started, _ = observed_backup(project, workdir)
    authorized = [float(line.split()[0]) for line in log.read_bytes()[offset:].decode(errors="replace").splitlines()
                  if "connection authorized" in line]
    assert any(moment >= dump_started for moment in authorized), "pg_dumpall's connections were not logged"
    return sum(moment < dump_started for moment in authorized)


def reloaded(project: Project) -> None:
    """Until a new session has the reloaded settings (the postmaster handles the reload on its own time)."""
    for _ in range(500):
        with project.connect() as connection:
            if connection.execute("SELECT current_setting('log_line_prefix')").fetchone()[0] == "%n ":
                return
        time.sleep(0.02)
    raise AssertionError("the server never took the reloaded settings")


def test_a_backup_opens_one_session_plus_one_per_other_database_before_the_dump(running_project, workdir):
    project = running_project
    with project.connect() as connection:
        connection.execute("CREATE DATABASE second")
        connection.execute("ALTER SYSTEM SET log_connections = on")
        connection.execute("ALTER SYSTEM SET log_line_prefix = '%n '")
        connection.execute("SELECT pg_reload_conf()")
        databases = connection.execute(
            "SELECT count(*) FROM pg_database WHERE datallowconn AND datname <> 'postgres'").fetchone()[0]
    reloaded(project)
    # the server version (the client tools' check and the manifest), the properties and requirements, and one
    # session per other database; before: the version twice and four sessions on postgres
    assert connections_before_the_dump(project, workdir) == 2 + databases


def test_what_a_backup_built_is_frozen_before_the_interpreter_exits(running_project, workdir):
    _, at_exit = observed_backup(running_project, workdir)
    tracked, frozen = map(int, at_exit.read_text().split())
    assert frozen > 10_000  # start-up's modules and the command's objects
    assert tracked < 1_000, f"{tracked} objects left for the last collection to walk"
