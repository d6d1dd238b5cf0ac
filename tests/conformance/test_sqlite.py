"""The conformance suite on SQLiteBroker, plus what only the SQLite broker promises.

Cross-process behaviour (several processes on one file, ``kill -9``, wake-up
latency from another process) is in ``tests/integration/test_sqlite_processes.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import taskq
from taskq.brokers.base import EnqueueRequest
from taskq.brokers.sqlite import SQLiteBroker, _WatchPace
from taskq.errors import (
    BrokerConnectionError,
    BrokerTimeoutError,
    InvalidArgumentError,
    TaskIDConflictError,
    TaskStateError,
)
from taskq.task import TaskMessage, TaskState
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing.conformance import CorruptDropLease

QUEUE = "sq"


def _message(task_id: str, payload: bytes = b"{}") -> TaskMessage:
    return TaskMessage(id=task_id, type="sq:task", payload=payload, queue=QUEUE)


def _raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the broker's file, to look at or damage what it stored."""
    return sqlite3.connect(path, isolation_level=None)


class TestSQLiteBroker(BrokerConformance):
    @pytest.fixture
    def db_path(self, tmp_path: Path) -> Path:
        return tmp_path / "conformance.db"

    @pytest.fixture
    async def broker(self, clock: FakeClock, db_path: Path) -> AsyncIterator[SQLiteBroker]:
        broker = SQLiteBroker(str(db_path), clock=clock)
        yield broker
        await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, db_path: Path) -> CorruptDropLease:
        async def drop(queue: str, task_id: str) -> None:
            conn = _raw(db_path)
            conn.execute(
                "UPDATE tasks SET lease_until = NULL WHERE queue = ? AND id = ?", (queue, task_id)
            )
            conn.close()

        return drop


# --------------------------------------------------------------------------- SQLite specifics


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "specific.db"


@pytest.fixture
async def broker(db_path: Path) -> AsyncIterator[SQLiteBroker]:
    broker = SQLiteBroker(str(db_path))
    yield broker
    await broker.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///taskq.db", "taskq.db"),
        ("sqlite:///data/q.db", "data/q.db"),
        ("sqlite:////var/lib/taskq/q.db", "/var/lib/taskq/q.db"),
        ("sqlite:///with%20space.db", "with space.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLITE:///upper.db", "upper.db"),
    ],
)
def test_urls_name_relative_absolute_and_memory_databases(url: str, path: str) -> None:
    assert SQLiteBroker.from_url(url).path == path


def test_connect_builds_an_sqlite_broker_for_the_sqlite_scheme() -> None:
    broker = taskq.connect("sqlite:///taskq.db?busy_timeout=250&synchronous=full")
    assert isinstance(broker, SQLiteBroker)
    assert repr(broker) == "SQLiteBroker('taskq.db')"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/file.db",
        "sqlite:///f.db?busy_timeout=soon",
        "sqlite:///f.db?synchronous=sometimes",
        "sqlite:///f.db?color=blue",
        "redis://localhost/0",
    ],
)
def test_malformed_urls_are_refused_with_invalid_argument_error(url: str) -> None:
    with pytest.raises(InvalidArgumentError):
        SQLiteBroker.from_url(url)


async def test_the_file_is_in_wal_mode_with_a_versioned_schema(
    broker: SQLiteBroker, db_path: Path
) -> None:
    await broker.ping()
    conn = _raw(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    conn.close()


async def test_an_in_memory_database_works_as_a_private_broker() -> None:
    broker = SQLiteBroker.from_url("sqlite://:memory:")
    await broker.enqueue(_message("m1"))
    (delivery,) = await broker.dequeue([QUEUE], count=5, lease=1_000)
    await broker.done(delivery.ref)
    assert (await broker.queue_stats(QUEUE)).processed == 1
    await broker.close()


async def test_tasks_survive_closing_and_reopening_the_file(db_path: Path) -> None:
    first = SQLiteBroker(str(db_path))
    await first.enqueue(_message("durable"))
    await first.close()
    second = SQLiteBroker(str(db_path))
    (delivery,) = await second.dequeue([QUEUE], count=1, lease=1_000)
    assert delivery.message.id == "durable"
    await second.close()


async def test_a_closed_broker_reopens_on_its_next_call(broker: SQLiteBroker) -> None:
    await broker.enqueue(_message("before"))
    await broker.close()
    await broker.close()
    await broker.enqueue(_message("after"))
    assert (await broker.queue_stats(QUEUE)).pending == 2


async def test_closing_the_broker_ends_a_waiting_dequeue(broker: SQLiteBroker) -> None:
    waiting = asyncio.ensure_future(broker.dequeue([QUEUE], count=1, lease=1_000, wait=30_000))
    await asyncio.sleep(0.05)
    await broker.close()
    assert await asyncio.wait_for(waiting, 5) == []


async def test_another_connection_s_enqueue_wakes_a_waiting_dequeue_promptly(
    broker: SQLiteBroker, db_path: Path
) -> None:
    other = SQLiteBroker(str(db_path))
    await other.ping()
    waiting = asyncio.ensure_future(broker.dequeue([QUEUE], count=1, lease=1_000, wait=30_000))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await other.enqueue(_message("from-elsewhere"))
    (delivery,) = await asyncio.wait_for(waiting, 5)
    assert delivery.message.id == "from-elsewhere"
    assert time.monotonic() - started < 0.05
    await other.close()


def test_change_checks_speed_up_after_a_commit_elsewhere_and_slow_down_when_quiet() -> None:
    pace = _WatchPace(0.010)
    assert pace.interval == 0.010  # nothing seen yet: the broker's watch_interval
    pace.checked(True, now=100.0)
    assert pace.interval == 0.002
    pace.checked(False, now=100.009)  # still within watch_interval of the commit
    assert pace.interval == 0.002
    intervals = []
    for now in (100.011, 100.015, 100.023, 100.040):
        pace.checked(False, now)
        intervals.append(pace.interval)
    assert intervals == [0.004, 0.008, 0.010, 0.010]
    pace.checked(True, now=101.0)
    assert pace.interval == 0.002
    assert _WatchPace(0.001).interval == 0.001
    tight = _WatchPace(0.001)
    tight.checked(True, now=5.0)
    assert tight.interval == 0.001  # never slower than watch_interval


async def test_a_waiting_dequeue_checks_every_2_ms_after_another_process_commits(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A commit elsewhere (the first check reports one) makes the broker thread
    # check every 2 ms for the next watch_interval (200 ms): about 100 checks
    # where a fixed interval would make 2.
    checks: list[float] = []

    def changed_elsewhere(store: Any) -> bool:
        checks.append(time.monotonic())
        return len(checks) == 1

    monkeypatch.setattr("taskq.brokers.sqlite._Store.changed_elsewhere", changed_elsewhere)
    broker = SQLiteBroker(str(db_path), watch_interval=200)
    try:
        await broker.ping()
        assert await broker.dequeue([QUEUE], count=1, lease=1_000, wait=300) == []
    finally:
        await broker.close()
    fast = [b - a for a, b in itertools.pairwise(checks) if b - checks[0] < 0.2]
    assert len(fast) > 20, f"{len(checks)} checks in 300 ms"
    assert sorted(fast)[len(fast) // 2] < 0.01


async def test_an_idle_waiting_dequeue_uses_almost_no_cpu(broker: SQLiteBroker) -> None:
    await broker.ping()
    cpu, wall = time.process_time(), time.monotonic()
    assert await broker.dequeue([QUEUE], count=1, lease=1_000, wait=1_000) == []
    used = time.process_time() - cpu
    assert time.monotonic() - wall >= 0.99
    assert used < 0.1, f"an idle second of waiting used {used:.3f} s of CPU"


async def test_calls_from_two_event_loops_in_two_threads_share_one_broker(
    broker: SQLiteBroker,
) -> None:
    def producer_thread() -> None:
        async def produce() -> None:
            await asyncio.sleep(0.05)
            for n in range(20):
                await broker.enqueue(_message(f"thread-{n}"))

        asyncio.run(produce())

    thread = threading.Thread(target=producer_thread)
    thread.start()
    got: list[str] = []
    deadline = time.monotonic() + 10
    while len(got) < 20 and time.monotonic() < deadline:
        for delivery in await broker.dequeue([QUEUE], count=20, lease=10_000, wait=1_000):
            got.append(delivery.message.id)
            await broker.done(delivery.ref)
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
    assert sorted(got) == sorted(f"thread-{n}" for n in range(20))


async def test_a_write_lock_held_too_long_gives_broker_timeout_error(db_path: Path) -> None:
    broker = SQLiteBroker(str(db_path), busy_timeout=200)
    await broker.ping()
    holder = _raw(db_path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(BrokerTimeoutError, match="write lock"):
            await broker.enqueue(_message("blocked"))
        assert 0.15 < time.monotonic() - started < 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await broker.enqueue(_message("unblocked")) is TaskState.PENDING
    assert [t.id for t in await broker.list_tasks(QUEUE, TaskState.PENDING)] == ["unblocked"]
    await broker.close()


async def test_an_undecodable_stored_message_is_archived_instead_of_delivered(
    broker: SQLiteBroker, db_path: Path
) -> None:
    await broker.enqueue(_message("corrupt"))
    await broker.enqueue(_message("fine"))
    conn = _raw(db_path)
    conn.execute("UPDATE tasks SET msg = ? WHERE id = 'corrupt'", (b"\x00not json",))
    conn.close()

    deliveries = await broker.dequeue([QUEUE], count=5, lease=1_000)
    assert [d.message.id for d in deliveries] == ["fine"]
    info = await broker.get_task(QUEUE, "corrupt")
    assert info.state is TaskState.ARCHIVED
    assert info.payload == b"\x00not json"
    assert "not valid JSON" in info.last_error


async def test_archiving_an_undecodable_message_releases_its_unique_lock(
    broker: SQLiteBroker, db_path: Path
) -> None:
    await broker.enqueue(attrs.evolve(_message("corrupt"), unique_key="uk"), unique_ttl=3_600_000)
    conn = _raw(db_path)
    conn.execute("UPDATE tasks SET msg = ? WHERE id = 'corrupt'", (b"\x00not json",))
    conn.close()

    assert await broker.dequeue([QUEUE], count=1, lease=1_000) == []
    assert (await broker.get_task(QUEUE, "corrupt")).state is TaskState.ARCHIVED
    again = attrs.evolve(_message("again"), unique_key="uk")
    assert await broker.enqueue(again, unique_ttl=3_600_000) is TaskState.PENDING


class _GateClock:
    """A clock that can hold the broker thread inside a transaction until released."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def now_ms(self) -> int:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(10)
        return 1_900_000_000_000


@pytest.fixture
def gate() -> Iterator[_GateClock]:
    clock = _GateClock()
    yield clock
    clock.release.set()


async def test_a_dequeue_cancelled_mid_transaction_puts_its_tasks_back(
    db_path: Path, gate: _GateClock
) -> None:
    broker = SQLiteBroker(str(db_path), clock=gate)
    await broker.enqueue(_message("first"))
    await broker.enqueue(_message("second"))
    gate.armed = True
    call = asyncio.ensure_future(broker.dequeue([QUEUE], count=1, lease=60_000))
    assert await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 10)
    call.cancel()
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await call

    for _ in range(500):  # the give-back runs on the broker thread right after
        if not (await broker.queue_stats(QUEUE)).active:
            break
        await asyncio.sleep(0.01)
    pending = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert [t.id for t in pending] == ["first", "second"]
    await broker.close()


async def test_queued_calls_share_one_commit_yet_each_stays_atomic(broker: SQLiteBroker) -> None:
    await broker.ping()
    statements: list[str] = []
    await broker._call(lambda s: s.conn.set_trace_callback(statements.append))
    gate = threading.Event()
    held = asyncio.ensure_future(broker._call(lambda s: gate.wait(10)))

    def write_then_fail(store: Any) -> None:
        def op(now: int) -> None:
            store.conn.execute("INSERT INTO queues (name) VALUES ('half-done')")
            raise TaskStateError("refused after writing")

        store._write(op)

    calls = [broker.enqueue(_message(f"before-{n}")) for n in range(10)]
    calls.append(broker._call(write_then_fail))
    calls += [broker.enqueue(_message(f"after-{n}")) for n in range(10)]
    calls.append(broker.enqueue(_message("before-0")))  # an id conflict
    pending = asyncio.gather(*calls, return_exceptions=True)
    await asyncio.sleep(0.05)  # every call is now queued behind the gate
    gate.set()
    results = await pending
    await held
    await broker._call(lambda s: s.conn.set_trace_callback(None))

    assert results[:10] == [TaskState.PENDING] * 10
    assert isinstance(results[10], TaskStateError)
    assert results[11:21] == [TaskState.PENDING] * 10
    assert isinstance(results[21], TaskIDConflictError)
    assert await broker.queues() == [QUEUE]
    assert (await broker.queue_stats(QUEUE)).pending == 20
    assert statements.count("COMMIT") < 5, statements


async def test_enqueue_many_beyond_one_transaction_chunk_reports_every_item_in_order(
    broker: SQLiteBroker,
) -> None:
    ids = [f"many-{n}" for n in range(2_500)]
    ids[5] = ids[4]
    ids[1_500] = ids[1_499]  # a conflict just past the first chunk of 1,000
    results = await broker.enqueue_many([EnqueueRequest(_message(i)) for i in ids])
    conflicts = [n for n, r in enumerate(results) if isinstance(r, TaskIDConflictError)]
    assert conflicts == [5, 1_500]
    assert results.count(TaskState.PENDING) == 2_498
    assert (await broker.queue_stats(QUEUE)).pending == 2_498


def _broker_threads() -> int:
    return sum(t.name == "taskq-sqlite" for t in threading.enumerate())


async def test_a_broker_dropped_without_close_stops_its_thread(db_path: Path) -> None:
    before = _broker_threads()

    async def use_and_forget() -> None:
        await SQLiteBroker(str(db_path)).ping()

    await use_and_forget()
    gc.collect()
    for _ in range(200):
        if _broker_threads() == before:
            break
        await asyncio.sleep(0.01)
    assert _broker_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads (3.12+)
async def test_a_forked_child_opens_its_own_connection(broker: SQLiteBroker) -> None:
    await broker.enqueue(_message("from-parent"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            # A fresh thread: the parent's running loop is still marked in this one.
            child = threading.Thread(
                target=lambda: asyncio.run(broker.enqueue(_message("from-child")))
            )
            child.start()
            child.join(30)
            code = 0
        finally:
            os._exit(code)
    _, status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    await broker.enqueue(_message("parent-again"))
    pending = await broker.list_tasks(QUEUE, TaskState.PENDING)
    assert [t.id for t in pending] == ["from-parent", "from-child", "parent-again"]


async def test_a_cancellation_requested_through_another_connection_reaches_subscribers(
    broker: SQLiteBroker, db_path: Path
) -> None:
    await broker.enqueue(_message("running"))
    await broker.dequeue([QUEUE], count=1, lease=60_000)
    subscription = await broker.subscribe_cancellations()
    iterator = subscription.__aiter__()
    first = asyncio.ensure_future(iterator.__anext__())
    other = SQLiteBroker(str(db_path))
    assert await other.request_cancel("running") is TaskState.ACTIVE
    assert await asyncio.wait_for(first, 5) == "running"
    assert await broker.cancel_requested(QUEUE, ["running"]) == {"running"}
    await subscription.aclose()
    await other.close()


async def test_a_path_that_cannot_be_opened_gives_a_connection_error(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "missing-dir" / "q.db"))
    with pytest.raises(BrokerConnectionError, match="unable to open"):
        await broker.enqueue(_message("nowhere"))
    await broker.close()


async def test_brokers_on_one_file_in_one_process_wake_each_other_at_once(db_path: Path) -> None:
    # A change check every 5 s: only the in-process path can wake it sooner.
    waiting_side = SQLiteBroker(str(db_path), watch_interval=5_000)
    producing_side = SQLiteBroker(str(db_path))
    await waiting_side.ping()
    await producing_side.ping()
    waiting = asyncio.ensure_future(
        waiting_side.dequeue([QUEUE], count=1, lease=1_000, wait=30_000)
    )
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await producing_side.enqueue(_message("next-door"))
    (delivery,) = await asyncio.wait_for(waiting, 10)
    assert delivery.message.id == "next-door"
    assert time.monotonic() - started < 0.5
    await waiting_side.close()
    await producing_side.close()
