"""The server settings of a bulk load: what a restore into a cluster pgdr owns runs with, and why it is safe.

A whole restore into the managed cluster (local mode, `pgdr recover`, a drill's scratch cluster) creates that
cluster's contents from a backup that stays where it is: if the machine dies during the load, the restore is done
again, so the load need not be crash-safe, only its end. pgdr.actions.restore therefore restarts the server with
these settings, loads, stops it cleanly, forces every file of the data directory to disk (`initdb --sync-only`,
what PostgreSQL's documentation asks after running with fsync off) and starts it again with the normal settings,
and only then records the restore complete.

What a crash leaves:
- pgdr killed during the load: the server keeps running with these settings, the restore record says incomplete,
  and pgdr.conf carries BULK_LOAD_MARK; `pgdr status` says so, `pgdr up` stops the server (if it runs), syncs it
  and starts it with the normal settings, and `pgdr restore --clean` restores again.
- the server killed during the load: the restore fails (incomplete), pgdr starts it again with the normal
  settings (crash recovery replays what the WAL has; the tables a failed load created are cleaned up with it).
- the machine down during the load: with fsync off the data directory may be damaged; the record says incomplete,
  and the way out is a new cluster (`pgdr clean hard --yes`, `pgdr up`, restore again).
Every start by pgdr (LocalCluster.start) writes pgdr.conf anew without these settings, so the normal settings come
back with the next `pgdr up` whatever happened.

wal_level = minimal (with max_wal_senders = 0) lets the load skip the WAL for relations created in the same
transaction: every index build (CREATE INDEX makes its relation in its own transaction). COPY still writes WAL,
since pg_dump's CREATE TABLE and COPY are separate transactions: loading each database in one transaction would
skip it too, but measured on the bench's biggest database that saved 6% of the server's CPU, against the risk of a
database with many objects running out of lock slots in one transaction (what `pg_restore --single-transaction`
can hit), so pgdr does not. Minimal WAL is used unless WAL is streamed from this cluster (a replication slot or a
WAL sender), since PostgreSQL cannot replay WAL across a stretch written with wal_level = minimal; then wal_level
stays replica and the archive goes on.

Each database of a plain backup's parallel restore is created by its dump's CREATE DATABASE; during a bulk load on
PostgreSQL 15+ it is told STRATEGY = FILE_COPY (pgdr.formats.plain_sections.created_by_file_copy): the new
database's files are copied from template0's instead of written through the WAL (15's default, WAL_LOG, writes the
template's ~7.5 MB again as WAL for every database). FILE_COPY's price, a checkpoint before and after the copy, is
small with fsync off; on a live server with fsync on it would be two synced checkpoints a database, so never there.
"""

from __future__ import annotations

import os

BULK_LOAD_MARK = "# pgdr: bulk load in progress (a restore); `pgdr up` restarts the server with the normal settings"
SUMMARIZE_WAL_MAJOR = 17  # summarize_wal exists from 17 and needs wal_level replica
FILE_COPY_MAJOR = 15  # CREATE DATABASE ... STRATEGY exists from PostgreSQL 15

# Written to disk only at the end (stop, initdb --sync-only); no checkpoint during the load (max_wal_size,
# checkpoint_timeout); autovacuum would vacuum and analyze each table while the next one loads, competing for the
# same cores: it runs after the restart instead.
LOAD_SETTINGS: dict[str, object] = {
    "fsync": False,
    "full_page_writes": False,
    "synchronous_commit": False,
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    "autovacuum": False,
}


def is_bulk_load(is_local: bool, database: str | None) -> bool:
    """A restore runs as a bulk load: into the managed cluster (never an external server), the whole backup (with
    --database the other databases are live)."""
    return is_local and database is None


def creates_by_file_copy(bulk_load: bool, major: int) -> bool:
    """During a bulk load (the restore is told, pgdr.actions.restore.bulk_loading), CREATE DATABASE copies the
    template's files (see the module's docstring)."""
    return bulk_load and major >= FILE_COPY_MAJOR


def bulk_settings(major: int, keep_wal: bool) -> dict[str, object]:
    """The settings a bulk load runs with, on top of the cluster's own (pgdr.conf). keep_wal: WAL is streamed from
    this cluster, so wal_level and the WAL senders stay as they are."""
    settings = dict(LOAD_SETTINGS)
    if not keep_wal:
        settings.update(wal_level="minimal", max_wal_senders=0, archive_mode=False)
        if major >= SUMMARIZE_WAL_MAJOR:
            settings["summarize_wal"] = False
    return settings


def index_build_memory_mb(physical_memory: int, sessions: int) -> int:
    """maintenance_work_mem of each restore session on a server on this machine: a quarter of its memory shared by
    the sessions that may build indexes at once, between 256 MB (what every restore gets) and 1 GB (measured on the
    bench's biggest database: its GIN and btree builds took 5% less server CPU with 1 GB than with 256 MB)."""
    return max(256, min(1024, physical_memory // 4 // max(1, sessions) // 2**20))


def physical_memory() -> int:
    """Bytes of RAM on this machine; 0 where it cannot be read (the floor of index_build_memory_mb applies)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def fsync_is_off(settings: dict[str, str | int | float | bool]) -> bool:
    """The cluster's normal settings (postgres.settings) turn fsync off: a sync after the load adds nothing."""
    return str(settings.get("fsync", "on")).lower() in ("off", "false", "0", "no")


def is_marked(config_text: str) -> bool:
    """pgdr.conf was written for a bulk load: the server may still run with its settings."""
    return BULK_LOAD_MARK in config_text.splitlines()
