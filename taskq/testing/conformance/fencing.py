"""Conformance: fencing. A transition carrying a stale or expired lease changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from taskq.brokers.base import Broker, LeaseRef
from taskq.errors import LeaseLostError
from taskq.task import TaskInfo, TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    QUEUE,
    ConformanceBase,
    put,
    state_of,
    take,
)

__all__ = ["FencingConformance"]

_LEASE = 10_000

_FENCED: dict[str, Callable[[Broker, LeaseRef], Awaitable[None]]] = {
    "done": lambda b, r: b.done(r),
    "complete": lambda b, r: b.complete(r, retention=HOUR),
    "retry": lambda b, r: b.retry(r, delay=0, error="zombie"),
    "archive": lambda b, r: b.archive(r, error="zombie"),
    "requeue": lambda b, r: b.requeue(r),
    "write_result": lambda b, r: b.write_result(r, b"zombie"),
}

_SCENARIOS = ["wrong_token", "lease_expired", "reclaimed", "redelivered", "settled"]


async def _stale_ref(broker: Broker, clock: FakeClock, scenario: str) -> LeaseRef:
    """Lease a task, then make its ref stale in the way ``scenario`` names."""
    await put(broker)
    delivery = await take(broker, lease=_LEASE)
    if scenario == "wrong_token":
        return LeaseRef(QUEUE, delivery.message.id, delivery.token + "-forged")
    clock.advance(_LEASE)
    if scenario == "reclaimed":
        (reclaimed,) = await broker.reclaim_expired(QUEUE, lease=_LEASE)
        assert reclaimed.message.id == delivery.message.id
    elif scenario in ("redelivered", "settled"):
        (reclaimed,) = await broker.reclaim_expired(QUEUE, lease=_LEASE)
        await broker.retry(reclaimed.ref, delay=0, error="lease expired")
        if scenario == "redelivered":
            assert await broker.forward(QUEUE) == 1
            assert (await take(broker, lease=_LEASE)).message.id == delivery.message.id
    return delivery.ref


async def _snapshot(broker: Broker, task_id: str) -> tuple[TaskInfo, tuple[int, ...]]:
    info = await broker.get_task(QUEUE, task_id)
    s = await broker.queue_stats(QUEUE)
    counts = (s.size, s.pending, s.active, s.retry, s.archived, s.completed, s.processed, s.failed)
    return info, counts


class FencingConformance(ConformanceBase):
    """Fencing: zombie workers' late transitions are refused and change nothing."""

    @pytest.mark.parametrize("scenario", _SCENARIOS)
    @pytest.mark.parametrize("operation", list(_FENCED))
    async def test_a_stale_lease_is_refused_and_changes_nothing(
        self, broker: Broker, clock: FakeClock, operation: str, scenario: str
    ) -> None:
        ref = await _stale_ref(broker, clock, scenario)
        before = await _snapshot(broker, ref.task_id)
        with pytest.raises(LeaseLostError):
            await _FENCED[operation](broker, ref)
        assert await _snapshot(broker, ref.task_id) == before

    @pytest.mark.parametrize("scenario", _SCENARIOS)
    async def test_extending_a_stale_lease_returns_false_and_changes_nothing(
        self, broker: Broker, clock: FakeClock, scenario: str
    ) -> None:
        ref = await _stale_ref(broker, clock, scenario)
        before = await _snapshot(broker, ref.task_id)
        assert await broker.extend_leases([ref], lease=HOUR) == [False]
        assert await _snapshot(broker, ref.task_id) == before

    async def test_late_ack_after_lease_expiry_is_refused(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        delivery = await take(broker, lease=1_000)
        clock.advance(999)
        await broker.extend_leases([delivery.ref], lease=1_000)
        clock.advance(1_000)
        with pytest.raises(LeaseLostError):
            await broker.done(delivery.ref)
        assert await state_of(broker, message.id) is TaskState.ACTIVE

    async def test_reclaim_gives_a_new_token_and_the_old_one_is_refused(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        (message,) = await put(broker)
        old = await take(broker, lease=1_000)
        clock.advance(1_000)
        (new,) = await broker.reclaim_expired(QUEUE, lease=5_000)
        assert new.token != old.token
        assert new.message.id == message.id
        assert new.lease_expires_at == clock.now_ms() + 5_000
        with pytest.raises(LeaseLostError):
            await broker.archive(old.ref, error="zombie")
        await broker.archive(new.ref, error="recovered")
        assert (await broker.get_task(QUEUE, message.id)).last_error == "recovered"

    async def test_a_second_ack_of_the_same_attempt_is_refused(self, broker: Broker) -> None:
        await put(broker)
        delivery = await take(broker)
        await broker.complete(delivery.ref, retention=HOUR)
        with pytest.raises(LeaseLostError):
            await broker.done(delivery.ref)
        assert (await broker.queue_stats(QUEUE)).processed == 1

    async def test_a_ref_to_an_unknown_queue_or_task_is_refused(self, broker: Broker) -> None:
        await put(broker)
        delivery = await take(broker)
        with pytest.raises(LeaseLostError):
            await broker.done(LeaseRef("no-such-queue", delivery.message.id, delivery.token))
        with pytest.raises(LeaseLostError):
            await broker.done(LeaseRef(QUEUE, "no-such-task", delivery.token))
        refs = [LeaseRef(QUEUE, "no-such-task", "t"), delivery.ref]
        assert await broker.extend_leases(refs, lease=HOUR) == [False, True]

    async def test_concurrent_acks_of_one_attempt_apply_once(self, broker: Broker) -> None:
        await put(broker)
        delivery = await take(broker)
        results = await asyncio.gather(
            *(broker.done(delivery.ref) for _ in range(8)), return_exceptions=True
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, LeaseLostError) for r in results if r is not None)
        assert (await broker.queue_stats(QUEUE)).processed == 1
