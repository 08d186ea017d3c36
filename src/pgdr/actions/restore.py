"""pgdr restore's steps: choose the backup, check it completely and the target's offer before the server is
touched, then restore it in its format and put back what pg_dumpall leaves out.

A whole restore into the managed cluster is a bulk load (pgdr.postgres.bulk_load): the server is restarted with
fsync off and the WAL kept to a minimum, and is stopped, synced to disk and started with its normal settings again
before the restore is recorded complete, also when the load fails. Never on an external server, and never for
--database (the other databases are live).

The order, with the refusal of live data and the --clean sequence between prepare and apply, is
pgdr.runbooks.restore's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pgdr.catalog import BackupRecord, find, latest, list_backups
from pgdr.context import Context
from pgdr.errors import IntegrityError, Interrupted, PgdrError, Refused, RestoreFailed, StageFailed, UsageError
from pgdr.formats.base import BackupFormat
from pgdr.formats.choice import of_key
from pgdr.formats.physical import not_restorable
from pgdr.formats.psql_feed import HINT_RETRY, describe_psql_error
from pgdr.postgres import inventory
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.bulk_load import bulk_settings, fsync_is_off, is_bulk_load
from pgdr.postgres.cluster import wait_until_reachable
from pgdr.postgres.connect import session
from pgdr.postgres.properties import apply_properties
from pgdr.preflight import preflight
from pgdr.state import RestoreRecord, write_restore_record
from pgdr.storage import Storage, open_storage


@dataclass
class PreparedRestore:
    """A backup checked against its manifest (and copied into the backup dir when it lay elsewhere), and a target
    that offers what it needs: what is left is to restore it."""

    record: BackupRecord
    storage: Storage  # where the checked backup is read from
    backup_format: BackupFormat
    toolset: Toolset
    database: str | None  # restore only this database


def select_backup(context: Context, source: str, key: str | None, allow_suspicious: bool = False
                  ) -> tuple[Storage, BackupRecord]:
    """The named backup, or the newest one; a newest backup flagged suspicious (smaller than backup.min_size,
    under half the one before) is refused unless allow_suspicious: `latest` must not quietly mean "the empty dump
    of a broken night". A backup named by key is the user's explicit choice."""
    storage = open_storage(context.settings, source, context.output.warn)
    records = list_backups(storage, context.settings.backup.min_size, include_safety=key is not None)
    if key is not None:
        return storage, find(records, key, storage.describe())
    record = latest(records, storage.describe())
    if record.flags and not allow_suspicious:
        raise Refused(f"the newest backup {record.key} is flagged suspicious: {'; '.join(record.flags)}",
                      "look at it with `pgdr list`; restore it anyway with --allow-suspicious, or an older one "
                      "with `pgdr restore file KEY`")
    if record.flags:
        context.output.warn(f"the newest backup {record.key} is flagged suspicious: {'; '.join(record.flags)} "
                            "(--allow-suspicious)")
    return storage, record


def prepare(context: Context, source: str, key: str | None, database: str | None = None,
            allow_suspicious: bool = False) -> PreparedRestore:
    """Everything that can refuse the restore before the server is touched."""
    storage, record = select_backup(context, source, key, allow_suspicious)
    backup_format = of_key(record.key)
    if not backup_format.logical:
        raise not_restorable(record.key)
    if database is not None and not backup_format.restores_one_database:
        raise UsageError(f"--database needs a split backup; {record.key} is one pg_dumpall script",
                         "restore the whole backup, or set backup.format = \"split\" for future backups")
    toolset, server_major = context.client_tools(backup_format.restore_tools())
    check_versions(record, server_major)
    if record.manifest_error:  # a damaged manifest must not turn a checked backup into an unchecked one
        raise IntegrityError(f"backup {record.key}: {record.manifest_error}",
                             "restore another backup (see `pgdr list`), or remove the damaged manifest knowingly")
    storage = backup_format.check(context, storage, record, toolset)
    preflight(context, storage, record, server_major, database)  # the target offers what the backup needs
    return PreparedRestore(record, storage, backup_format, toolset, database)


def check_versions(record: BackupRecord, server_major: int) -> None:
    manifest = record.manifest
    if manifest is None:
        return
    backup_major = int(manifest.server_version.split(".")[0].split()[-1]) if manifest.server_version else 0
    if backup_major > server_major:
        raise Refused(
            f"backup {record.key} comes from PostgreSQL {backup_major}, newer than this server ({server_major})",
            f"restore into a PostgreSQL {backup_major} server or newer",
        )


def existing_data(context: Context) -> tuple[list[str], list[str]]:
    endpoint = context.superuser_endpoint()
    return (inventory.user_databases(endpoint),
            inventory.user_roles(endpoint, context.settings.postgres.superuser))


def refuse_existing(databases: list[str], roles: list[str], command: str) -> None:
    parts = []
    if databases:
        parts.append(f"databases {', '.join(databases)}")
    if roles:
        parts.append(f"roles {', '.join(roles)}")
    raise Refused(
        f"the server already has {' and '.join(parts)}; refusing to restore over live data",
        f"re-run as `{command} --clean` (takes a safety backup, cleans, then restores)",
    )


def apply(context: Context, prepared: PreparedRestore, existing_roles: set[str], safety_key: str | None) -> None:
    """Restore, recorded as incomplete until it is done; every failure says what the cluster holds now."""
    record, storage, database = prepared.record, prepared.storage, prepared.database
    state_dir = context.settings.state_dir
    context.output.step(f"Restoring {record.key}{f' (database {database})' if database else ''} from "
                        f"{storage.describe()}")
    manifest = record.manifest
    if manifest is not None and database is not None:
        manifest = manifest.model_copy(update={"databases": [item for item in manifest.databases
                                                             if item.name == database]})
    _say_left_out(context, record)
    restore_record = RestoreRecord(key=record.key.key, target=storage.name, status="incomplete", manifest=manifest,
                                   safety_backup=safety_key)
    write_restore_record(state_dir, restore_record)
    hint = HINT_RETRY + (f"; the state from before is in safety backup {safety_key}" if safety_key else "")
    try:
        with bulk_loading(context, database) as bulk:
            prepared.backup_format.restore(context, prepared.toolset, storage, record, database, existing_roles,
                                           bulk_load=bulk)
            _finish(context, record, database, checkpoint=not bulk)
    except StageFailed as failure:
        where = f" in {failure.stage}" if failure.stage != "psql" else ""
        raise RestoreFailed(
            f"restore of {record.key} stopped{where}: {describe_psql_error(failure)}; the cluster holds a partial "
            "restore",
            hint,
        ) from None
    except RestoreFailed as failure:
        if safety_key and safety_key not in failure.hint:
            failure.hint += f"; the state from before is in safety backup {safety_key}"
        raise
    except KeyboardInterrupt:
        raise Interrupted(f"restore of {record.key} interrupted: the cluster holds a partial restore",
                          "restore again over it: `pgdr restore latest --clean` (or `pgdr clean soft --yes` and "
                          "restore again)" + (f"; the state from before is in safety backup {safety_key}"
                                              if safety_key else "")) from None
    write_restore_record(state_dir, restore_record.model_copy(update={"status": "complete"}))
    context.output.success("Database restored successfully")
    context.output.info("Passwords are not in backups: run `pgdr init` to set every user's password.")


def _say_left_out(context: Context, record: BackupRecord) -> None:
    for item in record.manifest.left_out if record.manifest is not None else []:
        context.output.warn(f"backup {record.key} does not hold database {item.name} ({item.reason})")


def _finish(context: Context, record: BackupRecord, database: str | None, checkpoint: bool) -> None:
    """Put back what pg_dumpall leaves out (owner, privileges, comment and settings of postgres and template1),
    then make the restore durable: its sessions commit without waiting for the WAL flush (LOAD_SESSION_OPTIONS),
    so a checkpoint comes before the restore is recorded complete (a bulk load's clean stop is that checkpoint)."""
    endpoint = context.superuser_endpoint()
    for warning in apply_properties(endpoint, record.manifest, only=database):
        context.output.warn(warning)
    if checkpoint:
        with session(endpoint) as connection:
            connection.execute("CHECKPOINT")


@contextmanager
def bulk_loading(context: Context, database: str | None) -> Iterator[bool]:
    """The load inside runs with a bulk load's settings when the target is the managed cluster and the whole backup
    is restored (yields True); afterwards, also after a failure, the server is stopped cleanly, synced to disk and
    started with its normal settings. Yields False, touching nothing, elsewhere."""
    if not is_bulk_load(context.is_local, database):
        yield False
        return
    settings = bulk_settings(context.server_version()[0], keep_wal=wal_streamed(context))
    cluster = context.cluster
    kept = "wal_level kept for the WAL stream" if "wal_level" not in settings else "wal_level minimal"
    context.output.info(f"   bulk load: the server restarts with fsync and full_page_writes off, {kept}; it is synced "
                        "to disk and restarted with its normal settings before the restore counts as complete")
    cluster.stop()
    try:
        cluster.start(extra_settings=settings, bulk_load=True)
        wait_until_reachable(context.superuser_endpoint(), timeout=60)
        yield True
    except BaseException:
        _normal_settings_after_failure(context)
        raise
    _normal_settings(context)


def wal_streamed(context: Context) -> bool:
    """WAL leaves this cluster (a replication slot, a WAL sender) or the settings archive it: the load must keep
    wal_level (WAL written with wal_level minimal cannot be replayed, and a slot stops such a server starting)."""
    if str(context.settings.postgres.settings.get("archive_mode", "off")).lower() in ("on", "always", "true"):
        return True
    with session(context.superuser_endpoint()) as connection:
        row = connection.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_replication_slots) "
                                 "OR EXISTS (SELECT FROM pg_catalog.pg_stat_replication)").fetchone()
    return bool(row and row[0])


def _normal_settings(context: Context) -> None:
    """A clean stop (the checkpoint), every file forced to disk (fsync was off), then the normal settings."""
    cluster = context.cluster
    cluster.stop()
    if not fsync_is_off(context.settings.postgres.settings):
        cluster.sync_to_disk()
    cluster.start()
    wait_until_reachable(context.superuser_endpoint(), timeout=60)


def _normal_settings_after_failure(context: Context) -> None:
    """As _normal_settings, once the load failed: that failure is the one reported, a second one is said."""
    try:
        _normal_settings(context)
    except (PgdrError, OSError) as error:
        detail = error.message if isinstance(error, PgdrError) else str(error)
        context.output.warn(f"the server could not be restarted with its normal settings: {detail}; `pgdr up` does it")
