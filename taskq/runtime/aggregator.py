"""Group aggregation: turn each ready group of ``aggregating`` tasks into one task.

A task enqueued with ``group="user1:email"`` waits in its queue's group. The
:class:`Aggregator` of every server that serves the queue checks its groups;
a group is ready when it holds ``max_size`` tasks, when its oldest task is
``max_delay`` old, or when no task has joined it for ``grace_period``. The
broker then moves the ready members into an aggregation set; the user's
aggregator function turns them into one task; and ``finish_aggregation``
enqueues that task and deletes the set **in one atomic step** — so a crash at
any point yields either the old set (reclaimed later and aggregated again) or
the one aggregated task, never both and never two aggregated tasks.

A set whose aggregation failed (the function raised, returned something that
is not a Task, or its server died) is left alone; after ``reclaim_after`` any
server returns its members to their group, which is then aggregated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol

import attrs

from taskq._logging import log_failure
from taskq._time import Clock, dt_to_ms, td_to_ms
from taskq.brokers.base import Broker
from taskq.errors import InvalidArgumentError
from taskq.task import DEFAULT_MAX_RETRY, Task, TaskMessage

__all__ = [
    "DEFAULT_RECLAIM_AFTER",
    "Aggregator",
    "AggregatorConfig",
    "GroupAggregateFunc",
    "GroupLimits",
    "SupportsAggregate",
]

DEFAULT_RECLAIM_AFTER = timedelta(minutes=2)
_MAX_CHECK_INTERVAL_MS = 1000
_MIN_CHECK_INTERVAL_MS = 20
_RECLAIM_EVERY_MS = 30_000
_MAX_SETS_PER_PASS = 100

GroupAggregateFunc = Callable[[str, list[Task]], Task | Awaitable[Task]]
"""``fn(group, tasks) -> Task``: a plain function or a coroutine function."""


class SupportsAggregate(Protocol):
    """An object whose ``aggregate(group, tasks)`` returns the one task replacing ``tasks``."""

    def aggregate(self, group: str, tasks: list[Task]) -> Task | Awaitable[Task]:
        """Return the task that replaces ``tasks`` (the members of ``group``, oldest first)."""
        ...


def _check_limits(
    grace: timedelta | None, max_delay: timedelta | None, max_size: int | None, where: str
) -> None:
    if grace is not None and td_to_ms(grace, name="group_grace_period") <= 0:
        raise InvalidArgumentError(f"{where}group_grace_period must be positive, got {grace!r}")
    if max_delay is not None:
        td_to_ms(max_delay, name="group_max_delay")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0
    ):
        raise InvalidArgumentError(f"{where}group_max_size must be an int >= 0, got {max_size!r}")


@attrs.frozen
class GroupLimits:
    """Per-queue overrides of the server-wide group limits (None: use the server's).

    Attributes:
        grace_period: aggregate once no task has joined the group for this long.
        max_delay: aggregate once the group's oldest task is this old.
        max_size: aggregate as soon as the group holds this many tasks (and
            at most this many per aggregated task); 0 means no limit.

    Raises:
        InvalidArgumentError: a limit is negative (or the grace period is 0).
    """

    grace_period: timedelta | None = None
    max_delay: timedelta | None = None
    max_size: int | None = None

    def __attrs_post_init__(self) -> None:
        _check_limits(self.grace_period, self.max_delay, self.max_size, "GroupLimits.")


class AggregatorConfig(Protocol):
    """The slice of :class:`taskq.Config` the aggregator reads."""

    @property
    def group_aggregator(self) -> GroupAggregateFunc | SupportsAggregate | None: ...

    @property
    def group_grace_period(self) -> timedelta: ...

    @property
    def group_max_delay(self) -> timedelta | None: ...

    @property
    def group_max_size(self) -> int: ...

    @property
    def group_limits(self) -> Mapping[str, GroupLimits]: ...

    @property
    def group_reclaim_after(self) -> timedelta: ...


@attrs.frozen
class _Limits:
    grace_ms: int
    max_delay_ms: int
    max_size: int


class Aggregator:
    """The runtime component that aggregates the groups of a server's queues.

    Args:
        broker: the broker (only its group methods are used).
        clock: the time source for ``enqueued_at`` of aggregated tasks.
        queues: the queues whose groups this server aggregates.
        config: the server's :class:`taskq.Config` (group_* fields).
        logger: where errors and aggregations are logged.
        check_interval: how often groups are checked (default: the smallest
            grace period, at most 1 s).

    Raises:
        InvalidArgumentError: no aggregator is configured, or a limit is invalid.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        clock: Clock,
        queues: Sequence[str],
        config: AggregatorConfig,
        logger: logging.Logger,
        check_interval: timedelta | None = None,
    ) -> None:
        target = config.group_aggregator
        if target is None:
            raise InvalidArgumentError("the Aggregator needs config.group_aggregator")
        aggregate = getattr(target, "aggregate", target)
        if not callable(aggregate):
            raise InvalidArgumentError(
                "group_aggregator must be fn(group, tasks) -> Task or have .aggregate"
            )
        self._aggregate: Callable[[str, list[Task]], Any] = aggregate
        self._broker = broker
        self._clock = clock
        self._queues = list(dict.fromkeys(queues))
        self._logger = logger
        _check_limits(
            config.group_grace_period, config.group_max_delay, config.group_max_size, "Config."
        )
        base = _Limits(
            grace_ms=td_to_ms(config.group_grace_period),
            max_delay_ms=td_to_ms(config.group_max_delay) if config.group_max_delay else 0,
            max_size=config.group_max_size,
        )
        self._limits = {q: self._merge(base, config.group_limits.get(q)) for q in self._queues}
        self._reclaim_after_ms = td_to_ms(config.group_reclaim_after, name="group_reclaim_after")
        if check_interval is not None:
            interval = td_to_ms(check_interval, name="check_interval")
        else:
            smallest = min((lim.grace_ms for lim in self._limits.values()), default=0)
            interval = min(smallest or _MAX_CHECK_INTERVAL_MS, _MAX_CHECK_INTERVAL_MS)
        self._interval_ms = max(interval, _MIN_CHECK_INTERVAL_MS)
        # Look for stale sets often enough that one is redone soon after it
        # became stale, without scanning every check.
        self._reclaim_every_ms = max(
            self._interval_ms, min(_RECLAIM_EVERY_MS, self._reclaim_after_ms // 2)
        )

    @staticmethod
    def _merge(base: _Limits, override: GroupLimits | None) -> _Limits:
        if override is None:
            return base
        return _Limits(
            grace_ms=(
                td_to_ms(override.grace_period)
                if override.grace_period is not None
                else base.grace_ms
            ),
            max_delay_ms=(
                td_to_ms(override.max_delay)
                if override.max_delay is not None
                else base.max_delay_ms
            ),
            max_size=override.max_size if override.max_size is not None else base.max_size,
        )

    def limits(self, queue: str) -> tuple[int, int, int]:
        """The effective (grace ms, max delay ms, max size) of ``queue``."""
        lim = self._limits[queue]
        return lim.grace_ms, lim.max_delay_ms, lim.max_size

    async def run(self, stop: asyncio.Event) -> None:
        """Check and aggregate groups until ``stop`` is set.

        Stale sets (left by a crashed server or a failed aggregation) are
        returned to their groups at start-up and then every
        ``group_reclaim_after / 2`` (at most every 30 s).
        """
        next_reclaim = 0
        while not stop.is_set():
            if self._clock.now_ms() >= next_reclaim:
                await self.reclaim_stale()
                next_reclaim = self._clock.now_ms() + self._reclaim_every_ms
            await self.check_once(stop)
            if stop.is_set():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_ms / 1000)

    async def reclaim_stale(self) -> int:
        """Return members of sets older than ``group_reclaim_after`` to their groups."""
        moved = 0
        for queue in self._queues:
            try:
                n = await self._broker.reclaim_stale_aggregation_sets(
                    queue, older_than=self._reclaim_after_ms
                )
            except Exception:
                log_failure(self._logger, "queue %r: reclaiming stale sets failed", queue)
                continue
            if n:
                self._logger.warning(
                    "queue %r: returned %d task(s) of unfinished aggregations to their groups",
                    queue,
                    n,
                )
            moved += n
        return moved

    async def check_once(self, stop: asyncio.Event | None = None) -> int:
        """Check every group of every queue once; return how many aggregated tasks were made.

        A group bigger than ``max_size`` is aggregated in several tasks in the
        same pass while it stays ready.
        """
        made = 0
        for queue in self._queues:
            try:
                groups = await self._broker.groups(queue)
            except Exception:
                log_failure(self._logger, "queue %r: listing groups failed", queue)
                continue
            for info in groups:
                if stop is not None and stop.is_set():
                    return made
                made += await self._drain_group(queue, info.group)
        return made

    async def _drain_group(self, queue: str, group: str) -> int:
        grace, max_delay, max_size = self.limits(queue)
        made = 0
        for _ in range(_MAX_SETS_PER_PASS):
            try:
                set_id = await self._broker.aggregation_check(
                    queue, group, grace_period=grace, max_delay=max_delay, max_size=max_size
                )
            except Exception:
                log_failure(
                    self._logger, "queue %r group %r: aggregation check failed", queue, group
                )
                break
            if set_id is None or not await self._aggregate_set(queue, group, set_id):
                break
            made += 1
        return made

    async def _aggregate_set(self, queue: str, group: str, set_id: str) -> bool:
        try:
            messages = await self._broker.read_aggregation_set(queue, group, set_id)
            if not messages:
                return False
            result = await self._call(group, [m.to_task() for m in messages])
            message = self._message(queue, group, result)
            finished = await self._broker.finish_aggregation(queue, group, set_id, message)
        except Exception:
            self._logger.exception(
                "queue %r group %r: aggregation failed; its tasks are kept and will be "
                "aggregated again in %d ms",
                queue,
                group,
                self._reclaim_after_ms,
            )
            return False
        if finished:
            self._logger.info(
                "queue %r group %r: %d task(s) aggregated into task %s (%s)",
                queue,
                group,
                len(messages),
                message.id,
                message.type,
            )
        return finished

    async def _call(self, group: str, tasks: list[Task]) -> object:
        if inspect.iscoroutinefunction(self._aggregate):
            return await self._aggregate(group, tasks)
        # A plain function may block (I/O, CPU): keep the server's event loop free.
        result = await asyncio.to_thread(self._aggregate, group, tasks)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _message(self, queue: str, group: str, result: object) -> TaskMessage:
        if not isinstance(result, Task):
            raise InvalidArgumentError(
                f"the group aggregator returned {type(result).__name__}, not a taskq.Task"
            )
        if result.max_retry is not None and result.max_retry < 0:
            raise InvalidArgumentError(
                f"the aggregated task's max_retry must be >= 0, got {result.max_retry}"
            )
        ignored = [
            name
            for name in ("group", "unique", "task_id", "process_at", "process_in")
            if getattr(result, name) is not None
        ]
        if result.queue is not None and result.queue != queue:
            ignored.append("queue")
        if ignored:
            self._logger.warning(
                "queue %r group %r: the aggregated task's %s option(s) are ignored; it is "
                "enqueued now, to the group's queue, with a new id",
                queue,
                group,
                ", ".join(ignored),
            )
        return TaskMessage(
            id=str(uuid.uuid4()),
            type=result.type,
            payload=result.payload,
            queue=queue,
            headers=result.headers,
            max_retry=result.max_retry if result.max_retry is not None else DEFAULT_MAX_RETRY,
            timeout=td_to_ms(result.timeout, name="timeout") if result.timeout else 0,
            deadline=dt_to_ms(result.deadline, name="deadline") if result.deadline else 0,
            retention=td_to_ms(result.retention, name="retention") if result.retention else 0,
            enqueued_at=self._clock.now_ms(),
        )
