"""A provider that allows fewer multipart parts than AWS's 10,000 (Scaleway: 1,000), played by the HTTP fault
proxy in front of moto's server: it refuses every UploadPart numbered above the limit with 400 InvalidArgument, as
such a provider does. With [s3] max_parts set to that limit, part sizes grow so that a stream larger than
max_parts base-size parts is still stored whole; a stream larger than the grown parts hold is refused by pgdr
itself, before the provider would, and leaves no object and no pending upload.

The limit is 3 parts of 5 MiB (S3's smallest part size; moto enforces it too), so the sizes are 5, 10 and 20 MiB:
35 MiB in all (tests/unit/test_s3_parts.py checks the same arithmetic for 1,000 and 10,000 parts).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from faults.http_fault_proxy import Fault, FaultProxy
from moto_fixtures import object_keys, pending_uploads
from pgdr.config import S3Settings
from pgdr.errors import StorageError
from pgdr.storage.s3 import S3Storage, make_client

pytestmark = pytest.mark.s3
MIB = 1024 * 1024
BASE = 5 * MIB
PROVIDER_LIMIT = 3
PREFIX = "postgres/"
KEY = "20251116/postgres-all-20251116-095831.sql.gz"


@pytest.fixture
def provider(aws_env) -> Iterator[tuple[FaultProxy, Fault]]:
    """The proxy standing for a provider that refuses UploadPart numbers above PROVIDER_LIMIT, and its rule."""
    refusal = Fault("UploadPart", "refuse", times=None, above_part=PROVIDER_LIMIT)
    proxy = FaultProxy(aws_env.port, [refusal]).start()
    try:
        yield proxy, refusal
    finally:
        proxy.stop()


def storage_through(proxy: FaultProxy, bucket: str, max_parts: int, messages: list[str]) -> S3Storage:
    settings = S3Settings(bucket=bucket, prefix=PREFIX, endpoint_url=proxy.url, max_parts=max_parts)
    return S3Storage(bucket, PREFIX, make_client(settings, messages.append), report=messages.append, part_size=BASE,
                     max_parts=max_parts)


def stream(storage: S3Storage, data: bytes, written: list[int]) -> None:
    """Upload data in 1 MiB writes, committed on leaving the block; `written` counts the bytes handed over."""
    with storage.open_upload(KEY) as upload:
        for start in range(0, len(data), MIB):
            upload.write(data[start:start + MIB])
            written.append(min(MIB, len(data) - start))


def part_numbers(proxy: FaultProxy) -> list[int]:
    return sorted(request.part_number for request in proxy.requests if request.operation == "UploadPart")


def test_parts_grow_so_a_stream_over_max_parts_base_parts_is_stored_whole(provider, aws_env, s3_bucket):
    proxy, refusal = provider
    data = os.urandom(30 * MIB)  # twice what 3 parts of 5 MiB hold
    storage = storage_through(proxy, s3_bucket, PROVIDER_LIMIT, messages := [])
    stream(storage, data, [])
    assert part_numbers(proxy) == [1, 2, 3], "not three parts"
    assert refusal.applied == 0 and proxy.applied("refuse") == 0, "a part above the provider's limit was sent"
    head = aws_env.client("s3").head_object(Bucket=s3_bucket, Key=PREFIX + KEY)
    assert head["ETag"].endswith('-3"') and head["ContentLength"] == len(data)
    with storage.open_download(KEY) as handle:
        assert b"".join(iter(lambda: handle.read(MIB), b"")) == data
    assert pending_uploads(aws_env, s3_bucket) == []
    assert messages == []


def test_the_provider_refuses_a_part_above_its_limit_when_max_parts_says_more(provider, aws_env, s3_bucket):
    """The rule the test above relies on: with pgdr believing in 10 parts (the same 5, 10, 20 MiB sizes, then 40),
    part 4 is sent and refused; the upload fails and is aborted."""
    proxy, refusal = provider
    storage = storage_through(proxy, s3_bucket, 10, messages := [])
    with pytest.raises(StorageError) as raised:
        stream(storage, os.urandom(36 * MIB), [])
    assert refusal.applied >= 1 and 4 in part_numbers(proxy)
    assert "upload part 4" in raised.value.message and "InvalidArgument" in raised.value.message
    assert pending_uploads(aws_env, s3_bucket) == [] and object_keys(aws_env, s3_bucket) == []
    assert not any("abort-multipart-upload" in message for message in messages), messages


def test_a_stream_larger_than_max_parts_hold_is_refused_before_the_provider_refuses_a_part(provider, aws_env,
                                                                                         s3_bucket):
    proxy, refusal = provider
    storage = storage_through(proxy, s3_bucket, PROVIDER_LIMIT, [])
    written: list[int] = []
    with pytest.raises(StorageError) as raised:
        stream(storage, os.urandom(40 * MIB), written)
    assert sum(written) == 35 * MIB, "the write of the first byte beyond 35 MiB did not fail at once"
    assert refusal.seen == 0 and part_numbers(proxy) == [1, 2, 3], "pgdr sent a part beyond max_parts"
    assert "\n" not in raised.value.message
    assert raised.value.message == (f"{KEY} needs more than [s3] max_parts = 3 parts (they hold 35.0 MiB); "
                                    "the upload was aborted")
    assert "raise [s3] max_parts if the provider allows more" in raised.value.hint
    assert pending_uploads(aws_env, s3_bucket) == [] and object_keys(aws_env, s3_bucket) == []
