"""Conformance: bounding the archive (the optional :class:`ArchiveTrimmer` capability).

A broker that does not implement ``trim_archived`` skips every test here; one
that does must trim oldest first, by size and by age, at most ``limit`` per
call, and leave nothing of a trimmed task behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from taskq.brokers.base import ArchiveTrimmer, Broker
from taskq.errors import InvalidArgumentError, TaskNotFoundError
from taskq.task import TaskMessage, TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    OTHER,
    QUEUE,
    A,
    C,
    ConformanceBase,
    G,
    P,
    R,
    S,
    X,
    make_message,
    put_in_state,
    state_of,
    take,
)
from taskq.testing.conformance.timekeeping import _lock_is_free

__all__ = ["ArchiveConformance"]


async def _archive(broker: Broker, queue: str = QUEUE, **fields: Any) -> TaskMessage:
    """Store one task and archive it by hand now (works beside other pending tasks)."""
    message = make_message(queue=queue, **fields)
    await broker.schedule(message, await broker.now() + HOUR)
    await broker.archive_task(queue, message.id)
    return message


async def _archived_ids(broker: Broker, queue: str = QUEUE) -> list[str]:
    return [i.id for i in await broker.list_tasks(queue, X, limit=1000)]


async def _gone(broker: Broker, task_id: str, queue: str = QUEUE) -> bool:
    try:
        await broker.get_task(queue, task_id)
    except TaskNotFoundError:
        return True
    return False


class ArchiveConformance(ConformanceBase):
    """``trim_archived``: the archive bounded by size and age, nothing left behind."""

    @pytest.fixture
    def trimmer(self, broker: Broker) -> ArchiveTrimmer:
        """The broker under test as an :class:`ArchiveTrimmer` (skips brokers without it)."""
        if not isinstance(broker, ArchiveTrimmer):
            pytest.skip("the broker does not implement ArchiveTrimmer")
        return broker

    async def test_trimming_by_size_deletes_the_oldest_and_keeps_the_newest(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        archived = []
        for i in range(5):
            archived.append(await _archive(broker))
            if i != 2:  # two tasks archived in the same ms keep their order too
                clock.advance(1)
        assert await trimmer.trim_archived(QUEUE, max_size=2, max_age=None) == 3
        assert await _archived_ids(broker) == [m.id for m in archived[3:]]
        for message in archived[:3]:
            assert await _gone(broker, message.id)
        stats = await broker.queue_stats(QUEUE)
        assert (stats.archived, stats.size) == (2, 2)
        assert await trimmer.trim_archived(QUEUE, max_size=2, max_age=None) == 0

    async def test_trimming_by_age_deletes_tasks_archived_max_age_ago_or_longer(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        first = await _archive(broker)
        clock.advance(1_000)
        second = await _archive(broker)
        clock.advance(1_000)
        third = await _archive(broker)
        clock.advance(1_999)
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=3_000) == 1
        assert await _archived_ids(broker) == [second.id, third.id]
        assert await _gone(broker, first.id)
        clock.advance(1)
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=3_000) == 1
        assert await _archived_ids(broker) == [third.id]
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=3_000) == 0
        clock.advance(1_000)
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=3_000) == 1
        assert (await broker.queue_stats(QUEUE)).archived == 0

    async def test_both_bounds_together_trim_what_either_one_would(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        old = [await _archive(broker) for _ in range(3)]
        clock.advance(10_000)
        new = [await _archive(broker) for _ in range(3)]
        # the age bound takes the 3 old ones, the size bound 4 tasks: 4 go
        assert await trimmer.trim_archived(QUEUE, max_size=2, max_age=10_000) == 4
        assert await _archived_ids(broker) == [m.id for m in new[1:]]
        assert all([await _gone(broker, m.id) for m in [*old, new[0]]])

    async def test_one_call_trims_at_most_limit_tasks_oldest_first(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        archived = []
        for _ in range(5):
            archived.append(await _archive(broker))
            clock.advance(1)
        ids = [m.id for m in archived]
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=None, limit=2) == 2
        assert await _archived_ids(broker) == ids[2:]
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=0, limit=2) == 2
        assert await _archived_ids(broker) == ids[4:]
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=0, limit=2) == 1
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=0, limit=2) == 0

    async def test_trimming_touches_no_other_state_and_no_other_queue(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        others = {state: await put_in_state(broker, state) for state in (A, R, C, P, S, G)}
        elsewhere = await _archive(broker, queue=OTHER)
        await _archive(broker)
        clock.advance(HOUR)
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=0) == 1
        for state, message in others.items():
            assert await state_of(broker, message.id) is state
        assert await _archived_ids(broker, OTHER) == [elsewhere.id]
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.archived) == (6, 0)

    async def test_a_trimmed_task_id_can_be_used_again(
        self, broker: Broker, trimmer: ArchiveTrimmer
    ) -> None:
        message = make_message(group="g1")
        await broker.add_to_group(message)
        await broker.archive_task(QUEUE, message.id)
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=None) == 1
        assert await broker.add_to_group(message) is TaskState.AGGREGATING
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("g1", 1)]
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.last_error, info.result) == (G, "", None)

    async def test_a_trimmed_task_takes_its_result_with_it(
        self, broker: Broker, trimmer: ArchiveTrimmer
    ) -> None:
        message = make_message()
        await broker.enqueue(message)
        delivery = await take(broker)
        await broker.write_result(delivery.ref, b"partial")
        await broker.archive(delivery.ref, error="gave up")
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=None) == 1
        await broker.enqueue(message)
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.result, info.retried) == (P, None, 0)

    async def test_trimming_releases_a_unique_lock_the_archived_task_still_holds(
        self, broker: Broker, trimmer: ArchiveTrimmer
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        await broker.archive((await take(broker)).ref, error="e", release_unique=False)
        assert not await _lock_is_free(broker)
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=None) == 1
        assert await _lock_is_free(broker)

    async def test_trimming_leaves_a_lock_another_task_took_alone(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=1_000)
        await broker.archive((await take(broker)).ref, error="e", release_unique=False)
        clock.advance(1_000)
        await broker.schedule(make_message(unique_key="uk"), clock.now_ms() + HOUR, unique_ttl=HOUR)
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=None) == 1
        assert not await _lock_is_free(broker)

    async def test_without_bounds_or_limit_or_queue_nothing_is_trimmed(
        self, broker: Broker, trimmer: ArchiveTrimmer, clock: FakeClock
    ) -> None:
        await _archive(broker)
        clock.advance(HOUR)
        assert await trimmer.trim_archived(QUEUE, max_size=None, max_age=None) == 0
        assert await trimmer.trim_archived(QUEUE, max_size=0, max_age=0, limit=0) == 0
        assert await trimmer.trim_archived("never-used", max_size=0, max_age=0) == 0
        assert (await broker.queue_stats(QUEUE)).archived == 1
        assert await broker.queues() == [QUEUE]

    @pytest.mark.parametrize("bounds", [(-1, None), (None, -1)], ids=["max_size", "max_age"])
    async def test_a_negative_bound_is_refused(
        self, broker: Broker, trimmer: ArchiveTrimmer, bounds: tuple[int | None, int | None]
    ) -> None:
        await _archive(broker)
        with pytest.raises(InvalidArgumentError):
            await trimmer.trim_archived(QUEUE, max_size=bounds[0], max_age=bounds[1])
        assert (await broker.queue_stats(QUEUE)).archived == 1
