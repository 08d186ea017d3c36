"""Waiting in tests without a clock: poll a condition until it holds, and tell when a thread is parked in a wait.

No helper here has a deadline. A condition that never comes is a hang, and pytest-timeout (pyproject.toml, or a
module's own `timeout` mark) fails the test then; a busy machine only makes a test slower, never wrong. Tests
assert order, outcome and counts, not how long something took.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

POLL = 0.01


def poll_until(condition: Callable[[], object], interval: float = POLL) -> None:
    """Return once condition() is true; the test's timeout is the only limit."""
    while not condition():
        time.sleep(interval)


def stack_of(thread: threading.Thread | int) -> list[tuple[str, str]]:
    """(file name, function) of each frame of a running thread, innermost first; [] once it has ended."""
    ident = thread if isinstance(thread, int) else thread.ident
    frame = sys._current_frames().get(ident) if ident is not None else None
    frames = []
    while frame is not None:
        frames.append((Path(frame.f_code.co_filename).name, frame.f_code.co_name))
        frame = frame.f_back
    return frames


def parked_in(thread: threading.Thread | int, file_name: str, function: str) -> bool:
    """The thread is blocked in a threading primitive (a lock, a condition, an event, a join) somewhere below
    file_name's function: it cannot move on until another thread acts."""
    frames = stack_of(thread)
    return bool(frames) and frames[0][0] == "threading.py" and (file_name, function) in frames


def main_thread_ident() -> int:
    ident = threading.main_thread().ident
    assert ident is not None
    return ident
