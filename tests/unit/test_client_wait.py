"""Waiting for a task's outcome: Client.wait and AsyncClient.wait on the in-memory broker."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from datetime import timedelta

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.client import AsyncClient, Client, _Waiting
from taskq.errors import (
    InvalidArgumentError,
    InvalidDurationError,
    QueueNotFoundError,
    RevokeTask,
    TaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from taskq.mux import Context, ServeMux
from taskq.task import Task, TaskInfo, TaskState
from tests.unit._runtime import serving

KEEP = timedelta(hours=1)


class CountingBroker(InMemoryBroker):
    """An in-memory broker that counts the reads a wait makes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        self.reads += 1
        return await super().get_task(queue, task_id)


@pytest.fixture
def broker() -> CountingBroker:
    return CountingBroker()


@pytest.fixture
def client(broker: CountingBroker) -> AsyncClient:
    return AsyncClient(broker)


def _mux(**handlers: object) -> ServeMux:
    mux = ServeMux()
    for name, handler in handlers.items():
        mux.handle(name, handler)  # type: ignore[arg-type]
    return mux


async def _answer(ctx: Context, task: Task) -> None:
    await ctx.write_result(b"answer:" + task.payload)


async def _fail(ctx: Context, task: Task) -> None:
    raise ValueError("bad input")


async def test_wait_returns_the_completed_task_with_the_result_the_handler_wrote(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("answer", b"42"), retention=KEEP)
    with serving(broker, _mux(answer=_answer)):
        done = await client.wait(info, timeout=10)
    assert done.id == info.id
    assert done.state is TaskState.COMPLETED
    assert done.result == b"answer:42"
    assert done.completed_at is not None


async def test_wait_by_id_and_queue_finds_the_same_outcome(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("answer", b"7"), queue="math", retention=KEEP)
    with serving(broker, _mux(answer=_answer), queues={"math": 1}):
        done = await client.wait(info.id, queue="math", timeout=10)
    assert (done.queue, done.result) == ("math", b"answer:7")


async def test_an_archived_task_raises_task_failed_error_with_its_last_error(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("fail", b""), retention=KEEP, max_retry=0)
    with serving(broker, _mux(fail=_fail)), pytest.raises(TaskFailedError) as caught:
        await client.wait(info, timeout=10)
    failed = caught.value.info
    assert failed.state is TaskState.ARCHIVED
    assert failed.last_error.startswith("ValueError: bad input")
    assert str(caught.value) == (
        f"task {info.id!r} (fail) in queue 'default' was archived: ValueError: bad input"
    )
    assert isinstance(caught.value, taskq.TaskqError)


async def test_a_task_retried_until_it_succeeds_is_waited_through_its_retries(
    client: AsyncClient, broker: CountingBroker
) -> None:
    async def flaky(ctx: Context, task: Task) -> None:
        if ctx.retry_count < 2:
            raise RuntimeError(f"attempt {ctx.retry_count} failed")
        await ctx.write_result(b"third time")

    info = await client.enqueue(Task("flaky", b""), retention=KEEP, max_retry=5)
    with serving(broker, _mux(flaky=flaky), retry_delay=lambda n, e, t: timedelta(0)):
        done = await client.wait(info, timeout=10)
    assert (done.state, done.retried, done.result) == (TaskState.COMPLETED, 2, b"third time")
    assert done.last_error.startswith("RuntimeError: attempt 1 failed")


async def test_the_timeout_raises_wait_timeout_error_within_its_bound(
    client: AsyncClient,
) -> None:
    info = await client.enqueue(Task("nobody-serves-this", b""), retention=KEEP)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as caught:
        await client.wait(info, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.55
    assert caught.value.info.state is TaskState.PENDING
    assert caught.value.timeout == 0.3
    assert isinstance(caught.value, TimeoutError)
    assert "is still pending after waiting 0.3s" in str(caught.value)


async def test_a_zero_timeout_reads_once_and_returns_a_finished_task(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("answer", b"1"), retention=KEEP)
    with pytest.raises(WaitTimeoutError):
        await client.wait(info, timeout=timedelta(0))
    assert broker.reads == 1
    with serving(broker, _mux(answer=_answer)):
        await client.wait(info, timeout=10)
    assert (await client.wait(info, timeout=0)).result == b"answer:1"


async def test_an_unknown_id_raises_task_not_found_at_once(
    client: AsyncClient, broker: CountingBroker
) -> None:
    await client.enqueue(Task("t", b""), retention=KEEP)
    with pytest.raises(TaskNotFoundError) as caught:
        await client.wait("no-such-id", timeout=10)
    assert "no longer exists" not in str(caught.value)
    assert broker.reads == 1
    with pytest.raises(QueueNotFoundError):
        await client.wait("no-such-id", queue="no-such-queue", timeout=10)


async def test_a_task_deleted_while_waited_for_raises_task_not_found(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("t", b""), retention=KEEP)
    waiter = asyncio.ensure_future(client.wait(info, timeout=10))
    await asyncio.sleep(0.05)
    await broker.delete_task(info.queue, info.id)
    with pytest.raises(TaskNotFoundError, match="no longer exists"):
        await waiter


async def test_a_revoked_task_is_gone_so_its_wait_raises_task_not_found(
    client: AsyncClient, broker: CountingBroker
) -> None:
    async def revoke(ctx: Context, task: Task) -> None:
        raise RevokeTask()

    info = await client.enqueue(Task("revoke", b""), retention=KEEP)
    with serving(broker, _mux(revoke=revoke)), pytest.raises(TaskNotFoundError):
        await client.wait(info, timeout=10)


async def test_a_task_info_without_retention_is_refused_before_any_broker_io(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("t", b""))
    with pytest.raises(InvalidArgumentError, match="no retention"):
        await client.wait(info)
    assert broker.reads == 0


async def test_a_task_id_without_retention_is_refused_once_read(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("t", b""))
    with pytest.raises(InvalidArgumentError, match="no retention"):
        await client.wait(info.id)
    assert broker.reads == 1


async def test_an_archived_task_without_retention_still_reports_its_failure(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("t", b""))
    await broker.archive_task(info.queue, info.id)
    with pytest.raises(TaskFailedError):
        await client.wait(info.id)


async def test_a_task_in_a_group_is_refused(client: AsyncClient, broker: CountingBroker) -> None:
    info = await client.enqueue(Task("t", b""), retention=KEEP, group="g1")
    with pytest.raises(InvalidArgumentError, match="group 'g1'"):
        await client.wait(info)
    with pytest.raises(InvalidArgumentError, match="group 'g1'"):
        await client.wait(info.id)
    assert broker.reads == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"task": 42}, InvalidArgumentError),
        ({"task": ""}, InvalidArgumentError),
        ({"task": "id", "queue": "bad{queue}"}, InvalidArgumentError),
        ({"task": "id", "timeout": -1}, InvalidDurationError),
        ({"task": "id", "timeout": "5s"}, InvalidDurationError),
        ({"task": "id", "timeout": float("inf")}, InvalidDurationError),
        ({"task": "id", "poll": 0}, InvalidDurationError),
        ({"task": "id", "poll": True}, InvalidDurationError),
    ],
)
async def test_bad_arguments_are_refused_before_any_broker_io(
    client: AsyncClient, broker: CountingBroker, args: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await client.wait(**args)  # type: ignore[arg-type]
    assert broker.reads == 0


async def test_a_queue_other_than_the_task_infos_own_is_refused(client: AsyncClient) -> None:
    info = await client.enqueue(Task("t", b""), retention=KEEP)
    with pytest.raises(InvalidArgumentError, match="differs"):
        await client.wait(info, queue="other")
    with pytest.raises(WaitTimeoutError):
        await client.wait(info, queue="default", timeout=0)


async def test_cancelling_a_wait_raises_cancelled_error_and_stops_reading(
    client: AsyncClient, broker: CountingBroker
) -> None:
    info = await client.enqueue(Task("t", b""), retention=KEEP)
    waiter = asyncio.ensure_future(client.wait(info))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    reads = broker.reads
    await asyncio.sleep(0.2)
    assert broker.reads == reads


def test_pauses_start_at_5_ms_and_double_up_to_poll() -> None:
    waiting = _Waiting("id", None, None, timedelta(milliseconds=500))
    pauses = [waiting.pause() for _ in range(9)]
    assert pauses == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    short = _Waiting("id", None, None, 0.002)
    assert [short.pause() for _ in range(3)] == [0.002, 0.002, 0.002]


def test_the_last_pause_is_cut_at_the_deadline_then_the_wait_times_out() -> None:
    now = [100.0]
    info = Client(InMemoryBroker()).enqueue(Task("t", b""), retention=KEEP)
    waiting = _Waiting(info, None, 1.0, 5.0, monotonic=lambda: now[0])
    assert waiting.outcome(info) is None
    assert waiting.pause() == 0.005
    now[0] = 100.995
    assert waiting.pause() == pytest.approx(0.005)  # not the 10 ms the backoff is at
    now[0] = 101.0
    with pytest.raises(WaitTimeoutError) as caught:
        waiting.pause()
    assert (caught.value.info, caught.value.timeout) == (info, 1.0)


def test_the_sync_client_waits_from_a_plain_thread(broker: CountingBroker) -> None:
    client = Client(broker)
    info = client.enqueue(Task("answer", b"sync"), retention=KEEP)
    outcome: list[TaskInfo | BaseException] = []

    def wait() -> None:
        try:
            outcome.append(client.wait(info, timeout=10))
        except BaseException as error:  # the assertion below shows it
            outcome.append(error)

    with serving(broker, _mux(answer=_answer)):
        thread = threading.Thread(target=wait)
        thread.start()
        thread.join(15)
    assert len(outcome) == 1
    done = outcome[0]
    assert isinstance(done, TaskInfo)
    assert done.result == b"answer:sync"


def test_the_sync_client_raises_the_same_typed_errors(broker: CountingBroker) -> None:
    client = Client(broker)
    pending = client.enqueue(Task("nobody-serves-this", b""), retention=KEEP)
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        client.wait(pending.id, timeout=timedelta(milliseconds=200))
    assert 0.2 <= time.monotonic() - started < 0.45
    failing = client.enqueue(Task("fail", b""), retention=KEEP, max_retry=0)
    with serving(broker, _mux(fail=_fail)), pytest.raises(TaskFailedError):
        client.wait(failing, timeout=10)


def test_wait_errors_survive_pickling_with_their_task_info(broker: CountingBroker) -> None:
    info = Client(broker).enqueue(Task("t", b""), retention=KEEP)
    for error in (TaskFailedError(info), WaitTimeoutError(info, 1.5)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert copy.info == info
        assert str(copy) == str(error)
