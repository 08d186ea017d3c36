"""pgdr's own record of the last restore, kept in the state dir beside the cluster.

`verify` compares row counts with the manifest of the backup restored last; an interrupted restore leaves the
record marked incomplete so the next command can say what to do.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from pgdr.artifact import Manifest

RESTORE_RECORD = "last-restore.json"


def record_path(state_dir: Path) -> Path:
    return state_dir / RESTORE_RECORD


class RestoreRecord(BaseModel):
    """The last restore: which backup, from where, whether it completed, the manifest it was checked against, and
    the safety backup holding the cluster's state from before its first attempt (kept from prune while the restore
    is incomplete)."""

    key: str
    target: str
    status: str  # "incomplete" until the restore completed, then "complete"
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    manifest: Manifest | None = None
    safety_backup: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def write_restore_record(state_dir: Path, record: RestoreRecord) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = record_path(state_dir).with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(record.model_dump_json(indent=2, by_alias=True))
    os.replace(temporary, record_path(state_dir))


def read_restore_record(state_dir: Path) -> RestoreRecord | None:
    """None when there is none, or when it cannot be read (an older or damaged record says nothing trustworthy)."""
    path = record_path(state_dir)
    try:
        return RestoreRecord.model_validate_json(path.read_bytes())
    except (ValidationError, OSError):
        return None


def pending_safety_backup(state_dir: Path) -> str | None:
    """The safety backup of a restore that has not completed: the only copy of the state before it."""
    record = read_restore_record(state_dir)
    return None if record is None or record.complete else record.safety_backup


def clear_restore_record(state_dir: Path) -> None:
    record_path(state_dir).unlink(missing_ok=True)
