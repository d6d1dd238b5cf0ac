"""Conformance: concurrent consumers, producers and recoverers never duplicate or lose a task."""

from __future__ import annotations

import asyncio
from collections import Counter

from taskq.brokers.base import Broker, EnqueueRequest
from taskq.errors import DuplicateTaskError
from taskq.task import TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    OTHER,
    QUEUE,
    ConformanceBase,
    make_message,
    put,
)

__all__ = ["ConcurrencyConformance"]

TASKS = 1_000
CONSUMERS = 8


class ConcurrencyConformance(ConformanceBase):
    """Two consumers never get the same task; nothing is lost under contention."""

    async def test_concurrent_consumers_get_each_task_exactly_once(self, broker: Broker) -> None:
        messages = [make_message() for _ in range(TASKS)]
        for start in range(0, TASKS, 100):
            batch = [EnqueueRequest(m) for m in messages[start : start + 100]]
            assert all(r is TaskState.PENDING for r in await broker.enqueue_many(batch))
        seen: Counter[str] = Counter()

        async def consume() -> None:
            while True:
                deliveries = await broker.dequeue([QUEUE], count=7, lease=HOUR)
                if not deliveries:
                    return
                for delivery in deliveries:
                    seen[delivery.message.id] += 1
                    await broker.done(delivery.ref)

        await asyncio.wait_for(asyncio.gather(*(consume() for _ in range(CONSUMERS))), 60)
        assert set(seen) == {m.id for m in messages}
        assert max(seen.values()) == 1
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.processed) == (0, TASKS)

    async def test_waiting_consumers_share_tasks_produced_concurrently(
        self, broker: Broker
    ) -> None:
        total = 200
        seen: Counter[str] = Counter()

        async def consume() -> None:
            while sum(seen.values()) < total:
                for delivery in await broker.dequeue([OTHER, QUEUE], count=3, lease=HOUR, wait=50):
                    seen[delivery.message.id] += 1
                    await broker.done(delivery.ref)

        async def produce(queue: str) -> list[str]:
            ids = []
            for _ in range(total // 2):
                (message,) = await put(broker, queue=queue)
                ids.append(message.id)
                await asyncio.sleep(0)
            return ids

        consumers = [asyncio.ensure_future(consume()) for _ in range(CONSUMERS)]
        produced = await asyncio.gather(produce(QUEUE), produce(OTHER))
        await asyncio.wait_for(asyncio.gather(*consumers), 30)
        assert set(seen) == set(produced[0]) | set(produced[1])
        assert max(seen.values()) == 1

    async def test_concurrent_recoverers_reclaim_each_expired_task_once(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 50)
        await broker.dequeue([QUEUE], count=50, lease=1_000)
        clock.advance(1_000)
        batches = await asyncio.gather(
            *(broker.reclaim_expired(QUEUE, lease=HOUR, limit=10) for _ in range(10))
        )
        reclaimed = Counter(d.message.id for batch in batches for d in batch)
        assert len(reclaimed) == 50
        assert max(reclaimed.values()) == 1

    async def test_concurrent_unique_enqueues_take_the_lock_once(self, broker: Broker) -> None:
        results = await asyncio.gather(
            *(broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR) for _ in range(10)),
            return_exceptions=True,
        )
        assert sum(r is TaskState.PENDING for r in results) == 1
        assert sum(isinstance(r, DuplicateTaskError) for r in results) == 9
        assert (await broker.queue_stats(QUEUE)).size == 1
