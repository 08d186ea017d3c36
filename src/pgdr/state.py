"""pgdr's own record of the last restore, kept in the state dir beside the cluster.

`verify` compares row counts with the manifest of the backup restored last; an interrupted restore leaves the
record marked incomplete so the next command can say what to do.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESTORE_RECORD = "last-restore.json"


def record_path(state_dir: Path) -> Path:
    return state_dir / RESTORE_RECORD


def write_restore_record(state_dir: Path, key: str, target: str, status: str, manifest: Any | None,
                         safety_backup: str | None = None) -> None:
    """safety_backup: the safety backup holding the cluster's state from before this restore's first attempt
    (kept from prune while the restore is incomplete)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "key": key,
        "target": target,
        "status": status,
        "at": datetime.now(UTC).isoformat(),
        "manifest": manifest.model_dump(mode="json", by_alias=True) if manifest is not None else None,
        "safety_backup": safety_backup,
    }
    temporary = record_path(state_dir).with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle, indent=2)
    os.replace(temporary, record_path(state_dir))


def read_restore_record(state_dir: Path) -> dict[str, Any] | None:
    path = record_path(state_dir)
    if not path.exists():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (ValueError, OSError):
        return None


def pending_safety_backup(state_dir: Path) -> str | None:
    """The safety backup of a restore that has not completed: the only copy of the state before it."""
    record = read_restore_record(state_dir)
    if record is None or record.get("status") == "complete":
        return None
    return str(record["safety_backup"]) if record.get("safety_backup") else None


def clear_restore_record(state_dir: Path) -> None:
    record_path(state_dir).unlink(missing_ok=True)
