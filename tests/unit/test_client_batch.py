"""enqueue_many's batch path: the same messages as one-by-one enqueues, built cheaper.

A batch reads the clock once, draws its ids together, resolves the call's
options once, and (from 64 tasks) builds its TaskInfos while the broker stores
the batch. These tests pin that each shortcut gives what the general path gives.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

import taskq
from taskq.brokers.base import EnqueueRequest
from taskq.brokers.memory import InMemoryBroker
from taskq.client import _OVERLAP_MIN, AsyncClient, Client, _DtCache, _new_task_id
from taskq.errors import BrokerError, PayloadTooLargeError, TaskIDConflictError
from taskq.task import Task, TaskInfo, TaskMessage, TaskState
from taskq.testing import FakeClock

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


class _SubTask(Task):
    """A Task subclass: batches send subclasses down the general path."""


def _stored(broker: InMemoryBroker, info: TaskInfo | Exception) -> TaskMessage:
    assert isinstance(info, TaskInfo), info
    message: TaskMessage = broker._queues[info.queue].tasks[info.id].msg
    return message


_SHARED: list[dict[str, Any]] = [
    {},
    {"queue": "low", "max_retry": 3},
    {"timeout": timedelta(seconds=30), "deadline": T0 + timedelta(days=1)},
    {"retention": timedelta(hours=2), "unique": timedelta(minutes=1)},
    {"group": "g", "max_retry": 0},
    {"process_in": timedelta(minutes=5)},
    {"process_at": T0 + timedelta(hours=1), "queue": "later"},
]


@pytest.mark.parametrize("rounds", [2, 13], ids=["10 tasks", "65 tasks: infos predicted"])
@pytest.mark.parametrize("options", _SHARED, ids=lambda o: ",".join(o) or "none")
async def test_a_batch_stores_the_messages_one_by_one_enqueues_store(
    options: dict[str, Any], rounds: int
) -> None:
    # The batch path copies one prototype message, plan and TaskInfo per set
    # of options and fills in each task's own fields: a field it forgets, or
    # a prototype reused for tasks with other options, shows here. From
    # _OVERLAP_MIN tasks the TaskInfos are the predicted ones.
    tasks = [
        task
        for n in (b"%d" % i for i in range(rounds))  # distinct payloads and ids
        for task in (
            Task("a", n),
            Task("b", n, {"trace": "x"}),
            Task("c", n, queue="own", max_retry=1),
            _SubTask("d", n, {"k": "v"}),
            Task("e", n, task_id=f"mine{n!r}", retention=timedelta(seconds=9)),
        )
    ]
    one_clock, many_clock = FakeClock(T0), FakeClock(T0)
    one_broker, many_broker = InMemoryBroker(clock=one_clock), InMemoryBroker(clock=many_clock)
    one = AsyncClient(one_broker, clock=one_clock)
    many = AsyncClient(many_broker, clock=many_clock)

    expected = [await one.enqueue(task, **options) for task in tasks]
    got = await many.enqueue_many(tasks, **options)

    assert (len(tasks) >= _OVERLAP_MIN) is (rounds == 13)
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, TaskInfo)
        same_id = {"id": have.id} if want.id != have.id else {}
        assert have == attrs.evolve(want, **same_id)
        assert pickle.loads(pickle.dumps(have)) == have
        assert repr(have) == repr(attrs.evolve(want, **same_id))
        assert _stored(many_broker, have) == attrs.evolve(_stored(one_broker, want), **same_id)
    assert len({info.id for info in got if isinstance(info, TaskInfo)}) == len(tasks)


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "with a hook"])
async def test_every_task_of_one_call_is_stamped_with_one_clock_reading(hooked: bool) -> None:
    class Ticking(FakeClock):
        def now_ms(self) -> int:
            self.advance(1)  # a millisecond passes at every reading
            return super().now_ms()

    clock = Ticking(T0)
    client = AsyncClient(InMemoryBroker(clock=FakeClock(T0)), clock=clock)
    if hooked:
        client.use(lambda task: task)  # hooks send every task down the general path
    tasks = [Task("t", b"%d" % i) for i in range(100)] + [Task("t", b"own", max_retry=1)]
    infos = await client.enqueue_many(tasks)
    stamps = {info.enqueued_at for info in infos if isinstance(info, TaskInfo)}
    assert len(stamps) == 1


async def test_a_payload_over_the_limit_anywhere_in_a_batch_refuses_the_whole_call() -> None:
    broker = InMemoryBroker()
    client = AsyncClient(broker, max_payload_size=10)
    tasks = [Task("t", b"ok")] * 100
    tasks[70] = Task("t", b"x" * 11)
    with pytest.raises(PayloadTooLargeError, match="11 bytes; the limit is 10"):
        await client.enqueue_many(tasks)
    assert await broker.queues() == []


def test_ids_drawn_together_are_distinct_uuid4_strings() -> None:
    seen: set[str] = set()
    for count in (0, 1, 2, 255, 256, 257, 1000):
        ids = _new_task_id.many(count)
        assert len(ids) == count
        for task_id in ids:
            parsed = uuid.UUID(task_id)
            assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, task_id)
        seen.update(ids)
    assert len(seen) == 1 + 2 + 255 + 256 + 257 + 1000 + 0


class _Scripted(InMemoryBroker):
    """Stores like InMemoryBroker, but yields to the loop in the middle and logs when."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.gate: asyncio.Future[None] | None = None
        self.answers: dict[int, TaskState | Exception] = {}
        self.cancelled = False

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        self.log.append("sent")
        try:
            if self.gate is not None:
                await self.gate
            else:
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        results = await super().enqueue_many(requests)
        for index, answer in self.answers.items():
            results[index] = answer
        self.log.append("stored")
        return results


async def test_a_large_batch_builds_its_task_infos_while_the_broker_stores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = _Scripted()
    client = AsyncClient(broker)
    predicted = AsyncClient._predicted_infos

    def logged(self: AsyncClient, plans: Any) -> list[TaskInfo]:
        broker.log.append("infos")
        return predicted(self, plans)

    monkeypatch.setattr(AsyncClient, "_predicted_infos", logged)
    infos = await client.enqueue_many([Task("t", b"%d" % i) for i in range(_OVERLAP_MIN)])
    assert broker.log == ["sent", "infos", "stored"]
    assert all(isinstance(i, TaskInfo) and i.state is TaskState.PENDING for i in infos)

    broker.log.clear()
    await client.enqueue_many([Task("t", b"%d" % i) for i in range(_OVERLAP_MIN - 1)])
    assert broker.log == ["sent", "stored"]  # a small batch waits first


async def test_items_the_broker_answers_otherwise_get_their_own_task_info() -> None:
    broker = _Scripted()
    clock = FakeClock(T0)
    client = AsyncClient(broker, clock=clock)
    conflict = TaskIDConflictError("task id 't3' already exists")
    broker.answers = {3: conflict, 5: TaskState.SCHEDULED, 7: TaskState.AGGREGATING}
    tasks = [Task("t", b"%d" % i, task_id=f"t{i}") for i in range(100)]
    got = await client.enqueue_many(tasks)

    assert got[3] is conflict
    plans = client._plans(tasks, {})
    for index in (5, 7, 8):
        info = got[index]
        assert isinstance(info, TaskInfo)
        state = broker.answers.get(index, TaskState.PENDING)
        assert isinstance(state, TaskState)
        assert info == client._info(plans[index], state, _DtCache())
    assert [i.state for i in got if isinstance(i, TaskInfo)].count(TaskState.PENDING) == 97


async def test_cancelling_a_large_batch_cancels_the_broker_call() -> None:
    broker = _Scripted()
    broker.gate = asyncio.get_running_loop().create_future()
    client = AsyncClient(broker)
    call = asyncio.ensure_future(client.enqueue_many([Task("t", b"")] * 100))
    for _ in range(3):  # the call plans, starts the broker call, and waits on the gate
        await asyncio.sleep(0)
    assert broker.log == ["sent"]
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert broker.cancelled
    assert await broker.queues() == []


async def test_a_broker_failure_in_a_large_batch_reaches_the_caller() -> None:
    class Failing(InMemoryBroker):
        async def enqueue_many(self, requests: Any) -> list[TaskState | Exception]:
            await asyncio.sleep(0.01)
            raise BrokerError("down")

    client = AsyncClient(Failing())
    with pytest.raises(BrokerError, match="down"):
        await client.enqueue_many([Task("t", b"")] * 100)


def test_the_sync_client_batch_matches_the_async_one() -> None:
    clock = FakeClock(T0)
    broker = InMemoryBroker(clock=clock)
    with Client(broker, clock=clock) as client:
        infos = client.enqueue_many([Task("t", b"%d" % i) for i in range(100)], max_retry=2)
    assert [i.max_retry for i in infos if isinstance(i, taskq.TaskInfo)] == [2] * 100
    assert len({i.enqueued_at for i in infos if isinstance(i, taskq.TaskInfo)}) == 1
