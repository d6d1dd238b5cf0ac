"""Enqueue workloads shared by the per-broker micro benchmarks (any Broker)."""

from __future__ import annotations

import asyncio
import time

from taskq.brokers.base import EnqueueRequest, Producer
from taskq.task import TaskMessage

QUEUE = "bench"
PAYLOAD = b'{"user_id": 42, "template": "welcome"}'


def messages(prefix: str, n: int) -> list[TaskMessage]:
    """``n`` small messages for queue ``QUEUE`` with ids ``<prefix>-<i>``."""
    return [
        TaskMessage(id=f"{prefix}-{i}", type="bench:task", payload=PAYLOAD, queue=QUEUE)
        for i in range(n)
    ]


async def enqueue_single(broker: Producer, n: int) -> float:
    """Tasks per second enqueued one call at a time."""
    batch = messages("single", n)
    started = time.perf_counter()
    for message in batch:
        await broker.enqueue(message)
    return n / (time.perf_counter() - started)


async def enqueue_concurrent(broker: Producer, n: int, callers: int) -> float:
    """``callers`` coroutines, each enqueuing one task per call (web handlers, say)."""
    batch = messages("concurrent", n)

    async def caller(mine: list[TaskMessage]) -> None:
        for message in mine:
            await broker.enqueue(message)

    started = time.perf_counter()
    await asyncio.gather(*(caller(batch[i::callers]) for i in range(callers)))
    return n / (time.perf_counter() - started)


async def enqueue_batched(broker: Producer, n: int, batch: int) -> float:
    """Tasks per second enqueued with ``enqueue_many`` in batches of ``batch``."""
    requests = [EnqueueRequest(m) for m in messages("batch", n)]
    started = time.perf_counter()
    for start in range(0, n, batch):
        await broker.enqueue_many(requests[start : start + batch])
    return n / (time.perf_counter() - started)
