"""Conformance: time. Forwarding, lease expiry and recovery, retention, unique-lock TTLs.

Time moves only through the suite's clock; the broker must read "now" from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from taskq.brokers.base import Ack, Broker, Delivery
from taskq.errors import DuplicateTaskError, TaskNotFoundError
from taskq.task import TaskMessage, TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    QUEUE,
    ConformanceBase,
    CorruptDropLease,
    make_message,
    ms_of,
    put,
    put_in_state,
    state_of,
    take,
)

__all__ = ["TimeConformance"]

_RELEASES: dict[str, Callable[[Broker, Delivery], Awaitable[None]]] = {
    "done": lambda b, d: b.done(d.ref),
    "complete": lambda b, d: b.complete(d.ref, retention=HOUR),
    "archive": lambda b, d: b.archive(d.ref, error="gave up"),
    "done_many": lambda b, d: _done_many(b, d),
    "delete_task": lambda b, d: _delete_after_retry(b, d),
}


# Every way a task that has not started is archived by hand; each takes the
# task and the state it is in.
_ARCHIVES_BY_HAND: dict[str, Callable[[Broker, TaskMessage, TaskState], Awaitable[object]]] = {
    "archive_task": lambda b, m, s: b.archive_task(QUEUE, m.id),
    "archive_all": lambda b, m, s: b.archive_all(QUEUE, s),
    "request_cancel": lambda b, m, s: b.request_cancel(m.id, QUEUE),
}

_WAITING = [TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.AGGREGATING]


async def _done_many(broker: Broker, delivery: Delivery) -> None:
    (result,) = await broker.done_many([Ack(delivery.ref)])
    assert result is None


async def _delete_after_retry(broker: Broker, delivery: Delivery) -> None:
    await broker.retry(delivery.ref, delay=HOUR, error="x")
    await broker.delete_task(QUEUE, delivery.message.id)


async def _lock_is_free(broker: Broker, key: str = "uk") -> bool:
    """Whether a new unique task with ``key`` can be stored now (it is then deleted)."""
    probe = make_message(unique_key=key)
    try:
        await broker.schedule(probe, await broker.now() + HOUR, unique_ttl=HOUR)
    except DuplicateTaskError:
        return False
    await broker.delete_task(QUEUE, probe.id)
    return True


class TimeConformance(ConformanceBase):
    """Timekeeper and every time-driven rule, driven by the suite's clock."""

    async def test_now_is_the_clock(self, broker: Broker, clock: FakeClock) -> None:
        assert await broker.now() == clock.now_ms()
        clock.advance(12_345)
        assert await broker.now() == clock.now_ms()

    async def test_forward_moves_scheduled_tasks_only_once_due(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message()
        await broker.schedule(message, clock.now_ms() + 1_000)
        clock.advance(999)
        assert await broker.forward(QUEUE) == 0
        assert await broker.dequeue([QUEUE], count=1, lease=1_000) == []
        clock.advance(1)
        assert await broker.forward(QUEUE) == 1
        assert await state_of(broker, message.id) is TaskState.PENDING
        assert (await take(broker)).message.id == message.id

    async def test_forward_moves_retry_tasks_only_once_due(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        await broker.retry((await take(broker)).ref, delay=5_000, error="e")
        clock.advance(4_999)
        assert await broker.forward(QUEUE) == 0
        clock.advance(1)
        assert await broker.forward(QUEUE) == 1
        assert await state_of(broker, message.id) is TaskState.PENDING

    async def test_forwarded_tasks_become_pending_in_due_order(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        now = clock.now_ms()
        late, early, middle = make_message(), make_message(), make_message()
        await broker.schedule(late, now + 3_000)
        await broker.schedule(early, now + 1_000)
        await broker.schedule(middle, now + 2_000)
        clock.advance(3_000)
        assert await broker.forward(QUEUE) == 3
        got = await broker.dequeue([QUEUE], count=3, lease=1_000)
        assert [d.message.id for d in got] == [early.id, middle.id, late.id]

    async def test_forward_moves_due_scheduled_tasks_before_due_retries(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        # As asynq's forwarder: the scheduled set first, then the retry set,
        # each by due time; a retry that was due earlier still comes second.
        (retried,) = await put(broker)
        await broker.retry((await take(broker)).ref, delay=1_000, error="e")
        scheduled = make_message()
        await broker.schedule(scheduled, clock.now_ms() + 2_000)
        clock.advance(2_000)
        assert await broker.forward(QUEUE) == 2
        got = await broker.dequeue([QUEUE], count=2, lease=1_000)
        assert [d.message.id for d in got] == [scheduled.id, retried.id]

    async def test_forward_moves_at_most_limit_tasks(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        for _ in range(5):
            await broker.schedule(make_message(), clock.now_ms() + 10)
        clock.advance(10)
        assert await broker.forward(QUEUE, limit=0) == 0
        assert await broker.forward(QUEUE, limit=-1) == 0
        assert await broker.forward(QUEUE, limit=3) == 3
        assert await broker.forward(QUEUE, limit=3) == 2
        assert await broker.forward(QUEUE, limit=3) == 0

    async def test_a_due_task_with_a_group_is_forwarded_to_its_group(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message(group="g1")
        await broker.schedule(message, clock.now_ms() + 10)
        clock.advance(10)
        assert await broker.forward(QUEUE) == 1
        assert await state_of(broker, message.id) is TaskState.AGGREGATING
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("g1", 1)]

    async def test_forwarding_into_a_paused_queue_continues(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message()
        await broker.schedule(message, clock.now_ms() + 10)
        await broker.pause_queue(QUEUE)
        clock.advance(10)
        assert await broker.forward(QUEUE) == 1
        assert await state_of(broker, message.id) is TaskState.PENDING
        assert await broker.dequeue([QUEUE], count=1, lease=1_000) == []

    async def test_forward_of_an_unknown_queue_moves_nothing(self, broker: Broker) -> None:
        assert await broker.forward("never-used") == 0

    async def test_a_lease_expires_with_the_clock(self, broker: Broker, clock: FakeClock) -> None:
        (message,) = await put(broker)
        await take(broker, lease=1_000)
        clock.advance(999)
        assert await broker.expired_leases(QUEUE) == []
        assert await broker.reclaim_expired(QUEUE, lease=1_000) == []
        clock.advance(1)
        assert await broker.expired_leases(QUEUE) == [message.id]

    async def test_listing_active_tasks_marks_expired_ones_orphaned(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 2)
        short, extended = await broker.dequeue([QUEUE], count=2, lease=1_000)
        await broker.extend_leases([extended.ref], lease=HOUR)
        clock.advance(1_000)
        orphaned = {i.id: i.is_orphaned for i in await broker.list_tasks(QUEUE, TaskState.ACTIVE)}
        assert orphaned == {short.message.id: True, extended.message.id: False}

    async def test_reclaim_expired_takes_only_expired_leases_up_to_limit(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 4)
        deliveries = await broker.dequeue([QUEUE], count=4, lease=1_000)
        await broker.extend_leases([deliveries[3].ref], lease=HOUR)
        clock.advance(1_000)
        assert len(await broker.expired_leases(QUEUE, limit=2)) == 2
        for nothing in (0, -1):  # no limit left: nothing, and no error
            assert await broker.expired_leases(QUEUE, limit=nothing) == []
            assert await broker.reclaim_expired(QUEUE, lease=HOUR, limit=nothing) == []
        first = await broker.reclaim_expired(QUEUE, lease=HOUR, limit=2)
        rest = await broker.reclaim_expired(QUEUE, lease=HOUR, limit=2)
        reclaimed = [d.message.id for d in first + rest]
        assert sorted(reclaimed) == sorted(d.message.id for d in deliveries[:3])
        assert await broker.expired_leases(QUEUE) == []
        assert await broker.reclaim_expired(QUEUE, lease=HOUR) == []

    async def test_a_reclaimed_task_is_settled_with_its_new_lease(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        await take(broker, lease=1_000)
        clock.advance(5_000)
        (reclaimed,) = await broker.reclaim_expired(QUEUE, lease=1_000)
        assert reclaimed.lease_expires_at == clock.now_ms() + 1_000
        assert await state_of(broker, message.id) is TaskState.ACTIVE
        await broker.retry(reclaimed.ref, delay=0, error="lease expired")
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.retried, info.last_error) == (TaskState.RETRY, 1, "lease expired")

    async def test_an_active_task_without_a_lease_is_listed_and_repaired(
        self, broker: Broker, corrupt_drop_lease: CorruptDropLease
    ) -> None:
        (message,) = await put(broker)
        old = await take(broker, lease=HOUR)
        await corrupt_drop_lease(QUEUE, message.id)
        assert await broker.expired_leases(QUEUE) == [message.id]
        (repaired,) = await broker.reclaim_expired(QUEUE, lease=HOUR)
        assert repaired.message.id == message.id and repaired.token != old.token
        assert await broker.expired_leases(QUEUE) == []
        await broker.archive(repaired.ref, error="lost its lease")
        assert await state_of(broker, message.id) is TaskState.ARCHIVED

    async def test_completed_tasks_are_deleted_once_their_retention_ends(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 2)
        short, long = await broker.dequeue([QUEUE], count=2, lease=HOUR)
        await broker.complete(short.ref, retention=1_000)
        await broker.complete(long.ref, retention=5_000)
        clock.advance(999)
        assert await broker.delete_expired_completed(QUEUE) == 0
        clock.advance(1)
        assert await broker.delete_expired_completed(QUEUE) == 1
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(QUEUE, short.message.id)
        assert await state_of(broker, long.message.id) is TaskState.COMPLETED
        clock.advance(4_000)
        assert await broker.delete_expired_completed(QUEUE) == 1
        assert (await broker.queue_stats(QUEUE)).size == 0

    async def test_delete_expired_completed_deletes_at_most_limit(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 5)
        for delivery in await broker.dequeue([QUEUE], count=5, lease=HOUR):
            await broker.complete(delivery.ref, retention=10)
        clock.advance(10)
        assert await broker.delete_expired_completed(QUEUE, limit=0) == 0
        assert await broker.delete_expired_completed(QUEUE, limit=-1) == 0
        assert await broker.delete_expired_completed(QUEUE, limit=3) == 3
        assert await broker.delete_expired_completed(QUEUE, limit=3) == 2

    async def test_retry_is_due_by_broker_time(self, broker: Broker, clock: FakeClock) -> None:
        (message,) = await put(broker)
        clock.advance(HOUR)
        await broker.retry((await take(broker)).ref, delay=2_000, error="e")
        info = await broker.get_task(QUEUE, message.id)
        assert ms_of(info.next_process_at) == clock.now_ms() + 2_000

    async def test_a_unique_lock_is_held_while_the_task_waits_and_runs(
        self, broker: Broker
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        assert not await _lock_is_free(broker)
        delivery = await take(broker)
        assert not await _lock_is_free(broker)
        await broker.retry(delivery.ref, delay=0, error="e")
        assert not await _lock_is_free(broker)

    @pytest.mark.parametrize("how", list(_RELEASES))
    async def test_a_unique_lock_is_released_when_its_task_ends(
        self, broker: Broker, how: str
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        await _RELEASES[how](broker, await take(broker))
        assert await _lock_is_free(broker)

    async def test_archive_may_keep_the_unique_lock(self, broker: Broker) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        await broker.archive((await take(broker)).ref, error="e", release_unique=False)
        assert not await _lock_is_free(broker)

    @pytest.mark.parametrize("state", [TaskState.PENDING, TaskState.AGGREGATING], ids=str)
    async def test_deleting_a_waiting_task_releases_its_unique_lock(
        self, broker: Broker, state: TaskState
    ) -> None:
        message = make_message(
            unique_key="uk", group="g1" if state is TaskState.AGGREGATING else ""
        )
        await broker.enqueue(message, unique_ttl=HOUR)
        await broker.delete_task(QUEUE, message.id)
        assert await _lock_is_free(broker)

    @pytest.mark.parametrize("state", _WAITING, ids=str)
    @pytest.mark.parametrize("how", list(_ARCHIVES_BY_HAND))
    async def test_archiving_a_waiting_task_by_hand_releases_its_unique_lock(
        self, broker: Broker, how: str, state: TaskState
    ) -> None:
        message = await put_in_state(broker, state, unique_key="uk", unique_ttl=HOUR)
        assert not await _lock_is_free(broker)
        await _ARCHIVES_BY_HAND[how](broker, message, state)
        assert await state_of(broker, message.id) is TaskState.ARCHIVED
        assert await _lock_is_free(broker)

    @pytest.mark.parametrize("how", list(_ARCHIVES_BY_HAND))
    async def test_archiving_by_hand_leaves_a_lock_another_task_took_alone(
        self, broker: Broker, clock: FakeClock, how: str
    ) -> None:
        first = await put_in_state(broker, TaskState.RETRY, unique_key="uk", unique_ttl=1_000)
        clock.advance(1_000)
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        await _ARCHIVES_BY_HAND[how](broker, first, TaskState.RETRY)
        assert await state_of(broker, first.id) is TaskState.ARCHIVED
        assert not await _lock_is_free(broker)

    async def test_a_unique_lock_expires_after_its_ttl(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=10_000)
        clock.advance(9_999)
        assert not await _lock_is_free(broker)
        clock.advance(1)
        assert await broker.enqueue(make_message(unique_key="uk"), unique_ttl=10_000) is (
            TaskState.PENDING
        )

    async def test_a_scheduled_unique_lock_lasts_until_process_at_plus_ttl(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await broker.schedule(
            make_message(unique_key="uk"), clock.now_ms() + 60_000, unique_ttl=10_000
        )
        clock.advance(69_999)
        assert not await _lock_is_free(broker)
        clock.advance(1)
        assert await _lock_is_free(broker)

    async def test_a_unique_lock_is_not_released_by_a_task_that_no_longer_owns_it(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=1_000)
        first = await take(broker, lease=HOUR)
        clock.advance(1_000)
        await broker.enqueue(make_message(unique_key="uk"), unique_ttl=HOUR)
        await broker.done(first.ref)
        assert not await _lock_is_free(broker)
