"""run_all: tasks side by side, at most `jobs` at a time, and the first failure stops every process."""

from __future__ import annotations

import threading
import time

import pytest

from pgdr.concurrency import Cancelled, Sessions, run_all
from pgdr.errors import StageFailed
from pgdr.run import stream


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started: list[str] = []

    def task(self, name: str, seconds: float = 0.2):
        def run(sessions: Sessions) -> None:
            with self.lock:
                self.started.append(name)
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(seconds)
            with self.lock:
                self.running -= 1

        return run


def test_tasks_run_side_by_side_but_never_more_than_jobs() -> None:
    recorder = Recorder()
    run_all([recorder.task(str(number)) for number in range(6)], jobs=3)
    assert recorder.most == 3
    assert sorted(recorder.started) == [str(number) for number in range(6)]


def test_tasks_start_in_the_order_given() -> None:
    recorder = Recorder()
    run_all([recorder.task(name, 0.05) for name in "abcde"], jobs=1)
    assert recorder.started == list("abcde")


def sleeper(seconds: str, started: list[object]):
    def run(sessions: Sessions) -> None:
        with stream(["sleep", seconds], stage=f"sleep {seconds}", direction="write") as process:
            sessions.add(process)
            started.append(process.process)
            process.process.wait()

    return run


def failing(sessions: Sessions) -> None:
    time.sleep(0.3)
    raise StageFailed("psql (database crm)", "exit status 3: ERROR: boom")


def test_the_first_failure_is_raised_and_kills_the_other_sessions() -> None:
    started: list[object] = []
    clock = time.monotonic()
    with pytest.raises(StageFailed, match="boom") as failure:
        run_all([sleeper("30", started), failing, sleeper("30", started)], jobs=2)
    assert failure.value.stage == "psql (database crm)"
    assert time.monotonic() - clock < 10  # not the 30 s of the sleeps
    assert len(started) == 1  # the third task was cancelled before it started
    assert all(process.poll() is not None for process in started)  # type: ignore[attr-defined]


def test_an_interrupt_stops_everything_and_is_raised_as_such() -> None:
    started: list[object] = []

    def interrupted(sessions: Sessions) -> None:
        time.sleep(0.3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_all([sleeper("30", started), interrupted], jobs=2)
    assert started and all(process.poll() is not None for process in started)  # type: ignore[attr-defined]


def test_a_session_added_after_the_stop_is_killed_at_once() -> None:
    sessions = Sessions()
    sessions.stop_all()
    with pytest.raises(StageFailed, match="SIGKILL"), stream(["sleep", "30"], stage="sleep",
                                                              direction="write") as process:
        sessions.add(process)
    with pytest.raises(Cancelled):
        sessions.check()
