"""The plain format: one `pg_dumpall --no-role-passwords` script, compressed (and encrypted) while streaming.

Backup: the dump goes to a temporary name in each target; only a complete, checked stream (pg_dumpall exited 0,
its end marker seen by the psql-exact lexer, no password in it) is committed under its key. The lexer also finds
where each database starts (`sections`), proven by pg_dump's \\restrict keys, so a restore can run several
databases at once (pgdr.formats.plain_sections).

Check: the whole file is read once: size and sha256 against the manifest; without a manifest (the old shell
pipeline's files), or when encrypted (the identity must work), also full decompression and the end marker.
Restore: by sections when the manifest proves them and jobs > 1, else one stream into psql.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

from pgdr.artifact import BackupFacts, BackupKey, Manifest, Requirements, make_key
from pgdr.catalog import BackupRecord
from pgdr.context import Context
from pgdr.dumpneeds import NeedsReader
from pgdr.dumpscan import DumpScanner
from pgdr.errors import BackupFailed, ExitCode, IntegrityError
from pgdr.formats.base import working_copy
from pgdr.formats.codecs import age_identity, age_recipients, backup_codec
from pgdr.formats.plain_members import MemberCuts
from pgdr.formats.plain_sections import restore_sections, section_ranges
from pgdr.formats.psql_feed import GlobalsFilter, feed_psql, jobs, load_session_options, unprivileged_client
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import client_environment
from pgdr.run import stream
from pgdr.storage import Storage, Upload
from pgdr.storage.fanout import FanoutUpload
from pgdr.storage.local import LocalStorage
from pgdr.streams import Codec
from pgdr.streams.buffers import Data, read_and_consume
from pgdr.streams.decoder import Tally, chunks_of, decoded
from pgdr.streams.encoder import Encoder

HINT_CORRUPT = "the backup is corrupt: restore another one (see `pgdr list`)"


def dump_argv(pg_dumpall: str) -> list[str]:
    return [pg_dumpall, "--no-role-passwords", "--no-password", "--quote-all-identifiers"]


def dump_environment(environment: dict[str, str]) -> dict[str, str]:
    """Without PGCLIENTENCODING, pg_dump writes each database in its own encoding, where every byte that looks
    like a quote or a backslash is one (a client-only encoding such as SJIS is not, and psql would read it so)."""
    return {name: value for name, value in environment.items() if name != "PGCLIENTENCODING"}


def codec_of(key: BackupKey) -> Codec:
    return Codec(key.compression, key.encrypted)


class PlainFormat:
    name = "plain"
    restores_one_database = False
    logical = True

    def backup_tools(self) -> tuple[str, ...]:
        return ("pg_dumpall", "psql")

    def restore_tools(self) -> tuple[str, ...]:
        return ("psql",)

    def new_key(self, context: Context, created: datetime, safety: bool) -> BackupKey:
        codec = backup_codec(context)
        return make_key(created, codec.compression, safety, codec.encrypted)

    def write(self, context: Context, toolset: Toolset, storages: list[Storage], key: BackupKey,
              facts: BackupFacts) -> Manifest:
        clock = time.monotonic()
        encoded, raw_size, scanner, cuts = _stream_dump(context, toolset.path("pg_dumpall"), storages, key)
        sections = cuts.sections(scanner.sections) if cuts is not None else scanner.sections
        return Manifest(
            **dict(facts), format=self.name, size=encoded.size, sha256=encoded.sha256, uncompressed_size=raw_size,
            finished_at=datetime.now(UTC), seconds={"dump": round(time.monotonic() - clock, 3)},
            databases=scanner.databases(), sections=sections,
            sections_proof="restrict" if scanner.sections else "", embedded_secrets=scanner.embedded_secrets)

    def check(self, context: Context, storage: Storage, record: BackupRecord, toolset: Toolset) -> Storage:
        return check_or_fetch(context, storage, record)

    def needs(self, context: Context, storage: Storage, record: BackupRecord) -> Requirements:
        why = "it has no manifest" if record.manifest is None else "its manifest predates their record"
        context.output.step(f"Reading what {record.key} needs from the server ({why}: one more decompression pass)")
        reader = NeedsReader()
        identity = age_identity(context, codec_of(record.key), f"backup {record.key}")
        with storage.open_download(record.key.key) as handle, context.output.progress("Reading", record.size) as bar, \
                decoded(handle, codec_of(record.key), identity, f"backup {record.key}",
                        lambda chunk: bar.advance(len(chunk))) as chunks:
            for chunk in chunks:
                reader.feed(chunk)
        reader.finish()
        return reader.requirements()

    def restore(self, context: Context, toolset: Toolset, storage: Storage, record: BackupRecord,
                database: str | None, existing_roles: set[str], bulk_load: bool) -> None:
        """Database by database, several at a time, when the manifest says where each starts; else one stream."""
        ranges = section_ranges(record.manifest)
        if ranges and jobs(context) > 1:
            restore_sections(context, toolset.path("psql"), storage, record, ranges, jobs(context), bulk_load)
            return
        if jobs(context) > 1:
            context.output.info("   restoring in one stream: the backup's database boundaries are not proven by "
                                "pg_dump's \\restrict keys (older pg_dumpall, older pgdr, or the old pipeline)")
        stream_into_psql(context, toolset.path("psql"), storage, record)

    def objects(self, storage: Storage, key: BackupKey) -> list[str]:
        """The backup first, then its manifest: a crash in between leaves a manifest without its backup, which
        everything ignores and the next prune removes; never an intact backup listed as unverified."""
        return [key.key, key.manifest_key]


def _stream_dump(context: Context, pg_dumpall: str, storages: list[Storage], key: BackupKey
                 ) -> tuple[Encoder, int, DumpScanner, MemberCuts | None]:
    """The dump into every target, read by the psql-exact lexer on the way; committed only when pg_dumpall exited
    0 and the dump is complete and holds no password (_check_dump). Unencrypted, a new compressed member starts at
    each database (pgdr.formats.plain_members)."""
    scanner = DumpScanner()
    cuts = None if key.encrypted else MemberCuts(scanner.proof.sections)

    def before_commit() -> None:
        scanner.finish()
        _check_dump(context, scanner)

    encoder, raw_size = stream_to_targets(
        context, storages, key, dump_argv(pg_dumpall), "pg_dumpall", "check the server's log and `pgdr status`",
        dump_environment, scanner.feed, before_commit, "Dumping", cuts)
    return encoder, raw_size, scanner, cuts


def stream_to_targets(context: Context, storages: list[Storage], key: BackupKey, argv: list[str], stage: str,
                      hint: str, environment_of: Callable[[dict[str, str]], dict[str, str]],
                      feed: Callable[[memoryview], None], before_commit: Callable[[], None], label: str,
                      cuts: MemberCuts | None = None) -> tuple[Encoder, int]:
    """argv's stdout (a client of the server) encoded once into every target's upload; `feed` reads each raw
    chunk; the uploads are committed only when argv exited 0 and `before_commit` returned.

    This thread reads and feeds while a worker thread encodes and writes the chunks read before
    (pgdr.streams.buffers.read_and_consume), so the two overlap instead of taking turns; the chunks are read into a
    few reused 1 MiB buffers, no new memory per MiB. The worker's failure (a full disk) comes back here with its
    type at the next chunk, which stops the process. Once the handoff is closed the worker has ended, and the
    encoder is finished on this thread. With `cuts`, each chunk is fed before it is handed on, one chunk late, so
    the compressed member can end where the scanner proves a database starts.
    """
    codec = codec_of(key)
    with FanoutUpload(storages, key.key) as upload, Encoder(
        upload.write, codec, context.settings.backup.compression_level, age_recipients(context, codec)
    ) as encoder:
        with client_environment(context.superuser_endpoint()) as environment, stream(
            argv, stage=stage, direction="read", environment=environment_of(environment), hint=hint,
            exit_code=ExitCode.BACKUP_FAILED,
        ) as process, context.output.progress(label) as progress:
            raw_size = read_and_consume(process.read_into, encoder.write if cuts is None else cuts.consumer(encoder),
                                        feed, progress.advance, relay=cuts)
        before_commit()
    return encoder, raw_size


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


def check_or_fetch(context: Context, storage: Storage, record: BackupRecord) -> Storage:
    """One file checked where it is in the backup dir, or checked while it is downloaded into it (a restore then
    reads the copy)."""
    local = working_copy(context, storage)
    if local is None:
        check_backup(context, storage, record)
        return storage
    return fetch_to_local(context, storage, record, local)


def check_backup(context: Context, storage: Storage, record: BackupRecord, copy_to: Upload | None = None) -> None:
    """Read the whole backup once: size and sha256 against the manifest; without a manifest (the old pipeline's
    files), or when encrypted (the identity must work), also full decompression and the end-of-dump marker.

    A matching sha256 proves the file is, bit for bit, the one pgdr wrote after checking the dump's end marker, so
    decompressing it again would prove nothing more and would cost a second of RTO per GB.
    With copy_to, every chunk read is also written there (the download of a remote backup), so the copy is
    checked by the same single pass; the caller commits it only when this returns.
    """
    manifest = record.manifest
    if manifest is not None and manifest.size != record.size:
        raise IntegrityError(
            f"backup {record.key} is {record.size} bytes but its manifest says {manifest.size}",
            "the backup is truncated or was replaced: restore another one (see `pgdr list`)",
        )
    decode = manifest is None or record.key.encrypted
    checks = ["checksum"] * (manifest is not None) + ["decompression"] * decode
    context.output.step(f"Checking {record.key} ({', '.join(checks)})")
    tally = Tally()
    label = "Downloading" if copy_to is not None else "Checking"
    with storage.open_download(record.key.key) as handle, context.output.progress(label, record.size) as bar:

        def on_chunk(chunk: Data) -> None:
            bar.advance(len(chunk))
            if copy_to is not None:
                copy_to.write(chunk)
            tally(chunk)

        scanner = _decode_all(context, handle, record, on_chunk) if decode else _read_all(handle, on_chunk)
    _check_scan(record, tally.sha256, scanner)


def _read_all(handle: BinaryIO, on_chunk: Callable[[Data], None]) -> DumpScanner | None:
    """Only the checksum is wanted: read through, nothing to scan."""
    for chunk in chunks_of(handle):
        on_chunk(chunk)
    return None


def _decode_all(context: Context, handle: BinaryIO, record: BackupRecord, on_chunk: Callable[[Data], None]
                ) -> DumpScanner | None:
    """Decompress (and decrypt) the whole backup. Without a manifest (the old pipeline's files) the SQL also goes
    through the psql-exact lexer: its end marker counts only where psql would read the dump's own closing comment,
    never inside a row or a string. With one (an encrypted backup, decrypted to prove the identity works), the
    sha256 already ties the file to the lexer's check at backup time."""
    scanner = DumpScanner() if record.manifest is None else None
    codec = codec_of(record.key)
    with decoded(handle, codec, age_identity(context, codec, f"backup {record.key}"), f"backup {record.key}",
                 on_chunk) as chunks:
        for chunk in chunks:
            if scanner is not None:
                scanner.feed(chunk)
    if scanner is not None:
        scanner.finish()
    return scanner


def _check_scan(record: BackupRecord, sha256: str, scanner: DumpScanner | None) -> None:
    if record.manifest is not None and record.manifest.sha256 != sha256:
        raise IntegrityError(f"backup {record.key} does not match its manifest's sha256", HINT_CORRUPT)
    if scanner is not None and not scanner.complete:
        raise IntegrityError(
            f"backup {record.key} is incomplete: the dump's end marker is missing",
            "the backup was cut short: restore another one (see `pgdr list`)",
        )


def fetch_to_local(context: Context, storage: Storage, record: BackupRecord, local: LocalStorage) -> LocalStorage:
    """Download a backup into the backup dir, checked on the way; its manifest follows it, last.

    The copy is written to a hidden temporary name and renamed into place only when the checks passed, so a
    corrupt or interrupted download leaves nothing that `pgdr list` or `restore latest` would pick up.
    """
    context.output.step(f"Downloading {record.key} from {storage.describe()} to {local.describe()}")
    manifest = storage.get_bytes(record.key.manifest_key) if record.manifest is not None else None
    with local.open_upload(record.key.key) as upload:
        check_backup(context, storage, record, copy_to=upload)
    if manifest is not None:
        local.put_bytes(record.key.manifest_key, manifest)
    return local


def stream_into_psql(context: Context, psql: str, storage: Storage, record: BackupRecord) -> None:
    """The whole script into one psql, the bootstrap superuser's CREATE ROLE filtered out."""
    codec = codec_of(record.key)
    identity = age_identity(context, codec, f"backup {record.key}")
    owner = unprivileged_client(context, psql)
    with client_environment(context.superuser_endpoint(), owner) as environment, \
            storage.open_download(record.key.key) as handle, context.output.progress("Restoring", record.size) as bar, \
            decoded(handle, codec, identity, f"backup {record.key}", lambda chunk: bar.advance(len(chunk))) as chunks:
        feed_psql(psql, chunks, "psql", {**environment, "PGOPTIONS": load_session_options(context)},
                  GlobalsFilter(context.settings.postgres.superuser), owner)
