"""Helpers for the fault-injection suite: module-wide running clusters (one start per test module keeps the suite
fast), fake binaries that throttle the real ones, pgdr runs that can be signalled, and the checks every fault
case makes (the documented exit code, one error line naming the stage and the fix, nothing a later `list` or
`restore latest` would take, the server unchanged).

The end-to-end helpers are reused from end_to_end.e2e_helpers: every helper module is imported by its path from
tests/, which pytest puts on sys.path for the rootdir conftest (see tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from end_to_end.e2e_helpers import (
    PASSWORDS,
    RecordingProject,
    fails,
    fake_bin_dir,
    list_json,
    real_bin_dir,
    recorded,
    server_state,
    tree_snapshot,
)
from harness import (
    Project,
    clean_environment,
    free_port,
    load_sample_data,
    project_config,
    run_as_postgres_kwargs,
    server_bin_dir,
    write_dotenv,
)
from moto_fixtures import REGION, MotoServer, object_keys, pending_uploads

THROTTLE = Path(__file__).with_name("throttle.py")
__all__ = ["PASSWORDS", "fails", "list_json", "real_bin_dir", "server_state", "tree_snapshot"]


def private_folder(parent: Path, name: str) -> Path:
    """A folder the postgres OS user can traverse (fake bin dirs, marker files)."""
    folder = parent / name
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    return folder


@contextmanager
def cluster_project(config_prefix: str = "", config_suffix: str = "", settings: str | None = None,
                    init: bool = True, backed_up_rows: int = 0) -> Iterator[RecordingProject]:
    """A local-mode project with its cluster up (and provisioned), for a whole test module; with backed_up_rows,
    that many sample orders are loaded and backed up first.

    config_prefix goes before [postgres] (top-level keys such as environment = "production"); settings replaces
    the [postgres] settings table of harness.project_config.
    """
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-faults-"))
    workdir.chmod(0o755)
    root = private_folder(workdir, "project")
    port = free_port()
    text = project_config(port, config_suffix)
    if settings is not None:
        text = text.replace("settings = { fsync = false, synchronous_commit = false, full_page_writes = false }",
                            f"settings = {settings}")
    (root / "pgdr.toml").write_text(config_prefix + text)
    write_dotenv(root / ".env")
    project = recorded(Project(root, port, clean_environment()))
    try:
        project.ok("up")
        if init:
            project.ok("init")
        if backed_up_rows:
            load_sample_data(project, backed_up_rows)
            project.ok("backup")
        yield project
    finally:
        stop_cluster(project)
        shutil.rmtree(workdir, ignore_errors=True)


def data_dir(project: Project) -> Path:
    return project.root / ".pgdr" / "pgdata"


def stop_cluster(project: Project) -> None:
    """pg_ctl stop -m immediate: the server dies as in a crash (no checkpoint, connections cut)."""
    if (data_dir(project) / "PG_VERSION").exists():
        subprocess.run([str(server_bin_dir() / "pg_ctl"), "-D", str(data_dir(project)), "stop", "-m", "immediate",
                        "-w"], capture_output=True, check=False, **run_as_postgres_kwargs())  # type: ignore[arg-type]


def throttled_bin_dir(parent: Path, binary: str, direction: str) -> Path:
    """A bin dir where `binary` runs the real one through throttle.py (FAULT_RATE bytes/s, FAULT_MARK file)."""
    folder = private_folder(parent, f"throttled-{binary}")
    shutil.rmtree(folder / "fake-bin", ignore_errors=True)
    return fake_bin_dir(folder, binary, f'exec "{sys.executable}" "{THROTTLE}" {direction} "$REAL" "$@"\n')


def held_input_bin_dir(parent: Path, binary: str) -> Path:
    """A bin dir where `binary` (psql) gets the first FAULT_MARK_AFTER bytes of its input, then FAULT_MARK is
    created and nothing more passes until the file FAULT_HOLD exists. Plain sh and dd, no Python: as root pgdr
    runs psql as the cluster's OS user, who cannot run an interpreter installed under /root."""
    folder = private_folder(parent, f"held-{binary}")
    shutil.rmtree(folder / "fake-bin", ignore_errors=True)
    return fake_bin_dir(folder, binary, '{ dd bs="$FAULT_MARK_AFTER" count=1 iflag=fullblock 2>/dev/null\n'
                                        '  : > "$FAULT_MARK"\n'
                                        '  until [ -e "$FAULT_HOLD" ]; do sleep 0.02; done\n'
                                        '  exec cat; } | "$REAL" "$@"\n')


def fake_binary(parent: Path, name: str, binary: str, script: str) -> Path:
    """fake_bin_dir in a folder of its own (several fakes per module)."""
    folder = private_folder(parent, name)
    shutil.rmtree(folder / "fake-bin", ignore_errors=True)
    return fake_bin_dir(folder, binary, script)


def start_pgdr(project: Project, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """pgdr in a process group of its own, as a shell runs a foreground job: signals go to the whole group."""
    return subprocess.Popen([sys.executable, "-m", "pgdr", *args], cwd=project.root, text=True,
                            env={**project.environment, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_for(condition: Callable[[], object], process: subprocess.Popen[str] | None = None,
             what: str = "the condition") -> None:
    """Poll until condition holds; fail at once if the process ended first. No deadline: a condition that never
    comes is a hang, which the test's timeout fails (a slow machine must not)."""
    while not condition():
        if process is not None and process.poll() is not None:
            if condition():  # it came just before the process ended
                return
            stdout, stderr = process.communicate()
            raise AssertionError(f"pgdr ended (exit {process.returncode}) before {what}:\n{stdout}\n{stderr}")
        time.sleep(0.05)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill_group(process: subprocess.Popen[str]) -> None:
    """Leave nothing running: the pgdr we started and whatever it started (same process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=30)


def signal_group(process: subprocess.Popen[str], signal_number: int) -> None:
    os.killpg(process.pid, signal_number)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    [line] = [line for line in result.stderr.splitlines() if line.startswith("❌")]
    return line


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The documented exit code, no traceback, exactly one error line naming `words`, and a fix."""
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}:\n{output}"
    assert "Traceback" not in result.stderr, result.stderr
    line = error_line(result)
    for word in words:
        assert word in line, f"{word!r} not in the error line {line!r}"
    assert "   fix: " in result.stderr, f"no fix in:\n{result.stderr}"
    for password in PASSWORDS:
        assert password not in result.stdout + result.stderr
    return line


def restore_record(project: Project) -> dict[str, object] | None:
    path = project.root / ".pgdr" / "last-restore.json"
    return json.loads(path.read_text()) if path.exists() else None


def pgpass_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("pgdr-"))


def mark_file(parent: Path, name: str) -> Path:
    """A fresh path for throttle.py's marker (FAULT_MARK) or release file (FAULT_HOLD). The folder is writable by
    everyone (sticky), since as root pgdr runs some client tools as the cluster's OS user."""
    folder = private_folder(parent, "marks")
    folder.chmod(0o1777)
    path = folder / name
    path.unlink(missing_ok=True)
    return path


def private_tmp(parent: Path, name: str) -> Path:
    """An empty TMPDIR for one pgdr run: its temporary files (PGPASSFILE) must be gone afterwards."""
    folder = private_folder(parent, name)
    for path in folder.iterdir():
        path.unlink()
    return folder


def assert_no_new_backup(project: Project, tree_before: dict[str, str], keys_before: list[str]) -> None:
    """Nothing a later `list` or `restore latest` would take: the backup dir (hidden files included) and the
    list are what they were."""
    assert tree_snapshot(project.backups) == tree_before, "the failure left or changed files in the backup dir"
    assert [str(record["key"]) for record in list_json(project)] == keys_before


def use_s3(project: Project, moto_server: MotoServer, bucket: str, targets: str = '["s3"]') -> None:
    """Back up to moto's S3 (keys under `prefix`, which a test can move with PGDR_S3__PREFIX)."""
    text = project.config.read_text().replace('targets = ["local"]', f"targets = {targets}")
    project.config.write_text(text + f'\n[s3]\nbucket = "{bucket}"\nprefix = "base/"\nregion = "{REGION}"\n')
    project.environment.update(moto_server.environment())


def new_bucket(moto_server: MotoServer) -> str:
    name = f"pgdr-faults-{uuid.uuid4().hex[:12]}"
    moto_server.client("s3").create_bucket(Bucket=name)
    return name


def s3_keys(moto_server: MotoServer, bucket: str, prefix: str) -> list[str]:
    return [key for key in object_keys(moto_server, bucket) if key.startswith(prefix)]


def s3_pending(moto_server: MotoServer, bucket: str, prefix: str = "") -> list[str]:
    return [str(upload["Key"]) for upload in pending_uploads(moto_server, bucket)
            if str(upload["Key"]).startswith(prefix)]
