"""Clients put tasks on queues: :class:`AsyncClient`, and its sync twin :class:`Client`.

Every option is validated before any broker I/O, so a bad call raises a
:class:`~taskq.errors.InvalidArgumentError` and stores nothing. A producer
waits for a task's outcome with ``wait``: it reads the task through the
broker's ``get_task`` with a capped exponential backoff, so it works on every
broker alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from taskq._sync import run_sync
from taskq._time import Clock, SystemClock, dt_to_ms, ms_to_dt, ms_to_td, td_to_ms
from taskq.brokers.base import BlockingProducer, Broker, EnqueueRequest
from taskq.brokers.registry import DEFAULT_BROKER_URL, connect
from taskq.errors import (
    InvalidArgumentError,
    InvalidDurationError,
    TaskFailedError,
    TaskNotFoundError,
    WaitTimeoutError,
)
from taskq.task import (
    DEFAULT_MAX_RETRY,
    DEFAULT_QUEUE,
    ENQUEUE_OPTIONS,
    MAX_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    Task,
    TaskInfo,
    TaskMessage,
    TaskState,
    check_payload_size,
    validate_group_name,
    validate_queue_name,
)

__all__ = ["DEFAULT_WAIT_POLL", "AsyncClient", "Client", "EnqueueHook", "resolve_broker"]

EnqueueHook = Callable[[Task], Task]
"""A function run on every task before it is enqueued (tracing, tenancy, signing)."""

_OPTION_NAMES = frozenset(ENQUEUE_OPTIONS)
_EPOCH = ms_to_dt(0)

DEFAULT_WAIT_POLL = timedelta(milliseconds=500)
"""The longest pause between two reads of a waited-for task, unless ``poll`` is given."""
_FIRST_WAIT_PAUSE = 0.005


def resolve_broker(broker: Broker | str | None) -> Broker:
    """Return ``broker`` itself, the broker for a URL, or the default one.

    The default is ``$TASKQ_BROKER`` when set, else ``sqlite:///taskq.db``.
    """
    if broker is None:
        broker = os.environ.get("TASKQ_BROKER") or DEFAULT_BROKER_URL
    if isinstance(broker, str):
        return connect(broker)
    return broker


def unique_key(queue: str, task_type: str, payload: bytes) -> str:
    """The unique-lock name of a task: its queue, type and the SHA-256 of its payload."""
    return f"{queue}:{task_type}:{hashlib.sha256(payload).hexdigest()}"


class _TaskIds:
    """Random UUID4 strings, as ``str(uuid.uuid4())`` at a fraction of its cost.

    Random bytes are read from the OS 256 ids at a time rather than with one
    ``os.urandom`` call per id. The block is thrown away in a forked child
    (which would otherwise hand out its parent's ids) and the draw is
    serialised with a lock (the sync Client may be used from many threads).
    """

    _BLOCK = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._raw = b""
        self._next = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._raw = b""
        self._next = 0

    def __call__(self) -> str:
        with self._lock:
            i = self._next
            if i >= len(self._raw):
                self._raw = os.urandom(16 * self._BLOCK)
                i = 0
            self._next = i + 16
            raw = bytearray(self._raw[i : i + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def many(self, count: int) -> list[str]:
        """``count`` ids from one read of the OS's random bytes (for a batch).

        The version and variant bits of all ids are set at once by masking
        the block as one integer, ``_BLOCK`` ids at a time.
        """
        ids: list[str] = []
        for start in range(0, count, self._BLOCK):
            n = min(self._BLOCK, count - start)
            bits = 128 * n
            low = (1 << bits) - 1
            block = int.from_bytes(os.urandom(16 * n), "big") & _ID_AND & low | _ID_OR & low
            h = block.to_bytes(16 * n, "big").hex()
            ids += [
                f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
                f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
                for i in range(0, 32 * n, 32)
            ]
        return ids


# Masks over _TaskIds._BLOCK ids at once: each 16-byte id keeps its bits except
# the version nibble (set to 4) and the two variant bits (set to 10).
_ID_AND = int.from_bytes((b"\xff" * 6 + b"\x0f\xff\x3f" + b"\xff" * 7) * _TaskIds._BLOCK, "big")
_ID_OR = int.from_bytes((b"\x00" * 6 + b"\x40\x00\x80" + b"\x00" * 7) * _TaskIds._BLOCK, "big")


_new_task_id = _TaskIds()


def _check_task_id(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError("task_id must be a non-empty str")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"task_id is longer than {MAX_NAME_LENGTH} bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgumentError("task_id must not contain control characters")
    return value


def _positive_ms(value: object, name: str, *, allow_zero: bool = False) -> int:
    if not isinstance(value, timedelta):
        raise InvalidDurationError(f"{name} must be a timedelta, got {type(value).__name__}")
    ms = td_to_ms(value, name=name)
    if ms == 0 and not allow_zero:
        raise InvalidDurationError(f"{name} must be at least 1 ms, got {value!r}")
    return ms


@attrs.frozen(slots=False)
class _Plan(EnqueueRequest):
    """A validated enqueue: the request a broker stores, and the options it was made from.

    A batch's plans are passed to :meth:`Broker.enqueue_many` as they are.
    """

    options: _Options = attrs.field(kw_only=True, eq=False)


class _Options:
    """Merged enqueue options past validation, with their TaskInfo forms precomputed.

    Built once per call for every task that sets no options of its own, so a
    batch validates and converts its shared options once.
    """

    __slots__ = (
        "deadline",
        "deadline_dt",
        "group",
        "max_retry",
        "process_at",
        "process_at_dt",
        "process_in",
        "retention",
        "retention_td",
        "task_id",
        "timeout",
        "timeout_td",
        "unique_ttl",
    )

    def __init__(self, merged: dict[str, Any]) -> None:
        max_retry = merged.get("max_retry", DEFAULT_MAX_RETRY)
        if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0:
            raise InvalidArgumentError(f"max_retry must be an int >= 0, got {max_retry!r}")
        self.max_retry: int = max_retry
        # process_at is absolute; process_in is added to each task's "now".
        self.process_at = 0
        self.process_in: int | None = None
        if "process_at" in merged:
            self.process_at = dt_to_ms(merged["process_at"], name="process_at")
        elif "process_in" in merged:
            self.process_in = _positive_ms(merged["process_in"], "process_in", allow_zero=True)
        self.timeout = _positive_ms(merged["timeout"], "timeout") if "timeout" in merged else 0
        self.deadline = dt_to_ms(merged["deadline"], name="deadline") if "deadline" in merged else 0
        self.retention = (
            _positive_ms(merged["retention"], "retention", allow_zero=True)
            if "retention" in merged
            else 0
        )
        self.unique_ttl = _positive_ms(merged["unique"], "unique") if "unique" in merged else 0
        self.task_id: str | None = (
            _check_task_id(merged["task_id"]) if "task_id" in merged else None
        )
        self.group = validate_group_name(merged["group"]) if "group" in merged else ""
        self.process_at_dt = ms_to_dt(self.process_at) if self.process_at else None
        self.timeout_td = ms_to_td(self.timeout) if self.timeout else None
        self.deadline_dt = ms_to_dt(self.deadline) if self.deadline else None
        self.retention_td = ms_to_td(self.retention) if self.retention else None


class _Shared:
    """The options of one enqueue call, checked and resolved on first use, then reused."""

    __slots__ = ("_given", "_options", "_queue", "raw")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self._given: dict[str, Any] | None = None
        self._queue: str | None = None
        self._options: _Options | None = None

    def given(self) -> dict[str, Any]:
        """The options that were set (not None); raises on an unknown name."""
        if self._given is None:
            unknown = set(self.raw) - _OPTION_NAMES
            if unknown:
                raise InvalidArgumentError(
                    f"unknown enqueue option(s): {', '.join(sorted(unknown))}"
                )
            self._given = {k: v for k, v in self.raw.items() if v is not None}
        return self._given

    def queue(self) -> str:
        """The validated queue of a task that sets no options itself."""
        if self._queue is None:
            self._queue = _resolve_queue(self.given())
        return self._queue

    def options(self) -> _Options:
        """The other validated options of a task that sets no options itself."""
        if self._options is None:
            self._options = _Options(self.given())
        return self._options


_NO_OPTIONS = _Shared({})
"""The options of a call that sets none; its checks and conversions are shared by all such calls.

Safe to share: a :class:`_Shared` only caches results computed from its raw
options, and :class:`_Options` is never changed after it is built.
"""


def _resolve_queue(merged: dict[str, Any]) -> str:
    if "process_at" in merged and "process_in" in merged:
        raise InvalidArgumentError("give process_at or process_in, not both")
    return validate_queue_name(merged.get("queue", DEFAULT_QUEUE))


def _merge(task: Task, given: dict[str, Any]) -> dict[str, Any]:
    """The task's own options overridden by those given to the call."""
    merged = task.options()
    if "process_at" in given or "process_in" in given:
        merged.pop("process_at", None)
        merged.pop("process_in", None)
    merged.update(given)
    return merged


def _seconds(value: object, name: str) -> float:
    """A duration given as a timedelta or a number of seconds, in seconds (>= 0)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidDurationError(
            f"{name} must be a timedelta or seconds, got {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidDurationError(f"{name} must be a finite duration >= 0, got {value!r}")
    return seconds


class _Waiting:
    """One wait for a task's outcome: what to read, when it is over, how long to pause.

    Both :meth:`AsyncClient.wait` and :meth:`Client.wait` drive it: read, call
    :meth:`outcome`, and sleep :meth:`pause` seconds until it returns a TaskInfo.
    Time is the monotonic clock: a wait lasts real time, whatever clock the
    client stamps tasks with.
    """

    __slots__ = (
        "_cap",
        "_deadline",
        "_monotonic",
        "_next",
        "_seen",
        "_timeout",
        "last",
        "queue",
        "task_id",
    )

    def __init__(
        self,
        task: TaskInfo | str,
        queue: str | None,
        timeout: timedelta | float | None,
        poll: timedelta | float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self.last: TaskInfo | None = None
        if isinstance(task, TaskInfo):
            if queue is not None and queue != task.queue:
                raise InvalidArgumentError(
                    f"queue {queue!r} differs from the task's own queue {task.queue!r}"
                )
            self.queue, self.task_id = task.queue, task.id
            _check_waitable(task)
            self.last = task
        elif isinstance(task, str):
            self.queue = validate_queue_name(DEFAULT_QUEUE if queue is None else queue)
            self.task_id = _check_task_id(task)
        else:
            raise InvalidArgumentError(
                f"wait takes a TaskInfo or a task id, got {type(task).__name__}"
            )
        self._timeout = None if timeout is None else _seconds(timeout, "timeout")
        self._cap = _seconds(poll, "poll")
        if self._cap == 0:
            raise InvalidDurationError("poll must be longer than 0")
        self._next = min(_FIRST_WAIT_PAUSE, self._cap)
        self._seen = self.last is not None
        self._deadline = None if self._timeout is None else monotonic() + self._timeout

    async def read(self, broker: Broker) -> TaskInfo:
        """The task as stored now.

        Raises:
            TaskNotFoundError: with a message saying so when the task existed
                before (seen by the caller or by an earlier read) and is gone.
        """
        try:
            info = await broker.get_task(self.queue, self.task_id)
        except TaskNotFoundError as error:
            if not self._seen:
                raise
            raise TaskNotFoundError(
                f"task {self.task_id!r} in queue {self.queue!r} no longer exists: it was "
                "deleted, dropped (RevokeTask), or its retention ended before its outcome "
                "was read"
            ) from error
        self._seen = True
        return info

    def outcome(self, info: TaskInfo) -> TaskInfo | None:
        """``info`` if the task is completed, None while it is not final yet.

        Raises:
            TaskFailedError: the task is archived.
            InvalidArgumentError: the task is not final and its outcome will not be kept.
        """
        self.last = info
        if info.state is TaskState.COMPLETED:
            return info
        if info.state is TaskState.ARCHIVED:
            raise TaskFailedError(info)
        _check_waitable(info)
        return None

    def pause(self) -> float:
        """Seconds to sleep before the next read: doubling up to ``poll``, cut at the deadline.

        Raises:
            WaitTimeoutError: the timeout has passed.
        """
        pause = self._next
        self._next = min(pause * 2, self._cap)
        if self._deadline is None:
            return pause
        left = self._deadline - self._monotonic()
        if left <= 0:
            assert self.last is not None and self._timeout is not None
            raise WaitTimeoutError(self.last, self._timeout)
        return min(pause, left)


def _check_waitable(info: TaskInfo) -> None:
    """Refuse a task whose outcome will not be readable once it has one."""
    if info.state is TaskState.COMPLETED or info.state is TaskState.ARCHIVED:
        return
    if info.group is not None:
        raise InvalidArgumentError(
            f"task {info.id!r} is in group {info.group!r}: the group is aggregated into a "
            "new task with a new id, so this one cannot be waited for"
        )
    if info.retention is None:
        raise InvalidArgumentError(
            f"task {info.id!r} has no retention: it is deleted when it succeeds, so its "
            "outcome cannot be waited for; enqueue it with retention=timedelta(...)"
        )


class AsyncClient:
    """Enqueue tasks from async code.

    Args:
        broker: a :class:`~taskq.brokers.base.Broker`, a broker URL, or None for
            ``$TASKQ_BROKER`` / the SQLite file ``taskq.db``.
        clock: where "now" comes from for ``process_in`` and ``enqueued_at``.
        max_payload_size: payloads longer than this (bytes) are refused.
    """

    def __init__(
        self,
        broker: Broker | str | None = None,
        *,
        clock: Clock | None = None,
        max_payload_size: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.broker: Broker = resolve_broker(broker)
        self._owns_broker = not _is_broker(broker)
        self._clock = clock or SystemClock()
        self._hooks: list[EnqueueHook] = []
        self._max_payload = max_payload_size

    def __repr__(self) -> str:
        return f"AsyncClient({self.broker!r})"

    def use(self, hook: EnqueueHook) -> None:
        """Run ``hook(task) -> task`` on every task before it is enqueued (in order added)."""
        if not callable(hook):
            raise InvalidArgumentError("hook must be callable")
        self._hooks.append(hook)

    def _plan(self, task: Task, options: dict[str, Any]) -> _Plan:
        """Validate ``task`` with the options of one enqueue call (no broker I/O)."""
        return self._plan_with(task, _Shared(options))

    def _plan_with(self, task: Task, shared: _Shared, now: int | None = None) -> _Plan:
        if not isinstance(task, Task):
            raise InvalidArgumentError(f"expected a taskq.Task, got {type(task).__name__}")
        given = shared.given()
        for hook in self._hooks:
            task = hook(task)
            if not isinstance(task, Task):
                raise InvalidArgumentError("an enqueue hook must return a taskq.Task")
        payload = task.payload
        if _has_options(task):
            merged = _merge(task, given)
            queue = _resolve_queue(merged)
            check_payload_size(payload, self._max_payload)
            opts = _Options(merged)
        else:
            queue = shared.queue()
            check_payload_size(payload, self._max_payload)
            opts = shared.options()

        if now is None:
            now = self._clock.now_ms()
        process_at = opts.process_at
        if opts.process_in is not None:
            process_at = now + opts.process_in
        unique_ttl = opts.unique_ttl
        message = TaskMessage(
            id=opts.task_id if opts.task_id is not None else _new_task_id(),
            type=task.type,
            payload=payload,
            queue=queue,
            headers=task.headers,
            max_retry=opts.max_retry,
            timeout=opts.timeout,
            deadline=opts.deadline,
            unique_key=unique_key(queue, task.type, payload) if unique_ttl else "",
            group=opts.group,
            retention=opts.retention,
            enqueued_at=now,
        )
        return _Plan(message, process_at, unique_ttl, options=opts)

    @staticmethod
    def _info(plan: _Plan, state: TaskState, times: _DtCache) -> TaskInfo:
        """The TaskInfo of a just-stored task (as TaskInfo.from_message, conversions reused)."""
        msg = plan.message
        opts = plan.options
        enqueued_at = times.get(msg.enqueued_at)
        if state is TaskState.PENDING:
            due: datetime | None = enqueued_at
        elif state is TaskState.SCHEDULED and plan.process_at:
            due = (
                opts.process_at_dt
                if opts.process_at_dt is not None and plan.process_at == opts.process_at
                else times.get(plan.process_at)
            )
        else:
            due = None
        # Positional (a third cheaper than keywords), in TaskInfo's field order:
        # id, queue, type, payload, headers, state, max_retry, retried,
        # last_error, last_failed_at, timeout, deadline, group,
        # next_process_at, retention, enqueued_at, completed_at.
        return TaskInfo(
            msg.id,
            msg.queue,
            msg.type,
            msg.payload,
            dict(msg.headers),
            state,
            msg.max_retry,
            0,
            "",
            None,
            opts.timeout_td,
            opts.deadline_dt,
            msg.group or None,
            due,
            opts.retention_td,
            enqueued_at,
            None,
        )

    async def enqueue(
        self,
        task: Task,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: timedelta | None = None,
        deadline: datetime | None = None,
        unique: timedelta | None = None,
        task_id: str | None = None,
        retention: timedelta | None = None,
        group: str | None = None,
        process_at: datetime | None = None,
        process_in: timedelta | None = None,
    ) -> TaskInfo:
        """Put ``task`` on a queue and return what was stored.

        The task is stored as ``scheduled`` when it is due in the future, else
        ``aggregating`` when it has a ``group``, else ``pending``. Options given
        here override those given to :class:`~taskq.Task`.

        Args:
            queue: the queue name (default "default").
            max_retry: how many times a failing task is retried (default 25).
            timeout: the longest one attempt may run (default 30 min when no deadline).
            deadline: an aware datetime after which the task must not run.
            unique: hold a lock on (queue, type, payload) for this long; a second
                enqueue while it is held raises DuplicateTaskError.
            task_id: your own id (default a UUID4); must be unused in the queue.
            retention: keep the task as ``completed`` (with its result) this long.
            group: aggregate the task into this group (see the group aggregator).
            process_at, process_in: when to run it (aware datetime / delay); not both.

        Raises:
            InvalidArgumentError: a bad option (before any broker I/O).
            TaskIDConflictError: ``task_id`` is already used in the queue.
            DuplicateTaskError: the unique lock is held.
            BrokerError: the broker failed.
        """
        shared = _call_options(
            queue=queue,
            max_retry=max_retry,
            timeout=timeout,
            deadline=deadline,
            unique=unique,
            task_id=task_id,
            retention=retention,
            group=group,
            process_at=process_at,
            process_in=process_in,
        )
        return await self._store(self._plan_with(task, shared))

    async def _store(self, plan: _Plan) -> TaskInfo:
        """Store one validated task with the broker method its plan calls for."""
        msg = plan.message
        target = _target_state(plan, self._clock.now_ms())
        if target is TaskState.SCHEDULED:
            state = await self.broker.schedule(msg, plan.process_at, unique_ttl=plan.unique_ttl)
        elif target is TaskState.AGGREGATING:
            state = await self.broker.add_to_group(msg, unique_ttl=plan.unique_ttl)
        else:
            state = await self.broker.enqueue(msg, unique_ttl=plan.unique_ttl)
        return self._info(plan, state, _DtCache())

    def _request(self, plan: _Plan) -> EnqueueRequest:
        """The batch form of :meth:`_store`'s choice: a due time only when it is in the future."""
        process_at = plan.process_at if plan.process_at > self._clock.now_ms() else 0
        return EnqueueRequest(plan.message, process_at, plan.unique_ttl)

    async def enqueue_many(
        self, tasks: Iterable[Task], **options: Any
    ) -> list[TaskInfo | Exception]:
        """Enqueue many tasks in as few round trips as the broker allows.

        ``options`` apply to every task (as in :meth:`enqueue`). Each task is
        stored atomically on its own; the batch is not all-or-nothing. All tasks
        are validated before anything is stored. The clock is read once per
        call: every task of it has the same ``enqueued_at`` (and ``process_in``
        counts from that instant).

        Returns:
            per task, in order, its TaskInfo or the error that refused it
            (TaskIDConflictError, DuplicateTaskError).
        """
        plans = self._plans(tasks, options)
        if not plans:
            return []
        if len(plans) < _OVERLAP_MIN:
            return self._infos(plans, await self.broker.enqueue_many(plans))
        # Build the TaskInfos while the broker works: the broker call runs as
        # its own task, which sends the batch at its first step (one yield to
        # the loop) and then waits for the replies, while this coroutine builds
        # each task's TaskInfo for the state its plan predicts. Items the broker
        # answers differently get theirs rebuilt.
        storing = asyncio.ensure_future(self.broker.enqueue_many(plans))
        try:
            await asyncio.sleep(0)
            predicted = self._predicted_infos(plans)
        except BaseException:
            if not storing.cancel() and not storing.cancelled():
                storing.exception()  # already over: retrieved, the caller's error wins
            raise
        return self._infos(plans, await storing, predicted)

    def _plans(self, tasks: Iterable[Task], options: dict[str, Any]) -> list[_Plan]:
        """Validate every task of an :meth:`enqueue_many` call (no broker I/O).

        The same checks and messages as :meth:`_plan_with` task by task, with
        what a batch shares done once: one clock read (every task of the call
        is enqueued at the same millisecond), the ids drawn together, and the
        call's options resolved once for the tasks that set none of their own.
        Hooks may change any task, so with hooks each task takes the general path.
        """
        shared = _Shared(options) if options else _NO_OPTIONS
        tasks = tasks if isinstance(tasks, list) else list(tasks)
        if not tasks:
            return []
        now = self._clock.now_ms()
        if self._hooks:
            return [self._plan_with(task, shared, now) for task in tasks]
        plans: list[_Plan] = []
        append = plans.append
        ids: list[str] | None = None
        opts: _Options | None = None
        queue = ""
        unique_ttl = 0
        limit = self._max_payload
        # The tasks that set no options of their own differ only in id, type,
        # payload and headers (and unique key): each message and plan is a copy
        # of the call's prototype with those filled in, three times cheaper
        # than attrs' frozen __init__ (which sets each field through
        # object.__setattr__). test_client_batch pins them equal to
        # one-by-one plans.
        message_fields: dict[str, Any] = {}
        plan_fields: dict[str, Any] = {}
        new = object.__new__
        for i, task in enumerate(tasks):
            if type(task) is not Task or _has_options(task):
                append(self._plan_with(task, shared, now))
                continue
            if opts is None:
                queue, opts = shared.queue(), shared.options()
                unique_ttl = opts.unique_ttl
                process_at = opts.process_at
                if opts.process_in is not None:
                    process_at = now + opts.process_in
                prototype = _Plan(
                    TaskMessage(
                        "",
                        "",
                        b"",
                        queue,
                        {},
                        opts.max_retry,
                        timeout=opts.timeout,
                        deadline=opts.deadline,
                        group=opts.group,
                        retention=opts.retention,
                        enqueued_at=now,
                    ),
                    process_at,
                    unique_ttl,
                    options=opts,
                )
                message_fields = prototype.message.__dict__
                plan_fields = prototype.__dict__
            payload = task.payload
            if len(payload) > limit:
                check_payload_size(payload, limit)
            task_id = opts.task_id
            if task_id is None:
                if ids is None:
                    ids = _new_task_id.many(len(tasks))
                task_id = ids[i]
            message = new(TaskMessage)
            fields = message.__dict__
            fields.update(message_fields)
            fields["id"] = task_id
            fields["type"] = task.type
            fields["payload"] = payload
            fields["headers"] = task.headers
            if unique_ttl:
                fields["unique_key"] = unique_key(queue, task.type, payload)
            plan = new(_Plan)
            fields = plan.__dict__
            fields.update(plan_fields)
            fields["message"] = message
            append(plan)
        return plans

    def _infos(
        self,
        plans: Sequence[_Plan],
        results: Sequence[TaskState | Exception],
        predicted: Sequence[TaskInfo] | None = None,
    ) -> list[TaskInfo | Exception]:
        """Per plan, the TaskInfo of its stored task or the error that refused it.

        ``predicted`` (from :meth:`_predicted_infos`) is used where the stored
        state is the predicted one.
        """
        times = _DtCache()
        info = self._info
        if predicted is None:
            return [
                result if isinstance(result, Exception) else info(plan, result, times)
                for plan, result in zip(plans, results, strict=True)
            ]
        return [
            guess
            if result is guess.state
            else result
            if isinstance(result, Exception)
            else info(plan, result, times)
            for plan, result, guess in zip(plans, results, predicted, strict=True)
        ]

    def _predicted_infos(self, plans: Sequence[_Plan]) -> list[TaskInfo]:
        """Per plan, its TaskInfo for the state the broker is expected to store it in.

        Plans made from the same options, queue and times get the same
        TaskInfo but for id, type, payload and headers: the first is built in
        full and the others are copies of its fields with those four replaced
        (as in :meth:`_plans`).
        """
        times = _DtCache()
        info = self._info
        now = self._clock.now_ms()
        new = object.__new__
        prototypes: dict[tuple[Any, ...], dict[str, Any]] = {}
        out: list[TaskInfo] = []
        append = out.append
        for plan in plans:
            msg = plan.message
            # The state follows from process_at and group (now is the same for all).
            key = (
                plan.options,
                plan.process_at,
                msg.group,
                msg.queue,
                msg.max_retry,
                msg.enqueued_at,
            )
            base = prototypes.get(key)
            if base is None:
                first = info(plan, _target_state(plan, now), times)
                prototypes[key] = first.__dict__
                append(first)
                continue
            made = new(TaskInfo)
            fields = made.__dict__
            fields.update(base)
            fields["id"] = msg.id
            fields["type"] = msg.type
            fields["payload"] = msg.payload
            fields["headers"] = dict(msg.headers)
            append(made)
        return out

    async def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        """Return the current :class:`TaskInfo` of a task.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
        """
        return await self.broker.get_task(validate_queue_name(queue), task_id)

    async def wait(
        self,
        task: TaskInfo | str,
        *,
        queue: str | None = None,
        timeout: timedelta | float | None = None,
        poll: timedelta | float = DEFAULT_WAIT_POLL,
    ) -> TaskInfo:
        """Wait until a task has an outcome; return its completed :class:`TaskInfo`.

        The task is read at once, then again after pauses that start at 5 ms
        and double up to ``poll``. Only tasks whose outcome is kept can be
        waited for: enqueue with ``retention=`` (a task without it is deleted
        when it succeeds) and without ``group=`` (a group becomes a new task).
        Cancelling the waiting coroutine stops the wait and nothing else.

        Args:
            task: the TaskInfo ``enqueue`` returned, or a task id.
            queue: the queue of a task id (default "default").
            timeout: how long to wait (timedelta or seconds); None: no limit.
            poll: the longest pause between two reads (default 500 ms).

        Returns:
            the task's TaskInfo in state ``completed``; ``.result`` holds what
            the handler wrote with ``ctx.write_result`` (None if nothing).

        Raises:
            TaskFailedError: the task ended ``archived`` (``.info.last_error``).
            WaitTimeoutError: ``timeout`` passed first (``.info``: the last read).
            TaskNotFoundError: no such task, or it was deleted while waited for
                (by hand, dropped with RevokeTask, or its retention ran out).
            InvalidArgumentError: the task has no retention or is in a group
                (for a TaskInfo before any broker I/O; for an id once it is
                read and not final yet), or a bad argument.
            QueueNotFoundError, BrokerError.
        """
        waiting = _Waiting(task, queue, timeout, poll)
        while True:
            done = waiting.outcome(await waiting.read(self.broker))
            if done is not None:
                return done
            await asyncio.sleep(waiting.pause())

    async def ping(self) -> None:
        """Check that the broker is reachable (raises BrokerConnectionError if not)."""
        await self.broker.ping()

    async def close(self) -> None:
        """Close the broker if this client created it from a URL."""
        if self._owns_broker:
            await self.broker.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _has_options(task: Task) -> bool:
    """Whether ``task`` sets any enqueue option itself (as ``bool(task.options())``)."""
    return (
        task.queue is not None
        or task.max_retry is not None
        or task.timeout is not None
        or task.deadline is not None
        or task.unique is not None
        or task.task_id is not None
        or task.retention is not None
        or task.group is not None
        or task.process_at is not None
        or task.process_in is not None
    )


def _call_options(
    *,
    queue: str | None,
    max_retry: int | None,
    timeout: timedelta | None,
    deadline: datetime | None,
    unique: timedelta | None,
    task_id: str | None,
    retention: timedelta | None,
    group: str | None,
    process_at: datetime | None,
    process_in: timedelta | None,
) -> _Shared:
    """The options of one ``enqueue`` call (the shared, once-validated empty set when none)."""
    if (
        queue is None
        and max_retry is None
        and timeout is None
        and deadline is None
        and unique is None
        and task_id is None
        and retention is None
        and group is None
        and process_at is None
        and process_in is None
    ):
        return _NO_OPTIONS  # validated once per process
    return _Shared(
        {
            "queue": queue,
            "max_retry": max_retry,
            "timeout": timeout,
            "deadline": deadline,
            "unique": unique,
            "task_id": task_id,
            "retention": retention,
            "group": group,
            "process_at": process_at,
            "process_in": process_in,
        }
    )


_OVERLAP_MIN = 64
"""Batches at least this long build their TaskInfos while the broker stores them."""


def _target_state(plan: _Plan, now: int) -> TaskState:
    """The state a new task is stored in, as every broker decides it (see EnqueueRequest).

    Scheduled when due after ``now``, else aggregating with a group, else pending.
    """
    if plan.process_at > now:
        return TaskState.SCHEDULED
    return TaskState.AGGREGATING if plan.message.group else TaskState.PENDING


class _DtCache:
    """``ms_to_dt`` that reuses the last result: a batch's tasks mostly share one millisecond."""

    __slots__ = ("_dt", "_ms")

    def __init__(self) -> None:
        self._ms = -1
        self._dt = _EPOCH

    def get(self, ms: int) -> datetime | None:
        if not ms:
            return None
        if ms != self._ms:
            self._ms = ms
            self._dt = ms_to_dt(ms)
        return self._dt


def _is_broker(value: object) -> bool:
    return value is not None and not isinstance(value, str)


class Client:
    """Enqueue tasks from synchronous code.

    Same arguments, options and errors as :class:`AsyncClient`, usable from
    plain threads (many at once), from inside a running event loop's thread
    pool, and in a forked child. Tasks are validated (and hooks run) on the
    calling thread. When the broker can store without an event loop
    (:class:`~taskq.brokers.base.BlockingProducer`: Redis standalone and
    Sentinel URLs, SQLite, memory), the enqueue happens right there too;
    otherwise, and for the other methods, the call runs on taskq's private
    event-loop thread.
    """

    def __init__(
        self,
        broker: Broker | str | None = None,
        *,
        clock: Clock | None = None,
        max_payload_size: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._async = AsyncClient(broker, clock=clock, max_payload_size=max_payload_size)
        found = self._async.broker
        self._blocking = found if isinstance(found, BlockingProducer) else None

    def __repr__(self) -> str:
        return f"Client({self._async.broker!r})"

    @property
    def broker(self) -> Broker:
        """The broker this client writes to."""
        return self._async.broker

    def use(self, hook: EnqueueHook) -> None:
        """Run ``hook(task) -> task`` on every task before it is enqueued."""
        self._async.use(hook)

    def enqueue(
        self,
        task: Task,
        *,
        queue: str | None = None,
        max_retry: int | None = None,
        timeout: timedelta | None = None,
        deadline: datetime | None = None,
        unique: timedelta | None = None,
        task_id: str | None = None,
        retention: timedelta | None = None,
        group: str | None = None,
        process_at: datetime | None = None,
        process_in: timedelta | None = None,
    ) -> TaskInfo:
        """Put ``task`` on a queue; see :meth:`AsyncClient.enqueue` (same options and errors)."""
        client = self._async
        shared = _call_options(
            queue=queue,
            max_retry=max_retry,
            timeout=timeout,
            deadline=deadline,
            unique=unique,
            task_id=task_id,
            retention=retention,
            group=group,
            process_at=process_at,
            process_in=process_in,
        )
        plan = client._plan_with(task, shared)
        if self._blocking is not None:
            results = self._blocking.enqueue_blocking([client._request(plan)])
            if results is not None:
                (result,) = results
                if isinstance(result, Exception):
                    raise result
                return client._info(plan, result, _DtCache())
        return run_sync(client._store(plan))

    def enqueue_many(self, tasks: Sequence[Task], **options: Any) -> list[TaskInfo | Exception]:
        """Enqueue many tasks; see :meth:`AsyncClient.enqueue_many`."""
        client = self._async
        plans = client._plans(tasks, options)
        if not plans:
            return []
        results = None
        if self._blocking is not None:
            results = self._blocking.enqueue_blocking(plans)
        if results is None:
            results = run_sync(client.broker.enqueue_many(plans))
        return client._infos(plans, results)

    def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        """Return the current :class:`TaskInfo` of a task."""
        return run_sync(self._async.get_task_info(queue, task_id))

    def wait(
        self,
        task: TaskInfo | str,
        *,
        queue: str | None = None,
        timeout: timedelta | float | None = None,
        poll: timedelta | float = DEFAULT_WAIT_POLL,
    ) -> TaskInfo:
        """Block until a task has an outcome; see :meth:`AsyncClient.wait` (same arguments, errors).

        The pauses are slept on the calling thread, and each read is one call
        on taskq's loop thread, which stays free in between; an interrupt
        (KeyboardInterrupt) stops the wait with nothing left running.
        """
        waiting = _Waiting(task, queue, timeout, poll)
        broker = self._async.broker
        while True:
            done = waiting.outcome(run_sync(waiting.read(broker)))
            if done is not None:
                return done
            time.sleep(waiting.pause())

    def ping(self) -> None:
        """Check that the broker is reachable."""
        run_sync(self._async.ping())

    def close(self) -> None:
        """Close the broker if this client created it from a URL."""
        run_sync(self._async.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
