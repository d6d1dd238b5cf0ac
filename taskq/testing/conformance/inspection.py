"""Conformance: inspection and management (the Inspector's backend)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from taskq.brokers.base import Broker
from taskq.errors import (
    QueueNotEmptyError,
    QueueNotFoundError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq.task import TaskState
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
    ms_of,
    put,
    put_in_state,
    state_of,
    take,
)

__all__ = ["InspectionConformance"]

GONE = None

# (state before, operation, state after | None for deleted | the error it raises)
_TRANSITIONS: list[tuple[TaskState, str, TaskState | type[Exception] | None]] = [
    (P, "delete_task", GONE),
    (A, "delete_task", TaskStateError),
    (S, "delete_task", GONE),
    (R, "delete_task", GONE),
    (X, "delete_task", GONE),
    (C, "delete_task", GONE),
    (G, "delete_task", GONE),
    (P, "run_task", TaskStateError),
    (A, "run_task", TaskStateError),
    (S, "run_task", P),
    (R, "run_task", P),
    (X, "run_task", P),
    (C, "run_task", P),
    (G, "run_task", P),
    (P, "archive_task", X),
    (A, "archive_task", TaskStateError),
    (S, "archive_task", X),
    (R, "archive_task", X),
    (X, "archive_task", TaskStateError),
    (C, "archive_task", TaskStateError),
    (G, "archive_task", X),
]

_BULK: list[tuple[str, TaskState, TaskState | type[Exception] | None]] = [
    ("delete_all", P, GONE),
    ("delete_all", S, GONE),
    ("delete_all", R, GONE),
    ("delete_all", X, GONE),
    ("delete_all", C, GONE),
    ("delete_all", G, GONE),
    ("run_all", S, P),
    ("run_all", R, P),
    ("run_all", X, P),
    ("run_all", C, P),
    ("run_all", G, P),
    ("archive_all", P, X),
    ("archive_all", S, X),
    ("archive_all", R, X),
    ("archive_all", G, X),
]

_BY_ID: dict[str, Callable[[Broker, str, str], Awaitable[object]]] = {
    "get_task": lambda b, q, i: b.get_task(q, i),
    "delete_task": lambda b, q, i: b.delete_task(q, i),
    "run_task": lambda b, q, i: b.run_task(q, i),
    "archive_task": lambda b, q, i: b.archive_task(q, i),
}

_BY_QUEUE: dict[str, Callable[[Broker, str], Awaitable[object]]] = {
    "queue_stats": lambda b, q: b.queue_stats(q),
    "list_tasks": lambda b, q: b.list_tasks(q, TaskState.PENDING),
    "get_task": lambda b, q: b.get_task(q, "any"),
    "delete_task": lambda b, q: b.delete_task(q, "any"),
    "run_task": lambda b, q: b.run_task(q, "any"),
    "archive_task": lambda b, q: b.archive_task(q, "any"),
    "delete_all": lambda b, q: b.delete_all(q, TaskState.ARCHIVED),
    "run_all": lambda b, q: b.run_all(q, TaskState.ARCHIVED),
    "archive_all": lambda b, q: b.archive_all(q, TaskState.PENDING),
    "pause_queue": lambda b, q: b.pause_queue(q),
    "unpause_queue": lambda b, q: b.unpause_queue(q),
    "remove_queue": lambda b, q: b.remove_queue(q),
}


def _label(value: object) -> str:
    if isinstance(value, type):
        return value.__name__
    return "deleted" if value is None else str(value)


class InspectionConformance(ConformanceBase):
    """Admin: every by-hand transition, listing, paging, stats and queue management."""

    @pytest.mark.parametrize(
        ("before", "operation", "after"),
        _TRANSITIONS,
        ids=[f"{b}-{op}-{_label(a)}" for b, op, a in _TRANSITIONS],
    )
    async def test_admin_transition(
        self,
        broker: Broker,
        before: TaskState,
        operation: str,
        after: TaskState | type[Exception] | None,
    ) -> None:
        message = await put_in_state(broker, before)
        call = _BY_ID[operation]
        if isinstance(after, type):
            snapshot = await broker.get_task(QUEUE, message.id)
            with pytest.raises(after):
                await call(broker, QUEUE, message.id)
            assert await broker.get_task(QUEUE, message.id) == snapshot
            return
        await call(broker, QUEUE, message.id)
        stats = await broker.queue_stats(QUEUE)
        if after is None:
            with pytest.raises(TaskNotFoundError):
                await broker.get_task(QUEUE, message.id)
            assert stats.size == 0
        else:
            assert await state_of(broker, message.id) is after
            assert (stats.size, stats.count(after), stats.count(before)) == (1, 1, 0)
        if after is P:
            assert (await take(broker)).message.id == message.id

    @pytest.mark.parametrize(
        ("operation", "state", "after"),
        _BULK,
        ids=[f"{op}-{s}-{_label(a)}" for op, s, a in _BULK],
    )
    async def test_bulk_transition_in_chunks(
        self,
        broker: Broker,
        operation: str,
        state: TaskState,
        after: TaskState | type[Exception] | None,
    ) -> None:
        bystander = await put_in_state(broker, A)
        elsewhere = await put_in_state(broker, state, queue=OTHER)
        ids = [(await put_in_state(broker, state)).id for _ in range(3)]
        bulk = getattr(broker, operation)
        assert await bulk(QUEUE, state, limit=2) == 2
        assert await bulk(QUEUE, state, limit=2) == 1
        assert await bulk(QUEUE, state, limit=2) == 0
        for task_id in ids:
            if after is None:
                with pytest.raises(TaskNotFoundError):
                    await broker.get_task(QUEUE, task_id)
            else:
                assert await state_of(broker, task_id) is after
        assert await state_of(broker, elsewhere.id, OTHER) is state
        assert await state_of(broker, bystander.id) is A

    @pytest.mark.parametrize("operation", ["delete_all", "run_all", "archive_all"])
    async def test_bulk_operations_refuse_active_tasks(
        self, broker: Broker, operation: str
    ) -> None:
        message = await put_in_state(broker, A)
        with pytest.raises(TaskStateError):
            await getattr(broker, operation)(QUEUE, A)
        assert await state_of(broker, message.id) is A

    @pytest.mark.parametrize("operation", ["delete_all", "run_all", "archive_all"])
    async def test_bulk_operations_on_aggregating_tasks_can_select_a_group(
        self, broker: Broker, operation: str
    ) -> None:
        await put(broker, 2, group="a")
        (kept,) = await put(broker, 1, group="b")
        assert await getattr(broker, operation)(QUEUE, G, group="a") == 2
        assert await state_of(broker, kept.id) is G
        assert [(g.group, g.size) for g in await broker.groups(QUEUE)] == [("b", 1)]

    async def test_running_an_archived_task_resets_its_retries(self, broker: Broker) -> None:
        (message,) = await put(broker)
        await broker.retry((await take(broker)).ref, delay=0, error="one")
        await broker.forward(QUEUE)
        await broker.archive((await take(broker)).ref, error="two")
        assert (await broker.get_task(QUEUE, message.id)).retried == 1
        await broker.run_task(QUEUE, message.id)
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.retried, info.last_error) == (P, 0, "")

    async def test_running_a_retry_task_keeps_its_retry_count(self, broker: Broker) -> None:
        (message,) = await put(broker)
        await broker.retry((await take(broker)).ref, delay=HOUR, error="one")
        await broker.run_task(QUEUE, message.id)
        assert (await take(broker)).message.retried == 1

    @pytest.mark.parametrize("operation", list(_BY_ID))
    async def test_an_unknown_task_is_not_found(self, broker: Broker, operation: str) -> None:
        await put(broker)
        with pytest.raises(TaskNotFoundError):
            await _BY_ID[operation](broker, QUEUE, "no-such-task")

    @pytest.mark.parametrize("operation", list(_BY_QUEUE))
    async def test_an_unknown_queue_is_not_found(self, broker: Broker, operation: str) -> None:
        await put(broker)
        with pytest.raises(QueueNotFoundError):
            await _BY_QUEUE[operation](broker, "never-used")

    async def test_queue_stats_count_every_state(self, broker: Broker, clock: FakeClock) -> None:
        for state in (A, R, X, C, P, P, S, G, G):
            await put_in_state(broker, state, group="g1" if state is G else "")
        stats = await broker.queue_stats(QUEUE)
        assert stats.queue == QUEUE
        assert (stats.pending, stats.active, stats.scheduled, stats.retry) == (2, 1, 1, 1)
        assert (stats.archived, stats.completed, stats.aggregating) == (1, 1, 2)
        assert (stats.size, stats.groups, stats.paused) == (9, 1, False)
        assert stats.timestamp == clock.now_ms()

    async def test_latency_is_the_age_of_the_oldest_pending_task(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker)
        assert (await broker.queue_stats(QUEUE)).latency == 0
        clock.advance(3_000)
        await put(broker)
        clock.advance(2_000)
        assert (await broker.queue_stats(QUEUE)).latency == 5_000
        await take(broker)
        assert (await broker.queue_stats(QUEUE)).latency == 2_000

    async def test_paused_is_reported_in_stats(self, broker: Broker) -> None:
        await put(broker)
        await broker.pause_queue(QUEUE)
        await broker.pause_queue(QUEUE)
        assert (await broker.queue_stats(QUEUE)).paused is True
        await broker.unpause_queue(QUEUE)
        assert (await broker.queue_stats(QUEUE)).paused is False

    async def test_list_tasks_pages_through_a_state_in_order(self, broker: Broker) -> None:
        messages = await put(broker, 7)
        pages = [
            await broker.list_tasks(QUEUE, P, offset=offset, limit=3) for offset in (0, 3, 6, 9)
        ]
        assert [[i.id for i in page] for page in pages] == [
            [m.id for m in messages[0:3]],
            [m.id for m in messages[3:6]],
            [messages[6].id],
            [],
        ]
        assert all(i.state is P and i.queue == QUEUE for i in pages[0])

    async def test_list_scheduled_and_retry_tasks_by_due_time(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        now = clock.now_ms()
        late, early = make_message(), make_message()
        await broker.schedule(late, now + 2_000)
        await broker.schedule(early, now + 1_000)
        listed = await broker.list_tasks(QUEUE, S)
        assert [i.id for i in listed] == [early.id, late.id]
        assert [ms_of(i.next_process_at) for i in listed] == [now + 1_000, now + 2_000]
        first, second = await put(broker, 2)
        d1, d2 = await broker.dequeue([QUEUE], count=2, lease=HOUR)
        await broker.retry(d1.ref, delay=5_000, error="e")
        await broker.retry(d2.ref, delay=4_000, error="e")
        assert [i.id for i in await broker.list_tasks(QUEUE, R)] == [second.id, first.id]

    async def test_list_archived_and_completed_tasks_by_time_of_entry(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        messages = await put(broker, 4)
        deliveries = await broker.dequeue([QUEUE], count=4, lease=HOUR)
        await broker.archive(deliveries[1].ref, error="e")
        await broker.complete(deliveries[3].ref, retention=HOUR)
        clock.advance(10)
        await broker.archive(deliveries[0].ref, error="e")
        await broker.complete(deliveries[2].ref, retention=10)
        archived = [i.id for i in await broker.list_tasks(QUEUE, X)]
        completed = [i.id for i in await broker.list_tasks(QUEUE, C)]
        assert archived == [messages[1].id, messages[0].id]
        assert completed == [messages[3].id, messages[2].id]

    async def test_list_active_tasks_in_dequeue_order(self, broker: Broker) -> None:
        messages = await put(broker, 3)
        await broker.dequeue([QUEUE], count=3, lease=HOUR)
        assert [i.id for i in await broker.list_tasks(QUEUE, A)] == [m.id for m in messages]

    async def test_list_aggregating_tasks_oldest_first_by_group(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        a1 = make_message(group="a")
        b1 = make_message(group="b")
        a2 = make_message(group="a")
        for message in (a1, b1, a2):
            await broker.add_to_group(message)
            clock.advance(1)
        assert [i.id for i in await broker.list_tasks(QUEUE, G, group="a")] == [a1.id, a2.id]
        assert [i.id for i in await broker.list_tasks(QUEUE, G, group="b")] == [b1.id]
        assert sorted(i.id for i in await broker.list_tasks(QUEUE, G)) == sorted(
            [a1.id, b1.id, a2.id]
        )
        assert await broker.list_tasks(QUEUE, G, group="none") == []

    async def test_get_task_reports_when_a_task_is_due(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (pending,) = await put(broker)
        info = await broker.get_task(QUEUE, pending.id)
        assert ms_of(info.next_process_at) == clock.now_ms()
        assert info.result is None and info.is_orphaned is False

    async def test_removing_an_empty_queue_forgets_it(self, broker: Broker) -> None:
        await put(broker)
        await broker.done((await take(broker)).ref)
        await broker.remove_queue(QUEUE)
        assert QUEUE not in await broker.queues()
        with pytest.raises(QueueNotFoundError):
            await broker.queue_stats(QUEUE)

    async def test_removing_a_queue_that_holds_tasks_needs_force(self, broker: Broker) -> None:
        await put_in_state(broker, S)
        await put_in_state(broker, X)
        with pytest.raises(QueueNotEmptyError):
            await broker.remove_queue(QUEUE)
        assert (await broker.queue_stats(QUEUE)).size == 2
        await broker.remove_queue(QUEUE, force=True)
        assert await broker.queues() == []

    async def test_a_queue_with_active_tasks_is_never_removed(self, broker: Broker) -> None:
        (message,) = await put(broker)
        delivery = await take(broker)
        with pytest.raises(QueueNotEmptyError):
            await broker.remove_queue(QUEUE, force=True)
        await broker.done(delivery.ref)
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(QUEUE, message.id)

    async def test_a_removed_queue_starts_afresh(self, broker: Broker) -> None:
        await broker.enqueue(make_message("t1", unique_key="uk"), unique_ttl=HOUR)
        await broker.pause_queue(QUEUE)
        await broker.remove_queue(QUEUE, force=True)
        await broker.enqueue(make_message("t1", unique_key="uk"), unique_ttl=HOUR)
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.paused) == (1, False)
        assert (await take(broker)).message.id == "t1"
