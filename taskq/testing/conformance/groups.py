"""Conformance: task groups and their aggregation into one task."""

from __future__ import annotations

import pytest

from taskq.brokers.base import Broker
from taskq.errors import TaskIDConflictError, TaskNotFoundError
from taskq.task import TaskMessage, TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    QUEUE,
    ConformanceBase,
    make_message,
    put,
    state_of,
    take,
)

__all__ = ["GroupConformance"]

GRACE = 10_000


async def _group(broker: Broker, clock: FakeClock, n: int, gap: int = 0) -> list[TaskMessage]:
    """Add ``n`` tasks to group g1, ``gap`` ms apart."""
    messages = []
    for i in range(n):
        if i and gap:
            clock.advance(gap)
        message = make_message(group="g1", payload=f"{i}".encode())
        await broker.add_to_group(message)
        messages.append(message)
    return messages


async def _ready_set(broker: Broker, clock: FakeClock, n: int) -> tuple[str, list[TaskMessage]]:
    messages = await _group(broker, clock, n)
    clock.advance(GRACE)
    set_id = await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE)
    assert set_id is not None
    return set_id, messages


class GroupConformance(ConformanceBase):
    """GroupStore: readiness rules, aggregation sets, finishing and reclaiming them."""

    async def test_groups_lists_each_group_with_its_size(self, broker: Broker) -> None:
        await put(broker, 3, group="a")
        await put(broker, 1, group="b")
        await put(broker, 1)
        sizes = sorted((g.group, g.size) for g in await broker.groups(QUEUE))
        assert sizes == [("a", 3), ("b", 1)]
        stats = await broker.queue_stats(QUEUE)
        assert (stats.groups, stats.aggregating, stats.pending) == (2, 4, 1)

    async def test_a_group_is_not_ready_within_its_grace_period(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await _group(broker, clock, 2)
        clock.advance(GRACE - 1)
        assert await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE) is None
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("g1", 2)]

    async def test_a_group_is_ready_once_its_newest_task_is_a_grace_period_old(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        messages = await _group(broker, clock, 3, gap=GRACE // 2)
        clock.advance(GRACE - 1)
        assert await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE) is None
        clock.advance(1)
        set_id = await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE)
        assert set_id is not None
        members = await broker.read_aggregation_set(QUEUE, "g1", set_id)
        assert [m.id for m in members] == [m.id for m in messages]
        assert await broker.groups(QUEUE) == []

    async def test_a_group_is_ready_once_its_oldest_task_is_max_delay_old(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await _group(broker, clock, 4, gap=GRACE // 2)
        clock.advance(GRACE // 2)
        check = {"grace_period": GRACE, "max_delay": 4 * GRACE // 2 + 1}
        assert await broker.aggregation_check(QUEUE, "g1", **check) is None
        clock.advance(1)
        assert await broker.aggregation_check(QUEUE, "g1", **check) is not None

    async def test_a_group_is_ready_at_max_size_and_yields_its_oldest_members(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        messages = await _group(broker, clock, 5, gap=1)
        assert await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE, max_size=6) is None
        set_id = await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE, max_size=3)
        assert set_id is not None
        members = await broker.read_aggregation_set(QUEUE, "g1", set_id)
        assert [m.id for m in members] == [m.id for m in messages[:3]]
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("g1", 2)]

    async def test_an_empty_or_unknown_group_is_never_ready(self, broker: Broker) -> None:
        assert await broker.aggregation_check(QUEUE, "g1", grace_period=0) is None
        await put(broker)
        assert await broker.aggregation_check(QUEUE, "g1", grace_period=0, max_size=1) is None

    async def test_tasks_in_an_aggregation_set_stay_aggregating(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        _, messages = await _ready_set(broker, clock, 2)
        assert await state_of(broker, messages[0].id) is TaskState.AGGREGATING
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.aggregating) == (2, 2)

    async def test_finish_aggregation_enqueues_one_task_and_deletes_the_members(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        set_id, messages = await _ready_set(broker, clock, 3)
        combined = make_message(payload=b"0,1,2")
        assert await broker.finish_aggregation(QUEUE, "g1", set_id, combined) is True
        for message in messages:
            with pytest.raises(TaskNotFoundError):
                await broker.get_task(QUEUE, message.id)
        assert await broker.read_aggregation_set(QUEUE, "g1", set_id) == []
        assert (await take(broker)).message == combined
        assert (await broker.queue_stats(QUEUE)).size == 1

    async def test_finishing_an_aggregation_twice_stores_one_task(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        set_id, _ = await _ready_set(broker, clock, 2)
        combined = make_message()
        assert await broker.finish_aggregation(QUEUE, "g1", set_id, combined) is True
        assert await broker.finish_aggregation(QUEUE, "g1", set_id, combined) is False
        again = make_message()
        assert await broker.finish_aggregation(QUEUE, "g1", set_id, again) is False
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(QUEUE, again.id)
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.pending) == (1, 1)

    async def test_finish_aggregation_with_a_used_id_is_a_conflict(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (existing,) = await put(broker)
        set_id, members = await _ready_set(broker, clock, 2)
        with pytest.raises(TaskIDConflictError):
            await broker.finish_aggregation(QUEUE, "g1", set_id, make_message(existing.id))
        got = await broker.read_aggregation_set(QUEUE, "g1", set_id)
        assert [m.id for m in got] == [m.id for m in members]

    async def test_delete_aggregation_set_deletes_the_set_and_its_members(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        set_id, _ = await _ready_set(broker, clock, 2)
        await broker.delete_aggregation_set(QUEUE, "g1", set_id)
        assert await broker.read_aggregation_set(QUEUE, "g1", set_id) == []
        assert (await broker.queue_stats(QUEUE)).size == 0
        assert await broker.finish_aggregation(QUEUE, "g1", set_id, make_message()) is False

    async def test_an_unknown_aggregation_set_reads_empty(self, broker: Broker) -> None:
        await put(broker)
        assert await broker.read_aggregation_set(QUEUE, "g1", "no-such-set") == []

    async def test_stale_aggregation_sets_return_their_members_to_the_group(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        set_id, messages = await _ready_set(broker, clock, 2)
        clock.advance(60_000)
        assert await broker.reclaim_stale_aggregation_sets(QUEUE, older_than=60_000) == 0
        clock.advance(1)
        assert await broker.reclaim_stale_aggregation_sets(QUEUE, older_than=60_000) == 2
        assert await broker.read_aggregation_set(QUEUE, "g1", set_id) == []
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("g1", 2)]
        again = await broker.aggregation_check(QUEUE, "g1", grace_period=GRACE)
        assert again is not None
        members = await broker.read_aggregation_set(QUEUE, "g1", again)
        assert [m.id for m in members] == [m.id for m in messages]
