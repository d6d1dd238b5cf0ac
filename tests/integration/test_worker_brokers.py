"""The worker's "done when" behaviours on the brokers shared between processes.

Each test runs a Server (connected from the URL, so it owns its broker) and
talks to the same store through a second broker connection, as a client in
another process would. Every test uses its own queue names.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import taskq
from taskq.brokers.base import Broker, EnqueueRequest
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import TaskInfo, TaskMessage, TaskState

T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'taskq.db'}"
    try:
        from taskq.brokers.redis import RedisBroker  # noqa: F401
    except ImportError:
        pytest.skip("the Redis broker is not part of this installation yet")
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def queue() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


def on_broker(url: str, fn: Callable[[Broker], Awaitable[T]]) -> T:
    """Run ``fn(broker)`` on a fresh connection (as another process would)."""

    async def go() -> T:
        broker = taskq.connect(url)
        try:
            return await fn(broker)
        finally:
            await broker.close()

    return asyncio.run(go())


def msg(queue: str, type_name: str = "t", **fields: Any) -> TaskMessage:
    return TaskMessage(id=uuid.uuid4().hex, type=type_name, payload=b"", queue=queue, **fields)


def enqueue(url: str, *messages: TaskMessage) -> None:
    async def go(broker: Broker) -> None:
        for start in range(0, len(messages), 500):
            chunk = messages[start : start + 500]
            results = await broker.enqueue_many([EnqueueRequest(m) for m in chunk])
            assert not [r for r in results if isinstance(r, Exception)]

    on_broker(url, go)


def get(url: str, m: TaskMessage) -> TaskInfo:
    return on_broker(url, lambda b: b.get_task(m.queue, m.id))


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def serve(url: str) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(mux: ServeMux, **config: Any) -> Server:
        config.setdefault("fetch_wait", 0.2)
        server = Server(url, Config(**config))
        server.start(mux)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


def _recording_mux(order: list[str]) -> ServeMux:
    mux = ServeMux()

    @mux.handle("t")
    async def record(ctx: Context, task: taskq.Task) -> None:
        order.append(ctx.queue)

    return mux


def test_weighted_queues_share_the_first_thousand_tasks_by_weight(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    weights = {f"{queue}-high": 6, f"{queue}-mid": 3, f"{queue}-low": 1}
    enqueue(url, *(msg(q) for q in weights for _ in range(1000)))
    order: list[str] = []
    serve(_recording_mux(order), queues=weights, concurrency=10)
    wait_until(lambda: len(order) >= 1000, 60, "1000 tasks")
    share = Counter(order[:1000])
    for name, weight in weights.items():
        assert abs(share[name] / 10 - weight * 10) <= 5, share


def test_strict_priority_drains_the_heaviest_queue_first(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    weights = {f"{queue}-high": 6, f"{queue}-mid": 3, f"{queue}-low": 1}
    enqueue(url, *(msg(q) for q in reversed(list(weights)) for _ in range(50)))
    order: list[str] = []
    serve(_recording_mux(order), queues=weights, strict_priority=True, concurrency=5)
    wait_until(lambda: len(order) == 150, 60, "150 tasks")
    assert order == [q for q in weights for _ in range(50)]


@pytest.mark.parametrize(
    ("max_retry", "final"), [(3, TaskState.COMPLETED), (2, TaskState.ARCHIVED)]
)
def test_a_handler_failing_three_times_runs_four_times_or_ends_archived(
    url: str, queue: str, serve: Callable[..., Server], max_retry: int, final: TaskState
) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    def flaky(ctx: Context, task: taskq.Task) -> None:
        runs.append(ctx.retry_count)
        if len(runs) <= 3:
            raise RuntimeError(f"failure {len(runs)}")

    m = msg(queue, max_retry=max_retry, retention=600_000)
    enqueue(url, m)
    serve(mux, queues={queue: 1}, retry_delay=lambda n, e, t: timedelta(0))
    wait_until(lambda: get(url, m).state is final, 20, str(final))
    info = get(url, m)
    if final is TaskState.COMPLETED:
        assert runs == [0, 1, 2, 3]
    else:
        assert runs == [0, 1, 2]
        assert info.last_error.startswith("RuntimeError: failure 3")


def test_unknown_type_and_undecodable_payload_are_archived_after_one_attempt(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    decoded: list[int] = []
    mux = ServeMux()

    @mux.handle("json")
    def on_json(ctx: Context, task: taskq.Task) -> None:
        decoded.append(json.loads(task.payload))

    unknown = msg(queue, "no:such:type", max_retry=10)
    garbage = msg(queue, "json", max_retry=10)
    garbage = TaskMessage(**{**_fields(garbage), "payload": b"{not json"})
    good = [
        TaskMessage(**{**_fields(msg(queue, "json")), "payload": str(i).encode()})
        for i in range(10)
    ]
    enqueue(url, unknown, garbage, *good)
    serve(mux, queues={queue: 1})
    wait_until(lambda: len(decoded) == 10, 20, "the good tasks")
    wait_until(lambda: get(url, unknown).state is TaskState.ARCHIVED, 10, "unknown archived")
    wait_until(lambda: get(url, garbage).state is TaskState.ARCHIVED, 10, "garbage archived")
    assert get(url, unknown).last_error == "no handler for task type 'no:such:type'"
    assert get(url, garbage).last_error.startswith("JSONDecodeError")
    assert get(url, unknown).retried == get(url, garbage).retried == 0


def _fields(m: TaskMessage) -> dict[str, Any]:
    import attrs

    return attrs.asdict(m, recurse=False)


def test_async_and_sync_handlers_run_concurrently_up_to_concurrency(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    lock = threading.Lock()
    running = Counter[str]()
    peak = {"total": 0, "both": False}
    release = threading.Event()

    def enter(kind: str) -> None:
        with lock:
            running[kind] += 1
            peak["total"] = max(peak["total"], running["async"] + running["sync"])
            peak["both"] = peak["both"] or bool(running["async"] and running["sync"])

    mux = ServeMux()

    @mux.handle("async")
    async def on_async(ctx: Context, task: taskq.Task) -> None:
        enter("async")
        await asyncio.to_thread(release.wait, 10)
        with lock:
            running["async"] -= 1

    @mux.handle("sync")
    def on_sync(ctx: Context, task: taskq.Task) -> None:
        enter("sync")
        release.wait(10)
        with lock:
            running["sync"] -= 1

    enqueue(url, *(msg(queue, "async" if i % 2 else "sync") for i in range(10)))
    serve(mux, queues={queue: 1}, concurrency=4)
    wait_until(lambda: peak["total"] == 4, 10, "four at once")
    time.sleep(0.3)
    release.set()
    assert peak == {"total": 4, "both": True}


def test_cancelling_a_running_task_reaches_its_worker_within_a_second(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(60)

    m = msg(queue, max_retry=5)
    enqueue(url, m)
    serve(mux, queues={queue: 1})
    assert started.wait(10)
    asked = time.monotonic()
    assert on_broker(url, lambda b: b.request_cancel(m.id, queue)) is TaskState.ACTIVE
    wait_until(lambda: get(url, m).state is TaskState.ARCHIVED, 5, "archived")
    assert time.monotonic() - asked < 1.0 + 0.5  # + the polling of this test itself
    assert get(url, m).last_error == "canceled"


def test_results_are_stored_with_the_task(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    mux = ServeMux()

    @mux.handle("t")
    def answer(ctx: Context, task: taskq.Task) -> None:
        ctx.write_result(b"42")

    m = msg(queue, retention=600_000)
    enqueue(url, m)
    serve(mux, queues={queue: 1})
    wait_until(lambda: get(url, m).state is TaskState.COMPLETED, 10, "completed")
    assert get(url, m).result == b"42"


def test_a_delayed_task_starts_within_100ms_of_its_due_time(
    url: str, queue: str, serve: Callable[..., Server]
) -> None:
    started: list[float] = []
    mux = ServeMux()

    @mux.handle("t")
    async def note(ctx: Context, task: taskq.Task) -> None:
        started.append(time.time())

    serve(mux, queues={queue: 1})
    due = time.time() + 1.0
    on_broker(url, lambda b: b.schedule(msg(queue), int(due * 1000)))
    wait_until(lambda: started, 10, "the delayed task")
    assert -0.01 <= started[0] - due < 0.1
