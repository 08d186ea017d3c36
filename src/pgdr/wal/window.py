"""The recoverable window of one target and the WAL retention may delete, pure: from the target's physical base
backups, its archive listing, its timeline histories and the streamer's status.

The window starts where the oldest usable base backup is consistent (its stop time) and ends at the newest WAL
stored, read without a gap from that base backup's start segment along the timeline path (a full segment for every
segment but the newest, which may be a partial). A gap ends the window at the gap and is reported. A base backup
whose own WAL (start to stop) is not all stored is not usable: the window starts at the next one.

Retention deletes, of the WAL, only
  - segments (and partials) numbered before the start segment of the oldest kept base backup, whatever their
    timeline: recovery from any kept base backup reads nothing before its own start;
  - partials whose full segment is stored (the streamer uploads the growing segment, then the whole one).
History files are never deleted (a few bytes each; recovery probes them to choose its timeline), nor is anything
when no kept base backup has a manifest (its start is then unknown). Deleting these changes neither the window's
end nor any segment a kept base backup reads: tests/unit/test_wal_window.py checks it on random archives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pgdr.artifact import PhysicalFacts
from pgdr.wal.archive import (
    ArchiveListing,
    Segment,
    StreamStatus,
    TimelineSwitch,
    WalObject,
    needed_segments,
    parse_lsn,
    timeline_path,
)


@dataclass(frozen=True)
class BaseBackup:
    """What the window needs of a physical base backup's manifest."""

    key: str
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_time: datetime

    @classmethod
    def of(cls, key: str, facts: PhysicalFacts) -> BaseBackup:
        return cls(key, facts.timeline, parse_lsn(facts.start_lsn), parse_lsn(facts.stop_lsn), facts.stop_time)


@dataclass
class Window:
    """From `start` (base backup `base_backup` consistent) to `end` (the newest WAL read without a gap); `gap`:
    the first segment missing after it, if any. `rpo_seconds`: how far storage is behind the server now."""

    timeline: int
    base_backup: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    end_segment: str | None = None
    gap: str | None = None
    rpo_seconds: float | None = None
    newest_wal_at: datetime | None = None  # when the newest WAL object (segment or partial) was stored
    problems: list[str] = field(default_factory=list)

    @property
    def recoverable(self) -> bool:
        return self.start is not None and self.end is not None

    def describe(self) -> str:
        rpo = f"RPO now {round(self.rpo_seconds)} s" if self.rpo_seconds is not None else "RPO unknown"
        if not self.recoverable:
            return f"not recoverable to a point: {'; '.join(self.problems) or 'no usable base backup'}, {rpo}"
        assert self.start is not None and self.end is not None
        text = (f"recoverable from {self.start.isoformat(sep=' ', timespec='seconds')} to "
                f"{self.end.isoformat(sep=' ', timespec='seconds')}, {rpo}")
        return text + (f" (gap: WAL segment {self.gap} is missing)" if self.gap else "")

    def as_json(self) -> dict[str, object]:
        def moment(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"timeline": self.timeline, "base_backup": self.base_backup, "from": moment(self.start),
                "to": moment(self.end), "end_segment": self.end_segment, "gap": self.gap,
                "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 3),
                "newest_wal_at": moment(self.newest_wal_at), "problems": self.problems,
                "summary": self.describe()}


def target_timeline(listing: ArchiveListing, histories: dict[int, list[TimelineSwitch]],
                    status: StreamStatus | None) -> int:
    """The timeline recovery follows by default: the newest the archive knows of."""
    stored = [Segment.from_name(name).timeline for name in [*listing.segments, *listing.partials]]
    return max([1, *histories, *stored, *([status.timeline] if status else [])])


def on_path(backup: BaseBackup, path: list[TimelineSwitch]) -> bool:
    """Taken on a timeline of the path, and ended before that timeline branched off."""
    return any(step.timeline == backup.timeline and backup.stop_lsn <= step.switch_lsn for step in path)


def newest_on(listing: ArchiveListing, timeline: int, size: int) -> Segment | None:
    ends = [Segment.from_name(name, size) for name in [*listing.segments, *listing.partials]]
    return max((segment for segment in ends if segment.timeline == timeline), default=None)


def first_gap(needed: list[Segment], listing: ArchiveListing) -> Segment | None:
    """The first segment of `needed` not stored: full for all but the last, which may be a partial."""
    for index, segment in enumerate(needed):
        last = index == len(needed) - 1
        if segment.name not in listing.segments and not (last and segment.name in listing.partials):
            return segment
    return None


def stored_at(listing: ArchiveListing, segment: Segment) -> datetime | None:
    stored = listing.segments.get(segment.name) or listing.partials.get(segment.name)
    return listing.modified.get(stored.key) if stored else None


def newest_stored(listing: ArchiveListing) -> datetime | None:
    return max(listing.modified.values(), default=None) if listing.modified else None


def window(backups: list[BaseBackup], listing: ArchiveListing, histories: dict[int, list[TimelineSwitch]],
           status: StreamStatus | None, now: datetime) -> Window:
    size = status.segment_size if status else Segment(1, 0).size
    timeline = target_timeline(listing, histories, status)
    path = timeline_path(timeline, histories)
    result = Window(timeline, newest_wal_at=newest_stored(listing))
    caught_up = status.caught_up_at if status else result.newest_wal_at
    result.rpo_seconds = (now - caught_up).total_seconds() if caught_up else None
    end = newest_on(listing, timeline, size)
    usable = sorted((backup for backup in backups if on_path(backup, path)), key=lambda backup: backup.stop_lsn)
    if end is None:
        result.problems.append(f"no WAL stored on timeline {timeline}")
        return result
    for backup in usable:
        needed = needed_segments(backup.start_lsn, backup.timeline, path, end, size)
        consistent = Segment.of_lsn(backup.stop_lsn, backup.timeline, size).number
        gap = first_gap(needed, listing)
        if not needed or needed[-1].number < consistent or (gap is not None and gap.number <= consistent):
            continue  # its own WAL is not all there (yet): not a starting point
        result.base_backup, result.start = backup.key, backup.stop_time
        if gap is None:
            result.end_segment, result.end = end.name, (status.stored_at if status else stored_at(listing, end))
        else:
            before = needed[needed.index(gap) - 1]
            result.end_segment, result.end, result.gap = before.name, stored_at(listing, before), gap.name
        return result
    result.problems.append("no base backup with its WAL stored" if usable else
                           f"no physical base backup on timeline {timeline}'s path")
    return result


def deletable_wal(kept: list[BaseBackup], listing: ArchiveListing, size: int = Segment(1, 0).size) -> list[str]:
    """Keys of the WAL objects no kept base backup reads, in name order (see the module docstring)."""
    if not kept:
        return []
    oldest = min(backup.start_lsn // size for backup in kept)
    keys = [stored.key for name, stored in listing.segments.items() if Segment.from_name(name, size).number < oldest]
    keys += [stored.key for name, stored in listing.partials.items()
             if Segment.from_name(name, size).number < oldest or name in listing.segments]
    return sorted(keys)


def without(listing: ArchiveListing, keys: list[str]) -> ArchiveListing:
    """The listing once `keys` are deleted."""
    gone = set(keys)

    def kept(bucket: dict[str, WalObject]) -> dict[str, WalObject]:
        return {name: stored for name, stored in bucket.items() if stored.key not in gone}

    return ArchiveListing(kept(listing.segments), kept(listing.partials), kept(listing.histories),
                          {key: moment for key, moment in listing.modified.items() if key not in gone})
