"""The sync Client's blocking path through a Sentinel failover.

A producer thread enqueues through one sync ``taskq.Client`` on a
``redis+sentinel://`` URL (stored from its own thread by
``RedisBroker.enqueue_blocking``, never through taskq's loop thread) while an
async consumer drains and the master fails over. The same Client must follow
the new master, every enqueue that returned must be dequeued later, every
error it raised must be a taskq ``BrokerError``, and the interruption — the
longest gap between two acknowledged enqueues — is measured and printed.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

import taskq
from taskq.brokers.base import Broker
from taskq.errors import BrokerConnectionError, BrokerError, BrokerTimeoutError
from taskq.task import Task
from taskq.testing.servers import RedisSentinel
from tests.integration.test_redis_failover import (
    DRAIN_BOUND,
    LOAD_AFTER,
    LOAD_BEFORE,
    MAX_INTERRUPTION,
    QUEUE,
    Ledger,
    _consume_once,
)
from tests.integration.test_sync_client import LoopHops

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

BATCH = 10  # tasks per enqueue_many
BATCH_EVERY = 5  # every 5th call is an enqueue_many


class Producer(threading.Thread):
    """Enqueues through a sync Client until stopped, writing what happened into a ledger.

    Only the producer's own enqueues count as successes here, so the
    interruption measured is the one a sync caller sees.
    """

    def __init__(self, client: taskq.Client, ledger: Ledger) -> None:
        super().__init__(name="sync-producer", daemon=True)
        self.client = client
        self.ledger = ledger
        self.stop = threading.Event()
        self.raised: list[BaseException] = []  # what enqueue / enqueue_many raised or refused
        self.calls = {"enqueue": 0, "enqueue_many": 0}

    def run(self) -> None:
        for n in itertools.count():
            if self.stop.is_set():
                return
            if n % BATCH_EVERY == BATCH_EVERY - 1:
                ok = self._enqueue_many([f"s{n}-{i}" for i in range(BATCH)])
            else:
                ok = self._enqueue(f"s{n}")
            # Pacing, not synchronisation: a steady load with a pause after an error.
            time.sleep(0.003 if ok else 0.02)

    def _enqueue(self, task_id: str) -> bool:
        self.calls["enqueue"] += 1
        try:
            self.client.enqueue(Task("failover:sync", b""), queue=QUEUE, task_id=task_id)
        except Exception as exc:
            self._failed([task_id], exc)
            return False
        self._acked([task_id])
        return True

    def _enqueue_many(self, task_ids: list[str]) -> bool:
        self.calls["enqueue_many"] += 1
        tasks = [Task("failover:sync", b"", task_id=i, queue=QUEUE) for i in task_ids]
        try:
            results = self.client.enqueue_many(tasks)
        except Exception as exc:
            self._failed(task_ids, exc)
            return False
        refused = [
            (i, r) for i, r in zip(task_ids, results, strict=True) if isinstance(r, Exception)
        ]
        for task_id, exc in refused:
            self._failed([task_id], exc)
        self._acked(
            [i for i, r in zip(task_ids, results, strict=True) if not isinstance(r, Exception)]
        )
        return not refused

    def _acked(self, task_ids: list[str]) -> None:
        if task_ids:
            now = time.monotonic()
            self.ledger.acked.update(task_ids)
            self.ledger.ack_times.append(now)
            self.ledger.successes.append(now)

    def _failed(self, task_ids: list[str], exc: BaseException) -> None:
        # The outcome is unknown: the tasks may or may not have been stored.
        self.ledger.ambiguous.update(task_ids)
        self.ledger.errors.append(f"sync enqueue: {exc!r}")
        self.raised.append(exc)


@pytest.fixture
async def consumer_broker(redis_sentinel: RedisSentinel) -> AsyncIterator[Broker]:
    redis_sentinel.flushall()
    broker = taskq.connect(redis_sentinel.url)
    try:
        yield broker
    finally:
        await broker.close()


async def test_a_sync_client_follows_a_sentinel_failover_without_losing_an_acknowledged_enqueue(
    redis_sentinel: RedisSentinel,
    consumer_broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    broker = consumer_broker
    await asyncio.to_thread(redis_sentinel.wait_stable)  # a failover needs agreeing sentinels
    old_master = redis_sentinel.master
    hops = LoopHops(monkeypatch)
    client = taskq.Client(redis_sentinel.url)
    ledger = Ledger()
    producer = Producer(client, ledger)
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            await _consume_once(broker, ledger, wait=100)

    try:
        consumer = asyncio.create_task(consume())
        producer.start()
        try:
            await asyncio.sleep(LOAD_BEFORE)
            failover_started = time.monotonic()
            new_master = await asyncio.to_thread(redis_sentinel.failover)
            failover_done = time.monotonic()
            await asyncio.sleep(LOAD_AFTER)
        finally:
            producer.stop.set()
            await asyncio.to_thread(producer.join, 30)
            stop.set()
            await consumer
        load_end = time.monotonic()
        assert not producer.is_alive(), "the producer is stuck in a sync enqueue"
        loop_hops = hops.count

        deadline = time.monotonic() + DRAIN_BOUND
        while not ledger.acked <= ledger.delivered and time.monotonic() < deadline:
            await _consume_once(broker, ledger, wait=200)
    finally:
        await asyncio.to_thread(client.close)

    # Only the producer's acknowledged enqueues count: the interruption a sync caller sees.
    interruption = ledger.longest_gap(failover_started, load_end, ledger.ack_times)
    enqueued_after = sum(1 for t in ledger.ack_times if t > failover_done)
    foreign = [exc for exc in producer.raised if not isinstance(exc, BrokerError)]
    # A failover is a passing outage: callers see only the kinds worth retrying
    # (NOREPLICAS from the fenced old master included), never a plain BrokerError.
    lasting = [
        exc
        for exc in producer.raised
        if not isinstance(exc, (BrokerConnectionError, BrokerTimeoutError))
    ]
    report = (
        f"sentinel failover {old_master.port} -> {new_master.port} under a sync Client: "
        f"interruption {interruption * 1000:.0f} ms (longest gap between acknowledged sync "
        f"enqueues), failover took {(failover_done - failover_started) * 1000:.0f} ms, "
        f"{producer.calls['enqueue']} enqueue + {producer.calls['enqueue_many']} enqueue_many "
        f"calls, {len(ledger.acked)} tasks acknowledged ({enqueued_after} calls after the "
        f"failover), {len(ledger.ambiguous)} failed, {len(producer.raised)} errors raised: "
        f"{sorted({type(exc).__name__ for exc in producer.raised})}"
    )
    record_property("sync_failover_interruption_ms", round(interruption * 1000))
    with capsys.disabled():
        print(f"\n[measured] {report}")

    assert new_master.port != old_master.port
    assert loop_hops == 0, "the sync Client went through the loop thread"
    assert producer.calls["enqueue_many"] > 0
    assert not foreign, f"driver errors escaped the sync Client: {foreign[:5]!r}"
    assert not lasting, f"a failover raised errors not worth retrying: {lasting[:5]!r}"
    assert enqueued_after, "no sync enqueue succeeded after the failover: the Client did not follow"
    lost = ledger.acked - ledger.delivered
    assert not lost, f"{len(lost)} acknowledged enqueues were never dequeued: {sorted(lost)[:10]}"
    assert interruption < MAX_INTERRUPTION, report
