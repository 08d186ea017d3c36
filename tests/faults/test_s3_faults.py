"""S3 faults mid-upload and mid-download, injected by an HTTP proxy in front of moto's server
(tests/faults/http_fault_proxy.py): 503s, connection resets, slow responses, a file size limit on the local copy.
Transient faults are retried with a warning line each and the operation completes; lasting ones fail with exit
11, and leave no listed backup, no pending multipart upload and no local copy; the server is never touched.

Covered elsewhere, not repeated: an upload cut for good by a TCP proxy
(tests/end_to_end/test_s3_recovery.py::test_an_upload_cut_off_midway_leaves_no_listed_backup), a dump dying
after parts were uploaded
(test_s3_recovery.py::test_a_dump_dying_after_parts_were_uploaded_aborts_the_multipart_upload), a transient reset
on upload and download at the storage layer (tests/integration/test_s3_storage.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from faults.fault_helpers import (
    assert_clean_failure,
    cluster_project,
    list_json,
    new_bucket,
    s3_keys,
    s3_pending,
    server_state,
    tree_snapshot,
    use_s3,
)
from faults.http_fault_proxy import Fault, FaultProxy

pytestmark = pytest.mark.s3
ROWS = 260_000  # ~10.5 MB uncompressed: two multipart parts (8 MiB + the rest)


@pytest.fixture(scope="module")
def s3_live(moto_server) -> Iterator:
    """A cluster with ~10 MB of data, backups uncompressed to S3 only, one good backup under base/."""
    with cluster_project() as project:
        bucket = new_bucket(moto_server)
        use_s3(project, moto_server, bucket)
        project.environment["PGDR_BACKUP__COMPRESSION"] = "none"
        with project.connect("demo") as connection:
            connection.execute(f"CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS t "
                               f"FROM generate_series(1, {ROWS}) g")
        project.ok("backup")
        [record] = list_json(project, "--from", "s3")
        project.bucket, project.base_key = bucket, str(record["key"])  # type: ignore[attr-defined]
        yield project


def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/"


def through(proxy: FaultProxy, prefix: str | None = None, **extra: str) -> dict[str, str]:
    environment = {"AWS_ENDPOINT_URL": proxy.url, **extra}
    if prefix is not None:
        environment["PGDR_S3__PREFIX"] = prefix
    return environment


def listed(project, prefix: str) -> list[dict[str, object]]:
    return list_json(project, "--from", "s3", env={"PGDR_S3__PREFIX": prefix})


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("⚠️")]


TRANSIENT_UPLOAD_FAULTS = {
    "503-twice-on-upload-part": ([Fault("UploadPart", "503", times=2)], "HTTP 503"),
    "503-on-create-and-complete": ([Fault("CreateMultipartUpload", "503"), Fault("CompleteMultipartUpload", "503")],
                                   "HTTP 503"),
    "reset-once-on-upload-part": ([Fault("UploadPart", "reset", times=1)], "retrying"),
    "slow-every-request": ([Fault("*", "delay", times=None, seconds=0.4)], ""),
}


@pytest.mark.parametrize("case", sorted(TRANSIENT_UPLOAD_FAULTS))
def test_transient_s3_faults_mid_upload_are_retried_with_warnings_and_the_backup_completes(s3_live, moto_server,
                                                                                          case):
    faults, reported = TRANSIENT_UPLOAD_FAULTS[case]
    prefix = fresh_prefix()
    proxy = FaultProxy(moto_server.port, faults).start()
    try:
        result = s3_live.ok("backup", env=through(proxy, prefix))
    finally:
        proxy.stop()
    assert all(fault.applied == fault.times for fault in faults if fault.times), "a fault was never injected"
    for fault in faults:
        if fault.times is None:  # for good: every request it matches went through it
            assert fault.applied == fault.seen == len(proxy.log), proxy.log
            assert proxy.applied(fault.action, "UploadPart") >= 2, f"the {fault.action} never hit an upload part"
    if reported:
        assert any("retrying" in line and reported in line for line in warnings(result)), result.stderr
    else:
        assert warnings(result) == [], "a slow but working network printed warnings"
    [record] = listed(s3_live, prefix)
    assert record["verified"] is True
    body = moto_server.client("s3").get_object(Bucket=s3_live.bucket, Key=prefix + str(record["key"]))["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record["sha256"], "the stored object is not what the manifest says"
    assert len(body) > 8 * 1024 * 1024 and proxy.passed("UploadPart") >= 2, "not a multipart upload"
    assert s3_pending(moto_server, s3_live.bucket) == []


LASTING_UPLOAD_FAULTS = {
    "503-for-good-on-upload-part": (Fault("UploadPart", "503", times=None), "upload part 1"),
    "reset-for-good-on-upload-part": (Fault("UploadPart", "reset", times=None), "upload part 1"),
    "503-for-good-on-complete": (Fault("CompleteMultipartUpload", "503", times=None), "complete the upload"),
}


@pytest.mark.parametrize("case", sorted(LASTING_UPLOAD_FAULTS))
def test_lasting_s3_faults_mid_upload_fail_with_exit_11_and_leave_no_backup_and_no_pending_upload(
        s3_live, moto_server, case):
    fault, stage = LASTING_UPLOAD_FAULTS[case]
    prefix = fresh_prefix()
    state = server_state(s3_live)
    proxy = FaultProxy(moto_server.port, [fault]).start()
    try:
        result = s3_live.pgdr("backup", env=through(proxy, prefix, AWS_MAX_ATTEMPTS="2"))
    finally:
        proxy.stop()
    assert_clean_failure(result, 11, stage)
    assert any("retrying" in line or "trying again" in line for line in warnings(result)), result.stderr
    assert proxy.passed("AbortMultipartUpload") == 1, "the multipart upload was not aborted"
    assert s3_keys(moto_server, s3_live.bucket, prefix) == []
    assert s3_pending(moto_server, s3_live.bucket) == []
    assert listed(s3_live, prefix) == []
    assert server_state(s3_live) == state


def filler_rows(project) -> int:
    with project.connect("demo") as connection:
        return int(connection.execute("SELECT count(*) FROM filler").fetchone()[0])


def test_a_download_cut_midway_then_503s_then_slow_is_resumed_and_the_restore_completes(s3_live, moto_server):
    faults = [Fault("GetObject", "cut", path_suffix=".sql", after_bytes=3_000_000),
              Fault("GetObject", "503", times=2, path_suffix=".sql"),
              Fault("GetObject", "trickle", times=None, path_suffix=".sql", seconds=0.01)]
    with s3_live.connect("demo") as connection:
        connection.execute("DELETE FROM filler WHERE id > 1000")
    proxy = FaultProxy(moto_server.port, faults).start()
    try:
        result = s3_live.ok("restore", "latest", "--from", "s3", "--clean", "--yes", env=through(proxy))
    finally:
        proxy.stop()
    assert [fault.applied for fault in faults[:2]] == [1, 2] and faults[2].applied >= 1
    first, *resumed = proxy.ranges("GetObject", ".sql")
    assert first == "" and len(resumed) == 1 + 2, proxy.ranges("GetObject", ".sql")  # the cut, two 503s, then ok
    assert len(set(resumed)) == 1 and resumed[0].startswith("bytes=") and resumed[0].endswith("-"), resumed
    offset = int(resumed[0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 3_000_000, f"the download started again from byte {offset}, not where the cut stopped it"
    lines = warnings(result)
    assert any("interrupted at byte" in line and "resuming" in line for line in lines), result.stderr
    assert any("GetObject: retrying" in line and "HTTP 503" in line for line in lines), result.stderr
    assert filler_rows(s3_live) == ROWS
    assert s3_live.base_key in tree_snapshot(s3_live.backups), "the checked local copy was not kept"


LASTING_DOWNLOAD_FAULTS = {
    "cut-for-good": (Fault("GetObject", "cut", times=None, path_suffix=".sql", after_bytes=2_000_000),
                     "download of"),
    "503-for-good": (Fault("GetObject", "503", times=None, path_suffix=".sql"), "GetObject failed"),
}


@pytest.mark.parametrize("case", sorted(LASTING_DOWNLOAD_FAULTS))
def test_lasting_s3_faults_mid_download_fail_with_exit_11_keep_no_local_copy_and_leave_the_server_alone(
        s3_live, moto_server, case):
    fault, words = LASTING_DOWNLOAD_FAULTS[case]
    local = s3_live.backups / s3_live.base_key
    local.unlink(missing_ok=True)
    tree, state = tree_snapshot(s3_live.backups), server_state(s3_live)
    proxy = FaultProxy(moto_server.port, [fault]).start()
    try:
        result = s3_live.pgdr("restore", "latest", "--from", "s3", "--clean", "--yes",
                              env=through(proxy, AWS_MAX_ATTEMPTS="2"))
    finally:
        proxy.stop()
    assert_clean_failure(result, 11, words)
    assert tree_snapshot(s3_live.backups) == tree, "a partial download was left (or a safety backup taken)"
    assert server_state(s3_live) == state


def prlimit(project, size: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """pgdr under RLIMIT_FSIZE (every file it writes stops at `size` bytes with EFBIG, like a full disk)."""
    return subprocess.run(["prlimit", f"--fsize={size}", "--", sys.executable, "-m", "pgdr", *args],
                          cwd=project.root, env={**project.environment, **(env or {})}, capture_output=True,
                          text=True, timeout=240)


def test_local_disk_full_while_backing_up_to_local_and_s3_aborts_the_s3_upload_too(s3_live, moto_server):
    """The limit sits between one part (8 MiB) plus a chunk (1 MiB) and the dump's size (~10.3 MB): the S3 upload
    has a part stored when the local file hits the limit."""
    prefix = fresh_prefix()
    tree = tree_snapshot(s3_live.backups)
    proxy = FaultProxy(moto_server.port, []).start()  # no faults: it only records the requests
    try:
        result = prlimit(s3_live, 9_700_000, "backup", env=through(
            proxy, prefix, PGDR_BACKUP__TARGETS='["local", "s3"]'))
    finally:
        proxy.stop()
    assert_clean_failure(result, 11, "file size limit reached while writing")
    assert proxy.passed("UploadPart") >= 1, "no part had been uploaded when the disk filled up"
    assert proxy.passed("AbortMultipartUpload") == 1
    assert s3_keys(moto_server, s3_live.bucket, prefix) == []
    assert s3_pending(moto_server, s3_live.bucket) == []
    assert tree_snapshot(s3_live.backups) == tree


def test_local_disk_full_while_downloading_a_backup_to_restore_refuses_before_the_server_is_touched(s3_live):
    (s3_live.backups / s3_live.base_key).unlink(missing_ok=True)
    tree, state = tree_snapshot(s3_live.backups), server_state(s3_live)
    record = s3_live.root / ".pgdr" / "last-restore.json"
    record_before = record.read_bytes() if record.exists() else None
    result = prlimit(s3_live, 1_000_000, "restore", "latest", "--from", "s3", "--clean", "--yes")
    assert_clean_failure(result, 11, "file size limit reached while writing")
    assert tree_snapshot(s3_live.backups) == tree
    assert server_state(s3_live) == state
    assert (record.read_bytes() if record.exists() else None) == record_before
    assert json.loads(s3_live.ok("list", "--json").stdout) == []
