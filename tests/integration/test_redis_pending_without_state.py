"""Pending tasks stored without a state entry, on real Redis and fakeredis.

A plain batch (due now, no group, no unique lock, each message with its
enqueued_at, as the clients always send) is stored as a message and a
pending list entry only: a task with a message and no state is pending
since its enqueued_at. Every by-id operation must see such a task exactly
as one stored with its state entry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import fakeredis.aioredis
import pytest
import redis.asyncio

from taskq.brokers.base import EnqueueRequest
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.errors import QueueNotEmptyError, TaskIDConflictError, TaskStateError
from taskq.task import TaskMessage, TaskState
from taskq.testing import FakeClock
from taskq.testing.servers import ExternalRedis, RedisServer

_ENQUEUED = 1_900_000_000_000
_KEYS = QueueKeys.for_queue("q", "taskq")


def _message(task_id: str, enqueued_at: int = _ENQUEUED) -> TaskMessage:
    return TaskMessage(
        id=task_id, type="test:task", payload=b"{}", queue="q", enqueued_at=enqueued_at
    )


@pytest.fixture(params=["redis", "fakeredis"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    if request.param == "fakeredis":
        fake = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
        yield fake
        await fake.aclose()
        return
    request.applymarker(pytest.mark.redis)
    server: RedisServer | ExternalRedis = request.getfixturevalue("redis_server")
    real = redis.asyncio.Redis.from_url(server.url)
    await real.flushall()
    yield real
    await real.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(_ENQUEUED + 5_000)


@pytest.fixture
async def broker(client: redis.asyncio.Redis, clock: FakeClock) -> AsyncIterator[RedisBroker]:
    b = RedisBroker(client, clock=clock)
    yield b
    await b.close()


async def _put(broker: RedisBroker, *ids: str) -> None:
    states = await broker.enqueue_many([EnqueueRequest(_message(i)) for i in ids])
    assert states == [TaskState.PENDING] * len(ids)


async def test_a_plain_batch_stores_messages_and_list_entries_without_states(
    broker: RedisBroker, client: redis.asyncio.Redis
) -> None:
    await _put(broker, "t1", "t2")
    await broker.enqueue(_message("old", enqueued_at=0))  # no enqueued_at: a state entry
    assert await client.hkeys(_KEYS.states) == [b"old"]
    assert sorted(await client.hkeys(_KEYS.messages)) == [b"old", b"t1", b"t2"]
    assert await client.lrange(_KEYS.pending, 0, -1) == [b"old", b"t2", b"t1"]


async def test_they_are_pending_in_get_list_and_stats_since_their_enqueued_at(
    broker: RedisBroker,
) -> None:
    await _put(broker, "t1", "t2")
    info = await broker.get_task("q", "t1")
    assert info.state is TaskState.PENDING
    listed = await broker.list_tasks("q", TaskState.PENDING)
    assert [t.id for t in listed] == ["t1", "t2"]
    stats = await broker.queue_stats("q")
    assert (stats.size, stats.pending) == (2, 2)
    assert stats.latency == 5_000  # the clock is 5 s past their enqueued_at


async def test_dequeue_takes_them_in_order_and_gives_their_enqueued_at_as_pending_since(
    broker: RedisBroker, client: redis.asyncio.Redis
) -> None:
    await _put(broker, "t1", "t2")
    got = await broker.dequeue(["q"], count=5, lease=60_000)
    assert [d.message.id for d in got] == ["t1", "t2"]
    assert [d.pending_since for d in got] == [_ENQUEUED, _ENQUEUED]
    assert (await broker.get_task("q", "t1")).state is TaskState.ACTIVE
    assert (await broker.queue_stats("q")).active == 2
    assert await client.hget(_KEYS.states, "t1") == b"a0"


async def test_a_reclaimed_task_keeps_its_enqueued_at_as_pending_since(
    broker: RedisBroker, clock: FakeClock
) -> None:
    await _put(broker, "t1")
    await broker.dequeue(["q"], count=1, lease=1_000)
    clock.advance(2_000)
    [reclaimed] = await broker.reclaim_expired("q", lease=60_000)
    assert (reclaimed.message.id, reclaimed.pending_since) == ("t1", _ENQUEUED)


async def test_their_ids_are_taken(broker: RedisBroker) -> None:
    await _put(broker, "t1")
    with pytest.raises(TaskIDConflictError):
        await broker.enqueue(_message("t1"))
    again = await broker.enqueue_many([EnqueueRequest(_message(i)) for i in ("t2", "t1")])
    assert again[0] is TaskState.PENDING and isinstance(again[1], TaskIDConflictError)
    [delivered] = await broker.dequeue(["q"], count=1, lease=60_000)
    assert delivered.message.id == "t1"


async def test_cancel_archive_delete_and_run_find_them_by_id(broker: RedisBroker) -> None:
    await _put(broker, "c", "a", "d", "r")
    assert await broker.request_cancel("c", "q") is TaskState.PENDING
    await broker.archive_task("q", "a")
    await broker.delete_task("q", "d")
    with pytest.raises(TaskStateError, match="is pending"):
        await broker.run_task("q", "r")
    states = {t.id: t.state for t in await broker.list_tasks("q", TaskState.ARCHIVED)}
    assert states == {"c": TaskState.ARCHIVED, "a": TaskState.ARCHIVED}
    assert [t.id for t in await broker.list_tasks("q", TaskState.PENDING)] == ["r"]
    assert (await broker.queue_stats("q")).size == 3
    got = await broker.dequeue(["q"], count=5, lease=60_000)
    assert [d.message.id for d in got] == ["r"]


async def test_bulk_operations_on_pending_reach_them(broker: RedisBroker) -> None:
    await _put(broker, "t1", "t2", "t3")
    assert await broker.archive_all("q", TaskState.PENDING, limit=2) == 2
    assert await broker.delete_all("q", TaskState.PENDING) == 1
    stats = await broker.queue_stats("q")
    assert (stats.size, stats.pending, stats.archived) == (2, 0, 2)


async def test_a_queue_holding_only_them_is_not_empty(broker: RedisBroker) -> None:
    await _put(broker, "t1")
    with pytest.raises(QueueNotEmptyError):
        await broker.remove_queue("q")
    assert (await broker.get_task("q", "t1")).state is TaskState.PENDING


async def test_an_aggregated_task_cannot_take_their_id(broker: RedisBroker) -> None:
    await _put(broker, "t1")
    await broker.enqueue(
        TaskMessage(id="m", type="t", payload=b"", queue="q", group="g", enqueued_at=_ENQUEUED)
    )
    set_id = await broker.aggregation_check("q", "g", grace_period=0)
    assert set_id is not None
    with pytest.raises(TaskIDConflictError):
        await broker.finish_aggregation("q", "g", set_id, _message("t1"))
    assert (await broker.get_task("q", "t1")).state is TaskState.PENDING
