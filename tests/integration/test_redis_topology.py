"""RedisBroker on a real Redis Cluster: queues spread over every master, odd names, no CROSSSLOT.

Every per-queue key carries the ``{<queue>}`` hash tag, so one queue lives in
one slot and a script never spans slots; operations over many queues (batch
enqueue, multi-queue dequeue, batch ack, inspection) must split per slot.
Redis counts every error reply by its prefix (``INFO errorstats``), so the
tests check that no node ever answered CROSSSLOT, even to a command the
client retried or swallowed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from itertools import count

import pytest

import taskq
from taskq.brokers.base import Ack, Broker, EnqueueRequest
from taskq.errors import InvalidQueueNameError
from taskq.task import TaskMessage, TaskState
from taskq.testing._resp import info_fields, text
from taskq.testing.servers import RedisCluster

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

LEASE = 30_000
ODD_NAMES = ["队列-🚀", "a:b", "with space", "*", "?[x]", "ünïcödé:q 1"]


def _message(queue: str, task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="topology:task", payload=task_id.encode(), queue=queue)


def _spread_queues(cluster: RedisCluster, per_master: int = 3) -> list[str]:
    """At least ``per_master`` queue names owned by each master, on distinct slots."""
    by_master: dict[int, list[str]] = {m.port: [] for m in cluster.masters()}
    slots: set[int] = set()
    for i in count():
        name = f"{ODD_NAMES[i % len(ODD_NAMES)]}-{i}"
        slot = cluster.key_slot("{" + name + "}")
        owner = cluster.master_of_slot(slot).port
        if slot not in slots and len(by_master[owner]) < per_master:
            slots.add(slot)
            by_master[owner].append(name)
        if all(len(names) >= per_master for names in by_master.values()):
            return [name for names in by_master.values() for name in names]
        assert i < 10_000, "could not spread queues over the masters"
    raise AssertionError("unreachable")


def _crossslot_errors(cluster: RedisCluster) -> dict[int, str]:
    """Per node port, its CROSSSLOT error count line (nodes with none are left out)."""
    found = {}
    for node in cluster.nodes:
        stats = info_fields(node.call("INFO", "errorstats"))
        if "errorstat_CROSSSLOT" in stats:
            found[node.port] = stats["errorstat_CROSSSLOT"]
    return found


def _keys_by_tag(cluster: RedisCluster) -> dict[str, set[int]]:
    """For every taskq key on every master, the hash slots used per ``{tag}``."""
    tags: dict[str, set[int]] = {}
    for node in cluster.masters():
        cursor = "0"
        while True:
            reply = node.call("SCAN", cursor, "MATCH", "taskq:*", "COUNT", 1000)
            assert isinstance(reply, list) and isinstance(reply[1], list)
            cursor = text(reply[0])
            for raw in reply[1]:
                key = text(raw)
                start = key.find("{")
                if start >= 0:
                    tag = key[start + 1 : key.index("}", start)]
                    tags.setdefault(tag, set()).add(cluster.key_slot(key))
            if cursor == "0":
                break
    return tags


@pytest.fixture
async def cluster_broker(redis_cluster: RedisCluster) -> AsyncIterator[Broker]:
    redis_cluster.flushall()
    for node in redis_cluster.nodes:
        node.call("CONFIG", "RESETSTAT")
    broker = taskq.connect(redis_cluster.url)
    try:
        yield broker
    finally:
        await broker.close()
    assert _crossslot_errors(redis_cluster) == {}, "a command raised CROSSSLOT"


async def test_queues_on_every_master_work_at_once_without_crossslot(
    redis_cluster: RedisCluster, cluster_broker: Broker
) -> None:
    broker = cluster_broker
    queues = _spread_queues(redis_cluster)
    assert len(queues) >= 8
    slots = {redis_cluster.key_slot("{" + q + "}") for q in queues}
    masters = {redis_cluster.master_of_slot(slot).port for slot in slots}
    assert len(masters) == 3, "the queues must be spread over all three masters"

    # Single enqueues in parallel, then one batch spanning every queue.
    await asyncio.gather(*(broker.enqueue(_message(q, f"{q}/single")) for q in queues))
    batch = [EnqueueRequest(_message(q, f"{q}/batch-{n}")) for q in queues for n in range(2)]
    assert await broker.enqueue_many(batch) == [TaskState.PENDING] * len(batch)
    assert set(queues) <= set(await broker.queues())
    for master in redis_cluster.masters():
        assert int(text(master.call("DBSIZE"))) > 0, f"no keys on master {master.port}"

    # One dequeue over every queue, one batch ack over every queue.
    deliveries = await broker.dequeue(queues, count=3 * len(queues), lease=LEASE)
    assert sorted(d.message.id for d in deliveries) == sorted(
        [f"{q}/single" for q in queues] + [r.message.id for r in batch]
    )
    assert await broker.done_many([Ack(d.ref) for d in deliveries]) == [None] * len(deliveries)

    for queue in queues:
        stats = await broker.queue_stats(queue)
        assert (stats.pending, stats.active, stats.processed) == (0, 0, 3)
        assert await broker.list_tasks(queue, TaskState.PENDING) == []
    assert _keys_by_tag(redis_cluster).keys() >= set(queues)


async def test_a_consumer_blocked_on_queues_of_every_master_wakes_on_an_enqueue(
    redis_cluster: RedisCluster, cluster_broker: Broker
) -> None:
    broker = cluster_broker
    queues = _spread_queues(redis_cluster)
    for queue in queues:  # make them known queues
        await broker.enqueue(_message(queue, f"{queue}/warm"))
    warm = await broker.dequeue(queues, count=len(queues), lease=LEASE)
    await broker.done_many([Ack(d.ref) for d in warm])

    for target in (queues[0], queues[-1]):
        waiter = asyncio.create_task(broker.dequeue(queues, count=1, lease=LEASE, wait=5_000))
        await asyncio.sleep(0.2)
        assert not waiter.done(), "dequeue(wait=...) returned before anything was enqueued"
        started = time.monotonic()
        await broker.enqueue(_message(target, f"{target}/late"))
        (delivery,) = await asyncio.wait_for(waiter, 10)
        assert delivery.message.id == f"{target}/late"
        assert time.monotonic() - started < 2.0
        await broker.done(delivery.ref)


async def test_queue_names_with_unicode_colons_spaces_and_globs_round_trip_in_one_slot(
    redis_cluster: RedisCluster, cluster_broker: Broker
) -> None:
    broker = cluster_broker
    for name in ODD_NAMES:
        await broker.enqueue(_message(name, "t1"))
        await broker.schedule(_message(name, "t2"), await broker.now() + 3_600_000)
    assert set(ODD_NAMES) <= set(await broker.queues())
    for name in ODD_NAMES:
        info = await broker.get_task(name, "t1")
        assert (info.queue, info.state, info.payload) == (name, TaskState.PENDING, b"t1")
        (delivery,) = await broker.dequeue([name], count=5, lease=LEASE)
        assert delivery.message.queue == name
        await broker.done(delivery.ref)

    tags = _keys_by_tag(redis_cluster)
    for name in ODD_NAMES:
        assert len(tags[name]) == 1, f"the keys of queue {name!r} span slots {tags[name]}"

    # Removing the glob-named queue "*" leaves every other queue intact.
    await broker.remove_queue("*", force=True)
    assert "*" not in await broker.queues()
    for name in ODD_NAMES:
        if name != "*":
            assert (await broker.get_task(name, "t2")).state is TaskState.SCHEDULED


async def test_batches_spanning_masters_survive_a_flushed_script_cache(
    redis_cluster: RedisCluster, cluster_broker: Broker
) -> None:
    broker = cluster_broker
    queues = _spread_queues(redis_cluster, per_master=1)
    await broker.enqueue_many([EnqueueRequest(_message(q, f"{q}/a")) for q in queues])
    for node in redis_cluster.nodes:
        node.call("SCRIPT", "FLUSH")
    states = await broker.enqueue_many([EnqueueRequest(_message(q, f"{q}/b")) for q in queues])
    assert states == [TaskState.PENDING] * len(queues)
    deliveries = await broker.dequeue(queues, count=10, lease=LEASE)
    for node in redis_cluster.nodes:
        node.call("SCRIPT", "FLUSH")
    assert await broker.done_many([Ack(d.ref) for d in deliveries]) == [None] * len(deliveries)
    assert len(deliveries) == 2 * len(queues)


@pytest.mark.parametrize("name", ["{}", "a{b", "c}d", "{tag}"])
async def test_queue_names_with_braces_are_refused_before_any_write(
    redis_cluster: RedisCluster, cluster_broker: Broker, name: str
) -> None:
    client = taskq.AsyncClient(cluster_broker)
    with pytest.raises(InvalidQueueNameError):
        await client.enqueue(taskq.Task("topology:task", b"x"), queue=name)
    for master in redis_cluster.masters():
        assert int(text(master.call("DBSIZE"))) == 0
