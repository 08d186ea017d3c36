"""The catalog of backups in a storage: pairing with manifests, ordering, suspicious sizes, latest."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgdr.artifact import (
    BackupKey,
    Manifest,
    PhysicalFacts,
    StoredPart,
    make_key,
    make_physical_key,
    make_split_key,
    parse_key,
)
from pgdr.catalog import BackupRecord, chain_of, complete_chains, find, latest, list_backups, suspicious_flags
from pgdr.errors import StorageError, UsageError
from pgdr.storage.local import LocalStorage

T0 = datetime(2025, 11, 16, 9, 0, 0, tzinfo=UTC)


def record(size: int, hours: int = 0, manifest_error: str = "") -> BackupRecord:
    key = make_key(T0 + timedelta(hours=hours), "gzip")
    return BackupRecord(key, size, T0, "local", manifest_error=manifest_error)


# --- suspicious_flags ---------------------------------------------------------------------------------------------

def test_smaller_than_min_size_is_flagged() -> None:
    records = [record(999, 0), record(1000, 1), record(5000, 2)]
    suspicious_flags(records, min_size=1000)
    assert records[0].flags == ["smaller than min_size (999 < 1000 bytes)"]
    assert records[1].flags == []  # exactly min_size is fine
    assert records[2].flags == []


def test_under_half_the_previous_is_flagged() -> None:
    records = [record(10_000, 0), record(4_999, 1), record(2_500, 2), record(1_249, 3), record(100_000, 4)]
    suspicious_flags(records, min_size=0)
    assert records[0].flags == []  # nothing before the first
    assert records[1].flags == ["under half the previous backup (4999 vs 10000 bytes)"]
    assert records[2].flags == []  # exactly half
    assert records[3].flags == ["under half the previous backup (1249 vs 2500 bytes)"]
    assert records[4].flags == []  # growth is never suspicious


def test_both_flags_and_manifest_errors_accumulate() -> None:
    records = [record(10_000, 0), record(100, 1, manifest_error="manifest of x is unreadable: boom")]
    suspicious_flags(records, min_size=1000)
    assert records[1].flags == [
        "smaller than min_size (100 < 1000 bytes)",
        "under half the previous backup (100 vs 10000 bytes)",
        "manifest of x is unreadable: boom",
    ]


def test_flags_are_recomputed_not_appended() -> None:
    records = [record(10, 0), record(1, 1)]
    suspicious_flags(records, min_size=100)
    suspicious_flags(records, min_size=100)
    assert len(records[1].flags) == 2
    suspicious_flags(records, min_size=0)
    assert records[0].flags == [] and records[1].flags == ["under half the previous backup (1 vs 10 bytes)"]


# --- list_backups over a real local folder --------------------------------------------------------------------------

def manifest_for(key: BackupKey, data: bytes) -> Manifest:
    return Manifest(key=key.key, compression=key.compression, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                    uncompressed_size=len(data) * 3, server_version="15.18", pg_dumpall_version="15.18",
                    pgdr_version="0.1.0", started_at=key.created, finished_at=key.created + timedelta(seconds=3))


def store(storage: LocalStorage, key: BackupKey, size: int, with_manifest: bool = True) -> bytes:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    storage.put_bytes(key.key, data)
    if with_manifest:
        storage.put_bytes(key.manifest_key, manifest_for(key, data).to_json())
    return data


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "backups")


def test_records_pair_backups_with_manifests_newest_last(storage: LocalStorage) -> None:
    newest = make_key(T0 + timedelta(days=2), "zstd")
    oldest = make_key(T0, "gzip")
    legacy = make_key(T0 + timedelta(days=1), "gzip")  # from the old shell pipeline: no manifest
    data = store(storage, newest, 5000)
    store(storage, oldest, 4000)
    store(storage, legacy, 4500, with_manifest=False)
    records = list_backups(storage, min_size=1000)
    assert [r.key for r in records] == [oldest, legacy, newest]
    assert [r.verified for r in records] == [True, False, True]
    assert records[1].manifest is None and records[1].manifest_error == ""
    assert records[2].manifest.sha256 == hashlib.sha256(data).hexdigest()
    assert records[2].size == 5000
    assert all(r.target == "local" and r.modified.tzinfo is not None for r in records)
    assert all(r.flags == [] for r in records)


def test_partial_uploads_and_foreign_files_are_ignored(storage: LocalStorage) -> None:
    finished = make_key(T0, "gzip")
    store(storage, finished, 3000)
    in_progress = storage.open_upload(make_key(T0 + timedelta(hours=1), "gzip").key)
    in_progress.write(b"half a dump")
    orphan = make_key(T0 + timedelta(hours=2), "gzip")
    storage.put_bytes(orphan.manifest_key, manifest_for(orphan, b"gone").to_json())
    for name in ("README.txt", "20251116/notes.sql", "20251116/postgres-all-20251116-090000.sql.gz.bak",
                 "other/20251116/postgres-all-20251116-090000.sql.gz"):
        (storage.root / name).parent.mkdir(parents=True, exist_ok=True)
        (storage.root / name).write_bytes(b"x")
    try:
        records = list_backups(storage, min_size=0)
    finally:
        in_progress.abort()
    assert [r.key for r in records] == [finished]
    hidden = [path for path in storage.root.rglob(".*")]
    assert hidden == []  # the aborted upload left nothing


def test_partial_file_exists_on_disk_but_is_not_listed(storage: LocalStorage) -> None:
    key = make_key(T0, "gzip")
    upload = storage.open_upload(key.key)
    upload.write(b"x" * 5000)
    try:
        assert [path.name.startswith(".") for path in storage.root.rglob("*") if path.is_file()] == [True]
        assert list_backups(storage, min_size=0) == []
    finally:
        upload.abort()


def test_safety_backups_are_excluded_unless_asked(storage: LocalStorage) -> None:
    regular = make_key(T0, "gzip")
    safety = make_key(T0 + timedelta(hours=1), "gzip", safety=True)
    store(storage, regular, 3000)
    store(storage, safety, 3000)
    assert [r.key for r in list_backups(storage, min_size=0)] == [regular]
    with_safety = list_backups(storage, min_size=0, include_safety=True)
    assert [r.key for r in with_safety] == [regular, safety]
    assert with_safety[1].key.safety and with_safety[1].verified
    assert latest(with_safety, "here").key == regular  # restore latest never picks a safety backup


def test_damaged_manifest_is_flagged_not_fatal(storage: LocalStorage) -> None:
    good, damaged = make_key(T0, "gzip"), make_key(T0 + timedelta(hours=1), "gzip")
    store(storage, good, 3000)
    store(storage, damaged, 3000, with_manifest=False)
    storage.put_bytes(damaged.manifest_key, b'{"key": "truncated')
    records = list_backups(storage, min_size=0)
    assert [r.key for r in records] == [good, damaged]
    assert records[1].manifest is None and not records[1].verified
    assert records[1].manifest_error.startswith(f"manifest of {damaged.key} is unreadable")
    assert records[1].flags == [records[1].manifest_error]


def test_small_and_shrinking_backups_are_flagged(storage: LocalStorage) -> None:
    keys = [make_key(T0 + timedelta(days=day), "gzip") for day in range(3)]
    store(storage, keys[0], 10_000)
    store(storage, keys[1], 4_000)
    store(storage, keys[2], 500)
    records = list_backups(storage, min_size=1000)
    assert records[0].flags == []
    assert records[1].flags == ["under half the previous backup (4000 vs 10000 bytes)"]
    assert records[2].flags == ["smaller than min_size (500 < 1000 bytes)",
                                "under half the previous backup (500 vs 4000 bytes)"]


def test_latest_is_the_newest_regular_backup(storage: LocalStorage) -> None:
    keys = [make_key(T0 + timedelta(minutes=minute), "gzip") for minute in (5, 1, 3)]
    for key in keys:
        store(storage, key, 2000)
    records = list_backups(storage, min_size=0)
    assert latest(records, storage.describe()).key == keys[0]


def test_latest_of_nothing_names_where_it_looked(storage: LocalStorage) -> None:
    assert list_backups(storage, min_size=0) == []  # the folder does not even exist yet
    store(storage, make_key(T0, "gzip", safety=True), 2000)
    records = list_backups(storage, min_size=0, include_safety=True)
    with pytest.raises(StorageError) as raised:
        latest(records, storage.describe())
    assert str(storage.root) in raised.value.message
    assert "pgdr backup" in raised.value.hint


def test_find_by_key(storage: LocalStorage) -> None:
    key = make_key(T0, "zstd")
    store(storage, key, 2000)
    records = list_backups(storage, min_size=0)
    assert find(records, key.key, "here").key == key
    with pytest.raises(StorageError, match="not found in here"):
        find(records, make_key(T0 + timedelta(seconds=1), "zstd").key, "here")
    with pytest.raises(UsageError):
        find(records, "../../etc/passwd", "here")


def test_as_json(storage: LocalStorage) -> None:
    key = make_key(T0, "gzip")
    data = store(storage, key, 2000)
    document = list_backups(storage, min_size=5000)[0].as_json()
    assert document["key"] == key.key
    assert document["created"] == "2025-11-16T09:00:00+00:00"
    assert document["verified"] is True
    assert document["compression"] == "gzip"
    assert document["format"] == "plain"
    assert document["sha256"] == hashlib.sha256(data).hexdigest()
    assert document["size"] == 2000
    assert document["flags"] == ["smaller than min_size (2000 < 5000 bytes)"]
    assert parse_key(document["key"]) == key


# --- found by the mutation pass (tests/mutants/mutation_pass.py) --------------------------------------------------

def test_exactly_half_the_previous_is_not_flagged() -> None:
    records = [record(5000, 0), record(2500, 1), record(1249, 2)]
    suspicious_flags(records, min_size=0)
    assert [r.flags for r in records] == [[], [], ["under half the previous backup (1249 vs 2500 bytes)"]]


def test_as_json_of_a_backup_without_manifest(storage: LocalStorage) -> None:
    key = make_key(T0, "zstd")
    store(storage, key, 2000, with_manifest=False)
    [found] = list_backups(storage, min_size=0)
    assert found.as_json() == {
        "key": key.key, "target": "local", "size": 2000, "created": "2025-11-16T09:00:00+00:00",
        "modified": found.modified.isoformat(), "verified": False, "format": "plain", "compression": "zstd",
        "sha256": None, "flags": [],
    }


def test_a_split_backup_is_listed_through_its_manifest_with_the_size_of_its_parts(storage: LocalStorage) -> None:
    key = make_split_key(T0)
    parts = [StoredPart(name="globals.sql.gz", size=100, sha256="a" * 64),
             StoredPart(name="demo.dump", database="demo", size=2000, sha256="b" * 64)]
    for part in parts:
        storage.put_bytes(key.object_key(part.name), b"x" * part.size)
    manifest = manifest_for(key, b"").model_copy(update={"format": "split", "parts": parts})
    storage.put_bytes(key.manifest_key, manifest.to_json())
    [found] = list_backups(storage, min_size=0)
    assert found.key == key and found.verified
    assert found.size == 2100
    assert found.as_json()["format"] == "split"


# --- chains of incremental base backups -------------------------------------------------------------------------

def base_backup(hours: int, size: int = 10_000, incremental_of: BackupRecord | None = None) -> BackupRecord:
    key = make_physical_key(T0 + timedelta(hours=hours), "gzip")
    facts = PhysicalFacts(timeline=1, start_lsn="0/2000028", stop_lsn="0/2000100", start_time=T0, stop_time=T0,
                          incremental_of=incremental_of.key.key if incremental_of else None)
    return BackupRecord(key, size, T0, "local", manifest=Manifest.model_construct(physical=facts))


def test_a_chain_runs_from_the_full_base_backup_to_the_incremental() -> None:
    full = base_backup(0)
    first = base_backup(1, incremental_of=full)
    second = base_backup(2, incremental_of=first)
    records = {record.key.key: record for record in (full, first, second)}
    assert chain_of(second, records) == [full, first, second]
    assert chain_of(full, records) == [full]


def test_an_incremental_whose_base_is_gone_starts_no_recovery() -> None:
    full = base_backup(0)
    first = base_backup(1, incremental_of=full)
    second = base_backup(2, incremental_of=first)
    other = base_backup(3)
    assert complete_chains([full, second, other]) == [full, other]
    assert chain_of(second, {record.key.key: record for record in (full, second)}) is None


def test_forged_manifests_that_make_a_loop_are_no_chain() -> None:
    first, second = base_backup(1), base_backup(2)
    first.manifest.physical.incremental_of = second.key.key  # type: ignore[union-attr]
    second.manifest.physical.incremental_of = first.key.key  # type: ignore[union-attr]
    assert chain_of(second, {record.key.key: record for record in (first, second)}) is None


def test_an_incremental_is_small_by_design_and_not_the_size_the_next_full_one_is_held_to() -> None:
    full = base_backup(0, size=10_000)
    small = base_backup(1, size=100, incremental_of=full)
    shrunk_full = base_backup(2, size=4_000)
    records = [full, small, shrunk_full]
    suspicious_flags(records, min_size=1000)
    assert small.flags == []
    assert shrunk_full.flags == ["under half the previous backup (4000 vs 10000 bytes)"]  # the full one before
