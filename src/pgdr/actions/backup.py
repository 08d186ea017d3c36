"""pgdr backup: pg_dumpall --no-role-passwords, compressed and hashed while streaming, to every target.

The stream goes to a temporary name in each target; only a complete, checked stream (pg_dumpall exited 0, its
end marker seen, no password in it) is committed under its key, and the manifest is written last.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pgdr import __version__
from pgdr.artifact import BackupKey, Manifest, make_key
from pgdr.compression import make_compressor
from pgdr.context import Context
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, StageFailed
from pgdr.locking import locked
from pgdr.postgres.binaries import version_of
from pgdr.postgres.connect import client_environment
from pgdr.run import stream
from pgdr.storage import Storage, Upload, open_storage
from pgdr.ui import human_size


@dataclass
class BackupResult:
    key: BackupKey
    manifest: Manifest
    targets: list[str]


def dump_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


@locked("backup")
def backup(context: Context, targets: list[str] | None = None, safety: bool = False) -> BackupResult:
    settings = context.settings
    storages = [open_storage(settings, target) for target in (targets or settings.backup.targets)]
    toolset, _ = context.client_tools(("pg_dumpall", "psql"))
    _, server_version = context.server_version()
    pg_dumpall = toolset.path("pg_dumpall")
    started = datetime.now(UTC)
    key = make_key(started, settings.backup.compression, safety)
    where = ", ".join(storage.describe() for storage in storages)
    context.output.step(f"Backing up to {key.key} ({where})")
    clock = time.monotonic()
    digest, sizes, scanner = _stream_dump(context, pg_dumpall, storages, key)
    manifest = Manifest(
        key=key.key, compression=key.compression, size=sizes[1], sha256=digest, uncompressed_size=sizes[0],
        server_version=server_version, pg_dumpall_version=version_of(pg_dumpall)[1], pgdr_version=__version__,
        started_at=started, finished_at=datetime.now(UTC), seconds={"dump": round(time.monotonic() - clock, 3)},
        databases=scanner.databases(),
    )
    for storage in storages:
        storage.put_bytes(key.manifest_key, manifest.to_json())
    context.output.success(
        f"Backup {key.key} written ({human_size(sizes[1])}, {len(manifest.databases)} databases) to {where}"
    )
    if settings.retention.prune_after_backup and not safety:
        from pgdr.actions.prune import prune

        prune(context, [storage.name for storage in storages], confirmed=True)
    return BackupResult(key, manifest, [storage.name for storage in storages])


def _stream_dump(
    context: Context, pg_dumpall: str, storages: list[Storage], key: BackupKey
) -> tuple[str, tuple[int, int], DumpScanner]:
    """Run the dump into every target's upload; commit them only when every stage succeeded."""
    compressor = make_compressor(key.compression, context.settings.backup.compression_level)
    digest, scanner = hashlib.sha256(), DumpScanner()
    raw_size = compressed_size = 0
    uploads: list[Upload] = []
    try:
        uploads = [storage.open_upload(key.key) for storage in storages]

        def emit(data: bytes) -> None:
            nonlocal compressed_size
            if data:
                digest.update(data)
                compressed_size += len(data)
                for upload in uploads:
                    upload.write(data)

        with client_environment(context.superuser_endpoint()) as environment, stream(
            dump_argv(pg_dumpall), stage="pg_dumpall", direction="read", environment=environment,
            hint="check the server's log and `pgdr status`",
        ) as dump, context.output.progress("Dumping") as progress:
            while chunk := dump.read():
                raw_size += len(chunk)
                progress.advance(len(chunk))
                scanner.feed(chunk)
                emit(compressor.compress(chunk))
        emit(compressor.flush())
        _check_dump(scanner)
        _commit_all(storages, uploads, key)
    except StageFailed as failure:
        _abort(uploads)
        raise BackupFailed(f"backup failed at stage {failure.stage}: {failure.detail}", failure.hint) from None
    except BaseException:
        _abort(uploads)
        raise
    return digest.hexdigest(), (raw_size, compressed_size), scanner


def _check_dump(scanner: DumpScanner) -> None:
    if not scanner.complete:
        raise BackupFailed(
            "pg_dumpall output ended without its end marker: the dump is incomplete",
            "check the server's log and free space, then run `pgdr backup` again",
        )
    if scanner.has_password:
        raise BackupFailed(
            "the dump contains role passwords; refusing to store it",
            "pgdr always dumps with --no-role-passwords: check postgres.bin_dir points at real pg_dumpall",
        )


def _commit_all(storages: list[Storage], uploads: list[Upload], key: BackupKey) -> None:
    """Commit every target's upload; if one fails, remove the ones already committed (all targets or none)."""
    committed: list[Storage] = []
    try:
        for storage, upload in zip(storages, uploads, strict=True):
            upload.commit()
            committed.append(storage)
    except BaseException:
        for storage in committed:
            storage.delete(key.key)
        raise


def _abort(uploads: list[Upload]) -> None:
    for upload in uploads:
        upload.abort()
