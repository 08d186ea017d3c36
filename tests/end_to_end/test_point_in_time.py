"""Point-in-time recovery as a user runs it: `pgdr wal stream` beside a real cluster, a physical base backup,
commits whose server times are known, then `pgdr recover --to T`. The marker table says, row by row, whether the
recovered cluster holds exactly what was committed before T.

Failures are made the way they happen: a segment deleted from the archive, a byte flipped in one, a target past
the end. Each must be a clear error before the cluster opens on an earlier state, and the live cluster must come
back as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from end_to_end.e2e_helpers import newer_binaries, real_bin_dir, start_over_on
from harness import SUPERUSER_PASSWORD, Project
from moto_fixtures import S3_PREFIX, aws_project
from pgdr.wal.archive import parse_wal_key
from sync_helpers import poll_until

STREAM_ENVIRONMENT = {"PGDR_WAL__RPO_OBJECTIVE": "1s", "PGDR_BACKUP__FORMAT": "physical"}


@dataclass
class History:
    """Commits of marker rows, each with the server's clock read after it committed."""

    committed_at: dict[int, datetime] = field(default_factory=dict)
    segments: dict[int, str] = field(default_factory=dict)  # marker id -> the WAL segment its commit is in


def start_streamer(project: Project, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pgdr", "wal", "stream"], cwd=project.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**project.environment, **STREAM_ENVIRONMENT, **(extra or {})})


def stop_streamer(streamer: subprocess.Popen[str]) -> str:
    """SIGTERM: it uploads what it has (the growing segment too) and exits 0."""
    streamer.send_signal(signal.SIGTERM)
    output, _ = streamer.communicate(timeout=120)
    assert streamer.returncode == 0, f"wal stream exited {streamer.returncode}:\n{output}"
    return output


def commit_markers(project: Project, ids: range, history: History, switch_after: set[int] | None = None) -> None:
    with project.connect("demo") as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS marker (id int PRIMARY KEY)")
        for marker in ids:
            connection.execute("INSERT INTO marker VALUES (%s)", (marker,))
            row = connection.execute("SELECT clock_timestamp(), pg_walfile_name(pg_current_wal_insert_lsn())")\
                .fetchone()
            history.committed_at[marker], history.segments[marker] = row[0], row[1]
            if marker in (switch_after or set()):
                connection.execute("SELECT pg_switch_wal()")


def markers(project: Project) -> list[int]:
    with project.connect("demo") as connection:
        return [row[0] for row in connection.execute("SELECT id FROM marker ORDER BY id")]


def between(history: History, marker: int) -> str:
    """A moment after `marker` committed and before the next one did."""
    return history.committed_at[marker].isoformat(sep=" ")


def archive_markers(project: Project) -> History:
    """A base backup, then markers 1..6 in three WAL segments (switches after 2 and 4), all archived."""
    history = History()
    commit_markers(project, range(0, 1), history)
    streamer = start_streamer(project)
    try:
        project.ok("backup", env=STREAM_ENVIRONMENT)
        commit_markers(project, range(1, 7), history, switch_after={2, 4})
    finally:
        stop_streamer(streamer)
    return history


@pytest.fixture
def streamed(running_project: Project) -> Iterator[tuple[Project, History]]:
    yield running_project, archive_markers(running_project)


def recover(project: Project, *arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return project.pgdr("recover", *arguments, "--yes", env={**STREAM_ENVIRONMENT, **(env or {})}, timeout=600)


def wal_objects(project: Project) -> dict[str, Path]:
    folder = project.backups / "wal"
    return {parsed.name: path for path in folder.iterdir()
            if (parsed := parse_wal_key("wal/" + path.name)) is not None and parsed.kind == "segment"}


def test_recover_to_a_time_gives_exactly_the_rows_committed_before_it(streamed):
    project, history = streamed
    result = recover(project, "--to", between(history, 3), "--clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert markers(project) == [0, 1, 2, 3]
    again = recover(project, "--clean")  # no target: all the WAL there is, from the same base backup
    assert again.returncode == 0, again.stdout + again.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]
    assert not list(project.root.joinpath(".pgdr").glob("pgdata.before-recover-*")), "set-aside folder left"


def test_recover_to_a_time_under_pgbench_load_gives_exactly_the_rows_committed_before_it(running_project):
    """The markers commit while pgbench writes on every core: a T between two of them still gives exactly the
    markers before it, and the recovered cluster holds the load's rows from before T."""
    project, history = running_project, History()
    pgbench = str(real_bin_dir() / "pgbench")
    environment = {"PGHOST": "127.0.0.1", "PGPORT": str(project.port), "PGUSER": "postgres",
                   "PGPASSWORD": SUPERUSER_PASSWORD, "PGDATABASE": "demo", "PATH": "/usr/bin:/bin"}
    subprocess.run([pgbench, "-i", "-q", "-s", "1"], env=environment, check=True, capture_output=True)
    commit_markers(project, range(0, 1), history)
    streamer = start_streamer(project)
    try:
        project.ok("backup", env=STREAM_ENVIRONMENT)
        load = subprocess.Popen([pgbench, "-c", "2", "-j", "2", "-T", "600"], env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll_until(lambda: history_rows(project) > 0)
            commit_markers(project, range(1, 4), history, switch_after={2})
            before = history_rows(project)
            poll_until(lambda: history_rows(project) > before)
            commit_markers(project, range(4, 7), history)
        finally:
            load.terminate()
            load.wait(timeout=60)
    finally:
        stop_streamer(streamer)
    result = recover(project, "--to", between(history, 3), "--clean")
    assert result.returncode == 0, result.stdout + result.stderr
    assert markers(project) == [0, 1, 2, 3]
    assert history_rows(project) > 0


def history_rows(project: Project) -> int:
    with project.connect("demo") as connection:
        return connection.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]


def test_a_target_past_the_end_is_an_error_naming_the_last_transaction_and_the_cluster_comes_back(streamed):
    project, history = streamed
    result = recover(project, "--to", (history.committed_at[6] + timedelta(hours=1)).isoformat(), "--clean")
    assert result.returncode == 8, result.stdout + result.stderr
    assert "past the end of the archived WAL" in result.stderr
    assert f"{history.committed_at[6]:%Y-%m-%d %H:%M}" in result.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6], "the live cluster did not come back as it was"


def test_a_gap_in_the_archive_is_refused_before_anything_is_touched(streamed):
    project, history = streamed
    wal_objects(project)[history.segments[3]].unlink()
    data_dir = project.root / ".pgdr" / "pgdata"
    before = (data_dir / "PG_VERSION").stat().st_ino
    result = recover(project, "--clean")
    assert result.returncode == 9, result.stdout + result.stderr
    assert history.segments[3] in result.stderr and "gap" in result.stderr
    assert (data_dir / "PG_VERSION").stat().st_ino == before, "the data directory was touched"
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]
    short = recover(project, "--to", between(history, 1), "--clean")  # before the gap: still recoverable
    assert short.returncode == 0, short.stdout + short.stderr
    assert markers(project) == [0, 1]


def test_a_target_behind_a_gap_fails_instead_of_stopping_early(streamed):
    project, history = streamed
    wal_objects(project)[history.segments[3]].unlink()
    result = recover(project, "--to", between(history, 5), "--clean")
    assert result.returncode == 9, result.stdout + result.stderr
    assert history.segments[3] in result.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]


def test_a_corrupt_segment_fails_the_recovery(streamed):
    project, history = streamed
    stored = wal_objects(project)[history.segments[3]]
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    result = recover(project, "--clean")
    assert result.returncode == 9, result.stdout + result.stderr
    assert history.segments[3] in result.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]


def test_live_data_is_not_replaced_without_clean(streamed):
    project, history = streamed
    result = recover(project, "--to", between(history, 2))
    assert result.returncode == 3 and "--clean" in result.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.s3
def test_recover_from_s3_alone_with_server_and_local_files_gone(project, moto_server, s3_bucket, ssm_path):
    live = aws_project(project, moto_server, s3_bucket, ssm_path)
    live.ok("up")
    live.ok("init")
    history = History()
    streamer = start_streamer(live)
    try:
        live.ok("backup", env=STREAM_ENVIRONMENT)
        commit_markers(live, range(1, 5), history, switch_after={2})
    finally:
        stop_streamer(streamer)
    keys = [item["Key"] for item in moto_server.client("s3").list_objects_v2(Bucket=s3_bucket,
                                                                              Prefix=S3_PREFIX + "wal/")["Contents"]]
    assert any(key.endswith(".gz") and "/wal/0000000" in key for key in keys)
    live.ok("down")
    shutil.rmtree(live.root / ".pgdr")
    result = recover(live, "--from", "s3", "--to", between(history, 3))
    assert result.returncode == 0, result.stdout + result.stderr
    assert markers(live) == [1, 2, 3]


def test_recover_to_a_named_restore_point_on_the_newer_major(running_project):
    project, history = running_project, History()
    newer = newer_binaries()
    start_over_on(project, newer)
    streamer = start_streamer(project, newer)
    try:
        project.ok("backup", env={**STREAM_ENVIRONMENT, **newer})
        commit_markers(project, range(1, 3), history)
        project.ok("wal", "mark", "before-the-mistake", env=newer)
        commit_markers(project, range(3, 5), history)
    finally:
        stop_streamer(streamer)
    result = recover(project, "--to-name", "before-the-mistake", "--clean", env=newer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert markers(project) == [1, 2]
    with project.connect() as connection:
        assert connection.execute("SHOW server_version_num").fetchone()[0] >= "180000"
    project.ok("down", env=newer)


def test_a_drill_to_a_point_leaves_the_live_cluster_alone(streamed):
    project, history = streamed
    result = project.pgdr("drill", "--to", between(history, 4), "--json", env=STREAM_ENVIRONMENT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]



FORGED = {
    "a member that climbs out": ([("PG_VERSION", b"15\n"), ("../../escaped", b"owned\n")],
                                 "outside the data directory"),
    "no backup_manifest to verify it by": ([("PG_VERSION", b"15\n"), ("global/pg_control", b"\0" * 64),
                                            ("backup_label", b"START TIMELINE: 1\n")], "no backup_manifest"),
}


@pytest.mark.parametrize("forgery", list(FORGED), ids=list(FORGED))
def test_a_forged_base_backup_is_refused_and_the_live_cluster_stays(streamed, forgery):
    """Whoever can write the backup dir replaces the base backup and fixes its manifest's size and sha256: the
    recovery refuses it (a member that climbs out; nothing to verify it by), and the live cluster comes back."""
    project, _ = streamed
    members, refusal = FORGED[forgery]
    stored = next(path for path in project.backups.rglob("*.base.tar.gz"))
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w:gz") as writer:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            writer.addfile(info, io.BytesIO(data))
    stored.write_bytes(hostile.getvalue())
    manifest_file = Path(str(stored) + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(size=len(hostile.getvalue()), sha256=hashlib.sha256(hostile.getvalue()).hexdigest())
    manifest_file.write_text(json.dumps(manifest))
    result = recover(project, "--clean")
    assert result.returncode == 9, result.stdout + result.stderr
    assert refusal in result.stderr
    assert not list(project.root.rglob("escaped")) and not list(project.root.parent.glob("escaped"))
    assert markers(project) == [0, 1, 2, 3, 4, 5, 6]


def test_streaming_goes_on_on_the_new_timeline_after_a_recovery(streamed):
    """The recovered cluster forks a new timeline before the spool's newest WAL: the streamer must resume on it
    (the old timeline's growing segment set aside), so the next mistake is recoverable too; and a point on the old
    timeline after the fork stays recoverable (--timeline 1), which undoes the first recovery."""
    project, history = streamed
    assert recover(project, "--to", between(history, 3), "--clean").returncode == 0
    streamer = start_streamer(project)
    try:
        poll_until(lambda: any(path.name.startswith("00000002.history") or streamer.poll() is not None
                               for path in (project.backups / "wal").iterdir()))
        commit_markers(project, range(10, 12), history)
    finally:
        output = stop_streamer(streamer)
    assert "older timeline" in output
    names = {path.name for path in (project.backups / "wal").iterdir()}
    assert any(name.startswith("00000002") and "history" not in name for name in names), names
    again = recover(project, "--clean")  # all the WAL there is: along timeline 2, from the base backup on 1
    assert again.returncode == 0, again.stdout + again.stderr
    assert markers(project) == [0, 1, 2, 3, 10, 11]
    back = recover(project, "--to", between(history, 5), "--timeline", "1", "--clean")  # the first recovery undone
    assert back.returncode == 0, back.stdout + back.stderr
    assert markers(project) == [0, 1, 2, 3, 4, 5]
