"""One writer at a time: an advisory lock per cluster state folder, held by backup, restore, clean and recover.

A second pgdr on the same cluster refuses at once with who holds the lock (or waits with --wait). The lock is
re-entrant within one process, so `restore --clean` can take its own safety backup.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from pgdr.errors import Refused

LOCK_NAME = ".pgdr.lock"
P = ParamSpec("P")
R = TypeVar("R")
_held: dict[Path, tuple[IO[str], int]] = {}


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def describe_holder(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        return "another pgdr"
    return f"pgdr {holder.get('command', '?')} (pid {holder.get('pid', '?')}, since {holder.get('since', '?')})"


def _try_lock(handle: IO[str], wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


@contextmanager
def exclusive(state_dir: Path, command: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the cluster's lock for the duration; refuse with the holder's identity when it is taken."""
    path = lock_path(state_dir).resolve()
    if path in _held:
        handle, depth = _held[path]
        _held[path] = (handle, depth + 1)
        try:
            yield
        finally:
            _held[path] = (handle, _held[path][1] - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        if not _try_lock(handle, wait_seconds):
            raise Refused(
                f"{describe_holder(handle)} is already working on this cluster",
                "wait for it to finish, or re-run with --wait SECONDS",
            )
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command, "argv": sys.argv[1:2],
                                 "since": datetime.now(UTC).isoformat(timespec="seconds")}))
        handle.flush()
        _held[path] = (handle, 1)
        try:
            yield
        finally:
            del _held[path]
    finally:
        handle.close()


def locked(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an action whose first argument is the Context: it runs holding the cluster's lock."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            context = args[0]
            with exclusive(context.settings.state_dir, command, getattr(context, "lock_wait", 0.0)):  # type: ignore[attr-defined]
                return function(*args, **kwargs)

        return wrapper

    return decorate
