"""Handoff: items consumed in order on a worker thread, a bounded queue that makes the producer wait, the worker's
failure raised with its own type in the producer's thread (at put and at close), and an abort that never hangs.

No clock decides an outcome: a thread "waits" when its stack shows it parked in a threading primitive inside
Handoff (tests/sync_helpers.py), consumers are held by gates the test opens, and a hang is caught by the timeout.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from pgdr.errors import ExitCode, StorageError
from pgdr.streams.handoff import Handoff
from sync_helpers import main_thread_ident, parked_in, poll_until

pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the whole run


def disk_full() -> StorageError:
    return StorageError("disk full while writing /backups/x.sql.gz", "free space in /backups or move backup.dir")


def waits_in_put(thread: threading.Thread | int) -> bool:
    return parked_in(thread, "handoff.py", "put")


def stuck_in_put(producer: Producer, handoff: Handoff[int], consumer: Gated) -> bool:
    """The producer waits for room, and none can come: the queue is full and the consumer holds its item."""
    return consumer.started.is_set() and handoff._queue.full() and waits_in_put(producer)


def waits_in_abort(thread: threading.Thread | int) -> bool:
    return parked_in(thread, "handoff.py", "abort")


def when(condition: Callable[[], bool], action: Callable[[], None]) -> threading.Thread:
    """On a helper thread: wait until condition holds, then act (e.g. open a gate once the main thread waits)."""

    def run() -> None:
        poll_until(condition)
        action()

    helper = threading.Thread(target=run, daemon=True)
    helper.start()
    return helper


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
    poll_until(lambda: stuck_in_put(producer, handoff, consumer) or not producer.is_alive())
    assert producer.is_alive(), "the producer put all 20 items although the consumer held the first one"
    assert producer.put_done == 5  # one item held by the consumer, four queued, the sixth put waits for room

    consumer.gate.set()
    producer.join()
    handoff.close()
    assert producer.error is None
    assert consumer.consumed == list(range(20))


def test_a_slow_consumer_bounds_how_far_the_producer_runs_ahead() -> None:
    """The consumer takes one item per step the test allows; before each step the producer has run as far
    ahead as it can (it waits in put, or it is done), and that is never more than the queue and the item in hand."""
    consumed: list[int] = []
    steps = threading.Semaphore(0)

    def slow(item: int) -> None:
        steps.acquire()
        consumed.append(item)

    handoff: Handoff[int] = Handoff(slow, capacity=3)
    producer = Producer(handoff, 40)
    producer.start()
    ahead: list[int] = []

    def settled() -> bool:
        holding = parked_in(handoff._thread, "test_handoff.py", "slow")
        return holding and (not producer.is_alive() or (handoff._queue.full() and waits_in_put(producer)))

    while len(consumed) < 40:
        done = len(consumed)
        poll_until(settled)
        ahead.append(producer.put_done - done)
        steps.release()
        poll_until(lambda: len(consumed) > done)  # noqa: B023 - evaluated within this iteration
    producer.join()
    handoff.close()
    assert consumed == list(range(40))
    assert max(ahead) == 3 + 1, ahead  # queued, and the one in the consumer's hands
    assert producer.error is None


def test_a_failure_of_the_worker_is_raised_by_the_next_put_with_its_type() -> None:
    failure = disk_full()
    consumed: list[int] = []

    def write(item: int) -> None:
        consumed.append(item)
        if item == 3:
            raise failure

    handoff: Handoff[int] = Handoff(write, capacity=2)
    for item in range(4):
        handoff.put(item)
    poll_until(lambda: handoff._failure is not None)  # the worker has failed on item 3
    with pytest.raises(StorageError) as raised:
        handoff.put(4)  # the very next put
    assert raised.value is failure
    assert raised.value.exit_code == ExitCode.STORAGE and "free space" in raised.value.hint
    assert consumed == [0, 1, 2, 3]
    handoff.abort()
    assert not handoff.running


def test_a_producer_waiting_on_a_full_queue_is_released_when_the_worker_fails() -> None:
    consumer = Gated(fail_with=disk_full())
    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    producer = Producer(handoff, 1000)
    producer.start()
    poll_until(lambda: stuck_in_put(producer, handoff, consumer))
    assert producer.put_done == 3  # one item held by the consumer, two queued: the producer waits for room

    consumer.gate.set()  # the write in progress fails
    producer.join()  # a producer left blocked is a hang: the timeout fails the test
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
    poll_until(lambda: parked_in(handoff._thread, "handoff.py", "_work"))  # the worker waits for an item
    assert handoff.abort(wait_seconds=3600) is True  # a worker that never stopped would hang here
    assert not handoff.running


def test_abort_with_a_full_queue_and_a_slow_worker_skips_the_queued_items() -> None:
    consumer = Gated()
    handoff: Handoff[int] = Handoff(consumer, capacity=8)
    for item in range(9):  # one item in the worker's hands, the queue is full, and the producer goes away
        handoff.put(item)
    when(lambda: waits_in_abort(main_thread_ident()), consumer.gate.set)  # the slow item ends during the abort
    assert handoff.abort(wait_seconds=3600) is True
    assert consumer.consumed == [0], "abort consumed the queued items"
    assert not handoff.running


def test_abort_gives_up_on_a_worker_stuck_in_its_item() -> None:
    consumer = Gated()
    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    for item in range(3):
        handoff.put(item)
    consumer.started.wait()

    assert handoff.abort(wait_seconds=0.01) is False  # the worker is still in its write, the caller moves on
    assert handoff.running and consumer.consumed == []

    consumer.gate.set()  # the stuck write returns: the worker ends without consuming the rest
    handoff._thread.join()
    assert consumer.consumed == [0]


def test_an_exception_in_the_producer_aborts_the_worker_and_is_not_replaced() -> None:
    consumer = Gated()
    when(lambda: waits_in_abort(main_thread_ident()), consumer.gate.set)  # item 0 ends once the abort began
    with pytest.raises(KeyboardInterrupt), Handoff(consumer) as handoff:
        for item in range(8):
            handoff.put(item)
        consumer.started.wait()  # item 0 in the worker's hands, the others queued
        raise KeyboardInterrupt
    assert consumer.consumed == [0], "the queued items were consumed after the producer's exception"
    assert not handoff.running


def test_a_failure_of_the_worker_does_not_hide_the_producers_own_exception() -> None:
    def write(item: int) -> None:
        raise disk_full()

    with pytest.raises(KeyboardInterrupt), Handoff(write) as handoff:
        handoff.put(1)
        poll_until(lambda: handoff._failure is not None)
        raise KeyboardInterrupt


def test_a_signal_while_the_producer_waits_on_a_full_queue_interrupts_it(interrupt_on_sigusr1: None) -> None:
    consumer = Gated()
    main_thread = main_thread_ident()
    put_before_the_signal: list[int] = []

    def interrupt_then_unblock() -> None:
        # the fourth put waits for room, and none can come: item 0 is in the consumer's hands, 1 and 2 queued
        poll_until(lambda: consumer.started.is_set() and handoff._queue.full() and waits_in_put(main_thread))
        put_before_the_signal.append(len(put))
        signal.pthread_kill(main_thread, signal.SIGUSR1)
        poll_until(lambda: waits_in_abort(main_thread))  # the interrupt reached the with block's exit
        consumer.gate.set()

    handoff: Handoff[int] = Handoff(consumer, capacity=2)
    put: list[int] = []
    helper = threading.Thread(target=interrupt_then_unblock, daemon=True)
    helper.start()
    with pytest.raises(KeyboardInterrupt), handoff:
        for item in range(100):
            handoff.put(item)
            put.append(item)
    helper.join()
    assert put_before_the_signal == [3] and put == [0, 1, 2], "the put that waited for room went through"
    assert consumer.consumed == [0]
    handoff._thread.join()
