"""Each target's WAL archive and recoverable window, read from storage for the actions that show them (pgdr status,
list, check, prune) and the drill: the physical base backups' manifests, the archive's listing, its timeline
histories and wal/status.json. The computing is pgdr.wal.window's (pure); this module only reads. A target without
a wal/ folder has no window (None), so targets of plain and split backups look as they always did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pgdr.catalog import BackupRecord, complete_chains, list_backups
from pgdr.context import Context
from pgdr.errors import IntegrityError, PgdrError
from pgdr.formats.codecs import age_identity
from pgdr.postgres.connect import session
from pgdr.storage import Storage, open_storage
from pgdr.streams.decoder import decoded
from pgdr.wal.archive import (
    DEFAULT_SEGMENT_SIZE,
    STATUS_KEY,
    WAL_PREFIX,
     ArchiveListing,
    StreamStatus,
    TimelineSwitch,
    parse_history,
)
from pgdr.wal.window import BaseBackup, Window, window

HINT_STREAM = "start `pgdr wal stream` (or its service) and see its log"


@dataclass
class Archive:
    """What one target's archive holds, read once: enough for the window and for retention."""

    listing: ArchiveListing
    status: StreamStatus | None
    histories: dict[int, list[TimelineSwitch]]
    problems: list[str]

    @property
    def segment_size(self) -> int:
        return self.status.segment_size if self.status else DEFAULT_SEGMENT_SIZE


def read_archive(context: Context, storage: Storage) -> Archive | None:
    """None when the target has no wal/ folder (no archive)."""
    objects = storage.list(WAL_PREFIX)
    if not objects:
        return None
    problems: list[str] = []
    status = None
    data = storage.get_bytes(STATUS_KEY)
    if data is not None:
        try:
            status = StreamStatus.from_json(data)
        except (ValueError, KeyError, TypeError) as error:
            problems.append(f"{STATUS_KEY} is unreadable ({type(error).__name__}): ignored")
    listing = ArchiveListing.of(objects)
    return Archive(listing, status, read_histories(context, storage, listing), problems)


def read_histories(context: Context, storage: Storage, listing: ArchiveListing) -> dict[int, list[TimelineSwitch]]:
    histories: dict[int, list[TimelineSwitch]] = {}
    for name, stored in listing.histories.items():
        identity = age_identity(context, stored.codec, f"WAL {stored.key}")
        with storage.open_download(stored.key) as source, decoded(source, stored.codec, identity,
                                                                   f"WAL {stored.key}") as chunks:
            text = b"".join(chunks).decode("utf-8", "replace")
        try:
            histories[int(name[:8], 16)] = parse_history(text)
        except ValueError as error:
            raise IntegrityError(f"timeline history {stored.key} is unreadable: {error}",
                                 "restore it from another target, or recover with --timeline") from None
    return histories


def base_backups(records: list[BackupRecord]) -> list[BaseBackup]:
    """The physical base backups a recovery can start from: with a manifest (without one, where it starts in the
    WAL is not known), and an incremental only with its whole chain."""
    return [BaseBackup.of(record.key.key, record.manifest.physical) for record in complete_chains(records)
            if record.manifest is not None and record.manifest.physical is not None]


def target_window(context: Context, storage: Storage, now: datetime | None = None) -> Window | None:
    archive = read_archive(context, storage)
    if archive is None:
        return None
    records = list_backups(storage, context.settings.backup.min_size)
    found = window(base_backups(records), archive.listing, archive.histories, archive.status, now or datetime.now(UTC))
    found.problems += archive.problems
    return found


def windows(context: Context, targets: Sequence[str], now: datetime | None = None) -> dict[str, Window]:
    """Target -> its window, for the targets that have an archive; a target that cannot be read is left out
    (status and list report on what they can reach; check reports the failure itself)."""
    found: dict[str, Window] = {}
    for target in targets:
        try:
            result = target_window(context, open_storage(context.settings, target, context.output.warn), now)
        except PgdrError as error:
            context.output.warn(f"WAL archive of {target} not read: {error.message}")
            continue
        if result is not None:
            found[target] = result
    return found


def slot_active(context: Context) -> bool | None:
    """Whether wal.slot is in use on the server; None when the server cannot be asked or the slot does not exist."""
    import psycopg

    try:
        with session(context.superuser_endpoint()) as connection:
            row = connection.execute("SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                                     (context.settings.wal.slot,)).fetchone()
    except (PgdrError, psycopg.Error):
        return None
    return None if row is None else bool(row[0])


def rpo_now(context: Context, target: str) -> float | None:
    """The RPO the target's archive gives now (a drill records it beside its RTO); None without an archive."""
    found = windows(context, [target]).get(target)
    return None if found is None or found.rpo_seconds is None else round(found.rpo_seconds, 3)
