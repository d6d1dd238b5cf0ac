"""Group aggregation through a real worker Server, on memory, SQLite and a real Redis.

The seed's example: three tasks enqueued into group "user1:email" of queue
"notifications" reach the handler as one task whose payload joins the three,
triggered separately by the grace period, the max delay and the max size.
And a server killed between reading an aggregation set and finishing it
leaves exactly one aggregated task behind once another server takes over.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import taskq
from taskq._sync import run_sync
from taskq.brokers.base import Broker
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import Task

QUEUE = "notifications"
GROUP = "user1:email"
JOINED = b"msg1\nmsg2\nmsg3"
REPO = Path(__file__).resolve().parents[2]


def join_payloads(group: str, tasks: Sequence[Task]) -> Task:
    return Task("email:digest", b"\n".join(t.payload for t in tasks))


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'groups.db'}"
    redis_server = request.getfixturevalue("redis_server")
    redis_server.flushall()
    return str(redis_server.url)


REDIS = pytest.param("redis", marks=pytest.mark.redis)


@pytest.fixture(params=["memory", "sqlite", REDIS])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker for in-process servers."""
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", REDIS])
def shared_broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker that several processes can share."""
    return _url(request.param, request, tmp_path)


@pytest.fixture
def connect() -> Iterator[Callable[[str], Broker]]:
    """taskq.connect, with every broker closed (and its connections collected) at the end."""
    opened: list[Broker] = []

    def _connect(url: str) -> Broker:
        opened.append(taskq.connect(url))
        return opened[-1]

    yield _connect
    for broker in opened:
        run_sync(broker.close())
    gc.collect()


class Digests:
    """A mux whose handler records the aggregated tasks it receives."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.arrived = threading.Event()
        self.mux = ServeMux()
        self.mux.handle("email:digest", self._handle)

    def _handle(self, ctx: Context, task: Task) -> None:
        self.payloads.append(task.payload)
        self.arrived.set()


def add_three(client: taskq.Client) -> None:
    for i in (1, 2, 3):
        client.enqueue(Task("email:send", f"msg{i}".encode()), queue=QUEUE, group=GROUP)
        time.sleep(0.005)  # distinct arrival times, so the order is well defined


def serve(broker: Broker, digests: Digests, **group_config: Any) -> Server:
    config = Config(
        queues={QUEUE: 1},
        fetch_wait=0.1,
        group_aggregator=join_payloads,
        **group_config,
    )
    server = Server(broker, config)
    server.start(digests.mux)
    return server


@pytest.mark.parametrize(
    ("trigger", "group_config", "earliest"),
    [
        ("grace period", {"group_grace_period": timedelta(seconds=1)}, 0.9),
        (
            "max delay",
            {"group_grace_period": timedelta(minutes=5), "group_max_delay": timedelta(seconds=2)},
            1.9,
        ),
        ("max size", {"group_grace_period": timedelta(minutes=5), "group_max_size": 3}, 0.0),
    ],
    ids=["grace-period", "max-delay", "max-size"],
)
def test_three_grouped_tasks_arrive_as_one_joined_task(
    connect: Callable[[str], Broker],
    broker_url: str,
    trigger: str,
    group_config: dict[str, Any],
    earliest: float,
) -> None:
    broker = connect(broker_url)
    client = taskq.Client(broker)
    digests = Digests()
    server = serve(broker, digests, **group_config)
    try:
        started = time.monotonic()
        add_three(client)
        assert digests.arrived.wait(10), f"nothing aggregated by {trigger}"
        elapsed = time.monotonic() - started
        time.sleep(0.3)  # would a second aggregated task show up?
    finally:
        server.shutdown()
    assert digests.payloads == [JOINED]
    assert elapsed >= earliest
    stats = taskq.Inspector(broker).get_queue_info(QUEUE)
    assert (stats.aggregating, stats.groups, stats.pending, stats.active) == (0, 0, 0, 0)


def test_per_queue_limits_apply_to_their_queue_only(
    connect: Callable[[str], Broker], broker_url: str
) -> None:
    broker = connect(broker_url)
    client = taskq.Client(broker)
    digests = Digests()
    server = serve(
        broker,
        digests,
        group_grace_period=timedelta(minutes=5),
        group_limits={QUEUE: taskq.GroupLimits(max_size=3)},
    )
    try:
        add_three(client)
        assert digests.arrived.wait(10)
    finally:
        server.shutdown()
    assert digests.payloads == [JOINED]


_DYING_SERVER = textwrap.dedent(
    """
    import os, sys, time
    from datetime import timedelta
    import taskq

    url, marker = sys.argv[1], sys.argv[2]

    def aggregate_then_hang(group, tasks):
        # Written aside and renamed, so the test never reads a half-written marker.
        with open(marker + ".tmp", "w") as f:
            f.write(str(len(tasks)))
        os.replace(marker + ".tmp", marker)
        time.sleep(3600)  # killed here: after reading the set, before finishing it

    config = taskq.Config(
        queues={"notifications": 1},
        fetch_wait=0.1,
        group_aggregator=aggregate_then_hang,
        group_grace_period=timedelta(minutes=5),
        group_max_size=3,
    )
    taskq.Server(url, config).run(taskq.ServeMux())
    """
)


def _spawn(tmp_path: Path, url: str, marker: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "dying_server.py"
    script.write_text(_DYING_SERVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), url, str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_server_killed_between_read_and_finish_leaves_exactly_one_aggregated_task(
    connect: Callable[[str], Broker],
    shared_broker_url: str,
    tmp_path: Path,
    reaper: list[subprocess.Popen[bytes]],
) -> None:
    broker = connect(shared_broker_url)
    client = taskq.Client(broker)
    marker = tmp_path / "aggregating"
    proc = _spawn(tmp_path, shared_broker_url, marker)
    reaper.append(proc)
    add_three(client)

    deadline = time.monotonic() + 20
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the dying server never started aggregating"
        time.sleep(0.02)
    assert marker.read_text() == "3"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)

    inspector = taskq.Inspector(broker)
    stats = inspector.get_queue_info(QUEUE)
    assert (stats.aggregating, stats.groups, stats.pending) == (3, 0, 0)  # all in the dead set

    digests = Digests()
    server = serve(
        broker,
        digests,
        group_grace_period=timedelta(minutes=5),
        group_max_size=3,
        group_reclaim_after=timedelta(seconds=1),
    )
    try:
        assert digests.arrived.wait(15), "the stale set was never reclaimed"
        time.sleep(1.5)  # a second reclaim round must not produce another task
    finally:
        server.shutdown()
    assert digests.payloads == [JOINED]
    stats = inspector.get_queue_info(QUEUE)
    assert (stats.aggregating, stats.pending, stats.active, stats.archived) == (0, 0, 0, 0)
