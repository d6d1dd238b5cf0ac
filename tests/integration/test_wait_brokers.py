"""Client.wait across processes' worth of connections, on SQLite and on a real Redis.

A Server connected from the URL runs the handlers; the waiting Client has its
own connection to the same store, as a producer in another process would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import taskq
from taskq.errors import TaskFailedError
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import Task, TaskState

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'taskq.db'}"
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def queue() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


@pytest.fixture
def server(url: str, queue: str) -> Iterator[Server]:
    mux = ServeMux()

    @mux.handle("square")
    async def square(ctx: Context, task: Task) -> None:
        if ctx.retry_count == 0:
            raise RuntimeError("first attempt fails")
        n = int(task.payload)
        await ctx.write_result(str(n * n).encode())

    @mux.handle("fail")
    def fail(ctx: Context, task: Task) -> None:
        raise taskq.SkipRetry("not today")

    running = Server(
        url,
        Config(queues={queue: 1}, fetch_wait=0.2, retry_delay=lambda n, e, t: timedelta(0)),
    )
    running.start(mux)
    try:
        yield running
    finally:
        running.shutdown()


def test_a_producer_waits_for_results_and_failures(url: str, queue: str, server: Server) -> None:
    with taskq.Client(url) as client:
        info = client.enqueue(Task("square", b"12"), queue=queue, retention=timedelta(minutes=5))
        done = client.wait(info, timeout=20)
        assert (done.state, done.retried, done.result) == (TaskState.COMPLETED, 1, b"144")

        failing = client.enqueue(Task("fail", b""), queue=queue, retention=timedelta(minutes=5))
        with pytest.raises(TaskFailedError) as caught:
            client.wait(failing.id, queue=queue, timeout=20)
        assert caught.value.info.state is TaskState.ARCHIVED
        assert "not today" in caught.value.info.last_error
