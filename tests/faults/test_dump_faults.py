"""Backup faults on the way from the server to the disk: the server dies mid-dump, the disk fills up.

pg_dumpall killed by SIGKILL midway, exiting non-zero after partial output, and exiting 0 early are covered by
tests/end_to_end/test_backup_failures.py::test_backup_fails_naming_pg_dumpall_when_it_dies_midway_and_keeps_nothing,
a file size limit (RLIMIT_FSIZE via `ulimit -f`) on a local backup by
test_backup_failures.py::test_backup_fails_when_the_disk_is_full_and_keeps_nothing; not repeated here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.fault_helpers import (
    assert_clean_failure,
    assert_no_new_backup,
    cluster_project,
    fake_binary,
    finish,
    list_json,
    mark_file,
    server_state,
    start_pgdr,
    stop_cluster,
    throttled_bin_dir,
    tree_snapshot,
    wait_for,
)
from harness import count_orders
from small_filesystem import KINDS, small_filesystem


@pytest.fixture(scope="module")
def live() -> Iterator:
    with cluster_project(backed_up_rows=5000) as project:
        yield project


def test_server_stopped_immediately_during_a_backup_fails_naming_pg_dumpall_and_keeps_nothing(live):
    workdir = live.root.parent
    bin_dir = throttled_bin_dir(workdir, "pg_dumpall", "out")
    mark = mark_file(workdir, "dump-started")
    tree, keys = tree_snapshot(live.backups), [str(record["key"]) for record in list_json(live)]
    state = server_state(live)

    process = start_pgdr(live, "backup", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_RATE": "131072",
                                              "FAULT_MARK": str(mark), "FAULT_MARK_AFTER": "32768"})
    try:
        wait_for(mark.exists, process, what="the dump to stream")
        assert any(path.name.startswith(".") for path in live.backups.rglob("*")), "no temporary file yet"
        stop_cluster(live)  # pg_ctl stop -m immediate while the dump streams
        result = finish(process)
    finally:
        live.ok("up")

    line = assert_clean_failure(result, 7, "backup failed at stage pg_dumpall")
    assert "exit status" in line
    assert "pgdr status" in result.stderr  # the fix names the next step
    assert_no_new_backup(live, tree, keys)
    assert server_state(live) == state
    live.ok("restore", "latest", "--clean", "--yes")  # latest is still the good backup taken before
    assert count_orders(live) == 5000


@pytest.fixture(params=KINDS)
def tiny_backup_dir(live, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A 1 MiB filesystem (a tmpfs, or a loop-mounted ext4 image) for the backup dir (needs root and mount
    rights, else the test is skipped naming what is lost)."""
    with small_filesystem(request.param, live.root / "tiny-backups", 1024) as mountpoint:
        yield mountpoint


def test_disk_full_on_a_real_filesystem_fails_with_exit_11_and_leaves_the_disk_empty(live, tiny_backup_dir):
    with live.connect("demo") as connection:  # ~3 MB of random hex: ~1.7 MB gzipped, more than the 1 MiB disk
        connection.execute("CREATE TABLE filler AS SELECT md5(random()::text) || md5(random()::text) AS t "
                           "FROM generate_series(1, 50000)")
    try:
        state, free = server_state(live), os.statvfs(tiny_backup_dir).f_bfree
        result = live.pgdr("backup", env={"PGDR_BACKUP__DIR": str(tiny_backup_dir)})
        assert_clean_failure(result, 11, "disk full while writing")
        assert f"free space in {tiny_backup_dir}" in result.stderr
        assert tree_snapshot(tiny_backup_dir) == {}, "the partial file was left on the full disk"
        assert list_json(live, env={"PGDR_BACKUP__DIR": str(tiny_backup_dir)}) == []
        assert server_state(live) == state
        after = os.statvfs(tiny_backup_dir)
        folders = [path for path in tiny_backup_dir.rglob("*") if path.is_dir() and path.name != "lost+found"]
        folder_blocks = sum(folder.stat().st_blocks * 512 // after.f_frsize for folder in folders)
        assert after.f_bfree + folder_blocks == free, "space not given back (beyond the empty date folder)"
    finally:
        with live.connect("demo") as connection:
            connection.execute("DROP TABLE filler")


def test_a_pg_dumpall_that_ignores_no_role_passwords_is_refused_and_nothing_is_stored(live):
    """The dump is scanned, not trusted: a pg_dumpall that drops --no-role-passwords (a wrapper, a wrong bin_dir)
    yields ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...' lines, and pgdr refuses to store them."""
    script = ('for argument in "$@"; do shift; [ "$argument" = --no-role-passwords ] || set -- "$@" "$argument"; '
              'done\nexec "$REAL" "$@"\n')
    bin_dir = fake_binary(live.root.parent, "with-passwords", "pg_dumpall", script)
    tree, keys = tree_snapshot(live.backups), [str(record["key"]) for record in list_json(live)]
    result = live.pgdr("backup", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert_clean_failure(result, 7, "the dump contains role passwords; refusing to store it")
    assert "postgres.bin_dir" in result.stderr
    assert "SCRAM-SHA-256$" not in result.stdout + result.stderr
    assert_no_new_backup(live, tree, keys)
