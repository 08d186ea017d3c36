"""The pure parts of pgdr wal stream: pg_receivewal's argv, the spool's order, the RPO arithmetic, what a refusal
says to fix, and restore point names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgdr.config import WalSettings
from pgdr.errors import AuthenticationFailed, IntegrityError, Refused, StorageError
from pgdr.postgres.connect import Endpoint
from pgdr.storage.local import LocalStorage
from pgdr.streams import Codec
from pgdr.ui import Output
from pgdr.wal.archive import STATUS_KEY, Segment, StreamStatus, mark_key, wal_key
from pgdr.wal.replication import Sample, ServerFacts, hba_line, receiver_refusal, role_problem, setting_problem
from pgdr.wal.stream import (
    SpoolFile,
    Streamer,
    Target,
    caught_up_at,
    partial_end,
    receive_argv,
    received,
    status_interval,
    upload_order,
)

SERVER = Endpoint("db.example", 5432, "postgres")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_receive_argv_streams_from_the_slot_without_looping_or_a_password_prompt():
    argv = receive_argv("/usr/bin/pg_receivewal", Path("/spool"), "pgdr", True, 2)
    assert argv == ["/usr/bin/pg_receivewal", "--directory", "/spool", "--slot", "pgdr", "--no-loop", "--no-password",
                    "--status-interval", "2", "--synchronous"]
    assert "--synchronous" not in receive_argv("pg_receivewal", Path("/spool"), "pgdr", False, 2)


@pytest.mark.parametrize(("objective", "interval"), [(1, 1), (5, 1), (60, 10), (20, 5), (3600, 10)])
def test_the_receiver_reports_at_least_every_quarter_objective(objective: float, interval: int):
    assert status_interval(objective) == interval


def test_histories_are_stored_before_segments_and_segments_in_name_order():
    def file(name: str, kind: str) -> SpoolFile:
        return SpoolFile(name, kind, Path(name), 0, 0)

    files = [file("000000010000000000000003", "segment"), file("000000020000000000000004", "partial"),
             file("000000010000000000000004", "segment"), file("00000002.history", "history")]
    assert [item.name for item in upload_order(sorted(files, key=lambda item: item.name))] == [
        "00000002.history", "000000010000000000000003", "000000010000000000000004"]


def test_caught_up_is_the_newest_moment_whose_server_position_is_stored():
    samples = [Sample(T0, 100, 1, 90), Sample(T0 + timedelta(seconds=1), 200, 1, 150),
               Sample(T0 + timedelta(seconds=2), 300, 1, 290)]
    assert caught_up_at(samples, 99) is None
    assert caught_up_at(samples, 200) == T0 + timedelta(seconds=1)
    assert caught_up_at(samples, 10_000) == T0 + timedelta(seconds=2)


class ScriptedSampler:
    """The server and the receiver as a list of samples, one per call."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def sample(self) -> Sample | None:
        return self.samples.pop(0)

    def close(self) -> None:
        pass


def test_a_round_stores_the_partial_only_once_the_receiver_has_the_servers_position_of_its_sample(tmp_path):
    """Storing what the receiver had reported at the round's sample left storage one round behind that sample
    (caught up only by the next round): under load, between one and two objectives. The partial waits for the
    receiver instead, and the status then says storage had everything the server had written at the sample."""
    segment = Segment(1, 3)
    spool, backups = tmp_path / "spool", tmp_path / "backups"
    spool.mkdir()
    (spool / (segment.name + ".partial")).write_bytes(b"\1" * 4096)
    start = segment.start_lsn
    sampler = ScriptedSampler([Sample(T0, start + 3000, 1, start + 1000),  # the round: receiver behind
                               Sample(T0 + timedelta(seconds=0.2), start + 3500, 1, start + 2000),  # still behind
                               Sample(T0 + timedelta(seconds=0.4), start + 3900, 1, start + 3100)])  # has it
    target = Target("local", LocalStorage(backups))
    settings = WalSettings(rpo_objective=60)  # the receiver is waited for up to 11 s: never reached here
    streamer = Streamer(spool, settings, [target], Codec(), None, None, [], {}, sampler,  # type: ignore[arg-type]
                        lambda: True, ServerFacts("7", segment.size, ""), Output(quiet=True))
    partial_key = wal_key(segment.name, Codec(), partial=True)

    streamer._round(final=False)
    streamer._round(final=False)
    assert not target.storage.exists(partial_key) and not target.storage.exists(STATUS_KEY)
    streamer._round(final=False)
    assert target.storage.exists(partial_key)
    status = StreamStatus.from_json(target.storage.get_bytes(STATUS_KEY))
    assert status.stored_lsn == "0/3000C1C" and status.caught_up_at == T0


def test_a_receiver_that_reported_the_samples_position_or_none_at_all_is_not_waited_for():
    assert received(Sample(T0, 300, 1, 300)) and received(Sample(T0, 300, 1, None))
    assert not received(Sample(T0, 300, 1, 299))
    assert received(Sample(T0, 400, 1, 310), position=300)


def test_a_partial_counts_up_to_what_the_receiver_had_written_within_its_segment():
    segment = Segment(1, 5)
    assert partial_end(segment, None) == 0
    assert partial_end(segment, segment.start_lsn + 42) == segment.start_lsn + 42
    assert partial_end(segment, segment.start_lsn + 10 * segment.size) == segment.start_lsn + segment.size


def test_settings_that_forbid_streaming_name_the_fix_for_the_docker_image_too():
    minimal = setting_problem(SERVER, "minimal", 0, 10)
    assert isinstance(minimal, Refused) and "wal_level = minimal" in minimal.message
    assert "wal_level = replica" in minimal.hint and "command: postgres -c wal_level=replica" in minimal.hint
    senders = setting_problem(SERVER, "replica", 0, 10)
    assert senders is not None and "max_wal_senders = 0" in senders.message and "max_wal_senders = 10" in senders.hint
    slots = setting_problem(SERVER, "replica", 10, 0)
    assert slots is not None and "max_replication_slots = 10" in slots.hint
    assert setting_problem(SERVER, "logical", 10, 10) is None


def test_a_role_without_replication_is_told_the_alter_role():
    assert role_problem("app", True, False) is None and role_problem("app", False, True) is None
    refused = role_problem('we"ird', False, False)
    assert refused is not None and refused.hint.endswith('ALTER ROLE "we""ird" REPLICATION;')


def test_receiver_errors_are_refusals_with_their_fix_or_hiccups_to_retry():
    hba = receiver_refusal('pg_receivewal: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
                           'no pg_hba.conf entry for replication connection from host "10.0.0.7", user "backup", '
                           "no encryption", "/etc/postgresql/pg_hba.conf", "/spool")
    assert isinstance(hba, Refused)
    assert "host replication backup 10.0.0.7/32 scram-sha-256" in hba.hint and "/etc/postgresql/pg_hba.conf" in hba.hint
    assert "$PGDATA/pg_hba.conf" in hba.hint
    assert hba_line("::1", "u") == "host replication u ::1/128 scram-sha-256"
    assert isinstance(receiver_refusal("FATAL:  password authentication failed for user \"x\"", "", "/s"),
                      AuthenticationFailed)
    assert isinstance(receiver_refusal("could not write 8192 bytes to WAL file: No space left on device", "", "/s"),
                      StorageError)
    assert isinstance(receiver_refusal("requested WAL segment 000000010000000000000003 has already been removed",
                                       "", "/s"), IntegrityError)
    for hiccup in ("replication slot \"pgdr\" is active for PID 42", "Connection refused",
                   "unexpected termination of replication stream: FATAL:  terminating connection due to "
                   "administrator command"):
        assert receiver_refusal(hiccup, "", "/s") is None


@pytest.mark.parametrize("name", ["before-migration", "v1.2_release", "A" * 63])
def test_mark_names_become_keys_under_wal_marks(name: str):
    assert mark_key(name) == f"wal/marks/{name}.json"


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-dash-first", "A" * 64, "new\nline", "space d"])
def test_mark_names_that_could_leave_the_folder_are_refused(name: str):
    with pytest.raises(ValueError, match="not a restore point name"):
        mark_key(name)
