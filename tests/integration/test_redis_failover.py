"""RedisBroker over Sentinel: a failover under a steady enqueue + dequeue load.

The same broker object must follow the new master without a restart, every
enqueue that returned must be dequeued later (none lost), and the
interruption — the longest gap between two successful operations — is
measured and printed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import attrs
import pytest

import taskq
from taskq.brokers.base import Broker
from taskq.errors import BrokerError, LeaseLostError
from taskq.task import TaskMessage
from taskq.testing.servers import RedisSentinel

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUEUE = "failover"
LEASE = 3_000  # short, so a delivery whose reply was lost is reclaimed soon
LOAD_BEFORE = 1.0  # seconds of load before the failover
LOAD_AFTER = 2.0  # seconds of load after the new master is in place
DRAIN_BOUND = 15.0  # seconds to collect every acknowledged task afterwards
MAX_INTERRUPTION = 10.0  # reliability.md row 21: writes refused for at most 10 s


@attrs.define
class Ledger:
    """What the load saw: acknowledged enqueues, deliveries and when operations succeeded."""

    acked: set[str] = attrs.field(factory=set)
    ambiguous: set[str] = attrs.field(factory=set)
    delivered: set[str] = attrs.field(factory=set)
    successes: list[float] = attrs.field(factory=list)
    ack_times: list[float] = attrs.field(factory=list)
    errors: list[str] = attrs.field(factory=list)

    def longest_gap(self, start: float, end: float, times: list[float] | None = None) -> float:
        """The longest time without a successful operation within [start, end].

        ``times``: which successes count (default: every operation's).
        """
        within = sorted(
            t for t in (self.successes if times is None else times) if start <= t <= end
        )
        points = [start, *within, end]
        return max(b - a for a, b in itertools.pairwise(points))


def _message(task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="failover:task", payload=b"", queue=QUEUE)


async def _produce(broker: Broker, ledger: Ledger, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        task_id = f"t{n}"
        n += 1
        try:
            await broker.enqueue(_message(task_id))
        except BrokerError as exc:
            # The outcome is unknown: it may or may not have been stored.
            ledger.ambiguous.add(task_id)
            ledger.errors.append(f"enqueue: {exc!r}")
            await asyncio.sleep(0.02)
        else:
            ledger.acked.add(task_id)
            ledger.successes.append(time.monotonic())
            ledger.ack_times.append(time.monotonic())
        await asyncio.sleep(0.003)


async def _consume_once(broker: Broker, ledger: Ledger, *, wait: int) -> None:
    try:
        deliveries = await broker.dequeue([QUEUE], count=20, lease=LEASE, wait=wait)
        deliveries += await broker.reclaim_expired(QUEUE, lease=LEASE)
    except BrokerError as exc:
        ledger.errors.append(f"dequeue: {exc!r}")
        await asyncio.sleep(0.02)
        return
    ledger.successes.append(time.monotonic())
    for delivery in deliveries:
        ledger.delivered.add(delivery.message.id)
        try:
            await broker.done(delivery.ref)
        except (BrokerError, LeaseLostError) as exc:
            ledger.errors.append(f"done: {exc!r}")


async def _consume(broker: Broker, ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _consume_once(broker, ledger, wait=100)


@pytest.fixture
async def sentinel_broker(redis_sentinel: RedisSentinel) -> AsyncIterator[Broker]:
    redis_sentinel.flushall()
    broker = taskq.connect(redis_sentinel.url)
    try:
        yield broker
    finally:
        await broker.close()


async def test_sentinel_failover_under_load_is_followed_without_losing_an_acknowledged_enqueue(
    redis_sentinel: RedisSentinel,
    sentinel_broker: Broker,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    broker = sentinel_broker
    await asyncio.to_thread(redis_sentinel.wait_stable)  # a failover needs agreeing sentinels
    old_master = redis_sentinel.master
    ledger = Ledger()
    stop = asyncio.Event()
    load = [
        asyncio.create_task(_produce(broker, ledger, stop)),
        asyncio.create_task(_consume(broker, ledger, stop)),
    ]
    try:
        await asyncio.sleep(LOAD_BEFORE)
        failover_started = time.monotonic()
        new_master = await asyncio.to_thread(redis_sentinel.failover)
        failover_done = time.monotonic()
        await asyncio.sleep(LOAD_AFTER)
    finally:
        stop.set()
        await asyncio.gather(*load)
    load_end = time.monotonic()

    deadline = time.monotonic() + DRAIN_BOUND
    while not ledger.acked <= ledger.delivered and time.monotonic() < deadline:
        await _consume_once(broker, ledger, wait=200)

    interruption = ledger.longest_gap(failover_started, load_end)
    enqueued_after = sum(1 for t in ledger.ack_times if t > failover_done)
    report = (
        f"sentinel failover {old_master.port} -> {new_master.port}: "
        f"interruption {interruption * 1000:.0f} ms (longest gap between successful operations), "
        f"failover took {(failover_done - failover_started) * 1000:.0f} ms, "
        f"{len(ledger.acked)} enqueues acknowledged, {len(ledger.ambiguous)} failed, "
        f"{len(ledger.errors)} errors seen by the load"
    )
    record_property("failover_interruption_ms", round(interruption * 1000))
    with capsys.disabled():
        print(f"\n[measured] {report}")

    assert new_master.port != old_master.port
    assert enqueued_after, "no enqueue succeeded after the failover: the broker did not follow"
    lost = ledger.acked - ledger.delivered
    assert not lost, f"{len(lost)} acknowledged enqueues were never dequeued: {sorted(lost)[:10]}"
    assert interruption < MAX_INTERRUPTION, report
