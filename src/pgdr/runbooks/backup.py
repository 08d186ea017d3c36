"""pgdr backup: the backup, then the prune that [retention] prune_after_backup asks for."""

from __future__ import annotations

from pgdr.actions import backup as backup_step
from pgdr.actions import prune
from pgdr.actions.backup import BackupResult
from pgdr.context import Context


def backup(context: Context, targets: list[str] | None = None) -> BackupResult:
    result = backup_step.backup(context, targets)
    if context.settings.retention.prune_after_backup:
        prune.prune(context, result.targets, confirmed=True)
    return result
