"""Which backups to keep: grandfather-father-son retention, as one pure function.

Regular backups are kept when they are
  - among the newest `keep_last`;
  - the newest backup of one of the newest `keep_daily` days, `keep_weekly` ISO weeks or `keep_monthly` months
    that have backups (days without backups do not use up a slot, so a paused schedule never empties the
    history). Within a period the newest *verified* backup represents it; a period holding only unverified
    (manifest-less) backups is represented by its newest one;
  - the newest backup at all (it may be one whose manifest is being written right now) and the newest
    verified backup: never deleted, whatever the counts say;
  - protected: a drill is reading it.
Safety backups (taken by `restore --clean`) are kept when among the newest `keep_safety`, or protected, or pinned:
the safety backup of a restore that has not completed holds the only copy of the state from before it.
Every backup not kept is deleted; every decision carries its reasons. Periods are in UTC, like the keys.

Pruning the kept set again deletes nothing: each rule picks the same backups from the kept set as it did from
the full set, because every backup it picked there is still in it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Candidate:
    """What retention needs to know about one backup."""

    key: str
    created: datetime
    verified: bool
    safety: bool = False
    based_on: str | None = None  # an incremental base backup: the key of the one it needs (pgdr.formats.incremental)


@dataclass(frozen=True)
class Policy:
    keep_last: int = 7
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    keep_safety: int = 3


@dataclass
class Decision:
    candidate: Candidate
    keep: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.candidate.key

    def as_json(self) -> dict[str, object]:
        return {"key": self.key, "keep": self.keep, "reasons": self.reasons, "verified": self.candidate.verified,
                "safety": self.candidate.safety, "created": self.candidate.created.isoformat()}


@dataclass
class Selection:
    keep: list[Decision]
    delete: list[Decision]


def day_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


def week_of(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year:04d}-W{week:02d}"


def month_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


PERIODS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("daily", "keep_daily", day_of),
    ("weekly", "keep_weekly", week_of),
    ("monthly", "keep_monthly", month_of),
)


def newest_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda candidate: (candidate.created, candidate.key), reverse=True)


def period_representatives(backups: list[Candidate], period_of: Callable[[datetime], str], count: int
                           ) -> list[tuple[str, Candidate]]:
    """(period, backup kept for it) for the newest `count` periods that have backups; backups newest first."""
    periods: dict[str, list[Candidate]] = {}
    for backup in backups:
        periods.setdefault(period_of(backup.created), []).append(backup)
    chosen = []
    for period, members in list(periods.items())[:count]:
        verified = [member for member in members if member.verified]
        chosen.append((period, (verified or members)[0]))
    return chosen


def regular_reasons(backups: list[Candidate], policy: Policy) -> dict[str, list[str]]:
    """key -> reasons to keep, for regular backups sorted newest first."""
    reasons: dict[str, list[str]] = {backup.key: [] for backup in backups}
    if backups:
        reasons[backups[0].key].append("newest backup")
    verified = [backup for backup in backups if backup.verified]
    if verified:
        reasons[verified[0].key].append("newest verified backup")
    for position, backup in enumerate(backups[: policy.keep_last], 1):
        reasons[backup.key].append(f"last {policy.keep_last} (#{position})")
    for label, attribute, period_of in PERIODS:
        for period, backup in period_representatives(backups, period_of, getattr(policy, attribute)):
            reasons[backup.key].append(f"{label} {period}")
    return reasons


def safety_reasons(backups: list[Candidate], policy: Policy) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {backup.key: [] for backup in backups}
    for position, backup in enumerate(backups[: policy.keep_safety], 1):
        reasons[backup.key].append(f"last {policy.keep_safety} safety backups (#{position})")
    return reasons


def delete_reason(candidate: Candidate, policy: Policy) -> str:
    if candidate.safety:
        return f"safety backup older than the newest {policy.keep_safety}"
    return (f"not among the last {policy.keep_last}, nor the newest of the last {policy.keep_daily} days, "
            f"{policy.keep_weekly} weeks or {policy.keep_monthly} months with backups")


def keep_chains(ordered: list[Candidate], reasons: dict[str, list[str]]) -> None:
    """A kept incremental keeps the base backup it is based on, and so on down its chain (newest first: a parent
    is older than its child, so it is reached after it)."""
    for candidate in ordered:
        if reasons[candidate.key] and candidate.based_on in reasons:
            reasons[candidate.based_on].append(f"incremental {candidate.key} is based on it")


def select(candidates: Iterable[Candidate], policy: Policy, protected: Collection[str] = (),
           pinned: Mapping[str, str] | None = None) -> Selection:
    """Split backups into keep and delete (both newest first), each decision with its reasons. protected: keys a
    drill is reading; pinned: other keys kept whatever the counts say, with the reason (the safety backup of a
    restore that has not completed)."""
    ordered = newest_first(candidates)
    reasons = regular_reasons([backup for backup in ordered if not backup.safety], policy)
    reasons |= safety_reasons([backup for backup in ordered if backup.safety], policy)
    for key in protected:
        if key in reasons:
            reasons[key].append("a drill is reading it")
    for key, reason in (pinned or {}).items():
        if key in reasons:
            reasons[key].append(reason)
    keep_chains(ordered, reasons)
    selection = Selection([], [])
    for candidate in ordered:
        if reasons[candidate.key]:
            selection.keep.append(Decision(candidate, True, reasons[candidate.key]))
        else:
            selection.delete.append(Decision(candidate, False, [delete_reason(candidate, policy)]))
    return selection
