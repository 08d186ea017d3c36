"""Helpers for the `pgdr wal stream` tests (end_to_end/test_wal_stream.py, faults/test_wal_stream_faults.py): the
streamer as a background process with its output in a file, WAL made on purpose, and the archive read back and
judged by pg_waldump, PostgreSQL's own reader (it fails on a missing segment or a record that does not follow)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import Project, server_bin_dir
from pgdr.storage.local import LocalStorage
from pgdr.wal.archive import (
    STATUS_KEY,
    WAL_PREFIX,
    ArchiveListing,
    Segment,
    StreamStatus,
    WalObject,
    first_missing,
    format_lsn,
    needed_segments,
    parse_lsn,
    timeline_path,
)

RPO = {"PGDR_WAL__RPO_OBJECTIVE": "1s"}


@dataclass
class Streamer:
    """`pgdr wal stream` running in a session of its own, stdout and stderr in `log`."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition: Callable[[], object], what: str) -> None:
        """Poll until condition holds; fail at once if the streamer ended first. No deadline of its own: the
        test's timeout catches a hang, and a slow machine must not fail."""
        while not condition():
            if self.process.poll() is not None and not condition():
                raise AssertionError(f"pgdr wal stream ended (exit {self.process.returncode}) before {what}:\n"
                                     f"{self.output()}")
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """Leave nothing running: the streamer and whatever it started."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)


def start_streamer(project: Project, log: Path, env: dict[str, str] | None = None) -> Streamer:
    handle = open(log, "ab")  # noqa: SIM115 - the child holds it; closed below once handed over
    try:
        process = subprocess.Popen([sys.executable, "-m", "pgdr", "wal", "stream"], cwd=project.root,
                                   env={**project.environment, **RPO, **(env or {})}, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        handle.close()
    return Streamer(process, log)


def switch_segments(project: Project, count: int, rows: int = 2000) -> list[str]:
    """`count` times: some rows, then pg_switch_wal(); the names of the segments switched away from."""
    names = []
    with project.connect() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS wal_filler (id bigserial PRIMARY KEY, payload text)")
        for _ in range(count):
            connection.execute("INSERT INTO wal_filler (payload) SELECT md5(g::text) FROM generate_series(1, %s) g",
                               (rows,))
            # the insert position: with synchronous_commit off pg_current_wal_lsn may still be in the segment before,
            # one an earlier test already archived, and a wait for "the segment switched away from" would end at once
            row = connection.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn()), pg_switch_wal()")\
                .fetchone()
            names.append(str(row[0]))
    return names


def current_lsn(project: Project) -> int:
    """The end of the WAL inserted so far: what the last statement wrote (with synchronous_commit off, as in the
    test clusters, pg_current_wal_lsn may not have reached it yet; the WAL writer gets there within 200 ms)."""
    with project.connect() as connection:
        return parse_lsn(str(connection.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]))


def local_archive(project: Project) -> ArchiveListing:
    storage = LocalStorage(project.backups)
    return ArchiveListing.of(storage.list(WAL_PREFIX)) if (project.backups / "wal").exists() else \
        ArchiveListing({}, {}, {}, {})


def local_status(project: Project) -> StreamStatus | None:
    path = project.backups / STATUS_KEY
    return StreamStatus.from_json(path.read_bytes()) if path.exists() else None


def has_segments(listing: ArchiveListing, names: list[str]) -> bool:
    return all(name in listing.segments for name in names)


def assert_no_gap(listing: ArchiveListing) -> list[Segment]:
    """Every segment from the oldest stored to the newest is there (timeline 1)."""
    numbers = sorted(Segment.from_name(name).number for name in listing.segments)
    assert numbers, "no segment stored"
    first, newest = Segment(1, numbers[0]), Segment(1, numbers[-1])
    needed = needed_segments(first.start_lsn, 1, timeline_path(1, {}), newest)
    missing = first_missing(needed, listing)
    assert missing is None, f"gap at {missing}: {sorted(listing.segments)}"
    return needed


def decode_to(read: Callable[[str], bytes], listing: ArchiveListing, folder: Path) -> None:
    """Every stored segment, decompressed (gzip, the test projects' codec), into folder under its own name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, stored in listing.segments.items():
        assert stored.key.endswith(".gz"), stored.key
        (folder / name).write_bytes(gzip.decompress(read(stored.key)))


def assert_waldump_reads(folder: Path, first: Segment, last: Segment, bin_dir: Path | None = None) -> str:
    """pg_waldump (of the server's major: `bin_dir`) reads every record from the first segment to the end of the
    last, in one pass."""
    dump = subprocess.run([str((bin_dir or server_bin_dir()) / "pg_waldump"), "--path", str(folder), "--quiet",
                           first.name, last.name], capture_output=True, text=True)
    assert dump.returncode == 0, f"pg_waldump {first.name} {last.name}: {dump.stdout}{dump.stderr}"
    return dump.stdout


def decode_partial_to(read: Callable[[str], bytes], stored: WalObject, folder: Path) -> None:
    """A stored partial segment, decompressed into folder under its segment's name (as recovery serves it)."""
    (folder / stored.name).write_bytes(gzip.decompress(read(stored.key)))


def assert_waldump_reads_range(folder: Path, start: int, end: int) -> None:
    """pg_waldump finds a record at or after `start` and reads every record up to `end`."""
    dump = subprocess.run([str(server_bin_dir() / "pg_waldump"), "--path", str(folder), "--quiet", "--start",
                           format_lsn(start), "--end", format_lsn(end)], capture_output=True, text=True)
    assert dump.returncode == 0, f"pg_waldump {format_lsn(start)}..{format_lsn(end)}: {dump.stdout}{dump.stderr}"


def receivers_of(spool: Path) -> list[int]:
    """pids of the pg_receivewal processes writing into spool."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if words and words[0].endswith(b"pg_receivewal") and str(spool).encode() in words:
            found.append(int(entry.name))
    return found


def mark_record(project: Project, name: str) -> dict[str, object]:
    return dict(json.loads((project.backups / WAL_PREFIX / "marks" / f"{name}.json").read_text()))
