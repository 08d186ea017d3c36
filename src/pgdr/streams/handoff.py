"""Hand items to a background thread that consumes them in order, so producing and consuming overlap.

A backup reads pg_dumpall's output and scans it (pure Python, holding the GIL) while a worker compresses, hashes
and writes the previous chunks (C code that releases the GIL). The queue between them is bounded, so memory stays
flat: when the worker falls behind, the producer waits.

Failures cross the thread boundary unchanged: the worker's exception, with its own type, is raised in the
producer's thread by the next `put` and by `close`, so a full disk still reaches the user as a StorageError and
stops the producer at once instead of letting it fill the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

Item = TypeVar("Item")
DEFAULT_CAPACITY = 8  # items waiting; with 1 MiB chunks at most ~10 MiB are held (queued, consumed, produced)
ABANDON_AFTER_SECONDS = 10.0


class _Stop:
    """The end of the stream, queued after the last item."""


_STOP = _Stop()


class Handoff(Generic[Item]):
    """`put` items from one thread; a worker thread runs `consume` on each, in order.

    Use it as a context manager: a normal exit is `close` (consume everything, then raise the worker's failure if
    it had one), an exit by exception is `abort` (consume nothing more, never raise).
    """

    def __init__(self, consume: Callable[[Item], None], capacity: int = DEFAULT_CAPACITY,
                 name: str = "pgdr-handoff") -> None:
        self._consume = consume
        self._queue: queue.Queue[Item | _Stop] = queue.Queue(maxsize=capacity)
        self._failure: BaseException | None = None
        self._stopping = False
        self._finished = False
        # A daemon, so that a worker stuck in a hung write that `abort` gave up on cannot keep pgdr alive.
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> Handoff[Item]:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is None:
            self.close()
        else:
            self.abort()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def put(self, item: Item) -> None:
        """Queue an item, waiting while the queue is full; raise the worker's failure if it had one."""
        self._raise_failure()
        self._queue.put(item)  # never waits forever: after a failure the worker keeps emptying the queue
        self._raise_failure()

    def close(self) -> None:
        """Wait until every queued item is consumed and the worker has ended; raise its failure if it had one."""
        if self._finished:
            self._raise_failure()
            return
        try:
            self._queue.put(_STOP)
            self._thread.join()
        except BaseException:  # Ctrl-C while waiting for a slow worker
            self.abort()
            raise
        self._finished = True
        self._raise_failure()

    def abort(self, wait_seconds: float = ABANDON_AFTER_SECONDS) -> bool:
        """Stop the worker without consuming what is still queued, for a producer that is giving up. Never raises
        the worker's failure (another error is on its way). Waits up to wait_seconds for the item being consumed;
        returns whether the worker stopped (if not, it is left behind and ends with the process)."""
        self._stopping = True
        self._finished = True
        while self._thread.is_alive():
            self._discard_queued()
            try:
                self._queue.put_nowait(_STOP)
                break
            except queue.Full:  # another thread put an item in between: empty the queue again
                continue
        self._thread.join(wait_seconds)
        return not self._thread.is_alive()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _discard_queued(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _work(self) -> None:
        """Consume until the stop mark. After a failure (or an abort) keep taking items without consuming them, so
        a producer waiting on a full queue is released and learns about the failure."""
        while not isinstance(item := self._queue.get(), _Stop):
            if self._failure is not None or self._stopping:
                continue
            try:
                self._consume(item)
            except BaseException as error:  # any type, re-raised as it is in the producer's thread
                self._failure = error
            del item  # do not hold a consumed chunk while waiting for the next one
