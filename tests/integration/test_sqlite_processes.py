"""SQLiteBroker across real processes: one file, several producers and consumers.

Children are started with the ``spawn`` method (a fresh interpreter each, as
separate worker processes would be) and talk to the parent only through the
database file and small multiprocessing queues.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import statistics
import time
from collections import Counter
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, TextIO

import pytest

from taskq.brokers.base import Ack, EnqueueRequest
from taskq.brokers.sqlite import SCHEMA_VERSION, SQLiteBroker
from taskq.errors import BrokerConnectionError, SchemaVersionError
from taskq.task import TaskMessage, TaskState

QUEUE = "procs"
TOTAL = 5_000
SPAWN = multiprocessing.get_context("spawn")


def _message(task_id: str, payload: bytes = b"{}") -> TaskMessage:
    return TaskMessage(id=task_id, type="proc:task", payload=payload, queue=QUEUE)


# --------------------------------------------------------------------------- child processes
# Module-level functions so that spawned children can import them.


def _produce(path: str, prefix: str, count: int, batch: int) -> None:
    """Enqueue ``count`` tasks: one by one when ``batch`` is 1, else with enqueue_many."""

    async def main() -> None:
        broker = SQLiteBroker(path)
        ids = [f"{prefix}-{i}" for i in range(count)]
        for start in range(0, count, batch):
            chunk = ids[start : start + batch]
            if batch == 1:
                await broker.enqueue(_message(chunk[0]))
            else:
                results = await broker.enqueue_many([EnqueueRequest(_message(i)) for i in chunk])
                assert all(r is TaskState.PENDING for r in results), results
        await broker.close()

    asyncio.run(main())


def _consume(path: str, record: str, stop: EventType) -> None:
    """Dequeue and ack until ``stop`` is set and nothing is left; log each id before its ack."""

    async def main(out: TextIO) -> None:
        broker = SQLiteBroker(path)
        while True:
            deliveries = await broker.dequeue([QUEUE], count=16, lease=60_000, wait=100)
            if not deliveries:
                if stop.is_set():
                    break
                continue
            out.write("".join(f"{d.message.id}\n" for d in deliveries))
            out.flush()
            results = await broker.done_many([Ack(d.ref) for d in deliveries])
            assert results == [None] * len(deliveries), results
        await broker.close()

    with open(record, "a", encoding="utf-8") as out:
        asyncio.run(main(out))


def _take_and_hang(path: str, count: int, lease: int, taken: Any) -> None:
    """Lease ``count`` tasks, report their ids, then hang as if mid-task (until killed)."""

    async def main() -> None:
        broker = SQLiteBroker(path)
        deliveries = await broker.dequeue([QUEUE], count=count, lease=lease)
        taken.put([d.message.id for d in deliveries])
        await asyncio.sleep(3600)

    asyncio.run(main())


def _enqueue_on_signal(path: str, rounds: int, go: Any) -> None:
    """For each signal on ``go``: wait a moment, then enqueue a task stamped with the time."""

    async def main() -> None:
        broker = SQLiteBroker(path)
        await broker.ping()
        for n in range(rounds):
            await asyncio.get_running_loop().run_in_executor(None, go.get, True, 30)
            await asyncio.sleep(0.05)
            sent = time.time()
            await broker.enqueue(_message(f"wake-{n}", repr(sent).encode()))
        await broker.close()

    asyncio.run(main())


def _join_all(processes: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
        process.join(5)
    assert not alive, f"processes did not finish in {timeout} s: {alive}"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def _read_records(records: list[str]) -> list[list[str]]:
    return [Path(record).read_text().splitlines() for record in records]


async def _wait_until_drained(broker: SQLiteBroker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = await broker.queue_stats(QUEUE)
        if stats.pending == 0 and stats.active == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"queue not drained in {timeout} s: {stats}")


# --------------------------------------------------------------------------- tests


async def test_two_producers_and_two_consumers_process_every_task_exactly_once(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shared.db")
    broker = SQLiteBroker(path)
    await broker.ping()  # create the schema once, before the crowd arrives
    stop = SPAWN.Event()
    records = [str(tmp_path / f"consumer-{n}.log") for n in range(2)]
    consumers = [SPAWN.Process(target=_consume, args=(path, r, stop)) for r in records]
    producers = [
        SPAWN.Process(target=_produce, args=(path, "single", TOTAL // 2, 1)),
        SPAWN.Process(target=_produce, args=(path, "batch", TOTAL // 2, 50)),
    ]
    try:
        for process in consumers + producers:
            process.start()
        _join_all(producers, timeout=120)
        await _wait_until_drained(broker, timeout=120)
        stop.set()
        _join_all(consumers, timeout=30)
    finally:
        for process in consumers + producers:
            if process.is_alive():
                process.kill()
                process.join(5)

    per_consumer = _read_records(records)
    delivered = Counter(task_id for ids in per_consumer for task_id in ids)
    expected = {f"single-{i}" for i in range(TOTAL // 2)} | {
        f"batch-{i}" for i in range(TOTAL // 2)
    }
    assert set(delivered) == expected
    assert [i for i, n in delivered.items() if n > 1] == []
    assert all(per_consumer), "both consumers should have worked"
    stats = await broker.queue_stats(QUEUE)
    assert (stats.size, stats.processed_total) == (0, TOTAL)
    await broker.close()


async def test_tasks_of_a_consumer_killed_mid_task_are_reclaimed_after_lease_expiry(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "kill.db")
    broker = SQLiteBroker(path)
    for i in range(8):
        await broker.enqueue(_message(f"k-{i}"))
    taken = SPAWN.Queue()
    victim = SPAWN.Process(target=_take_and_hang, args=(path, 5, 1_000, taken))
    victim.start()
    try:
        leased = taken.get(timeout=60)
        assert len(leased) == 5
        os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
        victim.join(10)
        assert victim.exitcode == -signal.SIGKILL
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join(5)

    # Not before the lease ends: a live worker may still be on it.
    assert await broker.reclaim_expired(QUEUE, lease=30_000) == []
    reclaimed = []
    deadline = time.monotonic() + 10
    while len(reclaimed) < 5 and time.monotonic() < deadline:
        reclaimed += await broker.reclaim_expired(QUEUE, lease=30_000)
        await asyncio.sleep(0.05)
    assert sorted(d.message.id for d in reclaimed) == sorted(leased)

    for delivery in reclaimed:
        await broker.retry(delivery.ref, delay=0, error="worker died (lease expired)")
    assert await broker.forward(QUEUE) == 5
    again = await broker.dequeue([QUEUE], count=10, lease=30_000)
    assert sorted(d.message.id for d in again) == [f"k-{i}" for i in range(8)]
    assert {
        d.message.id: d.message.retried for d in again if d.message.id in leased
    } == dict.fromkeys(leased, 1)
    await broker.close()


async def test_a_waiting_dequeue_wakes_within_50_ms_of_an_enqueue_from_another_process(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "wake.db")
    broker = SQLiteBroker(path)
    await broker.ping()
    rounds = 7
    go = SPAWN.Queue()
    producer = SPAWN.Process(target=_enqueue_on_signal, args=(path, rounds, go))
    producer.start()
    latencies = []
    try:
        for _ in range(rounds):
            waiting = asyncio.ensure_future(
                broker.dequeue([QUEUE], count=1, lease=30_000, wait=30_000)
            )
            await asyncio.sleep(0)
            go.put(True)
            (delivery,) = await asyncio.wait_for(waiting, 60)
            latencies.append(time.time() - float(delivery.message.payload))
            await broker.done(delivery.ref)
        _join_all([producer], timeout=30)
    finally:
        if producer.is_alive():
            producer.kill()
            producer.join(5)
    print(f"cross-process wake latency ms: {[round(x * 1000, 1) for x in latencies]}")
    assert statistics.median(latencies) < 0.050
    assert max(latencies) < 0.200


async def test_a_file_written_by_a_newer_schema_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "newer.db"
    await SQLiteBroker(str(path)).ping()
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    conn.close()

    broker = SQLiteBroker(str(path))
    with pytest.raises(SchemaVersionError) as caught:
        await broker.enqueue(_message("refused"))
    text = str(caught.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in text
    assert "newer taskq" in text
    assert f"up to version {SCHEMA_VERSION}" in text
    await broker.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    conn.close()


async def test_a_file_that_is_not_a_database_gives_a_connection_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite database file, just some text" * 100)
    broker = SQLiteBroker(str(path))
    with pytest.raises(BrokerConnectionError, match="not a database"):
        await broker.ping()
    await broker.close()
