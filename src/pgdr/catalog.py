"""The backups a storage holds: keys paired with their manifests, newest last, suspicious ones flagged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pgdr.artifact import MANIFEST_SUFFIX, SPLIT_EXTENSION, BackupKey, Manifest, is_backup_key, parse_key
from pgdr.errors import IntegrityError, StorageError
from pgdr.storage import Storage, StoredObject


@dataclass
class BackupRecord:
    key: BackupKey
    size: int
    modified: datetime
    target: str
    manifest: Manifest | None = None
    manifest_error: str = ""
    flags: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.manifest is not None

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key.key,
            "target": self.target,
            "size": self.size,
            "created": self.key.created.isoformat(),
            "modified": self.modified.isoformat(),
            "verified": self.verified,
            "format": self.manifest.format if self.manifest else "plain",
            "compression": self.key.compression,
            "sha256": self.manifest.sha256 if self.manifest else None,
            "flags": self.flags,
        }


def suspicious_flags(records: list[BackupRecord], min_size: int) -> None:
    """Flag backups smaller than min_size, or under half the size of the previous one (newest last). An
    incremental base backup is small by design: it is neither flagged nor the size the next one is held to."""
    previous: BackupRecord | None = None
    for record in records:
        record.flags = []
        if based_on(record) is not None:
            continue
        if record.size < min_size:
            record.flags.append(f"smaller than min_size ({record.size} < {min_size} bytes)")
        if previous is not None and record.size * 2 < previous.size:
            record.flags.append(f"under half the previous backup ({record.size} vs {previous.size} bytes)")
        if record.manifest_error:
            record.flags.append(record.manifest_error)
        previous = record


def based_on(record: BackupRecord) -> str | None:
    """The key of the base backup `record` is an incremental of, None for a full one (or no manifest)."""
    if record.manifest is None or record.manifest.physical is None:
        return None
    return record.manifest.physical.incremental_of


def chain_of(record: BackupRecord, records: Mapping[str, BackupRecord]) -> list[BackupRecord] | None:
    """The base backups a recovery from `record` extracts, the full one first and `record` last; None when one it
    is based on is not in `records` (deleted, or its manifest lost)."""
    chain = [record]
    while (parent := based_on(chain[0])) is not None:
        if parent not in records or len(chain) > len(records):  # the second: a forged loop of manifests
            return None
        chain.insert(0, records[parent])
    return chain


def complete_chains(records: list[BackupRecord]) -> list[BackupRecord]:
    """The records a recovery can start from: full ones, and incrementals whose whole chain is there."""
    by_key = {record.key.key: record for record in records}
    return [record for record in records if chain_of(record, by_key) is not None]


def read_manifest(storage: Storage, key: BackupKey) -> Manifest | None:
    data = storage.get_bytes(key.manifest_key)
    return Manifest.from_json(data, key.key) if data is not None else None


def list_backups(storage: Storage, min_size: int, include_safety: bool = False) -> list[BackupRecord]:
    objects: dict[str, StoredObject] = {item.key: item for item in storage.list()}
    records = []
    for key_text, item in objects.items():
        if key_text.endswith(SPLIT_EXTENSION + MANIFEST_SUFFIX):
            key_text = key_text.removesuffix(MANIFEST_SUFFIX)  # a split backup exists through its manifest
        elif not is_backup_key(key_text) or key_text.endswith(SPLIT_EXTENSION):
            continue
        key = parse_key(key_text)
        if key.safety and not include_safety:
            continue
        record = BackupRecord(key, item.size, item.modified, storage.name)
        if key.manifest_key in objects:
            try:
                record.manifest = read_manifest(storage, key)
            except IntegrityError as error:
                record.manifest_error = error.message
        if record.manifest is not None and record.manifest.parts:  # a backup of parts is as big as they are
            record.size = sum(part.size for part in record.manifest.parts)
        records.append(record)
    records.sort(key=lambda record: (record.key.created, record.key.key))
    suspicious_flags(records, min_size)
    return records


def latest(records: list[BackupRecord], where: str) -> BackupRecord:
    candidates = [record for record in records if not record.key.safety]
    if not candidates:
        raise StorageError(f"no backups found in {where}", "run `pgdr backup` first, or check backup.dir / [s3]")
    return candidates[-1]


def find(records: list[BackupRecord], key: str, where: str) -> BackupRecord:
    parse_key(key)
    for record in records:
        if record.key.key == key:
            return record
    raise StorageError(f"backup {key} not found in {where}", "see `pgdr list` for the keys")
