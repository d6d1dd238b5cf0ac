"""Conformance: server and scheduler state, scheduler history and tick claims, daily counts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, timedelta

import pytest

from taskq.brokers.base import (
    Broker,
    Delivery,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    WorkerInfo,
)
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    HOUR,
    OTHER,
    QUEUE,
    ConformanceBase,
    put,
    take,
)

__all__ = ["FleetConformance"]

_DAY = 86_400_000


def _server(server_id: str = "host:1:abc", started_at: int = 1) -> ServerInfo:
    return ServerInfo(
        id=server_id,
        host="host",
        pid=1,
        concurrency=4,
        queues={QUEUE: 3, OTHER: 1},
        strict_priority=False,
        started_at=started_at,
        status="active",
        active_workers=(
            WorkerInfo("t1", "email:send", QUEUE, started_at, started_at + 60_000, b"{}"),
        ),
    )


def _entry(entry_id: str, scheduler_id: str = "s1") -> SchedulerEntryInfo:
    return SchedulerEntryInfo(
        id=entry_id,
        spec="@every 30s",
        task_type="report",
        payload=b"{}",
        options={"queue": QUEUE},
        next_enqueue_at=2_000,
        prev_enqueue_at=1_000,
        scheduler_id=scheduler_id,
    )


_OUTCOMES: dict[str, tuple[Callable[[Broker, Delivery], Awaitable[None]], int, int]] = {
    "done": (lambda b, d: b.done(d.ref), 1, 0),
    "complete": (lambda b, d: b.complete(d.ref, retention=HOUR), 1, 0),
    "retry_failure": (lambda b, d: b.retry(d.ref, delay=0, error="e"), 1, 1),
    "retry_not_failure": (lambda b, d: b.retry(d.ref, delay=0, error="e", is_failure=False), 0, 0),
    "archive": (lambda b, d: b.archive(d.ref, error="e"), 1, 1),
    "requeue": (lambda b, d: b.requeue(d.ref), 0, 0),
}


class FleetConformance(ConformanceBase):
    """Fleet: published state lives for its TTL by the broker clock; counts are per UTC day."""

    async def test_server_state_round_trips_and_expires_after_its_ttl(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        info = _server(started_at=clock.now_ms())
        await broker.write_server_state(info, ttl=10_000)
        assert await broker.servers() == [info]
        clock.advance(9_999)
        assert await broker.servers() == [info]
        clock.advance(1)
        assert await broker.servers() == []

    async def test_writing_server_state_again_replaces_it_and_renews_the_ttl(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        await broker.write_server_state(_server(), ttl=10_000)
        clock.advance(9_000)
        newer = ServerInfo("host:1:abc", "host", 1, 4, {QUEUE: 1}, True, 1, "stopping")
        await broker.write_server_state(newer, ttl=10_000)
        clock.advance(9_000)
        assert await broker.servers() == [newer]

    async def test_cleared_server_state_disappears(self, broker: Broker) -> None:
        await broker.write_server_state(_server("a"), ttl=HOUR)
        await broker.write_server_state(_server("b"), ttl=HOUR)
        await broker.clear_server_state("a")
        await broker.clear_server_state("never-written")
        assert [s.id for s in await broker.servers()] == ["b"]

    async def test_scheduler_entries_round_trip_and_expire_after_their_ttl(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        entries = [_entry("e1"), _entry("e2")]
        await broker.write_scheduler_entries("s1", entries, ttl=10_000)
        clock.advance(5_000)
        await broker.write_scheduler_entries("s2", [_entry("e3", "s2")], ttl=10_000)
        assert sorted(e.id for e in await broker.scheduler_entries()) == ["e1", "e2", "e3"]
        assert _entry("e1") in await broker.scheduler_entries()
        clock.advance(5_000)
        assert [e.id for e in await broker.scheduler_entries()] == ["e3"]

    async def test_writing_scheduler_entries_replaces_the_previous_ones(
        self, broker: Broker
    ) -> None:
        await broker.write_scheduler_entries("s1", [_entry("e1"), _entry("e2")], ttl=HOUR)
        await broker.write_scheduler_entries("s1", [_entry("e3")], ttl=HOUR)
        assert [e.id for e in await broker.scheduler_entries()] == ["e3"]

    async def test_cleared_scheduler_entries_disappear(self, broker: Broker) -> None:
        await broker.write_scheduler_entries("s1", [_entry("e1")], ttl=HOUR)
        await broker.write_scheduler_entries("s2", [_entry("e2", "s2")], ttl=HOUR)
        await broker.clear_scheduler_entries("s1")
        assert [e.id for e in await broker.scheduler_entries()] == ["e2"]

    async def test_scheduler_events_are_listed_newest_first(self, broker: Broker) -> None:
        for i in range(5):
            await broker.record_scheduler_event("e1", SchedulerEvent(f"t{i}", 1_000 + i))
        await broker.record_scheduler_event("e2", SchedulerEvent("x", 5_000))
        events = await broker.scheduler_events("e1", limit=3)
        assert events == [SchedulerEvent(f"t{i}", 1_000 + i) for i in (4, 3, 2)]
        assert await broker.scheduler_events("unknown") == []

    async def test_scheduler_history_keeps_only_the_newest_events(self, broker: Broker) -> None:
        for i in range(6):
            await broker.record_scheduler_event("e1", SchedulerEvent(f"t{i}", 1_000 + i), keep=4)
        events = await broker.scheduler_events("e1")
        assert [e.task_id for e in events] == ["t5", "t4", "t3", "t2"]

    async def test_a_scheduler_tick_is_claimed_exactly_once(self, broker: Broker) -> None:
        claims = await asyncio.gather(
            *(broker.claim_scheduler_tick("e1", 60_000, ttl=HOUR) for _ in range(10))
        )
        assert sorted(claims) == [False] * 9 + [True]
        assert await broker.claim_scheduler_tick("e1", 60_000, ttl=HOUR) is False

    async def test_tick_claims_are_per_entry_and_per_tick(self, broker: Broker) -> None:
        assert await broker.claim_scheduler_tick("e1", 60_000, ttl=HOUR) is True
        assert await broker.claim_scheduler_tick("e1", 120_000, ttl=HOUR) is True
        assert await broker.claim_scheduler_tick("e2", 60_000, ttl=HOUR) is True

    async def test_a_tick_claim_lasts_its_ttl(self, broker: Broker, clock: FakeClock) -> None:
        assert await broker.claim_scheduler_tick("e1", 60_000, ttl=10_000) is True
        clock.advance(9_999)
        assert await broker.claim_scheduler_tick("e1", 60_000, ttl=10_000) is False
        clock.advance(1)
        assert await broker.claim_scheduler_tick("e1", 60_000, ttl=10_000) is True

    @pytest.mark.parametrize("outcome", list(_OUTCOMES))
    async def test_each_outcome_counts_processed_and_failed(
        self, broker: Broker, outcome: str
    ) -> None:
        apply, processed, failed = _OUTCOMES[outcome]
        await put(broker)
        await apply(broker, await take(broker))
        stats = await broker.queue_stats(QUEUE)
        assert (stats.processed, stats.failed) == (processed, failed)
        assert (stats.processed_total, stats.failed_total) == (processed, failed)
        (today,) = await broker.history(QUEUE, 1)
        assert (today.processed, today.failed) == (processed, failed)

    async def test_history_lists_daily_counts_newest_first(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        day_one = clock.now().date()
        await put(broker, 3)
        await broker.done((await take(broker)).ref)
        await broker.archive((await take(broker)).ref, error="e")
        clock.advance(_DAY)
        await broker.done((await take(broker)).ref)
        history = await broker.history(QUEUE, 3)
        assert [d.date for d in history] == [
            day_one + timedelta(days=1),
            day_one,
            day_one - timedelta(days=1),
        ]
        assert [(d.queue, d.processed, d.failed) for d in history] == [
            (QUEUE, 1, 0),
            (QUEUE, 2, 1),
            (QUEUE, 0, 0),
        ]
        stats = await broker.queue_stats(QUEUE)
        assert (stats.processed, stats.failed) == (1, 0)
        assert (stats.processed_total, stats.failed_total) == (3, 1)

    async def test_days_follow_the_utc_date_of_broker_time(
        self, broker: Broker, clock: FakeClock
    ) -> None:
        clock.set(clock.now_ms() // _DAY * _DAY + _DAY - 1)
        await put(broker, 2)
        await broker.done((await take(broker)).ref)
        clock.advance(1)
        await broker.done((await take(broker)).ref)
        history = await broker.history(QUEUE, 2)
        assert history[0].date == date(1970, 1, 1) + timedelta(days=clock.now_ms() // _DAY)
        assert [d.processed for d in history] == [1, 1]
