"""What every backup format offers the actions, so they never ask which format a backup is.

A format is chosen once (pgdr.formats.choice): from the settings for a new backup, from the key for an existing
one. Barman's BackupManager picking one BackupExecutor, and borgmatic's one module per data source, are the
models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from pgdr.artifact import BackupFacts, BackupKey, Manifest, Requirements
from pgdr.catalog import BackupRecord
from pgdr.context import Context
from pgdr.postgres.binaries import Toolset
from pgdr.storage import Storage, same_place
from pgdr.storage.local import LocalStorage


class BackupFormat(Protocol):
    name: str
    restores_one_database: bool  # restore --database works
    logical: bool  # `pgdr restore` replays it into a running server; False: `pgdr recover` makes a data directory of it

    def backup_tools(self) -> tuple[str, ...]:
        """The client tools a backup runs."""

    def restore_tools(self) -> tuple[str, ...]:
        """The client tools a restore runs."""

    def new_key(self, context: Context, created: datetime, safety: bool) -> BackupKey:
        """The key of a new backup taken at `created`, with the codecs the settings ask for."""

    def write(self, context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey,
              facts: BackupFacts) -> Manifest:
        """Write the backup to every storage (all or nothing) and return its manifest; the caller stores the
        manifest, last."""

    def check(self, context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
        """Read the backup completely against its manifest before the server is touched; a backup outside the
        backup dir is copied into it on the way. Returns the storage the restore reads from."""

    def needs(self, context: Context, storage: Storage, record: BackupRecord) -> Requirements:
        """What the target must offer, for a backup whose manifest does not record it (read from the backup)."""

    def restore(self, context: Context, toolset: Toolset, storage: Storage, record: BackupRecord,
                database: str | None, existing_roles: set[str], bulk_load: bool) -> None:
        """Restore the whole backup, or one database of it, into the server. bulk_load: the server runs with a
        bulk load's settings (pgdr.postgres.bulk_load), which a format may rely on for how it loads."""

    def objects(self, storage: Storage, key: BackupKey) -> list[str]:
        """The stored objects of one backup, in the order prune deletes them."""


def working_copy(context: Context, storage: Storage) -> LocalStorage | None:
    """The backup dir, where a backup read from elsewhere is copied before a restore; None when `storage` is it."""
    local = LocalStorage(context.settings.backup.dir)
    return None if same_place(storage, local) else local
