"""S3Storage against moto's HTTP server: multipart streaming, abort, pagination, retries, and errors with fixes;
list(prefix), exists and delete(*keys) with split backups (objects under one key's "folder"), batch deletes over
1000 keys, and uploads used as context managers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from moto_fixtures import object_keys, pending_uploads
from pgdr.config import S3Settings
from pgdr.errors import StorageError
from pgdr.storage.s3 import PART_SIZE, S3Storage
from s3_proxy import CuttingProxy

pytestmark = pytest.mark.s3
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
    assert storage.get_bytes(KEY + ".manifest.json") is None
    storage.put_bytes(KEY + ".manifest.json", b"{}")
    assert storage.get_bytes(KEY + ".manifest.json") == b"{}"
    storage.delete(KEY + ".manifest.json")
    assert storage.get_bytes(KEY + ".manifest.json") is None
    with pytest.raises(StorageError, match="not found"):
        storage.open_download(KEY)


SPLIT = "20251116/postgres-all-20251116-095831.split"
SPLIT_PARTS = ("globals.sql.gz", "demo.dump", "shop.dump")


def put_split_backup(storage: S3Storage, key: str = SPLIT) -> None:
    for part in SPLIT_PARTS:
        storage.put_bytes(f"{key}/{part}", part.encode())
    storage.put_bytes(key + ".manifest.json", b"{}")


def put_many(aws_env, bucket: str, keys: list[str]) -> None:
    client = aws_env.client("s3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def count_calls(storage: S3Storage, operation: str) -> list[dict]:
    """The parameters of each `operation` call the storage's own client makes, recorded by a botocore event."""
    calls: list[dict] = []
    storage.client.meta.events.register(f"provide-client-params.s3.{operation}",
                                        lambda params, **_: calls.append(dict(params)))
    return calls


def test_list_with_a_prefix_asks_s3_for_that_prefix_under_the_configured_one(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    storage.put_bytes(KEY, b"x")
    storage.put_bytes("drill-history.json", b"[]")
    put_split_backup(storage)
    aws_env.client("s3").put_object(Bucket=s3_bucket, Key=SPLIT + "/not-ours", Body=b"x")  # outside PREFIX
    listings = count_calls(storage, "ListObjectsV2")
    assert [item.key for item in storage.list(SPLIT + "/")] == sorted(f"{SPLIT}/{part}" for part in SPLIT_PARTS)
    assert [call["Prefix"] for call in listings] == [PREFIX + SPLIT + "/"]
    assert [item.key for item in storage.list("20251116/postgres-all-20251116-095831.s")] == sorted(
        [KEY, SPLIT + ".manifest.json", *(f"{SPLIT}/{part}" for part in SPLIT_PARTS)])
    assert [item.key for item in storage.list("drill")] == ["drill-history.json"]
    assert storage.list("20251117/") == []
    assert storage.list("") == storage.list() and len(storage.list()) == 6


def test_exists_for_objects_and_split_backup_folders(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    assert not storage.exists(KEY) and not storage.exists(SPLIT)
    storage.put_bytes(KEY, b"x")
    put_split_backup(storage)
    assert storage.exists(KEY) and storage.exists(SPLIT) and storage.exists(SPLIT + "/demo.dump")
    assert storage.exists("20251116"), "a day folder holding backups"
    assert not storage.exists(SPLIT + "/missing.dump") and not storage.exists(SPLIT[:-2])
    client = aws_env.client("s3")
    client.put_object(Bucket=s3_bucket, Key=PREFIX + "20251118/empty.split/", Body=b"")  # a console's folder
    assert not storage.exists("20251118/empty.split"), "a folder marker alone is no backup"
    client.put_object(Bucket=s3_bucket, Key="elsewhere/20251118/other.split/globals.sql.gz", Body=b"x")
    assert not storage.exists("20251118/other.split"), "an object outside [s3] prefix was seen"


def test_delete_several_keys_a_split_backup_folder_and_missing_keys(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    storage.put_bytes(KEY, b"x")
    storage.put_bytes(KEY + ".manifest.json", b"{}")
    put_split_backup(storage)
    other = "20251117/postgres-all-20251117-000000.split"
    put_split_backup(storage, other)
    deletes = count_calls(storage, "DeleteObjects")
    storage.delete(KEY, KEY + ".manifest.json", SPLIT + ".manifest.json", SPLIT, "20251116/never-there.sql.gz")
    assert len(deletes) == 1
    assert object_keys(aws_env, s3_bucket) == [PREFIX + key for key in
                                               sorted([f"{other}.manifest.json", *(f"{other}/{part}"
                                                                                   for part in SPLIT_PARTS)])]
    storage.delete()  # no keys: nothing to do
    storage.delete(other)
    assert [item.key for item in storage.list()] == [f"{other}.manifest.json"]
    with pytest.raises(StorageError, match="not a storage key"):
        storage.delete(other + ".manifest.json", "../escape")
    assert storage.exists(other + ".manifest.json"), "a key was deleted before all were checked"


def test_over_1000_keys_are_deleted_in_batches_of_1000_and_listed_page_by_page(aws_env, s3_bucket):
    keys = [f"bulk/object-{number:04d}" for number in range(1005)]
    put_many(aws_env, s3_bucket, [PREFIX + key for key in keys] + ["elsewhere/bulk/object-0000"])
    storage = storage_for(s3_bucket)
    storage.put_bytes(KEY, b"kept")
    listings = count_calls(storage, "ListObjectsV2")
    assert [item.key for item in storage.list("bulk/")] == keys
    assert len(listings) == 2, "1005 keys are two pages"
    assert [item.key for item in storage.list("bulk/object-010")] == keys[100:110]
    deletes = count_calls(storage, "DeleteObjects")
    storage.delete(*keys)
    assert [len(call["Delete"]["Objects"]) for call in deletes] == [1000, 5]
    assert object_keys(aws_env, s3_bucket) == sorted(["elsewhere/bulk/object-0000", PREFIX + KEY])


def test_keys_s3_refuses_to_delete_are_named_after_every_batch_was_tried(aws_env, s3_bucket):
    """S3 answers DeleteObjects with 200 and an Errors entry per key it kept; moto never refuses, so the answer
    to the first batch is given two such entries on its way back to the client (botocore's after-call event)."""
    keys = [f"bulk/object-{number:04d}" for number in range(1003)]
    put_many(aws_env, s3_bucket, [PREFIX + key for key in keys])
    storage = storage_for(s3_bucket)
    answered: list[int] = []

    def refuse_two(parsed: dict, **_: object) -> None:
        if not answered:
            parsed["Errors"] = [{"Key": PREFIX + key, "Code": "AccessDenied", "Message": "Access Denied"}
                                for key in keys[:2]]
        answered.append(1)

    storage.client.meta.events.register("after-call.s3.DeleteObjects", refuse_two)
    with pytest.raises(StorageError) as raised:
        storage.delete(*keys)
    assert len(answered) == 2, "the second batch was not tried after the first had errors"
    assert raised.value.message == (f"could not delete 2 of 1003 objects from s3://{s3_bucket}/{PREFIX}: "
                                    f"{PREFIX}bulk/object-0000 (AccessDenied: Access Denied), "
                                    f"{PREFIX}bulk/object-0001 (AccessDenied: Access Denied)")
    assert "s3:DeleteObject" in raised.value.hint


def test_an_upload_as_a_context_manager_commits_on_exit(aws_env, s3_bucket):
    storage = storage_for(s3_bucket)
    data = os.urandom(9 * MIB + 7)
    with storage.open_upload(KEY) as upload:
        for start in range(0, len(data), MIB):
            upload.write(data[start:start + MIB])
        assert storage.list() == [] and len(pending_uploads(aws_env, s3_bucket)) == 1
    assert pending_uploads(aws_env, s3_bucket) == []
    assert storage.get_bytes(KEY) == data


@pytest.mark.parametrize("error", [RuntimeError("the dump died"), KeyboardInterrupt()])
def test_an_upload_as_a_context_manager_aborts_on_an_exception_and_lets_it_through(aws_env, s3_bucket, error):
    storage = storage_for(s3_bucket)
    with pytest.raises(type(error)) as raised, storage.open_upload(KEY) as upload:
        upload.write(os.urandom(9 * MIB))
        assert len(pending_uploads(aws_env, s3_bucket)) == 1
        raise error
    assert raised.value is error
    assert pending_uploads(aws_env, s3_bucket) == [] and object_keys(aws_env, s3_bucket) == []


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
