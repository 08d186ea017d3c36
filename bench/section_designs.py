"""Issue 17, item 3: three ways for parallel psql sessions to get their database's part of a plain backup, measured
with the same code around them (pgdr's decoder, its psql feed and globals filter, its session runner), so that only
the way the parts are read differs:

- `alone` (what pgdr does): each session reads and decompresses only its database's compressed member;
- `from-start` (pgdr before): each session decompresses the file from its start and skips to its part;
- `fanout` (the design not taken): one reader decompresses the file once and writes each part to a spool file as
  it goes; the sessions take the parts in file order (a part must have been reached to be read) and read their
  spool file as it grows; a part read is deleted. Disk: up to the whole SQL when the sessions fall behind.

    python3 bench/section_designs.py MODE BACKUP.sql.gz --port PORT --password-env VAR [--jobs 2] [--usage OUT.json]

The target cluster must be fresh; psql connects as postgres over TCP. Not a pgdr command: no check of the file,
no preflight, no OS-user switch; the same for the three.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

from pgdr.artifact import Manifest
from pgdr.concurrency import Sessions, run_all
from pgdr.formats.plain_sections import (
    SectionRange,
    restricted_from_the_start,
    section_ranges,
    stored_range,
    uncompressed_range,
    without_stored_offsets,
)
from pgdr.formats.psql_feed import INDEX_BUILD_MEMORY_MB, LOAD_SESSION_OPTIONS, GlobalsFilter, feed_psql
from pgdr.run import CHUNK_SIZE
from pgdr.streams import Codec
from pgdr.streams.decoder import decoded


class Spool:
    """One part's bytes in a file the reader appends to while its session reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self.done = False
        self.failed = False
        self.changed = threading.Condition()
        self.path.touch(0o600)

    def append(self, data: bytes, out: object) -> None:
        out.write(data)  # type: ignore[attr-defined]
        with self.changed:
            self.written += len(data)
            self.changed.notify_all()

    def close(self, failed: bool = False) -> None:
        with self.changed:
            self.done, self.failed = True, failed
            self.changed.notify_all()

    def chunks(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            position = 0
            while True:
                with self.changed:
                    while position >= self.written and not self.done:
                        self.changed.wait()
                    available, done, failed = self.written - position, self.done, self.failed
                if failed:
                    raise RuntimeError("the reader failed")
                if available:
                    data = handle.read(min(available, CHUNK_SIZE))
                    position += len(data)
                    yield data
                elif done:
                    break
        self.path.unlink()


def fan_out(backup: Path, codec: Codec, ranges: list[SectionRange], spools: list[Spool]) -> None:
    """The reader: the backup decompressed once, each part appended to its spool file."""
    index, position = 0, 0
    out = spools[0].path.open("ab", buffering=0)
    try:
        with backup.open("rb") as handle, decoded(handle, codec, None, "backup") as chunks:
            for data in chunks:
                while data:
                    last = index == len(ranges) - 1
                    take = len(data) if last else min(len(data), ranges[index].end - position)
                    spools[index].append(data[:take], out)
                    data, position = data[take:], position + take
                    if not last and position == ranges[index].end:
                        out.close()
                        spools[index].close()
                        index += 1
                        out = spools[index].path.open("ab", buffering=0)
        out.close()
        spools[index].close()
    except BaseException:
        for spool in spools:
            spool.close(failed=True)
        raise


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["alone", "from-start", "fanout"])
    parser.add_argument("backup", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password-env", required=True)
    parser.add_argument("--psql", default="psql")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--usage", type=Path)
    args = parser.parse_args()
    manifest = Manifest.model_validate_json(args.backup.with_name(args.backup.name + ".manifest.json").read_bytes())
    ranges = section_ranges(manifest)
    if args.mode != "alone":
        ranges = without_stored_offsets(ranges)
    environment = {"PATH": os.environ["PATH"], "PGHOST": "127.0.0.1", "PGPORT": str(args.port), "PGUSER": "postgres",
                   "PGPASSWORD": os.environ[args.password_env],
                   "PGOPTIONS": LOAD_SESSION_OPTIONS.format(memory=INDEX_BUILD_MEMORY_MB)}
    codec = Codec(manifest.compression)
    record = SimpleNamespace(key=SimpleNamespace(compression=codec.compression, encrypted=False, key="backup"))
    uncompressed_size = manifest.uncompressed_size
    try:
        if args.mode == "fanout":
            with tempfile.TemporaryDirectory(dir=args.backup.parent) as folder:
                spools = [Spool(Path(folder) / f"part-{index}") for index in range(len(ranges))]
                reader = threading.Thread(target=fan_out, args=(args.backup, codec, ranges, spools), daemon=True)
                reader.start()
                restore(ranges, lambda part, index: spools[index].chunks(), args, environment)
                reader.join()
        else:
            def pieces(part: SectionRange, index: int) -> Iterator[bytes]:
                handle = args.backup.open("rb")
                last = part.end == uncompressed_size
                if part.stored_start is not None:
                    yield from stored_range(handle, record, part, last)  # type: ignore[arg-type]
                else:
                    yield from uncompressed_range(None, handle, record, part.start,  # type: ignore[arg-type]
                                                  None if last else part.end)
                handle.close()

            restore(ranges, pieces, args, environment)
    finally:
        if args.usage:
            own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            args.usage.write_text(json.dumps({"self": own.ru_utime + own.ru_stime,
                                              "children": children.ru_utime + children.ru_stime}))
    return 0


def restore(ranges: list[SectionRange], pieces: Callable[[SectionRange, int], Iterator[bytes]],
            args: argparse.Namespace, environment: dict[str, str]) -> None:
    """Globals first, alone; then the databases `jobs` at a time: biggest first when each part can be read at any
    time, in file order for the fan-out (a session waiting for a part the reader has not reached holds a job)."""
    def task(part: SectionRange, index: int) -> Callable[[Sessions], None]:
        chunks = pieces(part, index)
        return lambda sessions: feed_psql(args.psql, restricted_from_the_start(chunks, part.label),
                                          f"psql ({part.label})", environment, None, None, sessions)

    feed_psql(args.psql, pieces(ranges[0], 0), "psql (globals)", environment, GlobalsFilter("postgres"), None)
    order = list(enumerate(ranges))[1:]
    if args.mode != "fanout":
        order.sort(key=lambda item: item[1].size, reverse=True)
    run_all([task(part, index) for index, part in order], jobs=args.jobs)


if __name__ == "__main__":
    sys.exit(main())
