"""run_all: tasks side by side, at most `jobs` at a time, and the first failure stops every process.

No clock decides an outcome: tasks wait for events the test sets once every worker is seen parked in its task
(tests/sync_helpers.py), and a process the stop did not kill would end by itself with status 0, not by SIGKILL.
A hang is caught by the timeout.
"""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest

from pgdr.concurrency import Cancelled, Sessions, run_all
from pgdr.errors import StageFailed
from pgdr.run import stream
from sync_helpers import parked_in, poll_until

pytestmark = pytest.mark.timeout(60)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[str] = []
        self.threads: set[str] = set()

    def task(self, name: str, gate: threading.Event | None = None):
        def run(sessions: Sessions) -> None:
            with self.lock:
                self.started.append(name)
                self.threads.add(threading.current_thread().name)
                self.running += 1
                self.most = max(self.most, self.running)
            if gate is not None:
                gate.wait()  # held until the test has counted the tasks running at once
            with self.lock:
                self.running -= 1

        return run


def session_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("pgdr-session")]


def test_tasks_run_side_by_side_but_never_more_than_jobs() -> None:
    """Every task is held: once all are handed to run_all and each worker holds one, as many run at once as
    run_all allows, and no more can start."""
    recorder, gate = Recorder(), threading.Event()
    runner = threading.Thread(target=run_all, args=([recorder.task(str(number), gate) for number in range(6)], 3),
                              daemon=True)
    runner.start()
    try:  # every task handed over (run_all waits for the first result), every worker holding one
        poll_until(lambda: parked_in(runner, "_base.py", "wait") and bool(session_threads())
                   and all(parked_in(thread, "test_concurrency.py", "run") for thread in session_threads()))
        running_at_once = recorder.running
    finally:
        gate.set()  # a failing test must not leave the pool's workers (joined at exit) blocked
    runner.join()
    assert running_at_once == 3, f"{running_at_once} tasks ran at once with jobs = 3"
    assert recorder.most == 3
    assert sorted(recorder.started) == [str(number) for number in range(6)]


def test_tasks_start_in_the_order_given() -> None:
    recorder = Recorder()
    run_all([recorder.task(name) for name in "abcde"], jobs=1)
    assert recorder.started == list("abcde")


def sleeper(started: list[subprocess.Popen[bytes]], running: threading.Event):
    """A session that would end by itself (status 0) long after the test, unless it is killed."""

    def run(sessions: Sessions) -> None:
        with stream(["sleep", "300"], stage="sleep 300", direction="write") as process:
            sessions.add(process)
            started.append(process.process)
            running.set()
            process.process.wait()

    return run


def test_the_first_failure_is_raised_and_kills_the_other_sessions() -> None:
    started: list[subprocess.Popen[bytes]] = []
    running = threading.Event()

    def failing(sessions: Sessions) -> None:
        running.wait()  # a session is under way when this one fails
        raise StageFailed("psql (database crm)", "exit status 3: ERROR: boom")

    with pytest.raises(StageFailed, match="boom") as failure:
        run_all([sleeper(started, running), failing, sleeper(started, running)], jobs=2)
    assert failure.value.stage == "psql (database crm)"
    assert len(started) == 1  # the third task was cancelled before it started
    assert [process.returncode for process in started] == [-signal.SIGKILL], "the running session was not stopped"


def test_an_interrupt_stops_everything_and_is_raised_as_such() -> None:
    started: list[subprocess.Popen[bytes]] = []
    running = threading.Event()

    def interrupted(sessions: Sessions) -> None:
        running.wait()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_all([sleeper(started, running), interrupted], jobs=2)
    assert [process.returncode for process in started] == [-signal.SIGKILL], "the running session was not stopped"


def test_a_session_added_after_the_stop_is_killed_at_once() -> None:
    sessions = Sessions()
    sessions.stop_all()
    with pytest.raises(StageFailed, match="SIGKILL"), stream(["sleep", "300"], stage="sleep",
                                                              direction="write") as process:
        sessions.add(process)
    with pytest.raises(Cancelled):
        sessions.check()
