"""The processor on an InMemoryBroker: outcomes, retries, limits, cancellation, concurrency."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import RevokeTask, SkipRetry
from taskq.mux import Context, Handler, ServeMux
from taskq.task import TaskState
from taskq.testing.clock import FakeClock
from tests.unit._runtime import call, enqueue, info, message, serving, wait_until

NO_DELAY = {"retry_delay": lambda n, e, t: timedelta(0)}


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


def _state(broker: InMemoryBroker, msg: taskq.task.TaskMessage) -> TaskState:
    return info(broker, msg).state


def _gone(broker: InMemoryBroker, msg: taskq.task.TaskMessage) -> bool:
    try:
        info(broker, msg)
    except taskq.TaskNotFoundError:
        return True
    return False


def test_sync_and_async_handlers_run_and_successful_tasks_are_deleted(
    broker: InMemoryBroker,
) -> None:
    ran: list[tuple[str, str]] = []
    mux = ServeMux()

    @mux.handle("sync")
    def on_sync(ctx: Context, task: taskq.Task) -> None:
        ran.append(("sync", threading.current_thread().name))

    @mux.handle("async")
    async def on_async(ctx: Context, task: taskq.Task) -> None:
        ran.append(("async", threading.current_thread().name))

    a, b = message("sync"), message("async")
    enqueue(broker, a, b)
    with serving(broker, mux):
        wait_until(lambda: _gone(broker, a) and _gone(broker, b), what="both acked")
    kinds = dict(ran)
    assert kinds["sync"].startswith("taskq-handler")
    assert kinds["async"].startswith("taskq-server")


def test_context_describes_the_attempt(broker: InMemoryBroker) -> None:
    seen: list[Context] = []
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: seen.append(ctx))
    msg = message("t", max_retry=7, retried=2, headers={"k": "v"}, enqueued_at=1_000)
    enqueue(broker, msg)
    with serving(broker, mux):
        wait_until(lambda: seen, what="handler")
    ctx = seen[0]
    assert (ctx.task_id, ctx.queue, ctx.retry_count, ctx.max_retry) == (msg.id, "default", 2, 7)
    assert ctx.headers == {"k": "v"}
    assert ctx.enqueued_at is not None and ctx.started_at is not None
    assert ctx.deadline is not None
    # No timeout and no deadline: the default 30 minute limit applies.
    assert timedelta(minutes=29) < ctx.deadline - ctx.started_at <= timedelta(minutes=31)


def test_results_from_sync_and_async_handlers_are_kept_with_retention(
    broker: InMemoryBroker,
) -> None:
    mux = ServeMux()

    @mux.handle("sync")
    def on_sync(ctx: Context, task: taskq.Task) -> None:
        ctx.write_result(b"from a thread")

    @mux.handle("async")
    async def on_async(ctx: Context, task: taskq.Task) -> None:
        await ctx.write_result(b"from the loop")

    @mux.handle("async-unawaited")
    async def on_unawaited(ctx: Context, task: taskq.Task) -> None:
        ctx.write_result(b"not awaited")

    msgs = [message(t, retention=60_000) for t in ("sync", "async", "async-unawaited")]
    enqueue(broker, *msgs)
    with serving(broker, mux):
        wait_until(lambda: all(_state(broker, m) is TaskState.COMPLETED for m in msgs))
    assert [info(broker, m).result for m in msgs] == [
        b"from a thread",
        b"from the loop",
        b"not awaited",
    ]


def test_handler_failing_three_times_then_succeeding_runs_exactly_four_times(
    broker: InMemoryBroker,
) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("flaky")
    def flaky(ctx: Context, task: taskq.Task) -> None:
        runs.append(ctx.retry_count)
        if len(runs) <= 3:
            raise RuntimeError(f"failure {len(runs)}")

    msg = message("flaky", max_retry=3, retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, **NO_DELAY):
        wait_until(lambda: _state(broker, msg) is TaskState.COMPLETED, what="completion")
    assert runs == [0, 1, 2, 3]
    assert info(broker, msg).retried == 3


def test_exhausted_retries_archive_the_task_with_the_last_error(broker: InMemoryBroker) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("flaky")
    def flaky(ctx: Context, task: taskq.Task) -> None:
        runs.append(1)
        raise RuntimeError(f"failure {len(runs)}")

    msg = message("flaky", max_retry=2)
    enqueue(broker, msg)
    with serving(broker, mux, **NO_DELAY):
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED, what="archived")
    stored = info(broker, msg)
    assert len(runs) == 3
    assert stored.last_error.startswith("RuntimeError: failure 3")
    assert "Traceback" in stored.last_error and "flaky" in stored.last_error


def test_retry_delay_gets_the_retry_count_error_and_task(broker: InMemoryBroker) -> None:
    calls: list[tuple[int, str, str]] = []

    def delay(retried: int, error: BaseException, task: taskq.Task) -> timedelta:
        calls.append((retried, str(error), task.type))
        return timedelta(hours=1)

    mux = ServeMux()

    @mux.handle("t")
    def fail(ctx: Context, task: taskq.Task) -> None:
        raise ValueError("nope")

    msg = message("t", max_retry=5)
    enqueue(broker, msg)
    with serving(broker, mux, retry_delay=delay):
        wait_until(lambda: _state(broker, msg) is TaskState.RETRY, what="retry")
    stored = info(broker, msg)
    assert calls == [(0, "nope", "t")]
    assert stored.next_process_at is not None and stored.last_failed_at is not None
    wait = stored.next_process_at - stored.last_failed_at
    assert timedelta(minutes=59) < wait <= timedelta(hours=1)


def test_skip_retry_archives_at_once(broker: InMemoryBroker) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    async def skip(ctx: Context, task: taskq.Task) -> None:
        runs.append(1)
        raise SkipRetry("bad input")

    msg = message("t", max_retry=10)
    enqueue(broker, msg)
    with serving(broker, mux, **NO_DELAY):
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED)
    assert runs == [1]
    assert info(broker, msg).last_error.startswith("SkipRetry: bad input")


def test_revoke_task_drops_it_without_retry_or_archive(broker: InMemoryBroker) -> None:
    mux = ServeMux()

    @mux.handle("t")
    def revoke(ctx: Context, task: taskq.Task) -> None:
        raise RevokeTask()

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux):
        wait_until(lambda: _gone(broker, msg), what="dropped")


def test_unknown_type_and_undecodable_payload_are_archived_after_one_attempt(
    broker: InMemoryBroker,
) -> None:
    decoded: list[object] = []
    mux = ServeMux()

    @mux.handle("json")
    def on_json(ctx: Context, task: taskq.Task) -> None:
        decoded.append(json.loads(task.payload))

    unknown = message("no:such:type", max_retry=10)
    garbage = message("json", payload=b"{not json", max_retry=10)
    good = [message("json", payload=json.dumps(i).encode()) for i in range(20)]
    enqueue(broker, unknown, garbage, *good)
    with serving(broker, mux, **NO_DELAY):
        wait_until(lambda: len(decoded) == 20, what="the good tasks")
        wait_until(lambda: _state(broker, garbage) is TaskState.ARCHIVED)
        wait_until(lambda: _state(broker, unknown) is TaskState.ARCHIVED)
    assert info(broker, unknown).last_error == "no handler for task type 'no:such:type'"
    assert info(broker, unknown).retried == 0
    assert info(broker, garbage).last_error.startswith("JSONDecodeError")
    assert info(broker, garbage).retried == 0
    assert sorted(decoded) == list(range(20))  # type: ignore[type-var]


def test_is_failure_false_retries_without_spending_a_retry(broker: InMemoryBroker) -> None:
    mux = ServeMux()

    @mux.handle("t")
    def busy(ctx: Context, task: taskq.Task) -> None:
        raise ConnectionError("rate limited")

    msg = message("t", max_retry=0)
    enqueue(broker, msg)
    with serving(
        broker,
        mux,
        is_failure=lambda e: not isinstance(e, ConnectionError),
        retry_delay=lambda n, e, t: timedelta(hours=1),
    ):
        wait_until(lambda: _state(broker, msg) is TaskState.RETRY)
    stored = info(broker, msg)
    assert stored.retried == 0
    assert stored.last_error.startswith("ConnectionError: rate limited")


def test_error_handler_sees_every_failure(broker: InMemoryBroker) -> None:
    seen: list[tuple[str, str, str]] = []

    async def on_error(ctx: Context, task: taskq.Task, error: BaseException) -> None:
        seen.append((ctx.task_id, task.type, str(error)))

    mux = ServeMux()

    @mux.handle("t")
    def fail(ctx: Context, task: taskq.Task) -> None:
        raise ValueError(f"attempt {ctx.retry_count}")

    msg = message("t", max_retry=1)
    enqueue(broker, msg)
    with serving(broker, mux, error_handler=on_error, **NO_DELAY):
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED)
    assert seen == [(msg.id, "t", "attempt 0"), (msg.id, "t", "attempt 1")]


def test_async_handler_past_its_timeout_is_cancelled_and_retried(broker: InMemoryBroker) -> None:
    cancelled = threading.Event()
    mux = ServeMux()

    @mux.handle("slow")
    async def slow(ctx: Context, task: taskq.Task) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            assert ctx.cancel_reason == "timeout"
            cancelled.set()
            raise

    msg = message("slow", timeout=200, max_retry=3)
    enqueue(broker, msg)
    started = time.monotonic()
    with serving(broker, mux, retry_delay=lambda n, e, t: timedelta(hours=1)):
        wait_until(lambda: _state(broker, msg) is TaskState.RETRY, what="retry")
    assert cancelled.is_set()
    assert time.monotonic() - started < 5
    stored = info(broker, msg)
    assert stored.retried == 1
    assert stored.last_error == "task timed out after 0.2s"


def test_sync_handler_past_its_timeout_sees_cancelled_and_its_late_outcome_is_ignored(
    broker: InMemoryBroker,
) -> None:
    saw_cancel = threading.Event()
    finished = threading.Event()
    mux = ServeMux()

    @mux.handle("slow")
    def slow(ctx: Context, task: taskq.Task) -> None:
        while not ctx.cancelled:
            time.sleep(0.01)
        saw_cancel.set()
        time.sleep(0.2)  # still running after the limit: its success must not count
        finished.set()

    msg = message("slow", timeout=200, max_retry=3)
    enqueue(broker, msg)
    with serving(
        broker,
        mux,
        retry_delay=lambda n, e, t: timedelta(hours=1),
        interrupt_sync_handlers=False,
    ):
        wait_until(lambda: _state(broker, msg) is TaskState.RETRY, what="retry")
        wait_until(finished.is_set, what="the thread to return")
        time.sleep(0.1)
        assert _state(broker, msg) is TaskState.RETRY
    assert saw_cancel.is_set()


def test_deadline_earlier_than_timeout_wins_and_archives(broker: InMemoryBroker) -> None:
    mux = ServeMux()
    reasons: list[str | None] = []

    @mux.handle("slow")
    async def slow(ctx: Context, task: taskq.Task) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            reasons.append(ctx.cancel_reason)

    deadline = int(time.time() * 1000) + 300
    msg = message("slow", timeout=60_000, deadline=deadline, max_retry=3)
    enqueue(broker, msg)
    with serving(broker, mux):
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED, what="archived")
    assert reasons == ["deadline"]
    assert info(broker, msg).last_error.startswith("deadline exceeded")


def test_task_past_its_deadline_is_archived_without_running(broker: InMemoryBroker) -> None:
    runs: list[int] = []
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: runs.append(1))
    msg = message("t", deadline=int(time.time() * 1000) - 1000)
    enqueue(broker, msg)
    with serving(broker, mux):
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED)
    assert runs == []


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_cancelling_a_running_task_archives_it_as_canceled_within_a_second(
    broker: InMemoryBroker, kind: str
) -> None:
    started = threading.Event()
    mux = ServeMux()

    async def async_handler(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(30)

    def sync_handler(ctx: Context, task: taskq.Task) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.01)

    mux.handle("t", async_handler if kind == "async" else sync_handler)
    msg = message("t", max_retry=5)
    enqueue(broker, msg)
    with serving(broker, mux):
        assert started.wait(5)
        asked = time.monotonic()
        assert call(broker.request_cancel(msg.id)) is TaskState.ACTIVE
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED, what="archived")
        assert time.monotonic() - asked < 1.0
    stored = info(broker, msg)
    assert stored.last_error == "canceled"
    assert stored.retried == 0


def test_cancel_is_found_by_the_periodic_check_when_the_notification_is_missed(
    broker: InMemoryBroker,
) -> None:
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def wait_forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(30)

    msg = message("t")
    enqueue(broker, msg)
    with serving(broker, mux, cancel_check_interval=0.1):
        assert started.wait(5)
        # Mark the task cancelled without notifying anyone (as after a dropped connection).
        subscribers = set(broker._subscribers)
        broker._subscribers.clear()
        try:
            call(broker.request_cancel(msg.id))
        finally:
            broker._subscribers.update(subscribers)
        wait_until(lambda: _state(broker, msg) is TaskState.ARCHIVED, timeout=2)


def test_a_lost_lease_cancels_the_handler_and_nothing_more_is_written() -> None:
    clock = FakeClock()
    broker = InMemoryBroker(clock=clock)
    started, stopped = threading.Event(), threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def long(ctx: Context, task: taskq.Task) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    msg = message("t", max_retry=5)
    enqueue(broker, msg)
    with serving(broker, mux, lease=1.0, recoverer_interval=3600) as server:
        assert started.wait(5)
        clock.advance(timedelta(seconds=10))  # the lease ran out before any heartbeat
        reclaimed = call(broker.reclaim_expired("default", lease=60_000))
        assert [d.message.id for d in reclaimed] == [msg.id]
        assert stopped.wait(3), "the heartbeat must notice the lost lease and cancel"
        wait_until(lambda: server._processor is not None and server._processor.in_flight == 0)
    # The task still belongs to the reclaiming attempt: the old one wrote nothing.
    stored = info(broker, msg)
    assert stored.state is TaskState.ACTIVE
    assert stored.retried == 0 and stored.last_error == ""


def test_async_and_sync_handlers_run_concurrently_up_to_concurrency(
    broker: InMemoryBroker,
) -> None:
    lock = threading.Lock()
    running: dict[str, int] = {"async": 0, "sync": 0}
    peak = {"total": 0, "both": False}
    release = threading.Event()

    def enter(kind: str) -> None:
        with lock:
            running[kind] += 1
            total = running["async"] + running["sync"]
            peak["total"] = max(peak["total"], total)
            if running["async"] and running["sync"]:
                peak["both"] = True

    def leave(kind: str) -> None:
        with lock:
            running[kind] -= 1

    mux = ServeMux()

    @mux.handle("async")
    async def on_async(ctx: Context, task: taskq.Task) -> None:
        enter("async")
        await asyncio.to_thread(release.wait, 10)
        leave("async")

    @mux.handle("sync")
    def on_sync(ctx: Context, task: taskq.Task) -> None:
        enter("sync")
        release.wait(10)
        leave("sync")

    msgs = [message("async" if i % 2 else "sync") for i in range(12)]
    enqueue(broker, *msgs)
    with serving(broker, mux, concurrency=4):
        wait_until(lambda: peak["total"] == 4, what="four tasks at once")
        time.sleep(0.2)
        assert peak["total"] == 4 and peak["both"]
        release.set()
        wait_until(lambda: all(_gone(broker, m) for m in msgs), what="all done")
    assert peak["total"] == 4


def test_middleware_wraps_sync_and_async_handlers_on_the_server(broker: InMemoryBroker) -> None:
    seen: list[str] = []

    def record(inner: Handler) -> Handler:
        async def wrapped(ctx: Context, task: taskq.Task) -> None:
            seen.append(f"before {task.type}")
            await inner(ctx, task)  # type: ignore[misc]
            seen.append(f"after {task.type}")

        return wrapped

    mux = ServeMux()
    mux.use(record)
    mux.handle("sync", lambda ctx, task: seen.append("sync ran"))

    @mux.handle("async")
    async def on_async(ctx: Context, task: taskq.Task) -> None:
        seen.append("async ran")

    a = message("sync")
    enqueue(broker, a)
    with serving(broker, mux, concurrency=1):
        wait_until(lambda: len(seen) == 3)
        b = message("async")
        enqueue(broker, b)
        wait_until(lambda: len(seen) == 6)
    assert seen == [
        "before sync",
        "sync ran",
        "after sync",
        "before async",
        "async ran",
        "after async",
    ]


def test_many_tasks_are_all_acknowledged(broker: InMemoryBroker) -> None:
    done: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    async def fast(ctx: Context, task: taskq.Task) -> None:
        done.append(1)

    msgs = [message("t") for _ in range(2000)]
    enqueue(broker, *msgs)
    with serving(broker, mux, concurrency=16):
        wait_until(lambda: call(broker.queue_stats("default")).size == 0, timeout=20)
    assert len(done) == 2000
    assert call(broker.queue_stats("default")).processed == 2000


def test_broker_failures_while_fetching_and_acknowledging_are_retried() -> None:
    from taskq.errors import BrokerConnectionError

    class Flaky(InMemoryBroker):
        def __init__(self) -> None:
            super().__init__()
            self.failures = {"dequeue": 2, "done_many": 2}

        def _fail(self, name: str) -> None:
            if self.failures[name]:
                self.failures[name] -= 1
                raise BrokerConnectionError(f"{name}: connection reset")

        async def dequeue(self, *args: object, **kwargs: object) -> list:  # type: ignore[override]
            self._fail("dequeue")
            return await super().dequeue(*args, **kwargs)  # type: ignore[arg-type]

        async def done_many(self, acks):  # type: ignore[no-untyped-def,override]
            self._fail("done_many")
            return await super().done_many(acks)

    broker = Flaky()
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: None)
    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux):
        wait_until(lambda: _state(broker, msg) is TaskState.COMPLETED, what="completion")
    assert broker.failures == {"dequeue": 0, "done_many": 0}
