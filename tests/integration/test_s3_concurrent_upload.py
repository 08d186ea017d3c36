"""S3Upload sends parts on background threads while the stream goes on, against moto's HTTP server behind the
HTTP fault proxy (tests/faults/http_fault_proxy.py), here taught to count the UploadPart requests moto works on at
once and to fail one part number for good: the bytes stored are the bytes written, parts overlap (never more
than PARTS_IN_FLIGHT), and a failed part, an abort or a Ctrl-C with parts in flight leave no object and no
pending multipart upload.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit

import pytest

from faults.http_fault_proxy import Fault, FaultProxy, Request
from moto_fixtures import MotoServer, aws_env, moto_server, object_keys, pending_uploads, s3_bucket
from pgdr.config import S3Settings
from pgdr.errors import StorageError
from pgdr.storage import s3
from pgdr.storage.s3 import (
    PART_ATTEMPTS,
    PART_SIZE,
    PARTS_IN_FLIGHT,
    UPLOAD_MEMORY,
    S3Storage,
    S3Upload,
    make_client,
    part_size_for,
    parts_in_flight,
)

pytestmark = pytest.mark.s3
FIXTURES = (aws_env, moto_server, s3_bucket)  # pytest finds them here; named so linters see them used
MIB = 1024 * 1024
PART = 5 * MIB  # S3's (and moto's) smallest part but the last
PREFIX = "postgres/"
KEY = "20251116/postgres-all-20251116-095831.sql.gz"


@dataclass
class PartProxy(FaultProxy):
    """The fault proxy, counting the UploadPart requests under way at once (from the request's head to the end of
    its response, a "delay" fault included); part number `failing_part` is answered 503 every time."""

    failing_part: int = 0
    uploading: int = 0
    most_uploading: int = 0
    _current: threading.local = field(default_factory=threading.local, kw_only=True)

    def _fault_for(self, request: Request) -> Fault | None:
        if request.operation != "UploadPart":
            return super()._fault_for(request)
        if part_number(request) == self.failing_part:
            with self._lock:
                self.log.append(("UploadPart", "503"))
            return Fault("UploadPart", "503", times=None)
        with self._lock:
            self.uploading += 1
            self.most_uploading = max(self.most_uploading, self.uploading)
        self._current.counted = True  # one thread per connection, one request at a time on it
        return super()._fault_for(request)

    def _relay_response(self, upstream: BinaryIO, client: socket.socket, method: str, fault: Fault | None) -> bool:
        try:
            return super()._relay_response(upstream, client, method, fault)
        finally:
            if getattr(self._current, "counted", False):
                self._current.counted = False
                with self._lock:
                    self.uploading -= 1


def part_number(request: Request) -> int:
    return int(parse_qs(urlsplit(request.target).query).get("partNumber", ["0"])[0])


@pytest.fixture
def proxy(aws_env: MotoServer) -> Iterator[PartProxy]:
    """Every UploadPart takes 0.5 s more: parts sent one after the other could not overlap by chance."""
    proxy = PartProxy(aws_env.port, [Fault("UploadPart", "delay", times=None, seconds=0.5)]).start()
    yield proxy
    proxy.stop()


def storage_through(proxy: FaultProxy, bucket: str, messages: list[str]) -> S3Storage:
    """An S3Storage with 5 MiB parts (a few parts without writing much) talking to moto through the proxy."""
    settings = S3Settings(bucket=bucket, prefix=PREFIX, endpoint_url=proxy.url)
    return S3Storage(bucket, PREFIX, make_client(settings, messages.append), report=messages.append, part_size=PART)


def write_all(upload: S3Upload, data: bytes, chunk: int = MIB) -> int:
    """Write data in chunks; returns the most parts that were ever uploading at once, as the upload saw it."""
    most = 0
    for start in range(0, len(data), chunk):
        upload.write(data[start:start + chunk])
        assert upload.buffered < PART, "more than one part is being filled"
        most = max(most, upload.uploading)
    return most


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_nothing_left(moto: MotoServer, bucket: str) -> None:
    assert pending_uploads(moto, bucket) == [], "a multipart upload was left open"
    assert object_keys(moto, bucket) == [], "an object was stored"


def test_parts_upload_side_by_side_and_the_object_is_exactly_the_bytes_written(aws_env, s3_bucket, proxy):
    messages: list[str] = []
    storage = storage_through(proxy, s3_bucket, messages)
    data = os.urandom(6 * PART + 12345)
    upload = storage.open_upload(KEY)
    most_seen_by_the_upload = write_all(upload, data)
    upload.commit()
    assert 2 <= proxy.most_uploading <= PARTS_IN_FLIGHT, "parts did not overlap, or too many were in flight"
    assert most_seen_by_the_upload <= PARTS_IN_FLIGHT
    assert proxy.passed("UploadPart") == 7
    head = aws_env.client("s3").head_object(Bucket=s3_bucket, Key=PREFIX + KEY)
    assert head["ETag"].endswith('-7"'), "expected a seven-part multipart upload"
    assert aws_env.client("s3").get_object(Bucket=s3_bucket, Key=PREFIX + KEY)["Body"].read() == data
    assert pending_uploads(aws_env, s3_bucket) == []
    assert messages == [], "a working network printed warnings"


def test_a_part_failing_for_good_fails_the_upload_with_its_error_and_leaves_nothing(aws_env, s3_bucket, proxy,
                                                                                    monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no botocore retries: only pgdr's own, reported
    proxy.failing_part = 2
    messages: list[str] = []
    storage = storage_through(proxy, s3_bucket, messages)
    upload = storage.open_upload(KEY)
    with pytest.raises(StorageError) as caught:
        write_all(upload, os.urandom(6 * PART))
        upload.commit()
    assert "upload part 2" in caught.value.message and "ServiceUnavailable" in caught.value.message
    assert caught.value.hint
    assert proxy.applied("503", "UploadPart") == PART_ATTEMPTS
    assert sum("upload part 2" in message and "trying again" in message for message in messages) == 2, messages
    assert proxy.passed("AbortMultipartUpload") == 1
    assert proxy.passed("CompleteMultipartUpload") == 0
    assert_nothing_left(aws_env, s3_bucket)
    with pytest.raises(AssertionError):
        upload.write(b"more")  # the upload is over


def test_abort_with_parts_in_flight_lets_them_end_then_leaves_nothing(aws_env, s3_bucket, proxy):
    storage = storage_through(proxy, s3_bucket, [])
    upload = storage.open_upload(KEY)
    write_all(upload, os.urandom(PARTS_IN_FLIGHT * PART), chunk=PART)
    assert upload.uploading >= 1, "no part was in flight"
    upload.abort()
    assert upload.uploading == 0, "abort did not wait for the parts in flight"
    assert proxy.passed("AbortMultipartUpload") == 1
    assert_nothing_left(aws_env, s3_bucket)


def test_abort_does_not_wait_for_a_stuck_part_longer_than_abort_wait(aws_env, s3_bucket, monkeypatch):
    monkeypatch.setattr(s3, "ABORT_WAIT", 0.5)
    proxy = PartProxy(aws_env.port, [Fault("UploadPart", "delay", times=None, seconds=4.0)]).start()
    try:
        upload = storage_through(proxy, s3_bucket, []).open_upload(KEY)
        write_all(upload, os.urandom(2 * PART), chunk=PART)
        started = time.monotonic()
        upload.abort()
        assert time.monotonic() - started < 3.0, "abort waited for the stuck parts"
        assert_nothing_left(aws_env, s3_bucket)
        wait_until(lambda: proxy.passed("UploadPart") == 2 and proxy.uploading == 0)  # they reach moto late
    finally:
        proxy.stop()
    assert_nothing_left(aws_env, s3_bucket)


def test_ctrl_c_while_write_waits_for_a_part_aborts_the_upload(aws_env, s3_bucket):
    """SIGINT to this (the main) thread while write() waits for room for one more part, as in a backup."""
    proxy = PartProxy(aws_env.port, [Fault("UploadPart", "delay", times=None, seconds=2.0)]).start()
    try:
        upload = storage_through(proxy, s3_bucket, []).open_upload(KEY)
        write_all(upload, os.urandom(PARTS_IN_FLIGHT * PART), chunk=PART)
        interrupt = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        interrupt.start()
        with pytest.raises(KeyboardInterrupt):
            upload.write(os.urandom(PART))  # one part more than may be in flight: waits for one to end
        interrupt.join()
    finally:
        proxy.stop()
    assert proxy.passed("AbortMultipartUpload") == 1
    assert proxy.passed("UploadPart") == PARTS_IN_FLIGHT, "the part that waited for room was sent anyway"
    assert_nothing_left(aws_env, s3_bucket)


def test_warnings_from_upload_threads_come_out_one_whole_line_each(capsys):
    threads = [threading.Thread(target=s3.warn, args=(f"S3: upload part {number} failed; trying again",))
               for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == sorted(f"⚠️  S3: upload part {number} failed; trying again" for number in range(8))


def test_memory_held_stays_within_upload_memory_however_large_parts_grow():
    assert parts_in_flight(PART_SIZE) == PARTS_IN_FLIGHT
    assert UPLOAD_MEMORY < 100 * MIB
    for number in range(1, 10001, 1000):
        size = part_size_for(number)
        held = (parts_in_flight(size) + 1) * size  # parts in flight, and the one filling
        assert held <= max(UPLOAD_MEMORY, size), f"part {number}: {held} bytes held"
