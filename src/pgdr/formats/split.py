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
again with --jobs 1, and said so. The passes pay only where a database can use several cores: the `jobs` biggest
databases and any archive of SMALL_ARCHIVE bytes or more; each smaller one, restored while other databases fill the
sessions, goes in one `pg_restore --jobs 1` (pass_jobs), which cannot race either, instead of three table-of-contents
reads and six pg_restore processes and connections (measured: 50 databases, pg_restore's CPU 8.7 -> 2.6 s, the
server's about halved). One database's failure stops no other: the error names the failed databases
(each with its first ERROR line and statement; each holds a partial restore) and the ones restored completely.

Parts are written with the backup's codecs (pgdr.streams): `globals.sql` + `.gz`/`.zst` + `.age`, and each archive
the same way, `db-001.dump` + `.gz`/`.zst` + `.age`: pg_dump writes it uncompressed (`--compress=0`) and pgdr
compresses it (ISA-L for gzip, several times faster than the zlib inside pg_dump, which runs on pg_dump's one thread)
and encrypts it. Split backups written before (gzip) hold `db-001.dump` or `db-001.dump.age`: compressed by
pg_dump's own zlib, which pg_restore reads as it is; their names still say so and they restore as they did. An
archive with an outer codec is decoded into a 0600 file beside the backups for as long as pg_restore reads it
(pg_restore --jobs seeks in its file), so a restore needs room for the biggest databases' uncompressed archives.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pgdr.artifact import (
    BackupFacts,
    BackupKey,
    DatabaseContents,
    Manifest,
    Requirements,
    StoredPart,
    TableCount,
    make_split_key,
)
from pgdr.catalog import BackupRecord
from pgdr.concurrency import Sessions, Task, run_each
from pgdr.context import Context
from pgdr.dumpneeds import NeedsReader
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, ExitCode, IntegrityError, PgdrError, RestoreFailed, StageFailed
from pgdr.formats.base import working_copy
from pgdr.formats.codecs import age_identity, age_recipients, backup_codec
from pgdr.formats.psql_feed import GlobalsFilter, describe_psql_error, feed_psql, jobs, load_session_options
from pgdr.postgres import inventory, sql
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import client_environment, session
from pgdr.run import run, stream
from pgdr.storage import Storage
from pgdr.storage.fanout import FanoutUpload
from pgdr.storage.local import LocalStorage
from pgdr.streams import Codec, codec_of_name
from pgdr.streams.buffers import BufferPool
from pgdr.streams.decoder import Tally, chunks_of, decoded
from pgdr.streams.encoder import Encoder

GLOBALS_BASE = "globals.sql"
GLOBALS_PART = "globals.sql.gz"  # the globals of a gzip backup (and of every split backup before codecs)
ARCHIVE_SUFFIX = ".dump"
SKIPPED_DATABASES = ("template0",)  # template1's contents are dumped and restored into the target's template1
# Restored into, never created: pg_restore connects to them (the others are created with --create from `postgres`).
EXISTING_DATABASES = ("postgres", "template1")
# A database that allows no connections cannot be dumped (the manifest records it as left out).
DUMPABLE_DATABASES_QUERY = "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname"
DUMP_HINT = "check the server's log and `pgdr status`, then run `pgdr backup` again"
SMALL_ARCHIVE = 8 * 2**20  # stored bytes below which a database not among the `jobs` biggest is restored in one pass


def globals_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--globals-only", "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


def pg_dump_argv(pg_dump: str, snapshot: str) -> list[str]:
    """An uncompressed custom-format archive on stdout: pgdr compresses it (`--compress=0` is "none" on every
    pg_dump from 9.x to 18)."""
    return [pg_dump, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password",
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


def is_race(failure: Exception | None) -> bool:
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
    if isinstance(failure, StageFailed):
        return f"{failure.stage}: {describe_psql_error(failure)}"
    return failure.message if isinstance(failure, PgdrError) else f"{type(failure).__name__}: {failure}"


def failure_message(failed: dict[str, Exception], complete: list[str]) -> str:
    parts = [f"database {name} failed in {describe_failure(error)}" for name, error in failed.items()]
    names = ", ".join(failed)
    restored = f"restored completely: {', '.join(complete)}" if complete else "no database restored completely"
    return f"{'; '.join(parts)}. Partially restored: {names}; {restored}"


def part_codec(part: StoredPart) -> Codec:
    """A part's codec, from its name: `globals.sql.gz`, `db-001.dump.gz.age`; `db-001.dump` and `db-001.dump.age`
    (split gzip backups before pgdr compressed archives itself) hold pg_dump's own zlib, read by pg_restore."""
    base = GLOBALS_BASE if part.database is None else part.name[: part.name.index(ARCHIVE_SUFFIX) + len(ARCHIVE_SUFFIX)]
    return codec_of_name(part.name, base)


def _write_part(context: Context, storages: list[Storage], key: BackupKey, name: str, codec: Codec,
                produce: Callable[[Encoder], None]) -> StoredPart:
    """One part to every target through the encoder: all or nothing."""
    with FanoutUpload(storages, key.object_key(name)) as upload, Encoder(
        upload.write, codec, context.settings.backup.compression_level, age_recipients(context, codec)
    ) as encoder:
        produce(encoder)
    return StoredPart(name=name, size=encoder.size, sha256=encoder.sha256)


def dump_globals(context: Context, pg_dumpall: str, storages: list[Storage], key: BackupKey) -> StoredPart:
    codec = backup_codec(context)

    def produce(encoder: Encoder) -> None:
        scanner = DumpScanner()
        with client_environment(context.superuser_endpoint()) as environment, stream(
            globals_argv(pg_dumpall), stage="pg_dumpall --globals-only", direction="read", environment=environment,
            hint=DUMP_HINT, exit_code=ExitCode.BACKUP_FAILED,
        ) as dump:
            while chunk := dump.read():
                scanner.feed(chunk)
                encoder.write(chunk)
        if not scanner.complete or scanner.has_password:
            raise BackupFailed("the globals dump is incomplete or holds passwords", "run `pgdr backup` again")

    return _write_part(context, storages, key, codec.name(GLOBALS_BASE), codec, produce)


def dump_database(context: Context, pg_dump: str, storages: list[Storage], key: BackupKey, index: int,
                  database: str) -> tuple[StoredPart, DatabaseContents]:
    """pg_dump one database in a snapshot exported by a transaction that also counts its rows."""
    endpoint = context.superuser_endpoint(database)
    codec = backup_codec(context)
    with session(endpoint, autocommit=False) as connection:
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = str(connection.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        counts = [TableCount(schema=schema, table=table, rows=rows)
                  for (schema, table), rows in sorted(inventory.counts_in(connection).items())]

        def produce(encoder: Encoder) -> None:
            with client_environment(endpoint) as environment, stream(
                pg_dump_argv(pg_dump, snapshot), stage=f"pg_dump {database}", direction="read",
                environment=environment, hint=DUMP_HINT, exit_code=ExitCode.BACKUP_FAILED,
            ) as dump:
                pool = BufferPool(keep=1)  # one 1 MiB buffer, reused: encoder.write keeps nothing of it
                for chunk in pool.filled(dump.read_into):
                    encoder.write(chunk)
                    pool.give_back(chunk)

        part = _write_part(context, storages, key, codec.name(f"db-{index:03d}{ARCHIVE_SUFFIX}"), codec, produce)
        connection.rollback()
    context.output.info(f"   {database}: {part.size} bytes")
    return part.model_copy(update={"database": database}), DatabaseContents(name=database, tables=counts)


def dumped_databases(context: Context) -> list[str]:
    """Every database that allows connections (pg_dump cannot connect to the others), template0 aside."""
    with session(context.superuser_endpoint()) as connection:
        names = [str(row[0]) for row in connection.execute(DUMPABLE_DATABASES_QUERY)]
    return [name for name in names if name not in SKIPPED_DATABASES]


def backup_split(context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey
                 ) -> tuple[list[StoredPart], list[DatabaseContents]]:
    """Every part or none: on failure, parts already written are deleted (no manifest is written either)."""
    try:
        parts = [dump_globals(context, toolset.path("pg_dumpall"), storages, key)]
        databases = dumped_databases(context)
        with ThreadPoolExecutor(max_workers=min(jobs(context), max(1, len(databases)))) as pool:
            futures = [pool.submit(dump_database, context, toolset.path("pg_dump"), storages, key, index, name)
                       for index, name in enumerate(databases, 1)]
            results = [future.result() for future in futures]
    except BaseException:
        for storage in storages:
            storage.delete(*split_objects(storage, key)[1:])
        raise
    return parts + [part for part, _ in results], [contents for _, contents in results]


def split_objects(storage: Storage, key: BackupKey) -> list[str]:
    """The manifest first (a split backup is listed through it, so a crash can only leave unlisted parts behind,
    never a listed backup with parts missing), then the parts, then the backup's folder."""
    return [key.manifest_key, *(item.key for item in storage.list(key.key + "/")), key.key]


def check_split(context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
    """Every part against the manifest (size, sha256), the globals decoded and scanned, each archive's table of
    contents read by pg_restore. A backup outside the backup dir is copied into it on the way. Returns the backup
    dir."""
    manifest = record.manifest
    assert manifest is not None
    copy_to = working_copy(context, storage)
    local = copy_to or LocalStorage(context.settings.backup.dir)
    context.output.step(f"Checking {record.key} ({len(manifest.parts)} parts: checksums, archive contents)")
    for part in manifest.parts:
        _check_part(context, storage, copy_to, record.key, part)
    for part in manifest.parts:
        if part.database is not None:
            _list_archive(context, local, record.key, part, toolset.path("pg_restore"))
    if copy_to is not None:
        copy_to.put_bytes(record.key.manifest_key, manifest.to_json())
    return local


def _check_part(context: Context, storage: Storage, copy_to: LocalStorage | None, key: BackupKey,
                part: StoredPart) -> None:
    """Size and sha256 of the stored bytes; the globals also decoded and their end marker seen."""
    tally, scanner = Tally(), DumpScanner()
    codec = part_codec(part)
    with ExitStack() as stack:
        copy = stack.enter_context(copy_to.open_upload(key.object_key(part.name))) if copy_to is not None else None
        handle = stack.enter_context(storage.open_download(key.object_key(part.name)))

        def on_chunk(chunk: bytes | bytearray | memoryview) -> None:
            tally(chunk)
            if copy is not None:
                copy.write(chunk)

        if part.database is None:
            identity = age_identity(context, codec, f"part {part.name} of {key}")
            with decoded(handle, codec, identity, f"part {part.name} of {key}", on_chunk) as chunks:
                for chunk in chunks:
                    scanner.feed(chunk)
        else:
            for stored in chunks_of(handle):
                on_chunk(stored)
        if tally.size != part.size or tally.sha256 != part.sha256 or (part.database is None and not scanner.complete):
            raise IntegrityError(f"part {part.name} of {key} does not match its manifest",
                                 "the backup is corrupt: restore another one (see `pgdr list`)")


def _list_archive(context: Context, local: LocalStorage, key: BackupKey, part: StoredPart, pg_restore: str) -> None:
    """pg_restore reads the archive's table of contents: the stored file itself when it has no outer codec, else
    the decoded start of it on stdin. The table of contents comes first, and the stored bytes were checked whole
    against the manifest already: decoding the rest (hundreds of MB) would only rewrite them."""
    stage, hint = f"pg_restore --list {part.name}", "the archive is corrupt: restore another backup (see `pgdr list`)"
    codec = part_codec(part)
    if codec == Codec():
        run([pg_restore, "--list", str(local.path_of(key.object_key(part.name)))], stage=stage, hint=hint,
            exit_code=ExitCode.INTEGRITY)
        return
    identity = age_identity(context, codec, f"part {part.name} of {key}")
    with local.open_download(key.object_key(part.name)) as handle, \
            decoded(handle, codec, identity, f"part {part.name} of {key}") as chunks, \
            stream([pg_restore, "--list"], stage=stage, direction="write", hint=hint,
                   exit_code=ExitCode.INTEGRITY) as lister:
        for chunk in chunks:
            if not lister.offer(chunk):
                break


@contextmanager
def plain_archive(context: Context, local: LocalStorage, key: BackupKey, part: StoredPart, folder: Path
                  ) -> Iterator[Path]:
    """The pg_dump archive of a part as a file pg_restore can read (and seek in, for --jobs): the stored file when
    it has no outer codec, else decoded into `folder` (0600) for as long as it is needed."""
    codec = part_codec(part)
    stored = local.path_of(key.object_key(part.name))
    if codec == Codec():
        yield stored
        return
    path = folder / f"{part.name.split('.')[0]}{ARCHIVE_SUFFIX}"
    identity = age_identity(context, codec, f"part {part.name} of {key}")
    try:
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as output, \
                local.open_download(key.object_key(part.name)) as handle, \
                decoded(handle, codec, identity, f"part {part.name} of {key}") as chunks:
            for chunk in chunks:
                output.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)


def restore_parts(context: Context, toolset: Toolset, local: LocalStorage, record: BackupRecord,
                  database: str | None, existing_roles: set[str]) -> None:
    """Globals through psql (roles that exist are skipped), then the databases, several at a time, biggest first
    (one big database's COPY no longer holds the others back), each in passes; a failed one stops no other."""
    manifest = record.manifest
    assert manifest is not None
    with client_environment(context.superuser_endpoint()) as environment:
        environment = {**environment, "PGOPTIONS": load_session_options(context)}
        _restore_globals(context, toolset, local, record, existing_roles, environment)
        parts = sorted((part for part in manifest.parts if part.database is not None
                        and (database is None or part.database == database)),
                       key=lambda part: part.size, reverse=True)
        _restore_databases(context, toolset, local, record, parts, environment)


def _restore_globals(context: Context, toolset: Toolset, local: LocalStorage, record: BackupRecord,
                     existing_roles: set[str], environment: dict[str, str]) -> None:
    manifest = record.manifest
    assert manifest is not None
    part = next(part for part in manifest.parts if part.database is None)
    codec = part_codec(part)
    identity = age_identity(context, codec, f"part {part.name} of {record.key}")
    with local.open_download(record.key.object_key(part.name)) as handle, \
            decoded(handle, codec, identity, f"part {part.name} of {record.key}") as chunks:
        feed_psql(toolset.path("psql"), chunks, "psql (globals)", environment,
                  GlobalsFilter(context.settings.postgres.superuser, existing_roles), None)


def _restore_databases(context: Context, toolset: Toolset, local: LocalStorage, record: BackupRecord,
                       parts: list[StoredPart], environment: dict[str, str]) -> None:
    """Every database to its end, whatever the others do; then the ones a parallel race stopped, one at a time
    with --jobs 1; RestoreFailed names what failed and what is complete."""
    parallel = jobs(context)
    names = [part.database or "" for part in parts]
    part_jobs = pass_jobs([part.size for part in parts], parallel)
    serial = part_jobs.count(1) if parallel > 1 else 0
    context.output.info(f"   {len(parts)} databases, {min(parallel, max(1, len(parts)))} at a time, each with "
                        f"pg_restore --jobs {parallel} in passes"
                        + (f" but {serial} small ones, each in one pg_restore --jobs 1" if serial else ""))
    with tempfile.TemporaryDirectory(prefix=".pgdr-archives-", dir=local.root) as folder:  # 0700, beside the backup
        archive = partial(plain_archive, context, local, record.key, folder=Path(folder))
        tasks = [_database_task(context, toolset, archive, part, part_parallel, environment)
                 for part, part_parallel in zip(parts, part_jobs, strict=True)]
        outcomes = run_each(tasks, jobs=parallel)
        failed = {name: error for name, error in zip(names, outcomes, strict=True) if error is not None}
        raced = [part for part, part_parallel in zip(parts, part_jobs, strict=True)
                 if part_parallel > 1 and is_race(failed.get(part.database or ""))]
        for part in raced:
            name = part.database or ""
            context.output.warn(f"{name}: the parallel restore failed ({describe_failure(failed[name])}); dropping "
                                "it and restoring it again with pg_restore --jobs 1")
            [again] = run_each([_serial_task(context, toolset, archive, part, environment)], jobs=1)
            if again is None:
                del failed[name]
            else:
                failed[name] = again
    if failed:
        raise RestoreFailed(failure_message(failed, [name for name in names if name not in failed]),
                            "fix the cause above, then restore the failed database again (`--database "
                            f"{next(iter(failed))} --clean`), or the whole backup with --clean")


def pass_jobs(sizes: list[int], parallel: int) -> list[int]:
    """pg_restore --jobs for each database, its stored size given biggest first: `parallel` (in passes) for the
    `parallel` biggest and for any of SMALL_ARCHIVE bytes or more; 1 (the whole archive in one pg_restore) for the
    others, which start only as other databases end and so run beside them, where the passes' fixed cost buys no
    core that is free."""
    return [parallel if rank < parallel or size >= SMALL_ARCHIVE else 1 for rank, size in enumerate(sizes)]


def read_plan(pg_restore: str, path: Path, parallel: int) -> list[RestorePass]:
    """The archive's passes, from its table of contents (read from the file: no server involved)."""
    if parallel <= 1:
        return [RestorePass("whole archive", parallel=False, section=None)]

    def listing(section: str | None) -> str:
        return run(toc_argv(pg_restore, path, section), stage=f"pg_restore --list {path.name}",
                   exit_code=ExitCode.RESTORE_FAILED).stdout.decode(
            "utf-8", "replace")

    return plan_passes(parse_toc(listing(None)), listed_ids(listing("data")), listed_ids(listing("post-data")))


Archive = Callable[[StoredPart], AbstractContextManager[Path]]


def _database_task(context: Context, toolset: Toolset, archive: Archive, part: StoredPart, parallel: int,
                   environment: dict[str, str]) -> Task:
    pg_restore, database = toolset.path("pg_restore"), part.database or ""

    def restore_database(sessions: Sessions) -> None:
        with archive(part) as path, tempfile.TemporaryDirectory(prefix="pgdr-toc-") as folder:  # 0700
            plan = read_plan(pg_restore, path, parallel)
            for number, step in enumerate(plan):
                sessions.check()
                list_file = _write_list(Path(folder) / f"pass-{number}.list", step) if step.entries else None
                argv = pass_argv(pg_restore, path, database, step, parallel, list_file, first=number == 0)
                _run_pass(sessions, argv, f"pg_restore {database} ({step.name})", environment)
        context.output.info(f"   {database}: restored")

    return restore_database


def _serial_task(context: Context, toolset: Toolset, archive: Archive, part: StoredPart,
                 environment: dict[str, str]) -> Task:
    database = part.database or ""

    def redo(sessions: Sessions) -> None:
        with session(context.superuser_endpoint(maintenance_database(database))) as connection:
            exists = connection.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s",
                                        (database,)).fetchone()
            for statement in drop_statements(database) if exists else []:
                connection.execute(statement)  # type: ignore[call-overload]
        with archive(part) as path:
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
    with stream(argv, stage=stage, direction="write", environment=environment,
                exit_code=ExitCode.RESTORE_FAILED) as process:
        sessions.add(process)
        process.close_input()  # pg_restore reads the archive file, not stdin


def combined_sha256(parts: list[StoredPart]) -> str:
    """The sha256 of a split backup as a whole: a digest over its parts' digests."""
    return hashlib.sha256("".join(f"{part.name}:{part.sha256}\n" for part in parts).encode()).hexdigest()


class SplitFormat:
    name = "split"
    restores_one_database = True
    logical = True

    def backup_tools(self) -> tuple[str, ...]:
        return ("pg_dumpall", "psql", "pg_dump", "pg_restore")

    def restore_tools(self) -> tuple[str, ...]:
        return ("psql", "pg_dumpall", "pg_restore")

    def new_key(self, context: Context, created: datetime, safety: bool) -> BackupKey:
        return make_split_key(created, safety)

    def write(self, context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey,
              facts: BackupFacts) -> Manifest:
        clock = time.monotonic()
        parts, databases = backup_split(context, toolset, storages, key)
        return Manifest(**dict(facts), format=self.name, size=sum(part.size for part in parts),
                        sha256=combined_sha256(parts), uncompressed_size=0, finished_at=datetime.now(UTC),
                        seconds={"dump": round(time.monotonic() - clock, 3)}, databases=databases, parts=parts)

    def check(self, context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
        if record.manifest is None:
            raise IntegrityError(f"split backup {record.key} has no readable manifest", "restore another backup")
        return check_split(context, storage, record, toolset)

    def needs(self, context: Context, storage: Storage, record: BackupRecord) -> Requirements:
        """Only the globals are read (tablespaces): the archives' extensions and ICU are left to the restore."""
        context.output.info("   extensions and ICU are not checked before this restore: its manifest predates their "
                            "record and the database archives are not read (tablespaces are, from the globals)")
        name = next((part.name for part in record.manifest.parts if part.database is None), GLOBALS_PART) \
            if record.manifest is not None else GLOBALS_PART
        codec = codec_of_name(name, GLOBALS_BASE)
        reader = NeedsReader()
        with storage.open_download(record.key.object_key(name)) as handle, decoded(
            handle, codec, age_identity(context, codec, f"part {name} of {record.key}"), f"backup {record.key}"
        ) as chunks:
            for chunk in chunks:
                reader.feed(chunk)
        reader.finish()
        return Requirements(tablespaces=reader.requirements().tablespaces)

    def restore(self, context: Context, toolset: Toolset, storage: Storage, record: BackupRecord,
                database: str | None, existing_roles: set[str], bulk_load: bool) -> None:
        restore_parts(context, toolset, LocalStorage(context.settings.backup.dir), record, database, existing_roles)

    def objects(self, storage: Storage, key: BackupKey) -> list[str]:
        return split_objects(storage, key)
