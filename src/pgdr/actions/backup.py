"""pgdr backup: one backup, in the format the settings choose, to every target; the manifest is written last.

The format (pgdr.formats) writes the backup's objects, each to a temporary name in every target, committed only
when complete and checked; this action gathers what every manifest says, has the format write, then stores the
manifest beside the backup in every target: no manifest, not a finished backup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pgdr import __version__
from pgdr.artifact import BackupFacts, BackupKey, LeftOut, Manifest
from pgdr.context import Context
from pgdr.errors import BackupFailed, StageFailed
from pgdr.formats.base import BackupFormat
from pgdr.formats.choice import for_new_backup
from pgdr.locking import locked
from pgdr.postgres.binaries import version_of
from pgdr.postgres.connect import session
from pgdr.postgres.properties import read_properties
from pgdr.postgres.requirements import requirements_of_cluster
from pgdr.storage import Storage, open_storage
from pgdr.ui import human_size


@dataclass
class BackupResult:
    key: BackupKey
    manifest: Manifest
    targets: list[str]


@locked("backup")
def backup(context: Context, targets: list[str] | None = None, safety: bool = False) -> BackupResult:
    """safety: the backup restore --clean takes of what it is about to drop (always one plain file, local)."""
    storages = [open_storage(context.settings, target, context.output.warn)
                for target in (targets or context.settings.backup.targets)]
    backup_format = for_new_backup(context.settings, safety)
    toolset, _ = context.client_tools(backup_format.backup_tools())
    started, key = _fresh_key(context, backup_format, storages, safety)
    where = ", ".join(storage.describe() for storage in storages)
    context.output.step(f"Backing up to {key.key} ({where})")
    facts = _facts(context, key, started, version_of(toolset.path(backup_format.backup_tools()[0]))[1])
    try:
        manifest = backup_format.write(context, toolset, storages, key, facts)
    except StageFailed as failure:
        raise BackupFailed(f"backup failed at stage {failure.stage}: {failure.detail}", failure.hint) from None
    for storage in storages:
        storage.put_bytes(key.manifest_key, manifest.to_json())
    counted = f", {len(manifest.databases)} databases" if manifest.databases else ""
    context.output.success(f"Backup {key.key} written ({human_size(manifest.size)}{counted}) to {where}")
    return BackupResult(key, manifest, [storage.name for storage in storages])


def _facts(context: Context, key: BackupKey, started: datetime, pg_dumpall_version: str) -> BackupFacts:
    """What the manifest says whatever the format: read before the dump starts, over one session on `postgres`
    (plus one per other database, side by side, for its extensions); the server version is the one the client
    tools were checked against."""
    _, server_version = context.server_version()
    endpoint = context.superuser_endpoint()
    with session(endpoint) as connection:
        properties, left_out = read_properties(connection)
        requirements = requirements_of_cluster(endpoint, connection)
    _warn_left_out(context, left_out)
    return BackupFacts(key=key.key, compression=key.compression, server_version=server_version,
                       pg_dumpall_version=pg_dumpall_version, pgdr_version=__version__, started_at=started,
                       encryption=context.settings.backup.encryption,
                       database_properties=properties, left_out=left_out, requirements=requirements)


def _warn_left_out(context: Context, left_out: list[LeftOut]) -> None:
    """pg_dumpall does not write postgres's and template1's comments and settings (recorded in the manifest, put
    back after a restore) nor the databases refusing connections: those are named now and in the manifest."""
    for item in left_out:
        context.output.warn(f"database {item.name} is left out of the backup ({item.reason}); to back it up, "
                            f"`ALTER DATABASE {item.name} WITH ALLOW_CONNECTIONS true` before the backup")


def _fresh_key(context: Context, backup_format: BackupFormat, storages: list[Storage], safety: bool
               ) -> tuple[datetime, BackupKey]:
    """A key no target holds yet: keys have one-second resolution, so a second backup within the same second
    waits for the next one instead of replacing the first."""
    while True:
        started = datetime.now(UTC)
        key = backup_format.new_key(context, started, safety)
        if not any(storage.exists(key.manifest_key) or storage.exists(key.key) for storage in storages):
            return started, key
        time.sleep(1.05 - started.microsecond / 1_000_000)
