"""The server's loop watchdog: blocking code in an async def handler is reported, with where."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.mux import Context, ServeMux
from taskq.task import TaskState
from tests.unit._runtime import enqueue, info, message, serving, wait_until


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "event loop has been blocked" in r.getMessage()
    ]


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


def test_an_async_handler_that_blocks_the_loop_is_reported_with_its_line(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    mux = ServeMux()

    @mux.handle("t")
    async def blocks_the_loop(ctx: Context, task: taskq.Task) -> None:
        time.sleep(1.0)  # noqa: ASYNC251 - the blocking call under test

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, blocked_loop_warning=0.2):
        wait_until(lambda: info(broker, msg).state is TaskState.COMPLETED, what="completed")
        wait_until(lambda: any("runs again" in r.getMessage() for r in caplog.records))
    (warning,) = _warnings(caplog)
    assert "blocks_the_loop" in warning and "time.sleep(1.0)" in warning
    assert "async def handler must not call blocking code" in warning


def test_an_async_handler_that_awaits_is_not_reported(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    mux = ServeMux()

    @mux.handle("t")
    async def waits(ctx: Context, task: taskq.Task) -> None:
        await asyncio.sleep(1.0)

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, blocked_loop_warning=0.2):
        wait_until(lambda: info(broker, msg).state is TaskState.COMPLETED, what="completed")
    assert _warnings(caplog) == []


def test_the_watchdog_can_be_turned_off(broker: InMemoryBroker) -> None:
    with serving(broker, ServeMux(), blocked_loop_warning=None):
        assert "taskq-watchdog" not in {t.name for t in threading.enumerate()}
    with serving(broker, ServeMux()):
        assert "taskq-watchdog" in {t.name for t in threading.enumerate()}
    assert taskq.Config().blocked_loop_warning is not None
    with pytest.raises(taskq.InvalidArgumentError, match="blocked_loop_warning"):
        taskq.Config(blocked_loop_warning=0)
