"""The physical format: a `pg_basebackup` tar of the whole data directory, for point-in-time recovery with the WAL
archive `pgdr wal stream` keeps (docs/PITR.md).

Backup: `pg_basebackup --format=tar --pgdata=- --wal-method=fetch` streams one tar through the same encoder and
fan-out as a plain dump (compressed, encrypted, all targets or none). While it passes, the tar is followed member
by member (pgdr.formats.base_backup_tar) for backup_label (the start LSN and timeline) and the end of
backup_manifest (the stop LSN); the server's clock before and after bounds the backup's times. A stream without
them is refused before anything is committed. A copy of backup_manifest is kept beside the backup, for the next
one to be an incremental of it (backup.incremental, PostgreSQL 17+: pgdr.formats.incremental).

Check: as a plain backup (size and sha256 against the manifest; decryption proves the identity works).
Restore: never by `pgdr restore`, which replays SQL into a running server: a base backup becomes a data directory
by `pgdr recover` (pgdr.runbooks.point_in_time), through extract_chain.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pgdr.artifact import (
    BackupFacts,
    BackupKey,
    Manifest,
    PhysicalFacts,
    Requirements,
    make_physical_key,
)
from pgdr.catalog import BackupRecord
from pgdr.context import Context
from pgdr.errors import BackupFailed, ExitCode, IntegrityError, Refused
from pgdr.formats.base_backup_tar import (
    HINT_HOSTILE,
    LABEL,
    MANIFEST,
    TarScanner,
    extract,
    label_fields,
    manifest_end_lsn,
)
from pgdr.formats.codecs import age_identity, backup_codec
from pgdr.formats.incremental import combine, incremental_base, manifest_copy_key, store_manifest_copy
from pgdr.formats.plain import check_or_fetch, codec_of, stream_to_targets
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import connect
from pgdr.postgres.relations import relation_names
from pgdr.run import RunAs, child_environment, run
from pgdr.storage import Storage
from pgdr.streams.decoder import decoded
from pgdr.streams.encoder import Encoder

HINT_BASEBACKUP = ("check the server's log, that the superuser may open replication connections (pg_hba.conf), and "
                   "that the cluster has no tablespace besides pg_default (one tar goes to pgdr)")


def basebackup_argv(pg_basebackup: str, label: str, incremental_of: Path | None = None) -> list[str]:
    """One tar on stdout, the WAL the backup needs inside it (fetch: restorable without the archive up to its
    stop), a checkpoint now rather than at the next scheduled one; with `incremental_of` (an earlier base
    backup's backup_manifest) only the blocks changed since (pgdr.formats.incremental)."""
    return [pg_basebackup, "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast", "--no-password",
            f"--label={label}", *([f"--incremental={incremental_of}"] if incremental_of is not None else [])]


class PhysicalFormat:
    name = "physical"
    restores_one_database = False
    logical = False

    def backup_tools(self) -> tuple[str, ...]:
        return ("pg_basebackup",)

    def restore_tools(self) -> tuple[str, ...]:
        return ("pg_verifybackup",)

    def new_key(self, context: Context, created: datetime, safety: bool) -> BackupKey:
        codec = backup_codec(context)
        return make_physical_key(created, codec.compression, codec.encrypted)

    def write(self, context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey,
              facts: BackupFacts) -> Manifest:
        clock = time.monotonic()
        names = relation_names(context.superuser_endpoint(), context.output.warn,
                               "`pgdr wal timeline` will name tables dropped after this backup by their file number")
        with tempfile.TemporaryDirectory(prefix="pgdr-base-backup-") as scratch:
            parent = incremental_base(context, storages, Path(scratch)) if context.settings.backup.incremental \
                else None
            copy, digest = Path(scratch) / MANIFEST, hashlib.sha256()
            with copy.open("xb") as sink:

                def keep(data: bytes) -> None:
                    sink.write(data)
                    digest.update(data)

                encoder, raw_size, physical = _stream_base_backup(
                    context, toolset.path("pg_basebackup"), storages, key, parent[1] if parent else None, keep)
            store_manifest_copy(context, storages, key, copy)
        physical.relations = names
        physical.incremental_of = parent[0].key.key if parent is not None else None
        physical.backup_manifest_sha256 = digest.hexdigest()
        return Manifest(**dict(facts), format=self.name, size=encoder.size, sha256=encoder.sha256,
                        uncompressed_size=raw_size, finished_at=datetime.now(UTC),
                        seconds={"base_backup": round(time.monotonic() - clock, 3)}, physical=physical)

    def check(self, context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
        return check_or_fetch(context, storage, record)

    def needs(self, context: Context, storage: Storage, record: BackupRecord) -> Requirements:
        """A data directory brings its extensions' catalog entries; the files they need are the binaries'."""
        return Requirements()

    def restore(self, context: Context, toolset: Toolset, storage: Storage, record: BackupRecord,
                database: str | None, existing_roles: set[str], bulk_load: bool) -> None:
        raise not_restorable(record.key)

    def objects(self, storage: Storage, key: BackupKey) -> list[str]:
        return [key.key, manifest_copy_key(key), key.manifest_key]


def not_restorable(key: BackupKey) -> Refused:
    """`pgdr restore` of a base backup: refused before anything is touched (pgdr.actions.restore.prepare)."""
    return Refused(f"{key} is a physical base backup: it becomes a data directory with its WAL, not SQL replayed "
                   "into a running server",
                   "run `pgdr recover --clean` (all the WAL there is) or `pgdr recover --to TIME --clean`; "
                   "`pgdr drill` rehearses it")


def _stream_base_backup(context: Context, pg_basebackup: str, storages: list[Storage], key: BackupKey,
                        incremental_of: Path | None, manifest_sink: Callable[[bytes], object]
                        ) -> tuple[Encoder, int, PhysicalFacts]:
    """pg_basebackup into every target, followed by the tar scanner; committed only when pg_basebackup exited 0
    and the tar told where the backup sits in the WAL."""
    scanner, found = TarScanner(manifest_sink), []
    started, system_identifier = _server_clock(context)

    def before_commit() -> None:
        stopped, _ = _server_clock(context)
        found.append(physical_facts(scanner, started, stopped, system_identifier))

    encoder, raw_size = stream_to_targets(
        context, storages, key, basebackup_argv(pg_basebackup, f"pgdr {key.key}", incremental_of), "pg_basebackup",
        HINT_BASEBACKUP,
        lambda environment: {**environment, "LC_MESSAGES": "C"}, scanner.feed, before_commit,
        "Copying the data directory")
    return encoder, raw_size, found[0]


def _server_clock(context: Context) -> tuple[datetime, str]:
    """The server's time and its system identifier: the base backup's times are the server's, like the WAL's."""
    with connect(context.superuser_endpoint()) as connection:
        row = connection.execute("SELECT clock_timestamp(), system_identifier::text FROM pg_control_system()")\
            .fetchone()
    assert row is not None
    return row[0], row[1]


def physical_facts(scanner: TarScanner, started: datetime, stopped: datetime, system_identifier: str
                   ) -> PhysicalFacts:
    """Where the backup sits in the WAL, from its own backup_label and backup_manifest; BackupFailed if the tar
    did not end or lacks them (then nothing is committed). `stopped` is read after pg_basebackup ended: no earlier
    than the real stop, so a recovery never starts from a backup that is not yet consistent at its target."""
    fields = label_fields(bytes(scanner.label))
    stop_lsn = manifest_end_lsn(bytes(scanner.manifest_tail))
    missing = [name for name, found in (("the tar's end-of-archive block", scanner.ended),
                                        (LABEL, "START WAL LOCATION" in fields and "START TIMELINE" in fields),
                                        (f"{MANIFEST}'s WAL range", stop_lsn is not None)) if not found]
    if missing:
        raise BackupFailed(f"backup failed at stage pg_basebackup: its output lacks {', '.join(missing)}",
                           "PostgreSQL 13 or newer writes a backup manifest; check postgres.bin_dir points at a real "
                           "pg_basebackup, then run `pgdr backup` again")
    return PhysicalFacts(timeline=int(fields["START TIMELINE"]), start_lsn=fields["START WAL LOCATION"].split()[0],
                         stop_lsn=str(stop_lsn), start_time=started, stop_time=stopped,
                         system_identifier=system_identifier, wal_included=True)


def extract_chain(context: Context, toolset: Toolset, chain: list[tuple[Storage, BackupRecord]], data_dir: Path,
                  run_as: RunAs | None) -> None:
    """The newest base backup of `chain` (full first, each with the storage it is read from) as `data_dir`: a full
    one extracted directly; an incremental's chain each extracted and verified apart, then combined
    (pgdr.formats.incremental). Any failure leaves `data_dir` as it was."""
    if len(chain) == 1:
        storage, record = chain[0]
        extract_base_backup(context, toolset, storage, record, data_dir, run_as)
        return
    parts_root = data_dir.with_name(f".{data_dir.name}.chain")
    shutil.rmtree(parts_root, ignore_errors=True)
    parts_root.mkdir(mode=0o700, parents=True)
    if run_as is not None:  # pg_combinebackup runs as the server's OS user, and reads the parts
        os.chown(parts_root, run_as.uid, run_as.gid)
    try:
        parts = []
        for number, (storage, record) in enumerate(chain):
            parts.append(parts_root / str(number))
            extract_base_backup(context, toolset, storage, record, parts[-1], run_as, keep_manifest=True)
        context.output.step(f"Combining the {len(chain)} base backups of the chain (pg_combinebackup)")
        with staged(data_dir, run_as) as staging:
            combine(toolset, parts, staging, run_as)
    finally:
        shutil.rmtree(parts_root, ignore_errors=True)


def extract_base_backup(context: Context, toolset: Toolset, storage: Storage, record: BackupRecord, data_dir: Path,
                        run_as: RunAs | None, keep_manifest: bool = False) -> None:
    """The base backup as `data_dir`, which must not exist or be empty: extracted into a hidden sibling folder
    (hostile members refused), checked by pg_verifybackup against its own backup_manifest (kept only for
    pg_combinebackup), then renamed into place. Any failure removes the sibling and leaves `data_dir` as it was."""
    with staged(data_dir, run_as) as staging:
        _extract_into(context, storage, record, staging, run_as)
        _verify(context, toolset, staging, keep_manifest)


@contextmanager
def staged(data_dir: Path, run_as: RunAs | None) -> Iterator[Path]:
    """A hidden empty sibling of `data_dir` (0700, the server's OS user's), renamed to `data_dir` when the block
    succeeds, removed when it fails. `data_dir` must not exist or be empty."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise Refused(f"{data_dir} is not empty: a base backup is extracted only into an empty data directory",
                      "run the recovery with --clean (the data directory is set aside first)")
    staging = data_dir.with_name(f".{data_dir.name}.extracting")
    shutil.rmtree(staging, ignore_errors=True)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir(mode=0o700)
    if run_as is not None:
        os.chown(staging, run_as.uid, run_as.gid)
    try:
        yield staging
        if data_dir.exists():
            data_dir.rmdir()
        staging.rename(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _extract_into(context: Context, storage: Storage, record: BackupRecord, staging: Path,
                  run_as: RunAs | None) -> None:
    codec = codec_of(record.key)
    identity = age_identity(context, codec, f"backup {record.key}")
    context.output.step(f"Extracting {record.key} into a new data directory")
    with storage.open_download(record.key.key) as handle, \
            context.output.progress("Extracting", record.size) as bar, \
            decoded(handle, codec, identity, f"backup {record.key}", lambda chunk: bar.advance(len(chunk))) as chunks:
        files = extract(chunks, staging, run_as, f"backup {record.key}")
    context.output.info(f"   {files} files extracted")


def _verify(context: Context, toolset: Toolset, folder: Path, keep_manifest: bool) -> None:
    """pg_verifybackup: every file against the backup's own manifest, and the WAL it holds parses up to the stop.
    The manifest then goes (unless pg_combinebackup still reads it): it describes the backup, not the cluster that
    grows from it."""
    manifest = folder / MANIFEST
    if not manifest.is_file():  # pgdr writes physical backups only with one (PostgreSQL 13+): it was taken out
        raise IntegrityError(f"the base backup has no {MANIFEST}: it cannot be verified file by file",
                             HINT_HOSTILE)
    context.output.step("Verifying the data directory against its backup_manifest (pg_verifybackup)")
    run([toolset.path("pg_verifybackup"), "--quiet", str(folder)], stage="pg_verifybackup",
        environment=child_environment({"LC_MESSAGES": "C"}),
        hint="the base backup does not match its own manifest: recover from another one (see `pgdr list`)",
        exit_code=ExitCode.INTEGRITY)
    if not keep_manifest:
        manifest.unlink()
