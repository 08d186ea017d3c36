"""`pgdr wal stream`: pg_receivewal on a replication slot, its spool moved to every target through the codec stack.

One loop, every POLL_SECONDS:

1. **The receiver.** pg_receivewal (`receive_argv`) writes into the spool folder: completed segments
   (`000000010000000000000003`), the growing one (`...04.partial`, preallocated to the segment size) and timeline
   histories (`00000002.history`). Whenever it exits (the server restarting, the network, a refusal) the reason is
   reported and it is started again with backoff; a refusal that needs a fix (pg_hba.conf, a role without
   REPLICATION) ends the service instead, with the fix. pg_receivewal resumes from the newest file of the spool,
   or from the slot's restart_lsn when the spool is empty (PostgreSQL 15+): the slot keeps every byte the spool has
   not fsynced, so nothing is skipped. It dies with pgdr, even by kill -9 (run.start_service), so a restarted
   pgdr never finds its old receiver still holding the slot.
2. **Completed files.** Histories first, then segments in name order (timeline, then position), each encoded
   (compression, age) once and stored as `wal/<name><suffix>` on every target. A file leaves the spool only once
   every target has it. A target that fails is retried with backoff, a warning each time, and skips the rest of
   the round (what it holds stays a prefix of the WAL); the others go on. A spool above `wal.spool_max_size` ends
   the service with an error naming both, nothing deleted.
3. **Every half wal.rpo_objective.** One sample of the server (`replication.Sampler`: pg_current_wal_lsn and the
   receiver's write_lsn). Once the receiver has reported the server's position of that sample (it reports every
   `status_interval`, so that takes at most one interval plus a second; longer, it is not waited for), the growing
   `.partial` is stored as `wal/<segment>.partial<suffix>` if it changed, then `wal/status.json` on each target.
   A target's `stored_lsn` is the end of the segments it holds, or, when it holds every completed file, the
   receiver's write_lsn sampled before the partial was read. `caught_up_at` is the newest sample whose server
   position the target holds: at that moment storage had all the WAL the server had written. So right after a
   round storage is behind by the wait and the store (a second or two), and before the next one by half an
   objective more: within the objective under load. (Measured in bench/wal.py. A round every objective, storing
   what the receiver had reported so far, left storage between one and two objectives behind under pgbench:
   the sample a round stored was caught up only by the next round.)
4. **SIGTERM or Ctrl-C** (KeyboardInterrupt, see cli.main): pg_receivewal gets a few seconds to receive what the
   server had written at that moment (`_drain`), is stopped (it flushes), what it wrote is stored, partial included,
   the status written, and the service returns (exit 0).

What a crash (kill -9, power loss) leaves behind, and why nothing is lost: a file on some targets and not others
is still in the spool and is stored again next time (the same key, overwritten whole: a local rename, an S3 PUT);
a file stored everywhere and not yet removed from the spool is stored again; a `.partial` key whose segment was
stored is deleted when its segment is stored again, or by `pgdr prune`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgdr.config import WalSettings
from pgdr.errors import PgdrError, Refused, ServerUnreachable, StorageError
from pgdr.run import Service, start_service
from pgdr.storage import Storage
from pgdr.streams import Codec
from pgdr.streams.encoder import Encoder
from pgdr.ui import Output, human_size
from pgdr.wal.archive import (
    PARTIAL,
    STATUS_KEY,
    WAL_PREFIX,
    ArchiveListing,
    Segment,
    StreamStatus,
    format_lsn,
    is_history_name,
    is_segment_name,
    parse_lsn,
    wal_key,
)
from pgdr.wal.replication import Sample, Sampler, ServerFacts, receiver_refusal

POLL_SECONDS = 0.2
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
DRAIN_SECONDS = 20.0  # at most, on a clean stop, for the receiver to reach the server (_drain)
STEADY_SECONDS = 30.0  # a receiver that ran this long starts its backoff again from BACKOFF_FIRST
SETTLED_NS = 50_000_000  # a partial unchanged since this long before it was read was read whole
READ_CHUNK = 1024 * 1024
LOCK_NAME = ".lock"
OLDER_TIMELINES = "older-timelines"
SAMPLES_KEPT = 10_000
ROUNDS_PER_OBJECTIVE = 2  # see the module's 3.: the archive then stays within the objective under load


def receive_argv(program: str, directory: Path, slot: str, synchronous: bool, interval: int) -> list[str]:
    """pg_receivewal into `directory` from `slot`; --no-loop: pgdr, not pg_receivewal, decides when to retry."""
    return [program, "--directory", str(directory), "--slot", slot, "--no-loop", "--no-password",
            "--status-interval", str(interval), *(["--synchronous"] if synchronous else [])]


def status_interval(rpo_objective: float) -> int:
    """Seconds between the receiver's reports to the server (its write_lsn, which the status is computed from):
    a quarter of the objective, at least 1 (pg_receivewal counts whole seconds), at most 10 (its default)."""
    return max(1, min(10, int(rpo_objective // 4)))


@dataclass(frozen=True)
class SpoolFile:
    name: str  # PostgreSQL's name, without .partial
    kind: str  # "segment", "partial" or "history"
    path: Path
    size: int
    mtime_ns: int


def scan_spool(folder: Path) -> list[SpoolFile]:
    """The files of the spool pg_receivewal has written, in name order; its temporary files are not among them."""
    found = []
    for entry in os.scandir(folder):
        base = entry.name.removesuffix(PARTIAL)
        if is_segment_name(base):
            kind = "partial" if entry.name.endswith(PARTIAL) else "segment"
        elif is_history_name(entry.name):
            kind = "history"
        else:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # renamed meanwhile (a partial completed): the next scan sees it
        if stat.S_ISREG(info.st_mode):
            found.append(SpoolFile(base, kind, Path(entry.path), info.st_size, info.st_mtime_ns))
    return sorted(found, key=lambda file: file.path.name)


def spool_size(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def upload_order(files: list[SpoolFile]) -> list[SpoolFile]:
    """Completed files as they must be stored: histories first (a recovery crossing a switch needs them before the
    new timeline's segments), then segments in name order."""
    return [file for file in files if file.kind == "history"] + [file for file in files if file.kind == "segment"]


def caught_up_at(samples: list[Sample], stored_lsn: int) -> datetime | None:
    """The newest moment at which the server had written no more than `stored_lsn`."""
    return max((sample.at for sample in samples if sample.server_lsn <= stored_lsn), default=None)


def received(sample: Sample, position: int | None = None) -> bool:
    """Whether the receiver had reported `position` (default: the server's position of the sample) by the sample;
    true without a receiver, which there is nothing to wait for."""
    wanted = sample.server_lsn if position is None else position
    return sample.receiver_lsn is None or sample.receiver_lsn >= wanted


def partial_end(partial: Segment, receiver_lsn: int | None) -> int:
    """How far a partial segment read after the receiver reported `receiver_lsn` surely reaches."""
    if receiver_lsn is None:
        return 0
    return min(receiver_lsn, partial.start_lsn + partial.size)


@contextmanager
def spool_lock(folder: Path) -> Iterator[None]:
    """One streamer per spool: a second one refuses at once (pg_receivewal would fight over the files)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused(f"another pgdr wal stream is using the spool {folder}",
                          "stop it first: one streamer per spool and slot") from None
        yield
    finally:
        os.close(descriptor)


@dataclass
class Target:
    """One target as the streamer sees it: what it holds of the spool, how far its archive reaches, its backoff."""

    name: str
    storage: Storage
    stored: set[str] = field(default_factory=set)  # spool files it holds (this run)
    partial_keys: set[str] = field(default_factory=set)  # segment names whose .partial key it holds
    partial: tuple[str, int, int] | None = None  # the partial it holds: name, mtime_ns, when it was read (ns)
    stored_lsn: int = 0
    stored_at: datetime | None = None
    caught_up_at: datetime | None = None
    retry_at: float = 0.0
    delay: float = 0.0

    def ready(self) -> bool:
        return time.monotonic() >= self.retry_at

    def failed(self) -> float:
        self.delay = min(BACKOFF_MAX, self.delay * 2 or BACKOFF_FIRST)
        self.retry_at = time.monotonic() + self.delay
        return self.delay

    def advance(self, lsn: int, at: datetime) -> None:
        if lsn > self.stored_lsn:
            self.stored_lsn, self.stored_at = lsn, at

    def remember(self, status: StreamStatus) -> None:
        """Where an earlier streamer (of the same server) left this target's archive."""
        self.stored_lsn, self.stored_at, self.caught_up_at = (parse_lsn(status.stored_lsn), status.stored_at,
                                                              status.caught_up_at)


@dataclass
class Streamer:
    spool: Path
    wal: WalSettings
    targets: list[Target]
    codec: Codec
    level: int | None
    recipients: list[object] | None
    receiver_argv: list[str]
    environment: dict[str, str]
    sampler: Sampler
    ensure_slot: Callable[[], bool]
    facts: ServerFacts
    output: Output
    _receiver: Service | None = None
    _receiver_started: float = 0.0
    _receiver_retry_at: float = 0.0
    _receiver_delay: float = 0.0
    _starts: int = 0
    _next_round: float = 0.0
    _samples: list[Sample] = field(default_factory=list)
    _receiver_lsn: int | None = None
    _timeline: int = 1
    _encoded: tuple[tuple[Path, int, int], bytes, int] | None = None
    _awaiting: tuple[Sample, float] | None = None  # a round's sample, until the receiver has its position (deadline)

    def run(self) -> None:
        """Until SIGTERM or Ctrl-C: then the receiver is stopped and what it wrote is stored before returning."""
        try:
            self._leave_older_timelines()
            while True:
                self._supervise()
                self._round(final=False)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.output.info("Stopping: pg_receivewal flushes, then what it wrote is stored")
            self._drain()
            self._stop_receiver()
            self._round(final=True)
            stored = ", ".join(f"{target.name} {format_lsn(target.stored_lsn)}" for target in self.targets)
            self.output.success(f"WAL stream stopped; stored up to {stored}")
        finally:
            self._stop_receiver()
            self.sampler.close()

    def _leave_older_timelines(self) -> None:
        """After a recovery the server goes on on a new timeline, forked before the newest WAL the spool holds; and
        pg_receivewal resumes from the spool's newest file, a start the server refuses ("not in this server's
        history"). So before the receiver starts: the completed files are stored (the old timeline's WAL stays in
        the archive), then a `.partial` of an older timeline is moved to `<spool>/older-timelines/`, kept, not
        deleted (the run that wrote it stored it as `.partial` when it stopped)."""
        sample = self.sampler.sample()
        if sample is None:
            return
        self._store_completed()
        older = [file for file in scan_spool(self.spool)
                 if file.kind == "partial" and int(file.name[:8], 16) < sample.timeline]
        if not older:
            return
        aside = self.spool / OLDER_TIMELINES
        aside.mkdir(mode=0o700, exist_ok=True)
        for file in older:
            file.path.rename(aside / file.path.name)
        self.output.info(f"The server is on timeline {sample.timeline}: moved the growing segment of an older "
                         f"timeline ({', '.join(file.name for file in older)}) to {aside}; streaming resumes on "
                         f"timeline {sample.timeline}")

    # ---- the receiver

    def _supervise(self) -> None:
        now = time.monotonic()
        if self._receiver is None:
            if now >= self._receiver_retry_at:
                self._start_receiver(now)
            return
        if self._receiver.poll() is None:
            if now - self._receiver_started > STEADY_SECONDS:
                self._receiver_delay = 0.0
            return
        output, failure = self._receiver.output_text(), self._receiver.failure()
        self._receiver.close()
        self._receiver = None
        refusal = receiver_refusal(output, self.facts.hba_file, str(self.spool))
        if refusal is not None:
            raise refusal
        self._retry_receiver(now, f"pg_receivewal stopped ({failure})")

    def _retry_receiver(self, now: float, why: str) -> None:
        self._receiver_delay = min(BACKOFF_MAX, self._receiver_delay * 2 or BACKOFF_FIRST)
        self._receiver_retry_at = now + self._receiver_delay
        self.output.warn(f"{why}; starting it again in {self._receiver_delay:.0f}s")

    def _start_receiver(self, now: float) -> None:
        try:
            created = self.ensure_slot()
        except PgdrError as error:
            if not isinstance(error, ServerUnreachable) and type(error) is not PgdrError:
                raise
            self._retry_receiver(now, f"the server does not answer ({error.message})")
            return
        if created:
            if self._starts:
                self.output.warn(f"replication slot {self.wal.slot} was gone and was created again: the WAL written "
                                 "meanwhile may be missing from the archive (pgdr check names a gap)")
            else:
                self.output.info(f"Created replication slot {self.wal.slot}")
        self._starts += 1
        self._receiver = start_service(self.receiver_argv, stage="pg_receivewal", environment=self.environment)
        self._receiver_started = now

    def _drain(self) -> None:
        """Before a clean stop, let the receiver reach the position the server had when asked to stop: a stop right
        after a commit (a switchover, a maintenance window) still leaves that commit in the archive. A receiver
        still connecting gets the same time. Bounded by DRAIN_SECONDS (a service manager waits longer: systemd
        90 s, the Compose example 2 min); a receiver still behind then is said so and stopped anyway."""
        first = self._sample() if self._receiver is not None else None
        if first is None:
            return
        deadline = time.monotonic() + max(DRAIN_SECONDS, 2 * status_interval(self.wal.rpo_objective) + 1)
        while time.monotonic() < deadline and self._receiver is not None and self._receiver.poll() is None:
            sample = self._sample()  # its receiver position is what the last partial is then stored up to
            if sample is None:  # the server is gone: what it wrote is what pg_receivewal has
                return
            if sample.receiver_lsn is not None and sample.receiver_lsn >= first.server_lsn:
                return
            time.sleep(POLL_SECONDS / 4)
        self.output.warn(f"pg_receivewal had not received the WAL up to {format_lsn(first.server_lsn)} when it was "
                         "stopped: the next `pgdr wal stream` receives the rest from the slot")

    def _stop_receiver(self) -> None:
        if self._receiver is not None:
            receiver, self._receiver = self._receiver, None
            receiver.stop(signal.SIGINT)  # pg_receivewal's "stop": it flushes and exits (SIGTERM only from 15 on)
            receiver.close()

    # ---- one round

    def _round(self, final: bool) -> None:
        """Completed files at every poll; every half objective a sample, then, once the receiver has the server's
        position of that sample (or could not report it in time), the partial and the status (the module's 3.)."""
        now = time.monotonic()
        if final:  # one more try for every target, even one waiting out its backoff
            for target in self.targets:
                target.retry_at = 0.0
        pending = self._store_completed()
        if final or now >= self._next_round:
            self._next_round = now + self.wal.rpo_objective / ROUNDS_PER_OBJECTIVE
            sample = self._sample()
            self._awaiting = None
            if sample is not None and not final and not received(sample):
                self._awaiting = (sample, now + status_interval(self.wal.rpo_objective) + 1)
        elif self._awaiting is not None:
            sample = self._sample()
            awaited, deadline = self._awaiting
            if sample is None or received(sample, awaited.server_lsn) or now >= deadline:
                self._awaiting = None
        else:
            self._check_spool()
            return
        if self._awaiting is None:
            self._store_partials(pending)
            self._write_status()
        self._check_spool()

    def _sample(self) -> Sample | None:
        sample = self.sampler.sample()
        if sample is not None:
            self._samples = [*self._samples[-SAMPLES_KEPT:], sample]
            self._timeline = sample.timeline
            if sample.receiver_lsn is not None:
                self._receiver_lsn = sample.receiver_lsn
        return sample

    def _store_completed(self) -> set[str]:
        """Store what pg_receivewal finished; the names of the targets still missing some of it."""
        behind: set[str] = set()
        for file in upload_order(scan_spool(self.spool)):
            for target in self.targets:
                if file.name in target.stored:
                    continue
                if target.ready() and self._store(target, wal_key(file.name, self.codec), file):
                    target.stored.add(file.name)
                    if file.kind == "segment":
                        segment = Segment.from_name(file.name, self.facts.segment_size)
                        target.advance(segment.start_lsn + segment.size, datetime.now(UTC))
                        self._drop_partial_key(target, file.name)
                else:
                    behind.add(target.name)
            if all(file.name in target.stored for target in self.targets):
                file.path.unlink(missing_ok=True)
                for target in self.targets:
                    target.stored.discard(file.name)
                if file.kind == "segment":
                    self.output.info(f"Stored WAL segment {file.name} ({', '.join(t.name for t in self.targets)})")
        return behind

    def _store_partials(self, behind: set[str]) -> None:
        partials = [file for file in scan_spool(self.spool) if file.kind == "partial"]
        for abandoned in partials[:-1]:  # left on an old timeline by a switch: stored once, then out of the spool
            if all(self._store_partial(target, abandoned) for target in self.targets):
                abandoned.path.unlink(missing_ok=True)
        if not partials:
            return
        current = partials[-1]
        segment = Segment.from_name(current.name, self.facts.segment_size)
        for target in self.targets:
            if self._store_partial(target, current) and target.name not in behind:
                target.advance(partial_end(segment, self._receiver_lsn), datetime.now(UTC))

    def _store_partial(self, target: Target, file: SpoolFile) -> bool:
        """Whether the target holds the partial as it is now (stored this round, or unchanged since)."""
        held = target.partial
        if held is not None and held[:2] == (file.name, file.mtime_ns) and file.mtime_ns + SETTLED_NS < held[2]:
            return True
        if not target.ready() or not self._store(target, wal_key(file.name, self.codec, True), file):
            return False
        assert self._encoded is not None
        target.partial = (file.name, file.mtime_ns, self._encoded[2])
        target.partial_keys.add(file.name)
        return True

    def _drop_partial_key(self, target: Target, name: str) -> None:
        if name in target.partial_keys:
            try:
                target.storage.delete(wal_key(name, self.codec, True))
                target.partial_keys.discard(name)
            except StorageError as error:
                self.output.warn(f"{target.name}: could not delete the partial of {name} ({error.message}); "
                                 "pgdr prune removes it")

    def _store(self, target: Target, key: str, file: SpoolFile) -> bool:
        try:
            data = self._encode(file)
        except FileNotFoundError:
            return False  # a partial completed meanwhile: stored under its full name next
        try:
            target.storage.put_bytes(key, data)
        except StorageError as error:
            delay = target.failed()
            self.output.warn(f"{target.name}: could not store {key} ({error.message}); it stays in the spool, "
                             f"trying again in {delay:.0f}s")
            return False
        target.delay = 0.0
        return True

    def _encode(self, file: SpoolFile) -> bytes:
        """The stored bytes of a spool file, encoded once for every target (the partial: once per change)."""
        identity = (file.path, file.mtime_ns, file.size)
        if self._encoded is not None and self._encoded[0] == identity and file.mtime_ns + SETTLED_NS < self._encoded[2]:
            return self._encoded[1]  # read after its last change: still what the file holds
        read_at = time.time_ns()
        buffer = bytearray()
        with open(file.path, "rb") as source, Encoder(buffer.extend, self.codec, self.level,
                                                      self.recipients) as encoder:
            while chunk := source.read(READ_CHUNK):
                encoder.write(chunk)
        self._encoded = (identity, bytes(buffer), read_at)
        return self._encoded[1]

    def _write_status(self) -> None:
        for target in self.targets:
            target.caught_up_at = max(filter(None, (target.caught_up_at,
                                                     caught_up_at(self._samples, target.stored_lsn))), default=None)
            if target.caught_up_at is None or target.stored_at is None or not target.ready():
                continue
            status = StreamStatus(self.facts.system_identifier, self._timeline, format_lsn(target.stored_lsn),
                                  target.stored_at, target.caught_up_at, self.facts.segment_size, self.wal.slot)
            try:
                target.storage.put_bytes(STATUS_KEY, status.to_json())
            except StorageError as error:
                delay = target.failed()
                self.output.warn(f"{target.name}: could not write {STATUS_KEY} ({error.message}); trying again in "
                                 f"{delay:.0f}s")
        if self._samples:
            oldest = min((target.caught_up_at for target in self.targets if target.caught_up_at), default=None)
            self._samples = [sample for sample in self._samples if oldest is None or sample.at >= oldest]

    def _check_spool(self) -> None:
        size = spool_size(self.spool)
        if size > self.wal.spool_max_size:
            raise StorageError(f"the WAL spool {self.spool} holds {human_size(size)}, more than wal.spool_max_size "
                               f"({human_size(self.wal.spool_max_size)}): the targets are not taking the WAL (see the "
                               "warnings above); nothing was deleted",
                               "fix the targets, or raise wal.spool_max_size; then start pgdr wal stream again (the "
                               "spool is stored first)")


def earlier_run(target: Target, facts: ServerFacts, report: Callable[[str], None]) -> None:
    """Load what an earlier streamer left on a target; a target that does not answer is caught up with later."""
    try:
        listing = ArchiveListing.of(target.storage.list(WAL_PREFIX))
        data = target.storage.get_bytes(STATUS_KEY)
    except StorageError as error:
        report(f"{target.name}: could not read its WAL archive ({error.message}); going on")
        return
    target.partial_keys = set(listing.partials)
    if data is None:
        return
    try:
        status = StreamStatus.from_json(data)
    except (ValueError, KeyError, TypeError):
        return
    if status.system_identifier == facts.system_identifier:
        target.remember(status)
