"""RedisBroker on a real standalone redis-server: what fakeredis cannot show.

Scripts with a ``#!lua`` shebang on Redis 7, NOSCRIPT after a flush, memory
figures, a blocked consumer's wake-up latency, sync clients, and ``close()``
ending a waiting dequeue.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from taskq.brokers.base import Ack
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.task import TaskMessage, TaskState
from taskq.testing.servers import ExternalRedis, RedisServer

pytestmark = pytest.mark.redis


def _message(task_id: str, queue: str = "q") -> TaskMessage:
    return TaskMessage(id=task_id, type="test:task", payload=b'{"n": 1}', queue=queue)


@pytest.fixture
async def admin(redis_server: RedisServer | ExternalRedis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def broker(
    redis_server: RedisServer | ExternalRedis, admin: redis.asyncio.Redis
) -> AsyncIterator[RedisBroker]:
    b = RedisBroker.from_url(redis_server.url)
    yield b
    await b.close()


async def test_scripts_run_with_their_shebang_on_redis_7(
    broker: RedisBroker, admin: redis.asyncio.Redis
) -> None:
    version = (await admin.info("server"))["redis_version"]
    await broker.enqueue(_message("t1"))
    assert broker._shebang is (int(str(version).split(".")[0]) >= 7)


async def test_scripts_are_reloaded_after_script_flush(
    broker: RedisBroker, admin: redis.asyncio.Redis
) -> None:
    await broker.enqueue(_message("t1"))
    await admin.script_flush()
    await broker.enqueue(_message("t2"))
    await admin.script_flush()
    got = await broker.dequeue(["q"], count=2, lease=10_000)
    await admin.script_flush()
    assert await broker.done_many([Ack(d.ref) for d in got]) == [None, None]
    assert [d.message.id for d in got] == ["t1", "t2"]


async def test_times_come_from_the_server_clock(
    broker: RedisBroker, admin: redis.asyncio.Redis
) -> None:
    seconds, micros = await admin.time()
    await broker.enqueue(_message("t1"))
    (delivery,) = await broker.dequeue(["q"], count=1, lease=5_000)
    server_ms = seconds * 1000 + micros // 1000
    assert abs(delivery.started_at - server_ms) < 5_000
    assert delivery.lease_expires_at == delivery.started_at + 5_000
    assert abs(await broker.now() - delivery.started_at) < 5_000


async def test_queue_stats_measure_the_memory_of_the_queue(broker: RedisBroker) -> None:
    await broker.enqueue(_message("t1"))
    small = (await broker.queue_stats("q")).memory_bytes
    for i in range(200):
        await broker.enqueue(_message(f"more-{i}"))
    large = (await broker.queue_stats("q")).memory_bytes
    assert small is not None and large is not None
    assert 0 < small < large


async def test_a_blocked_consumer_wakes_within_milliseconds_of_an_enqueue(
    redis_server: RedisServer | ExternalRedis, broker: RedisBroker
) -> None:
    consumer = RedisBroker.from_url(redis_server.url)
    await consumer.ping()
    latencies = []
    for i in range(15):
        waiting = asyncio.ensure_future(
            consumer.dequeue(["wake"], count=1, lease=10_000, wait=3_000)
        )
        await asyncio.sleep(0.02)  # the consumer is blocked in BLPOP by now
        sent = time.perf_counter()
        await broker.enqueue(_message(f"w{i}", "wake"))
        got = await asyncio.wait_for(waiting, 5)
        latencies.append(time.perf_counter() - sent)
        assert [d.message.id for d in got] == [f"w{i}"]
    await consumer.close()
    # The target is < 10 ms; a loaded CI box gets some slack.
    assert statistics.median(latencies) < 0.05


async def test_close_ends_a_waiting_dequeue(broker: RedisBroker) -> None:
    await broker.ping()
    waiting = asyncio.ensure_future(broker.dequeue(["idle"], count=1, lease=1000, wait=20_000))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await broker.close()
    assert await asyncio.wait_for(waiting, 5) == []
    assert time.monotonic() - started < 2


async def test_a_sync_client_is_used_through_asyncio(
    redis_server: RedisServer | ExternalRedis, admin: redis.asyncio.Redis
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    broker = RedisBroker(client)
    assert await broker.enqueue(_message("t1")) is TaskState.PENDING
    assert await admin.hexists(QueueKeys.for_queue("q").messages, "t1")
    await broker.close()
    client.close()


async def test_an_asyncio_client_of_the_user_is_used_and_left_open(
    redis_server: RedisServer | ExternalRedis, admin: redis.asyncio.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    broker = RedisBroker(client)
    await broker.enqueue(_message("t1"))
    await broker.close()
    assert await client.ping()
    await client.aclose()


async def test_cancellations_reach_a_subscriber_on_another_broker(
    redis_server: RedisServer | ExternalRedis, broker: RedisBroker
) -> None:
    worker = RedisBroker.from_url(redis_server.url)
    subscription = await worker.subscribe_cancellations()
    await broker.enqueue(_message("running"))
    await worker.dequeue(["q"], count=1, lease=10_000)
    assert await broker.request_cancel("running") is TaskState.ACTIVE

    async def first() -> str:
        async for task_id in subscription:
            return task_id
        return ""

    assert await asyncio.wait_for(first(), 5) == "running"
    assert await worker.cancel_requested("q", ["running", "other"]) == {"running"}
    await subscription.aclose()
    await worker.close()
