"""Every Inspector method, run once per broker (in-memory, SQLite and a real Redis)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

import taskq
from taskq import inspector as inspector_module
from taskq.brokers.base import (
    Broker,
    ClusterSlotInfo,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    WorkerInfo,
)
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import (
    BrokerError,
    InvalidArgumentError,
    InvalidQueueNameError,
    QueueNotEmptyError,
    QueueNotFoundError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq.inspector import AsyncInspector, Inspector, QueueInfo, QueueLocation
from taskq.task import TaskMessage, TaskState

HOUR_MS = 3_600_000


async def _redis_broker(request: pytest.FixtureRequest) -> Broker:
    try:
        from taskq.brokers.redis import RedisBroker  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"RedisBroker is not available: {exc}")
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return taskq.connect(server.url)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    b: Broker
    if request.param == "memory":
        b = InMemoryBroker()
    elif request.param == "sqlite":
        b = taskq.connect(f"sqlite:///{tmp_path / 'taskq.db'}")
    else:
        b = await _redis_broker(request)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def insp(broker: Broker) -> AsyncIterator[AsyncInspector]:
    async with AsyncInspector(broker) as inspector:
        yield inspector


def msg(task_id: str, queue: str = "q", *, group: str = "", max_retry: int = 3) -> TaskMessage:
    return TaskMessage(
        id=task_id,
        type="email:send",
        payload=f'{{"n": "{task_id}"}}'.encode(),
        queue=queue,
        group=group,
        max_retry=max_retry,
    )


async def _take_one(broker: Broker, task_id: str, queue: str = "q", lease: int = 60_000) -> None:
    """Enqueue ``task_id`` and dequeue it, leaving it active (nothing else is pending)."""
    await broker.enqueue(msg(task_id, queue))
    (delivery,) = await broker.dequeue([queue], count=1, lease=lease)
    assert delivery.message.id == task_id


async def _lease(broker: Broker, task_id: str, queue: str = "q") -> taskq.brokers.base.LeaseRef:
    await broker.enqueue(msg(task_id, queue))
    (delivery,) = await broker.dequeue([queue], count=1, lease=60_000)
    return delivery.ref


async def populate(broker: Broker, queue: str = "q") -> None:
    """One task in every state: a1 active, r1 retry, x1 archived, c1 completed,
    s1 scheduled, g1/g2 aggregating (group "grp"), p1/p2 pending."""
    await _take_one(broker, "a1", queue)
    await broker.retry(await _lease(broker, "r1", queue), delay=HOUR_MS, error="boom")
    await broker.archive(await _lease(broker, "x1", queue), error="dead")
    await broker.complete(await _lease(broker, "c1", queue), retention=HOUR_MS)
    now = await broker.now()
    await broker.schedule(msg("s1", queue), now + HOUR_MS)
    await broker.add_to_group(msg("g1", queue, group="grp"))
    await broker.add_to_group(msg("g2", queue, group="grp"))
    await broker.enqueue(msg("p1", queue))
    await broker.enqueue(msg("p2", queue))


# --------------------------------------------------------------------------- queues


async def test_queues_lists_every_known_queue_sorted(broker: Broker, insp: AsyncInspector) -> None:
    for name in ("zeta", "alpha", "mid"):
        await broker.enqueue(msg(f"t-{name}", name))
    assert await insp.queues() == ["alpha", "mid", "zeta"]


async def test_queue_info_counts_every_state_and_todays_outcomes(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    info = await insp.get_queue_info("q")
    assert isinstance(info, QueueInfo)
    counts = {s: info.count(s) for s in TaskState}
    assert counts == {
        TaskState.PENDING: 2,
        TaskState.ACTIVE: 1,
        TaskState.SCHEDULED: 1,
        TaskState.RETRY: 1,
        TaskState.ARCHIVED: 1,
        TaskState.COMPLETED: 1,
        TaskState.AGGREGATING: 2,
    }
    assert info.size == 9
    assert info.groups == 1
    assert info.paused is False
    # retry and archive count as processed and failed, complete as processed.
    assert (info.processed, info.failed) == (3, 2)
    assert (info.processed_total, info.failed_total) == (3, 2)
    assert isinstance(info.latency, timedelta)
    assert timedelta(0) <= info.latency < timedelta(minutes=1)
    assert info.timestamp.tzinfo is not None
    assert abs(info.timestamp - datetime.now(timezone.utc)) < timedelta(minutes=1)


async def test_queue_latency_is_the_age_of_the_oldest_pending_task(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("old"))
    await asyncio.sleep(0.15)
    info = await insp.get_queue_info("q")
    assert timedelta(milliseconds=100) <= info.latency < timedelta(seconds=30)


async def test_queue_info_of_unknown_queue_raises_queue_not_found(insp: AsyncInspector) -> None:
    with pytest.raises(QueueNotFoundError):
        await insp.get_queue_info("nope")


@pytest.mark.parametrize("bad", ["", " padded ", "{tag}", "a\nb", 42])
async def test_invalid_queue_names_are_refused_before_any_broker_call(
    insp: AsyncInspector, bad: object
) -> None:
    with pytest.raises(InvalidQueueNameError):
        await insp.get_queue_info(bad)  # type: ignore[arg-type]


async def test_pause_and_unpause_are_reflected_in_queue_info(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    await insp.pause_queue("q")
    assert (await insp.get_queue_info("q")).paused is True
    assert await broker.dequeue(["q"], count=1, lease=1000) == []
    await insp.unpause_queue("q")
    assert (await insp.get_queue_info("q")).paused is False


async def test_pausing_an_unknown_queue_raises_queue_not_found(insp: AsyncInspector) -> None:
    with pytest.raises(QueueNotFoundError):
        await insp.pause_queue("nope")
    with pytest.raises(QueueNotFoundError):
        await insp.unpause_queue("nope")


async def test_delete_queue_refuses_a_queue_with_tasks_unless_forced(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(QueueNotEmptyError):
        await insp.delete_queue("q")
    await insp.delete_queue("q", force=True)
    assert "q" not in await insp.queues()


async def test_delete_queue_refuses_active_tasks_even_when_forced(
    broker: Broker, insp: AsyncInspector
) -> None:
    await _take_one(broker, "a1")
    with pytest.raises(QueueNotEmptyError):
        await insp.delete_queue("q", force=True)
    assert "q" in await insp.queues()


async def test_delete_queue_of_unknown_queue_raises_queue_not_found(insp: AsyncInspector) -> None:
    with pytest.raises(QueueNotFoundError):
        await insp.delete_queue("nope")


async def test_history_gives_one_entry_per_day_newest_first(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    days = await insp.history("q", 3)
    assert len(days) == 3
    assert days[0].date == datetime.now(timezone.utc).date()
    assert [d.date for d in days] == sorted((d.date for d in days), reverse=True)
    assert (days[0].processed, days[0].failed) == (3, 2)
    assert all(isinstance(d.date, date) for d in days)


async def test_history_checks_its_arguments(broker: Broker, insp: AsyncInspector) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(InvalidArgumentError):
        await insp.history("q", 0)
    with pytest.raises(QueueNotFoundError):
        await insp.history("nope", 7)


async def test_groups_lists_groups_with_their_sizes(broker: Broker, insp: AsyncInspector) -> None:
    await populate(broker)
    await broker.add_to_group(msg("h1", group="other"))
    groups = sorted(await insp.groups("q"), key=lambda g: g.group)
    assert [(g.group, g.size) for g in groups] == [("grp", 2), ("other", 1)]
    with pytest.raises(QueueNotFoundError):
        await insp.groups("nope")


# --------------------------------------------------------------------------- listing


@pytest.mark.parametrize(
    ("method", "state", "ids"),
    [
        ("list_pending_tasks", TaskState.PENDING, ["p1", "p2"]),
        ("list_active_tasks", TaskState.ACTIVE, ["a1"]),
        ("list_scheduled_tasks", TaskState.SCHEDULED, ["s1"]),
        ("list_retry_tasks", TaskState.RETRY, ["r1"]),
        ("list_archived_tasks", TaskState.ARCHIVED, ["x1"]),
        ("list_completed_tasks", TaskState.COMPLETED, ["c1"]),
        ("list_aggregating_tasks", TaskState.AGGREGATING, ["g1", "g2"]),
    ],
)
async def test_each_list_method_returns_the_tasks_in_its_state(
    broker: Broker, insp: AsyncInspector, method: str, state: TaskState, ids: list[str]
) -> None:
    await populate(broker)
    tasks = await getattr(insp, method)("q")
    assert [t.id for t in tasks] == ids
    assert {t.state for t in tasks} == {state}
    assert all(t.queue == "q" and t.type == "email:send" for t in tasks)


async def test_listed_retry_and_archived_tasks_carry_their_last_error(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    (retry,) = await insp.list_retry_tasks("q")
    assert (retry.retried, retry.last_error) == (1, "boom")
    assert retry.next_process_at is not None
    assert retry.next_process_at > datetime.now(timezone.utc) + timedelta(minutes=50)
    (archived,) = await insp.list_archived_tasks("q")
    assert archived.last_error == "dead"


async def test_active_tasks_whose_lease_expired_are_flagged_orphaned(
    broker: Broker, insp: AsyncInspector
) -> None:
    await _take_one(broker, "live", lease=60_000)
    await _take_one(broker, "dead", lease=1)
    await asyncio.sleep(0.05)
    flags = {t.id: t.is_orphaned for t in await insp.list_active_tasks("q")}
    assert flags == {"live": False, "dead": True}


async def test_aggregating_tasks_can_be_listed_for_one_group(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    await broker.add_to_group(msg("h1", group="other"))
    assert [t.id for t in await insp.list_aggregating_tasks("q", "other")] == ["h1"]
    assert len(await insp.list_aggregating_tasks("q")) == 3


async def test_pages_split_a_state_in_fifo_order(broker: Broker, insp: AsyncInspector) -> None:
    for i in range(5):
        await broker.enqueue(msg(f"t{i}"))
    pages = [
        [t.id for t in await insp.list_pending_tasks("q", page=n, page_size=2)]
        for n in (1, 2, 3, 4)
    ]
    assert pages == [["t0", "t1"], ["t2", "t3"], ["t4"], []]


@pytest.mark.parametrize(
    ("page", "page_size"), [(0, 30), (-1, 30), (1, 0), (1, 1001), (True, 30), (1.5, 30)]
)
async def test_bad_pages_are_refused(
    broker: Broker, insp: AsyncInspector, page: object, page_size: object
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(InvalidArgumentError):
        await insp.list_pending_tasks("q", page=page, page_size=page_size)  # type: ignore[arg-type]


async def test_listing_an_unknown_state_or_group_with_another_state_is_refused(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(InvalidArgumentError, match="unknown task state"):
        await insp.list_tasks("q", "done")
    with pytest.raises(InvalidArgumentError, match="group"):
        await insp.list_tasks("q", "pending", group="grp")


async def test_listing_an_unknown_queue_raises_queue_not_found(insp: AsyncInspector) -> None:
    with pytest.raises(QueueNotFoundError):
        await insp.list_pending_tasks("nope")


async def test_get_task_info_finds_a_task_in_any_state(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    expected = {"a1": "active", "r1": "retry", "x1": "archived", "c1": "completed"}
    expected |= {"s1": "scheduled", "g1": "aggregating", "p1": "pending"}
    for task_id, state in expected.items():
        info = await insp.get_task_info("q", task_id)
        assert (info.id, info.state.value) == (task_id, state)
    assert (await insp.get_task_info("q", "p1")).payload == b'{"n": "p1"}'


async def test_get_task_info_of_unknown_task_or_queue_raises_not_found(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(TaskNotFoundError):
        await insp.get_task_info("q", "missing")
    with pytest.raises(QueueNotFoundError):
        await insp.get_task_info("nope", "p1")
    with pytest.raises(InvalidArgumentError):
        await insp.get_task_info("q", "")


# --------------------------------------------------------------------------- one task


async def test_delete_task_removes_it_but_refuses_an_active_one(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    await insp.delete_task("q", "p1")
    with pytest.raises(TaskNotFoundError):
        await insp.get_task_info("q", "p1")
    with pytest.raises(TaskStateError):
        await insp.delete_task("q", "a1")
    with pytest.raises(TaskNotFoundError):
        await insp.delete_task("q", "p1")


async def test_running_an_archived_task_resets_its_retry_count(
    broker: Broker, insp: AsyncInspector
) -> None:
    ref = await _lease(broker, "x1")
    await broker.retry(ref, delay=0, error="first")
    await broker.forward("q")
    (delivery,) = await broker.dequeue(["q"], count=1, lease=60_000)
    await broker.archive(delivery.ref, error="second")
    assert (await insp.get_task_info("q", "x1")).retried == 1
    await insp.run_task("q", "x1")
    info = await insp.get_task_info("q", "x1")
    assert (info.state, info.retried, info.last_error) == (TaskState.PENDING, 0, "")


async def test_run_task_refuses_pending_and_active_tasks(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    for task_id in ("p1", "a1"):
        with pytest.raises(TaskStateError):
            await insp.run_task("q", task_id)
    await insp.run_task("q", "s1")
    assert (await insp.get_task_info("q", "s1")).state is TaskState.PENDING


async def test_archive_task_archives_pending_and_refuses_active(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    await insp.archive_task("q", "p1")
    assert (await insp.get_task_info("q", "p1")).state is TaskState.ARCHIVED
    with pytest.raises(TaskStateError):
        await insp.archive_task("q", "a1")


async def test_cancel_processing_archives_a_task_that_has_not_started(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    assert await insp.cancel_processing("p1") is TaskState.PENDING
    assert (await insp.get_task_info("q", "p1")).state is TaskState.ARCHIVED


async def test_cancel_processing_marks_an_active_task_cancelled(
    broker: Broker, insp: AsyncInspector
) -> None:
    await _take_one(broker, "a1")
    assert await insp.cancel_processing("a1", queue="q") is TaskState.ACTIVE
    assert await broker.cancel_requested("q", ["a1"]) == {"a1"}


async def test_cancel_processing_of_unknown_task_raises_task_not_found(
    broker: Broker, insp: AsyncInspector
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(TaskNotFoundError):
        await insp.cancel_processing("missing")


# --------------------------------------------------------------------------- bulk


@pytest.mark.parametrize(
    ("method", "removed"),
    [
        ("delete_all_pending_tasks", "p1"),
        ("delete_all_scheduled_tasks", "s1"),
        ("delete_all_retry_tasks", "r1"),
        ("delete_all_archived_tasks", "x1"),
        ("delete_all_completed_tasks", "c1"),
        ("delete_all_aggregating_tasks", "g1"),
    ],
)
async def test_each_delete_all_method_deletes_only_its_state(
    broker: Broker, insp: AsyncInspector, method: str, removed: str
) -> None:
    await populate(broker)
    before = (await insp.get_queue_info("q")).size
    deleted = await getattr(insp, method)("q")
    assert deleted == (2 if removed in {"p1", "g1"} else 1)
    assert (await insp.get_queue_info("q")).size == before - deleted
    with pytest.raises(TaskNotFoundError):
        await insp.get_task_info("q", removed)


@pytest.mark.parametrize(
    ("method", "moved"),
    [
        ("run_all_scheduled_tasks", ["s1"]),
        ("run_all_retry_tasks", ["r1"]),
        ("run_all_archived_tasks", ["x1"]),
        ("run_all_completed_tasks", ["c1"]),
        ("run_all_aggregating_tasks", ["g1", "g2"]),
    ],
)
async def test_each_run_all_method_makes_its_tasks_pending(
    broker: Broker, insp: AsyncInspector, method: str, moved: list[str]
) -> None:
    await populate(broker)
    assert await getattr(insp, method)("q") == len(moved)
    for task_id in moved:
        assert (await insp.get_task_info("q", task_id)).state is TaskState.PENDING


@pytest.mark.parametrize(
    ("method", "moved"),
    [
        ("archive_all_pending_tasks", ["p1", "p2"]),
        ("archive_all_scheduled_tasks", ["s1"]),
        ("archive_all_retry_tasks", ["r1"]),
        ("archive_all_aggregating_tasks", ["g1", "g2"]),
    ],
)
async def test_each_archive_all_method_archives_its_tasks(
    broker: Broker, insp: AsyncInspector, method: str, moved: list[str]
) -> None:
    await populate(broker)
    assert await getattr(insp, method)("q") == len(moved)
    for task_id in moved:
        assert (await insp.get_task_info("q", task_id)).state is TaskState.ARCHIVED


async def test_bulk_operations_on_one_group_leave_other_groups_alone(
    broker: Broker, insp: AsyncInspector
) -> None:
    await populate(broker)
    await broker.add_to_group(msg("h1", group="other"))
    assert await insp.delete_all_aggregating_tasks("q", "grp") == 2
    assert [t.id for t in await insp.list_aggregating_tasks("q")] == ["h1"]


async def test_bulk_operations_work_in_bounded_chunks_until_done(
    broker: Broker, insp: AsyncInspector, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(7):
        await broker.enqueue(msg(f"t{i}"))
    limits: list[int] = []
    real = broker.delete_all

    async def spy(queue: str, state: TaskState, *, group: str | None = None, limit: int) -> int:
        limits.append(limit)
        return await real(queue, state, group=group, limit=limit)

    monkeypatch.setattr(inspector_module, "BULK_CHUNK", 3)
    monkeypatch.setattr(broker, "delete_all", spy)
    assert await insp.delete_all_pending_tasks("q") == 7
    assert limits == [3, 3, 3, 3]
    assert (await insp.get_queue_info("q")).pending == 0


@pytest.mark.parametrize(
    ("method", "state"),
    [
        ("delete_all_tasks", "active"),
        ("run_all_tasks", "pending"),
        ("run_all_tasks", "active"),
        ("archive_all_tasks", "archived"),
        ("archive_all_tasks", "completed"),
        ("delete_all_tasks", "bogus"),
    ],
)
async def test_bulk_operations_refuse_states_they_cannot_apply_to(
    broker: Broker, insp: AsyncInspector, method: str, state: str
) -> None:
    await broker.enqueue(msg("p1"))
    with pytest.raises(InvalidArgumentError):
        await getattr(insp, method)("q", state)


@pytest.mark.parametrize("method", ["delete_all_tasks", "run_all_tasks", "archive_all_tasks"])
async def test_bulk_operations_refuse_a_group_with_another_state_than_aggregating(
    broker: Broker, insp: AsyncInspector, method: str
) -> None:
    await populate(broker)
    state = "pending" if method != "run_all_tasks" else "scheduled"
    with pytest.raises(InvalidArgumentError, match="group applies only to aggregating"):
        await getattr(insp, method)("q", state, group="grp")
    assert (await insp.get_queue_info("q")).size == 9


async def test_bulk_operations_on_unknown_queue_raise_queue_not_found(
    insp: AsyncInspector,
) -> None:
    with pytest.raises(QueueNotFoundError):
        await insp.delete_all_archived_tasks("nope")


# --------------------------------------------------------------------------- fleet


async def test_servers_lists_live_servers_with_their_active_workers(
    broker: Broker, insp: AsyncInspector
) -> None:
    now = await broker.now()
    worker = WorkerInfo("t1", "email:send", "q", started_at=now, deadline=now + 30_000)
    await broker.write_server_state(
        ServerInfo(
            id="srv-1",
            host="box",
            pid=42,
            concurrency=10,
            queues={"q": 1},
            strict_priority=False,
            started_at=now,
            status="active",
            active_workers=(worker,),
        ),
        ttl=60_000,
    )
    (server,) = await insp.servers()
    assert (server.id, server.host, server.pid, server.concurrency) == ("srv-1", "box", 42, 10)
    assert dict(server.queues) == {"q": 1}
    assert server.started_at.tzinfo is not None
    (active,) = server.active_workers
    assert (active.task_id, active.task_type, active.queue) == ("t1", "email:send", "q")
    assert active.deadline == active.started_at + timedelta(seconds=30)


async def test_scheduler_entries_and_history_are_read_back(
    broker: Broker, insp: AsyncInspector
) -> None:
    now = await broker.now()
    entry = SchedulerEntryInfo(
        id="e1",
        spec="@every 30s",
        task_type="report",
        payload=b"{}",
        options={"queue": "q"},
        next_enqueue_at=now + 30_000,
        scheduler_id="sched-1",
    )
    await broker.write_scheduler_entries("sched-1", [entry], ttl=60_000)
    for i in range(5):
        await broker.record_scheduler_event("e1", SchedulerEvent(f"t{i}", now + i))
    (read,) = await insp.scheduler_entries()
    assert (read.id, read.spec, read.task_type, read.prev_enqueue_at) == (
        "e1",
        "@every 30s",
        "report",
        None,
    )
    history = await insp.scheduler_history("e1", page=2, page_size=2)
    assert [e.task_id for e in history] == ["t2", "t1"]
    with pytest.raises(InvalidArgumentError):
        await insp.scheduler_history("")


async def test_cluster_location_needs_a_cluster_broker(insp: AsyncInspector) -> None:
    with pytest.raises(BrokerError, match=r"(?i)cluster"):
        await insp.cluster_location("q")


@pytest.mark.redis
async def test_cluster_location_names_the_slot_and_nodes_of_a_queue(
    request: pytest.FixtureRequest,
) -> None:
    pytest.importorskip("taskq.brokers.redis")
    from redis.crc import key_slot

    cluster = request.getfixturevalue("redis_cluster")
    async with AsyncInspector(cluster.url) as insp:
        await insp.broker.enqueue(msg("p1", "clq"))
        location = await insp.cluster_location("clq")
        assert location.queue == "clq"
        assert location.slot == key_slot(b"{clq}")
        assert await insp.cluster_key_slot("clq") == location.slot
        assert location.nodes
        node_ports = {str(port) for port in cluster.ports}
        assert {n.rsplit(":", 1)[1] for n in location.nodes} <= node_ports


async def test_cluster_location_uses_the_brokers_cluster_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = InMemoryBroker()

    async def cluster_info(queue: str) -> ClusterSlotInfo:
        return ClusterSlotInfo(queue, 1234, ["10.0.0.1:7000", "10.0.0.2:7001"])

    monkeypatch.setattr(broker, "cluster_info", cluster_info, raising=False)
    insp = AsyncInspector(broker)
    assert await insp.cluster_location("q") == QueueLocation(
        "q", 1234, ("10.0.0.1:7000", "10.0.0.2:7001")
    )
    assert await insp.cluster_key_slot("q") == 1234
    assert await insp.cluster_nodes("q") == ("10.0.0.1:7000", "10.0.0.2:7001")


# --------------------------------------------------------------------------- sync twin


def test_sync_inspector_wraps_the_async_one() -> None:
    broker = InMemoryBroker()
    with taskq.Client(broker) as client:
        client.enqueue(taskq.Task("ping", b"x"), queue="q", task_id="p1")
    with Inspector(broker) as insp:
        assert insp.queues() == ["q"]
        assert insp.get_queue_info("q").pending == 1
        assert [t.id for t in insp.list_pending_tasks("q")] == ["p1"]
        insp.pause_queue("q")
        assert insp.get_queue_info("q").paused
        assert insp.archive_all_pending_tasks("q") == 1
        assert insp.run_all_archived_tasks("q") == 1
        assert insp.cancel_processing("p1", "q") is TaskState.PENDING
        assert insp.delete_all_archived_tasks("q") == 1
        insp.delete_queue("q")
        assert insp.queues() == []
        with pytest.raises(QueueNotFoundError):
            insp.get_queue_info("q")


def test_sync_inspector_built_from_a_url_owns_its_broker() -> None:
    insp = Inspector("memory://")
    assert isinstance(insp.broker, InMemoryBroker)
    assert insp.queues() == []
    insp.close()
    assert "InMemoryBroker" in repr(insp)
