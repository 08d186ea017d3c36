"""pgdr list: the backups each target holds, with their manifests, newest last, suspicious ones flagged; and the
window each target with a WAL archive can recover to.

The WAL readers (pgdr.wal: the archive's names, codecs and decoders) are imported only when a target may hold an
archive: a folder of plain backups is listed without them (start-up, tests/unit/test_startup_imports.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgdr.catalog import BackupRecord, list_backups
from pgdr.errors import PgdrError
from pgdr.storage import open_storage

if TYPE_CHECKING:
    from pgdr.context import Context
    from pgdr.wal.window import Window

ARCHIVE_FOLDER = "wal"  # pgdr.wal.archive.WAL_PREFIX without its slash (a test holds them equal)


def backups(context: Context, targets: list[str], include_safety: bool = False) -> list[BackupRecord]:
    records: list[BackupRecord] = []
    for target in targets:
        storage = open_storage(context.settings, target, context.output.warn)
        records += list_backups(storage, context.settings.backup.min_size, include_safety)
    return records


def recoverable_windows(context: Context, targets: list[str]) -> dict[str, Window]:
    """Target -> its recoverable window, for the targets that have a WAL archive."""
    if not any(may_hold_an_archive(context, target) for target in targets):
        return {}
    from pgdr.wal.reading import windows

    return windows(context, targets)


def may_hold_an_archive(context: Context, target: str) -> bool:
    """False only for a local folder without a wal/ folder holding a file. Any other target goes to the WAL readers,
    which read it and report what they cannot read: S3 (a request more would cost more than the imports saved), or a
    folder this check cannot read."""
    if target != "local":
        return True
    try:
        return open_storage(context.settings, target, context.output.warn).exists(ARCHIVE_FOLDER)
    except PgdrError:
        return True
