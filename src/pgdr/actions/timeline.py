"""pgdr wal timeline: the committed transactions of the archived WAL that changed data, one line each, by table.

The WAL range and how it is read: pgdr.wal.timeline. Names: the live server's catalog (when it answers) and the
catalogs the physical base backups recorded, newest first (pgdr.wal.names). pg_waldump must be the WAL's own
major (its page format changes with it): the server's, or, with the server gone, the newest base backup's.

Memory stays flat: in time order each transaction is handed on as it is read; for --biggest only that many are
kept.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from pgdr.artifact import RelationName
from pgdr.catalog import list_backups
from pgdr.context import Context
from pgdr.errors import PgdrError, Refused
from pgdr.formats.codecs import age_identity
from pgdr.postgres.binaries import Toolset, find_toolset
from pgdr.postgres.relations import relation_names
from pgdr.preflight import major_of
from pgdr.storage import Storage, open_storage
from pgdr.ui import ProgressHandle
from pgdr.wal.archive import ArchiveListing, parse_lsn
from pgdr.wal.names import Names, Transaction, describe
from pgdr.wal.reading import read_archive
from pgdr.wal.timeline import Stretch, committed_transactions, plan_reading
from pgdr.wal.waldump import RelationFile

HINT_STREAM = "run `pgdr wal stream` (a service) to archive the WAL; docs/PITR.md"


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    table: str | None = None  # schema.name, or a name in any schema
    database: str | None = None

    def keep(self, transaction: Transaction) -> bool:
        if self.since is not None and transaction.time < self.since:
            return False
        if self.until is not None and transaction.time > self.until:
            return False
        if self.database is not None and self.database not in transaction.databases:
            return False
        if self.table is not None:
            wanted = self.table if "." in self.table else None
            return any(change.table == wanted or (wanted is None and change.table.split(".", 1)[-1] == self.table)
                       for change in transaction.changes)
        return True


def timeline(context: Context, source: str | None, filters: Filters, biggest: int | None,
             show: Callable[[Transaction], None]) -> int:
    """Each kept transaction to `show`, in time order; with `biggest`, only that many, biggest first, at the end.
    Returns how many were shown."""
    settings = context.settings
    target = source or settings.backup.targets[0]
    storage = open_storage(settings, target, context.output.warn)
    archive = read_archive(context, storage)
    if archive is None:
        raise Refused(f"no WAL archive in {storage.describe()}", HINT_STREAM)
    stored_end = parse_lsn(archive.status.stored_lsn) if archive.status else None
    stretches = plan_reading(archive.listing, archive.histories, filters.since, stored_end, archive.segment_size)
    if not stretches:
        return 0
    unread = unvouched_partial(archive.listing, stretches[-1], archive.segment_size)
    if unread is not None:
        context.output.warn(f"the newest WAL, the growing segment {unread}, is not read: wal/status.json does not say "
                            "how far its upload holds (is `pgdr wal stream` running?)")
    recorded = recorded_names(storage)
    names = Names(relation_names(context.superuser_endpoint(), context.output.warn,
                                 "tables are named from the base backups only"),
                  [name for _, names_of_backup in recorded for name in names_of_backup])
    toolset = waldump_tools(context, [major for major, _ in recorded])
    identity = next((age_identity(context, stored.codec, f"WAL {stored.key}")
                     for stored in [*archive.listing.segments.values(), *archive.listing.partials.values()]
                     if stored.codec.encrypted), None)
    segments = sum(len(stretch.segments) for stretch in stretches)
    context.output.step(f"Reading {segments} WAL segments from {storage.describe()} through pg_waldump")
    shown = 0
    if biggest is None:  # the lines themselves show the progress
        for transaction in kept(described(context, toolset, storage, archive.listing, stretches, identity, names),
                                filters):
            shown += 1
            show(transaction)
        return shown
    size = archive.segment_size
    with context.output.progress("Reading the WAL", segments * size) as bar:
        read = Advance(bar, size)
        found = kept(described(context, toolset, storage, archive.listing, stretches, identity, names, read),
                     filters)
        biggest_found = heapq.nlargest(biggest, found, key=lambda item: (item.rows, -item.time.timestamp()))
    for transaction in biggest_found:
        show(transaction)
    return len(biggest_found)


def unvouched_partial(listing: ArchiveListing, last: Stretch, size: int) -> str | None:
    """The growing segment's name when its upload is stored and the reading ends at its start (no status
    says how far it holds), None when it is read."""
    newest = last.segments[-1]
    if newest.name in listing.partials and newest.name not in listing.segments and last.end <= newest.start_lsn:
        return newest.name
    return None


class Advance:
    """The progress bar moved by a segment's size each time pg_waldump reaches a new one."""

    def __init__(self, bar: ProgressHandle, size: int) -> None:
        self.bar, self.size, self.segment = bar, size, -1

    def __call__(self, lsn: int) -> None:
        if self.segment >= 0:
            self.bar.advance(self.size)
        self.segment = lsn // self.size


def described(context: Context, toolset: Toolset, storage: Storage, listing: ArchiveListing,
              stretches: list[Stretch], identity: object | None, names: Names,
              progress: Callable[[int], None] = lambda lsn: None) -> Iterator[Transaction]:
    heap_files: set[RelationFile] = set()
    for committed in committed_transactions(toolset.path("pg_waldump"), toolset.major, storage, listing, stretches,
                                            identity, context.settings.wal.read_ahead, progress):
        heap_files |= committed.rows.keys()
        transaction = describe(committed, names, heap_files)
        if transaction is not None:
            yield transaction


def kept(transactions: Iterator[Transaction], filters: Filters) -> Iterator[Transaction]:
    for transaction in transactions:
        if filters.until is not None and transaction.time > filters.until:
            return  # commits come in WAL order: nothing later is wanted
        if filters.keep(transaction):
            yield transaction


def recorded_names(storage: Storage) -> list[tuple[int, list[RelationName]]]:
    """(major, the catalog's names) of each physical base backup with a manifest, newest first."""
    found = []
    for record in reversed(list_backups(storage, 0)):
        manifest = record.manifest
        if manifest is not None and manifest.physical is not None:
            found.append((major_of(manifest.server_version) or 0, manifest.physical.relations))
    return found


def waldump_tools(context: Context, backup_majors: list[int]) -> Toolset:
    """An installation of the WAL's own major: pg_waldump reads only the page format of its major."""
    try:
        major, _ = context.server_version()
    except PgdrError:
        major = next((found for found in backup_majors if found), 0)
    if not major:
        raise Refused("the WAL's PostgreSQL major is unknown: the server does not answer and no base backup says it",
                      "start the server (`pgdr up`), or take a physical base backup")
    toolset = context.toolset(major)
    if toolset.major != major:
        toolset = find_toolset(context.settings.postgres.bin_dir, ("pg_waldump",), minimum_major=major)
    if toolset.major != major:
        raise Refused(f"the WAL is PostgreSQL {major}'s, and pg_waldump {toolset.major} reads only its own major's",
                      f"set postgres.bin_dir to a PostgreSQL {major} installation")
    toolset.path("pg_waldump")
    return toolset
