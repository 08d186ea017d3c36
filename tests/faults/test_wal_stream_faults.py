"""pgdr wal stream against failures: the streamer killed with -9 mid-segment and started again, the server
restarted under it, S3 answering 503 and resetting connections (tests/faults/http_fault_proxy.py in front of
moto), a spool over wal.spool_max_size. In each case the archive ends up with every segment from the first to the
newest, which pg_waldump reads in one pass; nothing leaves the spool before every target has it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from end_to_end.wal_stream_helpers import (
    assert_no_gap,
    assert_waldump_reads,
    current_lsn,
    decode_to,
    has_segments,
    local_archive,
    receivers_of,
    start_streamer,
    switch_segments,
)
from faults.fault_helpers import assert_clean_failure, cluster_project, new_bucket, s3_keys
from faults.http_fault_proxy import Fault, FaultProxy
from harness import Project
from moto_fixtures import REGION, MotoServer
from pgdr.storage.base import StoredObject
from pgdr.wal.archive import ArchiveListing, Segment, is_segment_name

PREFIX = "walfaults/"


@pytest.fixture(scope="module")
def wal_cluster() -> Iterator[Project]:
    """One managed cluster for the module; each test streams with a spool and a slot of its own."""
    with cluster_project(init=False) as project:
        yield project


def own(workdir: Path, slot: str, **extra: str) -> dict[str, str]:
    return {"PGDR_WAL__SPOOL_DIR": str(workdir / f"spool-{slot}"), "PGDR_WAL__SLOT": slot, **extra}


def spool_segments(spool: Path) -> list[str]:
    return sorted(path.name for path in spool.iterdir() if is_segment_name(path.name)) if spool.exists() else []


def slot_active(project: Project, slot: str) -> bool:
    with project.connect() as connection:
        row = connection.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
    return bool(row and row[0])


def check_local_archive(project: Project, folder: Path, last: str) -> None:
    listing = local_archive(project)
    needed = assert_no_gap(listing)
    decode_to(lambda key: (project.backups / key).read_bytes(), listing, folder)
    assert_waldump_reads(folder, needed[0], Segment.from_name(last))


def test_kill_9_mid_segment_then_a_restart_leaves_no_gap(wal_cluster: Project, workdir: Path):
    env = own(workdir, "killed")
    spool = Path(env["PGDR_WAL__SPOOL_DIR"])
    first = start_streamer(wal_cluster, workdir / "first.log", env)
    try:
        before = switch_segments(wal_cluster, 1)
        first.wait_for(lambda: has_segments(local_archive(wal_cluster), before), "the first segment is stored")
        with wal_cluster.connect() as connection:  # mid-segment
            connection.execute("INSERT INTO wal_filler (payload) SELECT md5(g::text) FROM generate_series(1, 3000) g")
        growing = Segment.of_lsn(current_lsn(wal_cluster), 1)
        first.wait_for(lambda: growing.name in local_archive(wal_cluster).partials, "the growing segment is stored")
        assert len(receivers_of(spool)) == 1
        os.kill(first.process.pid, signal.SIGKILL)  # pgdr alone: its pg_receivewal must die with it
        first.process.wait()
    finally:
        first.kill()
    while receivers_of(spool) or slot_active(wal_cluster, "killed"):
        time.sleep(0.05)  # PR_SET_PDEATHSIG: pg_receivewal ends, and the slot is free for the next streamer

    during = switch_segments(wal_cluster, 2)  # WAL written while nothing streams: the slot keeps it
    second = start_streamer(wal_cluster, workdir / "second.log", env)
    try:
        second.wait_for(lambda: has_segments(local_archive(wal_cluster), [growing.name, *during]),
                        "the segments written while it was down are stored")
        assert slot_active(wal_cluster, "killed")
        second.process.send_signal(signal.SIGTERM)
        assert second.finish() == 0, second.output()
    finally:
        second.kill()
    assert "is active" not in second.output(), "the old receiver still held the slot"
    check_local_archive(wal_cluster, workdir / "decoded", during[-1])
    assert spool_segments(spool) == [], second.output()


def test_a_server_restart_under_the_streamer_loses_nothing(wal_cluster: Project, workdir: Path):
    env = own(workdir, "restarted")
    streamer = start_streamer(wal_cluster, workdir / "stream.log", env)
    try:
        before = switch_segments(wal_cluster, 1)
        streamer.wait_for(lambda: has_segments(local_archive(wal_cluster), before), "a segment is stored")
        wal_cluster.ok("down")
        streamer.wait_for(lambda: "pg_receivewal stopped" in streamer.output(), "the receiver's loss is reported")
        wal_cluster.ok("up")
        after = switch_segments(wal_cluster, 2)
        streamer.wait_for(lambda: has_segments(local_archive(wal_cluster), after), "the segments after the restart")
        streamer.process.send_signal(signal.SIGTERM)
        assert streamer.finish() == 0, streamer.output()
    finally:
        streamer.kill()
    assert "Traceback" not in streamer.output()
    check_local_archive(wal_cluster, workdir / "decoded", after[-1])


# ---- S3 through the fault proxy

def s3_env(moto_server: MotoServer, proxy: FaultProxy, bucket: str, workdir: Path, slot: str,
           **extra: str) -> dict[str, str]:
    return {**moto_server.environment(proxy.url), "AWS_MAX_ATTEMPTS": "1", "PGDR_BACKUP__TARGETS": '["s3"]',
            "PGDR_S3__BUCKET": bucket, "PGDR_S3__PREFIX": PREFIX, "PGDR_S3__REGION": REGION,
            **own(workdir, slot), **extra}


def s3_listing(moto_server: MotoServer, bucket: str) -> ArchiveListing:
    return ArchiveListing.of(StoredObject(key.removeprefix(PREFIX), 0, None)  # type: ignore[arg-type]
                             for key in s3_keys(moto_server, bucket, PREFIX + "wal/"))


def check_s3_archive(moto_server: MotoServer, bucket: str, folder: Path, last: str) -> None:
    listing = s3_listing(moto_server, bucket)
    needed = assert_no_gap(listing)
    client = moto_server.client("s3")
    decode_to(lambda key: client.get_object(Bucket=bucket, Key=PREFIX + key)["Body"].read(), listing, folder)
    assert_waldump_reads(folder, needed[0], Segment.from_name(last))


def test_s3_503s_and_resets_keep_segments_in_the_spool_until_they_arrive(wal_cluster: Project, workdir: Path,
                                                                           moto_server: MotoServer):
    bucket = new_bucket(moto_server)
    refusing = Fault("PutObject", "503", times=None, path_suffix=".gz")
    resets = Fault("PutObject", "reset", times=2, path_suffix=".gz")
    proxy = FaultProxy(moto_server.port, [refusing, resets]).start()
    env = s3_env(moto_server, proxy, bucket, workdir, "s3_faults")
    spool = Path(env["PGDR_WAL__SPOOL_DIR"])
    streamer = start_streamer(wal_cluster, workdir / "stream.log", env)
    try:
        switched = switch_segments(wal_cluster, 2)
        streamer.wait_for(lambda: set(switched) <= set(spool_segments(spool)) and refusing.applied >= 2
                          and "it stays in the spool" in streamer.output(), "the segments wait in the spool")
        assert not has_segments(s3_listing(moto_server, bucket), switched)
        refusing.times = refusing.applied  # S3 is back, but resets two connections first
        streamer.wait_for(lambda: has_segments(s3_listing(moto_server, bucket), switched), "the segments arrive")
        streamer.wait_for(lambda: not set(switched) & set(spool_segments(spool)), "the spool lets them go")
        streamer.process.send_signal(signal.SIGTERM)
        assert streamer.finish() == 0, streamer.output()
    finally:
        streamer.kill()
        proxy.stop()
    assert resets.applied == 2 and "Traceback" not in streamer.output()
    check_s3_archive(moto_server, bucket, workdir / "decoded", switched[-1])


def test_a_full_spool_is_an_error_naming_itself_and_nothing_is_lost(wal_cluster: Project, workdir: Path,
                                                                    moto_server: MotoServer):
    bucket = new_bucket(moto_server)
    refusing = Fault("PutObject", "503", times=None, path_suffix=".gz")
    proxy = FaultProxy(moto_server.port, [refusing]).start()
    env = s3_env(moto_server, proxy, bucket, workdir, "s3_full", PGDR_WAL__SPOOL_MAX_SIZE="40MiB")
    spool = Path(env["PGDR_WAL__SPOOL_DIR"])
    try:
        streamer = start_streamer(wal_cluster, workdir / "full.log", env)
        try:
            switched = switch_segments(wal_cluster, 3)
            code = streamer.finish()
        finally:
            streamer.kill()
        failed = subprocess.CompletedProcess([], code, "", streamer.output())
        assert_clean_failure(failed, 11, str(spool), "wal.spool_max_size", "nothing was deleted")
        assert set(switched) <= set(spool_segments(spool)), "a segment left the spool without being stored"
        assert receivers_of(spool) == []

        refusing.times = refusing.applied  # S3 is back; the spool is stored first
        again = start_streamer(wal_cluster, workdir / "again.log", {**env, "PGDR_WAL__SPOOL_MAX_SIZE": "1GiB"})
        try:
            again.wait_for(lambda: has_segments(s3_listing(moto_server, bucket), switched), "the spool is stored")
            again.process.send_signal(signal.SIGTERM)
            assert again.finish() == 0, again.output()
        finally:
            again.kill()
    finally:
        proxy.stop()
    assert spool_segments(spool) == []
    check_s3_archive(moto_server, bucket, workdir / "decoded", switched[-1])
