"""A whole restore into the managed cluster is a bulk load (pgdr.postgres.bulk_load): observed from inside the
server while psql is held mid-load, the settings are the bulk load's; afterwards, whether the load completed, failed,
or its server was killed, they are the normal ones again; pgdr killed mid-load leaves the restore incomplete and the
server on the bulk settings, which `pgdr status` says and `pgdr up` mends. WAL streamed from the cluster keeps
wal_level; an external server is never restarted nor reconfigured.

The module's cluster runs with fsync on (unlike the other tests' clusters), so that the normal settings differ from
the bulk load's in every setting observed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import on_major
from faults.fault_helpers import (
    cluster_project,
    data_dir,
    fails,
    fake_binary,
    finish,
    held_input_bin_dir,
    kill_group,
    mark_file,
    restore_record,
    start_pgdr,
    wait_for,
)
from harness import Project, clean_environment, count_orders, load_sample_data, project_config, write_dotenv

ROWS = 3000
OBSERVED = ("fsync", "full_page_writes", "wal_level", "max_wal_senders", "autovacuum")
NORMAL = {"fsync": "on", "full_page_writes": "on", "wal_level": "replica", "max_wal_senders": "10", "autovacuum": "on"}
BULK = {"fsync": "off", "full_page_writes": "off", "wal_level": "minimal", "max_wal_senders": "0", "autovacuum": "off"}
MARK = "# pgdr: bulk load in progress"


@pytest.fixture(scope="module")
def live() -> Iterator[Project]:
    """A cluster with fsync on, ROWS orders and one good backup."""
    with cluster_project(settings="{ synchronous_commit = false }") as project:
        load_sample_data(project, ROWS)
        project.ok("backup")
        yield project


def settings_of(server, names: tuple[str, ...] = OBSERVED) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with server.connect() as connection:
        rows = connection.execute("SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
                                  (list(names),)).fetchall()
    return dict(rows)


def postmaster_pid(folder: Path) -> int:
    return int((folder / "postmaster.pid").read_text().split("\n", 1)[0])


def marked(project: Project) -> bool:
    return MARK in (data_dir(project) / "pgdr.conf").read_text()


class HeldRestore:
    """`pgdr restore latest --clean --yes` whose psql sessions wait, after their first byte, until released."""

    def __init__(self, project: Project, args: tuple[str, ...] = ()) -> None:
        workdir = project.root.parent
        self.mark, self.hold = mark_file(workdir, "loading"), mark_file(workdir, "release")
        bin_dir = held_input_bin_dir(workdir, "psql")
        self.process = start_pgdr(project, "restore", "latest", "--clean", "--yes", *args, env={
            "PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_MARK": str(self.mark), "FAULT_MARK_AFTER": "1",
            "FAULT_HOLD": str(self.hold)})
        wait_for(self.mark.exists, self.process, what="psql to be fed")

    def release(self):  # type: ignore[no-untyped-def]
        self.hold.touch()
        return finish(self.process, timeout=300)


def sync_recording_bin_dir(parent: Path) -> Path:
    """initdb that, asked for --sync-only, first writes whether the server is running (a postmaster.pid) to the
    file FAULT_SYNC_SEEN, then runs the real one."""
    return fake_binary(parent, "sync-recording", "initdb",
                       'if [ "$1" = "--sync-only" ]; then\n'
                       '  state=stopped; [ -e "$3/postmaster.pid" ] && state=running\n'
                       '  echo "$state" >> "$FAULT_SYNC_SEEN"\n'
                       'fi\nexec "$REAL" "$@"\n')


def test_a_local_restore_loads_with_the_bulk_settings_then_syncs_and_puts_the_normal_ones_back(live):
    assert settings_of(live) == NORMAL
    restore = HeldRestore(live)

    assert settings_of(live) == BULK, "the load does not run with the bulk settings"
    assert marked(live)
    assert restore_record(live)["status"] == "incomplete"

    result = restore.release()
    assert result.returncode == 0, result.stderr
    assert settings_of(live) == NORMAL, "the normal settings are not back after the restore"
    assert not marked(live)
    assert restore_record(live)["status"] == "complete"
    assert count_orders(live) == ROWS


def test_the_sync_to_disk_runs_on_the_stopped_server_before_the_restore_counts_as_complete(live):
    seen = mark_file(live.root.parent, "sync-seen")
    bin_dir = sync_recording_bin_dir(live.root.parent)
    live.ok("restore", "latest", "--clean", "--yes",
            env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir), "FAULT_SYNC_SEEN": str(seen)})
    assert seen.read_text().split() == ["stopped"], "initdb --sync-only did not run once, on the stopped server"
    assert restore_record(live)["status"] == "complete"
    assert settings_of(live) == NORMAL


def assert_incomplete_with_normal_settings_then_restorable(live, result) -> None:
    """What a load that failed must leave: said, recorded incomplete, the normal settings back, and a restore again
    gives the data back."""
    assert "partial restore" in result.stderr
    assert restore_record(live)["status"] == "incomplete"
    assert settings_of(live) == NORMAL
    assert not marked(live)
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == ROWS


def test_a_failed_load_leaves_the_restore_incomplete_and_the_normal_settings_back(live):
    bin_dir = fake_binary(live.root.parent, "failing-psql", "psql",
                          'head -c 100 > /dev/null\necho "ERROR:  injected failure" >&2\nexit 3\n')
    result = fails(live, "restore", "latest", "--clean", "--yes", code=8,
                   env={"PGDR_POSTGRES__BIN_DIR": str(bin_dir)})
    assert_incomplete_with_normal_settings_then_restorable(live, result)


def test_the_server_killed_during_the_load_leaves_the_restore_incomplete_and_restarts_with_the_normal_settings(live):
    restore = HeldRestore(live)
    loading_pid = postmaster_pid(data_dir(live))
    os.kill(loading_pid, signal.SIGKILL)

    result = restore.release()
    assert result.returncode == 8, result.stderr
    assert postmaster_pid(data_dir(live)) != loading_pid, result.stdout + result.stderr
    assert_incomplete_with_normal_settings_then_restorable(live, result)


def test_pgdr_killed_during_the_load_leaves_it_incomplete_said_by_status_and_mended_by_up(live):
    restore = HeldRestore(live)
    os.kill(restore.process.pid, signal.SIGKILL)
    restore.process.wait(timeout=30)
    kill_group(restore.process)  # the held psql sessions

    assert restore_record(live)["status"] == "incomplete"
    assert settings_of(live) == BULK, "the server was expected to keep running as pgdr left it"
    status = live.ok("status")
    assert "did not complete" in status.stderr + status.stdout
    assert "bulk-load settings" in status.stderr + status.stdout

    up = live.ok("up")
    assert "restarting it with the normal settings" in up.stderr + up.stdout
    assert settings_of(live) == NORMAL
    assert not marked(live)
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == ROWS
    assert "bulk-load" not in live.ok("status").stderr


def test_a_server_stopped_while_on_the_bulk_settings_is_synced_before_up_starts_it_with_the_normal_ones(live):
    restore = HeldRestore(live)
    os.kill(restore.process.pid, signal.SIGKILL)
    restore.process.wait(timeout=30)
    kill_group(restore.process)
    live.ok("down")
    assert marked(live)

    seen = mark_file(live.root.parent, "sync-seen")
    up = live.ok("up", env={"PGDR_POSTGRES__BIN_DIR": str(sync_recording_bin_dir(live.root.parent)),
                            "FAULT_SYNC_SEEN": str(seen)})
    assert "last ran with the bulk-load settings" in up.stderr + up.stdout
    assert seen.read_text().split() == ["stopped"]
    assert settings_of(live) == NORMAL
    assert not marked(live)
    assert restore_record(live)["status"] == "incomplete"
    live.ok("restore", "latest", "--clean", "--yes")
    assert count_orders(live) == ROWS


def test_wal_streamed_from_the_cluster_keeps_wal_level_during_the_load(live):
    with live.connect() as connection:
        connection.execute("SELECT pg_catalog.pg_create_physical_replication_slot('bulk_load_test')")
    try:
        restore = HeldRestore(live)
        during = settings_of(live)
        result = restore.release()
    finally:
        with live.connect() as connection:
            connection.execute("SELECT pg_catalog.pg_drop_replication_slot('bulk_load_test')")
    assert result.returncode == 0, result.stderr
    assert "wal_level kept for the WAL stream" in result.stdout + result.stderr
    assert during == {**BULK, "wal_level": "replica", "max_wal_senders": "10"}
    assert settings_of(live) == NORMAL


def test_a_drill_loads_its_scratch_cluster_in_bulk_and_leaves_the_live_one_alone(live):
    pid = postmaster_pid(data_dir(live))
    result = live.ok("drill")
    assert "bulk load: the server restarts" in result.stdout + result.stderr
    assert postmaster_pid(data_dir(live)) == pid
    assert settings_of(live) == NORMAL


def test_a_split_restore_loads_with_the_bulk_settings_too(live):
    live.ok("backup", env={"PGDR_BACKUP__FORMAT": "split"})
    restore = HeldRestore(live)  # held in the globals' psql
    assert settings_of(live) == BULK
    result = restore.release()
    assert result.returncode == 0, result.stderr
    assert settings_of(live) == NORMAL
    assert count_orders(live) == ROWS


def test_a_restore_of_one_database_keeps_the_server_and_its_settings(live):
    """--database: the other databases are live, so no restart and no bulk settings (the newest backup is the split
    one of the test before)."""
    pid = postmaster_pid(data_dir(live))
    restore = HeldRestore(live, args=("--database", "demo"))
    assert settings_of(live) == NORMAL
    assert postmaster_pid(data_dir(live)) == pid
    result = restore.release()
    assert result.returncode == 0, result.stderr
    assert postmaster_pid(data_dir(live)) == pid
    assert count_orders(live) == ROWS


def test_an_external_server_is_never_restarted_nor_given_the_bulk_settings(workdir, pg_server):
    root = workdir / "external"
    root.mkdir()
    root.chmod(0o755)
    config = project_config(pg_server.port).replace('mode = "local"', 'mode = "external"')
    (root / "pgdr.toml").write_text("\n".join(line for line in config.splitlines()
                                              if not line.startswith("settings = ")) + "\n")
    write_dotenv(root / ".env")
    project = Project(root, pg_server.port, clean_environment())
    project.ok("init")
    load_sample_data(project, 200)
    project.ok("backup")
    before, pid = settings_of(project), postmaster_pid(pg_server.data_dir)

    restore = HeldRestore(project)
    assert settings_of(project) == before
    assert postmaster_pid(pg_server.data_dir) == pid
    result = restore.release()

    assert result.returncode == 0, result.stderr
    assert "bulk load" not in result.stdout + result.stderr
    assert " at a time" in result.stdout  # database by database, where FILE_COPY would be inserted
    assert "copy of its template's files" not in result.stdout + result.stderr  # only in a bulk load
    assert settings_of(project) == before
    assert postmaster_pid(pg_server.data_dir) == pid
    assert count_orders(project) == 200


def test_on_the_newest_major_the_bulk_load_starts_without_wal_summaries_and_they_come_back():
    """PostgreSQL 17+ refuses to start with summarize_wal on and wal_level minimal: the restore completing with
    wal_level minimal shows the bulk load turned it off; afterwards it is on again (pgdr up's setting)."""
    with cluster_project(settings="{ synchronous_commit = false }") as project:
        environment = on_major(project, "newest")
        load_sample_data(project, 500)
        project.ok("backup", env=environment)
        result = project.ok("restore", "latest", "--clean", "--yes", env=environment)
        assert "wal_level minimal" in result.stdout + result.stderr
        assert settings_of(project, (*OBSERVED, "summarize_wal")) == {**NORMAL, "summarize_wal": "on"}
        assert restore_record(project)["status"] == "complete"
        assert count_orders(project) == 500
