"""The group Aggregator on the in-memory broker, driven by a fake clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from taskq.brokers.memory import InMemoryBroker
from taskq.client import AsyncClient
from taskq.errors import InvalidArgumentError
from taskq.runtime.aggregator import Aggregator, GroupLimits
from taskq.runtime.config import Config
from taskq.task import Task, TaskInfo, TaskMessage, TaskState
from taskq.testing import FakeClock

QUEUE = "notifications"
GROUP = "user1:email"
LOG = logging.getLogger("test.aggregator")


def join_payloads(group: str, tasks: Sequence[Task]) -> Task:
    """The seed's example: one task whose payload joins the members' payloads."""
    return Task("email:digest", b"\n".join(t.payload for t in tasks))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> InMemoryBroker:
    return InMemoryBroker(clock=clock)


@pytest.fixture
def client(broker: InMemoryBroker, clock: FakeClock) -> AsyncClient:
    return AsyncClient(broker, clock=clock)


def make(
    broker: InMemoryBroker, clock: FakeClock, queues: Sequence[str] = (QUEUE,), **config: Any
) -> Aggregator:
    config.setdefault("group_aggregator", join_payloads)
    return Aggregator(broker, clock=clock, queues=queues, config=Config(**config), logger=LOG)


async def add_three(client: AsyncClient, clock: FakeClock, gap: timedelta) -> None:
    for i in (1, 2, 3):
        await client.enqueue(Task("email:send", f"msg{i}".encode()), queue=QUEUE, group=GROUP)
        if i < 3:
            clock.advance(gap)


async def pending(broker: InMemoryBroker, queue: str = QUEUE) -> list[TaskInfo]:
    return await broker.list_tasks(queue, TaskState.PENDING, limit=1000)


async def aggregating(broker: InMemoryBroker, queue: str = QUEUE) -> list[TaskInfo]:
    return await broker.list_tasks(queue, TaskState.AGGREGATING, limit=1000)


async def test_grace_period_turns_the_three_tasks_into_one_joined_task(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_grace_period=timedelta(seconds=10))
    await add_three(client, clock, timedelta(seconds=1))

    clock.advance(timedelta(seconds=9))
    assert await agg.check_once() == 0
    assert len(await aggregating(broker)) == 3

    clock.advance(timedelta(seconds=1))
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.type == "email:digest"
    assert task.payload == b"msg1\nmsg2\nmsg3"
    assert task.queue == QUEUE
    assert task.group is None
    assert await aggregating(broker) == []
    assert await broker.groups(QUEUE) == []


async def test_max_delay_aggregates_a_group_that_keeps_growing(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(
        broker,
        clock,
        group_grace_period=timedelta(seconds=10),
        group_max_delay=timedelta(seconds=15),
    )
    await add_three(client, clock, timedelta(seconds=7))  # the grace period never passes
    assert await agg.check_once() == 0
    clock.advance(timedelta(seconds=1))  # oldest is 15 s old, newest only 1 s
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.payload == b"msg1\nmsg2\nmsg3"


async def test_max_size_aggregates_at_once_without_waiting(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_grace_period=timedelta(minutes=10), group_max_size=3)
    await client.enqueue(Task("email:send", b"msg1"), queue=QUEUE, group=GROUP)
    await client.enqueue(Task("email:send", b"msg2"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 0
    await client.enqueue(Task("email:send", b"msg3"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.payload == b"msg1\nmsg2\nmsg3"


async def test_a_group_bigger_than_max_size_is_split_in_one_pass(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_max_size=2)
    for i in range(5):
        await client.enqueue(Task("email:send", f"m{i}".encode()), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 2
    payloads = sorted(t.payload for t in await pending(broker))
    assert payloads == [b"m0\nm1", b"m2\nm3"]
    assert [t.payload for t in await aggregating(broker)] == [b"m4"]


async def test_groups_are_aggregated_separately(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_grace_period=timedelta(seconds=1))
    for group in ("user1:email", "user2:email"):
        for i in range(2):
            await client.enqueue(
                Task("email:send", f"{group}/{i}".encode()), queue=QUEUE, group=group
            )
    clock.advance(timedelta(seconds=1))
    assert await agg.check_once() == 2
    payloads = sorted(t.payload for t in await pending(broker))
    assert payloads == [b"user1:email/0\nuser1:email/1", b"user2:email/0\nuser2:email/1"]


async def test_per_queue_limits_override_the_server_wide_ones(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(
        broker,
        clock,
        queues=(QUEUE, "bulk"),
        group_grace_period=timedelta(minutes=10),
        group_limits={"bulk": GroupLimits(max_size=2)},
    )
    for queue in (QUEUE, "bulk"):
        for i in range(2):
            await client.enqueue(Task("email:send", f"{i}".encode()), queue=queue, group=GROUP)
    assert await agg.check_once() == 1
    assert len(await pending(broker, "bulk")) == 1
    assert await pending(broker, QUEUE) == []
    assert agg.limits("bulk") == (600_000, 0, 2)
    assert agg.limits(QUEUE) == (600_000, 0, 0)


async def test_only_the_servers_queues_are_aggregated(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, queues=("other",), group_max_size=1)
    await client.enqueue(Task("email:send", b"x"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 0
    assert len(await aggregating(broker)) == 1


async def test_aggregated_task_keeps_its_own_options(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    def aggregate(group: str, tasks: Sequence[Task]) -> Task:
        return Task(
            "email:digest",
            b"x",
            headers={"group": group},
            max_retry=3,
            timeout=timedelta(seconds=20),
            retention=timedelta(hours=1),
        )

    agg = make(broker, clock, group_aggregator=aggregate, group_max_size=1)
    await client.enqueue(Task("email:send", b"1"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.headers == {"group": GROUP}
    assert task.max_retry == 3
    assert task.timeout == timedelta(seconds=20)
    assert task.retention == timedelta(hours=1)
    assert task.enqueued_at is not None
    assert task.enqueued_at.timestamp() * 1000 == clock.now_ms()


async def test_options_that_cannot_apply_to_the_aggregated_task_are_ignored_with_a_warning(
    broker: InMemoryBroker,
    client: AsyncClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def aggregate(group: str, tasks: Sequence[Task]) -> Task:
        return Task("email:digest", b"x", queue="elsewhere", group="again", task_id="fixed")

    agg = make(broker, clock, group_aggregator=aggregate, group_max_size=1)
    await client.enqueue(Task("email:send", b"1"), queue=QUEUE, group=GROUP)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.queue == QUEUE
    assert task.group is None
    assert task.id != "fixed"
    assert "group, task_id, queue" in caplog.text


async def test_an_object_with_aggregate_and_an_async_function_both_work(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    class Joiner:
        def aggregate(self, group: str, tasks: list[Task]) -> Task:
            return join_payloads(group, tasks)

    async def async_join(group: str, tasks: list[Task]) -> Task:
        await asyncio.sleep(0)
        return join_payloads(group, tasks)

    for target in (Joiner(), async_join):
        agg = make(broker, clock, group_aggregator=target, group_max_size=1)
        await client.enqueue(Task("email:send", b"a"), queue=QUEUE, group=GROUP)
        assert await agg.check_once() == 1
    assert [t.payload for t in await pending(broker)] == [b"a", b"a"]


async def test_a_failing_aggregator_loses_nothing_and_the_group_is_retried(
    broker: InMemoryBroker,
    client: AsyncClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def flaky(group: str, tasks: Sequence[Task]) -> Task:
        calls.append(len(tasks))
        if len(calls) == 1:
            raise RuntimeError("mail service down")
        return join_payloads(group, tasks)

    agg = make(
        broker,
        clock,
        group_aggregator=flaky,
        group_max_size=3,
        group_reclaim_after=timedelta(seconds=30),
    )
    await add_three(client, clock, timedelta(0))
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        assert await agg.check_once() == 0
    assert "mail service down" in caplog.text
    stats = await broker.queue_stats(QUEUE)
    assert stats.aggregating == 3  # still stored, inside the failed set

    assert await agg.reclaim_stale() == 0  # not stale yet
    clock.advance(timedelta(seconds=31))
    assert await agg.reclaim_stale() == 3
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.payload == b"msg1\nmsg2\nmsg3"
    assert calls == [3, 3]


async def test_an_aggregator_returning_no_task_is_an_error_and_the_group_is_kept(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_aggregator=lambda g, ts: "not a task", group_max_size=1)
    await client.enqueue(Task("email:send", b"1"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 0
    assert await pending(broker) == []
    assert (await broker.queue_stats(QUEUE)).aggregating == 1


async def test_a_set_left_by_a_dead_server_is_reclaimed_and_aggregated_exactly_once(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    await add_three(client, clock, timedelta(0))
    # A server moved the group into a set and died before finishing it.
    dead_set = await broker.aggregation_check(QUEUE, GROUP, grace_period=1000, max_size=3)
    assert dead_set is not None

    agg = make(broker, clock, group_max_size=3, group_reclaim_after=timedelta(seconds=60))
    assert await agg.check_once() == 0  # the members are in the dead set, not in the group
    clock.advance(timedelta(seconds=61))
    assert await agg.reclaim_stale() == 3
    assert await agg.check_once() == 1

    # The dead server's late finish cannot add a second aggregated task.
    late = TaskMessage(id="late", type="email:digest", payload=b"late", queue=QUEUE)
    assert not await broker.finish_aggregation(QUEUE, GROUP, dead_set, late)
    [task] = await pending(broker)
    assert task.payload == b"msg1\nmsg2\nmsg3"


async def test_a_group_task_with_a_future_process_at_keeps_its_group(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = make(broker, clock, group_max_size=2)
    info = await client.enqueue(
        Task("email:send", b"later"), queue=QUEUE, group=GROUP, process_in=timedelta(minutes=5)
    )
    assert info.state is TaskState.SCHEDULED
    assert info.group == GROUP
    await client.enqueue(Task("email:send", b"now"), queue=QUEUE, group=GROUP)
    assert await agg.check_once() == 0

    clock.advance(timedelta(minutes=5))
    assert await broker.forward(QUEUE) == 1
    assert await pending(broker) == []
    assert await agg.check_once() == 1
    [task] = await pending(broker)
    assert task.payload == b"now\nlater"


async def test_run_aggregates_in_the_background_and_stops_on_the_event(
    broker: InMemoryBroker, client: AsyncClient, clock: FakeClock
) -> None:
    agg = Aggregator(
        broker,
        clock=clock,
        queues=[QUEUE],
        config=Config(group_aggregator=join_payloads, group_max_size=3),
        logger=LOG,
        check_interval=timedelta(milliseconds=20),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(agg.run(stop))
    await add_three(client, clock, timedelta(0))
    for _ in range(200):
        if await pending(broker):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(runner, 2)
    [task] = await pending(broker)
    assert task.payload == b"msg1\nmsg2\nmsg3"


def test_invalid_group_limits_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        GroupLimits(grace_period=timedelta(0))
    with pytest.raises(InvalidArgumentError):
        GroupLimits(max_size=-1)
    with pytest.raises(InvalidArgumentError):
        GroupLimits(max_delay=timedelta(seconds=-1))


def test_config_accepts_a_function_or_an_object_with_aggregate_and_refuses_others() -> None:
    class Joiner:
        def aggregate(self, group: str, tasks: list[Task]) -> Task:
            return join_payloads(group, tasks)

    Config(group_aggregator=join_payloads)
    Config(group_aggregator=Joiner())
    with pytest.raises(InvalidArgumentError):
        Config(group_aggregator="join")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        Config(group_limits={"bad{name}": GroupLimits(max_size=1)})
    with pytest.raises(InvalidArgumentError):
        Config(group_limits={"bulk": 5})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError):
        Config(group_reclaim_after=timedelta(0))


def test_an_aggregator_needs_an_aggregate_function(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    with pytest.raises(InvalidArgumentError):
        Aggregator(broker, clock=clock, queues=[QUEUE], config=Config(), logger=LOG)
