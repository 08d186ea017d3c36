"""The split backup format: globals from `pg_dumpall --globals-only` plus one `pg_dump -Fc` per database.

Databases are dumped concurrently, each in an exported snapshot that its row counts are read from, so the counts
in the manifest match what the archive holds. Restores run `pg_restore --jobs N` per database, which rebuilds
indexes and constraints in parallel, and up to N databases at a time. Objects live under `<key>/`; the manifest
lists them and is written last.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgdr.artifact import BackupKey, DatabaseContents, Manifest, StoredPart, TableCount
from pgdr.catalog import BackupRecord
from pgdr.compression import DECOMPRESSION_ERRORS, make_compressor, make_decompressor
from pgdr.concurrency import Sessions, Task, run_all
from pgdr.context import Context
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, IntegrityError, RestoreFailed, StageFailed
from pgdr.postgres import inventory
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import client_environment, session
from pgdr.run import CHUNK_SIZE, run, stream
from pgdr.storage import Storage
from pgdr.storage.fanout import FanoutWriter
from pgdr.storage.local import LocalStorage

GLOBALS_PART = "globals.sql.gz"
SKIPPED_DATABASES = ("template0", "template1")
DUMP_COMPRESSION_LEVEL = 1  # pg_dump's own zlib: level 1 keeps the dump near its raw speed


def jobs(context: Context) -> int:
    return context.settings.backup.jobs or os.cpu_count() or 1


def globals_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--globals-only", "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


def pg_dump_argv(pg_dump: str, snapshot: str, level: int) -> list[str]:
    return [pg_dump, "--format=custom", f"--compress={level}", f"--snapshot={snapshot}", "--no-password",
            "--quote-all-identifiers"]


def pg_restore_argv(pg_restore: str, path: Path, database: str, parallel: int) -> list[str]:
    """The postgres database exists in every cluster: restore into it; every other database is created."""
    argv = [pg_restore, "--exit-on-error", "--no-password", f"--jobs={parallel}", "--dbname=postgres"]
    if database != "postgres":
        argv.append("--create")
    return [*argv, str(path)]


def dump_globals(context: Context, pg_dumpall: str, storages: list[Storage], key: BackupKey) -> StoredPart:
    writer = FanoutWriter(storages, key.object_key(GLOBALS_PART))
    compressor, scanner = make_compressor("gzip"), DumpScanner()
    try:
        with client_environment(context.superuser_endpoint()) as environment, stream(
            globals_argv(pg_dumpall), stage="pg_dumpall --globals-only", direction="read", environment=environment,
        ) as dump:
            while chunk := dump.read():
                scanner.feed(chunk)
                writer.write(compressor.compress(chunk))
        writer.write(compressor.flush())
        if not scanner.complete or scanner.has_password:
            raise BackupFailed("the globals dump is incomplete or holds passwords", "run `pgdr backup` again")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return StoredPart(name=GLOBALS_PART, size=writer.size, sha256=writer.sha256)


def dump_database(context: Context, pg_dump: str, storages: list[Storage], key: BackupKey, index: int,
                  database: str) -> tuple[StoredPart, DatabaseContents]:
    """pg_dump one database in a snapshot exported by a transaction that also counts its rows."""
    endpoint = context.superuser_endpoint(database)
    level = 0 if context.settings.backup.compression == "none" else DUMP_COMPRESSION_LEVEL
    name = f"db-{index:03d}.dump"
    with session(endpoint, autocommit=False) as connection:
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = str(connection.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        counts = [TableCount(schema=schema, table=table, rows=rows)
                  for (schema, table), rows in sorted(inventory.counts_in(connection).items())]
        writer = FanoutWriter(storages, key.object_key(name))
        try:
            with client_environment(endpoint) as environment, stream(
                pg_dump_argv(pg_dump, snapshot, level), stage=f"pg_dump {database}", direction="read",
                environment=environment,
            ) as dump:
                while chunk := dump.read():
                    writer.write(chunk)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        connection.rollback()
    context.output.info(f"   {database}: {writer.size} bytes")
    return (StoredPart(name=name, database=database, size=writer.size, sha256=writer.sha256),
            DatabaseContents(name=database, tables=counts))


def dumped_databases(context: Context) -> list[str]:
    names = [name for name, _ in inventory.database_sizes(context.superuser_endpoint())]
    return [name for name in names if name not in SKIPPED_DATABASES]


def backup_split(context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey
                 ) -> tuple[list[StoredPart], list[DatabaseContents]]:
    """Every part or none: on failure, parts already written are deleted (no manifest is written either)."""
    parts: list[StoredPart] = []
    try:
        parts.append(dump_globals(context, toolset.path("pg_dumpall"), storages, key))
        databases = dumped_databases(context)
        with ThreadPoolExecutor(max_workers=min(jobs(context), max(1, len(databases)))) as pool:
            futures = [pool.submit(dump_database, context, toolset.path("pg_dump"), storages, key, index, name)
                       for index, name in enumerate(databases, 1)]
            results = [future.result() for future in futures]
    except StageFailed as failure:
        _delete_parts(storages, key)
        raise BackupFailed(f"backup failed at stage {failure.stage}: {failure.detail}", failure.hint) from None
    except BaseException:
        _delete_parts(storages, key)
        raise
    parts += [part for part, _ in results]
    return parts, [contents for _, contents in results]


def _delete_parts(storages: list[Storage], key: BackupKey) -> None:
    prefix = key.key + "/"
    for storage in storages:
        for item in storage.list():
            if item.key.startswith(prefix):
                storage.delete(item.key)


def check_split(context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> LocalStorage:
    """Every part against the manifest (size, sha256), the globals decompressed, each archive's table of contents
    read by pg_restore. A remote backup is downloaded into the backup dir on the way. Returns where it is local."""
    manifest = record.manifest
    assert manifest is not None
    local = storage if isinstance(storage, LocalStorage) else LocalStorage(context.settings.backup.dir)
    context.output.step(f"Checking {record.key} ({len(manifest.parts)} parts: checksums, archive contents)")
    for part in manifest.parts:
        _check_part(context, storage, local, record.key, part)
    for part in manifest.parts:
        if part.database is not None:
            path = local.path_of(record.key.object_key(part.name))
            run([toolset.path("pg_restore"), "--list", str(path)], stage=f"pg_restore --list {part.name}",
                hint="the archive is corrupt: restore another backup (see `pgdr list`)")
    if local is not storage:
        local.put_bytes(record.key.manifest_key, manifest.to_json())
    return local


def _check_part(context: Context, storage: Storage, local: LocalStorage, key: BackupKey, part: StoredPart) -> None:
    object_key = key.object_key(part.name)
    copy = local.open_upload(object_key) if local is not storage else None
    digest, size = hashlib.sha256(), 0
    decompressor, scanner = make_decompressor("gzip"), DumpScanner()
    try:
        with storage.open_download(object_key) as handle:
            for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                digest.update(chunk)
                size += len(chunk)
                if copy is not None:
                    copy.write(chunk)
                if part.database is None:
                    scanner.feed(decompressor.decompress(chunk))
        if part.database is None:
            scanner.feed(decompressor.finish())
        if size != part.size or digest.hexdigest() != part.sha256 or (part.database is None and not scanner.complete):
            raise IntegrityError(f"part {part.name} of {key} does not match its manifest",
                                 "the backup is corrupt: restore another one (see `pgdr list`)")
        if copy is not None:
            copy.commit()
    except DECOMPRESSION_ERRORS as error:
        if copy is not None:
            copy.abort()
        raise IntegrityError(f"part {part.name} of {key} does not decompress: {error}",
                             "the backup is corrupt: restore another one (see `pgdr list`)") from None
    except BaseException:
        if copy is not None:
            copy.abort()
        raise


def restore_parts(context: Context, toolset: Toolset, local: LocalStorage, record: BackupRecord,
                  database: str | None, existing_roles: set[str]) -> None:
    """Globals through psql (roles that exist are skipped), then the databases with pg_restore --jobs, several
    databases at a time, biggest first: one big database's COPY no longer holds the others back."""
    from pgdr.actions.restore import LOAD_SESSION_OPTIONS, GlobalsFilter, psql_restore_argv

    manifest = record.manifest
    assert manifest is not None
    globals_filter = GlobalsFilter(context.settings.postgres.superuser, existing_roles)
    endpoint = context.superuser_endpoint()
    with client_environment(endpoint) as environment:
        with local.open_download(record.key.object_key(GLOBALS_PART)) as handle, stream(
            psql_restore_argv(toolset.path("psql")), stage="psql (globals)", direction="write",
            environment=environment,
        ) as psql:
            decompressor = make_decompressor("gzip")
            for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                psql.write(globals_filter.feed(decompressor.decompress(chunk)))
            psql.write(globals_filter.feed(decompressor.finish()) + globals_filter.finish())
        parts = sorted((part for part in manifest.parts if part.database is not None
                        and (database is None or part.database == database)),
                       key=lambda part: part.size, reverse=True)
        restore_environment = {**environment, "PGOPTIONS": LOAD_SESSION_OPTIONS}
        context.output.info(f"   {len(parts)} databases, {min(jobs(context), max(1, len(parts)))} at a time, "
                            f"each with pg_restore --jobs {jobs(context)}")
        tasks = [_database_task(toolset, local.path_of(record.key.object_key(part.name)), part.database or "",
                                jobs(context), restore_environment) for part in parts]
        run_all(tasks, jobs=jobs(context))


def _database_task(toolset: Toolset, path: Path, database: str, parallel: int,
                   environment: dict[str, str]) -> Task:
    def restore_database(sessions: Sessions) -> None:
        try:
            with stream(pg_restore_argv(toolset.path("pg_restore"), path, database, parallel),
                        stage=f"pg_restore {database}", direction="write", environment=environment) as process:
                sessions.add(process)
                process.close_input()  # pg_restore reads the archive file, not stdin
        except StageFailed as failure:
            raise RestoreFailed(f"restore of database {database} stopped: {failure.detail}",
                                "fix the cause above, then restore again with --clean") from None

    return restore_database


def split_manifest_fields(parts: list[StoredPart]) -> dict[str, object]:
    """size and sha256 of a split backup as a whole: the sum of its parts, and a digest over the parts' digests."""
    combined = hashlib.sha256("".join(f"{part.name}:{part.sha256}\n" for part in parts).encode()).hexdigest()
    return {"size": sum(part.size for part in parts), "sha256": combined, "parts": parts, "format": "split"}


def manifest_for_split(base: dict[str, object], parts: list[StoredPart]) -> Manifest:
    return Manifest.model_validate({**base, **split_manifest_fields(parts)})

