"""The Server on an InMemoryBroker: priorities, lifecycle, shutdown, recovery, timekeeping."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

import taskq
from taskq.brokers.base import Delivery
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import BrokerConnectionError, InvalidArgumentError, ServerClosedError
from taskq.mux import Context, ServeMux
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import TaskState
from tests.unit._runtime import call, enqueue, info, message, serving, wait_until


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


def _recording_mux(order: list[str]) -> ServeMux:
    mux = ServeMux()

    @mux.handle("t")
    async def record(ctx: Context, task: taskq.Task) -> None:
        order.append(ctx.queue)

    return mux


def test_weighted_queues_share_the_first_thousand_tasks_by_weight(broker: InMemoryBroker) -> None:
    weights = {"high": 6, "mid": 3, "low": 1}
    for queue in weights:
        enqueue(broker, *(message("t", queue=queue) for _ in range(1000)))
    order: list[str] = []
    with serving(broker, _recording_mux(order), queues=weights, concurrency=10):
        wait_until(lambda: len(order) >= 1000, timeout=20, what="1000 tasks")
    share = Counter(order[:1000])
    assert abs(share["high"] / 10 - 60) <= 5, share
    assert abs(share["mid"] / 10 - 30) <= 5, share
    assert abs(share["low"] / 10 - 10) <= 5, share


def test_strict_priority_drains_the_heaviest_queue_first(broker: InMemoryBroker) -> None:
    weights = {"high": 6, "mid": 3, "low": 1}
    for queue in ("low", "mid", "high"):
        enqueue(broker, *(message("t", queue=queue) for _ in range(100)))
    order: list[str] = []
    with serving(
        broker, _recording_mux(order), queues=weights, strict_priority=True, concurrency=5
    ):
        wait_until(lambda: len(order) == 300, timeout=20, what="300 tasks")
    assert order == ["high"] * 100 + ["mid"] * 100 + ["low"] * 100


def test_an_idle_worker_wakes_within_milliseconds_of_an_enqueue(broker: InMemoryBroker) -> None:
    started: list[float] = []
    mux = ServeMux()

    @mux.handle("t")
    async def note(ctx: Context, task: taskq.Task) -> None:
        started.append(time.perf_counter())

    with serving(broker, mux, fetch_wait=1.0):
        time.sleep(0.2)  # the fetch is now waiting in the broker
        sent = time.perf_counter()
        enqueue(broker, message("t"))
        wait_until(lambda: started, what="the handler")
    assert started[0] - sent < 0.1


def test_graceful_shutdown_lets_running_tasks_finish(broker: InMemoryBroker) -> None:
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    def slow(ctx: Context, task: taskq.Task) -> None:
        started.set()
        time.sleep(0.3)

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, shutdown_timeout=5):
        assert started.wait(5)
    assert info(broker, msg).state is TaskState.COMPLETED


def test_shutdown_requeues_unfinished_tasks_without_spending_a_retry(
    broker: InMemoryBroker,
) -> None:
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(60)

    msg = message("t", max_retry=3)
    enqueue(broker, msg)
    server = Server(broker, Config(shutdown_timeout=0.2, fetch_wait=0.1))
    server.start(mux)
    assert started.wait(5)
    began = time.monotonic()
    server.shutdown()
    assert time.monotonic() - began < 3
    stored = info(broker, msg)
    assert stored.state is TaskState.PENDING
    assert stored.retried == 0 and stored.last_error == ""


def test_shutdown_now_requeues_at_once_despite_a_long_shutdown_timeout(
    broker: InMemoryBroker,
) -> None:
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    def forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.01)

    msg = message("t")
    enqueue(broker, msg)
    # A free slot keeps a fetch waiting in the broker: it must not grab the requeued task.
    server = Server(broker, Config(shutdown_timeout=60, fetch_wait=1.0, concurrency=2))
    server.start(mux)
    assert started.wait(5)
    time.sleep(0.1)
    began = time.monotonic()
    server.shutdown_now()
    assert time.monotonic() - began < 3
    assert info(broker, msg).state is TaskState.PENDING


def test_a_quiet_server_fetches_nothing_new(broker: InMemoryBroker) -> None:
    ran: list[str] = []
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: ran.append(ctx.task_id))
    with serving(broker, mux) as server:
        server.stop()
        assert server.state == "quiet"
        time.sleep(0.3)
        msg = message("t")
        enqueue(broker, msg)
        time.sleep(0.5)
        assert ran == []
        assert info(broker, msg).state is TaskState.PENDING


def test_start_up_recovers_a_task_left_active_by_a_dead_worker(broker: InMemoryBroker) -> None:
    msg = message("t", max_retry=5, retention=60_000)
    enqueue(broker, msg)
    # A worker took it with a short lease and died.
    taken = call(broker.dequeue(["default"], count=1, lease=50))
    assert [d.message.id for d in taken] == [msg.id]
    time.sleep(0.1)
    runs: list[int] = []
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: runs.append(ctx.retry_count))
    with serving(broker, mux, recoverer_interval=3600):
        wait_until(lambda: info(broker, msg).state is TaskState.COMPLETED, what="completion")
    assert runs == [1]
    assert info(broker, msg).last_error == "lease expired: worker presumed dead"


def test_expired_lease_with_no_retries_left_is_archived(broker: InMemoryBroker) -> None:
    msg = message("t", max_retry=0)
    enqueue(broker, msg)
    call(broker.dequeue(["default"], count=1, lease=50))
    time.sleep(0.1)
    with serving(broker, ServeMux()):
        wait_until(lambda: info(broker, msg).state is TaskState.ARCHIVED)
    assert info(broker, msg).last_error == "lease expired: worker presumed dead"


def test_a_scheduled_task_starts_within_100ms_of_its_due_time(broker: InMemoryBroker) -> None:
    started: list[float] = []
    mux = ServeMux()

    @mux.handle("t")
    async def note(ctx: Context, task: taskq.Task) -> None:
        started.append(time.time())

    with serving(broker, mux):
        time.sleep(0.1)
        due = time.time() + 0.5
        call(broker.schedule(message("t"), int(due * 1000)))
        wait_until(lambda: started, what="the scheduled task")
    assert -0.01 <= started[0] - due < 0.1


def test_the_server_state_is_published_while_running_and_cleared_on_shutdown(
    broker: InMemoryBroker,
) -> None:
    started = threading.Event()
    release = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    def hold(ctx: Context, task: taskq.Task) -> None:
        started.set()
        release.wait(5)

    msg = message("t")
    enqueue(broker, msg)
    with serving(broker, mux, queues={"default": 2, "other": 1}, concurrency=3, lease=0.6) as s:
        assert started.wait(5)
        wait_until(lambda: any(w.active_workers for w in call(broker.servers())))
        (published,) = call(broker.servers())
        assert published.id == s.id
        assert published.concurrency == 3
        assert dict(published.queues) == {"default": 2, "other": 1}
        assert [w.task_id for w in published.active_workers] == [msg.id]
        assert published.status == "active"
        release.set()
    assert call(broker.servers()) == []


def test_heartbeat_keeps_a_long_task_leased(broker: InMemoryBroker) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    async def longer_than_the_lease(ctx: Context, task: taskq.Task) -> None:
        runs.append(1)
        await asyncio.sleep(1.2)

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, lease=0.4, recoverer_interval=0.1):
        wait_until(lambda: info(broker, msg).state is TaskState.COMPLETED, timeout=5)
    assert runs == [1]
    assert info(broker, msg).retried == 0


def test_the_janitor_deletes_completed_tasks_after_their_retention(
    broker: InMemoryBroker,
) -> None:
    mux = ServeMux()
    mux.handle("t", lambda ctx, task: None)
    msg = message("t", retention=100)
    enqueue(broker, msg)
    with serving(broker, mux, janitor_interval=0.05):
        wait_until(lambda: call(broker.queue_stats("default")).size == 0, what="deletion")


def test_health_check_reports_each_ping(broker: InMemoryBroker) -> None:
    outcomes: list[BaseException | None] = []
    with serving(broker, ServeMux(), health_check=outcomes.append, health_check_interval=0.05):
        wait_until(lambda: len(outcomes) >= 2)
    assert set(outcomes) == {None}


def test_a_group_aggregator_turns_a_full_group_into_one_task(broker: InMemoryBroker) -> None:
    handled: list[bytes] = []
    mux = ServeMux()

    @mux.handle("batch")
    def on_batch(ctx: Context, task: taskq.Task) -> None:
        handled.append(task.payload)

    def aggregate(group: str, tasks: list[taskq.Task]) -> taskq.Task:
        return taskq.Task("batch", b",".join(t.payload for t in tasks))

    async def add() -> None:
        for i in range(3):
            await broker.add_to_group(message("item", payload=str(i).encode(), group="g"))

    call(add())
    with serving(broker, mux, group_aggregator=aggregate, group_max_size=3):
        wait_until(lambda: handled, timeout=10, what="the aggregated task")
    assert sorted(handled[0].split(b",")) == [b"0", b"1", b"2"]


def test_start_refuses_anything_but_a_serve_mux(broker: InMemoryBroker) -> None:
    with pytest.raises(InvalidArgumentError, match="ServeMux"):
        Server(broker).start(lambda ctx, task: None)  # type: ignore[arg-type]


def test_a_server_cannot_be_started_twice(broker: InMemoryBroker) -> None:
    with serving(broker, ServeMux()) as server, pytest.raises(ServerClosedError):
        server.start(ServeMux())


def test_start_fails_when_the_broker_is_unreachable(broker: InMemoryBroker) -> None:
    class Down(InMemoryBroker):
        async def ping(self) -> None:
            raise BrokerConnectionError("connection refused")

    server = Server(Down(), Config(fetch_wait=0.1))
    with pytest.raises(BrokerConnectionError):
        server.start(ServeMux())
    assert server.state == "stopped"


def test_the_server_owns_a_broker_it_connected_from_a_url() -> None:
    with serving("memory://", ServeMux()) as server:  # type: ignore[arg-type]
        assert server.state == "active"
    assert server.state == "stopped"


def test_start_up_log_names_broker_queues_and_concurrency(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    with serving(broker, ServeMux(), queues={"high": 6, "low": 1}, concurrency=3):
        pass
    line = next(r.getMessage() for r in caplog.records if "started" in r.getMessage())
    assert "queues=high=6,low=1" in line and "concurrency=3" in line


def test_server_refuses_a_broker_of_the_wrong_type() -> None:
    with pytest.raises(InvalidArgumentError, match="broker"):
        Server(42)  # type: ignore[arg-type]


def test_run_refuses_unknown_settings() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown server setting"):
        taskq.run(ServeMux(), "memory://", concurrency=1, no_such_setting=1)


@pytest.mark.parametrize(
    ("field", "value", "message_part"),
    [
        ("concurrency", 0, "concurrency"),
        ("queues", {}, "at least one queue"),
        ("queues", {"q": 0}, "weight"),
        ("queues", {"": 1}, "queue name"),
        ("lease", 0.1, "lease"),
        ("heartbeat_interval", 20, "heartbeat_interval"),
        ("shutdown_timeout", -1, "negative"),
        ("forwarder_interval", 0, "forwarder_interval"),
        ("retry_delay", "soon", "callable"),
        ("group_grace_period", 0.5, "group_grace_period"),
        ("group_max_size", -1, "group_max_size"),
        ("no_retry_errors", (ValueError, "x"), "no_retry_errors"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_error(
    field: str, value: object, message_part: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message_part):
        Config(**{field: value})  # type: ignore[arg-type]


def test_config_defaults_follow_the_design() -> None:
    config = Config()
    assert config.queues == {"default": 1}
    assert config.shutdown_timeout == timedelta(seconds=8)
    assert config.lease == timedelta(seconds=30)
    assert config.effective_heartbeat_interval == timedelta(seconds=10)
    assert config.default_timeout == timedelta(minutes=30)
    assert config.release_unique_on_archive is True
    assert config.group_aggregator is None and config.group_max_size == 0


def test_config_accepts_seconds_for_durations() -> None:
    assert Config(lease=3).lease == timedelta(seconds=3)


def test_a_cpu_bound_sync_handler_does_not_starve_the_heartbeat(broker: InMemoryBroker) -> None:
    runs: list[int] = []
    mux = ServeMux()

    @mux.handle("t")
    def spin(ctx: Context, task: taskq.Task) -> None:
        runs.append(1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # pure Python: holds the GIL between switches
            sum(range(1000))

    msg = message("t", retention=60_000)
    enqueue(broker, msg)
    with serving(broker, mux, lease=0.6, recoverer_interval=0.1):
        wait_until(lambda: info(broker, msg).state is TaskState.COMPLETED, timeout=10)
    assert runs == [1]
    assert info(broker, msg).retried == 0


def test_a_fetch_waiting_at_shutdown_cannot_keep_a_requeued_task() -> None:
    class SlowReturn(InMemoryBroker):
        """Dequeue answers late, as over a network: the take happens before the reply."""

        async def dequeue(self, *args: Any, **kwargs: Any) -> list[Delivery]:
            got = await super().dequeue(*args, **kwargs)
            if got:
                await asyncio.sleep(0.3)
            return got

    broker = SlowReturn()
    started = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    async def forever(ctx: Context, task: taskq.Task) -> None:
        started.set()
        await asyncio.sleep(60)

    msg = message("t")
    enqueue(broker, msg)
    server = Server(broker, Config(shutdown_timeout=60, fetch_wait=2.0, concurrency=2))
    server.start(mux)
    assert started.wait(5)
    time.sleep(0.5)  # the free slot's fetch is now waiting in the broker
    server.shutdown_now()
    assert info(broker, msg).state is TaskState.PENDING


def test_run_handles_signals_from_the_moment_the_server_starts(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM right after the start-up line must shut down gracefully, not kill."""
    import signal

    server = Server(broker, Config(fetch_wait=0.1, shutdown_timeout=1))
    default = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []
    real_start = server.start

    def start(mux: ServeMux) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        seen.append(handler)
        real_start(mux)
        if handler is default:  # raising now would kill the test run itself
            threading.Timer(0.2, server.shutdown).start()
        else:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(server, "start", start)
    server.run(ServeMux())  # on the main thread, where run() installs its handlers
    assert seen and seen[0] is not default
    assert signal.getsignal(signal.SIGTERM) is default
