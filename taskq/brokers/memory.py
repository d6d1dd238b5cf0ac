"""InMemoryBroker: the whole Broker protocol in one process, for tests and benchmarks.

Nothing is persisted: a broker lives as long as the object. Every method takes
one :class:`threading.Lock` for its whole (non-awaiting) body, which makes each
method atomic and lets a sync :class:`taskq.Client` on its own event-loop
thread share one broker with a worker on another loop: waiters and
cancellation subscribers on other loops are woken with
``loop.call_soon_threadsafe``.

Structures are chosen so that the hot path (enqueue, dequeue, ack) is O(1) or
O(log n): ordered dicts for FIFO lists (O(1) removal from the middle and
insertion at the head), heaps with lazy deletion for due times.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import threading
import time
from bisect import insort
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import date, timedelta
from typing import TypeVar

import attrs

from taskq._time import Clock, SystemClock
from taskq.brokers.base import (
    Ack,
    DailyStats,
    Delivery,
    EnqueueRequest,
    GroupInfo,
    LeaseRef,
    QueueStats,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    trim_wanted,
)
from taskq.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    LeaseLostError,
    QueueNotEmptyError,
    QueueNotFoundError,
    TaskIDConflictError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq.task import TaskInfo, TaskMessage, TaskState, truncate_error, validate_queue_name

__all__ = ["InMemoryBroker"]

_T = TypeVar("_T")

_DAY_MS = 86_400_000
_CANCELED = "canceled"

_PENDING = TaskState.PENDING
_ACTIVE = TaskState.ACTIVE
_SCHEDULED = TaskState.SCHEDULED
_RETRY = TaskState.RETRY
_ARCHIVED = TaskState.ARCHIVED
_COMPLETED = TaskState.COMPLETED
_AGGREGATING = TaskState.AGGREGATING


class _Entry:
    """One stored task and everything the broker keeps beside its message."""

    __slots__ = (
        "cancel",
        "group_added",
        "lease_expires",
        "msg",
        "pending_since",
        "result",
        "score",
        "set_id",
        "state",
        "token",
    )

    def __init__(self, msg: TaskMessage) -> None:
        self.msg = msg
        self.state = _PENDING
        # Due time (scheduled, retry), expiry (completed) or entry time (archived).
        self.score = 0
        self.pending_since = 0
        self.token: str | None = None
        self.lease_expires: int | None = None
        self.result: bytes | None = None
        self.cancel = False
        self.group_added = 0
        self.set_id: str | None = None


class _TimeIndex:
    """Ids ordered by an int score; a heap with lazy deletion plus a dict of live members."""

    __slots__ = ("_heap", "_seq", "members")

    def __init__(self) -> None:
        self.members: dict[str, tuple[int, int]] = {}
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.members)

    def add(self, task_id: str, score: int) -> None:
        item = (score, next(self._seq), task_id)
        self.members[task_id] = item[:2]
        heapq.heappush(self._heap, item)

    def remove(self, task_id: str) -> None:
        self.members.pop(task_id, None)
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self.members):
            self._heap = [(s, q, i) for i, (s, q) in self.members.items()]
            heapq.heapify(self._heap)

    def pop_due(self, now: int, limit: int) -> list[str]:
        """Remove and return up to ``limit`` ids with score <= ``now``, lowest first."""
        found: list[str] = []
        heap = self._heap
        members = self.members
        while heap and len(found) < limit and heap[0][0] <= now:
            score, seq, task_id = heapq.heappop(heap)
            if members.get(task_id) == (score, seq):
                del members[task_id]
                found.append(task_id)
        return found

    def ordered(self) -> list[str]:
        """Every id, lowest score first (ties in insertion order)."""
        return [i for i, _ in sorted(self.members.items(), key=lambda kv: kv[1])]


@attrs.define
class _AggregationSet:
    group: str
    created_at: int
    ids: dict[str, None] = attrs.field(factory=dict)


class _Queue:
    """Every structure of one queue."""

    __slots__ = (
        "active",
        "archived",
        "completed",
        "completed_due",
        "daily",
        "failed_total",
        "groups",
        "locks",
        "name",
        "paused",
        "pending",
        "processed_total",
        "retry",
        "scheduled",
        "sets",
        "tasks",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.tasks: dict[str, _Entry] = {}
        self.pending: OrderedDict[str, None] = OrderedDict()
        self.active: dict[str, None] = {}
        self.scheduled = _TimeIndex()
        self.retry = _TimeIndex()
        self.archived: dict[str, None] = {}
        self.completed: dict[str, None] = {}
        self.completed_due = _TimeIndex()
        self.groups: dict[str, dict[str, None]] = {}
        self.sets: dict[str, _AggregationSet] = {}
        # unique key -> (owning task id, expiry epoch ms)
        self.locks: dict[str, tuple[str, int]] = {}
        self.paused = False
        self.processed_total = 0
        self.failed_total = 0
        # UTC day number -> [processed, failed]
        self.daily: dict[int, list[int]] = {}

    def aggregating_count(self) -> int:
        return sum(len(g) for g in self.groups.values()) + sum(
            len(s.ids) for s in self.sets.values()
        )


class _Waiter:
    __slots__ = ("closed", "future", "loop", "queues")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], queues: frozenset[str]
    ) -> None:
        self.loop = loop
        self.future = future
        self.queues = queues
        self.closed = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _live(table: dict[str, tuple[_T, int]], now: int) -> list[_T]:
    """Drop the expired items of an ``id -> (value, expires_at)`` table; the rest by id."""
    for key in [k for k, (_, expires) in table.items() if expires <= now]:
        del table[key]
    return [value for _, (value, _) in sorted(table.items())]


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[_T], object], arg: _T) -> None:
    """Run ``fn(arg)`` on ``loop`` from any thread; nothing if that loop is closed."""
    with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to tell
        loop.call_soon_threadsafe(fn, arg)


class _CancelSubscription:
    """Cancellation ids delivered to one subscriber's event loop."""

    def __init__(self, broker: InMemoryBroker, loop: asyncio.AbstractEventLoop) -> None:
        self._broker = broker
        self._loop = loop
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._closed = False

    def _publish(self, task_id: str | None) -> None:
        """Called from any thread: hand ``task_id`` (None = end) to the subscriber's loop."""
        _call_soon(self._loop, self._inbox.put_nowait, task_id)

    async def __aiter__(self) -> AsyncIterator[str]:
        """Yield task ids as cancellations are requested, until :meth:`aclose`."""
        while not self._closed:
            task_id = await self._inbox.get()
            if task_id is None:
                return
            yield task_id

    async def aclose(self) -> None:
        """Stop listening; a running iteration ends."""
        if not self._closed:
            self._closed = True
            self._broker._unsubscribe(self)
            self._inbox.put_nowait(None)


class InMemoryBroker:
    """A complete, thread-safe :class:`~taskq.brokers.base.Broker` kept in process memory.

    Unique locks live per queue (keyed by ``message.unique_key``). Nothing
    survives the object; use it in tests, benchmarks and single-process
    tools, and the SQLite or Redis broker for real work.

    Args:
        clock: the source of "now" for every score (default: the system
            clock). Tests pass a :class:`taskq.testing.FakeClock`. Waiting in
            :meth:`dequeue` always uses real time.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._valid_names: set[str] = set()
        self._waiters: set[_Waiter] = set()
        self._subscribers: set[_CancelSubscription] = set()
        self._servers: dict[str, tuple[ServerInfo, int]] = {}
        self._schedulers: dict[str, tuple[tuple[SchedulerEntryInfo, ...], int]] = {}
        self._events: dict[str, list[SchedulerEvent]] = {}
        self._claims: dict[tuple[str, int], int] = {}
        self._token_prefix = os.urandom(6).hex() + "-"
        self._token_seq = itertools.count(1)
        self._set_seq = itertools.count(1)

    @classmethod
    def from_url(cls, url: str) -> InMemoryBroker:
        """Build a fresh, empty broker for a ``memory://`` URL (each call a new one).

        Raises:
            InvalidArgumentError: the URL's scheme is not ``memory``.
        """
        if not isinstance(url, str) or not url.lower().startswith("memory://"):
            raise InvalidArgumentError("InMemoryBroker URLs look like memory://")
        return cls()

    def __repr__(self) -> str:
        return f"InMemoryBroker(queues={len(self._queues)})"

    # ------------------------------------------------------------------ helpers

    def _now(self) -> int:
        return self._clock.now_ms()

    def _new_token(self) -> str:
        return f"{self._token_prefix}{next(self._token_seq)}"

    def _queue_for_write(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            if name not in self._valid_names:
                validate_queue_name(name)
                self._valid_names.add(name)
            q = self._queues[name] = _Queue(name)
        return q

    def _known(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            raise QueueNotFoundError(f"queue {name!r} does not exist")
        return q

    def _entry(self, q: _Queue, task_id: str) -> _Entry:
        entry = q.tasks.get(task_id)
        if entry is None:
            raise TaskNotFoundError(f"no task {task_id!r} in queue {q.name!r}")
        return entry

    def _wake(self, queue: str) -> None:
        woken = [w for w in self._waiters if queue in w.queues]
        for waiter in woken:
            self._waiters.discard(waiter)
            _call_soon(waiter.loop, _resolve, waiter.future)

    def _count(self, q: _Queue, now: int, *, failed: bool) -> None:
        day = q.daily.setdefault(now // _DAY_MS, [0, 0])
        day[0] += 1
        q.processed_total += 1
        if failed:
            day[1] += 1
            q.failed_total += 1

    def _release_lock(self, q: _Queue, entry: _Entry) -> None:
        key = entry.msg.unique_key
        if key:
            held = q.locks.get(key)
            if held is not None and held[0] == entry.msg.id:
                del q.locks[key]

    # Each task is in exactly one structure; _detach removes it from the one
    # matching its state, the _to_* methods put it into the next one.

    def _detach(self, q: _Queue, entry: _Entry) -> None:
        task_id = entry.msg.id
        state = entry.state
        if state is _PENDING:
            del q.pending[task_id]
        elif state is _ACTIVE:
            del q.active[task_id]
            entry.token = None
            entry.lease_expires = None
            entry.cancel = False
        elif state is _SCHEDULED:
            q.scheduled.remove(task_id)
        elif state is _RETRY:
            q.retry.remove(task_id)
        elif state is _ARCHIVED:
            del q.archived[task_id]
        elif state is _COMPLETED:
            del q.completed[task_id]
            q.completed_due.remove(task_id)
        elif entry.set_id is not None:
            agg = q.sets.get(entry.set_id)
            if agg is not None:
                agg.ids.pop(task_id, None)
                if not agg.ids:
                    del q.sets[entry.set_id]
            entry.set_id = None
        else:
            members = q.groups.get(entry.msg.group)
            if members is not None:
                members.pop(task_id, None)
                if not members:
                    del q.groups[entry.msg.group]

    def _remove(self, q: _Queue, entry: _Entry) -> None:
        self._detach(q, entry)
        del q.tasks[entry.msg.id]

    def _to_pending(self, q: _Queue, entry: _Entry, now: int, *, head: bool = False) -> None:
        entry.state = _PENDING
        entry.pending_since = now
        q.pending[entry.msg.id] = None
        if head:
            q.pending.move_to_end(entry.msg.id, last=False)
        self._wake(q.name)

    def _to_ready(self, q: _Queue, entry: _Entry, now: int) -> TaskState:
        """Make a task ready now: its group if it has one, else pending."""
        if entry.msg.group:
            self._to_aggregating(q, entry, now)
            return _AGGREGATING
        self._to_pending(q, entry, now)
        return _PENDING

    def _to_aggregating(self, q: _Queue, entry: _Entry, added: int) -> None:
        entry.state = _AGGREGATING
        entry.group_added = added
        entry.set_id = None
        members = q.groups.get(entry.msg.group)
        if members is None:
            members = q.groups[entry.msg.group] = {}
        members[entry.msg.id] = None

    def _to_scored(self, q: _Queue, entry: _Entry, state: TaskState, score: int) -> None:
        entry.state = state
        entry.score = score
        if state is _SCHEDULED:
            q.scheduled.add(entry.msg.id, score)
        elif state is _RETRY:
            q.retry.add(entry.msg.id, score)
        elif state is _ARCHIVED:
            q.archived[entry.msg.id] = None
        else:
            q.completed[entry.msg.id] = None
            q.completed_due.add(entry.msg.id, score)

    # ------------------------------------------------------------------ producing

    def _store(self, message: TaskMessage, process_at: int, unique_ttl: int, now: int) -> TaskState:
        q = self._queue_for_write(message.queue)
        if message.id in q.tasks:
            raise TaskIDConflictError(f"task id {message.id!r} already exists in {q.name!r}")
        key = message.unique_key
        take_lock = unique_ttl > 0 and bool(key)
        if take_lock:
            held = q.locks.get(key)
            if held is not None and held[1] > now:
                raise DuplicateTaskError(f"unique lock {key!r} is held by task {held[0]!r}")
        entry = _Entry(message)
        q.tasks[message.id] = entry
        if process_at > now:
            self._to_scored(q, entry, _SCHEDULED, process_at)
            state = _SCHEDULED
        else:
            state = self._to_ready(q, entry, now)
        if take_lock:
            q.locks[key] = (message.id, max(process_at, now) + unique_ttl)
        return state

    async def enqueue(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as pending (aggregating if it has a group).

        Raises:
            TaskIDConflictError: the id exists in the queue.
            DuplicateTaskError: the unique lock is held by another task.
        """
        with self._lock:
            return self._store(message, 0, unique_ttl, self._now())

    async def schedule(
        self, message: TaskMessage, process_at: int, *, unique_ttl: int = 0
    ) -> TaskState:
        """Store a new task as scheduled until ``process_at`` (as enqueue if not in the future).

        Raises:
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        with self._lock:
            return self._store(message, process_at, unique_ttl, self._now())

    async def add_to_group(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as aggregating in ``message.group``.

        Raises:
            InvalidArgumentError: ``message.group`` is empty.
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        if not message.group:
            raise InvalidArgumentError("add_to_group needs a message with a group")
        with self._lock:
            return self._store(message, 0, unique_ttl, self._now())

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """Store many tasks, each atomic on its own; per item the state or the refusal."""
        return self._store_many(requests)

    def enqueue_blocking(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """:meth:`enqueue_many` from any thread, without an event loop (never None).

        Consumers waiting on other threads' loops are woken as by any write.
        """
        return self._store_many(requests)

    def _store_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        results: list[TaskState | Exception] = []
        with self._lock:
            now = self._now()
            for req in requests:
                try:
                    results.append(self._store(req.message, req.process_at, req.unique_ttl, now))
                except (TaskIDConflictError, DuplicateTaskError) as exc:
                    results.append(exc)
        return results

    # ------------------------------------------------------------------ consuming

    def _take(self, queues: Sequence[str], count: int, lease: int) -> list[Delivery]:
        now = self._now()
        out: list[Delivery] = []
        for name in queues:
            q = self._queues.get(name)
            if q is None or q.paused:
                continue
            pending = q.pending
            while pending and len(out) < count:
                task_id, _ = pending.popitem(last=False)
                entry = q.tasks[task_id]
                token = self._new_token()
                entry.state = _ACTIVE
                entry.token = token
                entry.lease_expires = now + lease
                q.active[task_id] = None
                out.append(Delivery(entry.msg, token, now + lease, now, entry.pending_since))
            if len(out) >= count:
                break
        return out

    async def dequeue(
        self, queues: Sequence[str], *, count: int, lease: int, wait: int = 0
    ) -> list[Delivery]:
        """Lease up to ``count`` pending tasks, trying ``queues`` in order.

        Waits up to ``wait`` ms of real time for a task to arrive; an enqueue
        (from any thread) into one of ``queues`` wakes it at once.
        """
        if count <= 0:
            return []
        deadline = time.monotonic() + wait / 1000
        while True:
            with self._lock:
                got = self._take(queues, count, lease)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                loop = asyncio.get_running_loop()
                waiter = _Waiter(loop, loop.create_future(), frozenset(queues))
                self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter.future, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                with self._lock:
                    self._waiters.discard(waiter)
            if waiter.closed:
                return []

    def _fenced(self, ref: LeaseRef, now: int) -> tuple[_Queue, _Entry]:
        q = self._queues.get(ref.queue)
        entry = q.tasks.get(ref.task_id) if q is not None else None
        if (
            q is None
            or entry is None
            or entry.state is not _ACTIVE
            or entry.token != ref.token
            or entry.lease_expires is None
            or entry.lease_expires <= now
        ):
            raise LeaseLostError(
                f"lease of task {ref.task_id!r} in {ref.queue!r} is stale or expired"
            )
        return q, entry

    async def extend_leases(self, refs: Sequence[LeaseRef], *, lease: int) -> list[bool]:
        """Extend each still-held lease to ``lease`` ms from now; per ref whether it was held."""
        out: list[bool] = []
        with self._lock:
            now = self._now()
            for ref in refs:
                try:
                    _, entry = self._fenced(ref, now)
                except LeaseLostError:
                    out.append(False)
                else:
                    entry.lease_expires = now + lease
                    out.append(True)
        return out

    def _done(self, ref: LeaseRef, retention: int, now: int) -> None:
        q, entry = self._fenced(ref, now)
        self._detach(q, entry)
        self._release_lock(q, entry)
        self._count(q, now, failed=False)
        if retention > 0:
            entry.msg = attrs.evolve(entry.msg, completed_at=now)
            self._to_scored(q, entry, _COMPLETED, now + retention)
        else:
            del q.tasks[entry.msg.id]

    async def done(self, ref: LeaseRef) -> None:
        """active -> deleted; releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            self._done(ref, 0, self._now())

    async def complete(self, ref: LeaseRef, *, retention: int) -> None:
        """active -> completed for ``retention`` ms; releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            now = self._now()
            q, entry = self._fenced(ref, now)
            self._detach(q, entry)
            self._release_lock(q, entry)
            self._count(q, now, failed=False)
            entry.msg = attrs.evolve(entry.msg, completed_at=now)
            self._to_scored(q, entry, _COMPLETED, now + max(retention, 0))

    async def done_many(self, acks: Sequence[Ack]) -> list[Exception | None]:
        """Apply many done/complete outcomes; per ack None or the LeaseLostError."""
        out: list[Exception | None] = []
        with self._lock:
            now = self._now()
            for ack in acks:
                try:
                    self._done(ack.ref, ack.retention, now)
                except LeaseLostError as exc:
                    out.append(exc)
                else:
                    out.append(None)
        return out

    async def retry(
        self, ref: LeaseRef, *, delay: int, error: str, is_failure: bool = True
    ) -> None:
        """active -> retry, due ``delay`` ms from now; records the error.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            now = self._now()
            q, entry = self._fenced(ref, now)
            self._detach(q, entry)
            msg = entry.msg
            entry.msg = attrs.evolve(
                msg,
                last_error=truncate_error(error),
                last_failed_at=now,
                retried=msg.retried + 1 if is_failure else msg.retried,
            )
            if is_failure:
                self._count(q, now, failed=True)
            self._to_scored(q, entry, _RETRY, now + max(delay, 0))

    async def archive(self, ref: LeaseRef, *, error: str, release_unique: bool = True) -> None:
        """active -> archived with ``error``; counts processed + failed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            now = self._now()
            q, entry = self._fenced(ref, now)
            self._detach(q, entry)
            if release_unique:
                self._release_lock(q, entry)
            entry.msg = attrs.evolve(
                entry.msg, last_error=truncate_error(error), last_failed_at=now
            )
            self._count(q, now, failed=True)
            self._to_scored(q, entry, _ARCHIVED, now)

    async def requeue(self, ref: LeaseRef) -> None:
        """active -> pending at the head, no retry spent.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            now = self._now()
            q, entry = self._fenced(ref, now)
            self._detach(q, entry)
            self._to_pending(q, entry, now, head=True)

    async def write_result(self, ref: LeaseRef, data: bytes) -> None:
        """Store ``data`` as the task's result.

        Raises:
            LeaseLostError: stale or expired token.
        """
        with self._lock:
            _, entry = self._fenced(ref, self._now())
            entry.result = bytes(data)

    # ------------------------------------------------------------------ time

    async def now(self) -> int:
        """The broker's clock, in epoch ms."""
        return self._now()

    async def forward(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled and retry tasks to pending (or their group)."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return 0
            now = self._now()
            moved = 0
            for index in (q.scheduled, q.retry):
                for task_id in index.pop_due(now, limit - moved):
                    entry = q.tasks[task_id]
                    self._detach(q, entry)
                    self._to_ready(q, entry, now)
                    moved += 1
            return moved

    async def expired_leases(self, queue: str, *, limit: int = 100) -> list[str]:
        """Ids of active tasks whose lease expired (or that have none)."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return []
            now = self._now()
            return list(itertools.islice(self._expired(q, now), max(limit, 0)))

    def _expired(self, q: _Queue, now: int) -> Iterator[str]:
        for task_id in q.active:
            expires = q.tasks[task_id].lease_expires
            if expires is None or expires <= now:
                yield task_id

    async def reclaim_expired(self, queue: str, *, lease: int, limit: int = 100) -> list[Delivery]:
        """Take over active tasks whose lease expired (or is missing) with fresh tokens."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return []
            now = self._now()
            out: list[Delivery] = []
            for task_id in list(itertools.islice(self._expired(q, now), max(limit, 0))):
                entry = q.tasks[task_id]
                entry.token = self._new_token()
                entry.lease_expires = now + lease
                out.append(Delivery(entry.msg, entry.token, now + lease, now, entry.pending_since))
            return out

    async def delete_expired_completed(self, queue: str, *, limit: int = 100) -> int:
        """Delete up to ``limit`` completed tasks whose retention has ended."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return 0
            expired = q.completed_due.pop_due(self._now(), limit)
            for task_id in expired:
                self._remove(q, q.tasks[task_id])
            return len(expired)

    async def trim_archived(
        self,
        queue: str,
        *,
        max_size: int | None,
        max_age: int | None,
        limit: int = 1000,
    ) -> int:
        """Delete the oldest archived tasks beyond ``max_size`` or ``max_age`` ms; how many.

        At most ``limit`` per call; each trimmed task goes with everything it
        owns (its unique lock too, if it still holds it).

        Raises:
            InvalidArgumentError: ``max_size`` or ``max_age`` is negative.
        """
        if not trim_wanted(max_size, max_age, limit):
            return 0
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return 0
            # q.archived is in archive order, oldest first: both bounds cut a prefix.
            count = 0
            if max_size is not None:
                count = min(max(len(q.archived) - max_size, 0), limit)
            if max_age is not None:
                cutoff = self._now() - max_age
                for task_id in itertools.islice(q.archived, count, limit):
                    if q.tasks[task_id].score > cutoff:
                        break
                    count += 1
            for task_id in list(itertools.islice(q.archived, count)):
                self._delete(q, q.tasks[task_id])
            return count

    # ------------------------------------------------------------------ groups

    async def groups(self, queue: str) -> list[GroupInfo]:
        """Groups of ``queue`` holding aggregating tasks (not yet in a set), sorted by name."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return []
            return [GroupInfo(g, len(m)) for g, m in sorted(q.groups.items())]

    async def aggregation_check(
        self,
        queue: str,
        group: str,
        *,
        grace_period: int,
        max_delay: int = 0,
        max_size: int = 0,
    ) -> str | None:
        """Move a ready group's oldest members (up to ``max_size``) into a new set; its id."""
        with self._lock:
            q = self._queues.get(queue)
            members = q.groups.get(group) if q is not None else None
            if q is None or not members:
                return None
            now = self._now()
            ids = list(members)
            oldest = q.tasks[ids[0]].group_added
            newest = q.tasks[ids[-1]].group_added
            ready = (
                (max_size > 0 and len(ids) >= max_size)
                or (max_delay > 0 and now - oldest >= max_delay)
                or now - newest >= grace_period
            )
            if not ready:
                return None
            set_id = f"{self._token_prefix}set{next(self._set_seq)}"
            agg = q.sets[set_id] = _AggregationSet(group, now)
            for task_id in ids[:max_size] if max_size > 0 else ids:
                del members[task_id]
                q.tasks[task_id].set_id = set_id
                agg.ids[task_id] = None
            if not members:
                del q.groups[group]
            return set_id

    def _set(self, queue: str, group: str, set_id: str) -> tuple[_Queue, _AggregationSet] | None:
        q = self._queues.get(queue)
        agg = q.sets.get(set_id) if q is not None else None
        if q is None or agg is None or agg.group != group:
            return None
        return q, agg

    async def read_aggregation_set(self, queue: str, group: str, set_id: str) -> list[TaskMessage]:
        """Messages of an aggregation set, oldest first (empty when it is gone)."""
        with self._lock:
            found = self._set(queue, group, set_id)
            if found is None:
                return []
            q, agg = found
            return [q.tasks[i].msg for i in agg.ids]

    async def finish_aggregation(
        self, queue: str, group: str, set_id: str, message: TaskMessage
    ) -> bool:
        """Enqueue ``message`` as pending and delete the set with its members; False if gone.

        Raises:
            TaskIDConflictError: ``message.id`` exists in the queue.
        """
        with self._lock:
            found = self._set(queue, group, set_id)
            if found is None:
                return False
            q, agg = found
            if message.id in q.tasks and message.id not in agg.ids:
                raise TaskIDConflictError(f"task id {message.id!r} already exists in {queue!r}")
            self._drop_set(q, set_id, agg)
            entry = _Entry(message)
            q.tasks[message.id] = entry
            self._to_pending(q, entry, self._now())
            return True

    def _drop_set(self, q: _Queue, set_id: str, agg: _AggregationSet) -> None:
        for task_id in list(agg.ids):
            entry = q.tasks.pop(task_id)
            self._release_lock(q, entry)
        q.sets.pop(set_id, None)

    async def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """Delete an aggregation set and its member tasks (no-op when it is gone)."""
        with self._lock:
            found = self._set(queue, group, set_id)
            if found is not None:
                self._drop_set(found[0], set_id, found[1])

    async def reclaim_stale_aggregation_sets(self, queue: str, *, older_than: int) -> int:
        """Return members of sets older than ``older_than`` ms to their group; how many tasks."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return 0
            now = self._now()
            moved = 0
            for set_id, agg in list(q.sets.items()):
                if now - agg.created_at <= older_than:
                    continue
                del q.sets[set_id]
                members = q.groups.setdefault(agg.group, {})
                for task_id in agg.ids:
                    q.tasks[task_id].set_id = None
                    members[task_id] = None
                    moved += 1
                # Members keep their original arrival times; keep the group oldest first.
                ordered = sorted(members, key=lambda i: q.tasks[i].group_added)
                q.groups[agg.group] = dict.fromkeys(ordered)
            return moved

    # ------------------------------------------------------------------ cancellation

    async def request_cancel(self, task_id: str, queue: str | None = None) -> TaskState | None:
        """Mark an active task cancelled (and notify), or archive one not yet started.

        Archiving releases the task's unique lock (if it still owns it).
        """
        with self._lock:
            names = [queue] if queue is not None else sorted(self._queues)
            for name in names:
                q = self._queues.get(name)
                entry = q.tasks.get(task_id) if q is not None else None
                if q is None or entry is None:
                    continue
                state = entry.state
                if state is _ACTIVE:
                    entry.cancel = True
                    for sub in self._subscribers:
                        sub._publish(task_id)
                elif state in (_PENDING, _SCHEDULED, _RETRY, _AGGREGATING):
                    self._archive_by_hand(q, entry, _CANCELED)
                return state
            return None

    async def cancel_requested(self, queue: str, task_ids: Sequence[str]) -> set[str]:
        """The ids among ``task_ids`` whose cancellation was requested while active."""
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                return set()
            found = set()
            for task_id in task_ids:
                entry = q.tasks.get(task_id)
                if entry is not None and entry.cancel:
                    found.add(task_id)
            return found

    async def subscribe_cancellations(self) -> _CancelSubscription:
        """Subscribe (on the running loop) to cancellation requests made from now on."""
        sub = _CancelSubscription(self, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def _unsubscribe(self, sub: _CancelSubscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    # ------------------------------------------------------------------ fleet

    async def write_server_state(self, info: ServerInfo, *, ttl: int) -> None:
        """Publish a server for ``ttl`` ms."""
        with self._lock:
            self._servers[info.id] = (info, self._now() + ttl)

    async def clear_server_state(self, server_id: str) -> None:
        """Remove a server's published state."""
        with self._lock:
            self._servers.pop(server_id, None)

    async def servers(self) -> list[ServerInfo]:
        """Live servers, sorted by id."""
        with self._lock:
            return _live(self._servers, self._now())

    async def write_scheduler_entries(
        self, scheduler_id: str, entries: Sequence[SchedulerEntryInfo], *, ttl: int
    ) -> None:
        """Publish a scheduler's entries for ``ttl`` ms (replacing its previous ones)."""
        with self._lock:
            self._schedulers[scheduler_id] = (tuple(entries), self._now() + ttl)

    async def clear_scheduler_entries(self, scheduler_id: str) -> None:
        """Remove a scheduler's published entries."""
        with self._lock:
            self._schedulers.pop(scheduler_id, None)

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """Entries of every live scheduler (by scheduler id, then in published order)."""
        with self._lock:
            return [e for entries in _live(self._schedulers, self._now()) for e in entries]

    async def record_scheduler_event(
        self, entry_id: str, event: SchedulerEvent, *, keep: int = 1000
    ) -> None:
        """Append to an entry's history, keeping the newest ``keep`` events."""
        with self._lock:
            events = self._events.setdefault(entry_id, [])
            insort(events, event, key=lambda e: e.enqueued_at)
            if len(events) > keep:
                del events[: len(events) - keep]

    async def scheduler_events(self, entry_id: str, *, limit: int = 100) -> list[SchedulerEvent]:
        """An entry's history, newest first."""
        with self._lock:
            events = self._events.get(entry_id, [])
            return events[::-1][:limit]

    async def claim_scheduler_tick(self, entry_id: str, tick: int, *, ttl: int) -> bool:
        """True for exactly one caller per (entry, tick) while the claim lives."""
        with self._lock:
            now = self._now()
            if len(self._claims) > 1024:
                self._claims = {k: exp for k, exp in self._claims.items() if exp > now}
            expires = self._claims.get((entry_id, tick))
            if expires is not None and expires > now:
                return False
            self._claims[(entry_id, tick)] = now + ttl
            return True

    async def history(self, queue: str, days: int) -> list[DailyStats]:
        """Processed/failed counts of the last ``days`` UTC days (today first)."""
        with self._lock:
            q = self._queues.get(queue)
            today = self._now() // _DAY_MS
            epoch = date(1970, 1, 1)
            out = []
            for day in range(today, today - max(days, 0), -1):
                counts = q.daily.get(day, (0, 0)) if q is not None else (0, 0)
                out.append(DailyStats(queue, epoch + timedelta(days=day), counts[0], counts[1]))
            return out

    # ------------------------------------------------------------------ admin

    async def queues(self) -> list[str]:
        """Every known queue, sorted."""
        with self._lock:
            return sorted(self._queues)

    async def queue_stats(self, queue: str) -> QueueStats:
        """A snapshot of one queue.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        with self._lock:
            q = self._known(queue)
            now = self._now()
            latency = 0
            if q.pending:
                head = q.tasks[next(iter(q.pending))]
                latency = max(0, now - head.pending_since)
            today = q.daily.get(now // _DAY_MS, [0, 0])
            return QueueStats(
                queue=queue,
                size=len(q.tasks),
                pending=len(q.pending),
                active=len(q.active),
                scheduled=len(q.scheduled),
                retry=len(q.retry),
                archived=len(q.archived),
                completed=len(q.completed),
                aggregating=q.aggregating_count(),
                groups=len(q.groups),
                paused=q.paused,
                latency=latency,
                processed=today[0],
                failed=today[1],
                processed_total=q.processed_total,
                failed_total=q.failed_total,
                timestamp=now,
            )

    def _ids_in(self, q: _Queue, state: TaskState, group: str | None) -> Iterable[str]:
        """Ids in ``state`` in the state's natural order."""
        if state is _PENDING:
            return q.pending
        if state is _ACTIVE:
            return q.active
        if state is _SCHEDULED:
            return q.scheduled.ordered()
        if state is _RETRY:
            return q.retry.ordered()
        if state is _ARCHIVED:
            return q.archived
        if state is _COMPLETED:
            return q.completed
        ids = [i for g, members in q.groups.items() if group is None or g == group for i in members]
        ids += [
            i for agg in q.sets.values() if group is None or agg.group == group for i in agg.ids
        ]
        ids.sort(key=lambda i: q.tasks[i].group_added)
        return ids

    def _info(self, q: _Queue, entry: _Entry, now: int) -> TaskInfo:
        state = entry.state
        next_at = 0
        if state is _PENDING:
            next_at = now
        elif state is _SCHEDULED or state is _RETRY:
            next_at = entry.score
        orphaned = state is _ACTIVE and (entry.lease_expires is None or entry.lease_expires <= now)
        return TaskInfo.from_message(
            entry.msg, state, next_process_at=next_at, result=entry.result, is_orphaned=orphaned
        )

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

        Raises:
            QueueNotFoundError: the queue is unknown.
            InvalidArgumentError: a negative offset or limit.
        """
        if offset < 0 or limit < 0:
            raise InvalidArgumentError("offset and limit must not be negative")
        state = TaskState(state)
        with self._lock:
            q = self._known(queue)
            now = self._now()
            page = itertools.islice(self._ids_in(q, state, group), offset, offset + limit)
            return [self._info(q, q.tasks[i], now) for i in page]

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task in whatever state it is.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
        """
        with self._lock:
            q = self._known(queue)
            return self._info(q, self._entry(q, task_id), self._now())

    def _delete(self, q: _Queue, entry: _Entry) -> None:
        if entry.state is _ACTIVE:
            raise TaskStateError(f"task {entry.msg.id!r} is active; it cannot be deleted")
        self._remove(q, entry)
        self._release_lock(q, entry)

    def _run(self, q: _Queue, entry: _Entry, now: int) -> None:
        if entry.state is _PENDING or entry.state is _ACTIVE:
            raise TaskStateError(f"task {entry.msg.id!r} is {entry.state.value}; it cannot be run")
        was = entry.state
        self._detach(q, entry)
        if was is _ARCHIVED:
            entry.msg = attrs.evolve(entry.msg, retried=0, last_error="")
        elif was is _COMPLETED:
            entry.msg = attrs.evolve(entry.msg, completed_at=0)
        self._to_pending(q, entry, now)

    def _archive_by_hand(self, q: _Queue, entry: _Entry, reason: str = "") -> None:
        if entry.state in (_ACTIVE, _ARCHIVED, _COMPLETED):
            raise TaskStateError(
                f"task {entry.msg.id!r} is {entry.state.value}; it cannot be archived"
            )
        now = self._now()
        self._detach(q, entry)
        self._release_lock(q, entry)
        if reason:
            entry.msg = attrs.evolve(entry.msg, last_error=reason, last_failed_at=now)
        self._to_scored(q, entry, _ARCHIVED, now)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active; releases its unique lock.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active).
        """
        with self._lock:
            q = self._known(queue)
            self._delete(q, self._entry(q, task_id))

    async def run_task(self, queue: str, task_id: str) -> None:
        """Move a scheduled, retry, archived, completed or aggregating task to pending.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (pending or active).
        """
        with self._lock:
            q = self._known(queue)
            self._run(q, self._entry(q, task_id), self._now())

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a pending, scheduled, retry or aggregating task to archived.

        Releases its unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active, archived, completed).
        """
        with self._lock:
            q = self._known(queue)
            self._archive_by_hand(q, self._entry(q, task_id))

    def _bulk(
        self,
        queue: str,
        state: TaskState,
        group: str | None,
        limit: int,
        allowed: tuple[TaskState, ...],
        verb: str,
    ) -> tuple[_Queue, list[_Entry]]:
        state = TaskState(state)
        q = self._known(queue)
        if state not in allowed:
            raise TaskStateError(f"cannot {verb} {state.value} tasks")
        ids = list(itertools.islice(self._ids_in(q, state, group), max(limit, 0)))
        return q, [q.tasks[i] for i in ids]

    async def delete_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Delete up to ``limit`` tasks in ``state``; how many.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active.
        """
        allowed = (_PENDING, _SCHEDULED, _RETRY, _ARCHIVED, _COMPLETED, _AGGREGATING)
        with self._lock:
            q, entries = self._bulk(queue, state, group, limit, allowed, "delete")
            for entry in entries:
                self._delete(q, entry)
            return len(entries)

    async def run_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Run up to ``limit`` tasks in ``state`` as :meth:`run_task`; how many.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is pending or active.
        """
        allowed = (_SCHEDULED, _RETRY, _ARCHIVED, _COMPLETED, _AGGREGATING)
        with self._lock:
            q, entries = self._bulk(queue, state, group, limit, allowed, "run")
            now = self._now()
            for entry in entries:
                self._run(q, entry, now)
            return len(entries)

    async def archive_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Archive up to ``limit`` tasks in ``state`` as :meth:`archive_task`; how many.

        Releases each task's unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active, archived or completed.
        """
        allowed = (_PENDING, _SCHEDULED, _RETRY, _AGGREGATING)
        with self._lock:
            q, entries = self._bulk(queue, state, group, limit, allowed, "archive")
            for entry in entries:
                self._archive_by_hand(q, entry)
            return len(entries)

    async def pause_queue(self, queue: str) -> None:
        """Stop dequeuing from ``queue``.

        Raises:
            QueueNotFoundError.
        """
        with self._lock:
            self._known(queue).paused = True

    async def unpause_queue(self, queue: str) -> None:
        """Resume dequeuing from ``queue``.

        Raises:
            QueueNotFoundError.
        """
        with self._lock:
            q = self._known(queue)
            q.paused = False
            if q.pending:
                self._wake(queue)

    async def remove_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove a queue with everything in it.

        Raises:
            QueueNotFoundError: unknown queue.
            QueueNotEmptyError: it holds tasks (without ``force``) or active tasks.
        """
        with self._lock:
            q = self._known(queue)
            if q.active:
                raise QueueNotEmptyError(f"queue {queue!r} has {len(q.active)} active tasks")
            if q.tasks and not force:
                raise QueueNotEmptyError(
                    f"queue {queue!r} holds {len(q.tasks)} tasks (use force=True)"
                )
            del self._queues[queue]

    # ------------------------------------------------------------------ lifecycle

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """End the dequeues waiting now and every cancellation subscription. Idempotent.

        The stored tasks stay and the broker keeps working: one broker may be
        shared by a client and a worker, and either may close it first.
        """
        with self._lock:
            waiters = list(self._waiters)
            self._waiters.clear()
            subscribers = list(self._subscribers)
        for waiter in waiters:
            waiter.closed = True
            _call_soon(waiter.loop, _resolve, waiter.future)
        for sub in subscribers:
            sub._closed = True
            sub._publish(None)
        with self._lock:
            self._subscribers.clear()
