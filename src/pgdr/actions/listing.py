"""pgdr list: the backups each target holds, with their manifests, newest last, suspicious ones flagged; and the
window each target with a WAL archive can recover to."""

from __future__ import annotations

from pgdr.catalog import BackupRecord, list_backups
from pgdr.context import Context
from pgdr.storage import open_storage
from pgdr.wal.reading import windows
from pgdr.wal.window import Window


def backups(context: Context, targets: list[str], include_safety: bool = False) -> list[BackupRecord]:
    records: list[BackupRecord] = []
    for target in targets:
        storage = open_storage(context.settings, target, context.output.warn)
        records += list_backups(storage, context.settings.backup.min_size, include_safety)
    return records


def recoverable_windows(context: Context, targets: list[str]) -> dict[str, Window]:
    """Target -> its recoverable window, for the targets that have a WAL archive."""
    return windows(context, targets)
