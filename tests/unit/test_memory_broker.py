"""InMemoryBroker specifics: sharing one broker between threads and event loops, URLs, closing.

The protocol itself is covered by the conformance suite (tests/conformance).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import InvalidArgumentError
from taskq.task import TaskMessage

T = TypeVar("T")


def _message(task_id: str, queue: str = "q") -> TaskMessage:
    return TaskMessage(id=task_id, type="t", payload=b"", queue=queue)


class _LoopThread:
    """An event loop running in its own thread, as the sync Client and the worker use."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def loops() -> Iterator[tuple[_LoopThread, _LoopThread]]:
    pair = (_LoopThread(), _LoopThread())
    yield pair
    for thread in pair:
        thread.stop()


def test_an_enqueue_from_another_thread_wakes_a_waiting_dequeue_at_once(
    loops: tuple[_LoopThread, _LoopThread],
) -> None:
    client, worker = loops
    broker = InMemoryBroker()
    waiting = asyncio.run_coroutine_threadsafe(
        broker.dequeue(["q"], count=1, lease=30_000, wait=5_000), worker.loop
    )
    time.sleep(0.05)
    started = time.monotonic()
    client.run(broker.enqueue(_message("a")))
    deliveries = waiting.result(5)
    assert time.monotonic() - started < 0.5
    assert [d.message.id for d in deliveries] == ["a"]


def test_consumers_on_two_loops_share_one_broker_without_duplicates(
    loops: tuple[_LoopThread, _LoopThread],
) -> None:
    broker = InMemoryBroker()
    total = 2_000
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    async def consume() -> None:
        while True:
            deliveries = await broker.dequeue(["q"], count=5, lease=30_000, wait=200)
            if not deliveries:
                return
            with lock:
                seen.update(d.message.id for d in deliveries)
            for delivery in deliveries:
                await broker.done(delivery.ref)

    async def produce() -> None:
        for i in range(total):
            await broker.enqueue(_message(f"t{i}"))

    consumers = [asyncio.run_coroutine_threadsafe(consume(), t.loop) for t in loops]
    asyncio.run(produce())
    for consumer in consumers:
        consumer.result(30)
    assert len(seen) == total
    assert max(seen.values()) == 1


def test_a_cancellation_reaches_a_subscriber_on_another_loop(
    loops: tuple[_LoopThread, _LoopThread],
) -> None:
    client, worker = loops
    broker = InMemoryBroker()

    async def first_cancellation() -> str:
        subscription = await broker.subscribe_cancellations()
        ready.set()
        async for task_id in subscription:
            await subscription.aclose()
            return task_id
        return ""

    ready = threading.Event()
    listening = asyncio.run_coroutine_threadsafe(first_cancellation(), worker.loop)
    assert ready.wait(5)
    client.run(broker.enqueue(_message("a")))
    client.run(broker.dequeue(["q"], count=1, lease=30_000))
    client.run(broker.request_cancel("a"))
    assert listening.result(5) == "a"


async def test_close_ends_a_waiting_dequeue_and_subscriptions() -> None:
    broker = InMemoryBroker()
    subscription = await broker.subscribe_cancellations()

    async def listen() -> list[str]:
        return [task_id async for task_id in subscription]

    listener = asyncio.ensure_future(listen())
    waiting = asyncio.ensure_future(broker.dequeue(["q"], count=1, lease=1_000, wait=10_000))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await broker.close()
    await broker.close()
    assert await asyncio.wait_for(waiting, 2) == []
    assert await asyncio.wait_for(listener, 2) == []
    assert time.monotonic() - started < 0.5


async def test_a_closed_broker_keeps_its_tasks_and_keeps_working() -> None:
    broker = InMemoryBroker()
    await broker.enqueue(_message("a"))
    await broker.close()
    (delivery,) = await broker.dequeue(["q"], count=1, lease=1_000)
    assert delivery.message.id == "a"


def test_an_enqueue_survives_a_waiter_whose_loop_has_closed() -> None:
    broker = InMemoryBroker()
    loop = asyncio.new_event_loop()
    task = loop.create_task(broker.dequeue(["q"], count=1, lease=1_000, wait=60_000))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not task.done()
    loop.close()
    asyncio.run(broker.enqueue(_message("a")))
    assert asyncio.run(broker.queue_stats("q")).pending == 1


def test_each_memory_url_gives_a_fresh_empty_broker() -> None:
    first = taskq.connect("memory://")
    second = taskq.connect("memory://")
    assert isinstance(first, InMemoryBroker) and isinstance(second, InMemoryBroker)
    assert first is not second
    asyncio.run(first.enqueue(_message("a")))
    assert asyncio.run(second.queues()) == []


def test_from_url_refuses_another_scheme() -> None:
    with pytest.raises(InvalidArgumentError):
        InMemoryBroker.from_url("redis://localhost")


async def test_the_default_clock_is_the_system_clock() -> None:
    broker = InMemoryBroker()
    assert abs(await broker.now() - time.time() * 1000) < 1_000
