"""The WAL a recovering server asks for, served by pgdr.wal.fetch through the shell restore_command
(pgdr.wal.recovery.restore_command) exactly as PostgreSQL runs it: `sh -c` with %f and %p replaced. Objects are
stored through the real codec stack in a LocalStorage; no server is needed to see what the server would get.

What must hold: a stored segment arrives byte for byte; a name past the archive's end is "missing" at once (that
is how PostgreSQL finds the end); a gap or a corrupt segment is never answered "missing" (PostgreSQL would take it
for the end and open early) but fails the fetcher and calls on_failure, except a gap while PostgreSQL recovers to
a target (it stops there by itself, and ends in error short of it); the newest WAL is served from its
partial; segments are fetched ahead of the request; the shell gives up when pgdr's process is gone.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgdr.errors import IntegrityError, PgdrError
from pgdr.storage.local import LocalStorage
from pgdr.streams import Codec
from pgdr.wal.archive import WAL_PREFIX, ArchiveListing, Segment, wal_key
from pgdr.wal.fetch import WalFetcher
from pgdr.wal.recovery import restore_command
from sync_helpers import poll_until

GZIP = Codec("gzip")
PLAN = [Segment(1, number) for number in range(1, 7)]


def content(name: str) -> bytes:
    return (name.encode() * 4096)[:65536]


def store(storage: LocalStorage, name: str, partial: bool = False, data: bytes | None = None) -> None:
    storage.put_bytes(wal_key(name, GZIP, partial), gzip.compress(content(name) if data is None else data))


def run_restore_command(command: str, name: str, destination: Path) -> subprocess.CompletedProcess[bytes]:
    """As PostgreSQL does: %f is the file name, %p the path to copy it to; the shell's exit status is the answer."""
    shell = command.replace("%f", name).replace("%p", str(destination))
    return subprocess.run(["sh", "-c", shell], capture_output=True, timeout=60)


@pytest.fixture
def archive(tmp_path: Path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "backups")
    for segment in PLAN[:5]:
        store(storage, segment.name)
    store(storage, PLAN[5].name, partial=True)  # the newest, still growing when it was uploaded
    storage.put_bytes(WAL_PREFIX + "00000002.history.gz", gzip.compress(b"1\t0/7000000\tno recovery target\n"))
    return storage


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "fetch dir with 'quotes' and spaces"


def start(storage: LocalStorage, folder: Path, failures: list[PgdrError] | None = None,
          read_ahead: int = 2, stops_at_target: bool = False) -> WalFetcher:
    listing = ArchiveListing.of(storage.list(WAL_PREFIX))
    return WalFetcher(storage, listing, PLAN, folder, read_ahead=read_ahead, stops_at_target=stops_at_target,
                      on_failure=(failures if failures is not None else []).append).start()


@pytest.fixture
def fetcher(archive: LocalStorage, folder: Path) -> Iterator[WalFetcher]:
    running = start(archive, folder)
    yield running
    running.stop()


def test_a_stored_segment_arrives_byte_for_byte(fetcher, folder, tmp_path):
    destination = tmp_path / "RECOVERYXLOG"
    answer = run_restore_command(restore_command(folder, os.getpid()), PLAN[0].name, destination)
    assert answer.returncode == 0, answer.stderr
    assert destination.read_bytes() == content(PLAN[0].name)
    assert fetcher.served == [PLAN[0].name]
    assert oct(os.stat(folder).st_mode & 0o777) == "0o700"


def test_the_segment_after_the_archive_end_is_missing_and_the_newest_comes_from_its_partial(fetcher, folder,
                                                                                            tmp_path):
    command = restore_command(folder, os.getpid())
    newest = run_restore_command(command, PLAN[5].name, tmp_path / "newest")
    assert newest.returncode == 0 and (tmp_path / "newest").read_bytes() == content(PLAN[5].name)
    after = run_restore_command(command, PLAN[5].following().name, tmp_path / "after")
    assert after.returncode != 0 and not (tmp_path / "after").exists()
    other_timeline = run_restore_command(command, PLAN[2].on_timeline(2).name, tmp_path / "probe")
    assert other_timeline.returncode != 0
    assert fetcher.failure is None


def test_history_files_are_served_when_stored_and_missing_otherwise(fetcher, folder, tmp_path):
    command = restore_command(folder, os.getpid())
    assert run_restore_command(command, "00000002.history", tmp_path / "h2").returncode == 0
    assert (tmp_path / "h2").read_bytes().startswith(b"1\t0/7000000")
    assert run_restore_command(command, "00000003.history", tmp_path / "h3").returncode != 0


def test_segments_are_fetched_ahead_of_the_request(fetcher, folder, tmp_path):
    assert run_restore_command(restore_command(folder, os.getpid()), PLAN[0].name, tmp_path / "x").returncode == 0
    poll_until(lambda: all((folder / segment.name).exists() for segment in PLAN[1:3]))
    assert not (folder / PLAN[1].name).with_suffix(".want").exists()  # fetched before anyone asked


def test_a_gap_is_never_answered_missing_it_fails_the_recovery(archive, folder, tmp_path):
    archive.delete(wal_key(PLAN[2].name, GZIP))
    failures: list[PgdrError] = []
    fetcher = start(archive, folder, failures)
    command = restore_command(folder, os.getpid())
    try:
        assert run_restore_command(command, PLAN[1].name, tmp_path / "before").returncode == 0
        waiting = subprocess.Popen(["sh", "-c", command.replace("%f", PLAN[2].name).replace("%p", str(tmp_path / "g"))])
        poll_until(lambda: fetcher.failure is not None)
        assert waiting.poll() is None, "the gap was answered: PostgreSQL would have ended recovery there"
        assert failures == [fetcher.failure]
        assert isinstance(fetcher.failure, IntegrityError) and PLAN[2].name in fetcher.failure.message
    finally:
        fetcher.stop()  # what the runbook does after stopping the server: the waiting command ends, unanswered
    assert waiting.wait(timeout=30) != 0
    assert not (tmp_path / "g").exists()


def test_with_a_target_a_gap_is_answered_missing_and_recorded_for_the_report(archive, folder, tmp_path):
    """PostgreSQL stops at a recovery target by itself (and refuses to open short of it), and its read-ahead may
    ask for the segment after the target's: that request must not kill a recovery whose target comes before."""
    archive.delete(wal_key(PLAN[2].name, GZIP))
    failures: list[PgdrError] = []
    fetcher = start(archive, folder, failures, stops_at_target=True)
    command = restore_command(folder, os.getpid())
    try:
        assert run_restore_command(command, PLAN[1].name, tmp_path / "before").returncode == 0
        answer = run_restore_command(command, PLAN[2].name, tmp_path / "g")
        assert answer.returncode != 0 and not (tmp_path / "g").exists()
        assert failures == [] and fetcher.failure is None
        assert isinstance(fetcher.gap, IntegrityError) and PLAN[2].name in fetcher.gap.message
    finally:
        fetcher.stop()


def test_a_corrupt_segment_fails_the_recovery_instead_of_ending_it(archive, folder, tmp_path):
    stored = archive.path_of(wal_key(PLAN[1].name, GZIP))
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    failures: list[PgdrError] = []
    fetcher = start(archive, folder, failures, read_ahead=1)
    waiting = subprocess.Popen(["sh", "-c", restore_command(folder, os.getpid()).replace("%f", PLAN[1].name)
                                .replace("%p", str(tmp_path / "c"))])
    try:
        poll_until(lambda: fetcher.failure is not None)
        assert isinstance(fetcher.failure, IntegrityError) and failures
        assert waiting.poll() is None
    finally:
        fetcher.stop()
    assert waiting.wait(timeout=30) != 0


def test_the_command_gives_up_when_pgdr_is_gone(archive, folder, tmp_path):
    folder.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid names no process now: the fetcher that would answer is dead
    answer = run_restore_command(restore_command(folder, gone.pid), PLAN[0].name, tmp_path / "x")
    assert answer.returncode != 0 and not (tmp_path / "x").exists()
