"""Serving WAL to a recovering server from one target's archive, read ahead, with no Python start per segment.

The server's restore_command (pgdr.wal.recovery.restore_command) is a few lines of shell: it leaves `<name>.want`
in a folder and waits for `<name>.ready` (then copies `<name>`) or `<name>.missing`. A thread of the pgdr process
that started the recovery answers: it decodes the object through the codec stack, writes it 0600 for the server's
OS user, and meanwhile fetches the next `read_ahead` segments of the plan, so the server rarely waits. pgdr keeps
the storage credentials and the age identity; the server never sees them.

What is asked and not stored is told apart, because PostgreSQL reads "missing" as "the archive ends here" and
then stops recovering:
- a history file, a segment of another timeline than the plan's, or one after the newest stored: missing, as
  PostgreSQL expects while it probes;
- a segment of the plan that does not decode (corrupt), or that is not stored (a gap) when recovering to the end:
  the fetcher does NOT answer, records the failure and calls `on_failure`, which stops the server before it can
  take the gap for the end of the archive and open on a silently earlier state;
- a gap when recovering to a target (`stops_at_target`): answered missing and recorded in `gap`. PostgreSQL's
  read-ahead (recovery_prefetch) may ask for the segment after the one that holds the target, and then stops at
  the target as it should; if the target lies behind the gap, PostgreSQL itself refuses to open ("recovery ended
  before configured recovery target was reached") and the caller reports the gap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.errors import IntegrityError, PgdrError, StorageError
from pgdr.run import RunAs
from pgdr.storage import Storage
from pgdr.streams.decoder import decoded
from pgdr.wal.archive import ArchiveListing, Segment, WalObject, is_history_name, is_segment_name

POLL_SECONDS = 0.02
HINT_GAP = ("the WAL archive has a gap: recover to a point before it (`pgdr list` shows the window), or restore the "
            "missing object from another target (--from)")


@dataclass
class WalFetcher:
    storage: Storage
    listing: ArchiveListing
    plan: list[Segment]  # the segments recovery reads, in order, along the timeline path
    folder: Path
    owner: RunAs | None = None
    identity: object | None = None
    read_ahead: int = 8
    on_failure: Callable[[PgdrError], None] = lambda error: None
    stops_at_target: bool = False
    failure: PgdrError | None = None
    gap: PgdrError | None = None  # the first gap asked for, when stops_at_target
    served: list[str] = field(default_factory=list)  # segment names handed to the server, in order
    _fetched: set[str] = field(default_factory=set)
    _position: int = 0  # index in plan of the newest segment asked for
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._plan_index = {segment.name: index for index, segment in enumerate(self.plan)}

    def start(self) -> WalFetcher:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder, 0o700)
        self._thread = threading.Thread(target=self._serve, name="pgdr-wal-fetch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread; whatever the server still waits for is answered missing (its server is being stopped)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for want in self.folder.glob("*.want"):
            self._answer_missing(want.name.removesuffix(".want"))

    @property
    def newest_served(self) -> Segment | None:
        """The furthest segment of the plan handed to the server (it may ask for one again, e.g. at a switch)."""
        return self.plan[max(self._plan_index[name] for name in self.served)] if self.served else None

    def _serve(self) -> None:
        while not self._stop.is_set():
            wants = sorted(self.folder.glob("*.want"))
            for want in wants:
                if self.failure is None:
                    self._answer(want.name.removesuffix(".want"))
            if self.failure is None and not wants:
                self._read_ahead_one()
            self._stop.wait(POLL_SECONDS if not wants else 0)

    def _answer(self, name: str) -> None:
        try:
            if is_segment_name(name) and name in self._plan_index:
                self._serve_segment(name)
            elif is_history_name(name) and name in self.listing.histories:
                self._write(name, self.listing.histories[name])
                self._mark(name, "ready")
            else:
                self._answer_missing(name)
        except PgdrError as error:
            self._fail(error)

    def _serve_segment(self, name: str) -> None:
        index = self._plan_index[name]
        if name not in self._fetched:
            stored = self._stored(name)
            if stored is None:
                gap = IntegrityError(f"WAL segment {name} is missing from the archive in {self.storage.describe()}, "
                                     "and recovery needs it", HINT_GAP)
                if not self.stops_at_target:
                    raise gap
                self.gap = self.gap or gap
                self._answer_missing(name)
                return
            self._write(name, stored)
        self._mark(name, "ready")
        self.served.append(name)
        self._position = max(self._position, index)
        self._forget_before(index - 1)

    def _stored(self, name: str) -> WalObject | None:
        """The full segment, else its partial (the newest WAL, uploaded as it grew), else None."""
        return self.listing.segments.get(name) or self.listing.partials.get(name)

    def _read_ahead_one(self) -> None:
        for segment in self.plan[self._position:self._position + self.read_ahead + 1]:
            if segment.name not in self._fetched:
                stored = self._stored(segment.name)
                if stored is not None:
                    try:
                        self._write(segment.name, stored)
                    except PgdrError:
                        pass  # told when the server asks for it: it is the request that fails
                return

    def _write(self, name: str, stored: WalObject) -> None:
        write_decoded(self.storage, stored, self.identity, self.folder / name, lambda path: self._own(path, 0o600))
        self._fetched.add(name)

    def _mark(self, name: str, answer: str) -> None:
        marker = self.folder / f"{name}.{answer}"
        marker.touch()
        self._own(marker, 0o600)
        (self.folder / f"{name}.want").unlink(missing_ok=True)

    def _answer_missing(self, name: str) -> None:
        (self.folder / f"{name}.ready").unlink(missing_ok=True)
        self._mark(name, "missing")

    def _forget_before(self, index: int) -> None:
        """Segments the server has moved past leave the folder: it holds about read_ahead segments at a time."""
        for segment in self.plan[:max(index, 0)]:
            if segment.name in self._fetched:
                (self.folder / segment.name).unlink(missing_ok=True)
                (self.folder / f"{segment.name}.ready").unlink(missing_ok=True)
                self._fetched.discard(segment.name)

    def _fail(self, error: PgdrError) -> None:
        if self.failure is None:
            self.failure = error
            self.on_failure(error)

    def _own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if self.owner is not None:
            os.chown(path, self.owner.uid, self.owner.gid)


def write_decoded(storage: Storage, stored: WalObject, identity: object | None, target: Path,
                  own: Callable[[Path], None] = lambda path: None) -> None:
    """A stored WAL file decoded (decompressed, decrypted) into `target`, which appears whole (a hidden temporary
    file, 0600 from creation, then a rename) or not at all."""
    temporary = target.with_name(f".{target.name}.part")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle, storage.open_download(stored.key) as source, \
                decoded(source, stored.codec, identity, f"WAL {stored.key}") as chunks:
            for chunk in chunks:
                handle.write(chunk)
        own(temporary)
        os.replace(temporary, target)
    except (OSError, StorageError) as error:
        temporary.unlink(missing_ok=True)
        message = error.message if isinstance(error, StorageError) else str(error)
        raise StorageError(f"cannot fetch WAL {stored.key}: {message}", "check the target and free space, then "
                           "run the command again") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
