"""Conformance: writing new tasks (enqueue, schedule, add_to_group, enqueue_many)."""

from __future__ import annotations

import pytest

from taskq.brokers.base import Broker, EnqueueRequest
from taskq.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    QueueNotFoundError,
    TaskIDConflictError,
)
from taskq.task import TaskMessage, TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    OTHER,
    QUEUE,
    ConformanceBase,
    make_message,
    put_in_state,
    state_of,
)

__all__ = ["ProduceConformance"]

_ALL_STATES = list(TaskState)
_PRODUCERS = ["enqueue", "schedule", "add_to_group"]


async def _produce(
    broker: Broker, how: str, message: TaskMessage, unique_ttl: int = 0
) -> TaskState:
    """Store ``message`` with the producer method named ``how``."""
    if how == "enqueue":
        return await broker.enqueue(message, unique_ttl=unique_ttl)
    if how == "schedule":
        return await broker.schedule(message, await broker.now() + HOUR, unique_ttl=unique_ttl)
    return await broker.add_to_group(message, unique_ttl=unique_ttl)


class ProduceConformance(ConformanceBase):
    """Producer: each write lands in the right state, ids and unique locks are enforced."""

    async def test_enqueue_stores_a_pending_task_with_its_message(self, broker: Broker) -> None:
        message = make_message(
            payload=b"\x00\xffbinary",
            headers={"traceparent": "00-abc-01"},
            max_retry=7,
            timeout=5_000,
            deadline=1_900_000_000_000,
            retention=60_000,
            enqueued_at=1_800_000_000_000,
        )
        assert await broker.enqueue(message) is TaskState.PENDING
        info = await broker.get_task(QUEUE, message.id)
        assert info.state is TaskState.PENDING
        assert (info.type, info.payload, dict(info.headers)) == (
            message.type,
            message.payload,
            {"traceparent": "00-abc-01"},
        )
        assert (info.max_retry, info.retried, info.last_error) == (7, 0, "")
        delivered = (await broker.dequeue([QUEUE], count=1, lease=1000))[0].message
        assert delivered == message

    async def test_enqueue_with_a_group_stores_an_aggregating_task(self, broker: Broker) -> None:
        message = make_message(group="g1")
        assert await broker.enqueue(message) is TaskState.AGGREGATING
        assert await state_of(broker, message.id) is TaskState.AGGREGATING
        assert await broker.dequeue([QUEUE], count=1, lease=1000) == []

    async def test_enqueue_registers_the_queue(self, broker: Broker) -> None:
        with pytest.raises(QueueNotFoundError):
            await broker.queue_stats(QUEUE)
        await broker.enqueue(make_message())
        assert QUEUE in await broker.queues()
        assert (await broker.queue_stats(QUEUE)).size == 1

    async def test_queues_are_listed_sorted(self, broker: Broker) -> None:
        for name in ("zeta", "alpha", "mid:queue"):
            await broker.enqueue(make_message(queue=name))
        assert await broker.queues() == ["alpha", "mid:queue", "zeta"]

    async def test_schedule_in_the_future_stores_a_scheduled_task(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message()
        process_at = clock.now_ms() + 5_000
        assert await broker.schedule(message, process_at) is TaskState.SCHEDULED
        info = await broker.get_task(QUEUE, message.id)
        assert info.state is TaskState.SCHEDULED
        assert info.next_process_at is not None
        assert int(info.next_process_at.timestamp() * 1000) == process_at

    @pytest.mark.parametrize("offset", [0, -1, -HOUR])
    async def test_schedule_not_in_the_future_stores_a_pending_task(
        self, broker: Broker, clock: FakeClock, offset: int
    ) -> None:
        message = make_message()
        assert await broker.schedule(message, clock.now_ms() + offset) is TaskState.PENDING
        assert (await broker.dequeue([QUEUE], count=1, lease=1000))[0].message.id == message.id

    async def test_schedule_not_in_the_future_with_a_group_stores_an_aggregating_task(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message(group="g1")
        assert await broker.schedule(message, clock.now_ms()) is TaskState.AGGREGATING

    async def test_add_to_group_stores_an_aggregating_task_in_its_group(
        self, broker: Broker
    ) -> None:
        for group in ("g1", "g1", "g2"):
            assert await broker.add_to_group(make_message(group=group)) is TaskState.AGGREGATING
        sizes = {g.group: g.size for g in await broker.groups(QUEUE)}
        assert sizes == {"g1": 2, "g2": 1}

    async def test_add_to_group_without_a_group_is_refused_and_stores_nothing(
        self, broker: Broker
    ) -> None:
        message = make_message()
        with pytest.raises(InvalidArgumentError):
            await broker.add_to_group(message)
        if QUEUE in await broker.queues():
            assert (await broker.queue_stats(QUEUE)).size == 0

    @pytest.mark.parametrize("how", _PRODUCERS)
    @pytest.mark.parametrize("existing", _ALL_STATES, ids=str)
    async def test_a_task_id_in_use_in_any_state_is_a_conflict(
        self, broker: Broker, existing: TaskState, how: str
    ) -> None:
        first = await put_in_state(broker, existing)
        before = await broker.get_task(QUEUE, first.id)
        again = make_message(first.id, payload=b"other", group="g9")
        with pytest.raises(TaskIDConflictError):
            await _produce(broker, how, again)
        assert await broker.get_task(QUEUE, first.id) == before
        assert (await broker.queue_stats(QUEUE)).size == 1

    async def test_the_same_task_id_in_another_queue_is_allowed(self, broker: Broker) -> None:
        await broker.enqueue(make_message("same-id"))
        assert await broker.enqueue(make_message("same-id", queue=OTHER)) is TaskState.PENDING

    @pytest.mark.parametrize("how", _PRODUCERS)
    async def test_a_held_unique_lock_refuses_a_duplicate_and_stores_nothing(
        self, broker: Broker, how: str
    ) -> None:
        first = make_message(unique_key="uk", group="g1")
        await _produce(broker, how, first, unique_ttl=HOUR)
        with pytest.raises(DuplicateTaskError):
            await _produce(broker, how, make_message(unique_key="uk", group="g1"), HOUR)
        assert (await broker.queue_stats(QUEUE)).size == 1

    async def test_a_failed_unique_write_leaves_the_lock_to_its_owner(self, broker: Broker) -> None:
        await broker.enqueue(make_message("owner", unique_key="uk"), unique_ttl=HOUR)
        with pytest.raises(TaskIDConflictError):
            await broker.enqueue(make_message("owner", unique_key="uk2"), unique_ttl=HOUR)
        assert await broker.enqueue(make_message(unique_key="uk2"), unique_ttl=HOUR) == (
            TaskState.PENDING
        )

    async def test_unique_locks_are_per_key(self, broker: Broker) -> None:
        await broker.enqueue(make_message(unique_key="a"), unique_ttl=HOUR)
        assert await broker.enqueue(make_message(unique_key="b"), unique_ttl=HOUR) == (
            TaskState.PENDING
        )

    async def test_without_a_unique_ttl_no_lock_is_taken(self, broker: Broker) -> None:
        await broker.enqueue(make_message(unique_key="uk"))
        await broker.enqueue(make_message(unique_key="uk"))
        assert (await broker.queue_stats(QUEUE)).pending == 2

    async def test_enqueue_many_returns_a_result_per_item_in_order(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await broker.enqueue(make_message("taken"))
        await broker.enqueue(make_message(unique_key="locked"), unique_ttl=HOUR)
        requests = [
            EnqueueRequest(make_message("p")),
            EnqueueRequest(make_message("taken")),
            EnqueueRequest(make_message("s"), process_at=clock.now_ms() + HOUR),
            EnqueueRequest(make_message("u", unique_key="locked"), unique_ttl=HOUR),
            EnqueueRequest(make_message("a", group="g1")),
            EnqueueRequest(make_message("o", queue=OTHER)),
        ]
        results = await broker.enqueue_many(requests)
        assert len(results) == len(requests)
        assert results[0] is TaskState.PENDING
        assert isinstance(results[1], TaskIDConflictError)
        assert results[2] is TaskState.SCHEDULED
        assert isinstance(results[3], DuplicateTaskError)
        assert results[4] is TaskState.AGGREGATING
        assert results[5] is TaskState.PENDING
        assert await state_of(broker, "s") is TaskState.SCHEDULED
        assert await state_of(broker, "o", OTHER) is TaskState.PENDING
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.pending, stats.scheduled, stats.aggregating) == (5, 3, 1, 1)

    async def test_enqueue_many_refuses_a_repeated_id_within_the_batch(
        self, broker: Broker
    ) -> None:
        results = await broker.enqueue_many(
            [EnqueueRequest(make_message("dup")), EnqueueRequest(make_message("dup"))]
        )
        assert results[0] is TaskState.PENDING
        assert isinstance(results[1], TaskIDConflictError)
        assert (await broker.queue_stats(QUEUE)).size == 1

    async def test_enqueue_many_takes_each_unique_lock_once(self, broker: Broker) -> None:
        results = await broker.enqueue_many(
            [
                EnqueueRequest(make_message(unique_key="k"), unique_ttl=HOUR),
                EnqueueRequest(make_message(unique_key="k"), unique_ttl=HOUR),
            ]
        )
        assert results[0] is TaskState.PENDING
        assert isinstance(results[1], DuplicateTaskError)

    async def test_enqueue_many_keeps_fifo_order(self, broker: Broker) -> None:
        messages = [make_message() for _ in range(20)]
        await broker.enqueue_many([EnqueueRequest(m) for m in messages])
        got = await broker.dequeue([QUEUE], count=20, lease=1000)
        assert [d.message.id for d in got] == [m.id for m in messages]

    async def test_enqueue_many_of_plain_tasks_of_two_queues_refuses_stored_and_repeated_ids(
        self, broker: Broker
    ) -> None:
        # All due now, no group, no unique lock (the bulk load some brokers
        # store in one go): each queue keeps its order, an id already stored
        # or repeated in the batch is refused, the rest are stored.
        await broker.enqueue(make_message("taken"))
        batch = []
        for n in range(30):
            queue = QUEUE if n % 2 else OTHER
            batch.append(make_message(f"t{n}", queue=queue))
        batch[7] = make_message("taken")
        batch[12] = make_message("t4", queue=OTHER)
        results = await broker.enqueue_many([EnqueueRequest(m) for m in batch])
        refused = {i for i, r in enumerate(results) if isinstance(r, TaskIDConflictError)}
        assert refused == {7, 12}
        assert all(results[i] is TaskState.PENDING for i in range(30) if i not in refused)
        for queue in (QUEUE, OTHER):
            want = [m.id for i, m in enumerate(batch) if m.queue == queue and i not in refused]
            if queue == QUEUE:
                want.insert(0, "taken")
            got = await broker.dequeue([queue], count=100, lease=1000)
            assert [d.message.id for d in got] == want
            assert [d.message for d in got][-1] == batch[29 if queue == QUEUE else 28]

    async def test_enqueue_many_of_nothing_returns_nothing(self, broker: Broker) -> None:
        assert await broker.enqueue_many([]) == []
