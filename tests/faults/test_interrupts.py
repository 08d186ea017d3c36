"""Ctrl-C (SIGINT to pgdr's process group, as a terminal sends it) and SIGTERM (systemd, docker stop) in the middle
of a backup and of a restore: exit 130, temporary files (partial backups, the PGPASSFILE) removed, no pending
multipart upload, no process left behind; a restore leaves the cluster untouched (interrupted while checking) or
marked incomplete with the next step printed, and `pgdr verify` then fails saying the last restore did not
complete. The streams are slowed down by fake binaries (tests/faults/throttle.py), held midway by one, or slowed
by the HTTP fault proxy. No clock decides an outcome: a process left behind keeps the test waiting until its
timeout fails it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from faults.fault_helpers import (
    assert_clean_failure,
    assert_no_new_backup,
    cluster_project,
    fails,
    fake_binary,
    finish,
    held_input_bin_dir,
    list_json,
    mark_file,
    new_bucket,
    private_tmp,
    restore_record,
    s3_keys,
    s3_pending,
    server_state,
    signal_group,
    start_pgdr,
    throttled_bin_dir,
    tree_snapshot,
    use_s3,
    wait_for,
)
from faults.http_fault_proxy import Fault, FaultProxy
from harness import count_orders, load_sample_data
from sync_helpers import poll_until

pytestmark = pytest.mark.s3
SIGNALS = [signal.SIGINT, signal.SIGTERM]
ROWS = 5000


@pytest.fixture(scope="module")
def live(moto_server) -> Iterator:
    """A cluster with 5000 orders and one good backup, locally and in S3 (under base/)."""
    with cluster_project() as project:
        bucket = new_bucket(moto_server)
        use_s3(project, moto_server, bucket, targets='["local", "s3"]')
        load_sample_data(project, ROWS)
        project.ok("backup")
        project.bucket = bucket  # type: ignore[attr-defined]
        yield project


def group_is_gone(process) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return True
    return False


def interrupted(process, signal_number: int):
    """Send the signal to the whole group, wait for pgdr; every process it started must be gone too (one that
    outlives it keeps this waiting until the test's timeout fails it)."""
    signal_group(process, signal_number)
    result = finish_without_killing(process)
    try:
        poll_until(lambda: group_is_gone(process), interval=0.05)
    finally:
        finish(process)  # kills stragglers, if any, so a failing test leaves nothing behind either
    assert_clean_failure(result, 130, "interrupted")
    return result


def finish_without_killing(process):
    import subprocess

    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize("signal_number", SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_signal_during_a_local_backup_exits_130_and_leaves_no_file_anywhere(live, signal_number):
    workdir = live.root.parent
    bin_dir = throttled_bin_dir(workdir, "pg_dumpall", "out")
    mark, tmp = mark_file(workdir, "dumping"), private_tmp(workdir, "tmp-backup")
    tree, keys, state = tree_snapshot(live.backups), [str(r["key"]) for r in list_json(live)], server_state(live)
    environment = {"PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_RATE": "65536", "FAULT_MARK": str(mark),
                   "FAULT_MARK_AFTER": "32768", "FAULT_HOLD": str(mark_file(workdir, "never-released")),
                   "TMPDIR": str(tmp), "PGDR_BACKUP__TARGETS": '["local"]'}  # the dump stops at the mark
    process = start_pgdr(live, "backup", env=environment)
    wait_for(mark.exists, process, what="the dump to stream")
    assert any(path.name.startswith(".") for path in live.backups.rglob("*")), "no temporary file to clean up"
    assert any(path.name.startswith("pgdr-pgpass-") for path in tmp.iterdir()), "no PGPASSFILE to clean up"

    interrupted(process, signal_number)

    assert_no_new_backup(live, tree, keys)
    assert list(tmp.iterdir()) == [], "the temporary PGPASSFILE was left behind"
    assert server_state(live) == state


@pytest.mark.parametrize("signal_number", SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_signal_during_an_s3_upload_exits_130_and_aborts_the_multipart_upload(live, moto_server, signal_number):
    prefix = f"interrupted-{signal.Signals(signal_number).name}/"
    script = ('echo "--"; echo "-- PostgreSQL database cluster dump"; echo "--"\n'
              "head -c 7000000 /dev/urandom | base64\n"  # ~9.5 MB: one 8 MiB part is sent, the rest waits
              "sleep 3600\n")  # until the signal
    bin_dir = fake_binary(live.root.parent, "endless-dump", "pg_dumpall", script)
    process = start_pgdr(live, "backup", env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir), "PGDR_S3__PREFIX": prefix,
                                              "PGDR_BACKUP__COMPRESSION": "none", "PGDR_BACKUP__TARGETS": '["s3"]'})
    wait_for(lambda: s3_pending(moto_server, live.bucket, prefix), process, what="a multipart upload to start")

    interrupted(process, signal_number)

    assert s3_pending(moto_server, live.bucket, prefix) == [], "the multipart upload was left pending"
    assert s3_keys(moto_server, live.bucket, prefix) == []
    assert list_json(live, "--from", "s3", env={"PGDR_S3__PREFIX": prefix}) == []


@pytest.mark.parametrize("signal_number", SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_signal_while_a_restore_downloads_and_checks_leaves_the_cluster_untouched(live, moto_server, signal_number):
    [record] = list_json(live, "--from", "s3")
    local_copy = live.backups / str(record["key"])
    kept = local_copy.read_bytes()
    local_copy.unlink()  # restore from S3 downloads it again
    tree, state, restore_state = tree_snapshot(live.backups), server_state(live), restore_record(live)
    stall = Fault("GetObject", "stall", times=None, path_suffix=".sql.gz", after_bytes=64 * 1024)
    proxy = FaultProxy(moto_server.port, [stall]).start()  # the download stops midway until the proxy stops
    try:
        process = start_pgdr(live, "restore", "latest", "--from", "s3", "--clean", "--yes",
                             env={"AWS_ENDPOINT_URL": proxy.url})
        wait_for(lambda: proxy.holding == 1 and any(".partial-" in path.name for path in live.backups.rglob("*")),
                 process, what="the download to stop midway")
        result = interrupted(process, signal_number)
    finally:
        proxy.stop()
    try:
        assert tree_snapshot(live.backups) == tree, "a partial download or a safety backup was left"
    finally:
        local_copy.write_bytes(kept)
    assert "partial restore" not in result.stderr  # nothing was restored, so nothing is said to be
    assert server_state(live) == state
    assert restore_record(live) == restore_state


@pytest.mark.parametrize("signal_number", SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_signal_while_psql_restores_marks_the_cluster_incomplete_and_says_what_to_do(live, signal_number):
    live.ok("clean", "soft", "--yes")
    workdir = live.root.parent
    bin_dir = held_input_bin_dir(workdir, "psql")  # psql gets 64 kB, then nothing until the signal
    mark, tmp = mark_file(workdir, "restoring"), private_tmp(workdir, "tmp-restore")
    never = mark_file(workdir, "never-released")
    process = start_pgdr(live, "restore", "latest", env={
        "PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_MARK": str(mark), "FAULT_MARK_AFTER": "65536",
        "FAULT_HOLD": str(never), "TMPDIR": str(tmp)})
    wait_for(mark.exists, process, what="psql to be fed")
    record = restore_record(live)
    assert record is not None and record["status"] == "incomplete"

    result = interrupted(process, signal_number)

    assert "partial restore" in result.stderr
    assert "pgdr restore latest --clean" in result.stderr, "the next step is not printed"
    assert list(tmp.iterdir()) == [], "the temporary PGPASSFILE was left behind"
    assert restore_record(live)["status"] == "incomplete"
    verify = fails(live, "verify", code=10)
    assert f"last restore ({record['key']}) completed" in verify.stderr
    assert "interrupted or failed" in verify.stderr

    live.ok("restore", "latest", "--clean", "--yes")  # the printed next step works
    live.ok("init")
    live.ok("verify")
    assert count_orders(live) == ROWS
