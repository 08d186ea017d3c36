"""The archived WAL read through pg_waldump, committed transaction by committed transaction (`pgdr wal timeline`).

Which WAL: along the newest timeline's path (its .history files), from the first segment stored at or after
--since (WAL written before it was stored earlier) to the end of the archive: the newest segment, or the
growing one's upload up to the stored position wal/status.json records. A segment missing in between is an
error naming it, before pg_waldump starts.

How: one pg_waldump per timeline (`--follow --timeline T --start S --end E`) reads a private folder (0700) that
a thread fills ahead of it, segment by segment, decoded from storage (read-ahead of wal.read_ahead segments; a
file appears whole, by rename). As pg_waldump's lines pass its position, the segments behind it are deleted:
the folder holds about read_ahead segments whatever the range, and memory holds only the transactions still
open (pgdr.wal.waldump).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgdr.errors import ExitCode, IntegrityError, PgdrError, StageFailed
from pgdr.run import child_environment, run, stream
from pgdr.storage import Storage
from pgdr.wal.archive import (
    ArchiveListing,
    Segment,
    TimelineSwitch,
    format_lsn,
    needed_segments,
    parse_lsn,
    timeline_path,
)
from pgdr.wal.fetch import write_decoded
from pgdr.wal.waldump import Committed, TransactionReader, carries_text, parse_record

HINT_GAP = ("the archive has a gap there: read a later window (--since), or restore the segment from another "
            "target's wal/")


@dataclass(frozen=True)
class Stretch:
    """Segments of one timeline pg_waldump reads in one run, from `start` to `end` (LSNs)."""

    timeline: int
    segments: list[Segment]
    start: int
    end: int


def plan_reading(listing: ArchiveListing, histories: dict[int, list[TimelineSwitch]], since: datetime | None,
                 stored_end: int | None, size: int) -> list[Stretch]:
    """The stretches to read, oldest first; IntegrityError at the first segment missing between them."""
    names = [*listing.segments, *listing.partials]
    if not names:
        return []
    timeline = max(Segment.from_name(name, size).timeline for name in names)
    path = timeline_path(timeline, histories)
    on_path = sorted((Segment.from_name(name, size) for name in names
                      if any(step.timeline == Segment.from_name(name, size).timeline for step in path)),
                     key=lambda segment: (segment.number, segment.timeline))
    first = next((segment for segment in on_path if since is None or _stored_at(listing, segment) >= since),
                 on_path[-1] if on_path else None)
    if first is None:
        return []
    newest = max(on_path, key=lambda segment: (segment.number, segment.timeline))
    segments = needed_segments(first.start_lsn, first.timeline, path, newest, size)
    missing = next((segment for segment in segments
                    if segment.name not in listing.segments and segment.name not in listing.partials), None)
    if missing is not None:
        raise IntegrityError(f"WAL segment {missing.name} is missing from the archive", HINT_GAP)
    end = _end_of(listing, newest, stored_end)
    stretches: list[Stretch] = []
    for step in path:
        part = [segment for segment in segments if segment.timeline == step.timeline]
        if part:
            stop = min(end, step.switch_lsn)
            stretches.append(Stretch(step.timeline, part, max(first.start_lsn, part[0].start_lsn), stop))
    return stretches


def _stored_at(listing: ArchiveListing, segment: Segment) -> datetime:
    stored = listing.segments.get(segment.name) or listing.partials[segment.name]
    return listing.modified[stored.key]


def _end_of(listing: ArchiveListing, newest: Segment, stored_end: int | None) -> int:
    """Where the archive ends: the newest full segment's end, or within the growing one as the status says."""
    if newest.name in listing.segments:
        return newest.start_lsn + newest.size
    if stored_end is not None and newest.start_lsn < stored_end <= newest.start_lsn + newest.size:
        return stored_end
    return newest.start_lsn  # a partial the status does not vouch for: read up to its start only


class Feeder(threading.Thread):
    """Writes the stretch's segments into `folder` ahead of pg_waldump; deletes those it has passed."""

    def __init__(self, storage: Storage, listing: ArchiveListing, segments: list[Segment], folder: Path,
                 identity: object | None, read_ahead: int) -> None:
        super().__init__(name="pgdr-wal-timeline-feed", daemon=True)
        self.storage, self.listing, self.segments, self.folder = storage, listing, segments, folder
        self.identity, self.read_ahead = identity, max(1, read_ahead)
        self.position = 0  # index of the segment pg_waldump reads now
        self.failure: PgdrError | None = None
        self.written = 0
        self._changed = threading.Condition()
        self._stopped = False

    def wait_for_first(self) -> None:
        """Until the first segments are there (pg_waldump waits 5 s for a file, then gives up) or the feed ended."""
        with self._changed:
            self._changed.wait_for(lambda: self.written >= min(self.read_ahead, len(self.segments))
                                   or self.failure is not None or not self.is_alive(), timeout=600)

    def passed(self, number: int) -> None:
        """pg_waldump reached segment `number`: the ones before the previous leave the folder."""
        with self._changed:
            while self.position < len(self.segments) and self.segments[self.position].number < number:
                self.position += 1
            self._changed.notify_all()
        for segment in self.segments[:max(0, self.position - 1)]:
            (self.folder / segment.name).unlink(missing_ok=True)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def run(self) -> None:
        try:
            for index, segment in enumerate(self.segments):
                with self._changed:
                    while not self._stopped and index > self.position + self.read_ahead:
                        self._changed.wait(timeout=1.0)
                    if self._stopped:
                        return
                stored = self.listing.segments.get(segment.name) or self.listing.partials[segment.name]
                write_decoded(self.storage, stored, self.identity, self.folder / segment.name)
                with self._changed:
                    self.written += 1
                    self._changed.notify_all()
        except Exception as error:  # said by the reading thread, never lost with this one
            with self._changed:
                self.failure = error if isinstance(error, PgdrError) else PgdrError(
                    f"the WAL feed for pg_waldump failed: {type(error).__name__}: {error}")
                self._changed.notify_all()


def committed_transactions(pg_waldump: str, major: int, storage: Storage, listing: ArchiveListing,
                           stretches: list[Stretch], identity: object | None, read_ahead: int,
                           progress: Callable[[int], None] = lambda lsn: None) -> Iterator[Committed]:
    """Every committed transaction that changed user files, in commit order, over all stretches."""
    reader = TransactionReader()
    for stretch in stretches:
        if stretch.end <= stretch.start:
            continue
        yield from _read_stretch(pg_waldump, major, storage, listing, stretch, identity, read_ahead, reader,
                                 progress)


def _read_stretch(pg_waldump: str, major: int, storage: Storage, listing: ArchiveListing, stretch: Stretch,
                  identity: object | None, read_ahead: int, reader: TransactionReader,
                  progress: Callable[[int], None]) -> Iterator[Committed]:
    folder = Path(tempfile.mkdtemp(prefix="pgdr-wal-timeline-"))
    feeder = Feeder(storage, listing, stretch.segments, folder, identity, read_ahead)
    feeder.start()
    argv = waldump_argv(pg_waldump, folder, stretch, major)
    try:
        feeder.wait_for_first()
        if feeder.failure is not None:
            raise feeder.failure
        with stream(argv, stage="pg_waldump", direction="read",
                    environment=child_environment({"TZ": "UTC", "LC_MESSAGES": "C"}),
                    hint="the archive's WAL does not read: see the message; `pgdr check` names gaps",
                    exit_code=ExitCode.INTEGRITY) as dump:
            assert dump.process.stdout is not None
            yield from _records(dump.process.stdout, reader, feeder, stretch.segments[0].size, progress,
                                lambda lsn: lines_of_one_record(pg_waldump, folder, stretch.timeline, lsn))
    except StageFailed:
        if feeder.failure is not None:  # pg_waldump gave up waiting for a segment the feed could not write
            raise feeder.failure from None
        raise
    finally:
        feeder.stop()
        feeder.join(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    if feeder.failure is not None:
        raise feeder.failure


def _records(lines: Iterable[bytes], reader: TransactionReader, feeder: Feeder, size: int,
             progress: Callable[[int], None], carried: Callable[[str], int]) -> Iterator[Committed]:
    """pg_waldump's records. A record whose description holds a user's text (a prepared transaction's name, a
    restore point's name, a logical message's prefix: pgdr.wal.waldump.carries_text) may hold line breaks, and
    then lines that look like records: `carried(lsn)` tells how many lines follow that are its text, and they are
    skipped. Whoever can name a prepared transaction must not add, or hide, transactions in the timeline."""
    current, skip, position = -1, 0, ""
    digits = max(1, (size.bit_length() - 1) // 4)  # the LSN's hex digits within a segment (6 for 16 MB)
    for raw in lines:
        if skip:
            skip -= 1
            continue
        record = parse_record(raw.decode("utf-8", "replace").rstrip("\n"))
        if record is None:
            continue
        if record.rmgr != "Heap" and record.rmgr != "Heap2" and carries_text(record.rmgr, record.desc):
            skip = carried(record.lsn)
        if record.lsn[:-digits] != position:  # the LSN's high digits changed: perhaps a new segment
            position = record.lsn[:-digits]
            lsn = parse_lsn(record.lsn)
            if lsn // size != current:
                current = lsn // size
                feeder.passed(current)
                progress(lsn)
                if feeder.failure is not None:
                    raise feeder.failure
        found = reader.feed_record(record)
        if found is not None:
            yield found


def waldump_argv(pg_waldump: str, folder: Path, stretch: Stretch, major: int) -> list[str]:
    """--follow: the feed writes the folder as pg_waldump reads it. From 15 on only the resource managers read
    (several --rmgr): faster, and restore points and logical messages are not printed at all."""
    rmgrs = [f"--rmgr={name}" for name in ("Heap", "Heap2", "Transaction", "Storage")] if major >= 15 else []
    return [pg_waldump, "--follow", "--path", str(folder), "--timeline", str(stretch.timeline),
            "--start", format_lsn(stretch.start), "--end", format_lsn(stretch.end), *rmgrs]


def lines_of_one_record(pg_waldump: str, folder: Path, timeline: int, lsn: str) -> int:
    """How many lines beyond its first pg_waldump prints for the record at `lsn` alone (--limit 1): the line
    breaks inside its text."""
    completed = run([pg_waldump, "--path", str(folder), "--timeline", str(timeline), "--start", lsn, "--limit", "1"],
                    stage="pg_waldump", environment=child_environment({"TZ": "UTC", "LC_MESSAGES": "C"}),
                    hint="the archive's WAL does not read: see the message", exit_code=ExitCode.INTEGRITY)
    return max(0, completed.stdout.count(b"\n") - 1)
