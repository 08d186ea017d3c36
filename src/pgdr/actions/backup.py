"""pgdr backup: pg_dumpall --no-role-passwords, compressed and hashed while streaming, to every target.

The stream goes to a temporary name in each target; only a complete, checked stream (pg_dumpall exited 0, its
end marker seen, no password in it) is committed under its key, and the manifest is written last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from pgdr import __version__
from pgdr.actions.split import backup_split, manifest_for_split
from pgdr.artifact import BackupKey, DatabaseProperties, LeftOut, Manifest, make_key
from pgdr.compression import Compressor, make_compressor
from pgdr.context import Context
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, StageFailed
from pgdr.handoff import Handoff
from pgdr.locking import locked
from pgdr.postgres.binaries import version_of
from pgdr.postgres.connect import client_environment
from pgdr.postgres.properties import read_properties
from pgdr.postgres.requirements import requirements_of_cluster
from pgdr.run import CHUNK_SIZE, Stream, stream
from pgdr.storage import Storage, open_storage
from pgdr.storage.fanout import FanoutWriter
from pgdr.ui import human_size


@dataclass
class BackupResult:
    key: BackupKey
    manifest: Manifest
    targets: list[str]


def dump_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


def dump_environment(environment: dict[str, str]) -> dict[str, str]:
    """Without PGCLIENTENCODING, pg_dump writes each database in its own encoding, where every byte that looks
    like a quote or a backslash is one (a client-only encoding such as SJIS is not, and psql would read it so)."""
    return {name: value for name, value in environment.items() if name != "PGCLIENTENCODING"}


@locked("backup")
def backup(context: Context, targets: list[str] | None = None, safety: bool = False) -> BackupResult:
    settings = context.settings
    storages = [open_storage(settings, target) for target in (targets or settings.backup.targets)]
    split = settings.backup.format == "split" and not safety  # safety backups stay one plain file
    toolset, _ = context.client_tools(("pg_dumpall", "psql", "pg_dump", "pg_restore") if split
                                      else ("pg_dumpall", "psql"))
    _, server_version = context.server_version()
    pg_dumpall = toolset.path("pg_dumpall")
    started, key = _fresh_key(context, storages, safety, split)
    where = ", ".join(storage.describe() for storage in storages)
    context.output.step(f"Backing up to {key.key} ({where})")
    clock = time.monotonic()
    properties, left_out = _left_out_of_the_dump(context)
    common = {"key": key.key, "compression": key.compression, "server_version": server_version,
              "pg_dumpall_version": version_of(pg_dumpall)[1], "pgdr_version": __version__, "started_at": started,
              "encryption": "age" if key.encrypted else "none", "database_properties": properties,
              "left_out": left_out, "requirements": requirements_of_cluster(context.superuser_endpoint())}
    if split:
        parts, databases = backup_split(context, toolset, storages, key)
        manifest = manifest_for_split({**common, "uncompressed_size": 0, "databases": databases,
                                       "finished_at": datetime.now(UTC),
                                       "seconds": {"dump": round(time.monotonic() - clock, 3)}}, parts)
    else:
        digest, sizes, scanner = _stream_dump(context, pg_dumpall, storages, key)
        manifest = Manifest.model_validate({
            **common, "size": sizes[1], "sha256": digest, "uncompressed_size": sizes[0],
            "finished_at": datetime.now(UTC), "seconds": {"dump": round(time.monotonic() - clock, 3)},
            "databases": scanner.databases(), "sections": scanner.sections,
            "sections_proof": "restrict" if scanner.sections else "",
            "embedded_secrets": scanner.embedded_secrets})
    sizes_text = human_size(manifest.size)
    for storage in storages:
        storage.put_bytes(key.manifest_key, manifest.to_json())
    context.output.success(
        f"Backup {key.key} written ({sizes_text}, {len(manifest.databases)} databases) to {where}"
    )
    if settings.retention.prune_after_backup and not safety:
        from pgdr.actions.prune import prune

        prune(context, [storage.name for storage in storages], confirmed=True)
    return BackupResult(key, manifest, [storage.name for storage in storages])


def _left_out_of_the_dump(context: Context) -> tuple[list[DatabaseProperties], list[LeftOut]]:
    """What pg_dumpall does not write (postgres's and template1's comments and settings; databases refusing
    connections): the first is recorded to be put back, the second named now and in the manifest."""
    properties, left_out = read_properties(context.superuser_endpoint())
    for item in left_out:
        context.output.warn(f"database {item.name} is left out of the backup ({item.reason}); to back it up, "
                            f"`ALTER DATABASE {item.name} WITH ALLOW_CONNECTIONS true` before the backup")
    return properties, left_out


def _fresh_key(context: Context, storages: list[Storage], safety: bool, split: bool) -> tuple[datetime, BackupKey]:
    """A key no target holds yet: keys have one-second resolution, so a second backup within the same second
    waits for the next one instead of replacing the first."""
    backup_settings = context.settings.backup
    while True:
        started = datetime.now(UTC)
        key = make_key(started, backup_settings.compression, safety, split=split,
                       encrypted=backup_settings.encryption == "age")
        if not any(storage.get_bytes(key.manifest_key) is not None or _object_exists(storage, key.key)
                   for storage in storages):
            return started, key
        time.sleep(1.05 - started.microsecond / 1_000_000)


def _object_exists(storage: Storage, key: str) -> bool:
    path = storage.local_path(key)
    return path.exists() if path is not None else False


def _stream_dump(
    context: Context, pg_dumpall: str, storages: list[Storage], key: BackupKey
) -> tuple[str, tuple[int, int], DumpScanner]:
    """Run the dump into every target's upload; commit them only when every stage succeeded.

    This thread reads and scans the dump while a worker thread compresses and writes the chunks read before
    (pgdr.handoff), so the two overlap instead of taking turns. The worker's failure (a full disk) comes back here
    with its type at the next chunk, which stops the dump. Once the handoff is closed the worker has ended, and
    this thread flushes the compressor.
    """
    compressor = make_compressor(key.compression, context.settings.backup.compression_level)
    scanner, raw_size = DumpScanner(), 0
    writer: FanoutWriter | None = None
    try:
        writer = FanoutWriter(storages, key.key, age_recipients(context) if key.encrypted else None)
        with client_environment(context.superuser_endpoint()) as environment, Handoff(
            partial(_compress_and_write, compressor, writer), name="pgdr-compress"
        ) as handoff, stream(
            dump_argv(pg_dumpall), stage="pg_dumpall", direction="read", environment=dump_environment(environment),
            hint="check the server's log and `pgdr status`",
        ) as dump, context.output.progress("Dumping") as progress:
            for chunk in _gathered(dump):
                raw_size += len(chunk)
                progress.advance(len(chunk))
                handoff.put(chunk)
                scanner.feed(chunk)
        writer.write(compressor.flush())
        scanner.finish()
        _check_dump(context, scanner)
        writer.commit()
    except StageFailed as failure:
        if writer is not None:
            writer.abort()
        raise BackupFailed(f"backup failed at stage {failure.stage}: {failure.detail}", failure.hint) from None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return writer.sha256, (raw_size, writer.size), scanner


def _gathered(dump: Stream, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The dump in chunks of `size` bytes (the last one shorter). Once pgdr keeps up with pg_dumpall a read
    returns what the pipe holds, often the last 4 KiB pg_dump wrote; gathered, each chunk costs one handoff and one
    call to the scanner, the compressor and the hash instead of hundreds."""
    pending: list[bytes] = []
    pending_size = 0
    while data := dump.read(size - pending_size):
        pending.append(data)
        pending_size += len(data)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)


def _compress_and_write(compressor: Compressor, writer: FanoutWriter, chunk: bytes) -> None:
    writer.write(compressor.compress(chunk))


def age_recipients(context: Context) -> list[object]:
    from pgdr.encryption import parse_recipients

    return parse_recipients(context.settings.backup.age_recipients)


def _check_dump(context: Context, scanner: DumpScanner) -> None:
    if not scanner.complete:
        raise BackupFailed(
            "backup failed at stage pg_dumpall: its output ended without the end-of-dump marker (incomplete dump)",
            "check the server's log and free space, then run `pgdr backup` again",
        )
    if scanner.has_password:
        raise BackupFailed(
            "the dump contains role passwords; refusing to store it",
            "pgdr always dumps with --no-role-passwords: check postgres.bin_dir points at real pg_dumpall",
        )
    if scanner.embedded_secrets:
        _report_embedded_secrets(context, scanner)


def _report_embedded_secrets(context: Context, scanner: DumpScanner) -> None:
    """Secrets pg_dumpall writes in plain text whatever its options; named (never shown), recorded, or refused."""
    found = "; ".join(f"{secret.kind} {secret.name}" + (f" in database {secret.database}" if secret.database else "")
                      for secret in scanner.embedded_secrets)
    if context.settings.backup.embedded_secrets == "refuse":
        raise BackupFailed(
            f"the dump holds passwords in plain text ({found}); refusing to store it (backup.embedded_secrets)",
            "move those passwords out of the database (e.g. a .pgpass file for postgres_fdw, password-less "
            "connection strings), or set backup.embedded_secrets = \"warn\" to store them",
        )
    context.output.warn(f"the backup holds passwords in plain text: {found}; they are listed in its manifest "
                        "(backup.embedded_secrets = \"refuse\" refuses such backups)")
