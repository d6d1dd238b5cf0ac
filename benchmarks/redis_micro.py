"""Micro-benchmark of RedisBroker alone: the figures quoted in docs/redis.md.

Starts its own ``redis-server`` on a free loopback port (no persistence),
then measures, from one Python process:

* enqueue/s, one task per call (one coroutine, then 16 at once);
* enqueue/s with ``enqueue_many`` in batches of ``--batch``;
* dequeue+ack/s: ``dequeue(count=1)`` + ``done`` per task, and batched
  (``dequeue(count=--batch)`` + ``done_many``);
* wake-up latency of a consumer blocked in ``dequeue(wait=...)`` on an empty
  queue (on its own thread and event loop) until it holds a task that was
  just enqueued: p50 and p99;
* beside them, on the same server in the same run, ``redis-benchmark``'s
  rates for ``EVALSHA`` of a trivial script (1 and 50 connections) and PING.

Run: ``.venv/bin/python benchmarks/redis_micro.py [--tasks 20000] [--json]``.
Never run as a test. The server is stopped (by pid) before exiting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _broker_ops import (
    QUEUE,
    enqueue_batched,
    enqueue_concurrent,
    enqueue_single,
)

from taskq.brokers.base import Ack
from taskq.brokers.redis import RedisBroker
from taskq.task import TaskMessage, TaskState


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[int]:
    """A throw-away redis-server on a free port; yields the port, stops it by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="taskq-redis-micro-") as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit("redis-server did not start")
                    time.sleep(0.02)
            yield port
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


async def _drain_single(broker: RedisBroker) -> float:
    done = 0
    started = time.perf_counter()
    while deliveries := await broker.dequeue([QUEUE], count=1, lease=60_000):
        await broker.done(deliveries[0].ref)
        done += 1
    return done / (time.perf_counter() - started)


async def _drain_batched(broker: RedisBroker, batch: int) -> float:
    done = 0
    started = time.perf_counter()
    while deliveries := await broker.dequeue([QUEUE], count=batch, lease=60_000):
        await broker.done_many([Ack(d.ref) for d in deliveries])
        done += len(deliveries)
    return done / (time.perf_counter() - started)


def _wake_latency(url: str, samples: int) -> list[float]:
    """Seconds from ``enqueue`` starting to a blocked consumer holding the task."""
    broker = RedisBroker.from_url(url)
    got: dict[str, float] = {}
    ready = threading.Event()
    stop = threading.Event()

    def consumer() -> None:
        async def run() -> None:
            await broker.dequeue(["lat"], count=1, lease=1000)  # connect before measuring
            ready.set()
            while not stop.is_set():
                for d in await broker.dequeue(["lat"], count=1, lease=60_000, wait=1000):
                    got[d.message.id] = time.perf_counter()
                    await broker.done(d.ref)
            await broker.close()

        asyncio.run(run())

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    ready.wait(10)

    async def produce() -> list[float]:
        sent: dict[str, float] = {}
        for i in range(samples):
            await asyncio.sleep(0.005)  # the consumer is blocked again by then
            message = TaskMessage(id=f"lat-{i}", type="bench:lat", payload=b"", queue="lat")
            sent[message.id] = time.perf_counter()
            await broker.enqueue(message)
        deadline = time.monotonic() + 10
        while len(got) < samples and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the consumer runs on another thread
        await broker.close()
        return [got[i] - sent[i] for i in sent if i in got]

    latencies = asyncio.run(produce())
    stop.set()
    thread.join(5)
    return latencies


def _redis_benchmark(port: int, n: int) -> dict[str, float]:
    """requests/s of EVALSHA (trivial script) with 1 and 50 connections, and PING."""
    binary = shutil.which("redis-benchmark")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        return {}
    sha = subprocess.run(
        [cli, "-p", str(port), "SCRIPT", "LOAD", "return 1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    out: dict[str, float] = {}
    runs = {
        "redis-benchmark EVALSHA, 1 connection": ["-c", "1", "EVALSHA", sha, "0"],
        "redis-benchmark EVALSHA, 50 connections": ["-c", "50", "EVALSHA", sha, "0"],
        "redis-benchmark PING, 1 connection": ["-c", "1", "PING"],
    }
    for label, args in runs.items():
        text = subprocess.run(
            [binary, "-p", str(port), "-n", str(n), "-q", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = re.search(r"([\d.]+) requests per second", text.replace("\r", "\n"))
        if match:
            out[label] = float(match.group(1))
    return out


async def _measure(url: str, tasks: int, batch: int) -> dict[str, float]:
    broker = RedisBroker.from_url(url)
    await broker.ping()
    results: dict[str, float] = {}
    single = max(tasks // 4, 1000)
    results["enqueue/s, one per call"] = await enqueue_single(broker, single)
    results["dequeue+done/s, one per call"] = await _drain_single(broker)
    results["enqueue/s, one per call, 16 callers"] = await enqueue_concurrent(broker, single, 16)
    await broker.delete_all(QUEUE, TaskState.PENDING, limit=single)
    results[f"enqueue_many/s, batches of {batch}"] = await enqueue_batched(broker, tasks, batch)
    results[f"dequeue+done_many/s, batches of {batch}"] = await _drain_batched(broker, batch)
    await broker.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with redis_server() as port:
        url = f"redis://127.0.0.1:{port}/0"
        results = asyncio.run(_measure(url, args.tasks, args.batch))
        latencies = sorted(_wake_latency(url, args.latency_samples))
        if latencies:
            results["wake-up latency p50 (ms)"] = statistics.median(latencies) * 1000
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            results["wake-up latency p99 (ms)"] = p99 * 1000
        results.update(_redis_benchmark(port, 100_000))
    if args.json:
        print(json.dumps(results))
        return
    width = max(len(k) for k in results)
    python = sys.version.split()[0]
    print(f"RedisBroker micro-benchmark (own redis-server on 127.0.0.1, Python {python})")
    for name, value in results.items():
        print(f"  {name:<{width}}  {value:>12,.1f}")


if __name__ == "__main__":
    main()
