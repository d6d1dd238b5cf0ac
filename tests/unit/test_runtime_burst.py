"""Burst mode on an InMemoryBroker: when a burst server may stop, and how fast it does.

The behaviours shared by every broker are in tests/integration/test_worker_burst.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import TaskState
from tests.unit._runtime import enqueue, info, message


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


def test_burst_is_off_by_default_and_a_normal_server_outlives_empty_queues(
    broker: InMemoryBroker,
) -> None:
    assert Config().burst is False
    server = Server(broker, Config(fetch_wait=0.05))
    server.start(ServeMux())
    try:
        assert not server.wait(0.3)
    finally:
        server.shutdown()


def test_run_returns_at_once_when_the_queues_are_empty(broker: InMemoryBroker) -> None:
    began = time.monotonic()
    taskq.run(ServeMux(), broker, burst=True, fetch_wait=5)
    assert time.monotonic() - began < 0.4


def test_a_burst_waits_for_its_running_tasks_even_past_the_shutdown_timeout(
    broker: InMemoryBroker,
) -> None:
    msgs = [message("t", retention=60_000) for _ in range(2)]
    enqueue(broker, *msgs)
    mux = ServeMux()

    @mux.handle("t")
    def slow(ctx: Context, task: taskq.Task) -> None:
        time.sleep(0.4)

    Server(broker, Config(burst=True, concurrency=2, shutdown_timeout=0.05)).run(mux)
    assert [info(broker, m).state for m in msgs] == [TaskState.COMPLETED] * 2


def test_a_burst_picks_up_a_task_enqueued_while_its_last_one_runs(broker: InMemoryBroker) -> None:
    first, late = message("t"), message("t")
    enqueue(broker, first)
    ran: list[str] = []
    mux = ServeMux()

    @mux.handle("t")
    def note(ctx: Context, task: taskq.Task) -> None:
        if ctx.task_id == first.id:
            enqueue(broker, late)
            time.sleep(0.2)
        ran.append(ctx.task_id)

    began = time.monotonic()
    Server(broker, Config(burst=True, concurrency=2, fetch_wait=5)).run(mux)
    assert sorted(ran) == sorted([first.id, late.id])
    assert time.monotonic() - began < 3, "the end of a task wakes the burst's next look"


def test_the_start_up_line_says_burst_and_the_end_says_drained(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="taskq.worker"):
        taskq.run(ServeMux(), broker, burst=True)
    started = next(r.getMessage() for r in caplog.records if "started" in r.getMessage())
    assert started.endswith(" burst")
    assert any("drained (burst)" in r.getMessage() for r in caplog.records)


def test_shutdown_still_stops_a_burst_server_early_and_requeues_its_task(
    broker: InMemoryBroker,
) -> None:
    msg = message("t", max_retry=3)
    enqueue(broker, msg)
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(60)

    server = Server(broker, Config(burst=True, shutdown_timeout=0.1))
    server.start(mux)
    assert started.wait(5)
    server.shutdown()
    stored = info(broker, msg)
    assert (stored.state, stored.retried) == (TaskState.PENDING, 0)
