"""Unique tasks and task ids, end to end: client, broker, worker (in-memory broker)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from taskq.brokers.memory import InMemoryBroker
from taskq.client import AsyncClient, Client
from taskq.errors import DuplicateTaskError, SkipRetry, TaskIDConflictError
from taskq.mux import Context, ServeMux
from taskq.task import Task, TaskMessage, TaskState
from taskq.testing import FakeClock
from tests.unit._runtime import serving, wait_until

HOUR = timedelta(hours=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_broker(clock: FakeClock) -> InMemoryBroker:
    return InMemoryBroker(clock=clock)


@pytest.fixture
def aclient(fake_broker: InMemoryBroker, clock: FakeClock) -> AsyncClient:
    return AsyncClient(fake_broker, clock=clock)


# ---------------------------------------------------------------- the lock itself (fake clock)


async def test_a_second_equal_unique_task_is_refused_while_the_lock_holds(
    aclient: AsyncClient,
) -> None:
    first = await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42", unique=HOUR))  # the option on the Task
    stats = await aclient.broker.queue_stats("default")
    assert stats.pending == 1
    assert (await aclient.broker.get_task("default", first.id)).state is TaskState.PENDING


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        (Task("email", b"43"), "default"),  # other payload
        (Task("sms", b"42"), "default"),  # other type
        (Task("email", b"42"), "other"),  # other queue
    ],
    ids=["payload", "type", "queue"],
)
async def test_uniqueness_is_per_queue_type_and_payload(
    aclient: AsyncClient, task: Task, queue: str
) -> None:
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    await aclient.enqueue(task, queue=queue, unique=HOUR)


async def test_headers_and_other_options_do_not_make_a_task_different(
    aclient: AsyncClient,
) -> None:
    await aclient.enqueue(Task("email", b"42", headers={"a": "1"}), unique=HOUR, max_retry=1)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42", headers={"a": "2"}), unique=HOUR, max_retry=9)


async def test_a_task_without_unique_is_never_refused_nor_locks(aclient: AsyncClient) -> None:
    await aclient.enqueue(Task("email", b"42"))
    await aclient.enqueue(Task("email", b"42"))
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    await aclient.enqueue(Task("email", b"42"))


async def test_the_lock_ends_with_its_ttl(aclient: AsyncClient, clock: FakeClock) -> None:
    await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))
    clock.advance(timedelta(seconds=9))
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))
    clock.advance(timedelta(seconds=1))
    await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))
    assert (await aclient.broker.queue_stats("default")).pending == 2


async def test_a_scheduled_unique_task_holds_the_lock_until_process_at_plus_ttl(
    aclient: AsyncClient, clock: FakeClock
) -> None:
    await aclient.enqueue(
        Task("email", b"42"), unique=timedelta(seconds=10), process_in=timedelta(minutes=5)
    )
    clock.advance(timedelta(minutes=5, seconds=9))
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))
    clock.advance(timedelta(seconds=1))
    await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))


async def test_a_grouped_unique_task_is_refused_while_the_lock_holds(aclient: AsyncClient) -> None:
    await aclient.enqueue(Task("email", b"42"), group="user1", unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), group="user1", unique=HOUR)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), group="user2", unique=HOUR)


async def test_deleting_the_task_releases_its_lock(aclient: AsyncClient) -> None:
    info = await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    await aclient.broker.delete_task("default", info.id)
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)


async def test_a_new_owner_keeps_its_lock_when_the_old_task_is_deleted(
    aclient: AsyncClient, clock: FakeClock
) -> None:
    old = await aclient.enqueue(Task("email", b"42"), unique=timedelta(seconds=10))
    clock.advance(timedelta(seconds=10))
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)  # the old lock expired
    await aclient.broker.delete_task("default", old.id)
    with pytest.raises(DuplicateTaskError):
        await aclient.enqueue(Task("email", b"42"), unique=HOUR)


async def test_batch_enqueue_refuses_duplicates_item_by_item(aclient: AsyncClient) -> None:
    results = await aclient.enqueue_many(
        [Task("email", b"1"), Task("email", b"1"), Task("email", b"2")], unique=HOUR
    )
    assert [type(r).__name__ for r in results] == ["TaskInfo", "DuplicateTaskError", "TaskInfo"]


# ---------------------------------------------------------------- task ids


async def test_a_task_id_used_in_the_queue_is_refused(aclient: AsyncClient) -> None:
    await aclient.enqueue(Task("email", b"1"), task_id="welcome-42")
    with pytest.raises(TaskIDConflictError):
        await aclient.enqueue(Task("other", b"2"), task_id="welcome-42")
    with pytest.raises(TaskIDConflictError):
        await aclient.enqueue(Task("other"), task_id="welcome-42", process_in=HOUR)
    await aclient.enqueue(Task("email", b"1"), task_id="welcome-42", queue="other")


async def test_a_task_id_conflicts_with_a_retained_completed_task(
    fake_broker: InMemoryBroker, aclient: AsyncClient
) -> None:
    await aclient.enqueue(Task("email"), task_id="once", retention=HOUR)
    [delivery] = await fake_broker.dequeue(["default"], count=1, lease=30_000)
    await fake_broker.complete(delivery.ref, retention=3_600_000)
    with pytest.raises(TaskIDConflictError):
        await aclient.enqueue(Task("email"), task_id="once")


async def test_an_id_conflict_wins_over_a_duplicate(aclient: AsyncClient) -> None:
    await aclient.enqueue(Task("email", b"1"), task_id="x", unique=HOUR)
    with pytest.raises(TaskIDConflictError):
        await aclient.enqueue(Task("email", b"1"), task_id="x", unique=HOUR)


# ---------------------------------------------------------------- with a worker (real time)


def test_the_lock_is_released_when_the_task_succeeds() -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    mux = ServeMux()
    done = threading.Event()

    @mux.handle("email")
    def handle(ctx: Context, task: Task) -> None:
        done.set()

    client.enqueue(Task("email", b"42"), unique=HOUR)
    with serving(broker, mux):
        assert done.wait(5)
        wait_until(lambda: asyncio.run(broker.queue_stats("default")).active == 0)
    client.enqueue(Task("email", b"42"), unique=HOUR)


def test_the_lock_is_released_when_the_task_completes_with_retention() -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    mux = ServeMux()
    mux.handle("email", lambda ctx, task: None)
    info = client.enqueue(Task("email", b"42"), unique=HOUR, retention=HOUR)
    with serving(broker, mux):
        wait_until(
            lambda: asyncio.run(broker.get_task("default", info.id)).state is TaskState.COMPLETED
        )
    client.enqueue(Task("email", b"42"), unique=HOUR)


def test_the_lock_holds_while_the_task_waits_for_a_retry() -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    mux = ServeMux()

    @mux.handle("email")
    def fail(ctx: Context, task: Task) -> None:
        raise RuntimeError("smtp down")

    info = client.enqueue(Task("email", b"42"), unique=HOUR, max_retry=3)
    with serving(broker, mux, retry_delay=lambda n, e, t: HOUR):
        wait_until(
            lambda: asyncio.run(broker.get_task("default", info.id)).state is TaskState.RETRY
        )
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("email", b"42"), unique=HOUR)


@pytest.mark.parametrize("release", [True, False], ids=["released", "kept"])
def test_archiving_releases_the_lock_unless_configured_not_to(release: bool) -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    mux = ServeMux()

    @mux.handle("email")
    def give_up(ctx: Context, task: Task) -> None:
        raise SkipRetry("bad address")

    info = client.enqueue(Task("email", b"42"), unique=HOUR)
    with serving(broker, mux, release_unique_on_archive=release):
        wait_until(
            lambda: asyncio.run(broker.get_task("default", info.id)).state is TaskState.ARCHIVED
        )
    if release:
        client.enqueue(Task("email", b"42"), unique=HOUR)
    else:
        with pytest.raises(DuplicateTaskError):
            client.enqueue(Task("email", b"42"), unique=HOUR)


async def test_deleting_all_pending_tasks_releases_their_locks(aclient: AsyncClient) -> None:
    await aclient.enqueue(Task("email", b"1"), unique=HOUR)
    await aclient.enqueue(Task("email", b"2"), unique=HOUR, process_in=HOUR)
    assert await aclient.broker.delete_all("default", TaskState.PENDING) == 1
    assert await aclient.broker.delete_all("default", TaskState.SCHEDULED) == 1
    await aclient.enqueue(Task("email", b"1"), unique=HOUR)
    await aclient.enqueue(Task("email", b"2"), unique=HOUR)


async def test_archiving_by_hand_releases_the_lock(aclient: AsyncClient) -> None:
    info = await aclient.enqueue(Task("email", b"42"), unique=HOUR)
    await aclient.broker.archive_task("default", info.id)
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)


async def test_cancelling_a_task_before_it_runs_releases_the_lock(aclient: AsyncClient) -> None:
    info = await aclient.enqueue(Task("email", b"42"), unique=HOUR, process_in=HOUR)
    assert await aclient.broker.request_cancel(info.id) is TaskState.SCHEDULED
    await aclient.enqueue(Task("email", b"42"), unique=HOUR)


async def test_aggregating_a_group_releases_its_members_locks(
    fake_broker: InMemoryBroker, aclient: AsyncClient
) -> None:
    await aclient.enqueue(Task("email", b"42"), group="user1", unique=HOUR)
    set_id = await fake_broker.aggregation_check("default", "user1", grace_period=0)
    assert set_id is not None
    digest = TaskMessage(id="digest", type="digest", payload=b"", queue="default")
    assert await fake_broker.finish_aggregation("default", "user1", set_id, digest)
    await aclient.enqueue(Task("email", b"42"), group="user1", unique=HOUR)
