"""The sync Client's blocking path: enqueues stored from the calling thread, no loop hop.

``Client.enqueue`` / ``enqueue_many`` store through ``enqueue_blocking``
when the broker offers it (Redis standalone and Sentinel URLs, SQLite,
memory) and through ``run_sync`` on taskq's loop thread otherwise (fakeredis,
Redis Cluster, user-supplied clients). Both must give what ``AsyncClient``
gives: the same TaskInfo, states and errors.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import fakeredis
import fakeredis.aioredis
import pytest
import redis

import taskq
import taskq.client
from taskq.brokers.base import BlockingProducer, Broker, EnqueueRequest
from taskq.brokers.memory import InMemoryBroker
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import DEFAULT_PREFIX, FleetKeys
from taskq.brokers.sqlite import SQLiteBroker
from taskq.errors import (
    BrokerAuthError,
    BrokerConnectionError,
    DuplicateTaskError,
    TaskIDConflictError,
)
from taskq.task import Task, TaskMessage, TaskState
from taskq.testing import FakeClock
from taskq.testing.servers import (
    ExternalRedis,
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServerFactory,
    TLSFiles,
)

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)

BrokerMaker = Callable[[FakeClock], Broker]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _close(broker: Broker) -> None:
    _run(broker.close())


class LoopHops:
    """Counts the sync Client's calls of ``run_sync`` (its hop to the loop thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = taskq.client.run_sync

        def counting(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
            self.count += 1
            return real(coro, timeout)

        monkeypatch.setattr(taskq.client, "run_sync", counting)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> LoopHops:
    return LoopHops(monkeypatch)


@pytest.fixture
def flushed_redis(redis_server: RedisServer | ExternalRedis) -> str:
    redis_server.flushall()
    return redis_server.url


# (backend, whether the sync Client stores without the loop thread)
BACKENDS = [
    ("memory", True),
    ("sqlite", True),
    ("fakeredis", False),
    pytest.param("redis", True, marks=pytest.mark.redis),
]


@pytest.fixture
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerMaker]:
    """Fresh, empty brokers of one backend (each call a new one), closed after the test."""
    backend = request.node.callspec.params["backend"]
    made: list[Broker] = []
    counter = iter(range(1000))

    def make(clock: FakeClock) -> Broker:
        n = next(counter)
        broker: Broker
        if backend == "memory":
            broker = InMemoryBroker(clock=clock)
        elif backend == "sqlite":
            broker = SQLiteBroker(str(tmp_path / f"taskq-{n}.db"), clock=clock)
        elif backend == "fakeredis":
            fake = fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())
            broker = RedisBroker(fake, clock=clock)
        else:
            url = request.getfixturevalue("flushed_redis")
            broker = RedisBroker.from_url(url, clock=clock, prefix=f"sync{n}")
        made.append(broker)
        return broker

    yield make
    for broker in made:
        _close(broker)


def _outcome(result: object) -> object:
    if isinstance(result, Exception):
        return (type(result), str(result))
    return result


class Script:
    """One sequence of enqueues covering every state and refusal, run by either client."""

    SINGLES: list[tuple[Task, dict[str, Any]]] = [
        (Task("t", b"1"), {"task_id": "a"}),
        (Task("t", b"2", {"h": "v"}), {"task_id": "b", "process_in": HOUR, "max_retry": 3}),
        (Task("t", b"3"), {"task_id": "c", "group": "g"}),
        (Task("t", b"4"), {"task_id": "d", "group": "g", "process_at": T0 + HOUR}),
        (Task("t", b"5"), {"task_id": "a"}),  # TaskIDConflictError
        (Task("t", b"u"), {"task_id": "e", "unique": MINUTE, "retention": HOUR}),
        (Task("t", b"u"), {"task_id": "f", "unique": MINUTE}),  # DuplicateTaskError
        (Task("t", b"6"), {"task_id": "h", "process_at": T0 - MINUTE, "queue": "low"}),
        (
            Task("t", b"7"),
            {"task_id": "i", "timeout": MINUTE, "deadline": T0 + HOUR, "queue": "low"},
        ),
    ]
    MANY: list[Task] = [
        Task("t", b"m1", task_id="m1"),
        Task("t", b"m2", task_id="a"),  # conflict
        Task("t", b"m3", task_id="m3", queue="low", process_in=HOUR),
        Task("t", b"u", task_id="m4", unique=MINUTE),  # duplicate of e
        Task("t", b"m5", task_id="m5", group="g"),
        Task("t", b"m6", task_id="m6", queue="third"),
    ]

    @classmethod
    def expected_shapes(cls) -> list[object]:
        """The states and refusals the script must give (the same for every backend)."""
        return [
            TaskState.PENDING,
            TaskState.SCHEDULED,
            TaskState.AGGREGATING,
            TaskState.SCHEDULED,
            TaskIDConflictError,
            TaskState.PENDING,
            DuplicateTaskError,
            TaskState.PENDING,
            TaskState.PENDING,
            [
                TaskState.PENDING,
                TaskIDConflictError,
                TaskState.SCHEDULED,
                DuplicateTaskError,
                TaskState.AGGREGATING,
                TaskState.PENDING,
            ],
        ]


def _shape(result: object) -> object:
    if isinstance(result, list):
        return [_shape(r) for r in result]
    if isinstance(result, Exception):
        return type(result)
    assert isinstance(result, taskq.TaskInfo)
    return result.state


def _run_sync_script(client: taskq.Client) -> list[object]:
    out: list[object] = []
    for task, options in Script.SINGLES:
        try:
            out.append(client.enqueue(task, **options))
        except (TaskIDConflictError, DuplicateTaskError) as exc:
            out.append(exc)
    out.append(client.enqueue_many(Script.MANY))
    return out


async def _run_async_script(client: taskq.AsyncClient) -> list[object]:
    out: list[object] = []
    for task, options in Script.SINGLES:
        try:
            out.append(await client.enqueue(task, **options))
        except (TaskIDConflictError, DuplicateTaskError) as exc:
            out.append(exc)
    out.append(await client.enqueue_many(Script.MANY))
    return out


async def _stored(broker: Broker) -> list[taskq.TaskInfo]:
    found = []
    for queue in sorted(await broker.queues()):
        for state in TaskState:
            found += await broker.list_tasks(queue, state, limit=100)
    return sorted(found, key=lambda info: (info.queue, info.id))


async def _pending(broker: Broker) -> dict[str, int]:
    return {q: (await broker.queue_stats(q)).pending for q in await broker.queues()}


def _normal(results: list[object]) -> list[object]:
    return [[_outcome(r) for r in x] if isinstance(x, list) else _outcome(x) for x in results]


@pytest.mark.parametrize(("backend", "blocking"), BACKENDS)
def test_sync_client_gives_what_the_async_client_gives(
    backend: str, blocking: bool, make_broker: BrokerMaker, hops: LoopHops
) -> None:
    async_broker = make_broker(FakeClock(T0))
    assert isinstance(async_broker, BlockingProducer)
    async_results = _run(_run_async_script(taskq.AsyncClient(async_broker, clock=FakeClock(T0))))

    sync_broker = make_broker(FakeClock(T0))
    client = taskq.Client(sync_broker, clock=FakeClock(T0))
    hops.count = 0
    sync_results = _run_sync_script(client)
    enqueue_hops = hops.count

    assert [_shape(r) for r in sync_results] == Script.expected_shapes()
    assert _normal(sync_results) == _normal(async_results)
    assert _run(_stored(sync_broker)) == _run(_stored(async_broker))
    if blocking:
        assert enqueue_hops == 0, "the sync Client went through the loop thread"
    else:
        assert enqueue_hops == len(Script.SINGLES) + 1


@pytest.mark.parametrize(("backend", "blocking"), BACKENDS)
def test_a_consumer_waiting_on_its_own_loop_is_woken_by_a_sync_enqueue(
    backend: str, blocking: bool, make_broker: BrokerMaker
) -> None:
    broker = make_broker(FakeClock(T0))
    client = taskq.Client(broker, clock=FakeClock(T0))

    async def consume() -> list[str]:
        waiting = asyncio.create_task(broker.dequeue(["wake"], count=1, lease=30_000, wait=20_000))
        await asyncio.sleep(0.2)  # let the dequeue find nothing and start waiting
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(client.enqueue, Task("t", b"x"), queue="wake", task_id="w")
        got = await waiting
        assert loop.time() - started < 10, "the waiting consumer was not woken"
        return [d.message.id for d in got]

    assert _run(consume()) == ["w"]


def test_a_broker_that_cannot_block_right_now_is_served_on_the_loop_thread(
    hops: LoopHops,
) -> None:
    class Unavailable(InMemoryBroker):
        def enqueue_blocking(self, requests: Any) -> None:  # type: ignore[override]
            self.asked = True
            return None

    broker = Unavailable(clock=FakeClock(T0))
    client = taskq.Client(broker, clock=FakeClock(T0))
    runs: list[str] = []
    client.use(lambda task: runs.append(threading.current_thread().name) or task)  # type: ignore[func-returns-value]
    info = client.enqueue(Task("t", b""), task_id="x", process_in=HOUR)
    many = client.enqueue_many([Task("t", b"", task_id="x"), Task("t", b"", task_id="y")])
    assert broker.asked and hops.count == 2
    assert info.state is TaskState.SCHEDULED
    assert [_shape(r) for r in many] == [TaskIDConflictError, TaskState.PENDING]
    # validated (and hooked) once each, on the calling thread
    assert runs == [threading.current_thread().name] * 3


# --------------------------------------------------------------------------- real Redis


def _message(task_id: str, queue: str = "q") -> TaskMessage:
    return TaskMessage(id=task_id, type="t", payload=b"", queue=queue)


@pytest.mark.redis
def test_the_blocking_path_reloads_scripts_after_script_flush(
    flushed_redis: str, hops: LoopHops
) -> None:
    client = taskq.Client(flushed_redis)
    admin = redis.Redis.from_url(flushed_redis)
    try:
        assert client.enqueue(Task("t", b"1")).state is TaskState.PENDING
        admin.script_flush()
        assert client.enqueue(Task("t", b"2")).state is TaskState.PENDING
        admin.script_flush()
        # two queues: two script calls in one pipeline, both refused with NOSCRIPT
        many = client.enqueue_many([Task("t", b"3", queue="a"), Task("t", b"4", queue="b")])
        assert [_shape(r) for r in many] == [TaskState.PENDING, TaskState.PENDING]
        assert hops.count == 0
        assert admin.smembers(FleetKeys.for_prefix(DEFAULT_PREFIX).queues) == {
            b"default",
            b"a",
            b"b",
        }
    finally:
        admin.close()
        client.close()


@pytest.mark.redis
def test_a_stopped_server_is_a_connection_error_that_never_shows_the_password(
    redis_server_factory: RedisServerFactory, hops: LoopHops
) -> None:
    secret = "canary-sync-password-4711"
    server = redis_server_factory(password=secret)
    client = taskq.Client(server.url_for(None, secret))
    try:
        assert client.enqueue(Task("t", b"")).state is TaskState.PENDING
        server.stop()
        with pytest.raises(BrokerConnectionError) as caught:
            client.enqueue(Task("t", b""))
        with pytest.raises(BrokerConnectionError):
            client.enqueue_many([Task("t", b"1"), Task("t", b"2", queue="other")])
        assert hops.count == 0
        shown = "\n".join(
            [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
        )
        assert secret not in shown
        assert "redis://" in str(caught.value)
    finally:
        client.close()


@pytest.mark.redis
def test_a_wrong_password_is_an_auth_error_that_never_shows_it(
    redis_server_factory: RedisServerFactory, hops: LoopHops
) -> None:
    right, wrong = "canary-sync-right-0815", "canary-sync-wrong-0815"
    server = redis_server_factory(password=right)
    client = taskq.Client(server.url_for(None, wrong))
    try:
        with pytest.raises(BrokerAuthError) as caught:
            client.enqueue(Task("t", b""))
        assert hops.count == 0
        shown = "\n".join(
            [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
        )
        assert wrong not in shown and right not in shown
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["tls", "unix"])
def test_tls_and_unix_socket_urls_take_the_blocking_path(
    kind: str,
    redis_server_factory: RedisServerFactory,
    redis_tls_files: TLSFiles,
    hops: LoopHops,
) -> None:
    if kind == "tls":
        server = redis_server_factory(tls=redis_tls_files)
        url = server.url
        assert url.startswith("rediss://")
    else:
        server = redis_server_factory(unix_socket=True)
        url = server.unix_url
    client = taskq.Client(url)
    try:
        info = client.enqueue(Task("t", kind.encode()))
        assert hops.count == 0
        assert client.get_task_info("default", info.id).payload == kind.encode()
    finally:
        client.close()


@pytest.mark.redis
def test_the_sync_client_serves_eight_threads_at_once(flushed_redis: str, hops: LoopHops) -> None:
    client = taskq.Client(flushed_redis)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    ids: list[str] = []

    def work(n: int) -> None:
        try:
            barrier.wait(10)
            for i in range(50):
                ids.append(client.enqueue(Task("t", f"{n}-{i}".encode())).id)
            infos = client.enqueue_many([Task("t", b"b", queue=f"q{n % 3}") for _ in range(20)])
            ids.extend(i.id for i in infos if isinstance(i, taskq.TaskInfo))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert len(set(ids)) == 8 * 70
        assert hops.count == 0
        assert _run(_pending(client.broker)) == {"default": 400, "q0": 60, "q1": 60, "q2": 40}
    finally:
        client.close()


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_the_blocking_path_works_in_a_forked_child(flushed_redis: str) -> None:
    code = (
        "import os, sys, taskq, taskq._sync\n"
        "c = taskq.Client(sys.argv[1])\n"
        "c.enqueue(taskq.Task('t', b'parent-before'))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    infos = [c.enqueue(taskq.Task('t', b'child')) for _ in range(20)]\n"
        "    ok = all(i.state.value == 'pending' for i in infos)\n"
        "    ok = ok and taskq._sync._instance is None  # no loop thread was needed\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "after = [c.enqueue(taskq.Task('t', b'parent-after')) for _ in range(20)]\n"
        "assert all(i.state.value == 'pending' for i in after)\n"
        "assert taskq._sync._instance is None\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, flushed_redis], timeout=60, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr.decode()
    broker = RedisBroker.from_url(flushed_redis)
    try:
        payloads = [info.payload for info in _run(_stored(broker))]
    finally:
        _close(broker)
    assert sorted(set(payloads)) == [b"child", b"parent-after", b"parent-before"]
    assert len(payloads) == 41


@pytest.mark.redis
def test_a_cluster_broker_falls_back_to_the_loop_thread(
    redis_cluster: RedisCluster, hops: LoopHops
) -> None:
    client = taskq.Client(redis_cluster.url)
    broker = client.broker
    assert isinstance(broker, RedisBroker)
    try:
        assert broker.enqueue_blocking([EnqueueRequest(_message("x"))]) is None
        info = client.enqueue(Task("t", b""), queue="sync-cluster")
        assert info.state is TaskState.PENDING
        assert hops.count == 1
    finally:
        client.close()


@pytest.mark.redis
def test_a_sentinel_broker_stores_from_the_calling_thread(
    redis_sentinel: RedisSentinel, hops: LoopHops
) -> None:
    client = taskq.Client(redis_sentinel.url)
    try:
        info = client.enqueue(Task("t", b""), queue="sync-sentinel")
        got = client.get_task_info("sync-sentinel", info.id)
        assert (info.state, got.state) == (TaskState.PENDING, TaskState.PENDING)
        assert hops.count == 1  # get_task_info only
    finally:
        client.close()


@pytest.mark.redis
def test_close_closes_the_sync_connections_and_the_broker_stays_usable(
    flushed_redis: str,
) -> None:
    client = taskq.Client(flushed_redis)
    broker = client.broker
    assert isinstance(broker, RedisBroker)
    client.enqueue(Task("t", b""))
    sync = broker._connector.sync_client()
    lane = broker._connector.sync_lane()
    assert sync is not None and lane is not None
    connections = list(lane._idle)
    assert [c.closed for c in connections] == [False]
    client.close()
    assert [c.closed for c in connections] == [True]
    assert client.enqueue(Task("t", b"")).state is TaskState.PENDING
    assert broker._connector.sync_client() is not sync
    assert broker._connector.sync_lane() is not lane
    client.close()
