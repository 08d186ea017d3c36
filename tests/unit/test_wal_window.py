"""The recoverable window and the WAL retention deletes, pure: the window's ends, gaps, timelines and RPO, and the
property that deleting what retention selects never breaks recovery to any point of the window it reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.retention import Candidate, Policy, select
from pgdr.storage.base import StoredObject
from pgdr.streams import Codec
from pgdr.wal.archive import (
    ArchiveListing,
    Segment,
    StreamStatus,
    TimelineSwitch,
    history_name,
    needed_segments,
    timeline_path,
    wal_key,
)
from pgdr.wal.window import BaseBackup, deletable_wal, first_gap, window, without

SIZE = 16 * 1024 * 1024
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GZIP = Codec("gzip", False)


def listing_of(segments: list[Segment], partials: list[Segment] = (), histories: list[int] = ()) -> ArchiveListing:
    """Each object stored a minute after the previous one, in WAL order."""
    objects = []
    for index, segment in enumerate(sorted(segments, key=lambda segment: (segment.number, segment.timeline))):
        objects.append(StoredObject(wal_key(segment.name, GZIP), 1, NOON + timedelta(minutes=segment.number + index)))
    for segment in partials:
        objects.append(StoredObject(wal_key(segment.name, GZIP, partial=True), 1,
                                    NOON + timedelta(minutes=segment.number + 1000)))
    objects += [StoredObject(wal_key(history_name(timeline), GZIP), 1, NOON) for timeline in histories]
    return ArchiveListing.of(objects)


def backup(name: str, start_segment: int, stop_segment: int, timeline: int = 1) -> BaseBackup:
    return BaseBackup(name, timeline, start_segment * SIZE + 40, stop_segment * SIZE + 200,
                      NOON + timedelta(minutes=stop_segment, seconds=30))


def status(stored_at: datetime, caught_up: datetime, timeline: int = 1) -> StreamStatus:
    return StreamStatus("7", timeline, "0/0", stored_at, caught_up)


def test_the_window_runs_from_the_oldest_base_backup_to_the_newest_wal_with_the_rpo_now():
    listing = listing_of([Segment(1, n) for n in range(2, 10)], partials=[Segment(1, 10)])
    stream = status(NOON + timedelta(hours=1), NOON + timedelta(minutes=59))
    found = window([backup("b", 5, 6), backup("a", 2, 3)], listing, {}, stream, NOON + timedelta(minutes=61))
    assert (found.base_backup, found.start, found.end) == ("a", NOON + timedelta(minutes=3, seconds=30),
                                                            NOON + timedelta(hours=1))
    assert found.end_segment == Segment(1, 10).name and found.gap is None
    assert found.rpo_seconds == 120
    assert found.describe().startswith("recoverable from 2026-12-01 12:03:30+00:00 to 2026-12-01 13:00:00+00:00, "
                                       "RPO now 120 s")


def test_a_gap_ends_the_window_and_is_reported():
    listing = listing_of([Segment(1, n) for n in (2, 3, 4, 6, 7)])
    found = window([backup("a", 2, 3)], listing, {}, None, NOON + timedelta(hours=2))
    assert found.gap == Segment(1, 5).name and found.end_segment == Segment(1, 4).name
    assert found.end == listing.modified[wal_key(Segment(1, 4).name, GZIP)]
    assert "gap" in found.describe()


def test_a_base_backup_without_its_own_wal_is_no_starting_point():
    listing = listing_of([Segment(1, n) for n in (2, 4, 5, 6)])
    found = window([backup("a", 2, 3), backup("b", 4, 5)], listing, {}, None, NOON)
    assert found.base_backup == "b" and found.gap is None
    nothing = window([backup("a", 2, 3)], listing_of([Segment(1, 2)]), {}, None, NOON)
    assert not nothing.recoverable and "not recoverable" in nothing.describe()


def test_the_window_follows_the_timeline_path_and_ignores_a_branch_left_behind():
    histories = {2: [TimelineSwitch(1, 5 * SIZE + 100)]}
    segments = [Segment(1, n) for n in range(2, 8)] + [Segment(2, n) for n in range(5, 9)]
    found = window([backup("a", 2, 3)], listing_of(segments, histories=[2]), histories, None, NOON)
    assert found.timeline == 2 and found.end_segment == Segment(2, 8).name and found.gap is None
    after_switch = window([backup("c", 6, 7, timeline=1)], listing_of(segments, histories=[2]), histories, None, NOON)
    assert not after_switch.recoverable  # taken on timeline 1 after timeline 2 branched off


def test_retention_deletes_wal_before_the_oldest_kept_start_and_superseded_partials_never_history():
    listing = listing_of([Segment(1, n) for n in range(1, 9)], partials=[Segment(1, 4), Segment(1, 9)],
                         histories=[2])
    deleted = deletable_wal([backup("b", 6, 7), backup("a", 4, 5)], listing)
    assert deleted == sorted([wal_key(Segment(1, n).name, GZIP) for n in (1, 2, 3)]
                             + [wal_key(Segment(1, 4).name, GZIP, partial=True)])
    assert deletable_wal([], listing) == []


# The property: an archive along a random timeline path, with holes; base backups at increasing LSNs; the GFS rule
# keeps some; retention deletes WAL for them. The window reported after deleting is the window before, and every
# segment recovery to its end reads from its base backup is still stored.

@st.composite
def archives(draw: st.DrawFn) -> tuple[ArchiveListing, dict[int, list[TimelineSwitch]], list[BaseBackup], list[str]]:
    switches = sorted(draw(st.sets(st.integers(3, 28), max_size=2)))
    histories: dict[int, list[TimelineSwitch]] = {}
    path: list[TimelineSwitch] = []
    for timeline, switch in enumerate(switches, start=1):
        path.append(TimelineSwitch(timeline, switch * SIZE + draw(st.integers(1, SIZE - 1))))
        histories[timeline + 1] = list(path)
    newest = len(switches) + 1
    end = draw(st.integers(2, 30))
    full = needed_segments(0, 1, timeline_path(newest, histories), Segment(newest, end))
    holes = draw(st.sets(st.sampled_from(full), max_size=3))
    left_behind = [Segment(switch.timeline, switch.switch_lsn // SIZE + 1) for switch in path]  # old branches
    stored = [segment for segment in full if segment not in holes] + left_behind
    partials = draw(st.lists(st.sampled_from(full), max_size=3))
    listing = listing_of(stored, partials, histories=list(histories))
    starts = sorted(draw(st.sets(st.integers(0, end), min_size=1, max_size=6)))
    backups = []
    for index, start in enumerate(starts):
        stop = start + draw(st.integers(0, 2))
        timeline = next((step.timeline for step in [*path, TimelineSwitch(newest, 2**64 - 1)]
                         if stop * SIZE + 200 <= step.switch_lsn), newest)
        backups.append(BaseBackup(f"b{index}", timeline, start * SIZE + 40, stop * SIZE + 200,
                                  NOON + timedelta(days=index, minutes=stop)))
    policy = Policy(draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.integers(0, 1)), 0, 0)
    candidates = [Candidate(item.key, item.stop_time, True) for item in backups]
    kept = [decision.key for decision in select(candidates, policy).keep]
    return listing, histories, backups, kept


@settings(max_examples=200, deadline=None)
@given(archives())
def test_retention_never_breaks_recoverability_to_any_point_of_the_window_it_reports(archive):
    listing, histories, backups, kept_keys = archive
    kept = [item for item in backups if item.key in kept_keys]
    pruned = without(listing, deletable_wal(kept, listing))
    before = window(kept, listing, histories, None, NOON)
    after = window(kept, pruned, histories, None, NOON)
    assert (after.base_backup, after.start, after.end_segment, after.gap) == \
        (before.base_backup, before.start, before.end_segment, before.gap)
    for history in listing.histories:
        assert history in pruned.histories
    if after.recoverable:
        start = next(item for item in kept if item.key == after.base_backup)
        path = timeline_path(after.timeline, histories)
        reads = needed_segments(start.start_lsn, start.timeline, path, Segment.from_name(after.end_segment))
        assert first_gap(reads, pruned) is None
        for other in kept:  # recovery from any kept base backup reads what it read before
            if any(step.timeline == other.timeline for step in path):
                other_reads = needed_segments(other.start_lsn, other.timeline, path, Segment.from_name(
                    after.end_segment))
                assert first_gap(other_reads, pruned) == first_gap(other_reads, listing)
