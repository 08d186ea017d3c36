"""The split backup format: globals from `pg_dumpall --globals-only` plus one `pg_dump -Fc` per database.

Databases are dumped concurrently, each in an exported snapshot that its row counts are read from, so the counts
in the manifest match what the archive holds. template1 is dumped too (its contents, restored into the target's
template1); template0 and databases that allow no connections are not. Objects live under `<key>/`; the manifest
lists them and is written last.

A restore runs up to N databases at a time, and each database in passes of `pg_restore --jobs N` over a filtered
`--use-list`, so the races of one parallel pg_restore cannot happen: pre-data alone; the data of extensions'
configuration tables alone and in pg_dump's order (pg_dump orders them by their foreign keys, but the archive does
not record that order as dependencies, so a parallel data phase loads them in any order); the other data in
parallel; post-data in parallel without INDEX ATTACH and FK CONSTRAINT (which deadlock against each other and
among themselves on multi-level partitioned tables); the INDEX ATTACHes alone; the foreign keys in parallel. An
entry that depends on a later pass's entry moves to that pass. Should a parallel pass still fail with a deadlock,
a foreign-key or a unique violation (what a one-job restore would not hit), that database is dropped and restored
again with --jobs 1, and said so. One database's failure stops no other: the error names the failed databases
(each with its first ERROR line and statement; each holds a partial restore) and the ones restored completely.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pgdr.artifact import BackupKey, DatabaseContents, Manifest, StoredPart, TableCount
from pgdr.catalog import BackupRecord
from pgdr.compression import DECOMPRESSION_ERRORS, make_compressor, make_decompressor
from pgdr.concurrency import Sessions, Task, run_each
from pgdr.context import Context
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, IntegrityError, PgdrError, RestoreFailed, StageFailed
from pgdr.postgres import inventory, sql
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import client_environment, session
from pgdr.run import CHUNK_SIZE, run, stream
from pgdr.storage import Storage
from pgdr.storage.fanout import FanoutWriter
from pgdr.storage.local import LocalStorage

GLOBALS_PART = "globals.sql.gz"
SKIPPED_DATABASES = ("template0",)  # template1's contents are dumped and restored into the target's template1
# Restored into, never created: pg_restore connects to them (the others are created with --create from `postgres`).
EXISTING_DATABASES = ("postgres", "template1")
# A database that allows no connections cannot be dumped (the manifest records it as left out).
DUMPABLE_DATABASES_QUERY = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname"
DUMP_COMPRESSION_LEVEL = 1  # pg_dump's own zlib: level 1 keeps the dump near its raw speed


def jobs(context: Context) -> int:
    return context.settings.backup.jobs or os.cpu_count() or 1


def globals_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--globals-only", "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


def pg_dump_argv(pg_dump: str, snapshot: str, level: int) -> list[str]:
    return [pg_dump, "--format=custom", f"--compress={level}", f"--snapshot={snapshot}", "--no-password",
            "--quote-all-identifiers"]


def conninfo_dbname(database: str) -> str:
    """A libpq connection string naming only the database: a name like `host=elsewhere` stays a name."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_restore_argv(pg_restore: str, path: Path, database: str, parallel: int) -> list[str]:
    """The whole archive in one pg_restore (the serial redo): the database is created, connected to another one."""
    return [pg_restore, "--exit-on-error", "--no-password", f"--jobs={parallel}",
            f"--dbname={conninfo_dbname(maintenance_database(database))}", "--create", str(path)]


def maintenance_database(database: str) -> str:
    """Where to connect to create or drop `database`."""
    return "template1" if database == "postgres" else "postgres"


def toc_argv(pg_restore: str, path: Path, section: str | None = None) -> list[str]:
    """The archive's table of contents: with a section, only its entries (SECTION_NONE entries such as comments
    and ACLs go with the section before them, as pg_restore decides); without, every entry and its dependencies."""
    return [pg_restore, "--list", *([f"--section={section}"] if section else ["--verbose"]), str(path)]


def pass_argv(pg_restore: str, path: Path, database: str, step: RestorePass, parallel: int,
              list_file: Path | None, first: bool) -> list[str]:
    """One pass: the first creates the database (connected to `postgres`) unless it is postgres or template1."""
    create = first and database not in EXISTING_DATABASES
    argv = [pg_restore, "--exit-on-error", "--no-password", f"--jobs={parallel if step.parallel else 1}",
            f"--dbname={conninfo_dbname('postgres' if create else database)}"]
    if create:
        argv.append("--create")
    if step.section is not None:
        argv.append(f"--section={step.section}")
    if list_file is not None:
        argv.append(f"--use-list={list_file}")
    return [*argv, str(path)]


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore --list --verbose`: `ID; CATALOG OID DESC SCHEMA TAG OWNER` (names are not quoted,
    so only the leading numbers and the description are read) and the dependencies listed below it."""

    dump_id: int
    catalog: int  # the object's system catalog (pg_class 1259, pg_constraint 2606), 0 for TABLE DATA and ATTACH
    text: str  # from the description on
    line: str
    depends_on: tuple[int, ...] = ()

    def is_entry(self, description: str, catalog: int) -> bool:
        """A description is followed by the schema, and a schema may be named like a description's second word
        (`INDEX ATTACH x` is an INDEX in schema ATTACH): the catalog tells them apart."""
        return self.catalog == catalog and self.text.startswith(description + " ")


_TOC_LINE = re.compile(r"(\d+); (\d+) (\d+) (.*)")
_DEPENDS = ";\tdepends on:"
PG_CLASS, PG_CONSTRAINT = 1259, 2606


def parse_toc(listing: str) -> list[TocEntry]:
    """Entries in archive order; a dump ID listed twice counts once (pg_restore replaces newlines in names, so a
    name cannot start a line, but an ID must never land in two passes)."""
    entries: list[TocEntry] = []
    seen: set[int] = set()
    for line in listing.splitlines():
        if (match := _TOC_LINE.fullmatch(line)) is not None:
            dump_id = int(match.group(1))
            if dump_id not in seen:
                seen.add(dump_id)
                entries.append(TocEntry(dump_id, int(match.group(2)), match.group(4), line))
        elif line.startswith(_DEPENDS) and entries and not entries[-1].depends_on:
            depends = tuple(int(word) for word in line[len(_DEPENDS):].split() if word.isdigit())
            entries[-1] = TocEntry(entries[-1].dump_id, entries[-1].catalog, entries[-1].text, entries[-1].line,
                                   depends)
    return entries


def listed_ids(listing: str) -> set[int]:
    return {int(match.group(1)) for line in listing.splitlines() if (match := _TOC_LINE.fullmatch(line))}


@dataclass(frozen=True)
class RestorePass:
    """One pg_restore run: a whole section (pg_restore's own selection), the listed entries (a --use-list), or,
    with neither, the whole archive."""

    name: str
    parallel: bool
    section: str | None = None
    entries: tuple[TocEntry, ...] = ()

    def list_text(self) -> str:
        return "".join(entry.line + "\n" for entry in self.entries)


def is_extension_data(entry: TocEntry, present: set[int]) -> bool:
    """TABLE DATA of a table the archive does not create: an extension's configuration table (CREATE EXTENSION
    makes it, the archive holds the rows users added). pg_dump makes TABLE DATA depend on its TABLE entry only."""
    return entry.is_entry("TABLE DATA", 0) and bool(entry.depends_on) and \
        not any(dump_id in present for dump_id in entry.depends_on)


def post_data_levels(entries: Iterable[TocEntry]) -> dict[int, int]:
    """0: in parallel with the rest; 1: INDEX ATTACH, one at a time after; 2: FK CONSTRAINT, after those. An entry
    gets the highest level of what it depends on (a comment on a foreign key comes after the key)."""
    entries = list(entries)
    levels = {entry.dump_id: 1 if entry.is_entry("INDEX ATTACH", 0) else 2 if entry.is_entry("FK CONSTRAINT",
              PG_CONSTRAINT) else 0 for entry in entries}
    changed = True
    while changed:
        changed = False
        for entry in entries:
            level = max([levels[entry.dump_id], *(levels.get(dump_id, 0) for dump_id in entry.depends_on)])
            if level != levels[entry.dump_id]:
                levels[entry.dump_id], changed = level, True
    return levels


def plan_passes(toc: list[TocEntry], data_ids: set[int], post_data_ids: set[int]) -> list[RestorePass]:
    """The passes of one database's restore, empty ones left out; every data and post-data entry is in exactly
    one, after every entry it depends on."""
    present = {entry.dump_id for entry in toc}
    data = [entry for entry in toc if entry.dump_id in data_ids]
    extension = tuple(entry for entry in data if is_extension_data(entry, present))
    post = [entry for entry in toc if entry.dump_id in post_data_ids and entry.dump_id not in data_ids]
    levels = post_data_levels(toc)
    passes = [
        RestorePass("pre-data", parallel=False, section="pre-data"),
        RestorePass("extension configuration data", parallel=False, entries=extension),
        RestorePass("data", parallel=True, entries=tuple(entry for entry in data if entry not in extension)),
        RestorePass("post-data", parallel=True,
                    entries=tuple(entry for entry in post if levels[entry.dump_id] == 0)),
        RestorePass("index attach", parallel=False,
                    entries=tuple(entry for entry in post if levels[entry.dump_id] == 1)),
        RestorePass("foreign keys", parallel=True,
                    entries=tuple(entry for entry in post if levels[entry.dump_id] == 2)),
    ]
    return [step for step in passes if step.section is not None or step.entries]


# A parallel restore's own races; a one-job restore of the same archive does not hit them (messages as the server
# sends them with lc_messages = C; another language is reported as a failure, not redone).
RACE_ERRORS = ("deadlock detected", "violates foreign key constraint", "duplicate key value violates unique constraint")


def is_race(failure: Exception) -> bool:
    """The first ERROR of a failed pg_restore is one of RACE_ERRORS."""
    if not isinstance(failure, StageFailed):
        return False
    first = next((line for line in failure.stderr_tail.splitlines() if "ERROR:" in line), "")
    return any(text in first.split("ERROR:", 1)[-1] for text in RACE_ERRORS)


def drop_statements(database: str) -> list[str]:
    """What the serial redo drops first, connected to maintenance_database(database): template1, or a user template
    database, is made an ordinary one first (a template cannot be dropped)."""
    return sql.drop_any_database(database)


def describe_failure(failure: Exception) -> str:
    from pgdr.actions.restore import describe_psql_error

    if isinstance(failure, StageFailed):
        return f"{failure.stage}: {describe_psql_error(failure)}"
    return failure.message if isinstance(failure, PgdrError) else f"{type(failure).__name__}: {failure}"


def failure_message(failed: dict[str, Exception], complete: list[str]) -> str:
    parts = [f"database {name} failed in {describe_failure(error)}" for name, error in failed.items()]
    names = ", ".join(failed)
    restored = f"restored completely: {', '.join(complete)}" if complete else "no database restored completely"
    return f"{'; '.join(parts)}. Partially restored: {names}; {restored}"


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
    """Every database that allows connections (pg_dump cannot connect to the others), template0 aside."""
    with session(context.superuser_endpoint()) as connection:
        names = [str(row[0]) for row in connection.execute(DUMPABLE_DATABASES_QUERY)]
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
    """Globals through psql (roles that exist are skipped), then the databases, several at a time, biggest first
    (one big database's COPY no longer holds the others back), each in passes; a failed one stops no other."""
    from pgdr.actions.restore import load_session_options

    manifest = record.manifest
    assert manifest is not None
    with client_environment(context.superuser_endpoint()) as environment:
        environment = {**environment, "PGOPTIONS": load_session_options(context)}
        _restore_globals(context, toolset, local, record, existing_roles, environment)
        parts = sorted((part for part in manifest.parts if part.database is not None
                        and (database is None or part.database == database)),
                       key=lambda part: part.size, reverse=True)
        paths = {part.database or "": local.path_of(record.key.object_key(part.name)) for part in parts}
        _restore_databases(context, toolset, paths, environment)


def _restore_globals(context: Context, toolset: Toolset, local: LocalStorage, record: BackupRecord,
                     existing_roles: set[str], environment: dict[str, str]) -> None:
    from pgdr.actions.restore import GlobalsFilter, psql_restore_argv

    globals_filter = GlobalsFilter(context.settings.postgres.superuser, existing_roles)
    with local.open_download(record.key.object_key(GLOBALS_PART)) as handle, stream(
        psql_restore_argv(toolset.path("psql")), stage="psql (globals)", direction="write", environment=environment,
    ) as psql:
        decompressor = make_decompressor("gzip")
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            psql.write(globals_filter.feed(decompressor.decompress(chunk)))
        psql.write(globals_filter.feed(decompressor.finish()) + globals_filter.finish())


def _restore_databases(context: Context, toolset: Toolset, paths: dict[str, Path], environment: dict[str, str]
                       ) -> None:
    """Every database to its end, whatever the others do; then the ones a parallel race stopped, one at a time
    with --jobs 1; RestoreFailed names what failed and what is complete."""
    parallel = jobs(context)
    context.output.info(f"   {len(paths)} databases, {min(parallel, max(1, len(paths)))} at a time, each with "
                        f"pg_restore --jobs {parallel} in passes")
    tasks = [_database_task(context, toolset, path, name, parallel, environment) for name, path in paths.items()]
    outcomes = run_each(tasks, jobs=parallel)
    failed = {name: error for name, error in zip(paths, outcomes, strict=True) if error is not None}
    for name in [name for name, error in failed.items() if parallel > 1 and is_race(error)]:
        context.output.warn(f"{name}: the parallel restore failed ({describe_failure(failed[name])}); dropping it "
                            "and restoring it again with pg_restore --jobs 1")
        [again] = run_each([_serial_task(context, toolset, paths[name], name, environment)], jobs=1)
        if again is None:
            del failed[name]
        else:
            failed[name] = again
    if failed:
        raise RestoreFailed(failure_message(failed, [name for name in paths if name not in failed]),
                            "fix the cause above, then restore the failed database again (`--database "
                            f"{next(iter(failed))} --clean`), or the whole backup with --clean")


def read_plan(pg_restore: str, path: Path, parallel: int) -> list[RestorePass]:
    """The archive's passes, from its table of contents (read from the file: no server involved)."""
    if parallel <= 1:
        return [RestorePass("whole archive", parallel=False, section=None)]

    def listing(section: str | None) -> str:
        return run(toc_argv(pg_restore, path, section), stage=f"pg_restore --list {path.name}").stdout.decode(
            "utf-8", "replace")

    return plan_passes(parse_toc(listing(None)), listed_ids(listing("data")), listed_ids(listing("post-data")))


def _database_task(context: Context, toolset: Toolset, path: Path, database: str, parallel: int,
                   environment: dict[str, str]) -> Task:
    pg_restore = toolset.path("pg_restore")

    def restore_database(sessions: Sessions) -> None:
        plan = read_plan(pg_restore, path, parallel)
        with tempfile.TemporaryDirectory(prefix="pgdr-toc-") as folder:  # 0700
            for number, step in enumerate(plan):
                sessions.check()
                list_file = _write_list(Path(folder) / f"pass-{number}.list", step) if step.entries else None
                argv = pass_argv(pg_restore, path, database, step, parallel, list_file, first=number == 0)
                _run_pass(sessions, argv, f"pg_restore {database} ({step.name})", environment)
        context.output.info(f"   {database}: restored")

    return restore_database


def _serial_task(context: Context, toolset: Toolset, path: Path, database: str, environment: dict[str, str]) -> Task:
    def redo(sessions: Sessions) -> None:
        with session(context.superuser_endpoint(maintenance_database(database))) as connection:
            exists = connection.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s",
                                        (database,)).fetchone()
            for statement in drop_statements(database) if exists else []:
                connection.execute(statement)  # type: ignore[call-overload]
        _run_pass(sessions, pg_restore_argv(toolset.path("pg_restore"), path, database, 1),
                  f"pg_restore --jobs 1 {database}", environment)
        context.output.info(f"   {database}: restored with pg_restore --jobs 1")

    return redo


def _write_list(path: Path, step: RestorePass) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(step.list_text())
    return path


def _run_pass(sessions: Sessions, argv: list[str], stage: str, environment: dict[str, str]) -> None:
    with stream(argv, stage=stage, direction="write", environment=environment) as process:
        sessions.add(process)
        process.close_input()  # pg_restore reads the archive file, not stdin


def split_manifest_fields(parts: list[StoredPart]) -> dict[str, object]:
    """size and sha256 of a split backup as a whole: the sum of its parts, and a digest over the parts' digests."""
    combined = hashlib.sha256("".join(f"{part.name}:{part.sha256}\n" for part in parts).encode()).hexdigest()
    return {"size": sum(part.size for part in parts), "sha256": combined, "parts": parts, "format": "split"}


def manifest_for_split(base: dict[str, object], parts: list[StoredPart]) -> Manifest:
    return Manifest.model_validate({**base, **split_manifest_fields(parts)})

