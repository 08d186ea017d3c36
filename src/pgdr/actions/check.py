"""pgdr check: are the backups fresh and sound? One line for Nagios, cron and CI; exit 0 or 15.

Per target, the newest (non-safety) backup must exist, be younger than --max-age, be at least backup.min_size,
not be under half the previous backup, and have its manifest (be verified). When drills are recorded in that
target, the last one must have succeeded; with --max-drill-age it must also be recent enough (and exist).
A target with a WAL archive (wal/) must be no further behind the server than wal.rpo_objective, and have no gap
after its oldest base backup; when the server answers, its replication slot wal.slot, if it exists, must be in use.
The first line is `OK: ...` or `CRITICAL: <the first problem>` with Nagios performance data after a `|`;
one line per problem follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgdr.catalog import BackupRecord, list_backups
from pgdr.context import Context
from pgdr.drill_history import drill_history
from pgdr.errors import PgdrError
from pgdr.periods import format_period
from pgdr.storage import open_storage
from pgdr.ui import human_size
from pgdr.wal.reading import HINT_STREAM, slot_active, target_window
from pgdr.wal.window import Window


@dataclass
class Problem:
    code: str  # no_backup, too_old, too_small, shrank, unverified, drill_failed, drill_too_old, no_drill, storage,
    # wal_behind, wal_gap, wal_slot_inactive
    target: str
    message: str


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    newest: dict[str, dict[str, Any]] = field(default_factory=dict)
    windows: dict[str, Window] = field(default_factory=dict)  # targets with a WAL archive

    @property
    def ok(self) -> bool:
        return not self.problems

    def performance_data(self) -> str:
        parts = [f"{target}_age={entry['age_seconds']}s {target}_size={entry['size']}B"
                 for target, entry in self.newest.items()]
        return " | " + " ".join(parts) if parts else ""

    def first_line(self) -> str:
        if self.ok:
            summary = ", ".join(f"{target} {entry['key']} {format_period(entry['age_seconds'], 2)} old, "
                                f"{human_size(entry['size'])}" for target, entry in self.newest.items())
            return f"OK: newest backup {summary}" + self.performance_data()
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"CRITICAL: {self.problems[0].message}{more}" + self.performance_data()

    def as_json(self) -> dict[str, Any]:
        data = {"status": "OK" if self.ok else "CRITICAL", "summary": self.first_line(),
                "problems": [problem.__dict__ for problem in self.problems], "newest": self.newest}
        if self.windows:
            data["wal_windows"] = {target: found.as_json() for target, found in self.windows.items()}
        return data


def backup_problems(records: list[BackupRecord], target: str, now: datetime, max_age: float, min_size: int
                    ) -> list[Problem]:
    """The newest backup of one target against the rules; records newest last, safety backups excluded."""
    if not records:
        return [Problem("no_backup", target, f"no backup in {target}")]
    newest, problems = records[-1], []
    age = (now - newest.key.created).total_seconds()
    if age > max_age:
        problems.append(Problem("too_old", target, f"newest backup in {target} is {format_period(age, 2)} old "
                                                   f"(max {format_period(max_age)}): {newest.key}"))
    if newest.size < min_size:
        problems.append(Problem("too_small", target, f"newest backup in {target} is {human_size(newest.size)}, "
                                                     f"under backup.min_size {human_size(min_size)}: {newest.key}"))
    if len(records) > 1 and newest.size * 2 < records[-2].size:
        problems.append(Problem("shrank", target, f"newest backup in {target} is {human_size(newest.size)}, under "
                                                  f"half the previous one ({human_size(records[-2].size)}): "
                                                  f"{newest.key}"))
    if not newest.verified:
        why = newest.manifest_error or "no manifest"
        problems.append(Problem("unverified", target, f"newest backup in {target} is unverified ({why}): "
                                                      f"{newest.key}"))
    return problems


def drill_problems(history: list[dict[str, Any]], target: str, now: datetime, max_drill_age: float | None
                   ) -> list[Problem]:
    """The last recorded drill must have passed; with max_drill_age, it must exist and be recent enough."""
    if not history:
        if max_drill_age is None:
            return []
        return [Problem("no_drill", target, f"no drill recorded in {target} (max drill age "
                                            f"{format_period(max_drill_age)}): run `pgdr drill`")]
    last, problems = history[-1], []
    if last.get("outcome") != "ok":
        problems.append(Problem("drill_failed", target, f"last drill ({str(last.get('started_at', '?'))[:19]}, "
                                                        f"{last.get('key') or 'no backup'}) failed: "
                                                        f"{last.get('error') or last.get('outcome')}"))
    if max_drill_age is not None:
        started = _parse_time(last.get("started_at"))
        age = (now - started).total_seconds() if started else float("inf")
        if age > max_drill_age:
            when = f"{format_period(age, 2)} ago" if started else "at an unknown time"
            problems.append(Problem("drill_too_old", target, f"last drill in {target} was {when} "
                                                             f"(max {format_period(max_drill_age)})"))
    return problems


def wal_problems(found: Window, target: str, objective: float) -> list[Problem]:
    """The archive must be close behind the server and whole after the oldest base backup."""
    problems = []
    if found.rpo_seconds is not None and found.rpo_seconds > objective:
        behind = format_period(found.rpo_seconds, 2)
        problems.append(Problem("wal_behind", target, f"WAL archive in {target} is {behind} behind the server "
                                                      f"(wal.rpo_objective {format_period(objective)}): "
                                                      f"{HINT_STREAM}"))
    if found.gap:
        problems.append(Problem("wal_gap", target, f"WAL archive in {target} has a gap: segment {found.gap} is "
                                                   f"missing, recovery stops before it; take a base backup "
                                                   f"(backup.format = \"physical\") to start a whole window again"))
    return problems


def slot_problems(active: bool | None, slot: str, target: str) -> list[Problem]:
    if active is not False:
        return []
    return [Problem("wal_slot_inactive", target, f"replication slot {slot!r} is inactive: nothing streams the WAL "
                                                 f"(and the server keeps it until something does); {HINT_STREAM}")]


def _parse_time(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check(context: Context, targets: list[str], max_age: float, max_drill_age: float | None = None,
          now: datetime | None = None) -> CheckReport:
    now = now or datetime.now(UTC)
    report = CheckReport()
    for target in targets:
        try:
            storage = open_storage(context.settings, target, context.output.warn)
            records = list_backups(storage, context.settings.backup.min_size)
            history = drill_history(context, target)
            found = target_window(context, storage, now)
        except PgdrError as error:
            report.problems.append(Problem("storage", target, f"cannot read {target}: {error.message}"))
            continue
        report.problems += backup_problems(records, target, now, max_age, context.settings.backup.min_size)
        report.problems += drill_problems(history, target, now, max_drill_age)
        if records:
            report.newest[target] = {"key": records[-1].key.key, "size": records[-1].size,
                                     "age_seconds": round((now - records[-1].key.created).total_seconds()),
                                     "verified": records[-1].verified}
        if found is not None:
            report.windows[target] = found
            report.problems += wal_problems(found, target, context.settings.wal.rpo_objective)
    if report.windows:
        report.problems += slot_problems(slot_active(context), context.settings.wal.slot, next(iter(report.windows)))
    return report
