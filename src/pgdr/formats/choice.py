"""The one place a backup format is chosen: from the settings for a new backup, from the key for an existing one."""

from __future__ import annotations

from pgdr.artifact import BackupKey
from pgdr.config import Settings
from pgdr.formats.base import BackupFormat
from pgdr.formats.physical import PhysicalFormat
from pgdr.formats.plain import PlainFormat
from pgdr.formats.split import SplitFormat

FORMATS: dict[str, BackupFormat] = {"plain": PlainFormat(), "split": SplitFormat(), "physical": PhysicalFormat()}


def for_new_backup(settings: Settings, safety: bool = False) -> BackupFormat:
    """backup.format; a safety backup (taken before a restore --clean) is always one plain file."""
    return FORMATS["plain" if safety else settings.backup.format]


def of_key(key: BackupKey) -> BackupFormat:
    return FORMATS[key.format]
