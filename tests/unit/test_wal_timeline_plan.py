"""Which WAL `pgdr wal timeline` reads: from the first segment stored at or after --since to the archive's end
(the growing segment only as far as the status vouches for it), along the newest timeline's path, and a segment
missing in between is an error naming it before anything runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pgdr.errors import IntegrityError
from pgdr.wal.archive import Segment, TimelineSwitch
from pgdr.wal.timeline import plan_reading
from unit.test_wal_window import NOON, SIZE, listing_of


def test_it_starts_at_the_first_segment_stored_since_and_ends_where_the_status_vouches_in_the_partial():
    listing = listing_of([Segment(1, number) for number in range(2, 7)], partials=[Segment(1, 7)])
    # segments 2..6 are stored at NOON + 2, 4, 6, 8, 10 minutes (listing_of): since NOON + 7 min, from segment 5
    stretches = plan_reading(listing, {}, NOON + timedelta(minutes=7), 7 * SIZE + 500, SIZE)
    assert [(stretch.timeline, [segment.number for segment in stretch.segments], stretch.start, stretch.end)
            for stretch in stretches] == [(1, [5, 6, 7], 5 * SIZE, 7 * SIZE + 500)]


def test_a_partial_the_status_does_not_vouch_for_is_read_up_to_its_start_only():
    listing = listing_of([Segment(1, 2), Segment(1, 3)], partials=[Segment(1, 4)])
    assert plan_reading(listing, {}, None, None, SIZE)[0].end == 4 * SIZE


def test_a_missing_segment_is_named():
    listing = listing_of([Segment(1, 2), Segment(1, 4)])
    with pytest.raises(IntegrityError, match="000000010000000000000003 is missing"):
        plan_reading(listing, {}, None, None, SIZE)


def test_across_a_timeline_switch_each_timeline_is_read_apart():
    listing = listing_of([Segment(1, 2), Segment(1, 3), Segment(2, 3), Segment(2, 4)], histories=[2])
    switch = 3 * SIZE + 1000
    stretches = plan_reading(listing, {2: [TimelineSwitch(1, switch)]}, None, None, SIZE)
    assert [(stretch.timeline, [segment.number for segment in stretch.segments], stretch.start, stretch.end)
            for stretch in stretches] == [(1, [2], 2 * SIZE, switch), (2, [3, 4], 3 * SIZE, 5 * SIZE)]


def test_an_empty_archive_reads_nothing():
    assert plan_reading(listing_of([]), {}, None, None, SIZE) == []
