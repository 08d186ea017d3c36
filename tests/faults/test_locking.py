"""One writer per cluster: while a backup or a restore runs, every other writer on the same cluster refuses at once
(exit 3) naming the holder, or with `--wait SECONDS` queues behind it and then runs. The running operation streams
through a fake binary that holds the stream midway until the test releases it, so the overlap is certain however
slow the machine is: no clock decides an outcome.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from faults.fault_helpers import (
    assert_clean_failure,
    cluster_project,
    finish,
    held_input_bin_dir,
    list_json,
    mark_file,
    server_state,
    start_pgdr,
    throttled_bin_dir,
    wait_for,
)
from harness import count_orders, load_sample_data
from sync_helpers import poll_until

ROWS = 5000


@pytest.fixture(scope="module")
def live() -> Iterator:
    with cluster_project() as project:
        load_sample_data(project, ROWS)
        yield project


def held(project, binary: str, direction: str, name: str) -> tuple[dict[str, str], Path, Path]:
    """The environment for a run whose `binary` streams 16 kB, creates the mark, then waits for the release file."""
    workdir = project.root.parent
    mark, release = mark_file(workdir, name), mark_file(workdir, name + "-release")
    bin_dir = throttled_bin_dir(workdir, binary, direction) if direction == "out" else \
        held_input_bin_dir(workdir, binary)
    environment = {"PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_RATE": "1048576", "FAULT_MARK": str(mark),
                   "FAULT_MARK_AFTER": "16384", "FAULT_HOLD": str(release)}
    return environment, mark, release


def has_open(pid: int, path: Path) -> bool:
    """The process holds a file descriptor on path (here: it has opened the lock file and is trying the lock)."""
    try:
        return any(os.path.realpath(entry.path) == str(path.resolve()) for entry in os.scandir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return False


def refused(project, holder: str, pid: int, *args: str) -> None:
    """The server state is compared only while a backup holds the lock (a running restore changes it)."""
    state = server_state(project) if holder == "backup" else None
    result = project.pgdr(*args)
    line = assert_clean_failure(result, 3, f"pgdr {holder} (pid {pid}, since ", "is already working on this cluster")
    assert "--wait SECONDS" in result.stderr, line
    if state is not None:
        assert server_state(project) == state


def manifest_of(project, key: str) -> dict[str, object]:
    return json.loads((project.backups / (key + ".manifest.json")).read_text())


def test_a_second_writer_during_a_backup_refuses_naming_it_and_with_wait_runs_after_it(live):
    before = {str(record["key"]) for record in list_json(live)}
    environment, mark, release = held(live, "pg_dumpall", "out", "held-backup")
    first = start_pgdr(live, "backup", env=environment)
    queued_process = None
    try:
        wait_for(mark.exists, first, what="the first backup to stream")
        refused(live, "backup", first.pid, "backup")
        refused(live, "backup", first.pid, "restore", "latest", "--clean", "--yes")
        refused(live, "backup", first.pid, "clean", "soft", "--yes")
        assert first.poll() is None, "the first backup ended before the second writer tried: no overlap tested"
        # the global option: waits for the lock (far longer than this test runs), then backs up
        queued_process = start_pgdr(live, "--wait", "3600", "backup")
        lock = live.root / ".pgdr" / ".pgdr.lock"
        poll_until(lambda: has_open(queued_process.pid, lock) or queued_process.poll() is not None)
        assert first.poll() is None, "the first backup ended before the queued one asked for the lock"
    finally:
        release.touch()
        result = finish(first)
        queued = finish(queued_process) if queued_process is not None else None
    assert result.returncode == 0, result.stderr
    assert queued is not None and queued.returncode == 0, queued.stderr if queued else ""
    first_key, second_key = sorted({str(record["key"]) for record in list_json(live)} - before)
    assert first_key in result.stdout and second_key in queued.stdout
    first_finished = datetime.fromisoformat(str(manifest_of(live, first_key)["finished_at"]))
    second_started = datetime.fromisoformat(str(manifest_of(live, second_key)["started_at"]))
    assert second_started >= first_finished, "the queued backup ran while the first one was still writing"


def test_writers_during_a_restore_refuse_naming_it_and_the_restore_completes(live):
    live.ok("clean", "soft", "--yes")
    environment, mark, release = held(live, "psql", "in", "held-restore")
    restore = start_pgdr(live, "restore", "latest", env=environment)
    try:
        wait_for(mark.exists, restore, what="the restore to stream into psql")
        for command in (("backup",), ("init",), ("clean", "soft", "--yes"), ("restore", "latest", "--clean", "--yes")):
            refused(live, "restore", restore.pid, *command)
        assert restore.poll() is None, "the restore ended before the others tried: no overlap tested"
    finally:
        release.touch()
        result = finish(restore)
    assert result.returncode == 0, result.stderr
    assert not (live.backups / "safety").exists(), "the refused restore --clean took a safety backup"
    live.ok("init")
    assert count_orders(live) == ROWS
