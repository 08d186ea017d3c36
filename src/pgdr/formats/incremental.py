"""Incremental base backups (PostgreSQL 17+, `backup.incremental = true`): chains of base backups, and the data
directory a chain becomes.

Backup: every physical base backup keeps a copy of its backup_manifest beside it (`<key>.backup_manifest`,
through the backup's own codecs: compressed, and encrypted when the backup is). With backup.incremental, the
next base backup hands the newest one's copy to `pg_basebackup --incremental`: the server sends only the blocks
changed since, which its WAL summaries name (summarize_wal = on). The host that took a base backup also keeps
its backup_manifest (state_dir, 0600): an encrypted copy in storage needs the age identity, which a backup host
need not hold. Either copy is used only if its sha256 is the one the base backup's manifest recorded.

A full base backup is taken instead, and the reason said, whenever an incremental could not be taken or recovered
from: a server older than 17, summarize_wal off, no earlier base backup of this cluster on its current timeline
in every target, a chain already backup.max_incrementals long, the WAL summaries since the earlier one gone, or
no intact copy of its backup_manifest. A backup never fails for wanting to be incremental.

Recovery: an incremental is a data directory only together with every base backup it is based on, back to a
full one: its chain. Each is checked and extracted like a full one (hostile members refused, pg_verifybackup),
then `pg_combinebackup` writes the data directory from them, oldest first. A chain with a link missing cannot
start a recovery (pgdr.wal.recovery, pgdr.wal.reading); retention keeps the whole chain of every base backup
it keeps (pgdr.retention).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pgdr.artifact import BackupKey
from pgdr.catalog import BackupRecord, chain_of, list_backups
from pgdr.context import Context
from pgdr.errors import ExitCode, PgdrError
from pgdr.formats.codecs import age_identity, age_recipients
from pgdr.formats.plain import codec_of
from pgdr.postgres.binaries import Toolset
from pgdr.postgres.connect import connect
from pgdr.run import RunAs, child_environment, run
from pgdr.storage import Storage
from pgdr.storage.fanout import FanoutUpload
from pgdr.streams.decoder import decoded
from pgdr.streams.encoder import Encoder

MANIFEST_COPY_SUFFIX = ".backup_manifest"
INCREMENTAL_MAJOR = 17
HINT_SUMMARIZE = ("`ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();` as a superuser (`pgdr up` does it "
                  "for the cluster it manages)")


def manifest_copy_key(key: BackupKey) -> str:
    """Where the copy of a base backup's backup_manifest is kept: the next incremental is taken against it."""
    return key.key + MANIFEST_COPY_SUFFIX


@dataclass(frozen=True)
class ServerState:
    """What decides whether the server can take an incremental now."""

    major: int
    summarize_wal: bool
    system_identifier: str
    timeline: int


def server_state(context: Context) -> ServerState:
    with connect(context.superuser_endpoint()) as connection:
        row = connection.execute(
            "SELECT current_setting('server_version_num')::int / 10000, "
            "coalesce(current_setting('summarize_wal', true), 'off'), "
            "(SELECT system_identifier::text FROM pg_control_system()), "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").fetchone()
    assert row is not None
    return ServerState(int(row[0]), row[1] == "on", str(row[2]), int(row[3]))


def incremental_base(context: Context, storages: list[Storage], scratch: Path) -> tuple[BackupRecord, Path] | None:
    """The base backup the next one is an incremental of, with its backup_manifest fetched into `scratch` and
    checked against the digest its manifest recorded; None (and why, said) for a full one."""
    parent = choose_parent(context, storages)
    if parent is None:
        return None
    copy = scratch / "previous_backup_manifest"
    assert parent.manifest is not None and parent.manifest.physical is not None
    expected = parent.manifest.physical.backup_manifest_sha256
    try:
        digest = cached_copy(context, copy)
        if digest != expected:  # not this host's newest, or none kept: the copy in storage
            copy.unlink(missing_ok=True)
            digest = fetch_manifest_copy(context, storages[0], parent, copy)
    except PgdrError as error:
        context.output.warn(f"the copy of the backup_manifest of {parent.key} cannot be read ({error.message}): "
                            "taking a full base backup")
        return None
    if digest != expected:
        context.output.warn(f"the copy of the backup_manifest of {parent.key} does not match the digest its manifest "
                            "recorded (altered or damaged): taking a full base backup")
        return None
    context.output.info(f"   incremental against {parent.key} (backup.incremental)")
    return parent, copy


def choose_parent(context: Context, storages: list[Storage]) -> BackupRecord | None:
    """The base backup the next one is an incremental of, or None (and why, said) for a full one."""
    state = server_state(context)
    if state.major < INCREMENTAL_MAJOR:
        context.output.warn(f"backup.incremental needs PostgreSQL {INCREMENTAL_MAJOR} or newer (the server is "
                            f"{state.major}): taking a full base backup")
        return None
    if not state.summarize_wal:
        context.output.warn("backup.incremental needs the server's WAL summaries, and summarize_wal is off: taking a "
                            f"full base backup; to turn it on: {HINT_SUMMARIZE}")
        return None
    records = [record for record in list_backups(storages[0], 0) if record.key.format == "physical"]
    parent, reason = _newest_usable(context, storages, records, state)
    if parent is None:
        context.output.info(f"   a full base backup: {reason}")
    return parent


def _newest_usable(context: Context, storages: list[Storage], records: list[BackupRecord], state: ServerState
                   ) -> tuple[BackupRecord | None, str]:
    if not records or records[-1].manifest is None or records[-1].manifest.physical is None:
        return None, f"no earlier base backup with its manifest in {storages[0].describe()}"
    newest, facts = records[-1], records[-1].manifest.physical
    chain = chain_of(newest, {record.key.key: record for record in records})
    if facts.system_identifier != state.system_identifier or facts.timeline != state.timeline:
        return None, f"the newest one, {newest.key}, is of another cluster or timeline"
    if chain is None:
        return None, f"the newest one, {newest.key}, is an incremental whose chain is incomplete"
    if facts.backup_manifest_sha256 is None:
        return None, f"the newest one, {newest.key}, has no copy of its backup_manifest (taken before pgdr kept one)"
    if len(chain) - 1 >= context.settings.backup.max_incrementals:
        return None, f"{len(chain) - 1} incrementals in a row already (backup.max_incrementals)"
    missing = [storage.describe() for storage in storages
               if not all(storage.exists(manifest_copy_key(link.key)) for link in chain)]
    if missing:
        return None, f"{', '.join(missing)} lacks a base backup of the chain of {newest.key}"
    if not _summaries_since(context, facts.timeline, facts.start_lsn):
        return None, (f"the server's WAL summaries no longer reach back to {newest.key} (wal_summary_keep_time, or "
                      "summarize_wal was off)")
    return newest, ""


def _summaries_since(context: Context, timeline: int, lsn: str) -> bool:
    with connect(context.superuser_endpoint()) as connection:
        row = connection.execute("SELECT EXISTS (SELECT 1 FROM pg_available_wal_summaries() WHERE tli = %s AND "
                                 "start_lsn <= %s::pg_lsn)", (timeline, lsn)).fetchone()
    return bool(row and row[0])


def fetch_manifest_copy(context: Context, storage: Storage, record: BackupRecord, into: Path) -> str:
    """The backup_manifest of `record`, decoded into `into` (created 0600) for `pg_basebackup --incremental`;
    returns its sha256."""
    codec = codec_of(record.key)
    identity = age_identity(context, codec, f"backup {record.key}")
    label = f"the backup_manifest of {record.key}"
    with storage.open_download(manifest_copy_key(record.key)) as handle, \
            decoded(handle, codec, identity, label) as chunks:
        return write_hashed(into, chunks)


def write_hashed(into: Path, chunks: Iterator[bytes]) -> str:
    """`chunks` into a new file (0600 from its creation); their sha256."""
    digest = hashlib.sha256()
    descriptor = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as sink:
        for chunk in chunks:
            sink.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(context: Context) -> Path:
    return context.settings.state_dir / "newest_backup_manifest"


def cached_copy(context: Context, into: Path) -> str | None:
    """The backup_manifest this host kept of the newest base backup it took, copied into `into`; its sha256 says
    whose it is. An encrypted backup's copy in storage needs the age identity, which a backup host may not hold."""
    cache = cache_path(context)
    if not cache.is_file():
        return None
    with cache.open("rb") as handle:
        return write_hashed(into, iter(lambda: handle.read(1 << 20), b""))


def store_manifest_copy(context: Context, storages: list[Storage], key: BackupKey, source: Path) -> None:
    """`source` (the backup_manifest just streamed) through the backup's codecs into every target, and kept by this
    host (0600) for its next incremental."""
    cache = cache_path(context)
    cache.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as kept, source.open("rb") as handle:
        shutil.copyfileobj(handle, kept)
    codec = codec_of(key)
    with FanoutUpload(storages, manifest_copy_key(key)) as upload, Encoder(
        upload.write, codec, context.settings.backup.compression_level, age_recipients(context, codec)
    ) as encoder, source.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            encoder.write(chunk)


def combine(toolset: Toolset, parts: list[Path], output: Path, run_as: RunAs | None) -> None:
    """pg_combinebackup: the data directory of the chain's newest backup, from `parts` (full first) into
    `output`, an empty folder of the server's OS user. No manifest: the parts were each verified against theirs."""
    run([toolset.path("pg_combinebackup"), "--no-manifest", *(str(part) for part in parts), "--output", str(output)],
        stage="pg_combinebackup", run_as=run_as, environment=child_environment({"LC_MESSAGES": "C"}),
        hint="the chain's base backups do not combine: recover from a full base backup (see `pgdr list`)",
        exit_code=ExitCode.INTEGRITY)
