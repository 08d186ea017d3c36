"""Backups in S3 or an S3-compatible store (MinIO, R2, B2, Ceph), keys relative to [s3] prefix.

An upload streams as a multipart upload while the dump runs: each full part uploads on a background thread
while the next one fills (a few parts in flight, within UPLOAD_MEMORY), so the dump waits for the network only
when the network is the slower of the two; a stream smaller than one part becomes a single PutObject. Nothing is
visible under the key until `commit`; `abort` calls AbortMultipartUpload so neither an object nor a dangling
upload stays. Transient errors are retried (botocore's standard mode, then the whole part again) and every retry
is reported, to the `report` callback the caller passes in (by default a warning on the "pgdr.storage" logger).

Part sizes grow with the part number so that the largest backup fits in [s3] max_parts parts (see
`size_step`); an upload that would need one more part than that is aborted with the setting to raise.

Credentials and endpoints come from boto3's standard chain and environment (AWS_PROFILE, AWS_ACCESS_KEY_ID,
instance roles, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3); [s3] endpoint_url and region override when set.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from datetime import UTC
from typing import Any, BinaryIO, NoReturn, TypeVar, cast

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    sleep_using_event,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

from pgdr import __version__
from pgdr.config import S3Settings
from pgdr.errors import ConfigError, StorageError
from pgdr.storage.base import Reporter, StoredObject, UploadContext, log_warning

PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 3  # parts uploading on background threads while the next one fills
UPLOAD_MEMORY = 64 * 1024 * 1024  # parts in flight plus the one filling, unless one part alone is larger
ABORT_WAIT = 15.0  # seconds abort() gives the parts in flight to end before it aborts the upload anyway
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000  # AWS's limit of parts per multipart upload; [s3] max_parts lowers it for other providers
MAX_OBJECT_SIZE = 5 * 1024**4  # AWS's largest object
SIZE_STEPS = 10  # the part size doubles every max_parts / SIZE_STEPS parts (AWS: every 1000), or sooner
DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's limit
MAX_ATTEMPTS = 5
PART_ATTEMPTS = 3
DOWNLOAD_RESUMES = 3
THROTTLING_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "RequestLimitExceeded"}
CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "InvalidClientTokenId"}
DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
IAM_ACTIONS = {
    "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "ListObjectsV2": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket", "DeleteObject": "s3:DeleteObject", "DeleteObjects": "s3:DeleteObject",
}
CREDENTIALS_HINT = ("set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or run where an instance or task role provides credentials)")

T = TypeVar("T")

REPORT_LOCK = threading.RLock()


def one_at_a_time(report: Reporter) -> Reporter:
    """Parts upload on several threads: the caller's reporter gets one message at a time."""

    def serialized(message: str) -> None:
        with REPORT_LOCK:
            report(message)

    return serialized


def reachable(max_parts: int, base: int, step: int) -> int:
    """Bytes that parts 1..max_parts hold when the part size starts at base and doubles every `step` parts, up
    to MAX_PART_SIZE."""
    total, first, size = 0, 1, base
    while first <= max_parts:
        left = max_parts - first + 1
        count = left if size >= MAX_PART_SIZE else min(step, left)
        total += count * min(size, MAX_PART_SIZE)
        first, size = first + count, size * 2
    return total


@functools.lru_cache(maxsize=16)
def size_step(max_parts: int = MAX_PARTS, base: int = PART_SIZE) -> int:
    """Parts per doubling of the part size: the largest step up to max_parts / SIZE_STEPS whose parts
    1..max_parts hold min(MAX_OBJECT_SIZE, max_parts x MAX_PART_SIZE / 2), or 1 (the fastest growth) when none
    does.

    Parts stay small as long as they can (little memory held, little sent again on a retry), and the largest
    backup still fits. With step s the sizes are base x 1, 2, 4, ... for s parts each, capped at MAX_PART_SIZE,
    so max_parts parts hold s x base x (2^k - 1) over the k doublings reached, plus the parts at the cap:
    - AWS, 10,000 parts of 8 MiB: s = 1000 as always (8 MiB to 4 GiB), 1000 x 8 MiB x 1023 = 7.99 TiB, more than
      the 5 TiB S3 stores; the target is met at the first step tried.
    - 1,000 parts (Scaleway): the target is 1000 x 5 GiB / 2 = 2.44 TiB; s = 59 reaches 2.46 TiB, the parts
      reaching 1 GiB after 58 GiB (59 x 8 MiB x 127).
    - 3 parts of 5 MiB (the tests): s = 1, 5 + 10 + 20 MiB = 35 MiB, short of any target: the fastest growth.
    `largest_upload` is what the step reaches; the upload refuses to go beyond it."""
    wanted = min(MAX_OBJECT_SIZE, max_parts * MAX_PART_SIZE // 2)
    low, high = 1, max(1, max_parts // SIZE_STEPS)
    while low < high:  # fewer parts per doubling hold more: the largest step that holds `wanted`
        middle = (low + high + 1) // 2
        if reachable(max_parts, base, middle) >= wanted:
            low = middle
        else:
            high = middle - 1
    return low


def largest_upload(max_parts: int = MAX_PARTS, base: int = PART_SIZE) -> int:
    """Bytes the parts 1..max_parts hold: the largest stream one multipart upload takes."""
    return reachable(max_parts, base, size_step(max_parts, base))


def part_size_for(part_number: int, base: int = PART_SIZE, max_parts: int = MAX_PARTS) -> int:
    """base for the first size_step() parts, then doubling every size_step() parts, up to MAX_PART_SIZE: with
    AWS's 10,000 parts, 8 MiB for parts 1-1000, 16 MiB for 1001-2000, ... 4 GiB for 9001-10000."""
    doublings = min((part_number - 1) // size_step(max_parts, base), MAX_PART_SIZE.bit_length())
    return min(base * 2**doublings, MAX_PART_SIZE)


def binary_size(size: int) -> str:
    """35651584 -> '34.0 MiB'."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"


def parts_in_flight(part_size: int) -> int:
    """How many parts may upload while the next one fills: PARTS_IN_FLIGHT (4 x 8 MiB held at most), fewer as
    parts grow past part 1000 so the memory held stays within UPLOAD_MEMORY, and 0 (each part uploaded before the
    next one fills, as one part alone is held) once a part is half of it."""
    return max(0, min(PARTS_IN_FLIGHT, UPLOAD_MEMORY // part_size - 1))


def in_background(call: Callable[[], T]) -> Future[T]:
    """call() on a daemon thread. Not a ThreadPoolExecutor: it joins its threads at exit, and a part stuck on a
    dead network (read timeout 120 s, retried) must not hold the process after an aborted backup."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # handed over to the thread waiting for the part
            future.set_exception(error)

    threading.Thread(target=run, name="pgdr-s3-part", daemon=True).start()
    return future


def normalize_prefix(prefix: str) -> str:
    """'postgres' and '/postgres/' -> 'postgres/'; '' stays ''."""
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def max_attempts() -> int:
    """botocore's attempts per request: AWS_MAX_ATTEMPTS when set, else 5."""
    value = os.environ.get("AWS_MAX_ATTEMPTS", "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_ATTEMPTS


def is_transient(error: BaseException) -> bool:
    """Resets, timeouts, 5xx and throttling: worth sending the same request again."""
    if isinstance(error, HTTPClientError | ConnectionError):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status == 429 or error.response.get("Error", {}).get("Code") in THROTTLING_CODES
    return False


def iam_hint(operation: str, bucket: str, sse: str) -> str:
    action = IAM_ACTIONS.get(operation, f"s3:{operation}")
    resource = f"arn:aws:s3:::{bucket}" if action == "s3:ListBucket" else f"arn:aws:s3:::{bucket}/<prefix>*"
    kms = " and kms:GenerateDataKey/kms:Decrypt on the key" if sse == "aws:kms" else ""
    return f"allow {action} on {resource}{kms} in the IAM policy (see docs/S3_AND_SSM.md)"


def storage_error(error: Exception, bucket: str, what: str, sse: str = "") -> StorageError:
    """One StorageError per failure class, each with its one-line fix."""
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return StorageError(f"no AWS credentials found to {what}", CREDENTIALS_HINT)
    if isinstance(error, ProfileNotFound):
        return StorageError(f"cannot {what}: {error}", "fix AWS_PROFILE or add the profile to ~/.aws/config")
    if isinstance(error, EndpointConnectionError):
        return StorageError(f"cannot {what}: {error}",
                            "check [s3] endpoint_url, AWS_ENDPOINT_URL(_S3), [s3] region and the network")
    if isinstance(error, HTTPClientError | ConnectionError):
        return StorageError(f"cannot {what}: {error}",
                            "check the network and [s3] endpoint_url / AWS_ENDPOINT_URL, then run the command again")
    if not isinstance(error, ClientError):
        return StorageError(f"cannot {what}: {error}", "check the network and [s3] settings, then try again")
    code = str(error.response.get("Error", {}).get("Code", ""))
    operation = error.operation_name
    if code == "NoSuchBucket" or (operation == "HeadBucket" and code in ("404", "NotFound")):
        return StorageError(f"cannot {what}: S3 bucket {bucket!r} does not exist",
                            "check [s3] bucket (and [s3] region / endpoint_url) in pgdr.toml")
    if code in CREDENTIAL_CODES:
        return StorageError(f"cannot {what}: the AWS credentials were rejected ({code})",
                            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE (expired session?)")
    if code in DENIED_CODES:
        return StorageError(f"cannot {what}: access denied ({operation})", iam_hint(operation, bucket, sse))
    if code.startswith("KMS."):
        return StorageError(f"cannot {what}: KMS refused ({code})",
                            "check [s3] kms_key_id and allow kms:GenerateDataKey and kms:Decrypt on it")
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    return StorageError(f"cannot {what}: {operation} failed: {code} {message}".strip(),
                        "check [s3] settings and the network, then try again")


@contextmanager
def translated(bucket: str, what: str, sse: str = "") -> Iterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise storage_error(error, bucket, what, sse) from None


def with_folder_contents(paginator: Any, bucket: str, object_keys: list[str]) -> list[str]:
    """object_keys, each followed by the objects under key/ when it is a folder (a split backup). Which keys are
    folders comes from one delimited listing (CommonPrefixes) per parent folder, not one listing per key."""
    folders: set[str] = set()
    for parent in sorted({key[: key.rfind("/") + 1] for key in object_keys}):  # "a/b/c" -> "a/b/", "c" -> ""
        for page in paginator.paginate(Bucket=bucket, Prefix=parent, Delimiter="/"):
            folders.update(str(item["Prefix"]) for item in page.get("CommonPrefixes", []))
    doomed: dict[str, None] = {}  # in order, without repeats
    for key in object_keys:
        doomed[key] = None
        if key + "/" in folders:
            for page in paginator.paginate(Bucket=bucket, Prefix=key + "/"):
                doomed.update((str(item["Key"]), None) for item in page.get("Contents", []))
    return list(doomed)


def describe_refused(errors: list[dict[str, Any]], shown: int = 3) -> str:
    """DeleteObjects' Errors -> 'a/b (AccessDenied: Access Denied), ... and 7 more'."""
    text = ", ".join(f"{item.get('Key', '?')} ({item.get('Code', '')}: {item.get('Message', '')})"
                     for item in errors[:shown])
    return text + (f" and {len(errors) - shown} more" if len(errors) > shown else "")


class RetryNotifier:
    """Reports botocore's own retries: needs-retry shows why, request-created shows the attempt number.

    Both events of one request fire on the thread sending it, and parts are sent side by side: one reason per
    thread."""

    def __init__(self, report: Reporter, attempts: int) -> None:
        self.report = report
        self.attempts = attempts
        self._reasons = threading.local()

    @property
    def reason(self) -> str:
        return str(getattr(self._reasons, "reason", ""))

    def observe(self, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        if caught_exception is not None:
            self._reasons.reason = type(caught_exception).__name__
        elif response is not None and response[0].status_code >= 400:
            code = response[1].get("Error", {}).get("Code", "")
            self._reasons.reason = f"HTTP {response[0].status_code} {code}".strip()

    def announce(self, request: Any = None, operation_name: str = "", **_: Any) -> None:
        attempt = getattr(request, "context", {}).get("retries", {}).get("attempt", 1)
        if attempt > 1:
            self.report(f"S3 {operation_name}: retrying (attempt {attempt} of {self.attempts}) after {self.reason}")


def make_client(settings: S3Settings, report: Reporter) -> Any:
    import boto3
    from botocore.config import Config

    attempts = max_attempts()
    mode = os.environ.get("AWS_RETRY_MODE", "") or "standard"
    config = Config(retries={"mode": mode, "total_max_attempts": attempts},
                    connect_timeout=10, read_timeout=120, user_agent_extra=f"pgdr/{__version__}")
    with translated(settings.bucket, "create the S3 client"):
        client = boto3.session.Session().client(
            "s3", region_name=settings.region or None, endpoint_url=settings.endpoint_url or None, config=config
        )
    notifier = RetryNotifier(one_at_a_time(report), attempts)
    client.meta.events.register("needs-retry.s3", notifier.observe)
    client.meta.events.register("request-created.s3", notifier.announce)
    return client


class S3Upload(UploadContext):
    """A multipart upload fed by write(). Each full part uploads on its own thread while the next one fills, at
    most parts_in_flight() at a time; the ETags are collected by part number for CompleteMultipartUpload.

    A part that fails for good (after its retries) stops the other parts' retries; the next write() or commit()
    aborts the upload and raises that part's error."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.object_key = storage.object_key(key)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: dict[int, Future[str]] = {}  # part number -> its ETag once uploaded, in part order
        self._in_flight: list[Future[str]] = []
        self._stop = threading.Event()  # a part failed for good, or abort(): no more retries
        self._finished = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def uploading(self) -> int:
        """Parts sent and not yet stored (each holds its data in memory until then)."""
        return sum(1 for future in self._in_flight if not future.done())

    def _next_part_size(self) -> int:
        return part_size_for(len(self._parts) + 1, self.storage.part_size, self.storage.max_parts)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self._finished, "write after commit or abort"
        if self._stop.is_set():
            self._fail()
        self._buffer += data
        while len(self._buffer) >= (size := self._next_part_size()):
            part, self._buffer = self._buffer, self._buffer[size:]  # hand the buffer over: no copy of the part
            del part[size:]
            self._send_part(part)
        if self._buffer and len(self._parts) >= self.storage.max_parts:
            self._refuse_part()  # at once: buffering the next part could hold gigabytes for nothing

    def _send_part(self, data: bytes | bytearray) -> None:
        """Start uploading one part once there is room for it; the part must not be changed afterwards."""
        try:
            if len(self._parts) >= self.storage.max_parts:
                self._refuse_part()
            if self._upload_id is None:
                with translated(self.storage.bucket, f"start the upload of {self.key}", self.storage.sse):
                    answer = self.storage.client.create_multipart_upload(
                        Bucket=self.storage.bucket, Key=self.object_key, **self.storage.upload_arguments())
                self._upload_id = str(answer["UploadId"])
            most = parts_in_flight(len(data))
            self._wait_for_parts(max(most - 1, 0))
            number, upload_id = len(self._parts) + 1, self._upload_id
            future = in_background(lambda: self._upload_part(upload_id, number, data))
            self._parts[number] = future
            self._in_flight.append(future)
            if most == 0:
                self._wait_for_parts(0)
        except BaseException:
            self.abort()
            raise

    def _refuse_part(self) -> NoReturn:
        """The stream needs part max_parts + 1: abort the upload rather than have the provider refuse the part."""
        storage = self.storage
        self.abort()
        raise StorageError(
            f"{self.key} needs more than [s3] max_parts = {storage.max_parts} parts (they hold "
            f"{binary_size(largest_upload(storage.max_parts, storage.part_size))}); the upload was aborted",
            f"raise [s3] max_parts if the provider allows more parts per upload (AWS allows {MAX_PARTS})")

    def _upload_part(self, upload_id: str, number: int, data: bytes | bytearray) -> str:
        """Runs on the part's own thread; returns the part's ETag."""
        storage, client = self.storage, self.storage.client
        try:
            answer = storage.retrying(f"upload part {number} of {self.key}", lambda: client.upload_part(
                Bucket=storage.bucket, Key=self.object_key, UploadId=upload_id, PartNumber=number, Body=data),
                stop=self._stop)
        except BaseException:
            self._stop.set()  # before the error is handed over: whoever sees the failed part sees the stop too
            raise
        return str(answer["ETag"])

    def _wait_for_parts(self, most: int) -> None:
        """Wait until at most `most` parts are uploading; a part that failed for good raises its error here."""
        while True:
            self._in_flight = [future for future in self._in_flight if not future.done()]
            if self._stop.is_set():
                self._fail()
            if len(self._in_flight) <= most:
                return
            wait(self._in_flight, return_when=FIRST_COMPLETED)

    def _fail(self) -> NoReturn:
        """Abort the upload (the parts in flight end first), then raise the error of the lowest-numbered part that
        failed: the one the first failure made stop retrying failed as well, for the same reason."""
        self.abort()
        errors = (future.exception() for future in self._parts.values() if future.done())
        raise next((error for error in errors if error is not None),
                   StorageError(f"the upload of {self.key} was stopped", "run the command again"))

    def commit(self) -> None:
        assert not self._finished, "commit after commit or abort"
        storage = self.storage
        try:
            if self._upload_id is None:
                data = bytes(self._buffer)
                storage.retrying(f"upload {self.key}", lambda: storage.client.put_object(
                    Bucket=storage.bucket, Key=self.object_key, Body=data, **storage.upload_arguments()))
            else:
                if self._buffer:
                    part, self._buffer = self._buffer, bytearray()
                    self._send_part(part)
                self._wait_for_parts(0)
                parts = [{"PartNumber": number, "ETag": future.result()} for number, future in
                         sorted(self._parts.items())]
                with translated(storage.bucket, f"complete the upload of {self.key}", storage.sse):
                    storage.client.complete_multipart_upload(
                        Bucket=storage.bucket, Key=self.object_key, UploadId=self._upload_id,
                        MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._buffer = bytearray()

    def abort(self) -> None:
        """Never raises: it runs while another error is on its way to the user. The parts in flight stop retrying
        and get storage.abort_wait (ABORT_WAIT) seconds to end first, so that none is stored after the upload was
        aborted."""
        self._buffer = bytearray()
        if self._finished:
            return
        self._finished = True
        self._stop.set()
        self._let_parts_end()
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        try:
            self.storage.client.abort_multipart_upload(
                Bucket=self.storage.bucket, Key=self.object_key, UploadId=upload_id)
        except (BotoCoreError, ClientError) as error:
            self.storage.report(
                f"could not abort the multipart upload of {self.storage.describe()}{self.key} "
                f"({type(error).__name__}); no object "
                f"was created, but its parts are stored until `aws s3api abort-multipart-upload --bucket "
                f"{self.storage.bucket} --key {self.object_key} --upload-id {upload_id}` or a lifecycle rule "
                "(AbortIncompleteMultipartUpload) removes them")

    def _let_parts_end(self) -> None:
        try:
            wait(self._in_flight, timeout=self.storage.abort_wait)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C only cuts the wait short: the upload must still be aborted


class S3Download(io.RawIOBase):
    """A streaming GetObject body: read(n) until b''; a dropped connection resumes at the offset reached."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        super().__init__()
        self.storage = storage
        self.key = key
        self.offset = 0
        self.resumes = 0
        answer = storage.get_object(key)
        if answer is None:
            raise StorageError(f"backup {key} not found in {storage.describe()}", "see `pgdr list --from s3`")
        self._body = answer["Body"]
        self._etag = str(answer.get("ETag", ""))

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while True:
            try:
                data: bytes = self._body.read(None if size is None or size < 0 else size)
            except BotoCoreError as error:
                self._resume(error)
                continue
            self.offset += len(data)
            return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _resume(self, error: BotoCoreError) -> None:
        if self.resumes >= DOWNLOAD_RESUMES:
            raise StorageError(f"download of {self.key} failed at byte {self.offset}: {error}",
                               "check the network and run the command again") from None
        self.resumes += 1
        self.storage.report(f"S3 download of {self.key} interrupted at byte {self.offset} ({error}); resuming")
        self._body.close()
        answer = self.storage.get_object(self.key, Range=f"bytes={self.offset}-", IfMatch=self._etag)
        if answer is None:
            raise StorageError(f"backup {self.key} disappeared during the download", "see `pgdr list --from s3`")
        self._body = answer["Body"]

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Storage:
    name = "s3"

    def __init__(self, bucket: str, prefix: str, client: Any, storage_class: str = "", sse: str = "",
                 kms_key_id: str = "", report: Reporter = log_warning, part_size: int = PART_SIZE,
                 abort_wait: float = ABORT_WAIT, max_parts: int = MAX_PARTS) -> None:
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.client = client
        self.storage_class = storage_class
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.report = one_at_a_time(report)
        self.part_size = part_size
        self.abort_wait = abort_wait
        self.max_parts = max_parts
        self._bucket_checked = False

    @classmethod
    def from_settings(cls, settings: S3Settings, report: Reporter = log_warning) -> S3Storage:
        if not settings.bucket:
            raise ConfigError("[s3] bucket is empty", 'set bucket = "my-backups" under [s3] in pgdr.toml')
        client = make_client(settings, report)
        return cls(settings.bucket, settings.prefix, client, settings.storage_class, settings.sse,
                   settings.kms_key_id, report, max_parts=settings.max_parts)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def object_key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"not a storage key: {key!r}", "use a key shown by `pgdr list --from s3`")
        return self.prefix + key

    def upload_arguments(self) -> dict[str, str]:
        arguments = {}
        if self.storage_class:
            arguments["StorageClass"] = self.storage_class
        if self.sse:
            arguments["ServerSideEncryption"] = self.sse
        if self.sse == "aws:kms" and self.kms_key_id:
            arguments["SSEKMSKeyId"] = self.kms_key_id
        return arguments

    def retrying(self, what: str, call: Callable[[], T], stop: threading.Event | None = None) -> T:
        """botocore already retried each request; a transient failure after that sends it again, with backoff.
        Once `stop` is set, the failure at hand is raised instead of being retried (and the backoff is cut short)."""

        def report(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self.report(f"S3: {what} failed ({type(error).__name__}); trying again "
                        f"(attempt {state.attempt_number + 1} of {PART_ATTEMPTS})")

        stop = stop or threading.Event()  # never set: the backoff is a plain sleep
        with translated(self.bucket, what, self.sse):
            for attempt in Retrying(stop=stop_after_attempt(PART_ATTEMPTS) | stop_when_event_set(stop),
                                    wait=wait_exponential(min=1, max=20), sleep=sleep_using_event(stop),
                                    retry=retry_if_exception(is_transient), before_sleep=report, reraise=True):
                with attempt:
                    return call()
        raise AssertionError("unreachable")  # pragma: no cover

    def check_bucket(self) -> None:
        """Fail before a long dump when the bucket is missing or credentials are absent. A 403 is let through:
        a least-privilege writer may lack s3:ListBucket and still be allowed to upload."""
        if self._bucket_checked:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code", "")) not in DENIED_CODES:
                raise storage_error(error, self.bucket, f"use {self.describe()}", self.sse) from None
        except BotoCoreError as error:
            raise storage_error(error, self.bucket, f"use {self.describe()}", self.sse) from None
        self._bucket_checked = True

    def open_upload(self, key: str) -> S3Upload:
        self.check_bucket()
        return S3Upload(self, key)

    def get_object(self, key: str, **arguments: str) -> dict[str, Any] | None:
        """GetObject's answer (streaming Body), or None when there is no such key."""
        what = f"read {self.describe()}{key}"
        try:
            return cast(dict[str, Any], self.client.get_object(
                Bucket=self.bucket, Key=self.object_key(key), **arguments))
        except ClientError as error:
            if str(error.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise storage_error(error, self.bucket, what, self.sse) from None
        except BotoCoreError as error:
            raise storage_error(error, self.bucket, what, self.sse) from None

    def open_download(self, key: str) -> BinaryIO:
        return cast(BinaryIO, S3Download(self, key))

    def list(self, prefix: str = "") -> list[StoredObject]:
        """The objects whose key starts with prefix, by key: ListObjectsV2 pages under [s3] prefix + prefix."""
        objects = []
        with translated(self.bucket, f"list {self.describe()}{prefix}", self.sse):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self.prefix + prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self.prefix):]
                    if key and not key.endswith("/"):
                        objects.append(StoredObject(key, int(item["Size"]), item["LastModified"].astimezone(UTC)))
        return sorted(objects, key=lambda item: item.key)

    def exists(self, key: str) -> bool:
        """An object under key (HeadObject), or a folder-like key (a split backup) with an object under key/."""
        object_key = self.object_key(key)
        with translated(self.bucket, f"look for {self.describe()}{key}", self.sse):
            try:
                self.client.head_object(Bucket=self.bucket, Key=object_key)
                return True
            except ClientError as error:
                if str(error.response.get("Error", {}).get("Code", "")) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=object_key + "/", MaxKeys=10)
        return any(not str(item["Key"]).endswith("/") for item in answer.get("Contents", []))

    def delete(self, *keys: str) -> None:
        """Each key's object and, for a folder-like key (a split backup), every object under key/: DeleteObjects
        in batches of DELETE_BATCH, in the order given. A key already gone is no error; the keys S3 refused to
        delete are named in one StorageError, after every batch was tried."""
        object_keys = [self.object_key(key) for key in keys]
        with translated(self.bucket, f"list {self.describe()}", self.sse):
            doomed = with_folder_contents(self.client.get_paginator("list_objects_v2"), self.bucket, object_keys)
        refused = []
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start:start + DELETE_BATCH]
            with translated(self.bucket, f"delete {len(batch)} objects from {self.describe()}", self.sse):
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": key} for key in batch], "Quiet": True})
            refused += answer.get("Errors", [])
        if refused:
            denied = any(item.get("Code") in DENIED_CODES for item in refused)
            raise StorageError(f"could not delete {len(refused)} of {len(doomed)} objects from {self.describe()}: "
                               f"{describe_refused(refused)}", iam_hint("DeleteObject", self.bucket, self.sse)
                               if denied else "check [s3] settings and the network, then run the command again")

    def put_bytes(self, key: str, data: bytes) -> None:
        self.retrying(f"upload {key}", lambda: self.client.put_object(
            Bucket=self.bucket, Key=self.object_key(key), Body=data, **self.upload_arguments()))

    def get_bytes(self, key: str) -> bytes | None:
        answer = self.get_object(key)
        if answer is None:
            return None
        with translated(self.bucket, f"read {self.describe()}{key}", self.sse):
            return bytes(answer["Body"].read())

