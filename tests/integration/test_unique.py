"""Unique tasks and task ids end to end on every broker: client, worker Server, Inspector.

The same rules (docs/unique.md) on memory, SQLite and a real Redis.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import taskq
from taskq._sync import run_sync
from taskq.brokers.base import Broker
from taskq.errors import DuplicateTaskError, SkipRetry, TaskIDConflictError
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import Task, TaskState

HOUR = timedelta(hours=1)
REDIS = pytest.param("redis", marks=pytest.mark.redis)


@pytest.fixture(params=["memory", "sqlite", REDIS])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'unique.db'}"
    else:
        redis_server = request.getfixturevalue("redis_server")
        redis_server.flushall()
        url = str(redis_server.url)
    broker = taskq.connect(url)
    yield broker
    run_sync(broker.close())
    gc.collect()


def state_of(broker: Broker, task_id: str) -> TaskState:
    return taskq.Inspector(broker).get_task_info("default", task_id).state


def wait_for_state(broker: Broker, task_id: str, state: TaskState) -> None:
    deadline = time.monotonic() + 10
    while state_of(broker, task_id) is not state:
        assert time.monotonic() < deadline, f"task never reached {state}"
        time.sleep(0.02)


def run_server(broker: Broker, mux: ServeMux, **config: Any) -> Server:
    server = Server(broker, Config(fetch_wait=0.1, concurrency=2, **config))
    server.start(mux)
    return server


def test_an_equal_task_is_refused_while_the_lock_holds(broker: Broker) -> None:
    client = taskq.Client(broker)
    client.enqueue(Task("email", b"42"), unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("email", b"42"), unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("email", b"42"), unique=HOUR, process_in=HOUR)
    client.enqueue(Task("email", b"43"), unique=HOUR)
    client.enqueue(Task("email", b"42"), unique=HOUR, queue="other")
    assert taskq.Inspector(broker).get_queue_info("default").pending == 2


def test_the_lock_ends_with_its_ttl(broker: Broker) -> None:
    client = taskq.Client(broker)
    client.enqueue(Task("email", b"42"), unique=timedelta(milliseconds=300))
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("email", b"42"), unique=HOUR)
    time.sleep(0.35)
    client.enqueue(Task("email", b"42"), unique=HOUR)


def test_success_releases_the_lock(broker: Broker) -> None:
    client = taskq.Client(broker)
    done = threading.Event()
    mux = ServeMux()

    @mux.handle("email")
    def handle(ctx: Context, task: Task) -> None:
        done.set()

    kept = client.enqueue(Task("email", b"kept"), unique=HOUR, retention=HOUR)
    client.enqueue(Task("email", b"deleted"), unique=HOUR)
    server = run_server(broker, mux)
    try:
        wait_for_state(broker, kept.id, TaskState.COMPLETED)
        deadline = time.monotonic() + 10
        while taskq.Inspector(broker).get_queue_info("default").size > 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        server.shutdown()
    client.enqueue(Task("email", b"kept"), unique=HOUR)
    client.enqueue(Task("email", b"deleted"), unique=HOUR)


def test_a_task_waiting_for_a_retry_keeps_the_lock(broker: Broker) -> None:
    client = taskq.Client(broker)
    mux = ServeMux()

    @mux.handle("email")
    def fail(ctx: Context, task: Task) -> None:
        raise RuntimeError("smtp down")

    info = client.enqueue(Task("email", b"42"), unique=HOUR)
    server = run_server(broker, mux, retry_delay=lambda n, e, t: HOUR)
    try:
        wait_for_state(broker, info.id, TaskState.RETRY)
    finally:
        server.shutdown()
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("email", b"42"), unique=HOUR)


@pytest.mark.parametrize("release", [True, False], ids=["released", "kept"])
def test_archiving_releases_the_lock_unless_configured_not_to(
    broker: Broker, release: bool
) -> None:
    client = taskq.Client(broker)
    mux = ServeMux()

    @mux.handle("email")
    def give_up(ctx: Context, task: Task) -> None:
        raise SkipRetry("no such address")

    info = client.enqueue(Task("email", b"42"), unique=HOUR)
    server = run_server(broker, mux, release_unique_on_archive=release)
    try:
        wait_for_state(broker, info.id, TaskState.ARCHIVED)
    finally:
        server.shutdown()
    if release:
        client.enqueue(Task("email", b"42"), unique=HOUR)
    else:
        with pytest.raises(DuplicateTaskError):
            client.enqueue(Task("email", b"42"), unique=HOUR)


def test_deleting_the_task_releases_the_lock(broker: Broker) -> None:
    client = taskq.Client(broker)
    info = client.enqueue(Task("email", b"42"), unique=HOUR, process_in=HOUR)
    taskq.Inspector(broker).delete_task("default", info.id)
    client.enqueue(Task("email", b"42"), unique=HOUR)


def test_a_task_id_is_refused_while_a_task_with_it_is_stored(broker: Broker) -> None:
    client = taskq.Client(broker)
    mux = ServeMux()

    @mux.handle("email")
    def give_up(ctx: Context, task: Task) -> None:
        raise SkipRetry("no")

    client.enqueue(Task("email", b"1"), task_id="welcome-42")
    with pytest.raises(TaskIDConflictError):
        client.enqueue(Task("email", b"2"), task_id="welcome-42", process_in=HOUR)
    server = run_server(broker, mux)
    try:
        wait_for_state(broker, "welcome-42", TaskState.ARCHIVED)
    finally:
        server.shutdown()
    with pytest.raises(TaskIDConflictError):
        client.enqueue(Task("email", b"3"), task_id="welcome-42")
    client.enqueue(Task("email", b"3"), task_id="welcome-42", queue="other")
    taskq.Inspector(broker).delete_task("default", "welcome-42")
    client.enqueue(Task("email", b"4"), task_id="welcome-42")
