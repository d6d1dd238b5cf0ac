"""taskq.testing.drain and the plug-in's fixtures, used as a user testing handlers would.

Each test writes a small mux, enqueues through ``taskq_client`` and drains
``taskq_broker`` with the real worker runtime, jumping the fake clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import InvalidArgumentError, TaskNotFoundError
from taskq.testing import Drain, DrainIncomplete, DrainReport, FakeClock, adrain, drain

pytest_plugins = ["pytester"]


def test_a_handler_that_fails_twice_then_succeeds_is_drained_in_one_call(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("email:welcome")
    def send_welcome(ctx: taskq.Context, task: taskq.Task) -> None:
        if ctx.retry_count < 2:
            raise ConnectionError("smtp down")

    info = taskq_client.enqueue(taskq.Task("email:welcome", b"{}"), retention=timedelta(hours=1))
    report = taskq_drain(mux)

    assert [a.retry_count for a in report.attempts_of(info.id)] == [0, 1, 2]
    assert [type(a.error) for a in report.failed] == [ConnectionError, ConnectionError]
    assert report.succeeded == (info.id,)
    assert report.archived == () and report.waiting == ()
    assert report.advanced >= timedelta(seconds=20)  # two back-offs, ~10 s and ~20 s
    stored = taskq_client.get_task_info("default", info.id)
    assert stored.state is taskq.TaskState.COMPLETED
    assert stored.retried == 2 and "smtp down" in stored.last_error


def test_a_handler_raising_skip_retry_ends_archived_after_one_attempt(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("charge")
    def charge(ctx: taskq.Context, task: taskq.Task) -> None:
        raise taskq.SkipRetry("card declined")

    info = taskq_client.enqueue(taskq.Task("charge", b""), max_retry=5)
    report = taskq_drain(mux)

    assert len(report.attempts) == 1
    assert isinstance(report.attempts[0].error, taskq.SkipRetry)
    assert [t.id for t in report.archived] == [info.id]
    assert "card declined" in report.archived[0].last_error
    assert report.succeeded == ()


def test_a_scheduled_task_runs_once_the_clock_is_advanced(
    taskq_broker: InMemoryBroker, taskq_client: taskq.Client, clock: FakeClock
) -> None:
    ran: list[str] = []
    mux = taskq.ServeMux()
    mux.handle("reminder", lambda ctx, task: ran.append(ctx.task_id))
    info = taskq_client.enqueue(taskq.Task("reminder"), process_in=timedelta(hours=1))

    untouched = drain(taskq_broker, mux)  # no clock: nothing is due yet
    assert untouched.attempts == () and ran == []
    assert [t.id for t in untouched.waiting] == [info.id]

    early = drain(taskq_broker, mux, clock=clock, until=timedelta(minutes=30))
    assert early.attempts == () and early.advanced == timedelta(0)

    report = drain(taskq_broker, mux, clock=clock)
    assert ran == [info.id]
    assert report.advanced == timedelta(hours=1)
    assert report.waiting == ()


def test_retries_spent_end_archived_with_the_last_error(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("sync")
    async def always_fails(ctx: taskq.Context, task: taskq.Task) -> None:
        raise RuntimeError(f"attempt {ctx.retry_count}")

    info = taskq_client.enqueue(taskq.Task("sync"), max_retry=2)
    report = taskq_drain(mux)
    assert len(report.attempts_of(info.id)) == 3
    (archived,) = report.archived
    assert archived.retried == 2 and "attempt 2" in archived.last_error


def test_handlers_get_a_real_context_and_middleware_runs(
    taskq_client: taskq.Client, taskq_drain: Drain, clock: FakeClock
) -> None:
    seen: list[tuple[str, str | None]] = []
    mux = taskq.ServeMux()

    def tag(next_handler: taskq.Handler) -> taskq.Handler:
        async def wrapped(ctx: taskq.Context, task: taskq.Task) -> None:
            seen.append(("middleware", None))
            await next_handler(ctx, task)  # type: ignore[misc]

        return wrapped

    mux.use(tag)

    @mux.handle("resize")
    def resize(ctx: taskq.Context, task: taskq.Task) -> None:
        assert ctx.started_at == clock.now()
        seen.append(("handler", ctx.headers.get("tenant")))
        ctx.write_result(json.dumps({"width": 10}).encode())

    version = mux.version
    info = taskq_client.enqueue(
        taskq.Task("resize", headers={"tenant": "acme"}), retention=timedelta(hours=1)
    )
    report = taskq_drain(mux)
    assert report.succeeded == (info.id,)
    assert seen == [("middleware", None), ("handler", "acme")]
    assert taskq_client.get_task_info("default", info.id).result == b'{"width": 10}'
    assert mux.version == version, "drain must not change the user's mux"


def test_every_queue_is_drained_and_tasks_enqueued_by_handlers_too(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("order:placed")
    def placed(ctx: taskq.Context, task: taskq.Task) -> None:
        taskq_client.enqueue(taskq.Task("email:receipt"), queue="emails")

    mux.handle("email:receipt", lambda ctx, task: None)
    taskq_client.enqueue(taskq.Task("order:placed"), queue="orders")
    report = taskq_drain(mux)
    assert report.types() == ["order:placed", "email:receipt"]
    assert len(report.succeeded) == 2


def test_an_unknown_task_type_is_archived_and_reported(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    info = taskq_client.enqueue(taskq.Task("nobody:handles:this"))
    report = taskq_drain(taskq.ServeMux())
    assert [t.id for t in report.archived] == [info.id]
    assert "no handler" in report.archived[0].last_error


def test_tasks_that_enqueue_each_other_forever_hit_max_tasks(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("ping")
    def ping(ctx: taskq.Context, task: taskq.Task) -> None:
        taskq_client.enqueue(taskq.Task("ping"))

    taskq_client.enqueue(taskq.Task("ping"))
    with pytest.raises(DrainIncomplete, match="max_tasks") as caught:
        taskq_drain(mux, max_tasks=20)
    assert isinstance(caught.value, AssertionError)
    assert 20 < len(caught.value.report.attempts) <= 22


def test_exactly_max_tasks_attempts_is_a_complete_drain(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()
    mux.handle("t", lambda ctx, task: None)
    for _ in range(3):
        taskq_client.enqueue(taskq.Task("t"))
    assert len(taskq_drain(mux, max_tasks=3).attempts) == 3


def test_a_hung_handler_hits_the_timeout_and_its_task_is_requeued(
    taskq_client: taskq.Client, taskq_drain: Drain
) -> None:
    mux = taskq.ServeMux()

    @mux.handle("hang")
    async def hang(ctx: taskq.Context, task: taskq.Task) -> None:
        await asyncio.sleep(60)

    info = taskq_client.enqueue(taskq.Task("hang"))
    began = time.monotonic()
    with pytest.raises(DrainIncomplete, match="timeout"):
        taskq_drain(mux, timeout=0.3)
    assert time.monotonic() - began < 5
    stored = taskq_client.get_task_info("default", info.id)
    assert (stored.state, stored.retried) == (taskq.TaskState.PENDING, 0)


def test_a_clock_that_is_not_the_brokers_is_refused(taskq_broker: InMemoryBroker) -> None:
    other = FakeClock(0)
    with pytest.raises(InvalidArgumentError, match="broker's clock"):
        drain(taskq_broker, taskq.ServeMux(), clock=other)


def test_a_memory_url_is_refused_because_it_would_be_another_broker() -> None:
    with pytest.raises(InvalidArgumentError, match="memory://"):
        drain("memory://", taskq.ServeMux())


def test_an_empty_broker_drains_to_an_empty_report(taskq_broker: InMemoryBroker) -> None:
    assert drain(taskq_broker, taskq.ServeMux()) == DrainReport()


async def test_adrain_works_in_async_tests(taskq_broker: InMemoryBroker, clock: FakeClock) -> None:
    mux = taskq.ServeMux()

    @mux.handle("t")
    async def flaky(ctx: taskq.Context, task: taskq.Task) -> None:
        if ctx.retry_count == 0:
            raise RuntimeError("first try fails")

    client = taskq.AsyncClient(taskq_broker, clock=clock)
    info = await client.enqueue(taskq.Task("t"))
    report = await adrain(taskq_broker, mux, clock=clock)
    assert report.succeeded == (info.id,) and len(report.attempts) == 2
    # the sync form works inside a running event loop as well
    assert drain(taskq_broker, mux).attempts == ()


def test_drain_by_url_runs_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    with taskq.Client(url) as client:
        info = client.enqueue(taskq.Task("t"), queue="files")
        mux = taskq.ServeMux()
        mux.handle("t", lambda ctx, task: None)
        report = drain(url, mux, ["files"])
        assert report.succeeded == (info.id,)
        with pytest.raises(TaskNotFoundError):
            client.get_task_info("files", info.id)


DOC = Path(__file__).resolve().parents[2] / "docs" / "testing-your-tasks.md"


def test_the_complete_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    app, tests = blocks[0], blocks[1]
    assert app.startswith("# myapp/tasks.py") and tests.startswith("# tests/test_tasks.py")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.mkpydir("myapp")
    pytester.path.joinpath("myapp", "tasks.py").write_text(app, encoding="utf-8")
    pytester.makepyfile(test_tasks=tests)
    pytester.syspathinsert()
    autoloaded = any(ep.value == "taskq.testing.plugin" for ep in entry_points(group="pytest11"))
    plugin_args = () if autoloaded else ("-p", "taskq.testing.plugin")
    result = pytester.runpytest_inprocess(*plugin_args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_importing_taskq_testing_and_its_plugin_does_not_load_the_worker_runtime() -> None:
    code = (
        "import sys, taskq.testing, taskq.testing.plugin\n"
        "print(','.join(m for m in ('taskq.runtime.server', 'taskq.testing._drain') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
