"""Point-in-time recovery's pure parts: targets as the user types them, the base backup chosen for a target, the
server settings written, the WAL names and the segments a recovery reads across timeline switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.artifact import Manifest, PhysicalFacts, make_physical_key
from pgdr.errors import UsageError
from pgdr.streams import Codec
from pgdr.wal.archive import (
    Segment,
    TimelineSwitch,
    format_lsn,
    needed_segments,
    parse_history,
    parse_lsn,
    parse_wal_key,
    timeline_path,
    wal_key,
)
from pgdr.wal.recovery import (
    RecoveryTarget,
    choose_base_backup,
    last_transaction_time,
    parse_target,
    recovery_settings,
    target_not_reached,
)

MIB16 = 16 * 1024 * 1024
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def base_backup(stop: datetime, start_lsn: int, stop_lsn: int) -> Manifest:
    key = make_physical_key(stop - timedelta(minutes=1), "gzip")
    return Manifest(key=key.key, compression="gzip", server_version="15", pg_dumpall_version="", pgdr_version="",
                    started_at=stop - timedelta(minutes=1), format="physical", size=1, sha256="0" * 64,
                    uncompressed_size=1, finished_at=stop,
                    physical=PhysicalFacts(timeline=1, start_lsn=format_lsn(start_lsn), stop_lsn=format_lsn(stop_lsn),
                                           start_time=stop - timedelta(minutes=1), stop_time=stop))


def test_a_time_without_utc_offset_is_refused_rather_than_guessed():
    with pytest.raises(UsageError) as refused:
        parse_target(to="2026-12-01 10:42:00")
    assert "UTC offset" in refused.value.message
    assert parse_target(to="2026-12-01 10:42:00+01").time == datetime(2026, 12, 1, 9, 42, tzinfo=UTC)


@pytest.mark.parametrize("arguments", [{"to": "yesterday"}, {"to_lsn": "0/xyz"}, {"to_xid": "-4"},
                                       {"to_xid": "12; DROP"}, {"to_name": "a'b"}, {"to_name": "x" * 64},
                                       {"to": "2026-12-01 10:00+00", "to_lsn": "0/1"}])
def test_malformed_or_several_targets_are_usage_errors(arguments):
    with pytest.raises(UsageError):
        parse_target(**arguments)


def test_no_target_means_all_the_wal_there_is():
    assert parse_target().kind == "end"
    assert "recovery_target_action" not in recovery_settings(parse_target(), "true")


def test_an_xid_target_stops_before_the_transaction_named():
    settings_written = recovery_settings(parse_target(to_xid="1234"), "cmd")
    assert settings_written["recovery_target_xid"] == "1234"
    assert settings_written["recovery_target_inclusive"] == "off"
    assert settings_written["recovery_target_action"] == "promote"


def test_time_and_name_targets_become_the_servers_settings():
    by_time = recovery_settings(parse_target(to="2026-12-01T10:42:00Z"), "cmd")
    assert by_time["recovery_target_time"] == "2026-12-01 10:42:00+00:00"
    assert by_time["restore_command"] == "cmd"
    assert recovery_settings(parse_target(to_name="before-migration"), "cmd")["recovery_target_name"] == \
        "before-migration"


def test_the_newest_base_backup_consistent_before_the_target_is_chosen():
    early, late = base_backup(NOON, 0x1000028, 0x1000100), base_backup(NOON + timedelta(hours=2), 0x5000028, 0x5000100)
    target = parse_target(to=(NOON + timedelta(hours=1)).isoformat())
    assert choose_base_backup([late, early], target) is early
    assert choose_base_backup([late, early], parse_target(to=(NOON + timedelta(hours=3)).isoformat())) is late
    assert choose_base_backup([late, early], parse_target(to=(NOON - timedelta(hours=1)).isoformat())) is None
    assert choose_base_backup([early, late], RecoveryTarget()) is late
    assert choose_base_backup([early, late], parse_target(to_lsn="0/5000000")) is early


def test_segment_names_follow_postgresql():
    segment = Segment.from_name("000000020000000100000003")
    assert (segment.timeline, segment.start_lsn) == (2, parse_lsn("1/3000000"))
    assert Segment.of_lsn(parse_lsn("0/FFFFFFF"), 1).following().name == "000000010000000000000010"
    assert Segment.from_name("0000000100000000000000FF").following().name == "000000010000000100000000"


@given(st.integers(0, 2**40 - 1), st.integers(1, 255))
@settings(max_examples=200)
def test_a_segment_name_round_trips(number, timeline):
    segment = Segment(timeline, number)
    assert Segment.from_name(segment.name) == segment


def test_archive_keys_name_their_codec_and_nothing_else_parses():
    codec = Codec("zstd", True)
    parsed = parse_wal_key(wal_key("000000010000000000000003", codec, partial=True))
    assert parsed is not None and (parsed.kind, parsed.codec) == ("partial", codec)
    for foreign in ("wal/status.json", "wal/../etc/passwd", "wal/00000001.history.partial", "wal/0000000100.gz",
                    "20261201/postgres-all-20261201-120000.sql.gz"):
        assert parse_wal_key(foreign) is None, foreign


def test_a_recovery_reads_the_switch_segment_from_the_new_timeline():
    history = parse_history("1\t0/3000060\tbefore transaction 800\n# comment\n\n2\t0/5800000\tno target\n")
    assert history == [TimelineSwitch(1, 0x3000060), TimelineSwitch(2, 0x5800000)]
    path = timeline_path(3, {3: history})
    names = [segment.name for segment in needed_segments(0x1000028, 1, path, Segment(3, 7))]
    assert names == ["000000010000000000000001", "000000010000000000000002", "000000020000000000000003",
                     "000000020000000000000004", "000000030000000000000005", "000000030000000000000006",
                     "000000030000000000000007"]


def test_a_history_line_that_does_not_parse_is_refused():
    with pytest.raises(ValueError):
        parse_history("1\tnot-an-lsn\treason\n")


def test_the_servers_log_says_whether_the_target_was_reached_and_the_last_transaction():
    log = ("LOG:  last completed transaction was at log time 2026-12-01 10:41:59.123+00\n"
           "FATAL:  recovery ended before configured recovery target was reached\n")
    assert target_not_reached(log)
    assert last_transaction_time(log) == "2026-12-01 10:41:59.123+00"
    assert not target_not_reached("LOG:  database system is ready to accept connections\n")


def test_a_timeline_is_followed_when_named_and_latest_otherwise():
    assert recovery_settings(parse_target(to_lsn="0/1", timeline="1"), "cmd")["recovery_target_timeline"] == "1"
    assert recovery_settings(parse_target(to_lsn="0/1", timeline="latest"), "cmd")["recovery_target_timeline"] == \
        "latest"
    for wrong in ("0", "two", "-1"):
        with pytest.raises(UsageError):
            parse_target(to_lsn="0/1", timeline=wrong)
