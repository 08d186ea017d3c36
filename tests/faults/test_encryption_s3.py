"""Encryption at rest with age, end to end through S3: the object (and the local copy a restore downloads) is age
ciphertext, S3 server-side encryption is requested too, a restore without the identity secret is exit 6 with
nothing downloaded and the server untouched, and with the identity it restores and verifies.

Covered elsewhere, not repeated: the local round trip, no identity (exit 6) and a wrong identity (exit 9)
(tests/end_to_end/test_split_and_encryption.py::test_encrypted_backup_restores_with_the_identity_and_is_refused_without_it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from age_payload import AGE_HEADER, assert_encrypted_gzip_dump
from faults.fault_helpers import (
    assert_clean_failure,
    cluster_project,
    list_json,
    new_bucket,
    server_state,
    tree_snapshot,
    use_s3,
)
from harness import count_orders, load_sample_data, needs_pyrage

pytestmark = [pytest.mark.s3, needs_pyrage]  # every test here is about age encryption


@pytest.fixture(scope="module")
def encrypted(moto_server) -> Iterator:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    with cluster_project() as project:
        bucket = new_bucket(moto_server)
        use_s3(project, moto_server, bucket)
        text = project.config.read_text().replace(
            'compression = "gzip"\n', f'compression = "gzip"\nencryption = "age"\n'
                                      f'age_recipients = ["{identity.to_public()}"]\n')
        project.config.write_text(text + 'sse = "AES256"\n')
        load_sample_data(project, 1200)
        project.bucket, project.identity = bucket, str(identity)  # type: ignore[attr-defined]
        yield project


def test_an_encrypted_backup_in_s3_restores_only_with_the_identity(encrypted, moto_server):
    encrypted.ok("backup")
    [record] = list_json(encrypted, "--from", "s3")
    key = str(record["key"])
    assert key.endswith(".sql.gz.age") and record["verified"]
    s3 = moto_server.client("s3")
    stored = s3.get_object(Bucket=encrypted.bucket, Key="base/" + key)
    body = stored["Body"].read()
    assert_encrypted_gzip_dump(body, encrypted.identity)
    assert stored["ServerSideEncryption"] == "AES256"
    manifest = s3.get_object(Bucket=encrypted.bucket, Key="base/" + key + ".manifest.json")
    assert manifest["ServerSideEncryption"] == "AES256"
    encrypted.ok("clean", "soft", "--yes")

    state = server_state(encrypted)
    missing = encrypted.pgdr("restore", "latest", "--from", "s3")
    assert_clean_failure(missing, 6, "is encrypted with age", "PGDR_AGE_IDENTITY")
    assert tree_snapshot(encrypted.backups) == {}, "a download was kept although it could not be checked"
    assert server_state(encrypted) == state

    restored = encrypted.ok("restore", "latest", "--from", "s3", env={"PGDR_AGE_IDENTITY": encrypted.identity})
    assert encrypted.identity not in restored.stdout + restored.stderr
    assert (encrypted.backups / key).read_bytes().startswith(AGE_HEADER), "the local copy is not encrypted"
    encrypted.ok("init")
    encrypted.ok("verify")
    assert count_orders(encrypted) == 1200


def test_a_split_backup_encrypted_in_s3_is_checked_and_restored_part_by_part(encrypted, moto_server):
    """Runs after the plain test above: the same project, now split and zstd."""
    config = encrypted.config.read_text().replace('compression = "gzip"\n', 'compression = "zstd"\nformat = "split"\n')
    encrypted.config.write_text(config)
    encrypted.ok("backup")
    record = list_json(encrypted, "--from", "s3")[-1]
    key = str(record["key"])
    assert key.endswith(".split") and record["verified"]
    s3 = moto_server.client("s3")
    manifest = json.loads(s3.get_object(Bucket=encrypted.bucket, Key=f"base/{key}.manifest.json")["Body"].read())
    names = [part["name"] for part in manifest["parts"]]
    assert names[0] == "globals.sql.zst.age" and all(name.endswith(".dump.zst.age") for name in names[1:]), names
    for name in names:
        body = s3.get_object(Bucket=encrypted.bucket, Key=f"base/{key}/{name}")["Body"].read()
        assert body.startswith(AGE_HEADER) and b"orders" not in body, name
    encrypted.ok("clean", "soft", "--yes")
    state = server_state(encrypted)
    missing = encrypted.pgdr("restore", "latest", "--from", "s3")
    assert_clean_failure(missing, 6, "is encrypted with age", "PGDR_AGE_IDENTITY")
    assert not (encrypted.backups / (key + ".manifest.json")).exists(), "an unchecked copy was made listable"
    assert server_state(encrypted) == state
    encrypted.ok("restore", "latest", "--from", "s3", env={"PGDR_AGE_IDENTITY": encrypted.identity})
    assert (encrypted.backups / key / names[0]).read_bytes().startswith(AGE_HEADER), "the local copy is not encrypted"
    encrypted.ok("init")
    encrypted.ok("verify")
    assert count_orders(encrypted) == 1200
