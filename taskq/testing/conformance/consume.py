"""Conformance: dequeuing under a lease and settling each attempt."""

from __future__ import annotations

import asyncio
import time

import pytest

from taskq.brokers.base import Ack, Broker
from taskq.errors import LeaseLostError, TaskNotFoundError
from taskq.task import TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    LEASE,
    OTHER,
    QUEUE,
    ConformanceBase,
    make_message,
    ms_of,
    put,
    state_of,
    take,
)

__all__ = ["ConsumeConformance"]


class ConsumeConformance(ConformanceBase):
    """Consumer: dequeue order, leases, pause, waiting, and each settling transition."""

    async def test_dequeue_moves_a_pending_task_to_active_under_a_lease(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        clock.advance(250)
        delivery = await take(broker, lease=10_000)
        assert delivery.message == message
        assert delivery.token
        assert delivery.started_at == clock.now_ms()
        assert delivery.lease_expires_at == clock.now_ms() + 10_000
        assert delivery.pending_since in (0, clock.now_ms() - 250)
        assert await state_of(broker, message.id) is TaskState.ACTIVE
        stats = await broker.queue_stats(QUEUE)
        assert (stats.pending, stats.active) == (0, 1)

    async def test_dequeue_is_fifo(self, broker: Broker) -> None:
        messages = await put(broker, 10)
        got = [d.message.id for d in await broker.dequeue([QUEUE], count=4, lease=LEASE)]
        got += [d.message.id for d in await broker.dequeue([QUEUE], count=10, lease=LEASE)]
        assert got == [m.id for m in messages]

    @pytest.mark.parametrize("count", [1, 3, 5, 8])
    async def test_dequeue_hands_out_at_most_count_tasks(self, broker: Broker, count: int) -> None:
        await put(broker, 5)
        got = await broker.dequeue([QUEUE], count=count, lease=LEASE)
        assert len(got) == min(count, 5)
        assert (await broker.queue_stats(QUEUE)).pending == 5 - len(got)

    async def test_dequeue_drains_queues_in_the_given_order(self, broker: Broker) -> None:
        low = await put(broker, 2, queue=OTHER)
        high = await put(broker, 2)
        got = await broker.dequeue([QUEUE, OTHER], count=3, lease=LEASE)
        assert [d.message.id for d in got] == [high[0].id, high[1].id, low[0].id]
        got = await broker.dequeue([OTHER, QUEUE], count=3, lease=LEASE)
        assert [d.message.id for d in got] == [low[1].id]

    async def test_dequeue_skips_unknown_queues(self, broker: Broker) -> None:
        (message,) = await put(broker)
        got = await broker.dequeue(["never-used", QUEUE], count=2, lease=LEASE)
        assert [d.message.id for d in got] == [message.id]
        assert "never-used" not in await broker.queues()

    async def test_dequeue_from_empty_queues_returns_nothing(self, broker: Broker) -> None:
        await put(broker, queue=OTHER)
        await broker.dequeue([OTHER], count=1, lease=LEASE)
        assert await broker.dequeue([QUEUE, OTHER], count=5, lease=LEASE) == []

    async def test_each_delivery_gets_its_own_token(self, broker: Broker) -> None:
        await put(broker, 20)
        got = await broker.dequeue([QUEUE], count=20, lease=LEASE)
        assert len({d.token for d in got}) == 20

    async def test_paused_queue_is_never_dequeued(self, broker: Broker) -> None:
        await put(broker, 3)
        await broker.pause_queue(QUEUE)
        assert await broker.dequeue([QUEUE], count=3, lease=LEASE) == []
        assert await broker.dequeue([QUEUE], count=3, lease=LEASE, wait=50) == []
        stats = await broker.queue_stats(QUEUE)
        assert (stats.paused, stats.pending, stats.active) == (True, 3, 0)

    async def test_paused_queue_does_not_hold_back_other_queues(self, broker: Broker) -> None:
        await put(broker)
        (other,) = await put(broker, queue=OTHER)
        await broker.pause_queue(QUEUE)
        got = await broker.dequeue([QUEUE, OTHER], count=2, lease=LEASE)
        assert [d.message.id for d in got] == [other.id]

    async def test_paused_queue_still_accepts_new_tasks(self, broker: Broker) -> None:
        await put(broker)
        await broker.pause_queue(QUEUE)
        await put(broker, 2)
        assert (await broker.queue_stats(QUEUE)).pending == 3

    async def test_unpaused_queue_is_dequeued_again(self, broker: Broker) -> None:
        (message,) = await put(broker)
        await broker.pause_queue(QUEUE)
        await broker.unpause_queue(QUEUE)
        assert not (await broker.queue_stats(QUEUE)).paused
        assert (await take(broker)).message.id == message.id

    async def test_done_deletes_the_task_and_counts_it_processed(self, broker: Broker) -> None:
        (message,) = await put(broker)
        await broker.done((await take(broker)).ref)
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(QUEUE, message.id)
        stats = await broker.queue_stats(QUEUE)
        assert (stats.size, stats.processed, stats.failed) == (0, 1, 0)

    async def test_complete_keeps_the_task_with_its_result_for_the_retention(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        delivery = await take(broker)
        await broker.write_result(delivery.ref, b"answer")
        clock.advance(100)
        await broker.complete(delivery.ref, retention=HOUR)
        info = await broker.get_task(QUEUE, message.id)
        assert info.state is TaskState.COMPLETED
        assert info.result == b"answer"
        assert ms_of(info.completed_at) == clock.now_ms()
        stats = await broker.queue_stats(QUEUE)
        assert (stats.completed, stats.active, stats.processed, stats.failed) == (1, 0, 1, 0)

    async def test_done_many_settles_each_ack_on_its_own(self, broker: Broker) -> None:
        messages = await put(broker, 3)
        deliveries = await broker.dequeue([QUEUE], count=3, lease=LEASE)
        await broker.done(deliveries[2].ref)
        results = await broker.done_many(
            [Ack(deliveries[0].ref), Ack(deliveries[1].ref, retention=HOUR), Ack(deliveries[2].ref)]
        )
        assert results[0] is None and results[1] is None
        assert isinstance(results[2], LeaseLostError)
        with pytest.raises(TaskNotFoundError):
            await broker.get_task(QUEUE, messages[0].id)
        assert await state_of(broker, messages[1].id) is TaskState.COMPLETED
        assert (await broker.queue_stats(QUEUE)).processed == 3

    async def test_done_many_of_nothing_returns_nothing(self, broker: Broker) -> None:
        assert await broker.done_many([]) == []

    async def test_retry_records_the_failure_and_is_due_after_the_delay(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        delivery = await take(broker)
        await broker.retry(delivery.ref, delay=90_000, error="boom")
        info = await broker.get_task(QUEUE, message.id)
        assert info.state is TaskState.RETRY
        assert (info.retried, info.last_error) == (1, "boom")
        assert ms_of(info.last_failed_at) == clock.now_ms()
        assert ms_of(info.next_process_at) == clock.now_ms() + 90_000
        stats = await broker.queue_stats(QUEUE)
        assert (stats.retry, stats.active, stats.processed, stats.failed) == (1, 0, 1, 1)

    async def test_retry_that_is_not_a_failure_spends_no_retry_and_counts_nothing(
        self, broker: Broker
    ) -> None:
        (message,) = await put(broker)
        await broker.retry((await take(broker)).ref, delay=0, error="busy", is_failure=False)
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.retried, info.last_error) == (TaskState.RETRY, 0, "busy")
        stats = await broker.queue_stats(QUEUE)
        assert (stats.processed, stats.failed) == (0, 0)

    async def test_retried_counts_every_failed_attempt(self, broker: Broker) -> None:
        await put(broker)
        for _ in range(3):
            await broker.retry((await take(broker)).ref, delay=0, error="again")
            assert await broker.forward(QUEUE) == 1
        assert (await take(broker)).message.retried == 3

    async def test_long_errors_are_bounded(self, broker: Broker) -> None:
        (message,) = await put(broker)
        error = "x" * 20_000 + "THE END"
        await broker.retry((await take(broker)).ref, delay=0, error=error)
        last_error = (await broker.get_task(QUEUE, message.id)).last_error
        assert len(last_error) <= 4096
        assert last_error.endswith("THE END")

    async def test_archive_keeps_the_task_with_its_reason(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        await broker.archive((await take(broker)).ref, error="no retries left")
        info = await broker.get_task(QUEUE, message.id)
        assert (info.state, info.last_error) == (TaskState.ARCHIVED, "no retries left")
        assert ms_of(info.last_failed_at) == clock.now_ms()
        stats = await broker.queue_stats(QUEUE)
        assert (stats.archived, stats.processed, stats.failed) == (1, 1, 1)

    async def test_requeue_puts_the_task_first_without_spending_a_retry(
        self, broker: Broker
    ) -> None:
        first, second = await put(broker, 2)
        delivery = await take(broker)
        await broker.requeue(delivery.ref)
        info = await broker.get_task(QUEUE, first.id)
        assert (info.state, info.retried) == (TaskState.PENDING, 0)
        got = await broker.dequeue([QUEUE], count=2, lease=LEASE)
        assert [d.message.id for d in got] == [first.id, second.id]
        stats = await broker.queue_stats(QUEUE)
        assert (stats.processed, stats.failed) == (0, 0)

    async def test_extend_leases_moves_the_expiry_from_now(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await put(broker, 2)
        first, second = await broker.dequeue([QUEUE], count=2, lease=1_000)
        clock.advance(900)
        assert await broker.extend_leases([first.ref, second.ref], lease=1_000) == [True, True]
        clock.advance(900)
        assert await broker.expired_leases(QUEUE) == []
        await broker.done(first.ref)
        clock.advance(100)
        assert await broker.expired_leases(QUEUE) == [second.message.id]

    async def test_dequeue_wait_returns_as_soon_as_a_task_arrives(self, broker: Broker) -> None:
        async def produce_later() -> None:
            await asyncio.sleep(0.05)
            await put(broker)

        producer = asyncio.ensure_future(produce_later())
        started = time.monotonic()
        got = await broker.dequeue([OTHER, QUEUE], count=1, lease=LEASE, wait=5_000)
        elapsed = time.monotonic() - started
        await producer
        assert len(got) == 1
        assert elapsed < 0.5

    async def test_dequeue_wait_wakes_for_a_forwarded_task(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        message = make_message()
        await broker.schedule(message, clock.now_ms() + 1_000)

        async def forward_later() -> None:
            await asyncio.sleep(0.05)
            clock.advance(1_000)
            await broker.forward(QUEUE)

        forwarder = asyncio.ensure_future(forward_later())
        started = time.monotonic()
        got = await broker.dequeue([QUEUE], count=1, lease=LEASE, wait=5_000)
        elapsed = time.monotonic() - started
        await forwarder
        assert [d.message.id for d in got] == [message.id]
        assert elapsed < 0.5

    async def test_dequeue_wait_returns_nothing_when_no_task_arrives(self, broker: Broker) -> None:
        await put(broker, queue=OTHER)
        started = time.monotonic()
        got = await broker.dequeue([QUEUE], count=1, lease=LEASE, wait=150)
        elapsed = time.monotonic() - started
        assert got == []
        assert 0.1 <= elapsed < 2.0
