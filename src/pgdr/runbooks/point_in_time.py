"""pgdr recover --to / --to-lsn / --to-xid / --to-name (and with backup.format = "physical", plain `pgdr recover`):
a base backup plus the WAL archive, replayed by PostgreSQL to the moment asked for.

In order, and what each step leaves behind if it fails:
1. read the target's storage: the newest physical base backup that ends before the target (an incremental only
   with its whole chain, pgdr.formats.incremental), the WAL archive's listing and its timeline histories; with
   no target (all the WAL there is), a gap in the archive is refused here, before anything is touched;
2. check the base backup (each of its chain) against its manifest (every byte, through the codec stack);
3. stop the managed cluster and move its data directory aside (`<data_dir>.before-recover-<time>`), never
   deleting it: from here on, a failure puts it back;
4. extract the base backup into an empty data directory (pgdr.formats.physical: hostile archives refused; a
   chain each apart, then pg_combinebackup), and start the server in archive recovery: its restore_command asks
   pgdr.wal.fetch, which serves segments read ahead and stops the server at a gap or a corrupt segment rather
   than let it open early;
5. watch the replay until the server promotes (the target reached) or stops: "recovery ended before configured
   recovery target was reached" becomes an error naming the last transaction the archive holds;
6. with no target, check the server replayed up to the newest archived segment;
7. drop the recovery settings, and delete the data directory set aside.
Then secrets, init and verify run as after a logical restore (pgdr.runbooks.recover).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from pgdr.artifact import Manifest
from pgdr.catalog import BackupRecord, chain_of, complete_chains, list_backups
from pgdr.context import Context
from pgdr.errors import ClusterError, IntegrityError, PgdrError, Refused, RestoreFailed, StorageError
from pgdr.formats.choice import of_key
from pgdr.formats.codecs import age_identity
from pgdr.formats.physical import extract_chain
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.cluster import LocalCluster
from pgdr.postgres.connect import connect
from pgdr.preflight import major_of
from pgdr.state import RestoreRecord, write_restore_record
from pgdr.storage import Storage, open_storage
from pgdr.wal.archive import (
    WAL_PREFIX,
    ArchiveListing,
    Segment,
    TimelineSwitch,
    first_missing,
    mark_key,
    needed_segments,
    parse_lsn,
    timeline_path,
)
from pgdr.wal.fetch import HINT_GAP, WalFetcher
from pgdr.wal.reading import read_histories
from pgdr.wal.recovery import (
    RecoveryTarget,
    choose_base_backup,
    last_transaction_time,
    recovery_settings,
    restore_command,
    target_not_reached,
)

WATCH_SECONDS = 0.2
PROGRESS_SECONDS = 10.0


@dataclass
class Plan:
    """What a recovery reads: the base backup, and the WAL segments after it along the timeline path."""

    record: BackupRecord
    manifest: Manifest
    listing: ArchiveListing
    segments: list[Segment]
    target: RecoveryTarget
    chain: list[BackupRecord]  # the base backups extracted: the full one first, `record` last

    @property
    def newest(self) -> Segment | None:
        return self.segments[-1] if self.segments else None


def plan_recovery(context: Context, storage: Storage, target: RecoveryTarget) -> Plan:
    """Step 1: everything that can refuse the recovery, read before the server is touched."""
    records = [record for record in list_backups(storage, 0) if record.key.format == "physical"]
    manifests = {record.manifest.key: record for record in complete_chains(records) if record.manifest is not None}
    if target.kind == "name":
        target = with_mark_lsn(storage, target)
    listing = ArchiveListing.of(storage.list(WAL_PREFIX))
    histories = read_histories(context, storage, listing)
    stored_timelines = [Segment.from_name(name).timeline for name in [*listing.segments, *listing.partials]]
    timeline = target.timeline or max([1, *histories, *stored_timelines])
    path = timeline_path(timeline, histories)
    manifest = choose_base_backup([record.manifest for record in manifests.values()  # type: ignore[misc]
                                   if on_path(record.manifest, path)], target)
    if manifest is None:
        raise Refused(no_base_backup_message(records, target, storage),
                      "take one with `PGDR_BACKUP__FORMAT=physical pgdr backup` (future points only), or pick a "
                      "later target")
    facts = manifest.physical
    assert facts is not None
    ends = [Segment.from_name(name) for name in [*listing.segments, *listing.partials]
            if Segment.from_name(name).timeline == timeline]
    end = max(ends) if ends else Segment.of_lsn(parse_lsn(facts.stop_lsn), facts.timeline)
    segments = needed_segments(parse_lsn(facts.start_lsn), facts.timeline, path, end)
    record = manifests[manifest.key]
    chain = chain_of(record, {record.key.key: record for record in records})
    assert chain is not None  # complete_chains kept only those
    plan = Plan(record, manifest, listing, segments, target, chain)
    if target.kind == "end":
        refuse_gap(plan, storage)
    return plan


def on_path(manifest: Manifest | None, path: list[TimelineSwitch]) -> bool:
    """Whether recovery along `path` can start from this base backup: taken on one of its timelines, and ended
    before that timeline branched off."""
    if manifest is None or manifest.physical is None:
        return False
    return any(step.timeline == manifest.physical.timeline and parse_lsn(manifest.physical.stop_lsn) <= step.switch_lsn
               for step in path)


def with_mark_lsn(storage: Storage, target: RecoveryTarget) -> RecoveryTarget:
    """A restore point made by `pgdr wal mark` is recorded with its LSN, which picks the base backup."""
    try:
        key = mark_key(target.value)
    except ValueError:
        return target  # a name `pgdr wal mark` refuses (so it made none), never a path into the storage
    data = storage.get_bytes(key)
    if data is None:
        return target  # made another way (pg_create_restore_point): the newest base backup is tried
    return RecoveryTarget("name", target.value, lsn=parse_lsn(str(json.loads(data)["lsn"])))


def no_base_backup_message(records: list[BackupRecord], target: RecoveryTarget, storage: Storage) -> str:
    usable = [record.manifest.physical for record in records
              if record.manifest is not None and record.manifest.physical is not None]
    if not usable:
        return f"no physical base backup in {storage.describe()}: point-in-time recovery starts from one"
    broken = [record for record in records if record not in complete_chains(records)]
    if broken:
        return (f"no base backup ends before {target.describe()} with its whole chain in {storage.describe()}: "
                f"{broken[-1].key} is an incremental of a base backup that is gone")
    oldest = min(facts.stop_time for facts in usable)
    return (f"no base backup ends before {target.describe()}: the oldest in {storage.describe()} is consistent from "
            f"{oldest.isoformat(sep=' ')}")


def refuse_gap(plan: Plan, storage: Storage) -> None:
    """All the WAL there is must be all the WAL there was: a gap would silently end the recovery before it."""
    missing = first_missing(plan.segments[:-1], plan.listing)  # the newest may be a partial
    newest = plan.newest
    if newest is not None and newest.name not in plan.listing.segments and newest.name not in plan.listing.partials:
        missing = missing or newest
    if missing is not None:
        before = plan.segments[plan.segments.index(missing) - 1] if plan.segments.index(missing) else None
        reachable = ""
        if before is not None and before.name in plan.listing.segments:
            stored_at = plan.listing.modified[plan.listing.segments[before.name].key]
            reachable = f"; the WAL before it ends by {stored_at.isoformat(sep=' ', timespec='seconds')}"
        raise IntegrityError(f"WAL segment {missing.name} is missing from the archive in {storage.describe()} "
                             f"(a gap){reachable}", HINT_GAP + "; --to a time before the gap recovers up to it")


def recover_to_point(context: Context, source: str, target: RecoveryTarget, clean: bool) -> str:
    """Steps 1 to 7 into the managed cluster; returns a description of what was restored (for the report)."""
    if not context.is_local:
        raise Refused("point-in-time recovery restores a data directory, and in external mode pgdr does not "
                      "manage the server's",
                      "run `pgdr drill --to ...` to recover into a scratch cluster here, or use postgres.mode = "
                      "\"local\" on the recovery machine")
    cluster = context.cluster
    if cluster.exists() and not clean:
        raise Refused(f"the managed cluster in {cluster.data_dir} holds data, and point-in-time recovery replaces "
                      "it", "add --clean: the data directory is moved aside and kept until the recovery succeeded")
    storage = open_storage(context.settings, source, context.output.warn)
    plan = plan_recovery(context, storage, target)
    facts = plan.manifest.physical
    assert facts is not None
    chained = f", an incremental on {len(plan.chain) - 1} more" if len(plan.chain) > 1 else ""
    context.output.step(f"Recovering to {plan.target.describe()} from base backup {plan.record.key}{chained} "
                        f"({len(plan.segments)} WAL segments at most, from {source})")
    toolset = installation_for(cluster, plan)
    checked = [(of_key(link.key).check(context, storage, link, toolset), link) for link in plan.chain]
    with data_directory_set_aside(cluster, context) as aside:
        extract_chain(context, toolset, checked, cluster.data_dir, cluster.run_as)
        replay(context, cluster, storage, plan)
    if aside is not None:
        context.output.info(f"   removed the data directory set aside ({aside})")
    if not context.scratch:  # advice for the live cluster, not for a drill's or an undo's
        with connect(context.superuser_endpoint()) as connection:
            row = connection.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        timeline = int(str(row[0])[:8], 16) if row else "?"
        context.output.info(f"   the cluster goes on on a new timeline ({timeline}): `pgdr wal stream` "
                            "archives it beside the old one; take a base backup on it soon (`pgdr backup`)")
    description = f"{plan.record.key} + WAL to {plan.target.describe()}"
    write_restore_record(context.settings.state_dir, RestoreRecord(key=str(plan.record.key), target=source,
                                                                   status="complete"))
    return description


def installation_for(cluster: LocalCluster, plan: Plan) -> Toolset:
    """The managed cluster's binaries, which must be the base backup's major: a data directory runs only on the
    major that wrote it (no server needs to run: the live one may be gone)."""
    toolset = cluster.tools()
    major = major_of(plan.manifest.server_version)
    if major and toolset.major != major:
        raise Refused(f"base backup {plan.record.key} is a PostgreSQL {major} data directory, and the managed "
                      f"cluster's binaries are PostgreSQL {toolset.major}",
                      f"set postgres.bin_dir to a PostgreSQL {major} installation for the recovery; upgrade after it "
                      "(docs/UPGRADE.md)")
    if len(plan.chain) > 1:
        toolset.path("pg_combinebackup")  # PostgreSQL 17+: missing, refused before anything is touched
    return toolset


@contextmanager
def data_directory_set_aside(cluster: LocalCluster, context: Context) -> Iterator[Path | None]:
    """Step 3 and its undo: the current data directory moves aside; on failure the new one is removed and the old
    one put back (and started again if it ran); on success the old one is deleted. Yields where it was put (None:
    there was none)."""
    aside: Path | None = None
    was_running = cluster.is_running()
    if cluster.data_dir.exists():
        cluster.stop()
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        aside = cluster.data_dir.with_name(f"{cluster.data_dir.name}.before-recover-{stamp}")
        cluster.data_dir.rename(aside)
        context.output.info(f"   the data directory is set aside in {aside} until the recovery succeeded")
    try:
        yield aside
    except BaseException:
        cluster.stop_immediately()
        if cluster.data_dir.exists():
            shutil.rmtree(cluster.data_dir, ignore_errors=True)
        if aside is not None:
            aside.rename(cluster.data_dir)
            context.output.warn(f"the recovery failed: the previous data directory is back in {cluster.data_dir}")
            if was_running:
                start_again(cluster, context)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def start_again(cluster: LocalCluster, context: Context) -> None:
    try:
        cluster.start()
    except PgdrError as error:  # the recovery's own error is the one to report
        context.output.warn(f"the previous cluster did not start again: {error.message} (`pgdr up`)")


def replay(context: Context, cluster: LocalCluster, storage: Storage, plan: Plan) -> None:
    """Steps 4 to 6: start in archive recovery, serve the WAL, watch until the server promotes."""
    fetch_dir = context.settings.state_dir / "wal-fetch"
    shutil.rmtree(fetch_dir, ignore_errors=True)
    identity = first_identity(context, plan)
    fetcher = WalFetcher(storage, plan.listing, plan.segments, fetch_dir, cluster.run_as, identity,
                         context.settings.wal.read_ahead,
                         on_failure=lambda error: cluster.stop_immediately(),
                         stops_at_target=plan.target.kind != "end")
    signal_file = cluster.data_dir / "recovery.signal"
    signal_file.touch()
    if cluster.run_as is not None:
        os.chown(signal_file, cluster.run_as.uid, cluster.run_as.gid)
    log_start = cluster.log_file.stat().st_size if cluster.log_file.exists() else 0
    settings = recovery_settings(plan.target, restore_command(fetch_dir, os.getpid()))
    context.output.step(f"Replaying the WAL to {plan.target.describe()} ({len(plan.segments)} segments at most, read "
                        f"ahead from {storage.describe()})")
    fetcher.start()
    try:
        cluster.start(wait=False, extra_settings=settings)
        watch(context, cluster, fetcher, log_start)
        if plan.target.kind == "end":
            check_reached_end(fetcher, plan, storage)
    finally:
        fetcher.stop()
        shutil.rmtree(fetch_dir, ignore_errors=True)
    cluster.write_server_settings()  # the recovery's settings go; restore_command stays out of the live config
    with connect(context.superuser_endpoint()) as connection:
        connection.execute("SELECT pg_reload_conf()")


def first_identity(context: Context, plan: Plan) -> object | None:
    """The age identity, when the archive is encrypted (looked up once, before the server starts)."""
    for stored in [*plan.listing.segments.values(), *plan.listing.partials.values()]:
        if stored.codec.encrypted:
            return age_identity(context, stored.codec, f"WAL {stored.key}")
    return None


def watch(context: Context, cluster: LocalCluster, fetcher: WalFetcher, log_start: int) -> None:
    """Until the server is out of recovery; a stop of the server, or a fetch failure, is the error it says."""
    started = time.monotonic()
    last_progress = started
    launched = False
    while True:
        if fetcher.failure is not None:
            raise fetcher.failure
        pid = cluster.postmaster_pid()
        if pid is None:
            if launched or time.monotonic() - started > 30:
                raise stopped_error(cluster, log_start, fetcher.gap)
        else:
            launched = True
            state = recovery_state(context)
            if state is not None and not state[0]:
                return
            if state is not None and time.monotonic() - last_progress > PROGRESS_SECONDS:
                context.output.info(f"   replayed up to {state[1]} ({state[2] or 'no transaction yet'})")
                last_progress = time.monotonic()
        time.sleep(WATCH_SECONDS)


def recovery_state(context: Context) -> tuple[bool, str, str] | None:
    """(in recovery, replayed LSN, last replayed transaction time), None while the server accepts no session."""
    try:
        with connect(context.superuser_endpoint()) as connection:
            row = connection.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                                     "pg_last_xact_replay_timestamp()::text").fetchone()
    except (PgdrError, psycopg.Error):
        return None
    assert row is not None
    return bool(row[0]), str(row[1] or ""), str(row[2] or "")


def stopped_error(cluster: LocalCluster, log_start: int, gap: PgdrError | None = None) -> PgdrError:
    """Why the server stopped, from its log. Short of its target behind a gap PostgreSQL's read-ahead asked for
    (pgdr.wal.fetch), the gap is the cause; any other stop is reported as the log says."""
    log_text = read_log_since(cluster, log_start)
    last = last_transaction_time(log_text)
    if target_not_reached(log_text):
        if gap is not None:
            return gap
        return RestoreFailed(
            "the recovery target is past the end of the archived WAL: "
            + (f"the last transaction it holds committed at {last}" if last else "it holds no transaction after "
               "the base backup"),
            "recover to a time up to that one (`pgdr list` shows the window); nothing was changed")
    tail = " | ".join(log_text.strip().splitlines()[-3:])
    return ClusterError(f"the server stopped during recovery: {tail or 'see its log'}",
                        f"see {cluster.log_file}; nothing was changed")


def read_log_since(cluster: LocalCluster, offset: int) -> str:
    try:
        with open(cluster.log_file, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def check_reached_end(fetcher: WalFetcher, plan: Plan, storage: Storage) -> None:
    """With no target the server promotes where the WAL it could read ends; that must be the archive's end, not an
    unreadable segment before it."""
    newest, served = plan.newest, fetcher.newest_served
    if newest is not None and (served is None or served.number < newest.number):
        stopped = served.name if served is not None else "the base backup"
        raise StorageError(f"the recovery stopped after {stopped}, before the archive's newest segment "
                           f"{newest.name} in {storage.describe()}: the WAL after it is unreadable",
                           HINT_GAP)
