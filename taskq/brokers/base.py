"""The Broker protocol: every state transition of a task, and nothing else.

Everything in taskq (client, worker runtime, scheduler, inspector, CLI, web)
talks to storage only through the protocols in this module. A broker is one
class implementing all of them; each component depends on the small slice it
uses (:class:`Producer`, :class:`Consumer`, ...).

Conventions every implementation follows (the conformance suite in
``taskq.testing`` checks each of them):

* Every method is a coroutine (but the optional :class:`BlockingProducer`'s)
  and is **atomic**: it either applies all of its effect or none of it.
  Where a method says "batch", each item is atomic on its own and the batch
  as a whole is not.
* Times and durations are ``int`` milliseconds (epoch ms for instants). A
  broker takes "now" from its own clock (the Redis server's ``TIME``, or the
  injectable :class:`taskq.Clock` it was built with), never from the caller.
* Queue names passed in are already validated by the caller
  (:func:`taskq.task.validate_queue_name`); brokers may re-check.
* Fenced methods take a :class:`LeaseRef`. If its token is not the task's
  current lease token, or the lease has expired, they raise
  :class:`~taskq.errors.LeaseLostError` and change nothing.
* Driver errors never escape: they become :class:`~taskq.errors.BrokerError`
  subclasses. No driver type appears in any signature.
* A task id is unique within its queue across every state.

Task states and the transitions (see DESIGN.md "Task life")::

    (new) --enqueue------> pending --dequeue--> active
    (new) --schedule-----> scheduled --forward--> pending
    (new) --add_to_group-> aggregating --aggregation--> one new pending task
    active --done--> (deleted)          active --complete--> completed --janitor--> (deleted)
    active --retry--> retry --forward--> pending
    active --archive--> archived        active --requeue--> pending (head, no retry spent)
    archived --trim_archived (optional ArchiveTrimmer, janitor)--> (deleted)
    active (lease expired) --reclaim_expired--> active (new token) --> retry / archived
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from typing import Protocol, runtime_checkable

import attrs

from taskq.errors import InvalidArgumentError
from taskq.task import TaskInfo, TaskMessage, TaskState

__all__ = [
    "Ack",
    "Admin",
    "ArchiveTrimmer",
    "BlockingProducer",
    "Broker",
    "CancelSubscription",
    "Canceller",
    "ClusterAdmin",
    "ClusterSlotInfo",
    "ConfigCheck",
    "ConfigFinding",
    "Consumer",
    "DailyStats",
    "Delivery",
    "EnqueueRequest",
    "Fleet",
    "GroupInfo",
    "GroupStore",
    "LeaseRef",
    "Producer",
    "QueueStats",
    "SchedulerEntryInfo",
    "SchedulerEvent",
    "ServerInfo",
    "Timekeeper",
    "WorkerInfo",
    "trim_wanted",
]


# --------------------------------------------------------------------------- values


@attrs.frozen(slots=True)
class LeaseRef:
    """Names one attempt of one task: the fencing handle of every consumer transition."""

    queue: str
    task_id: str
    token: str


@attrs.frozen(slots=True)
class Delivery:
    """A task handed to a consumer by :meth:`Consumer.dequeue`.

    Attributes:
        message: the stored task message.
        token: the lease token of this attempt; pass it back via :attr:`ref`.
        lease_expires_at: epoch ms when the lease ends unless extended.
        started_at: broker time (epoch ms) of the dequeue.
        pending_since: epoch ms the task became pending (0 if unknown): broker
            time, or the message's ``enqueued_at`` for a task that went straight
            to pending where the broker does not record that time (Redis).
    """

    message: TaskMessage
    token: str
    lease_expires_at: int
    started_at: int
    pending_since: int = 0

    @property
    def ref(self) -> LeaseRef:
        """The :class:`LeaseRef` for fenced transitions of this attempt."""
        return LeaseRef(self.message.queue, self.message.id, self.token)


@attrs.frozen(slots=True)
class Ack:
    """One successful outcome for :meth:`Consumer.done_many`.

    ``retention`` > 0 keeps the task as ``completed`` for that many ms (as
    :meth:`Consumer.complete`); 0 deletes it (as :meth:`Consumer.done`).
    """

    ref: LeaseRef
    retention: int = 0


@attrs.frozen(slots=False)
class EnqueueRequest:
    """One item of :meth:`Producer.enqueue_many`.

    The target state follows the same rule as the single methods: a
    ``process_at`` in the future gives ``scheduled``; otherwise a message with a
    ``group`` gives ``aggregating``; otherwise ``pending``. ``unique_ttl`` > 0
    takes the unique lock named by ``message.unique_key``.
    """

    message: TaskMessage
    process_at: int = 0
    unique_ttl: int = 0


@attrs.frozen
class GroupInfo:
    """A group of aggregating tasks in a queue."""

    group: str
    size: int


@attrs.frozen
class QueueStats:
    """A snapshot of one queue.

    ``size`` counts tasks in every state. ``latency`` is the age in ms of the
    oldest pending task (0 when none), measured from when it became pending
    (see :attr:`Delivery.pending_since`). ``processed``/``failed`` are today's
    (UTC, broker time) counts; the ``_total`` ones are all-time.
    ``memory_bytes`` is None where the broker cannot tell.
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
    latency: int
    processed: int
    failed: int
    processed_total: int
    failed_total: int
    timestamp: int
    memory_bytes: int | None = None

    def count(self, state: TaskState) -> int:
        """Return the number of tasks in ``state``."""
        return int(getattr(self, state.value))


@attrs.frozen
class DailyStats:
    """Processed and failed counts of one queue on one UTC day."""

    queue: str
    date: date
    processed: int
    failed: int


@attrs.frozen
class WorkerInfo:
    """A task being processed by a server right now.

    ``cut_off`` is why its attempt was cut off (``timeout``, ``deadline``,
    ``canceled``, ``lease lost``) when the attempt has been settled but its
    handler still runs and holds a concurrency slot (blocked where
    :class:`~taskq.errors.Interrupted` cannot reach it); "" for a running attempt.
    """

    task_id: str
    task_type: str
    queue: str
    started_at: int
    deadline: int
    payload: bytes = b""
    cut_off: str = ""


@attrs.frozen
class ServerInfo:
    """A worker server as published by its heartbeat."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: Mapping[str, int]
    strict_priority: bool
    started_at: int
    status: str
    active_workers: Sequence[WorkerInfo] = ()


@attrs.frozen
class SchedulerEntryInfo:
    """A periodic-task entry as published by a scheduler."""

    id: str
    spec: str
    task_type: str
    payload: bytes
    options: Mapping[str, str]
    next_enqueue_at: int
    prev_enqueue_at: int = 0
    scheduler_id: str = ""


@attrs.frozen
class SchedulerEvent:
    """One enqueue made by a scheduler entry."""

    task_id: str
    enqueued_at: int


@attrs.frozen
class ClusterSlotInfo:
    """Where a queue lives in a Redis Cluster.

    Attributes:
        queue: the queue name.
        slot: the hash slot every key of the queue maps to.
        nodes: the nodes serving that slot as ``host:port``, the primary first.
    """

    queue: str
    slot: int
    nodes: Sequence[str]


@attrs.frozen
class ConfigFinding:
    """What a broker's start-up settings check (:class:`ConfigCheck`) found.

    Attributes:
        message: one log line naming the setting, its value, the risk and the fix.
        unsafe: True when the setting can lose tasks (the server logs a
            warning, or refuses to start with ``strict_broker_checks``);
            False for information, e.g. that the check could not run.
        warn: log it as a WARNING even though it does not stop a strict
            start (a deliberate trade-off such as no persistence); None:
            a warning exactly when ``unsafe``.
    """

    message: str
    unsafe: bool = True
    warn: bool | None = None

    @property
    def is_warning(self) -> bool:
        """Whether the server logs this finding at WARNING (else INFO)."""
        return self.unsafe if self.warn is None else self.warn


@runtime_checkable
class CancelSubscription(Protocol):
    """An async iterator of task ids whose cancellation was requested."""

    def __aiter__(self) -> AsyncIterator[str]:
        """Iterate over task ids as cancellations arrive."""
        ...

    async def aclose(self) -> None:
        """Stop listening and release resources."""
        ...


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class Producer(Protocol):
    """Writes new tasks."""

    async def enqueue(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as ``pending`` (or ``aggregating`` if ``message.group``).

        Atomic with the unique lock: when ``unique_ttl`` > 0, the lock
        ``message.unique_key`` is taken (owned by the task id, expiring after
        ``unique_ttl`` ms) in the same step as the write. Registers the queue.

        Returns:
            the state the task was stored in.

        Raises:
            TaskIDConflictError: the id exists in the queue (any state).
            DuplicateTaskError: the unique lock is held by another task.
        """
        ...

    async def schedule(
        self, message: TaskMessage, process_at: int, *, unique_ttl: int = 0
    ) -> TaskState:
        """Store a new task as ``scheduled`` until ``process_at`` (epoch ms).

        A ``process_at`` not in the future stores it as :meth:`enqueue` would.
        The group of a scheduled message is kept: when due it goes to its
        group (``aggregating``) instead of ``pending``. The unique lock, if
        asked for, lasts until ``process_at + unique_ttl``.

        Raises:
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        ...

    async def add_to_group(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as ``aggregating`` in group ``message.group``.

        Raises:
            InvalidArgumentError: ``message.group`` is empty.
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        ...

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """Store many tasks; each item is atomic on its own (batch).

        Items targeting the same queue are written in as few round trips as
        the broker allows. Returns, per request in order, the stored state or
        the error that refused it (TaskIDConflictError, DuplicateTaskError).
        A broker failure raises instead, and then some items may be stored.
        """
        ...


@runtime_checkable
class Consumer(Protocol):
    """Hands out tasks under a lease and takes back their outcome (fenced)."""

    async def dequeue(
        self, queues: Sequence[str], *, count: int, lease: int, wait: int = 0
    ) -> list[Delivery]:
        """Move up to ``count`` pending tasks to ``active`` and lease them.

        Queues are tried in the given order: all that the first one has (up to
        ``count``), then the next, and so on. Paused and unknown queues are
        skipped. Pending tasks leave in FIFO order (a requeued task first).
        Each delivery gets a fresh token and a lease ending ``lease`` ms from
        now. When none is available and ``wait`` > 0, waits up to ``wait`` ms
        for one to arrive and returns as soon as one does (no sleep-polling
        where the broker can block). Each task is atomic; a task is never
        handed to two consumers.
        """
        ...

    async def extend_leases(self, refs: Sequence[LeaseRef], *, lease: int) -> list[bool]:
        """Extend each lease to ``lease`` ms from now. Batch, atomic per item.

        Returns per ref whether the lease was still held (False: the token is
        stale or the lease already expired; nothing changed for that item).
        """
        ...

    async def done(self, ref: LeaseRef) -> None:
        """active -> deleted (success). Releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...

    async def complete(self, ref: LeaseRef, *, retention: int) -> None:
        """active -> completed, kept for ``retention`` ms (with its result).

        Releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...

    async def done_many(self, acks: Sequence[Ack]) -> list[Exception | None]:
        """Batch of :meth:`done` / :meth:`complete`; atomic per item.

        Returns per ack None (applied) or the LeaseLostError that refused it.
        """
        ...

    async def retry(
        self, ref: LeaseRef, *, delay: int, error: str, is_failure: bool = True
    ) -> None:
        """active -> retry, due ``delay`` ms from now (broker time, so worker clock
        skew cannot make a retry early or late).

        Stores ``error`` as ``last_error`` and now as ``last_failed_at``. When
        ``is_failure``, increments ``retried`` and counts processed + failed;
        otherwise neither (the attempt does not count).

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...

    async def archive(self, ref: LeaseRef, *, error: str, release_unique: bool = True) -> None:
        """active -> archived with ``error`` as the reason; counts processed + failed.

        Releases the unique lock when ``release_unique``.

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...

    async def requeue(self, ref: LeaseRef) -> None:
        """active -> pending at the head of the queue, without spending a retry.

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...

    async def write_result(self, ref: LeaseRef, data: bytes) -> None:
        """Store ``data`` as the result of the task (kept while it is retained).

        Raises:
            LeaseLostError: stale or expired token.
        """
        ...


@runtime_checkable
class Timekeeper(Protocol):
    """Moves tasks as time passes: forwarding, lease recovery, retention."""

    async def now(self) -> int:
        """The broker's current time in epoch ms (the time every score uses)."""
        ...

    async def forward(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled and retry tasks to pending.

        Due scheduled tasks go first, then due retries, each by due time (as
        asynq's forwarder). A due task with a group goes to its group
        (``aggregating``) instead. Returns how many moved. Atomic per chunk.
        """
        ...

    async def expired_leases(self, queue: str, *, limit: int = 100) -> list[str]:
        """Ids of active tasks in ``queue`` whose lease has expired (or that have none)."""
        ...

    async def reclaim_expired(self, queue: str, *, lease: int, limit: int = 100) -> list[Delivery]:
        """Take over up to ``limit`` active tasks whose lease expired.

        Also repairs ``active`` tasks that have no lease at all. Each one gets
        a fresh token (so the old holder's late transitions are refused) and a
        lease of ``lease`` ms; the caller then settles it with :meth:`retry`
        or :meth:`archive`. Atomic per task.
        """
        ...

    async def delete_expired_completed(self, queue: str, *, limit: int = 100) -> int:
        """Delete up to ``limit`` completed tasks whose retention has ended."""
        ...


@runtime_checkable
class GroupStore(Protocol):
    """Task-group aggregation."""

    async def groups(self, queue: str) -> list[GroupInfo]:
        """The groups of ``queue`` that hold aggregating tasks, with their sizes."""
        ...

    async def aggregation_check(
        self,
        queue: str,
        group: str,
        *,
        grace_period: int,
        max_delay: int = 0,
        max_size: int = 0,
    ) -> str | None:
        """If the group is ready, move its (oldest, up to ``max_size``) members
        into a new aggregation set and return the set id; else None.

        Ready when: it holds ``max_size`` (> 0) tasks or more; or its oldest
        member is ``max_delay`` (> 0) ms old; or its newest member is
        ``grace_period`` ms old. Atomic.
        """
        ...

    async def read_aggregation_set(self, queue: str, group: str, set_id: str) -> list[TaskMessage]:
        """The messages in an aggregation set, oldest first (empty if it is gone)."""
        ...

    async def finish_aggregation(
        self, queue: str, group: str, set_id: str, message: TaskMessage
    ) -> bool:
        """Atomically enqueue ``message`` as pending and delete the set and its members.

        Idempotent: returns False and stores nothing when the set no longer
        exists (it was finished already), so a retried call cannot produce a
        second aggregated task.

        Raises:
            TaskIDConflictError: ``message.id`` exists in the queue.
        """
        ...

    async def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """Delete an aggregation set and its member tasks."""
        ...

    async def reclaim_stale_aggregation_sets(self, queue: str, *, older_than: int) -> int:
        """Return members of sets created more than ``older_than`` ms ago to their group."""
        ...


@runtime_checkable
class Canceller(Protocol):
    """Cancellation of tasks anywhere in the fleet."""

    async def request_cancel(self, task_id: str, queue: str | None = None) -> TaskState | None:
        """Cancel a task. Atomic.

        An ``active`` task is marked cancelled (persisted, so a worker that
        misses the notification still sees it via :meth:`cancel_requested`)
        and subscribers are notified. A task that has not started (pending,
        scheduled, retry, aggregating) is archived with reason "canceled", so
        it never runs, and releases the unique lock (if it still owns it).
        With ``queue`` None, every queue is searched.

        Returns:
            the state the task was in, or None if no such task exists.
        """
        ...

    async def cancel_requested(self, queue: str, task_ids: Sequence[str]) -> set[str]:
        """The subset of ``task_ids`` in ``queue`` whose cancellation was requested."""
        ...

    async def subscribe_cancellations(self) -> CancelSubscription:
        """Subscribe to cancellation requests (task ids) made from now on."""
        ...


@runtime_checkable
class Fleet(Protocol):
    """State of servers and schedulers, and daily counts."""

    async def write_server_state(self, info: ServerInfo, *, ttl: int) -> None:
        """Publish a server and its active workers; it disappears after ``ttl`` ms."""
        ...

    async def clear_server_state(self, server_id: str) -> None:
        """Remove a server's published state."""
        ...

    async def servers(self) -> list[ServerInfo]:
        """Servers whose state has not expired."""
        ...

    async def write_scheduler_entries(
        self, scheduler_id: str, entries: Sequence[SchedulerEntryInfo], *, ttl: int
    ) -> None:
        """Publish a scheduler's entries; they disappear after ``ttl`` ms."""
        ...

    async def clear_scheduler_entries(self, scheduler_id: str) -> None:
        """Remove a scheduler's published entries."""
        ...

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """Entries of every live scheduler."""
        ...

    async def record_scheduler_event(
        self, entry_id: str, event: SchedulerEvent, *, keep: int = 1000
    ) -> None:
        """Append to an entry's enqueue history, keeping the newest ``keep``."""
        ...

    async def scheduler_events(self, entry_id: str, *, limit: int = 100) -> list[SchedulerEvent]:
        """An entry's enqueue history, newest first."""
        ...

    async def claim_scheduler_tick(self, entry_id: str, tick: int, *, ttl: int) -> bool:
        """Claim the right to enqueue ``entry_id``'s tick at ``tick`` (epoch ms).

        Exactly one caller gets True per (entry, tick) while the claim lives
        (``ttl`` ms); the HA scheduler relies on it.
        """
        ...

    async def history(self, queue: str, days: int) -> list[DailyStats]:
        """Daily processed/failed counts for the last ``days`` days, newest first."""
        ...


@runtime_checkable
class Admin(Protocol):
    """Inspection and management of queues and tasks (the Inspector's backend)."""

    async def queues(self) -> list[str]:
        """Every known queue, sorted."""
        ...

    async def queue_stats(self, queue: str) -> QueueStats:
        """A snapshot of one queue.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        ...

    async def list_tasks(
        self,
        queue: str,
        state: TaskState,
        *,
        offset: int = 0,
        limit: int = 30,
        group: str | None = None,
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``, in the state's natural order.

        Pending and active: FIFO order. Scheduled and retry: by due time.
        Archived and completed: by time of entry. Aggregating: oldest first,
        only ``group`` if given. Active tasks carry ``is_orphaned``.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        ...

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task, in whatever state it is.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
        """
        ...

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active; releases its unique lock.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active).
        """
        ...

    async def run_task(self, queue: str, task_id: str) -> None:
        """Move a scheduled, retry, archived, completed or aggregating task to pending.

        Resets ``retried`` to 0 and clears ``last_error`` for an archived task,
        so it gets its full retry budget again.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (pending or active).
        """
        ...

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a pending, scheduled, retry or aggregating task to archived.

        Releases the unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active, archived, completed).
        """
        ...

    async def delete_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Delete up to ``limit`` tasks in ``state`` (not active); returns how many.

        Chunked: call again until it returns 0.
        """
        ...

    async def run_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Run up to ``limit`` tasks in ``state`` as :meth:`run_task` does; returns how many."""
        ...

    async def archive_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Archive up to ``limit`` tasks in ``state`` as :meth:`archive_task` does.

        Releases each task's unique lock (if the task still owns it).
        """
        ...

    async def pause_queue(self, queue: str) -> None:
        """Stop dequeuing from ``queue`` (enqueue and forwarding go on).

        Raises:
            QueueNotFoundError.
        """
        ...

    async def unpause_queue(self, queue: str) -> None:
        """Resume dequeuing from ``queue``.

        Raises:
            QueueNotFoundError.
        """
        ...

    async def remove_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove a queue and all of its keys.

        Raises:
            QueueNotFoundError: unknown queue.
            QueueNotEmptyError: it holds tasks (without ``force``) or active
                tasks (even with ``force``).
        """
        ...


@runtime_checkable
class ClusterAdmin(Protocol):
    """Optional, not part of :class:`Broker`: a sharded broker tells where a queue lives.

    The Inspector uses it when the broker implements it (Redis Cluster).
    """

    async def cluster_info(self, queue: str) -> ClusterSlotInfo:
        """The hash slot of ``queue`` and the nodes that serve it.

        Raises:
            BrokerError: the broker is not connected to a cluster.
        """
        ...


@runtime_checkable
class BlockingProducer(Protocol):
    """Optional, not part of :class:`Broker`: a broker that can store tasks without an event loop.

    The sync :class:`taskq.Client` calls it from the caller's own thread when
    the broker implements it, instead of handing each enqueue to taskq's
    private event-loop thread and back (two thread switches per call).
    Brokers that cannot store synchronously (or only sometimes) return None
    and the client falls back to :meth:`Producer.enqueue_many` on the loop
    thread; third-party brokers need not implement it at all.
    """

    def enqueue_blocking(
        self, requests: Sequence[EnqueueRequest]
    ) -> list[TaskState | Exception] | None:
        """Store many tasks from any thread, blocking until done, as :meth:`Producer.enqueue_many`.

        The contract is that of ``enqueue_many``: each item is atomic on its
        own, the result per request in order is the stored state or the error
        that refused it (TaskIDConflictError, DuplicateTaskError, as values),
        and a broker failure raises. It must be safe to call from many threads
        at once, beside the broker's coroutines running on any event loop, and
        in a forked child.

        Returns:
            the per-item results, or None when the blocking path is not
            available (this broker's connection cannot be used synchronously);
            nothing was stored then and the caller uses ``enqueue_many``.

        Raises:
            BrokerError: the broker failed (some items may be stored).
        """
        ...


@runtime_checkable
class ConfigCheck(Protocol):
    """Optional, not part of :class:`Broker`: a broker that can check its server's settings.

    A worker server calls it once at start-up when the broker implements it
    (Redis: ``maxmemory-policy`` must be ``noeviction``); brokers with
    nothing to check (memory, SQLite) simply do not.
    """

    async def check_config(self) -> list[ConfigFinding]:
        """Settings of the broker's server that can lose tasks (empty when all is well).

        A check that is not permitted (e.g. a command the ACL refuses) gives a
        finding with ``unsafe=False`` instead of raising.

        Raises:
            BrokerError: the broker cannot be reached.
        """
        ...


def trim_wanted(max_size: int | None, max_age: int | None, limit: int) -> bool:
    """Check :meth:`ArchiveTrimmer.trim_archived`'s bounds; whether a call has anything to do.

    Shared by the built-in brokers, for third-party ones too.

    Raises:
        InvalidArgumentError: ``max_size`` or ``max_age`` is negative.
    """
    if max_size is not None and max_size < 0:
        raise InvalidArgumentError(f"max_size must not be negative, got {max_size}")
    if max_age is not None and max_age < 0:
        raise InvalidArgumentError(f"max_age must not be negative, got {max_age}")
    return limit > 0 and (max_size is not None or max_age is not None)


@runtime_checkable
class ArchiveTrimmer(Protocol):
    """Optional, not part of :class:`Broker`: a broker that can bound its archive.

    Without it a queue whose tasks keep failing grows without limit. The
    worker's janitor calls it on every pass when the broker implements it
    (with ``Config.archive_max_size`` and ``Config.archive_max_age``); a
    broker without it keeps every archived task until deleted by hand.
    """

    async def trim_archived(
        self,
        queue: str,
        *,
        max_size: int | None,
        max_age: int | None,
        limit: int = 1000,
    ) -> int:
        """Delete the oldest archived tasks of ``queue`` beyond the bounds; return how many.

        A task goes when more than ``max_size`` archived tasks are newer than
        or as new as it (the newest ``max_size`` are kept), or when it was
        archived ``max_age`` ms ago or longer (``now - archived_at >= max_age``,
        broker time). None turns a bound off. Oldest first, at most ``limit``
        per call: call again until it returns less than ``limit``.

        A trimmed task is gone as if deleted: its message, state, result, group
        membership and unique-lock bookkeeping, and its unique lock if it still
        owns one; its id can be used again. Tasks in other states and other
        queues are untouched. An unknown queue trims nothing (and writes
        nothing). Atomic per call.

        Raises:
            InvalidArgumentError: ``max_size`` or ``max_age`` is negative.
        """
        ...


@runtime_checkable
class Broker(Producer, Consumer, Timekeeper, GroupStore, Canceller, Fleet, Admin, Protocol):
    """The whole protocol: one class implements every part."""

    async def ping(self) -> None:
        """Check that the broker is reachable.

        Raises:
            BrokerConnectionError: it is not.
        """
        ...

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...
