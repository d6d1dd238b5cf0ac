"""Client and AsyncClient: options, validation before I/O, batch enqueue, hooks, sync use."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

import taskq
from taskq.brokers.base import Broker, EnqueueRequest
from taskq.brokers.memory import InMemoryBroker
from taskq.client import AsyncClient, Client, unique_key
from taskq.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    InvalidDurationError,
    InvalidQueueNameError,
    PayloadTooLargeError,
    TaskIDConflictError,
)
from taskq.task import Task, TaskMessage, TaskState
from taskq.testing import FakeClock

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def broker(clock: FakeClock) -> InMemoryBroker:
    return InMemoryBroker(clock=clock)


@pytest.fixture
def client(broker: InMemoryBroker, clock: FakeClock) -> AsyncClient:
    return AsyncClient(broker, clock=clock)


async def test_enqueue_stores_a_pending_task_with_defaults(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    info = await client.enqueue(Task("email:welcome", b'{"user_id": 42}'))
    assert info.state is TaskState.PENDING
    assert info.queue == "default"
    assert info.max_retry == 25
    assert info.enqueued_at == T0
    stored = await broker.get_task("default", info.id)
    assert stored.payload == b'{"user_id": 42}'
    assert stored.state is TaskState.PENDING


async def test_every_option_reaches_the_stored_task(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    deadline = T0 + timedelta(days=1)
    info = await client.enqueue(
        Task("t", b"x", {"traceparent": "00-1"}),
        queue="high",
        max_retry=5,
        timeout=timedelta(seconds=30),
        deadline=deadline,
        task_id="abc",
        retention=timedelta(hours=2),
        process_in=timedelta(hours=24),
    )
    assert info.state is TaskState.SCHEDULED
    assert info.next_process_at == T0 + timedelta(hours=24)
    stored = await broker.get_task("high", "abc")
    assert (stored.max_retry, stored.timeout, stored.deadline, stored.retention) == (
        5,
        timedelta(seconds=30),
        deadline,
        timedelta(hours=2),
    )
    assert stored.headers == {"traceparent": "00-1"}
    assert stored.state is TaskState.SCHEDULED


async def test_task_options_are_defaults_that_enqueue_options_override(
    client: AsyncClient,
) -> None:
    task = Task("t", b"", queue="low", max_retry=1, process_in=timedelta(hours=1))
    info = await client.enqueue(task, queue="high", process_at=T0 - timedelta(seconds=1))
    assert info.queue == "high"
    assert info.max_retry == 1
    assert info.state is TaskState.PENDING


async def test_group_task_is_aggregating_and_future_group_task_is_scheduled(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    grouped = await client.enqueue(Task("t", b"1"), group="user1:email")
    assert grouped.state is TaskState.AGGREGATING
    assert grouped.group == "user1:email"
    later = await client.enqueue(Task("t", b"2"), group="user1:email", process_in=timedelta(1))
    assert later.state is TaskState.SCHEDULED
    assert (await broker.get_task("default", later.id)).group == "user1:email"


async def test_unique_enqueue_raises_duplicate_while_the_lock_holds(
    client: AsyncClient, clock: FakeClock
) -> None:
    await client.enqueue(Task("t", b"same"), unique=timedelta(minutes=1))
    with pytest.raises(DuplicateTaskError):
        await client.enqueue(Task("t", b"same"), unique=timedelta(minutes=1))
    other = await client.enqueue(Task("t", b"different"), unique=timedelta(minutes=1))
    assert other.state is TaskState.PENDING
    clock.advance(timedelta(minutes=1, milliseconds=1))
    again = await client.enqueue(Task("t", b"same"), unique=timedelta(minutes=1))
    assert again.state is TaskState.PENDING


def test_unique_key_names_queue_type_and_payload_digest() -> None:
    key = unique_key("q", "t", b"abc")
    assert key.startswith("q:t:") and len(key) == len("q:t:") + 64
    assert unique_key("q", "t", b"abd") != key


async def test_default_task_ids_are_distinct_uuid4_strings(client: AsyncClient) -> None:
    infos = await client.enqueue_many([Task("t", b"%d" % i) for i in range(200)])
    ids = [info.id for info in infos if isinstance(info, taskq.TaskInfo)]
    assert len(set(ids)) == 200
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, task_id)


def test_a_forked_child_does_not_hand_out_its_parents_next_task_ids() -> None:
    # Ids come from a block of random bytes drawn ahead; a child forked while
    # the block is half used must draw its own, or parent and child would give
    # the same ids to different tasks.
    from taskq.client import _new_task_id

    _new_task_id()  # the block now holds ids the parent will hand out next
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, ",".join(_new_task_id() for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split(","))
    os.waitpid(pid, 0)
    parent = {_new_task_id() for _ in range(20)}
    assert len(child) == 20 and not child & parent


async def test_task_ids_drawn_from_many_threads_are_all_distinct() -> None:
    from taskq.client import _new_task_id

    def draw() -> list[str]:
        return [_new_task_id() for _ in range(2000)]

    results = await asyncio.gather(*(asyncio.to_thread(draw) for _ in range(8)))
    assert len({i for ids in results for i in ids}) == 16_000


async def test_task_id_conflict_raises(client: AsyncClient) -> None:
    await client.enqueue(Task("t", b""), task_id="same")
    with pytest.raises(TaskIDConflictError):
        await client.enqueue(Task("t", b""), task_id="same")


class CountingBroker(InMemoryBroker):
    calls = 0

    async def enqueue(self, *args: object, **kwargs: object) -> TaskState:
        CountingBroker.calls += 1
        return await super().enqueue(*args, **kwargs)  # type: ignore[arg-type]


BAD_OPTIONS = pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"queue": ""}, InvalidQueueNameError),
        ({"queue": "a{b}"}, InvalidQueueNameError),
        ({"max_retry": -1}, InvalidArgumentError),
        ({"max_retry": True}, InvalidArgumentError),
        ({"max_retry": "3"}, InvalidArgumentError),
        ({"process_in": timedelta(seconds=-1)}, InvalidDurationError),
        ({"process_at": datetime(2030, 1, 1)}, InvalidDurationError),
        ({"deadline": datetime(2030, 1, 1)}, InvalidDurationError),
        ({"timeout": timedelta(0)}, InvalidDurationError),
        ({"timeout": 30}, InvalidDurationError),
        ({"unique": timedelta(0)}, InvalidDurationError),
        ({"task_id": ""}, InvalidArgumentError),
        ({"task_id": "a\nb"}, InvalidArgumentError),
        ({"group": ""}, InvalidArgumentError),
        ({"retention": timedelta(seconds=-5)}, InvalidDurationError),
        (
            {"process_at": T0 + timedelta(1), "process_in": timedelta(seconds=1)},
            InvalidArgumentError,
        ),
        ({"bogus": 1}, InvalidArgumentError),
    ],
)


@BAD_OPTIONS
async def test_bad_options_are_refused_before_any_broker_io(
    clock: FakeClock, options: dict[str, object], error: type[Exception]
) -> None:
    broker = CountingBroker(clock=clock)
    client = AsyncClient(broker, clock=clock)
    CountingBroker.calls = 0
    with pytest.raises(error):
        if "bogus" in options:
            await client.enqueue_many([Task("t", b"")], **options)
        else:
            await client.enqueue(Task("t", b""), **options)  # type: ignore[arg-type]
    assert CountingBroker.calls == 0
    assert await broker.queues() == []


async def test_payload_over_the_limit_is_refused(clock: FakeClock) -> None:
    client = AsyncClient(InMemoryBroker(clock=clock), clock=clock, max_payload_size=10)
    await client.enqueue(Task("t", b"x" * 10))
    with pytest.raises(PayloadTooLargeError):
        await client.enqueue(Task("t", b"x" * 11))


async def test_enqueue_many_reports_each_result_in_order(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    await client.enqueue(Task("t", b""), task_id="taken")
    tasks = [
        Task("t", b"1", task_id="a"),
        Task("t", b"2", task_id="taken"),
        Task("t", b"3", task_id="c", process_in=timedelta(minutes=5)),
    ]
    results = await client.enqueue_many(tasks, queue="default")
    assert isinstance(results[1], TaskIDConflictError)
    assert [r.state for r in results if isinstance(r, taskq.TaskInfo)] == [
        TaskState.PENDING,
        TaskState.SCHEDULED,
    ]
    assert (await broker.queue_stats("default")).size == 3


async def test_returned_task_info_is_the_stored_message_as_task_info(
    client: AsyncClient, broker: InMemoryBroker, clock: FakeClock
) -> None:
    shared = {
        "max_retry": 3,
        "timeout": timedelta(seconds=30),
        "deadline": T0 + timedelta(days=1),
        "retention": timedelta(hours=2),
        "unique": timedelta(minutes=1),
    }
    tasks = [
        Task("t", b"1", {"k": "v"}),
        Task("t", b"2", process_in=timedelta(minutes=5)),
        Task("t", b"3", group="g"),
        Task("t", b"4", process_at=T0 + timedelta(hours=1), task_id="own"),
    ]
    infos = await client.enqueue_many(tasks, **shared)
    clock.advance(timedelta(milliseconds=7))
    infos.append(await client.enqueue(Task("t", b"5"), process_in=timedelta(seconds=1)))
    infos.append(await client.enqueue(Task("t", b"6"), group="g"))
    for info in infos:
        assert isinstance(info, taskq.TaskInfo)
        message = broker._queues[info.queue].tasks[info.id].msg
        due = {
            TaskState.PENDING: message.enqueued_at,
            TaskState.AGGREGATING: 0,
            TaskState.SCHEDULED: broker._queues[info.queue].tasks[info.id].score,
        }[info.state]
        assert info == taskq.TaskInfo.from_message(message, info.state, next_process_at=due)


async def test_enqueue_many_applies_shared_options_to_every_task_without_own_options(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    tasks = [Task("t", b"1"), Task("t", b"2", queue="low"), Task("t", b"3")]
    results = await client.enqueue_many(tasks, max_retry=2, process_in=timedelta(minutes=1))
    assert [(r.queue, r.max_retry, r.state) for r in results if isinstance(r, taskq.TaskInfo)] == [
        ("default", 2, TaskState.SCHEDULED),
        ("low", 2, TaskState.SCHEDULED),
        ("default", 2, TaskState.SCHEDULED),
    ]
    assert len({r.id for r in results if isinstance(r, taskq.TaskInfo)}) == 3


async def test_enqueue_many_of_no_tasks_stores_nothing(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    assert await client.enqueue_many([], queue="low") == []
    assert await broker.queues() == []


async def test_enqueue_many_validates_every_task_before_storing_any(
    client: AsyncClient, broker: InMemoryBroker
) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.enqueue_many([Task("t", b"ok"), Task("t", b"bad", max_retry=-1)])
    assert await broker.queues() == []


async def test_hooks_run_in_order_before_every_enqueue(client: AsyncClient) -> None:
    def add_trace(task: Task) -> Task:
        return Task(task.type, task.payload, {**task.headers, "traceparent": "00-x"})

    def add_tenant(task: Task) -> Task:
        assert "traceparent" in task.headers
        return Task(task.type, task.payload, {**task.headers, "tenant": "acme"})

    client.use(add_trace)
    client.use(add_tenant)
    info = await client.enqueue(Task("t", b""))
    assert info.headers == {"traceparent": "00-x", "tenant": "acme"}


async def test_a_hook_that_returns_no_task_is_refused(client: AsyncClient) -> None:
    client.use(lambda task: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError, match="hook"):
        await client.enqueue(Task("t", b""))


def test_sync_client_accepts_a_url_and_prints_a_scheduled_task_info() -> None:
    client = taskq.Client("memory://")
    info = client.enqueue(
        taskq.Task("email:welcome", b"{}"), queue="high", process_in=timedelta(hours=1)
    )
    assert info.state is TaskState.SCHEDULED
    assert "scheduled" in repr(info)
    client.close()


def test_sync_client_works_from_many_threads_sharing_one_broker() -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                client.enqueue(Task("t", f"{n}-{i}".encode()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert asyncio.run(broker.queue_stats("default")).pending == 200


async def test_sync_client_works_inside_a_running_loops_thread_pool() -> None:
    broker = InMemoryBroker()
    client = Client(broker)
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(None, client.enqueue, Task("t", b"from-pool"))
    assert info.state is TaskState.PENDING
    assert (await broker.get_task("default", info.id)).payload == b"from-pool"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sync_client_is_usable_in_a_forked_child(tmp_path: object) -> None:
    code = (
        "import os, taskq\n"
        "c = taskq.Client('memory://')\n"
        "c.enqueue(taskq.Task('t', b'parent'))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    info = c.enqueue(taskq.Task('t', b'child'))\n"
        "    os._exit(0 if info.state.value == 'pending' else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=30, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


def test_client_defaults_to_taskq_broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQ_BROKER", "memory://")
    client = Client()
    assert isinstance(client.broker, InMemoryBroker)
    assert isinstance(client.broker, Broker)


class SpyBroker(InMemoryBroker):
    """Records every write call; ``blocking=False`` declines the blocking path."""

    def __init__(self, clock: FakeClock, *, blocking: bool) -> None:
        super().__init__(clock=clock)
        self.blocking = blocking
        self.calls: list[str] = []

    def enqueue_blocking(
        self, requests: Sequence[EnqueueRequest]
    ) -> list[TaskState | Exception] | None:  # type: ignore[override]
        self.calls.append("enqueue_blocking")
        return super().enqueue_blocking(requests) if self.blocking else None

    async def enqueue(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        self.calls.append("enqueue")
        return await super().enqueue(message, unique_ttl=unique_ttl)

    async def schedule(
        self, message: TaskMessage, process_at: int, *, unique_ttl: int = 0
    ) -> TaskState:
        self.calls.append("schedule")
        return await super().schedule(message, process_at, unique_ttl=unique_ttl)

    async def add_to_group(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        self.calls.append("add_to_group")
        return await super().add_to_group(message, unique_ttl=unique_ttl)

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        self.calls.append("enqueue_many")
        return await super().enqueue_many(requests)


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "loop-thread"])
@BAD_OPTIONS
def test_sync_client_refuses_bad_options_before_any_broker_io(
    clock: FakeClock, options: dict[str, object], error: type[Exception], blocking: bool
) -> None:
    broker = SpyBroker(clock, blocking=blocking)
    client = Client(broker, clock=clock)
    with pytest.raises(error):
        if "bogus" in options:
            client.enqueue_many([Task("t", b"")], **options)
        else:
            client.enqueue(Task("t", b""), **options)  # type: ignore[arg-type]
    with pytest.raises(error):
        client.enqueue_many([Task("t", b"ok"), Task("t", b"")], **options)
    assert broker.calls == []
    assert asyncio.run(broker.queues()) == []


@pytest.mark.parametrize(
    ("blocking", "calls"),
    [
        (True, ["enqueue_blocking"] * 4),
        (False, ["enqueue_blocking", "enqueue", "enqueue_blocking", "schedule"] * 2),
    ],
    ids=["blocking", "loop-thread"],
)
def test_sync_client_runs_hooks_once_on_the_calling_thread_and_stores_once(
    clock: FakeClock, blocking: bool, calls: list[str]
) -> None:
    broker = SpyBroker(clock, blocking=blocking)
    client = Client(broker, clock=clock)
    seen: list[threading.Thread] = []

    def hook(task: Task) -> Task:
        seen.append(threading.current_thread())
        return Task(task.type, task.payload, {"hooked": "1"})

    client.use(hook)
    infos = []
    for _ in range(2):
        infos.append(client.enqueue(Task("t", b"now")))
        infos.append(client.enqueue(Task("t", b"later"), process_in=timedelta(minutes=1)))
    assert broker.calls == calls
    assert seen == [threading.current_thread()] * 4
    assert [i.state for i in infos] == [TaskState.PENDING, TaskState.SCHEDULED] * 2
    assert all(i.headers == {"hooked": "1"} for i in infos)


def test_sync_client_raises_a_refusal_from_the_blocking_path(clock: FakeClock) -> None:
    client = Client(SpyBroker(clock, blocking=True), clock=clock)
    client.enqueue(Task("t", b"same"), task_id="x", unique=timedelta(minutes=1))
    with pytest.raises(TaskIDConflictError):
        client.enqueue(Task("t", b"other"), task_id="x")
    with pytest.raises(DuplicateTaskError):
        client.enqueue(Task("t", b"same"), unique=timedelta(minutes=1))
