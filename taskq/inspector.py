"""Read and manage queues, tasks, servers and schedulers: the (Async)Inspector.

The Inspector uses only the :class:`~taskq.brokers.base.Broker` protocol, so it
works the same on every broker (memory, SQLite, Redis standalone, Sentinel and
Cluster, third-party ones). :class:`Inspector` is the synchronous twin: each
call runs the async one on taskq's private event-loop thread.

Differences from asynq's Inspector worth knowing:

* running an archived task again (:meth:`AsyncInspector.run_task`,
  ``run_all_archived_tasks``) resets its retry count and last error, so it gets
  its full retry budget instead of being archived after one more failure;
* bulk operations (``delete_all_*``, ``run_all_*``, ``archive_all_*``) work in
  bounded chunks, so none of them blocks the broker for long; tasks added while
  one runs may be included.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final, Protocol

import attrs

from taskq._sync import run_sync
from taskq._time import ms_to_dt, ms_to_td
from taskq.brokers import base
from taskq.brokers.base import Broker, ClusterAdmin, DailyStats, GroupInfo, QueueStats
from taskq.errors import BrokerError, InvalidArgumentError, QueueNotFoundError, TaskNotFoundError
from taskq.task import TaskInfo, TaskState, validate_group_name, validate_queue_name

__all__ = [
    "MAX_PAGE_SIZE",
    "AsyncInspector",
    "DailyStats",
    "GroupInfo",
    "Inspector",
    "QueueInfo",
    "QueueLocation",
    "SchedulerEnqueueEvent",
    "SchedulerEntry",
    "ServerInfo",
    "WorkerInfo",
]

DEFAULT_PAGE_SIZE: Final = 30
MAX_PAGE_SIZE: Final = 1000
MAX_HISTORY_DAYS: Final = 3650
BULK_CHUNK: Final = 1000
"""How many tasks one broker call of a bulk operation touches at most."""

_DELETABLE = frozenset(TaskState) - {TaskState.ACTIVE}
_RUNNABLE = frozenset(
    {
        TaskState.SCHEDULED,
        TaskState.RETRY,
        TaskState.ARCHIVED,
        TaskState.COMPLETED,
        TaskState.AGGREGATING,
    }
)
_ARCHIVABLE = frozenset(
    {TaskState.PENDING, TaskState.SCHEDULED, TaskState.RETRY, TaskState.AGGREGATING}
)


# --------------------------------------------------------------------------- values


@attrs.frozen
class QueueInfo:
    """A snapshot of one queue, as :meth:`AsyncInspector.get_queue_info` returns it.

    Attributes:
        queue: the queue name.
        size: tasks in every state.
        pending, active, scheduled, retry, archived, completed, aggregating:
            how many tasks are in each state.
        groups: how many groups hold aggregating tasks.
        paused: whether dequeuing from the queue is stopped.
        latency: age of the oldest pending task (zero when none is pending).
        processed, failed: today's counts (UTC day, broker time).
        processed_total, failed_total: all-time counts.
        memory_bytes: storage the queue uses, or None where the broker cannot tell.
        timestamp: when the snapshot was taken (broker time).
    """

    queue: str
    size: int
    pending: int
    active: int
    scheduled: int
    retry: int
    archived: int
    completed: int
    aggregating: int
    groups: int
    paused: bool
    latency: timedelta
    processed: int
    failed: int
    processed_total: int
    failed_total: int
    memory_bytes: int | None
    timestamp: datetime

    @classmethod
    def from_stats(cls, stats: QueueStats) -> QueueInfo:
        """Build a QueueInfo from the broker's :class:`~taskq.brokers.base.QueueStats`."""
        return cls(
            queue=stats.queue,
            size=stats.size,
            pending=stats.pending,
            active=stats.active,
            scheduled=stats.scheduled,
            retry=stats.retry,
            archived=stats.archived,
            completed=stats.completed,
            aggregating=stats.aggregating,
            groups=stats.groups,
            paused=stats.paused,
            latency=ms_to_td(stats.latency),
            processed=stats.processed,
            failed=stats.failed,
            processed_total=stats.processed_total,
            failed_total=stats.failed_total,
            memory_bytes=stats.memory_bytes,
            timestamp=ms_to_dt(stats.timestamp),
        )

    def count(self, state: TaskState | str) -> int:
        """Return the number of tasks in ``state`` (a TaskState or its name).

        Raises:
            ValueError: ``state`` is not a task state.
        """
        return int(getattr(self, TaskState(state).value))


@attrs.frozen
class WorkerInfo:
    """A task a server is processing right now.

    Attributes:
        task_id, task_type, queue, payload: the task.
        started_at: when the attempt started.
        deadline: when the attempt must end (its timeout or deadline), if known.
        cut_off: why the attempt was cut off (``timeout``, ``deadline``,
            ``canceled``, ``lease lost``) when it has been settled but its
            handler still runs and holds a slot; "" for a running attempt.
    """

    task_id: str
    task_type: str
    queue: str
    payload: bytes
    started_at: datetime
    deadline: datetime | None
    cut_off: str = ""

    @classmethod
    def from_broker(cls, info: base.WorkerInfo) -> WorkerInfo:
        """Convert the broker's millisecond-based record."""
        return cls(
            task_id=info.task_id,
            task_type=info.task_type,
            queue=info.queue,
            payload=info.payload,
            started_at=ms_to_dt(info.started_at),
            deadline=ms_to_dt(info.deadline) if info.deadline else None,
            cut_off=info.cut_off,
        )


@attrs.frozen
class ServerInfo:
    """A live worker server and the tasks it is running.

    Attributes:
        id, host, pid: which server.
        concurrency: how many tasks it runs at once.
        queues: queue name -> priority weight.
        strict_priority: whether higher-priority queues are always drained first.
        started_at: when the server started.
        status: e.g. "active", "stopped" (stopped fetching, finishing its tasks).
        active_workers: the tasks being processed.
    """

    id: str
    host: str
    pid: int
    concurrency: int
    queues: Mapping[str, int]
    strict_priority: bool
    started_at: datetime
    status: str
    active_workers: tuple[WorkerInfo, ...]

    @classmethod
    def from_broker(cls, info: base.ServerInfo) -> ServerInfo:
        """Convert the broker's millisecond-based record."""
        return cls(
            id=info.id,
            host=info.host,
            pid=info.pid,
            concurrency=info.concurrency,
            queues=dict(info.queues),
            strict_priority=info.strict_priority,
            started_at=ms_to_dt(info.started_at),
            status=info.status,
            active_workers=tuple(WorkerInfo.from_broker(w) for w in info.active_workers),
        )


@attrs.frozen
class SchedulerEntry:
    """A periodic task registered by a live scheduler.

    Attributes:
        id: the entry id (pass it to :meth:`AsyncInspector.scheduler_history`).
        spec: the cron spec or ``@every`` interval.
        task_type, payload: the task it enqueues.
        options: its enqueue options in string form.
        next_enqueue_at: the next firing.
        prev_enqueue_at: the last firing, None before the first one.
        scheduler_id: the scheduler that published the entry.
    """

    id: str
    spec: str
    task_type: str
    payload: bytes
    options: Mapping[str, str]
    next_enqueue_at: datetime
    prev_enqueue_at: datetime | None
    scheduler_id: str

    @classmethod
    def from_broker(cls, info: base.SchedulerEntryInfo) -> SchedulerEntry:
        """Convert the broker's millisecond-based record."""
        return cls(
            id=info.id,
            spec=info.spec,
            task_type=info.task_type,
            payload=info.payload,
            options=dict(info.options),
            next_enqueue_at=ms_to_dt(info.next_enqueue_at),
            prev_enqueue_at=ms_to_dt(info.prev_enqueue_at) if info.prev_enqueue_at else None,
            scheduler_id=info.scheduler_id,
        )


@attrs.frozen
class SchedulerEnqueueEvent:
    """One task enqueued by a scheduler entry."""

    task_id: str
    enqueued_at: datetime


@attrs.frozen
class QueueLocation:
    """Where a queue lives in a Redis Cluster: its hash slot and the nodes serving it."""

    queue: str
    slot: int
    nodes: tuple[str, ...]


# --------------------------------------------------------------------------- validation


def _queue(queue: object) -> str:
    return validate_queue_name(queue)


def _task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidArgumentError("task id must be a non-empty str")
    return task_id


def _paging(page: object, page_size: object) -> tuple[int, int]:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidArgumentError(f"page must be an int >= 1, got {page!r}")
    if (
        isinstance(page_size, bool)
        or not isinstance(page_size, int)
        or not 1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise InvalidArgumentError(
            f"page_size must be an int from 1 to {MAX_PAGE_SIZE}, got {page_size!r}"
        )
    return (page - 1) * page_size, page_size


def _state(state: object, allowed: frozenset[TaskState], action: str) -> TaskState:
    try:
        value = TaskState(state)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise InvalidArgumentError(f"unknown task state {state!r} (one of: {names})") from None
    if value not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise InvalidArgumentError(f"cannot {action} {value.value} tasks (only: {names})")
    return value


def _group(group: object, state: TaskState) -> str | None:
    if group is None:
        return None
    if state is not TaskState.AGGREGATING:
        raise InvalidArgumentError("group applies only to aggregating tasks")
    return validate_group_name(group)


# --------------------------------------------------------------------------- async core


class AsyncInspector:
    """Inspect and manage queues, tasks, servers and schedulers from async code.

    Args:
        broker: a :class:`~taskq.brokers.base.Broker`, a broker URL, or None
            for ``$TASKQ_BROKER`` / the SQLite file ``taskq.db``. A broker built
            from a URL is closed by :meth:`close`; one passed in is not.

    Every method validates its arguments first and raises
    :class:`~taskq.errors.InvalidArgumentError` (before any broker I/O) for a
    bad queue name, task id, state, page or page size. Broker failures raise
    :class:`~taskq.errors.BrokerError`.
    """

    def __init__(self, broker: Broker | str | None = None) -> None:
        from taskq.client import resolve_broker

        self.broker: Broker = resolve_broker(broker)
        self._owns_broker = broker is None or isinstance(broker, str)

    def __repr__(self) -> str:
        return f"AsyncInspector({self.broker!r})"

    async def close(self) -> None:
        """Close the broker if this inspector created it from a URL."""
        if self._owns_broker:
            await self.broker.close()

    async def __aenter__(self) -> AsyncInspector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- queues

    async def queues(self) -> list[str]:
        """Every known queue, sorted."""
        return await self.broker.queues()

    async def get_queue_info(self, queue: str) -> QueueInfo:
        """A snapshot of ``queue``: sizes by state, paused, latency, counts, memory.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        return QueueInfo.from_stats(await self.broker.queue_stats(_queue(queue)))

    async def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Daily processed and failed counts of ``queue`` for the last ``days`` days, newest first.

        Raises:
            InvalidArgumentError: ``days`` is not from 1 to 3650.
            QueueNotFoundError: the queue is unknown.
        """
        name = _queue(queue)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_HISTORY_DAYS:
            raise InvalidArgumentError(f"days must be an int from 1 to {MAX_HISTORY_DAYS}")
        await self._require_queue(name)
        return await self.broker.history(name, days)

    async def groups(self, queue: str) -> list[GroupInfo]:
        """The groups of ``queue`` holding aggregating tasks, with their sizes.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        name = _queue(queue)
        await self._require_queue(name)
        return await self.broker.groups(name)

    async def pause_queue(self, queue: str) -> None:
        """Stop workers from dequeuing ``queue``; enqueueing and forwarding go on.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        await self.broker.pause_queue(_queue(queue))

    async def unpause_queue(self, queue: str) -> None:
        """Let workers dequeue ``queue`` again.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        await self.broker.unpause_queue(_queue(queue))

    async def delete_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove ``queue`` and everything stored for it.

        Without ``force`` the queue must be empty; with ``force`` it may hold
        tasks, but none may be active (stop its workers first).

        Raises:
            QueueNotFoundError: the queue is unknown.
            QueueNotEmptyError: it holds tasks (without ``force``) or active tasks.
        """
        await self.broker.remove_queue(_queue(queue), force=bool(force))

    async def cluster_location(self, queue: str) -> QueueLocation:
        """The Redis Cluster hash slot of ``queue`` and the nodes serving it.

        Raises:
            BrokerError: the broker is not a Redis Cluster (it does not
                implement :class:`~taskq.brokers.base.ClusterAdmin`).
        """
        name = _queue(queue)
        if not isinstance(self.broker, ClusterAdmin):
            raise BrokerError(
                f"{type(self.broker).__name__} has no cluster topology "
                "(cluster_location needs a Redis Cluster broker)"
            )
        info = await self.broker.cluster_info(name)
        return QueueLocation(queue=info.queue, slot=info.slot, nodes=tuple(info.nodes))

    async def cluster_key_slot(self, queue: str) -> int:
        """The Redis Cluster hash slot of ``queue`` (see :meth:`cluster_location`)."""
        return (await self.cluster_location(queue)).slot

    async def cluster_nodes(self, queue: str) -> tuple[str, ...]:
        """The ``host:port`` of the nodes serving ``queue``, primary first."""
        return (await self.cluster_location(queue)).nodes

    async def _require_queue(self, queue: str) -> None:
        if queue not in await self.broker.queues():
            raise QueueNotFoundError(f"queue {queue!r} does not exist")

    # ----------------------------------------------------------------- listing

    async def list_tasks(
        self,
        queue: str,
        state: TaskState | str,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        group: str | None = None,
    ) -> list[TaskInfo]:
        """A page of the tasks of ``queue`` in ``state`` (the ``list_*_tasks`` methods' core).

        Order: pending and active FIFO; scheduled and retry by due time;
        archived and completed by time of entry; aggregating oldest first
        (only ``group``'s when given).

        Args:
            page: 1-based page number.
            page_size: tasks per page, 1 to 1000.
            group: only for ``aggregating``: restrict to one group.

        Raises:
            InvalidArgumentError: bad state, page or page size, or a group with
                another state than aggregating.
            QueueNotFoundError: the queue is unknown.
        """
        name = _queue(queue)
        value = _state(state, frozenset(TaskState), "list")
        offset, limit = _paging(page, page_size)
        group_name = _group(group, value)
        return await self.broker.list_tasks(
            name, value, offset=offset, limit=limit, group=group_name
        )

    async def list_pending_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of pending tasks, oldest first (see :meth:`list_tasks`)."""
        return await self.list_tasks(queue, TaskState.PENDING, page=page, page_size=page_size)

    async def list_active_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of active tasks; ``is_orphaned`` marks those whose lease expired."""
        return await self.list_tasks(queue, TaskState.ACTIVE, page=page, page_size=page_size)

    async def list_scheduled_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of scheduled tasks, soonest due first."""
        return await self.list_tasks(queue, TaskState.SCHEDULED, page=page, page_size=page_size)

    async def list_retry_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of tasks waiting to be retried, soonest due first."""
        return await self.list_tasks(queue, TaskState.RETRY, page=page, page_size=page_size)

    async def list_archived_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of archived (dead) tasks."""
        return await self.list_tasks(queue, TaskState.ARCHIVED, page=page, page_size=page_size)

    async def list_completed_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of completed tasks still within their retention."""
        return await self.list_tasks(queue, TaskState.COMPLETED, page=page, page_size=page_size)

    async def list_aggregating_tasks(
        self,
        queue: str,
        group: str | None = None,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> list[TaskInfo]:
        """A page of aggregating tasks, of one ``group`` or of all groups."""
        return await self.list_tasks(
            queue, TaskState.AGGREGATING, page=page, page_size=page_size, group=group
        )

    async def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        """One task, whatever its state.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
        """
        return await self.broker.get_task(_queue(queue), _task_id(task_id))

    # ----------------------------------------------------------------- one task

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active (releases its unique lock).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (the task is active).
        """
        await self.broker.delete_task(_queue(queue), _task_id(task_id))

    async def run_task(self, queue: str, task_id: str) -> None:
        """Make a scheduled, retry, archived, completed or aggregating task pending now.

        An archived task's retry count and last error are reset, so it gets
        its full retry budget again.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (pending or active).
        """
        await self.broker.run_task(_queue(queue), _task_id(task_id))

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a pending, scheduled, retry or aggregating task (it will not run).

        Releases its unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active, archived, completed).
        """
        await self.broker.archive_task(_queue(queue), _task_id(task_id))

    async def cancel_processing(self, task_id: str, queue: str | None = None) -> TaskState:
        """Cancel a task anywhere in the fleet.

        An active task is told to stop (its handler sees ``ctx.cancelled``);
        the request is persisted, so a worker that misses the notification
        still sees it. A task that has not started yet is archived with the
        reason "canceled" so it never runs, and its unique lock is released.

        Args:
            task_id: the task.
            queue: its queue; None searches every queue.

        Returns:
            the state the task was in when cancelled.

        Raises:
            TaskNotFoundError: no such task.
        """
        tid = _task_id(task_id)
        name = None if queue is None else _queue(queue)
        state = await self.broker.request_cancel(tid, name)
        if state is None:
            where = f"queue {name!r}" if name is not None else "any queue"
            raise TaskNotFoundError(f"task {tid!r} not found in {where}")
        return state

    # ----------------------------------------------------------------- bulk

    async def delete_all_tasks(
        self, queue: str, state: TaskState | str, *, group: str | None = None
    ) -> int:
        """Delete every task of ``queue`` in ``state`` (not active), in chunks; returns how many.

        Raises:
            InvalidArgumentError: ``state`` is active or unknown.
            QueueNotFoundError: the queue is unknown.
        """
        value = _state(state, _DELETABLE, "delete")
        return await self._bulk(self.broker.delete_all, queue, value, group)

    async def run_all_tasks(
        self, queue: str, state: TaskState | str, *, group: str | None = None
    ) -> int:
        """Make every task of ``queue`` in ``state`` pending now, in chunks; returns how many.

        Archived tasks get their retry count reset (see :meth:`run_task`).

        Raises:
            InvalidArgumentError: ``state`` is pending, active or unknown.
            QueueNotFoundError: the queue is unknown.
        """
        value = _state(state, _RUNNABLE, "run")
        return await self._bulk(self.broker.run_all, queue, value, group)

    async def archive_all_tasks(
        self, queue: str, state: TaskState | str, *, group: str | None = None
    ) -> int:
        """Archive every task of ``queue`` in ``state``, in chunks; returns how many.

        Releases each task's unique lock (if the task still owns it).

        Raises:
            InvalidArgumentError: ``state`` is active, archived, completed or unknown.
            QueueNotFoundError: the queue is unknown.
        """
        value = _state(state, _ARCHIVABLE, "archive")
        return await self._bulk(self.broker.archive_all, queue, value, group)

    async def _bulk(
        self, operation: _BulkOp, queue: str, state: TaskState, group: str | None
    ) -> int:
        name = _queue(queue)
        group_name = _group(group, state)
        await self._require_queue(name)
        total = 0
        while True:
            done = await operation(name, state, group=group_name, limit=BULK_CHUNK)
            if done <= 0:
                return total
            total += done

    async def delete_all_pending_tasks(self, queue: str) -> int:
        """Delete every pending task; returns how many."""
        return await self.delete_all_tasks(queue, TaskState.PENDING)

    async def delete_all_scheduled_tasks(self, queue: str) -> int:
        """Delete every scheduled task; returns how many."""
        return await self.delete_all_tasks(queue, TaskState.SCHEDULED)

    async def delete_all_retry_tasks(self, queue: str) -> int:
        """Delete every task waiting for a retry; returns how many."""
        return await self.delete_all_tasks(queue, TaskState.RETRY)

    async def delete_all_archived_tasks(self, queue: str) -> int:
        """Delete every archived task; returns how many."""
        return await self.delete_all_tasks(queue, TaskState.ARCHIVED)

    async def delete_all_completed_tasks(self, queue: str) -> int:
        """Delete every completed task; returns how many."""
        return await self.delete_all_tasks(queue, TaskState.COMPLETED)

    async def delete_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Delete every aggregating task (of ``group``, or of all groups); returns how many."""
        return await self.delete_all_tasks(queue, TaskState.AGGREGATING, group=group)

    async def run_all_scheduled_tasks(self, queue: str) -> int:
        """Make every scheduled task pending now; returns how many."""
        return await self.run_all_tasks(queue, TaskState.SCHEDULED)

    async def run_all_retry_tasks(self, queue: str) -> int:
        """Make every retry task pending now; returns how many."""
        return await self.run_all_tasks(queue, TaskState.RETRY)

    async def run_all_archived_tasks(self, queue: str) -> int:
        """Make every archived task pending with a fresh retry budget; returns how many."""
        return await self.run_all_tasks(queue, TaskState.ARCHIVED)

    async def run_all_completed_tasks(self, queue: str) -> int:
        """Run every completed task again; returns how many."""
        return await self.run_all_tasks(queue, TaskState.COMPLETED)

    async def run_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Make every aggregating task (of ``group``, or all) pending, unaggregated."""
        return await self.run_all_tasks(queue, TaskState.AGGREGATING, group=group)

    async def archive_all_pending_tasks(self, queue: str) -> int:
        """Archive every pending task; returns how many."""
        return await self.archive_all_tasks(queue, TaskState.PENDING)

    async def archive_all_scheduled_tasks(self, queue: str) -> int:
        """Archive every scheduled task; returns how many."""
        return await self.archive_all_tasks(queue, TaskState.SCHEDULED)

    async def archive_all_retry_tasks(self, queue: str) -> int:
        """Archive every retry task; returns how many."""
        return await self.archive_all_tasks(queue, TaskState.RETRY)

    async def archive_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Archive every aggregating task (of ``group``, or of all groups); returns how many."""
        return await self.archive_all_tasks(queue, TaskState.AGGREGATING, group=group)

    # ----------------------------------------------------------------- fleet

    async def servers(self) -> list[ServerInfo]:
        """Live worker servers with the tasks they are running, sorted by host and pid."""
        found = [ServerInfo.from_broker(s) for s in await self.broker.servers()]
        return sorted(found, key=lambda s: (s.host, s.pid, s.id))

    async def scheduler_entries(self) -> list[SchedulerEntry]:
        """Periodic-task entries of every live scheduler, soonest next firing first."""
        found = [SchedulerEntry.from_broker(e) for e in await self.broker.scheduler_entries()]
        return sorted(found, key=lambda e: (e.next_enqueue_at, e.id))

    async def scheduler_history(
        self, entry_id: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[SchedulerEnqueueEvent]:
        """A page of the tasks a scheduler entry enqueued, newest first.

        Raises:
            InvalidArgumentError: bad entry id, page or page size.
        """
        if not isinstance(entry_id, str) or not entry_id:
            raise InvalidArgumentError("entry id must be a non-empty str")
        offset, limit = _paging(page, page_size)
        events = await self.broker.scheduler_events(entry_id, limit=offset + limit)
        return [
            SchedulerEnqueueEvent(e.task_id, ms_to_dt(e.enqueued_at))
            for e in events[offset : offset + limit]
        ]


class _BulkOp(Protocol):
    """The shape of the broker's chunked bulk methods (delete_all, run_all, archive_all)."""

    async def __call__(
        self, queue: str, state: TaskState, *, group: str | None = ..., limit: int = ...
    ) -> int: ...


# --------------------------------------------------------------------------- sync twin


class Inspector:
    """Inspect and manage queues, tasks, servers and schedulers from synchronous code.

    A thin wrapper over :class:`AsyncInspector`: every call runs on taskq's
    private event-loop thread. Same arguments, results and errors; see the
    async method of the same name for details.

    Args:
        broker: a :class:`~taskq.brokers.base.Broker`, a broker URL, or None
            for ``$TASKQ_BROKER`` / the SQLite file ``taskq.db``.
    """

    def __init__(self, broker: Broker | str | None = None) -> None:
        self._async = AsyncInspector(broker)

    def __repr__(self) -> str:
        return f"Inspector({self._async.broker!r})"

    @property
    def broker(self) -> Broker:
        """The broker being inspected."""
        return self._async.broker

    def close(self) -> None:
        """Close the broker if this inspector created it from a URL."""
        run_sync(self._async.close())

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def queues(self) -> list[str]:
        """Every known queue, sorted."""
        return run_sync(self._async.queues())

    def get_queue_info(self, queue: str) -> QueueInfo:
        """A snapshot of ``queue``; see :meth:`AsyncInspector.get_queue_info`."""
        return run_sync(self._async.get_queue_info(queue))

    def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Daily processed/failed counts, newest first; see :meth:`AsyncInspector.history`."""
        return run_sync(self._async.history(queue, days))

    def groups(self, queue: str) -> list[GroupInfo]:
        """Groups of aggregating tasks; see :meth:`AsyncInspector.groups`."""
        return run_sync(self._async.groups(queue))

    def pause_queue(self, queue: str) -> None:
        """Stop dequeuing ``queue``; see :meth:`AsyncInspector.pause_queue`."""
        run_sync(self._async.pause_queue(queue))

    def unpause_queue(self, queue: str) -> None:
        """Resume dequeuing ``queue``; see :meth:`AsyncInspector.unpause_queue`."""
        run_sync(self._async.unpause_queue(queue))

    def delete_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove ``queue``; see :meth:`AsyncInspector.delete_queue`."""
        run_sync(self._async.delete_queue(queue, force=force))

    def cluster_location(self, queue: str) -> QueueLocation:
        """Slot and nodes of ``queue``; see :meth:`AsyncInspector.cluster_location`."""
        return run_sync(self._async.cluster_location(queue))

    def cluster_key_slot(self, queue: str) -> int:
        """The Redis Cluster hash slot of ``queue``."""
        return run_sync(self._async.cluster_key_slot(queue))

    def cluster_nodes(self, queue: str) -> tuple[str, ...]:
        """The nodes serving ``queue``, primary first."""
        return run_sync(self._async.cluster_nodes(queue))

    def list_tasks(
        self,
        queue: str,
        state: TaskState | str,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        group: str | None = None,
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``; see :meth:`AsyncInspector.list_tasks`."""
        return run_sync(
            self._async.list_tasks(queue, state, page=page, page_size=page_size, group=group)
        )

    def list_pending_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of pending tasks."""
        return self.list_tasks(queue, TaskState.PENDING, page=page, page_size=page_size)

    def list_active_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of active tasks (``is_orphaned`` marks expired leases)."""
        return self.list_tasks(queue, TaskState.ACTIVE, page=page, page_size=page_size)

    def list_scheduled_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of scheduled tasks."""
        return self.list_tasks(queue, TaskState.SCHEDULED, page=page, page_size=page_size)

    def list_retry_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of retry tasks."""
        return self.list_tasks(queue, TaskState.RETRY, page=page, page_size=page_size)

    def list_archived_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of archived tasks."""
        return self.list_tasks(queue, TaskState.ARCHIVED, page=page, page_size=page_size)

    def list_completed_tasks(
        self, queue: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """A page of completed tasks."""
        return self.list_tasks(queue, TaskState.COMPLETED, page=page, page_size=page_size)

    def list_aggregating_tasks(
        self,
        queue: str,
        group: str | None = None,
        *,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> list[TaskInfo]:
        """A page of aggregating tasks (of ``group``, or of all groups)."""
        return self.list_tasks(
            queue, TaskState.AGGREGATING, page=page, page_size=page_size, group=group
        )

    def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        """One task, whatever its state; see :meth:`AsyncInspector.get_task_info`."""
        return run_sync(self._async.get_task_info(queue, task_id))

    def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active; see :meth:`AsyncInspector.delete_task`."""
        run_sync(self._async.delete_task(queue, task_id))

    def run_task(self, queue: str, task_id: str) -> None:
        """Make a task pending now (archived: retries reset); see AsyncInspector.run_task."""
        run_sync(self._async.run_task(queue, task_id))

    def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a task; see :meth:`AsyncInspector.archive_task`."""
        run_sync(self._async.archive_task(queue, task_id))

    def cancel_processing(self, task_id: str, queue: str | None = None) -> TaskState:
        """Cancel a task anywhere; see :meth:`AsyncInspector.cancel_processing`."""
        return run_sync(self._async.cancel_processing(task_id, queue))

    def delete_all_tasks(
        self, queue: str, state: TaskState | str, *, group: str | None = None
    ) -> int:
        """Delete every task in ``state``; see :meth:`AsyncInspector.delete_all_tasks`."""
        return run_sync(self._async.delete_all_tasks(queue, state, group=group))

    def run_all_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """Run every task in ``state``; see :meth:`AsyncInspector.run_all_tasks`."""
        return run_sync(self._async.run_all_tasks(queue, state, group=group))

    def archive_all_tasks(
        self, queue: str, state: TaskState | str, *, group: str | None = None
    ) -> int:
        """Archive every task in ``state``; see :meth:`AsyncInspector.archive_all_tasks`."""
        return run_sync(self._async.archive_all_tasks(queue, state, group=group))

    def delete_all_pending_tasks(self, queue: str) -> int:
        """Delete every pending task; returns how many."""
        return self.delete_all_tasks(queue, TaskState.PENDING)

    def delete_all_scheduled_tasks(self, queue: str) -> int:
        """Delete every scheduled task; returns how many."""
        return self.delete_all_tasks(queue, TaskState.SCHEDULED)

    def delete_all_retry_tasks(self, queue: str) -> int:
        """Delete every retry task; returns how many."""
        return self.delete_all_tasks(queue, TaskState.RETRY)

    def delete_all_archived_tasks(self, queue: str) -> int:
        """Delete every archived task; returns how many."""
        return self.delete_all_tasks(queue, TaskState.ARCHIVED)

    def delete_all_completed_tasks(self, queue: str) -> int:
        """Delete every completed task; returns how many."""
        return self.delete_all_tasks(queue, TaskState.COMPLETED)

    def delete_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Delete every aggregating task (of ``group``, or all); returns how many."""
        return self.delete_all_tasks(queue, TaskState.AGGREGATING, group=group)

    def run_all_scheduled_tasks(self, queue: str) -> int:
        """Make every scheduled task pending now; returns how many."""
        return self.run_all_tasks(queue, TaskState.SCHEDULED)

    def run_all_retry_tasks(self, queue: str) -> int:
        """Make every retry task pending now; returns how many."""
        return self.run_all_tasks(queue, TaskState.RETRY)

    def run_all_archived_tasks(self, queue: str) -> int:
        """Make every archived task pending with a fresh retry budget; returns how many."""
        return self.run_all_tasks(queue, TaskState.ARCHIVED)

    def run_all_completed_tasks(self, queue: str) -> int:
        """Run every completed task again; returns how many."""
        return self.run_all_tasks(queue, TaskState.COMPLETED)

    def run_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Make every aggregating task (of ``group``, or all) pending; returns how many."""
        return self.run_all_tasks(queue, TaskState.AGGREGATING, group=group)

    def archive_all_pending_tasks(self, queue: str) -> int:
        """Archive every pending task; returns how many."""
        return self.archive_all_tasks(queue, TaskState.PENDING)

    def archive_all_scheduled_tasks(self, queue: str) -> int:
        """Archive every scheduled task; returns how many."""
        return self.archive_all_tasks(queue, TaskState.SCHEDULED)

    def archive_all_retry_tasks(self, queue: str) -> int:
        """Archive every retry task; returns how many."""
        return self.archive_all_tasks(queue, TaskState.RETRY)

    def archive_all_aggregating_tasks(self, queue: str, group: str | None = None) -> int:
        """Archive every aggregating task (of ``group``, or all); returns how many."""
        return self.archive_all_tasks(queue, TaskState.AGGREGATING, group=group)

    def servers(self) -> list[ServerInfo]:
        """Live worker servers and their active tasks."""
        return run_sync(self._async.servers())

    def scheduler_entries(self) -> list[SchedulerEntry]:
        """Periodic-task entries of every live scheduler."""
        return run_sync(self._async.scheduler_entries())

    def scheduler_history(
        self, entry_id: str, *, page: int = 1, page_size: int = DEFAULT_PAGE_SIZE
    ) -> list[SchedulerEnqueueEvent]:
        """A page of an entry's enqueue history, newest first."""
        return run_sync(self._async.scheduler_history(entry_id, page=page, page_size=page_size))
