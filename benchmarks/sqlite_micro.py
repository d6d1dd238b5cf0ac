"""Micro-benchmark of SQLiteBroker: the figures quoted in docs/sqlite.md.

Measures, on one database file in a fresh temporary directory (on the same
disk as ``--dir``):

* enqueue/s, one task per call: from one coroutine, and from 16 at once
  (concurrent calls share one commit);
* enqueue/s with ``enqueue_many`` in batches of ``--batch``;
* drain/s of one consumer: ``dequeue`` + ``done`` per task; ``dequeue(count=16)``
  + 16 concurrent ``done`` calls; and batched (``dequeue(count=--batch)`` +
  ``done_many``);
* drain/s of two consumer processes on the same file (write-lock contention);
* drain/s of one real worker (``taskq.Server``, concurrency 10, no-op handler);
* cross-process wake-up latency of a waiting ``dequeue`` (median and max);
* CPU used by a consumer waiting on an idle queue.

Run: ``.venv/bin/python benchmarks/sqlite_micro.py [--tasks 20000] [--json]``.
Never run as a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _broker_ops import (
    PAYLOAD,
    QUEUE,
    enqueue_batched,
    enqueue_concurrent,
    enqueue_single,
)

from taskq.brokers.base import Ack
from taskq.brokers.sqlite import SQLiteBroker
from taskq.task import TaskMessage

SPAWN = multiprocessing.get_context("spawn")


async def _drain_concurrent_acks(broker: SQLiteBroker, count: int) -> float:
    """Fetch ``count`` at a time, then ack each with its own ``done`` call, concurrently
    (as a worker with ``count`` handlers finishing at the same moment does)."""
    done = 0
    started = time.perf_counter()
    while deliveries := await broker.dequeue([QUEUE], count=count, lease=60_000):
        await asyncio.gather(*(broker.done(d.ref) for d in deliveries))
        done += len(deliveries)
    return done / (time.perf_counter() - started)


async def _drain(broker: SQLiteBroker, count: int) -> tuple[int, float]:
    done = 0
    started = time.perf_counter()
    while True:
        deliveries = await broker.dequeue([QUEUE], count=count, lease=60_000)
        if not deliveries:
            break
        if count == 1:
            await broker.done(deliveries[0].ref)
        else:
            await broker.done_many([Ack(d.ref) for d in deliveries])
        done += len(deliveries)
    return done, done / (time.perf_counter() - started)


def _drain_process(path: str, count: int, out: Any) -> None:
    async def main() -> None:
        broker = SQLiteBroker(path)
        out.put(await _drain(broker, count))
        await broker.close()

    asyncio.run(main())


def _enqueue_when_told(path: str, rounds: int, go: Any) -> None:
    async def main() -> None:
        broker = SQLiteBroker(path)
        await broker.ping()
        for n in range(rounds):
            await asyncio.get_running_loop().run_in_executor(None, go.get, True, 30)
            await asyncio.sleep(0.03)
            message = TaskMessage(
                id=f"wake-{n}", type="bench:wake", payload=repr(time.time()).encode(), queue=QUEUE
            )
            await broker.enqueue(message)
        await broker.close()

    asyncio.run(main())


async def _wake_latency(path: str, rounds: int) -> list[float]:
    broker = SQLiteBroker(path)
    await broker.ping()
    go = SPAWN.Queue()
    producer = SPAWN.Process(target=_enqueue_when_told, args=(path, rounds, go))
    producer.start()
    samples = []
    for _ in range(rounds):
        waiting = asyncio.ensure_future(broker.dequeue([QUEUE], count=1, lease=60_000, wait=30_000))
        await asyncio.sleep(0)
        go.put(True)
        (delivery,) = await waiting
        samples.append((time.time() - float(delivery.message.payload)) * 1000)
        await broker.done(delivery.ref)
    producer.join(30)
    await broker.close()
    return samples


def _worker_drain(path: str, n: int, concurrency: int) -> float:
    """Drain ``n`` no-op tasks with one real taskq worker (``taskq.Server``); tasks/s."""
    import taskq  # the runtime, only for this phase

    handled = threading.Semaphore(0)
    mux = taskq.ServeMux()

    @mux.handle("bench:")
    async def noop(ctx: Any, task: Any) -> None:
        handled.release()

    client = taskq.Client(path)
    for start in range(0, n, 100):
        client.enqueue_many([taskq.Task("bench:noop", PAYLOAD) for _ in range(min(100, n - start))])
    server = taskq.Server(path, taskq.Config(concurrency=concurrency))
    started = time.perf_counter()
    server.start(mux)
    try:
        for _ in range(n):
            if not handled.acquire(timeout=60):
                raise RuntimeError("the worker stopped handling tasks")
        return n / (time.perf_counter() - started)
    finally:
        server.shutdown()


async def _idle_cpu(path: str, seconds: float) -> float:
    broker = SQLiteBroker(path)
    await broker.ping()
    cpu = time.process_time()
    await broker.dequeue(["idle"], count=1, lease=1_000, wait=int(seconds * 1000))
    used = time.process_time() - cpu
    await broker.close()
    return used / seconds * 100


async def run(
    directory: Path, tasks: int, batch: int, log: Callable[[str], None]
) -> dict[str, Any]:
    results: dict[str, Any] = {"tasks": tasks, "batch": batch}

    def fresh(name: str) -> str:
        return str(directory / f"{name}.db")

    single_n = max(1, tasks // 4)
    broker = SQLiteBroker(fresh("single"))
    await broker.ping()
    results["enqueue_single_per_s"] = await enqueue_single(broker, single_n)
    log(f"enqueue, one per call:          {results['enqueue_single_per_s']:>9,.0f} /s")
    _, results["drain_single_per_s"] = await _drain(broker, 1)
    log(f"dequeue + done, one per call:   {results['drain_single_per_s']:>9,.0f} /s")
    await broker.close()

    broker = SQLiteBroker(fresh("concurrent"))
    await broker.ping()
    results["enqueue_16_callers_per_s"] = await enqueue_concurrent(broker, single_n, 16)
    log(f"enqueue, one per call, 16 callers: {results['enqueue_16_callers_per_s']:>6,.0f} /s")
    results["drain_16_concurrent_done_per_s"] = await _drain_concurrent_acks(broker, 16)
    log(f"dequeue 16 + 16 concurrent done: {results['drain_16_concurrent_done_per_s']:>8,.0f} /s")
    await broker.close()

    full = SQLiteBroker(fresh("full"), synchronous="FULL")
    await full.ping()
    results["enqueue_single_full_per_s"] = await enqueue_single(full, max(1, single_n // 4))
    log(f"enqueue, one per call, FULL:    {results['enqueue_single_full_per_s']:>9,.0f} /s")
    await full.close()

    broker = SQLiteBroker(fresh("batch"))
    await broker.ping()
    results["enqueue_batch_per_s"] = await enqueue_batched(broker, tasks, batch)
    log(f"enqueue_many, batches of {batch:<4}:  {results['enqueue_batch_per_s']:>9,.0f} /s")
    drained, results["drain_batch_per_s"] = await _drain(broker, batch)
    assert drained == tasks, (drained, tasks)
    log(f"dequeue {batch} + done_many, 1 proc: {results['drain_batch_per_s']:>9,.0f} /s")
    await broker.close()

    path = fresh("two")
    broker = SQLiteBroker(path)
    await enqueue_batched(broker, tasks, batch)
    await broker.close()
    out = SPAWN.Queue()
    consumers = [SPAWN.Process(target=_drain_process, args=(path, batch, out)) for _ in range(2)]
    started = time.perf_counter()
    for process in consumers:
        process.start()
    counts = [out.get(timeout=300) for _ in consumers]
    for process in consumers:
        process.join(30)
    total = sum(c for c, _ in counts)
    assert total == tasks, (total, tasks)
    # Includes both interpreters' start-up, so it is a lower bound.
    results["drain_batch_2proc_per_s"] = sum(rate for _, rate in counts)
    results["drain_batch_2proc_wall_per_s"] = tasks / (time.perf_counter() - started)
    log(
        f"dequeue {batch} + done_many, 2 procs: {results['drain_batch_2proc_per_s']:>7,.0f} /s"
        " (sum of both)"
    )

    url = "sqlite:///" + fresh("worker")
    results["worker_drain_per_s"] = await asyncio.to_thread(_worker_drain, url, single_n, 10)
    log(f"one taskq worker, concurrency 10: {results['worker_drain_per_s']:>7,.0f} tasks/s")

    samples = await _wake_latency(fresh("wake"), 15)
    results["wake_ms_median"] = statistics.median(samples)
    results["wake_ms_max"] = max(samples)
    log(
        f"cross-process wake-up:          median {results['wake_ms_median']:.1f} ms,"
        f" max {results['wake_ms_max']:.1f} ms"
    )

    results["idle_cpu_percent"] = await _idle_cpu(fresh("idle"), 3.0)
    log(f"CPU of a consumer waiting idle: {results['idle_cpu_percent']:.2f} % of one core")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per phase")
    parser.add_argument("--batch", type=int, default=100, help="batch size for batched phases")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="taskq-sqlite-bench-", dir=args.dir) as tmp:
        results = asyncio.run(run(Path(tmp), args.tasks, args.batch, print))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
