"""S3Upload sends parts on background threads while the stream goes on, against moto's HTTP server behind the
HTTP fault proxy (tests/faults/http_fault_proxy.py), here taught to count the UploadPart requests moto works on at
once and to fail one part number for good: the bytes stored are the bytes written, parts overlap (never more
than PARTS_IN_FLIGHT), and a failed part, an abort or a Ctrl-C with parts in flight leave no object and no
pending multipart upload.

No clock decides an outcome: parts in flight are held by the proxy until the test lets them go, and the test
acts when the writing thread is seen parked in S3Upload's own waits (tests/sync_helpers.py). A hang is caught by
the timeout.
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
from moto_fixtures import MotoServer, object_keys, pending_uploads
from pgdr.config import S3Settings
from pgdr.errors import StorageError
from pgdr.storage.s3 import ABORT_WAIT, PART_ATTEMPTS, PARTS_IN_FLIGHT, S3Storage, S3Upload, make_client
from sync_helpers import main_thread_ident, parked_in, poll_until

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]
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
    proxy = PartProxy(aws_env.port, []).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def holding_proxy(aws_env: MotoServer) -> Iterator[PartProxy]:
    """Every UploadPart is held at the proxy until the test sets `release(holding_proxy)`."""
    proxy = PartProxy(aws_env.port, [Fault("UploadPart", "hold", times=None)]).start()
    yield proxy
    proxy.stop()


def release(proxy: FaultProxy) -> threading.Event:
    return proxy.faults[0].release


def storage_through(proxy: FaultProxy, bucket: str, messages: list[str], abort_wait: float = ABORT_WAIT) -> S3Storage:
    """An S3Storage with 5 MiB parts (a few parts without writing much) talking to moto through the proxy."""
    settings = S3Settings(bucket=bucket, prefix=PREFIX, endpoint_url=proxy.url)
    return S3Storage(bucket, PREFIX, make_client(settings, messages.append), report=messages.append, part_size=PART,
                     abort_wait=abort_wait)


def write_all(upload: S3Upload, data: bytes, chunk: int = MIB) -> int:
    """Write data in chunks; returns the most parts that were ever uploading at once, as the upload saw it."""
    most = 0
    for start in range(0, len(data), chunk):
        upload.write(data[start:start + chunk])
        assert upload.buffered < PART, "more than one part is being filled"
        most = max(most, upload.uploading)
    return most


def on_helper_thread(steps: Callable[[], None]) -> threading.Thread:
    helper = threading.Thread(target=steps, daemon=True)
    helper.start()
    return helper


def waits_for_room(thread_ident: int) -> bool:
    """The writer waits for a part in flight to end before it sends the next one."""
    return parked_in(thread_ident, "s3.py", "_wait_for_parts")


def waits_in_abort(thread_ident: int) -> bool:
    return parked_in(thread_ident, "s3.py", "_let_parts_end")


def assert_nothing_left(moto: MotoServer, bucket: str) -> None:
    assert pending_uploads(moto, bucket) == [], "a multipart upload was left open"
    assert object_keys(moto, bucket) == [], "an object was stored"


def test_parts_upload_side_by_side_and_the_object_is_exactly_the_bytes_written(aws_env, s3_bucket, holding_proxy):
    proxy = holding_proxy
    messages: list[str] = []
    storage = storage_through(proxy, s3_bucket, messages)
    data = os.urandom(6 * PART + 12345)
    writer = main_thread_ident()
    held_while_the_writer_waited: list[int] = []

    def let_go_once_full() -> None:
        """Parts stay in flight until PARTS_IN_FLIGHT of them are, and the writer waits for room for the next."""
        poll_until(lambda: proxy.holding >= PARTS_IN_FLIGHT and waits_for_room(writer))
        held_while_the_writer_waited.append(proxy.holding)
        release(proxy).set()

    helper = on_helper_thread(let_go_once_full)
    upload = storage.open_upload(KEY)
    most_seen_by_the_upload = write_all(upload, data)
    upload.commit()
    helper.join()
    assert held_while_the_writer_waited == [PARTS_IN_FLIGHT], "parts did not overlap"
    assert proxy.most_uploading == PARTS_IN_FLIGHT, "more parts were in flight than PARTS_IN_FLIGHT"
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


def test_abort_with_parts_in_flight_lets_them_end_then_leaves_nothing(aws_env, s3_bucket, holding_proxy):
    proxy = holding_proxy
    storage = storage_through(proxy, s3_bucket, [])
    upload = storage.open_upload(KEY)
    write_all(upload, os.urandom(PARTS_IN_FLIGHT * PART), chunk=PART)
    poll_until(lambda: proxy.holding == PARTS_IN_FLIGHT)
    assert upload.uploading == PARTS_IN_FLIGHT
    writer, let_go = main_thread_ident(), release(proxy)
    on_helper_thread(lambda: (poll_until(lambda: waits_in_abort(writer) or let_go.is_set()), let_go.set()))
    upload.abort()  # the parts are let go only once abort waits for them
    in_flight_after_abort = upload.uploading
    let_go.set()
    assert in_flight_after_abort == 0, "abort did not wait for the parts in flight"
    assert proxy.passed("AbortMultipartUpload") == 1
    assert_nothing_left(aws_env, s3_bucket)


def test_abort_does_not_wait_for_a_stuck_part_longer_than_abort_wait(aws_env, s3_bucket, holding_proxy,
                                                                     monkeypatch):
    # The late parts find no upload: S3 answers 404, moto a 500 that botocore would retry a varying number of
    # times before the count below. Without botocore's retries each part reaches moto once (pgdr's own retries
    # stop at abort).
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy = holding_proxy
    upload = storage_through(proxy, s3_bucket, [], abort_wait=0.01).open_upload(KEY)
    write_all(upload, os.urandom(2 * PART), chunk=PART)
    poll_until(lambda: proxy.holding == 2)
    upload.abort()  # an abort that waited for the parts would hang here: they are held until after it
    assert proxy.holding == 2, "abort returned only after the stuck parts ended"
    assert proxy.passed("AbortMultipartUpload") == 1
    assert_nothing_left(aws_env, s3_bucket)
    release(proxy).set()
    poll_until(lambda: proxy.holding == 0 and proxy.uploading == 0)  # they reach moto late
    assert proxy.passed("UploadPart") == 2
    assert_nothing_left(aws_env, s3_bucket)


def test_ctrl_c_while_write_waits_for_a_part_aborts_the_upload(aws_env, s3_bucket, holding_proxy):
    """SIGINT to this (the main) thread while write() waits for room for one more part, as in a backup."""
    proxy = holding_proxy
    upload = storage_through(proxy, s3_bucket, []).open_upload(KEY)
    write_all(upload, os.urandom(PARTS_IN_FLIGHT * PART), chunk=PART)
    writer = main_thread_ident()
    interrupted_while_waiting: list[bool] = []
    write_returned = threading.Event()

    def interrupt_then_let_go() -> None:
        poll_until(lambda: proxy.holding == PARTS_IN_FLIGHT and waits_for_room(writer))
        interrupted_while_waiting.append(True)
        # The frame says the writer is in the wait, but it may be a few instructions short of the blocking call: a
        # signal landing there is only seen at the next one (CPython checks for signals when a lock wait is
        # interrupted, not before it starts). Until the writer leaves the wait, send it again, a second apart.
        while waits_for_room(writer):
            signal.pthread_kill(writer, signal.SIGINT)
            time.sleep(1)
        # the interrupt aborts, giving the parts in flight abort_wait to end: let them go then. On a machine so busy
        # that this thread missed that window, the write has returned by now: stop looking, never hang.
        poll_until(lambda: waits_in_abort(writer) or write_returned.is_set())
        release(proxy).set()

    helper = on_helper_thread(interrupt_then_let_go)
    with pytest.raises(KeyboardInterrupt):
        try:
            upload.write(os.urandom(PART))  # one part more than may be in flight: waits for one to end
        finally:
            write_returned.set()
    helper.join()
    assert interrupted_while_waiting == [True]
    assert proxy.passed("AbortMultipartUpload") == 1
    assert proxy.passed("UploadPart") == PARTS_IN_FLIGHT, "the part that waited for room was sent anyway"
    assert_nothing_left(aws_env, s3_bucket)
