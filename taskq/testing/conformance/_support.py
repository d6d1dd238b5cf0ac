"""Shared fixtures and helpers of the conformance suite.

Every helper reaches the broker only through the Broker protocol, so the suite
holds any implementation to the same contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from taskq.brokers.base import Broker, Delivery
from taskq.task import TaskMessage, TaskState
from taskq.testing.clock import FakeClock

__all__ = [
    "HOUR",
    "LEASE",
    "OTHER",
    "QUEUE",
    "A",
    "C",
    "ConformanceBase",
    "CorruptDropLease",
    "G",
    "P",
    "R",
    "S",
    "X",
    "make_message",
    "ms_of",
    "put",
    "put_in_state",
    "state_of",
    "take",
]

QUEUE = "conformance"
OTHER = "conformance-other"
LEASE = 30_000
HOUR = 3_600_000

# One letter per task state, for the tables of transitions.
P, A, S, R, X, C, G = (
    TaskState.PENDING,
    TaskState.ACTIVE,
    TaskState.SCHEDULED,
    TaskState.RETRY,
    TaskState.ARCHIVED,
    TaskState.COMPLETED,
    TaskState.AGGREGATING,
)

CorruptDropLease = Callable[[str, str], Awaitable[None]]
"""``await corrupt_drop_lease(queue, task_id)``: remove an active task's lease entry."""

_ids = itertools.count(1)


def make_message(
    task_id: str | None = None,
    *,
    queue: str = QUEUE,
    type: str = "conformance:task",
    payload: bytes = b"{}",
    **fields: Any,
) -> TaskMessage:
    """A message with a fresh id (unless given) and the given fields."""
    return TaskMessage(
        id=task_id if task_id is not None else f"task-{next(_ids)}",
        type=type,
        payload=payload,
        queue=queue,
        **fields,
    )


def ms_of(when: datetime | None) -> int:
    """Epoch ms of a TaskInfo time (which must be set)."""
    assert when is not None, "expected a time, got None"
    return round(when.timestamp() * 1000)


async def put(broker: Broker, n: int = 1, **fields: Any) -> list[TaskMessage]:
    """Enqueue ``n`` new messages (as pending, or aggregating with ``group``); return them."""
    messages = [make_message(**fields) for _ in range(n)]
    for message in messages:
        await broker.enqueue(message)
    return messages


async def take(broker: Broker, queue: str = QUEUE, *, lease: int = LEASE) -> Delivery:
    """Dequeue exactly one task from ``queue``."""
    deliveries = await broker.dequeue([queue], count=1, lease=lease)
    assert len(deliveries) == 1, f"expected one delivery from {queue!r}, got {deliveries!r}"
    return deliveries[0]


async def state_of(broker: Broker, task_id: str, queue: str = QUEUE) -> TaskState:
    """The state the broker reports for a task."""
    return (await broker.get_task(queue, task_id)).state


async def put_in_state(
    broker: Broker,
    state: TaskState,
    *,
    queue: str = QUEUE,
    unique_ttl: int = 0,
    **fields: Any,
) -> TaskMessage:
    """Create one task in ``state`` using only protocol methods.

    For ``active`` the queue must hold no other pending task. Retry and
    scheduled tasks are due one hour from now; completed ones are kept one hour.
    With ``unique_ttl`` (and a ``unique_key`` field) it takes a unique lock.
    """
    if state is TaskState.AGGREGATING:
        fields.setdefault("group", "g1")
    message = make_message(queue=queue, **fields)
    if state is TaskState.SCHEDULED:
        await broker.schedule(message, await broker.now() + HOUR, unique_ttl=unique_ttl)
        return message
    if state is TaskState.AGGREGATING:
        await broker.add_to_group(message, unique_ttl=unique_ttl)
        return message
    await broker.enqueue(message, unique_ttl=unique_ttl)
    if state is TaskState.PENDING:
        return message
    delivery = await take(broker, queue)
    assert delivery.message.id == message.id
    if state is TaskState.RETRY:
        await broker.retry(delivery.ref, delay=HOUR, error="failed once")
    elif state is TaskState.ARCHIVED:
        await broker.archive(delivery.ref, error="gave up")
    elif state is TaskState.COMPLETED:
        await broker.complete(delivery.ref, retention=HOUR)
    return message


@pytest.mark.conformance
class ConformanceBase:
    """Fixtures every conformance mixin uses.

    A subclass must define an async ``broker`` fixture built on ``clock`` and
    empty for each test. It may override ``corrupt_drop_lease`` to enable
    the tests that repair an active task which lost its lease.
    """

    @pytest.fixture
    def clock(self) -> FakeClock:
        """The suite's clock: the broker under test must take "now" from it."""
        return FakeClock()

    @pytest.fixture
    def corrupt_drop_lease(self) -> CorruptDropLease:
        """Hook: return ``async f(queue, task_id)`` that drops an active task's lease.

        Brokers that can simulate this corruption (a lease entry lost to
        eviction or a bug) override this fixture; otherwise the tests that
        need it are skipped.
        """
        pytest.skip("the broker provides no corrupt_drop_lease hook")

    @pytest.fixture
    def broker(self, clock: FakeClock) -> Broker:
        """Override in the subclass: an empty broker using ``clock``."""
        raise NotImplementedError(
            "define an async `broker` fixture in your BrokerConformance subclass"
        )
