"""RedisBroker across a Redis restart (standalone, AOF with ``appendfsync always``).

A consumer blocked in ``dequeue(wait=...)`` sees the connection drop; the same
broker object must reconnect, deliver a task enqueued after the restart, and
still hold every task acknowledged before it. Redis forgets its script cache
on a restart, so this also proves NOSCRIPT is handled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

import taskq
from taskq.brokers.base import Broker, Delivery
from taskq.errors import BrokerError
from taskq.task import TaskMessage, TaskState
from taskq.testing.servers import RedisServerFactory

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

LEASE = 30_000
RECONNECT_BOUND = 5.0  # reliability.md row 11: clients reconnect within 5 s
T = TypeVar("T")


def _message(queue: str, task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="restart:task", payload=task_id.encode(), queue=queue)


async def _until_ok(call: Callable[[], Awaitable[T]], bound: float) -> T:
    """Retry ``call`` on broker errors (the server may still be coming back) for ``bound`` s."""
    deadline = time.monotonic() + bound
    while True:
        try:
            return await call()
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _wait_for_delivery(broker: Broker, queue: str, bound: float) -> tuple[Delivery, int]:
    """Dequeue from ``queue`` with a blocking wait, as a worker does; return (delivery, errors)."""
    errors = 0
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            deliveries = await broker.dequeue([queue], count=1, lease=LEASE, wait=1_000)
        except BrokerError:
            errors += 1
            await asyncio.sleep(0.05)
            continue
        if deliveries:
            return deliveries[0], errors
    raise AssertionError(f"nothing delivered from {queue!r} within {bound} s")


async def test_a_waiting_consumer_survives_a_redis_restart_and_nothing_acknowledged_is_lost(
    redis_server_factory: RedisServerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = redis_server_factory(aof=True)
    broker = taskq.connect(server.url)
    try:
        for n in range(3):
            await broker.enqueue(_message("kept", f"before-{n}"))
        await broker.schedule(_message("kept", "scheduled"), await broker.now() + 3_600_000)

        consumer = asyncio.create_task(_wait_for_delivery(broker, "live", bound=20))
        await asyncio.sleep(0.3)
        assert not consumer.done(), "the consumer should be blocked waiting on an empty queue"
        pid_before = server.pid

        await asyncio.to_thread(server.restart)  # SIGKILL, then start on the same port and dir
        back_up = time.monotonic()
        assert server.pid != pid_before

        await _until_ok(lambda: broker.enqueue(_message("live", "after")), RECONNECT_BOUND)
        reconnected = time.monotonic() - back_up
        delivery, consumer_errors = await asyncio.wait_for(consumer, 25)
        delivered = time.monotonic() - back_up
        assert delivery.message.id == "after"
        await broker.done(delivery.ref)

        with capsys.disabled():
            print(
                f"\n[measured] redis restart: first enqueue OK {reconnected * 1000:.0f} ms "
                f"after the server was back; the waiting consumer got the new task after "
                f"{delivered * 1000:.0f} ms ({consumer_errors} errors seen by the consumer)"
            )
        assert reconnected < RECONNECT_BOUND

        stats = await broker.queue_stats("kept")
        assert (stats.pending, stats.scheduled) == (3, 1)
        deliveries = await broker.dequeue(["kept"], count=10, lease=LEASE)
        assert [d.message.id for d in deliveries] == ["before-0", "before-1", "before-2"]
        assert (await broker.get_task("kept", "scheduled")).state is TaskState.SCHEDULED
    finally:
        await broker.close()


async def test_a_flushed_script_cache_is_reloaded_transparently(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = taskq.connect(server.url)
    try:
        await broker.enqueue(_message("q", "one"))
        server.call("SCRIPT", "FLUSH")
        await broker.enqueue(_message("q", "two"))
        server.call("SCRIPT", "FLUSH")
        deliveries = await broker.dequeue(["q"], count=2, lease=LEASE)
        server.call("SCRIPT", "FLUSH")
        await broker.done(deliveries[0].ref)
        assert [d.message.id for d in deliveries] == ["one", "two"]
        assert (await broker.queue_stats("q")).active == 1
    finally:
        await broker.close()


async def test_a_restart_without_persistence_empties_the_broker_without_hanging(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(aof=False)
    broker = taskq.connect(server.url)
    try:
        await broker.enqueue(_message("q", "volatile"))
        await asyncio.to_thread(server.restart)
        started = time.monotonic()
        await _until_ok(lambda: broker.enqueue(_message("q", "fresh")), RECONNECT_BOUND)
        deliveries = await asyncio.wait_for(broker.dequeue(["q"], count=5, lease=LEASE), 5)
        assert [d.message.id for d in deliveries] == ["fresh"]
        assert time.monotonic() - started < RECONNECT_BOUND
    finally:
        await broker.close()
