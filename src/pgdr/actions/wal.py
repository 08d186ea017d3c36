"""pgdr wal stream / pgdr wal mark: the continuous WAL archive (docs/PITR.md).

stream: the client tools and the server checked first (a server that cannot stream is refused with the setting or
the pg_hba.conf line to add), then pgdr.wal.stream runs until SIGTERM or Ctrl-C.
mark: a named restore point, recorded on every target so that `pgdr recover --to-name` finds the base backup
before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import psycopg

from pgdr.context import Context
from pgdr.errors import PgdrError, Refused, UsageError
from pgdr.formats.codecs import age_recipients, backup_codec
from pgdr.postgres.connect import client_environment, session
from pgdr.storage import open_storage
from pgdr.wal.archive import mark_key
from pgdr.wal.replication import Sampler, ensure_slot, preflight
from pgdr.wal.stream import Streamer, Target, earlier_run, receive_argv, spool_lock, status_interval


def stream(context: Context) -> None:
    settings = context.settings
    wal = settings.wal
    endpoint = context.superuser_endpoint()
    toolset, _ = context.client_tools(("pg_receivewal",))
    facts = preflight(endpoint)
    codec = backup_codec(context)
    targets = [Target(name, open_storage(settings, name, context.output.warn)) for name in settings.backup.targets]
    for target in targets:
        earlier_run(target, facts, context.output.warn)
    argv = receive_argv(toolset.path("pg_receivewal"), wal.spool_dir, wal.slot, wal.synchronous,
                        status_interval(wal.rpo_objective))
    context.output.step(f"Streaming WAL from {settings.postgres.host}:{settings.postgres.port} (slot {wal.slot}) "
                        f"through {wal.spool_dir} to {', '.join(settings.backup.targets)}, every "
                        f"{wal.rpo_objective:g}s at the latest")
    with spool_lock(wal.spool_dir), client_environment(endpoint) as environment:
        Streamer(wal.spool_dir, wal, targets, codec, settings.backup.compression_level, age_recipients(context, codec),
                 argv, environment, Sampler(endpoint, wal.slot), lambda: ensure_slot(endpoint, wal.slot), facts,
                 context.output).run()


@dataclass(frozen=True)
class Mark:
    name: str
    lsn: str
    timeline: int
    time: datetime

    def to_json(self) -> bytes:
        return json.dumps({"name": self.name, "lsn": self.lsn, "timeline": self.timeline,
                           "time": self.time.isoformat()}, indent=2).encode() + b"\n"


def mark(context: Context, name: str) -> Mark:
    """pg_create_restore_point(name), recorded as wal/marks/<name>.json on every target. No segment switch: the
    stream stores the growing segment within wal.rpo_objective."""
    try:
        key = mark_key(name)
    except ValueError as error:
        raise UsageError(str(error), "e.g. pgdr wal mark before-migration-42") from None
    settings = context.settings
    storages = [open_storage(settings, target, context.output.warn) for target in settings.backup.targets]
    with session(context.superuser_endpoint()) as connection:
        try:
            row = connection.execute("SELECT lsn::text, substr(pg_walfile_name(lsn), 1, 8), clock_timestamp() "
                                     "FROM pg_create_restore_point(%s) AS lsn", (name,)).fetchone()
        except psycopg.Error as error:
            text = str(error).strip().splitlines()[0]
            if "WAL level not sufficient" in text:
                raise Refused(f"cannot mark {name}: {text}", "set wal_level = replica and restart the server") from None
            raise PgdrError(f"cannot mark {name}: {text}") from None
    assert row is not None
    made = Mark(name, row[0], int(row[1], 16), row[2])
    for storage in storages:
        storage.put_bytes(key, made.to_json())
    return made
