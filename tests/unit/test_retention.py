"""Retention selection (GFS) as a pure function: properties with hypothesis, and worked examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.artifact import make_key
from pgdr.drill_lock import marker_key, read_by_drills
from pgdr.ops_config import RetentionSettings
from pgdr.retention import Candidate, Policy, day_of, month_of, newest_first, select, week_of
from pgdr.storage import StoredObject

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def candidate(created: datetime, verified: bool = True, safety: bool = False) -> Candidate:
    return Candidate(make_key(created, "gzip", safety).key, created, verified, safety)


# up to ~2 years of backups, several a day at times, some unverified, some safety backups
backups = st.lists(
    st.tuples(st.integers(0, 730 * 86400), st.booleans(), st.booleans() | st.just(False)),
    max_size=60, unique_by=lambda item: (item[0], item[2]),
).map(lambda items: [candidate(EPOCH + timedelta(seconds=offset), verified, safety)
                     for offset, verified, safety in items])
policies = st.builds(Policy, keep_last=st.integers(1, 10), keep_daily=st.integers(0, 10),
                     keep_weekly=st.integers(0, 6), keep_monthly=st.integers(0, 14), keep_safety=st.integers(0, 4))


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Candidate], Policy, set[str]]:
    candidates = draw(backups)
    protected = draw(st.sets(st.sampled_from([c.key for c in candidates]))) if candidates else set()
    return candidates, draw(policies), protected


def regular(candidates: list[Candidate]) -> list[Candidate]:
    return newest_first(c for c in candidates if not c.safety)


@settings(max_examples=300)
@given(cases())
def test_every_backup_is_decided_once(case):
    candidates, policy, protected = case
    selection = select(candidates, policy, protected)
    decided = [d.key for d in selection.keep] + [d.key for d in selection.delete]
    assert sorted(decided) == sorted(c.key for c in candidates)
    assert all(d.reasons for d in selection.keep + selection.delete)


@settings(max_examples=300)
@given(cases())
def test_newest_verified_and_newest_are_never_deleted(case):
    candidates, policy, protected = case
    deleted = {d.key for d in select(candidates, policy, protected).delete}
    ordered = regular(candidates)
    verified = [c for c in ordered if c.verified]
    if verified:
        assert verified[0].key not in deleted
    if ordered:
        assert ordered[0].key not in deleted


@settings(max_examples=300)
@given(cases())
def test_backups_a_drill_reads_are_never_deleted(case):
    candidates, policy, protected = case
    kept = {d.key: d.reasons for d in select(candidates, policy, protected).keep}
    for key in protected:
        assert "a drill is reading it" in kept[key]


@settings(max_examples=300)
@given(cases())
def test_counts_are_respected(case):
    candidates, policy, protected = case
    selection = select(candidates, policy, protected)
    kept = {d.key for d in selection.keep}
    ordered = regular(candidates)
    # the newest keep_last are kept
    assert {c.key for c in ordered[: policy.keep_last]} <= kept
    # each of the newest N periods with backups keeps one backup, preferring a verified one
    for period_of, count in ((day_of, policy.keep_daily), (week_of, policy.keep_weekly),
                             (month_of, policy.keep_monthly)):
        periods = list(dict.fromkeys(period_of(c.created) for c in ordered))[:count]
        for period in periods:
            members = [c for c in ordered if period_of(c.created) == period]
            representative = ([c for c in members if c.verified] or members)[0]
            assert representative.key in kept
    # nothing more than the rules allow
    unprotected_regular = [d for d in selection.keep if not d.candidate.safety and d.key not in protected]
    limit = policy.keep_last + policy.keep_daily + policy.keep_weekly + policy.keep_monthly + 2
    assert len(unprotected_regular) <= limit
    # safety backups: exactly the newest keep_safety (plus protected ones)
    safety = newest_first(c for c in candidates if c.safety)
    kept_safety = {d.key for d in selection.keep if d.candidate.safety} - protected
    assert kept_safety == {c.key for c in safety[: policy.keep_safety]} - protected


@settings(max_examples=300)
@given(cases())
def test_pruning_the_kept_set_again_deletes_nothing(case):
    candidates, policy, protected = case
    kept = [d.candidate for d in select(candidates, policy, protected).keep]
    again = select(kept, policy, protected)
    assert again.delete == []
    assert [d.key for d in again.keep] == [c.key for c in newest_first(kept)]


def test_a_year_of_daily_backups_keeps_the_gfs_set():
    days = [candidate(datetime(2025, 1, 1, 2, 0, tzinfo=UTC) + timedelta(days=n)) for n in range(365)]
    selection = select(days, Policy(keep_last=7, keep_daily=7, keep_weekly=4, keep_monthly=12))
    kept = {d.candidate.created.date().isoformat(): d.reasons for d in selection.keep}
    # 2025-12-31 is a Wednesday: the newest 7 days cover ISO weeks 2026-W01 and 2025-W52, so the weekly rule
    # adds the Sundays of W51 and W50; the monthly rule adds the last day of each month before December
    assert len(kept) == 7 + 2 + 11
    assert "weekly 2026-W01" in kept["2025-12-31"]
    assert "weekly 2025-W50" in kept["2025-12-14"]
    assert kept["2025-12-31"][:3] == ["newest backup", "newest verified backup", "last 7 (#1)"]
    assert "weekly 2025-W51" in kept["2025-12-21"]
    assert "monthly 2025-01" in kept["2025-01-31"]
    assert "2025-12-24" not in kept
    deleted = next(d for d in selection.delete if d.candidate.created.date().isoformat() == "2025-12-24")
    assert deleted.reasons == ["not among the last 7, nor the newest of the last 7 days, 4 weeks or 12 months "
                               "with backups"]


def test_days_without_backups_do_not_use_up_slots():
    old = [candidate(datetime(2025, 3, day, tzinfo=UTC)) for day in (1, 2, 3)]
    recent = candidate(datetime(2025, 9, 1, tzinfo=UTC))
    selection = select([*old, recent], Policy(keep_last=1, keep_daily=3, keep_weekly=0, keep_monthly=0))
    assert [d.key for d in selection.delete] == [old[0].key]


def test_a_period_is_represented_by_its_newest_verified_backup():
    verified = candidate(datetime(2025, 5, 1, 1, tzinfo=UTC))
    unverified = candidate(datetime(2025, 5, 1, 3, tzinfo=UTC), verified=False)
    newer = candidate(datetime(2025, 5, 2, tzinfo=UTC))
    selection = select([verified, unverified, newer], Policy(keep_last=1, keep_daily=2, keep_weekly=0,
                                                             keep_monthly=0))
    assert {d.key for d in selection.keep} == {newer.key, verified.key}
    assert "daily 2025-05-01" in next(d for d in selection.keep if d.key == verified.key).reasons


def test_newest_verified_survives_a_run_of_unverified_backups():
    good = candidate(datetime(2025, 5, 1, tzinfo=UTC))
    bad = [candidate(datetime(2025, 5, 2 + n, tzinfo=UTC), verified=False) for n in range(5)]
    selection = select([good, *bad], Policy(keep_last=1, keep_daily=1, keep_weekly=0, keep_monthly=0))
    reasons = {d.key: d.reasons for d in selection.keep}
    assert reasons[good.key] == ["newest verified backup"]


def test_safety_backups_keep_the_newest_few():
    safety = [candidate(datetime(2025, 5, day, tzinfo=UTC), safety=True) for day in range(1, 6)]
    selection = select(safety, Policy(keep_safety=3))
    assert [d.key for d in selection.keep] == [c.key for c in reversed(safety[2:])]
    assert selection.delete[0].reasons == ["safety backup older than the newest 3"]


def test_drill_markers_protect_until_they_are_stale():
    now = datetime(2025, 5, 2, tzinfo=UTC)
    key = make_key(datetime(2025, 5, 1, tzinfo=UTC), "gzip").key
    other = make_key(datetime(2025, 4, 1, tzinfo=UTC), "gzip").key
    objects = [StoredObject(key, 10, now), StoredObject(marker_key(key), 10, now - timedelta(hours=1)),
               StoredObject(marker_key(other), 10, now - timedelta(days=2))]
    assert read_by_drills(objects, now, 86400) == {key}


def test_policy_defaults_are_the_config_defaults():
    """A Policy built without counts keeps what an empty [retention] section keeps."""
    assert Policy() == Policy(**RetentionSettings().rules_for("local"))


def test_a_candidate_is_a_regular_backup_unless_said_otherwise():
    created = datetime(2025, 5, 1, tzinfo=UTC)
    plain = Candidate(make_key(created, "gzip").key, created, True)
    assert plain.safety is False
    assert select([plain], Policy(keep_safety=0)).keep[0].reasons[:1] == ["newest backup"]


def test_each_decision_says_keep_or_delete_numbers_its_safety_slot_and_shows_as_json():
    safety = [candidate(datetime(2025, 5, day, tzinfo=UTC), safety=True) for day in (1, 2, 3)]
    unverified = candidate(datetime(2025, 5, 4, tzinfo=UTC), verified=False)
    selection = select([*safety, unverified], Policy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0,
                                                     keep_safety=2))
    assert [(d.key, d.keep) for d in selection.keep] == [(unverified.key, True), (safety[2].key, True),
                                                         (safety[1].key, True)]
    assert [(d.key, d.keep) for d in selection.delete] == [(safety[0].key, False)]
    assert selection.keep[1].reasons == ["last 2 safety backups (#1)"]
    assert selection.keep[2].reasons == ["last 2 safety backups (#2)"]
    assert selection.keep[0].as_json() == {
        "key": unverified.key, "keep": True, "reasons": ["newest backup", "last 1 (#1)"], "verified": False,
        "safety": False, "created": "2025-05-04T00:00:00+00:00"}
    assert selection.delete[0].as_json() == {
        "key": safety[0].key, "keep": False, "reasons": ["safety backup older than the newest 2"], "verified": True,
        "safety": True, "created": "2025-05-01T00:00:00+00:00"}


def test_a_pinned_safety_backup_is_kept_beyond_keep_safety_with_its_reason():
    safety = [candidate(EPOCH + timedelta(hours=hour), safety=True) for hour in range(5)]
    oldest = safety[0].key
    policy = Policy(keep_safety=1)
    assert oldest in {d.key for d in select(safety, policy).delete}
    selection = select(safety, policy, pinned={oldest: "the state from before the incomplete restore"})
    [kept] = [d for d in selection.keep if d.key == oldest]
    assert kept.reasons == ["the state from before the incomplete restore"]
    assert len(selection.delete) == 3


def test_a_kept_incremental_keeps_its_whole_chain_and_says_why() -> None:
    full, first, second, other = (candidate(EPOCH + timedelta(days=day)) for day in (0, 1, 2, 3))
    first = Candidate(first.key, first.created, True, based_on=full.key)
    second = Candidate(second.key, second.created, True, based_on=first.key)
    newest = Candidate(other.key, other.created, True, based_on=second.key)
    selection = select([full, first, second, newest], Policy(keep_last=1, keep_daily=0, keep_weekly=0,
                                                             keep_monthly=0))
    reasons = {decision.key: decision.reasons for decision in selection.keep}
    assert set(reasons) == {full.key, first.key, second.key, newest.key}
    assert reasons[full.key] == [f"incremental {first.key} is based on it"]
    assert selection.delete == []


def test_a_chain_no_kept_backup_needs_is_deleted_whole() -> None:
    full, first, newest_full = (candidate(EPOCH + timedelta(days=day)) for day in (0, 1, 2))
    first = Candidate(first.key, first.created, True, based_on=full.key)
    selection = select([full, first, newest_full], Policy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0))
    assert [decision.key for decision in selection.keep] == [newest_full.key]
    assert {decision.key for decision in selection.delete} == {full.key, first.key}
