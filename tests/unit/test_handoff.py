"""Handoff: items consumed in order on a worker thread, a bounded queue that makes the producer wait, the worker's
failure raised with its own type in the producer's thread (at put and at close), and an abort that never hangs."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from pgdr.errors import ExitCode, StorageError
from pgdr.handoff import Handoff

pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the whole run
PROMPTLY = 5.0  # seconds: far above what each step takes, far below a hang


def disk_full() -> StorageError:
    return StorageError("disk full while writing /backups/x.sql.gz", "free space in /backups or move backup.dir")


def wait_until(condition: Callable[[], bool], seconds: float = PROMPTLY) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


class Gated:
    """A consumer that records its items and holds the first one until the gate opens, like a stalled disk."""

    def __init__(self, fail_with: BaseException | None = None) -> None:
        self.gate = threading.Event()
        self.consumed: list[int] = []
        self.started = threading.Event()
        self.fail_with = fail_with

    def __call__(self, item: int) -> None:
        self.started.set()
        self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        self.consumed.append(item)


class Producer(threading.Thread):
    """Puts items from its own thread, so the test can watch it wait; keeps what put raised."""

    def __init__(self, handoff: Handoff[int], count: int) -> None:
        super().__init__(daemon=True)
        self.handoff = handoff
        self.count = count
        self.put_done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in range(self.count):
                self.handoff.put(item)
                self.put_done += 1
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            self.error = error


@pytest.fixture
def interrupt_on_sigusr1() -> Iterator[None]:
    """SIGUSR1 raises KeyboardInterrupt in the main thread, as pgdr's SIGTERM handler does."""

    def interrupt(signal_number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_items_are_consumed_in_the_order_they_were_put() -> None:
    consumed: list[int] = []
    with Handoff(consumed.append, capacity=3) as handoff:
        for item in range(2000):
            handoff.put(item)
    assert consumed == list(range(2000))
    assert not handoff.running


def test_the_producer_waits_when_the_queue_is_full() -> None:
    consumer = Gated()
    handoff: Handoff[int] = Handoff(consumer, capacity=4)
    producer = Producer(handoff, 20)
    producer.start()
    wait_until(lambda: producer.put_done == 5)  # one item held by the consumer, four queued
    time.sleep(0.3)
    assert producer.put_done == 5 and producer.is_alive(), "the producer did not wait for room in the queue"

    consumer.gate.set()
    producer.join(PROMPTLY)
    handoff.close()
    assert producer.error is None
    assert consumer.consumed == list(range(20))


def test_a_slow_consumer_bounds_how_far_the_producer_runs_ahead() -> None:
    consumed: list[int] = []

    def slow(item: int) -> None:
        time.sleep(0.01)
        consumed.append(item)

    ahead: list[int] = []
    started = time.monotonic()
    with Handoff(slow, capacity=3) as handoff:
        for item in range(40):
            handoff.put(item)
            ahead.append(item + 1 - len(consumed))  # put so far minus consumed so far
    assert consumed == list(range(40))
    assert max(ahead) <= 3 + 1 + 1  # queued, being consumed, and the one the consumer just took off the queue
    assert time.monotonic() - started >= 36 * 0.01  # so the producer waited for the consumer


def test_a_failure_of_the_worker_is_raised_by_the_next_put_with_its_type() -> None:
    failure = disk_full()

    def write(item: int) -> None:
        if item == 3:
            raise failure

    handoff: Handoff[int] = Handoff(write, capacity=2)
    with pytest.raises(StorageError) as raised:
        for item in range(1000):
            handoff.put(item)
            time.sleep(0.001)
    assert raised.value is failure
    assert raised.value.exit_code == ExitCode.STORAGE and "free space" in raised.value.hint
    assert item < 50, "the producer went on long after the worker failed"
    handoff.abort()
    assert not handoff.running


def test_a_producer_waiting_on_a_full_queue_is_released_when_the_worker_fails() -> None:
    consumer = Gated(fail_with=disk_full())
    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    producer = Producer(handoff, 1000)
    producer.start()
    wait_until(lambda: producer.put_done == 3)  # the producer now waits for room

    consumer.gate.set()  # the write in progress fails
    producer.join(PROMPTLY)
    assert not producer.is_alive(), "the producer stayed blocked after the worker failed"
    assert isinstance(producer.error, StorageError)
    assert producer.put_done <= 6
    assert handoff.abort() is True


def test_a_failure_on_the_last_items_is_raised_by_close_with_its_type() -> None:
    failure = disk_full()

    def write(item: int) -> None:
        if item == 9:
            raise failure

    with pytest.raises(StorageError) as raised:  # the failure comes out of the with's exit
        with Handoff(write) as handoff:
            for item in range(10):
                handoff.put(item)
    assert raised.value is failure
    assert not handoff.running


def test_abort_stops_a_worker_that_waits_for_items() -> None:
    handoff: Handoff[int] = Handoff(lambda item: None)
    started = time.monotonic()
    assert handoff.abort() is True
    assert time.monotonic() - started < PROMPTLY
    assert not handoff.running


def test_abort_with_a_full_queue_and_a_slow_worker_skips_the_queued_items() -> None:
    consumed: list[int] = []

    def slow(item: int) -> None:
        time.sleep(0.2)
        consumed.append(item)

    handoff: Handoff[int] = Handoff(slow, capacity=8)
    for item in range(9):  # the queue is full and the producer goes away
        handoff.put(item)
    started = time.monotonic()
    assert handoff.abort() is True
    assert time.monotonic() - started < 1.0
    assert len(consumed) <= 2, "abort consumed the queued items"
    assert not handoff.running


def test_abort_gives_up_on_a_worker_stuck_in_its_item() -> None:
    consumer = Gated()
    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    for item in range(3):
        handoff.put(item)
    consumer.started.wait(PROMPTLY)

    started = time.monotonic()
    assert handoff.abort(wait_seconds=0.2) is False  # the worker is still in its write, the caller moves on
    assert time.monotonic() - started < PROMPTLY

    consumer.gate.set()  # the stuck write returns: the worker ends without consuming the rest
    wait_until(lambda: not handoff.running)
    assert consumer.consumed == [0]


def test_an_exception_in_the_producer_aborts_the_worker_and_is_not_replaced() -> None:
    consumed: list[int] = []

    def slow(item: int) -> None:
        time.sleep(0.05)
        consumed.append(item)

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), Handoff(slow) as handoff:
        for item in range(8):
            handoff.put(item)
        raise KeyboardInterrupt
    assert time.monotonic() - started < 1.0
    assert len(consumed) < 8
    assert not handoff.running


def test_a_failure_of_the_worker_does_not_hide_the_producers_own_exception() -> None:
    def write(item: int) -> None:
        raise disk_full()

    with pytest.raises(KeyboardInterrupt), Handoff(write) as handoff:
        handoff.put(1)
        wait_until(lambda: handoff._failure is not None)
        raise KeyboardInterrupt


def test_a_signal_while_the_producer_waits_on_a_full_queue_interrupts_it(interrupt_on_sigusr1: None) -> None:
    consumer = Gated()
    main_thread = threading.get_ident()

    def interrupt_then_unblock() -> None:
        signal.pthread_kill(main_thread, signal.SIGUSR1)
        time.sleep(0.2)
        consumer.gate.set()

    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    timer = threading.Timer(0.3, interrupt_then_unblock)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), handoff:
        for item in range(100):
            handoff.put(item)  # blocks at the fourth item until the signal arrives
    timer.join()
    assert time.monotonic() - started < PROMPTLY
    assert consumer.consumed == [0]
    wait_until(lambda: not handoff.running)
