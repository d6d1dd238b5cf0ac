"""Burst mode (``Config(burst=True)``) on every broker: run what is due, then stop.

Each test runs one burst server and checks what it left behind through a
second connection, as another process would. The memory broker is shared
as an object; SQLite and Redis go by URL (the server owns its connection).
Every test uses its own queue names.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

import taskq
from taskq.brokers.base import Broker, EnqueueRequest
from taskq.brokers.memory import InMemoryBroker
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import TaskInfo, TaskMessage, TaskState

T = TypeVar("T")
KEEP = 600_000  # retention (ms): finished tasks stay visible as completed


@attrs.frozen
class Store:
    """Where a burst server and the test meet: a shared memory broker, or a URL."""

    target: Broker | str

    def run(self, fn: Callable[[Broker], Awaitable[T]]) -> T:
        """Run ``fn(broker)`` on the memory broker, or on a fresh connection to the URL."""

        async def go() -> T:
            if not isinstance(self.target, str):
                return await fn(self.target)
            broker = taskq.connect(self.target)
            try:
                return await fn(broker)
            finally:
                await broker.close()

        return asyncio.run(go())

    def enqueue(self, *messages: TaskMessage) -> None:
        async def go(broker: Broker) -> None:
            results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
            assert not [r for r in results if isinstance(r, Exception)]

        self.run(go)

    def get(self, m: TaskMessage) -> TaskInfo:
        return self.run(lambda b: b.get_task(m.queue, m.id))


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return Store(InMemoryBroker())
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'taskq.db'}")
    return Store(str(request.getfixturevalue("redis_server").url))


@pytest.fixture
def queue() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


def msg(queue: str, type_name: str = "t", **fields: Any) -> TaskMessage:
    return TaskMessage(id=uuid.uuid4().hex, type=type_name, payload=b"", queue=queue, **fields)


def burst(store: Store, mux: ServeMux, timeout: float = 30, **config: Any) -> float:
    """Run a burst server until it stops by itself; return how long it took."""
    server = Server(store.target, Config(burst=True, **config))
    began = time.monotonic()
    server.start(mux)
    try:
        assert server.wait(timeout), f"the burst server did not stop within {timeout}s"
    finally:
        server.shutdown()
    return time.monotonic() - began


def recording_mux(order: list[str]) -> ServeMux:
    mux = ServeMux()

    @mux.handle("t")
    async def record(ctx: Context, task: taskq.Task) -> None:
        order.append(ctx.queue)

    return mux


@pytest.mark.parametrize("strict", [False, True], ids=["weighted", "strict"])
def test_a_burst_server_runs_every_pending_task_then_stops(
    store: Store, queue: str, strict: bool
) -> None:
    weights = {f"{queue}-high": 6, f"{queue}-mid": 3, f"{queue}-low": 1}
    store.enqueue(*(msg(q) for q in weights for _ in range(100)))
    order: list[str] = []
    burst(store, recording_mux(order), queues=weights, strict_priority=strict, concurrency=4)
    assert Counter(order) == dict.fromkeys(weights, 100)
    if strict:
        assert order == [q for q in weights for _ in range(100)]
    for name in weights:
        stats = store.run(lambda b, name=name: b.queue_stats(name))
        assert (stats.pending, stats.active, stats.processed) == (0, 0, 100)


def test_tasks_due_later_do_not_keep_a_burst_server_alive(store: Store, queue: str) -> None:
    later = msg(queue)
    failing = msg(queue, "fail", max_retry=3)
    store.run(lambda b: b.schedule(later, int(time.time() * 1000) + 3_600_000))
    store.enqueue(failing)
    mux = ServeMux()

    @mux.handle("fail")
    def fail(ctx: Context, task: taskq.Task) -> None:
        raise RuntimeError("boom")

    took = burst(store, mux, queues={queue: 1}, retry_delay=lambda n, e, t: timedelta(hours=1))
    assert took < 10
    assert store.get(later).state is TaskState.SCHEDULED
    stored = store.get(failing)
    assert (stored.state, stored.retried) == (TaskState.RETRY, 1)


def test_a_retry_due_at_once_runs_in_the_same_burst(store: Store, queue: str) -> None:
    flaky = msg(queue, max_retry=5, retention=KEEP)
    store.enqueue(flaky)
    attempts: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    def fails_twice(ctx: Context, task: taskq.Task) -> None:
        attempts.append(ctx.retry_count)
        if ctx.retry_count < 2:
            raise RuntimeError("not yet")

    burst(store, mux, queues={queue: 1}, retry_delay=lambda n, e, t: timedelta(0))
    assert attempts == [0, 1, 2]
    assert store.get(flaky).state is TaskState.COMPLETED


def test_tasks_enqueued_by_running_handlers_run_in_the_same_burst(store: Store, queue: str) -> None:
    store.enqueue(*(msg(queue, "parent") for _ in range(3)))
    children: list[str] = []
    client = taskq.Client(store.target)
    mux = ServeMux()

    @mux.handle("parent")
    def parent(ctx: Context, task: taskq.Task) -> None:
        time.sleep(0.05)
        client.enqueue(taskq.Task("child"), queue=queue)

    @mux.handle("child")
    def child(ctx: Context, task: taskq.Task) -> None:
        children.append(ctx.task_id)

    try:
        burst(store, mux, queues={queue: 1}, concurrency=2)
    finally:
        client.close()
    assert len(children) == 3


def test_a_burst_server_runs_the_tasks_of_a_worker_that_died_during_the_burst(
    store: Store, queue: str
) -> None:
    slow, orphan = msg(queue, "slow"), msg(queue, max_retry=3, retention=KEEP)
    store.enqueue(slow)
    busy = threading.Event()
    order: list[str] = []
    mux = recording_mux(order)

    @mux.handle("slow")
    def hold_the_only_slot(ctx: Context, task: taskq.Task) -> None:
        busy.set()
        time.sleep(0.5)

    def another_worker_takes_a_task_and_dies() -> None:
        assert busy.wait(10)
        store.enqueue(orphan)
        taken = store.run(lambda b: b.dequeue([queue], count=1, lease=50))
        assert [d.message.id for d in taken] == [orphan.id]

    dying = threading.Thread(target=another_worker_takes_a_task_and_dies)
    dying.start()
    # The periodic recoverer is too slow to matter: the burst's own end check recovers it.
    burst(store, mux, queues={queue: 1}, concurrency=1, recoverer_interval=3600)
    dying.join(10)
    assert order == [queue]
    stored = store.get(orphan)
    assert stored.state is TaskState.COMPLETED
    assert stored.last_error == "lease expired: worker presumed dead"


def test_a_paused_queue_does_not_keep_a_burst_server_alive(store: Store, queue: str) -> None:
    waiting = msg(queue)
    store.enqueue(waiting)
    store.run(lambda b: b.pause_queue(queue))
    order: list[str] = []
    took = burst(store, recording_mux(order), queues={queue: 1})
    assert took < 10 and order == []
    assert store.get(waiting).state is TaskState.PENDING


def test_two_burst_servers_share_the_work_and_both_stop(store: Store, queue: str) -> None:
    store.enqueue(*(msg(queue) for _ in range(60)))
    order: list[str] = []
    mux = ServeMux()

    @mux.handle("t")
    def record(ctx: Context, task: taskq.Task) -> None:
        time.sleep(0.005)
        order.append(ctx.task_id)

    threads = [
        threading.Thread(target=burst, args=(store, mux), kwargs={"queues": {queue: 1}})
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(order) == len(set(order)) == 60
