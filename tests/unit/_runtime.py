"""Helpers for the runtime tests: build messages, run a server, wait for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from taskq.brokers.base import Broker
from taskq.mux import ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import TaskInfo, TaskMessage

T = TypeVar("T")

FAST = {"fetch_wait": 0.1, "concurrency": 4}


def message(type_name: str = "t", **fields: Any) -> TaskMessage:
    """A task message with a fresh id in queue "default" unless given."""
    fields.setdefault("id", uuid.uuid4().hex)
    fields.setdefault("queue", "default")
    fields.setdefault("payload", b"")
    return TaskMessage(type=type_name, **fields)


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run one broker coroutine from test code (a throwaway loop)."""
    return asyncio.run(coro)


def enqueue(broker: Broker, *messages: TaskMessage) -> list[str]:
    """Enqueue messages as pending; return their ids."""

    async def go() -> None:
        for msg in messages:
            await broker.enqueue(msg)

    call(go())
    return [m.id for m in messages]


def info(broker: Broker, msg: TaskMessage) -> TaskInfo:
    """The stored state of ``msg``."""
    return call(broker.get_task(msg.queue, msg.id))


def wait_until(check: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``check`` until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def serving(broker: Broker, mux: ServeMux, **config: Any) -> Iterator[Server]:
    """Run a server on ``broker`` for the block (fast fetch wait, concurrency 4 by default)."""
    settings = {**FAST, **config}
    server = Server(broker, Config(**settings))
    server.start(mux)
    try:
        yield server
    finally:
        server.shutdown()
