"""Run restore sessions (psql, pg_restore) side by side, and stop them all when one fails or on Ctrl-C.

Each task runs on a worker thread and starts its process through `pgdr.run.stream`, registering it here. With
`run_all` the first failure (or a KeyboardInterrupt in the main thread) kills every registered process, cancels the
tasks not yet started and is raised in the caller's thread once the workers have ended, so no child outlives the
command. With `run_each` a failure stops only its own task: the others run to their end (one database's failed
restore must not leave another half-restored), and only Ctrl-C stops them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from pgdr.run import Stream


class Cancelled(Exception):
    """Raised inside a task when another task failed or the command was interrupted."""


class Sessions:
    """The processes the running tasks started, and whether the group was cancelled."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._streams: list[Stream] = []
        self.first_failure: BaseException | None = None

    def add(self, stream: Stream) -> None:
        with self._lock:
            self._streams.append(stream)
            if self._cancelled.is_set():
                stream.process.kill()

    def check(self) -> None:
        """Raise Cancelled once the group is stopping: tasks call it between chunks."""
        if self._cancelled.is_set():
            raise Cancelled

    def stop_all(self) -> None:
        with self._lock:
            self._cancelled.set()
            for stream in self._streams:
                if stream.process.poll() is None:
                    stream.process.kill()

    def fail(self, error: BaseException) -> None:
        """Remember the failure that stops the group (not the ones the stop causes), then stop it."""
        with self._lock:
            if self.first_failure is None and not self._cancelled.is_set():
                self.first_failure = error
        self.stop_all()


Task = Callable[[Sessions], None]


def run_all(tasks: Sequence[Task], jobs: int) -> None:
    """Run tasks at most `jobs` at a time, in the order given (put the longest first)."""
    sessions = Sessions()
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks))), thread_name_prefix="pgdr-session")
    try:
        futures = [pool.submit(_guarded, task, sessions) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        if sessions.first_failure is not None:
            raise sessions.first_failure
        for future in futures:
            future.result()
    except BaseException:
        sessions.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _guarded(task: Task, sessions: Sessions) -> None:
    sessions.check()
    try:
        task(sessions)
    except BaseException as error:
        sessions.fail(error)  # at once, from this thread: the next queued task must not start
        raise


def run_each(tasks: Sequence[Task], jobs: int) -> list[Exception | None]:
    """Run every task, at most `jobs` at a time, in the order given; a task's failure stops no other. Returns each
    task's exception (None: it succeeded), in the tasks' order. A KeyboardInterrupt stops them all and is raised."""
    sessions = Sessions()
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks))), thread_name_prefix="pgdr-session")
    try:
        futures = [pool.submit(_collected, task, sessions) for task in tasks]
        wait(futures)
        outcomes = [future.result() for future in futures]
    except BaseException:
        sessions.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return outcomes


def _collected(task: Task, sessions: Sessions) -> Exception | None:
    sessions.check()
    try:
        task(sessions)
    except Exception as error:  # the task's own failure: its result, not the group's
        return error
    return None
