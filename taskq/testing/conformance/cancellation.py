"""Conformance: cancelling tasks before they start and while they run."""

from __future__ import annotations

import asyncio

import pytest

from taskq.brokers.base import Broker, CancelSubscription
from taskq.task import TaskState
from taskq.testing.conformance._support import (
    OTHER,
    QUEUE,
    ConformanceBase,
    put,
    put_in_state,
    state_of,
    take,
)

__all__ = ["CancellationConformance"]

_NOT_STARTED = [TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.AGGREGATING]


async def _next_id(subscription: CancelSubscription, timeout: float = 2.0) -> str:
    iterator = subscription.__aiter__()
    return await asyncio.wait_for(iterator.__anext__(), timeout)


class CancellationConformance(ConformanceBase):
    """Canceller: not-started tasks are archived; running ones are flagged and announced."""

    @pytest.mark.parametrize("state", _NOT_STARTED, ids=str)
    async def test_cancelling_a_task_before_it_starts_archives_it(
        self, broker: Broker, state: TaskState
    ) -> None:
        message = await put_in_state(broker, state)
        assert await broker.request_cancel(message.id, QUEUE) is state
        info = await broker.get_task(QUEUE, message.id)
        assert info.state is TaskState.ARCHIVED
        assert "cancel" in info.last_error.lower()
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.archived, stats.count(state)) == (1, 1, 0)

    async def test_a_task_cancelled_before_it_starts_is_never_dequeued(
        self, broker: Broker
    ) -> None:
        first, second = await put(broker, 2)
        await broker.request_cancel(first.id, QUEUE)
        got = await broker.dequeue([QUEUE], count=2, lease=1_000)
        assert [d.message.id for d in got] == [second.id]

    async def test_cancelling_a_running_task_flags_it_and_notifies_subscribers(
        self, broker: Broker
    ) -> None:
        subscription = await broker.subscribe_cancellations()
        try:
            (message,) = await put(broker)
            delivery = await take(broker)
            assert await broker.cancel_requested(QUEUE, [message.id]) == set()
            assert await broker.request_cancel(message.id, QUEUE) is TaskState.ACTIVE
            assert await _next_id(subscription) == message.id
            assert await broker.cancel_requested(QUEUE, [message.id, "other"]) == {message.id}
            assert await state_of(broker, message.id) is TaskState.ACTIVE
            await broker.retry(delivery.ref, delay=0, error="canceled")
            assert await state_of(broker, message.id) is TaskState.RETRY
        finally:
            await subscription.aclose()

    async def test_every_subscriber_hears_a_cancellation(self, broker: Broker) -> None:
        subscriptions = [await broker.subscribe_cancellations() for _ in range(3)]
        try:
            (message,) = await put(broker)
            await take(broker)
            await broker.request_cancel(message.id)
            for subscription in subscriptions:
                assert await _next_id(subscription) == message.id
        finally:
            for subscription in subscriptions:
                await subscription.aclose()

    async def test_cancelling_without_a_queue_searches_every_queue(self, broker: Broker) -> None:
        await put(broker)
        (message,) = await put(broker, queue=OTHER)
        assert await broker.request_cancel(message.id) is TaskState.PENDING
        assert await state_of(broker, message.id, OTHER) is TaskState.ARCHIVED

    async def test_cancelling_an_unknown_task_returns_none(self, broker: Broker) -> None:
        await put(broker)
        assert await broker.request_cancel("no-such-task") is None
        assert await broker.request_cancel("no-such-task", QUEUE) is None
        assert await broker.request_cancel("no-such-task", "never-used") is None

    @pytest.mark.parametrize("state", [TaskState.ARCHIVED, TaskState.COMPLETED], ids=str)
    async def test_cancelling_a_finished_task_changes_nothing(
        self, broker: Broker, state: TaskState
    ) -> None:
        message = await put_in_state(broker, state)
        before = await broker.get_task(QUEUE, message.id)
        assert await broker.request_cancel(message.id, QUEUE) is state
        assert await broker.get_task(QUEUE, message.id) == before

    async def test_a_closed_subscription_ends_its_iteration(self, broker: Broker) -> None:
        subscription = await broker.subscribe_cancellations()
        received: list[str] = []

        async def listen() -> None:
            async for task_id in subscription:
                received.append(task_id)

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.01)
        await subscription.aclose()
        await asyncio.wait_for(listener, 2.0)
        assert received == []
