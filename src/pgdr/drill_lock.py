"""A drill marks the backup it reads, so that prune leaves that backup alone until the drill is done.

The mark is a small object `<key>.drill-lock` written beside the backup in the storage the drill reads from
(local folder or S3), holding who wrote it and when. A marker in the storage, not the cluster lock of
locking.py: a drill may run on another machine than the prune (both only share the bucket), and it must not
block backups on the live cluster. The drill removes its marker when it ends, however it ends; a marker left
by a drill that was killed counts for `retention.drill_lock_max_age` (default 24h), then prune ignores it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pgdr.errors import PgdrError
from pgdr.storage import Storage, StoredObject

SUFFIX = ".drill-lock"


def marker_key(key: str) -> str:
    return key + SUFFIX


@contextmanager
def reading(storage: Storage, key: str, warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold a drill-lock marker on key for the duration. Best effort both ways: a marker that cannot be written
    or removed is a warning, never the drill's failure (stale markers expire)."""
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}
    try:
        storage.put_bytes(marker_key(key), json.dumps(holder).encode() + b"\n")
    except PgdrError as error:  # e.g. read-only credentials: the drill still runs, unprotected from prune
        if warn is not None:
            warn(f"could not mark {key} as read by this drill ({error.message}); a prune meanwhile may delete it")
        yield
        return
    try:
        yield
    finally:
        try:
            storage.delete(marker_key(key))
        except PgdrError as error:  # never mask the drill's own outcome; the marker expires
            if warn is not None:
                warn(f"could not remove the drill marker {marker_key(key)}: {error.message}")


def read_by_drills(objects: Iterable[StoredObject], now: datetime, max_age_seconds: float) -> set[str]:
    """Keys of the backups that a drill is reading: a marker younger than max_age_seconds exists."""
    return {item.key[: -len(SUFFIX)] for item in objects
            if item.key.endswith(SUFFIX) and (now - item.modified).total_seconds() < max_age_seconds}
