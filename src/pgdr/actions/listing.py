"""pgdr list: the backups each target holds, with their manifests, newest last, suspicious ones flagged."""

from __future__ import annotations

from pgdr.catalog import BackupRecord, list_backups
from pgdr.context import Context
from pgdr.storage import open_storage


def backups(context: Context, targets: list[str], include_safety: bool = False) -> list[BackupRecord]:
    records: list[BackupRecord] = []
    for target in targets:
        storage = open_storage(context.settings, target, context.output.warn)
        records += list_backups(storage, context.settings.backup.min_size, include_safety)
    return records
