"""Damaged backups, local and in S3: wrong format (zstd or plain SQL named .sql.gz, gzip named .sql.zst), random
bytes, an empty file, and manifests that do not match their object (size or sha256 edited, object truncated).
Every one is refused with exit 9 before the server is touched: no safety backup, no restore record, no local
copy of a refused download.

Covered elsewhere, not repeated: a bit flipped, a file truncated and a wrong sha256 in the manifest of a local
backup, and damage without a manifest
(tests/end_to_end/test_restore_safety.py::test_a_damaged_backup_with_a_manifest_is_refused_with_exit_9_before_the_server_is_touched,
...::test_a_damaged_backup_without_a_manifest_is_refused_with_exit_9_before_the_server_is_touched); a bit flipped
in an S3 object and a truncated legacy S3 object
(tests/end_to_end/test_s3_recovery.py::test_a_corrupted_object_is_refused_before_the_server_is_touched); an
unreadable manifest (tests/unit/test_artifact.py::test_damaged_manifest_raises_integrity_error).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator

import pytest
import zstandard

from faults.fault_helpers import (
    assert_clean_failure,
    cluster_project,
    list_json,
    new_bucket,
    restore_record,
    server_state,
    tree_snapshot,
    use_s3,
)
from harness import count_orders, load_sample_data

pytestmark = pytest.mark.s3
PREFIX = "base/"


@pytest.fixture(scope="module")
def damaged(moto_server) -> Iterator:
    """A cluster with 400 orders and one good backup in both targets; tests plant damaged ones beside it."""
    with cluster_project() as project:
        bucket = new_bucket(moto_server)
        use_s3(project, moto_server, bucket, targets='["local", "s3"]')
        load_sample_data(project, 400)
        project.ok("backup")
        [record] = list_json(project)
        key = str(record["key"])
        project.bucket, project.s3 = bucket, moto_server.client("s3")  # type: ignore[attr-defined]
        project.good = (project.backups / key).read_bytes()  # type: ignore[attr-defined]
        project.manifest = json.loads((project.backups / (key + ".manifest.json")).read_text())  # type: ignore
        with project.connect("demo") as connection:  # the live state differs from the backup's
            connection.execute("DELETE FROM orders WHERE id > 100")
        yield project


def with_manifest(edit: Callable[[dict], None] | None = None, cut: int = 0) -> Callable:
    """The good backup (cut short by `cut` bytes) with a copy of its manifest, edited."""

    def make(project, key: str) -> tuple[bytes, dict | None]:
        manifest = {**project.manifest, "key": key}
        if edit is not None:
            edit(manifest)
        return project.good[: len(project.good) - cut], manifest

    return make


def without_manifest(content: Callable[[bytes], bytes]) -> Callable:
    def make(project, key: str) -> tuple[bytes, dict | None]:
        return content(gzip.decompress(project.good)), None

    return make


def size_plus_one(manifest: dict) -> None:
    manifest["size"] += 1


def other_sha256(manifest: dict) -> None:
    manifest["sha256"] = "ab" * 32


DAMAGES = {  # name: (extension, what to store, words of the error)
    "zstd-named-gz": (".sql.gz", without_manifest(lambda sql: zstandard.ZstdCompressor().compress(sql)),
                      "does not decompress as gzip"),
    "plain-sql-named-gz": (".sql.gz", without_manifest(lambda sql: sql), "does not decompress as gzip"),
    "gzip-named-zst": (".sql.zst", without_manifest(gzip.compress), "does not decompress as zstd"),
    "random-bytes": (".sql.gz", without_manifest(lambda sql: os.urandom(40_000)), "does not decompress"),
    "empty-file": (".sql.gz", without_manifest(lambda sql: b""), "does not decompress as gzip"),
    "manifest-size-edited": (".sql.gz", with_manifest(size_plus_one), "its manifest says"),
    "manifest-sha256-edited": (".sql.gz", with_manifest(other_sha256), "does not match its manifest's sha256"),
    "truncated-object-with-manifest": (".sql.gz", with_manifest(cut=1000), "its manifest says"),
}
CASES = [(target, name) for target in ("local", "s3") for name in DAMAGES
         # local bit flips, truncation and a wrong sha256 are tested in test_restore_safety.py
         if not (target == "local" and name in ("manifest-sha256-edited", "truncated-object-with-manifest"))]


def plant(project, target: str, key: str, data: bytes, manifest: dict | None) -> None:
    if target == "local":
        path = project.backups / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if manifest is not None:
            path.with_name(path.name + ".manifest.json").write_text(json.dumps(manifest))
        return
    project.s3.put_object(Bucket=project.bucket, Key=PREFIX + key, Body=data)
    if manifest is not None:
        project.s3.put_object(Bucket=project.bucket, Key=PREFIX + key + ".manifest.json",
                              Body=json.dumps(manifest).encode())


def remove(project, target: str, key: str) -> None:
    for name in (key, key + ".manifest.json"):
        if target == "local":
            (project.backups / name).unlink(missing_ok=True)
        else:
            project.s3.delete_object(Bucket=project.bucket, Key=PREFIX + name)


def refused_before_the_server_is_touched(project, *args: str) -> str:
    state, record, tree = server_state(project), restore_record(project), tree_snapshot(project.backups)
    result = project.pgdr(*args)
    line = assert_clean_failure(result, 9)
    assert "restore another" in result.stderr
    assert "Restoring" not in result.stdout
    assert server_state(project) == state, "the server changed although the backup was refused"
    assert restore_record(project) == record
    assert tree_snapshot(project.backups) == tree, "a safety backup or a local copy was left"
    return line


@pytest.mark.parametrize(("target", "damage"), CASES)
def test_a_damaged_backup_is_refused_with_exit_9_before_the_server_is_touched(damaged, target, damage):
    extension, make, words = DAMAGES[damage]
    number = CASES.index((target, damage))
    key = f"20240102/postgres-all-20240102-0300{number:02d}{extension}"
    data, manifest = make(damaged, key)
    plant(damaged, target, key, data, manifest)
    try:
        line = refused_before_the_server_is_touched(damaged, "restore", "file", key, "--from", target,
                                                    "--clean", "--yes")
    finally:
        remove(damaged, target, key)
    assert key in line
    assert words and words in line


def test_restore_latest_refuses_a_damaged_newest_backup_instead_of_falling_back_silently(damaged):
    key = "20991231/postgres-all-20991231-235959.sql.gz"
    # as big as the good backup: damaged, not flagged suspicious by its size (a suspicious newest backup is refused
    # earlier, with exit 3: end_to_end/test_clean_means_clean.py)
    plant(damaged, "local", key, b"\x1f\x8b\x08\x00" + os.urandom(len(damaged.good)), None)
    try:
        line = refused_before_the_server_is_touched(damaged, "restore", "latest", "--clean", "--yes")
    finally:
        remove(damaged, "local", key)
    assert key in line
    assert count_orders(damaged) == 100
