"""pgdr restore: check the backup, refuse to overwrite data without --clean, then restore it.

Order matters: the checksum, a full decompression pass where needed and the target's pre-flight run before the
server is touched; a target with user databases or roles is refused unless --clean, which first takes a safety
backup of the current state, then cleans, then restores.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgdr.actions import backup
from pgdr.actions import clean as cleaning
from pgdr.actions import restore as steps
from pgdr.catalog import BackupRecord
from pgdr.context import Context
from pgdr.locking import locked
from pgdr.state import pending_safety_backup, read_restore_record


@dataclass
class RestoreResult:
    record: BackupRecord
    safety_backup: str | None


@locked("restore")
def restore(context: Context, source: str = "local", key: str | None = None, clean: bool = False,
            command: str = "", database: str | None = None, allow_suspicious: bool = False) -> RestoreResult:
    """command: how the user would re-run this with --clean (named in the refusal).
    database: restore only this database (split backups)."""
    prepared = steps.prepare(context, source, key, database, allow_suspicious)
    databases, roles = steps.existing_data(context)
    conflicts = [name for name in databases if database is None or name == database]
    safety_key = pending_safety_backup(context.settings.state_dir)
    if conflicts or (roles and database is None):
        command = command or f"pgdr restore {'file ' + prepared.record.key.key if key else 'latest'}"
        command += f" --database {database}" if database else ""
        if not clean:
            steps.refuse_existing(conflicts, roles if database is None else [], command)
        context.confirm_destructive(f"Replace databases {', '.join(conflicts) or '(none)'} with {prepared.record.key}")
        safety_key = _safety_backup(context)
        _clean_target(context, database, safety_key)
        databases, roles = steps.existing_data(context)
    steps.apply(context, prepared, set(roles), safety_key)
    return RestoreResult(prepared.record, safety_key)


def _clean_target(context: Context, database: str | None, safety_key: str | None) -> None:
    if database is None:
        cleaning.clean_soft(context, confirmed=True, safety_backup=safety_key)
    else:
        cleaning.drop_database(context, database)


def _safety_backup(context: Context) -> str | None:
    """A backup of what the clean is about to drop, unless the cluster holds only the remains of a restore that
    did not complete: backing those up again would rotate the real old state out of retention (keep_safety), so
    the first attempt's safety backup stays the one named."""
    record = read_restore_record(context.settings.state_dir)
    if record is not None and not record.complete:
        earlier = record.safety_backup
        context.output.info(f"   no safety backup: the cluster holds an incomplete restore of {record.key}"
                            + (f"; the state from before it is in safety backup {earlier}" if earlier else ""))
        return earlier
    context.output.step("Taking a safety backup of the current state first")
    return backup.backup(context, targets=["local"], safety=True).key.key
