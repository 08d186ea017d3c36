"""S3Storage against moto's HTTP server: multipart streaming, abort, pagination, retries, and errors with fixes."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from moto_fixtures import aws_env, moto_server, object_keys, pending_uploads, s3_bucket
from pgdr.config import S3Settings
from pgdr.errors import StorageError
from pgdr.storage.s3 import PART_SIZE, S3Storage
from s3_proxy import CuttingProxy

pytestmark = pytest.mark.s3
FIXTURES = (aws_env, moto_server, s3_bucket)  # pytest finds them here; named so linters see them used
MIB = 1024 * 1024
PREFIX = "postgres/"
KEY = "20251116/postgres-all-20251116-095831.sql.gz"


def storage_for(bucket: str, messages: list[str] | None = None, **settings: str) -> S3Storage:
    report = messages.append if messages is not None else (lambda message: None)
    return S3Storage.from_settings(S3Settings(bucket=bucket, prefix=PREFIX, **settings), report=report)


def stream_into(storage: S3Storage, key: str, data: bytes, chunk: int = MIB) -> tuple[object, int]:
    """Write data in chunks; returns the upload (not committed) and the most it ever held in memory."""
    upload = storage.open_upload(key)
    most = 0
    for start in range(0, len(data), chunk):
        upload.write(data[start:start + chunk])
        most = max(most, upload.buffered)
    return upload, most


def test_a_stream_over_one_part_is_uploaded_in_parts_and_invisible_until_commit(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    data = os.urandom(20 * MIB + 12345)
    upload, most_buffered = stream_into(storage, KEY, data)
    assert most_buffered < PART_SIZE, "more than one part was held in memory"
    assert [upload["Key"] for upload in pending_uploads(aws_env, s3_bucket)] == [PREFIX + KEY]
    assert storage.list() == [], "an object is visible before commit"
    upload.commit()  # type: ignore[attr-defined]
    assert pending_uploads(aws_env, s3_bucket) == []
    head = aws_env.client("s3").head_object(Bucket=s3_bucket, Key=PREFIX + KEY)
    assert head["ETag"].endswith('-3"'), "expected a three-part multipart upload"
    assert [(item.key, item.size) for item in storage.list()] == [(KEY, len(data))]
    with storage.open_download(KEY) as handle:
        chunks = list(iter(lambda: handle.read(MIB), b""))
    assert all(len(chunk) <= MIB for chunk in chunks)
    assert b"".join(chunks) == data


def test_a_stream_smaller_than_one_part_is_a_single_put_object(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    upload, _ = stream_into(storage, KEY, b"small dump" * 1000, chunk=4096)
    assert pending_uploads(aws_env, s3_bucket) == [], "a multipart upload was started for a small stream"
    upload.commit()  # type: ignore[attr-defined]
    head = aws_env.client("s3").head_object(Bucket=s3_bucket, Key=PREFIX + KEY)
    assert "-" not in head["ETag"]
    assert storage.get_bytes(KEY) == b"small dump" * 1000


def test_abort_leaves_no_object_and_no_pending_multipart_upload(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    upload, _ = stream_into(storage, KEY, os.urandom(17 * MIB))
    assert len(pending_uploads(aws_env, s3_bucket)) == 1
    upload.abort()  # type: ignore[attr-defined]
    upload.abort()  # type: ignore[attr-defined]  # twice is harmless: backup aborts every target on failure
    assert pending_uploads(aws_env, s3_bucket) == []
    assert object_keys(aws_env, s3_bucket) == []


def test_listing_pages_over_1000_keys_relative_to_the_prefix(aws_env, s3_bucket):
    client = aws_env.client("s3")
    expected = [f"20250101/object-{number:05d}" for number in range(1234)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=s3_bucket, Key=PREFIX + key, Body=b"x"), expected))
    client.put_object(Bucket=s3_bucket, Key="elsewhere/20250101/not-ours", Body=b"x")
    client.put_object(Bucket=s3_bucket, Key=PREFIX + "folder-marker/", Body=b"")
    listed = storage_for(s3_bucket).list()
    assert [item.key for item in listed] == expected
    assert all(item.size == 1 and item.modified.utcoffset().total_seconds() == 0 for item in listed)


def test_bytes_round_trip_missing_keys_and_delete(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    assert storage.describe() == f"s3://{s3_bucket}/{PREFIX}"
    assert storage.local_path(KEY) is None
    assert storage.get_bytes(KEY + ".manifest.json") is None
    storage.put_bytes(KEY + ".manifest.json", b"{}")
    assert storage.get_bytes(KEY + ".manifest.json") == b"{}"
    storage.delete(KEY + ".manifest.json")
    assert storage.get_bytes(KEY + ".manifest.json") is None
    with pytest.raises(StorageError, match="not found"):
        storage.open_download(KEY)


def test_storage_class_and_encryption_are_passed_through_on_both_upload_paths(aws_env, s3_bucket):
    storage = storage_for(s3_bucket, storage_class="STANDARD_IA", sse="AES256")
    for key, size in ((KEY, 9 * MIB), ("manifest", 10)):
        upload, _ = stream_into(storage, key, os.urandom(size))
        upload.commit()  # type: ignore[attr-defined]
        head = aws_env.client("s3").head_object(Bucket=s3_bucket, Key=PREFIX + key)
        assert head["StorageClass"] == "STANDARD_IA"
        assert head["ServerSideEncryption"] == "AES256"


def test_a_missing_bucket_is_a_storage_error_naming_the_setting(aws_env):
    storage = storage_for("pgdr-no-such-bucket")
    for action in (storage.list, lambda: storage.open_upload(KEY), lambda: storage.get_bytes(KEY)):
        with pytest.raises(StorageError) as caught:
            action()
        assert "pgdr-no-such-bucket" in caught.value.message
        assert "check [s3] bucket" in caught.value.hint


def test_missing_credentials_are_a_storage_error_with_the_fix(aws_env, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError) as caught:
        storage_for(s3_bucket).list()
    assert "no AWS credentials" in caught.value.message
    assert "AWS_PROFILE or AWS_ACCESS_KEY_ID" in caught.value.hint


def test_the_endpoint_comes_from_aws_endpoint_url_s3_and_the_setting_overrides_it(aws_env, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env.url)
    assert storage_for(s3_bucket).list() == []
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert storage_for(s3_bucket, endpoint_url=aws_env.url).list() == []
    with pytest.raises(StorageError) as caught:
        storage_for(s3_bucket).list()
    assert "endpoint_url" in caught.value.hint


def test_a_dropped_connection_is_retried_and_reported(aws_env, s3_bucket):
    proxy = CuttingProxy(aws_env.port, cut_after=2 * MIB, cuts=1).start()
    messages: list[str] = []
    try:
        storage = storage_for(s3_bucket, messages, endpoint_url=proxy.url)
        data = os.urandom(10 * MIB)
        upload, _ = stream_into(storage, KEY, data)
        upload.commit()  # type: ignore[attr-defined]
    finally:
        proxy.stop()
    assert proxy.connections_cut == 1
    assert any("retrying" in message and "UploadPart" in message for message in messages), messages
    assert aws_env.client("s3").get_object(Bucket=s3_bucket, Key=PREFIX + KEY)["Body"].read() == data


def test_a_network_that_stays_down_fails_the_upload_and_leaves_no_object(aws_env, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy = CuttingProxy(aws_env.port, cut_after=2 * MIB).start()
    messages: list[str] = []
    try:
        storage = storage_for(s3_bucket, messages, endpoint_url=proxy.url)
        with pytest.raises(StorageError) as caught:
            upload, _ = stream_into(storage, KEY, os.urandom(10 * MIB))
            upload.commit()  # type: ignore[attr-defined]
    finally:
        proxy.stop()
    assert "upload part 1" in caught.value.message
    assert any("trying again" in message for message in messages), messages
    assert any("abort-multipart-upload" in message for message in messages), "the dangling upload is not named"
    assert object_keys(aws_env, s3_bucket) == []


def test_a_download_cut_midway_resumes_where_it_stopped(aws_env, s3_bucket):
    data = os.urandom(10 * MIB)
    aws_env.client("s3").put_object(Bucket=s3_bucket, Key=PREFIX + KEY, Body=data)
    proxy = CuttingProxy(aws_env.port, cut_download_after=3 * MIB, cuts=1).start()
    messages: list[str] = []
    try:
        storage = storage_for(s3_bucket, messages, endpoint_url=proxy.url)
        with storage.open_download(KEY) as handle:
            received = b"".join(iter(lambda: handle.read(MIB), b""))
    finally:
        proxy.stop()
    assert proxy.connections_cut == 1
    assert received == data
    assert any("resuming" in message for message in messages), messages
    first, *resumed = proxy.ranges
    assert first == "" and len(resumed) == 1, proxy.ranges
    assert resumed[0].startswith("bytes=") and resumed[0].endswith("-"), resumed
    offset = int(resumed[0].removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 3 * MIB, f"the download started again from {offset}, not where the cut stopped it"
