"""The drills' history: one JSON line per drill, beside the backups in every target (pgdr check reads it)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from pgdr.context import Context
from pgdr.errors import PgdrError
from pgdr.storage import open_storage

DRILL_HISTORY = "drill-history.jsonl"


class Reportable(Protocol):
    def as_json(self) -> dict[str, Any]: ...


def record_drill(context: Context, report: Reportable) -> None:
    """Append the drill to the history in every backup target; failures to record are reported, not raised."""
    line = json.dumps(report.as_json()) + "\n"
    for target in context.settings.backup.targets:
        try:
            storage = open_storage(context.settings, target, context.output.warn)
            existing = storage.get_bytes(DRILL_HISTORY) or b""
            storage.put_bytes(DRILL_HISTORY, existing + line.encode())
        except PgdrError as error:
            context.output.warn(f"drill not recorded in {target}: {error.message}")


def drill_history(context: Context, source: str = "local") -> list[dict[str, Any]]:
    data = open_storage(context.settings, source, context.output.warn).get_bytes(DRILL_HISTORY) or b""
    entries = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
