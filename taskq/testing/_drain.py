"""Run a mux's handlers over a broker until nothing is left to do: :func:`drain`.

For tests of task handlers. It is not an "eager mode": each round is a real
burst :class:`~taskq.Server` (``Config(burst=True)``), so tasks are dequeued
under a lease, handlers get a real :class:`~taskq.Context`, middleware,
time limits, retries and archiving all happen as in production, through the
broker. With a :class:`~taskq.testing.FakeClock` that is the broker's clock,
the drain also moves time forward to the next scheduled or retry task, so a
task that fails twice and succeeds on its third attempt is drained in one call
without waiting for its back-off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import attrs

from taskq._time import dt_to_ms, td_to_ms
from taskq.brokers.base import Broker
from taskq.brokers.registry import connect
from taskq.errors import InvalidArgumentError, QueueNotFoundError
from taskq.mux import Context, Handler, ServeMux, is_async_handler
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.task import Task, TaskInfo, TaskState, validate_queue_name
from taskq.testing.clock import FakeClock

__all__ = ["Attempt", "Drain", "DrainIncomplete", "DrainReport", "adrain", "drain"]

T = TypeVar("T")

_PAGE = 500
_POLL = 0.01


@attrs.frozen
class Attempt:
    """One call of a handler during a drain.

    Attributes:
        task_id: the task's id.
        queue: the queue it came from.
        type: the task's type.
        payload: the task's payload.
        retry_count: failed attempts before this one (``ctx.retry_count``).
        error: what the handler raised, or None when it returned.
        cancel_reason: why ``ctx.cancelled`` was set by the time the handler
            ended (``timeout``, ``deadline``, ``canceled``, ...), or None.
    """

    task_id: str
    queue: str
    type: str
    payload: bytes
    retry_count: int
    error: BaseException | None
    cancel_reason: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the handler returned in time (the attempt counts as a success)."""
        return self.error is None and self.cancel_reason is None


@attrs.frozen
class DrainReport:
    """What a :func:`drain` ran and how its tasks ended.

    Attributes:
        attempts: every handler call, in the order they started.
        archived: tasks archived during the drain (retries spent, ``SkipRetry``,
            no handler for the type, deadline passed, ...), with ``last_error``.
        waiting: tasks left ``scheduled`` or ``retry`` in the drained queues
            (not due yet: without a clock, or past ``until``).
        rounds: how many burst servers ran.
        advanced: how far the fake clock was moved.
    """

    attempts: tuple[Attempt, ...] = ()
    archived: tuple[TaskInfo, ...] = ()
    waiting: tuple[TaskInfo, ...] = ()
    rounds: int = 0
    advanced: timedelta = timedelta(0)

    @property
    def succeeded(self) -> tuple[str, ...]:
        """Ids of the tasks whose last attempt succeeded, in the order they first ran."""
        last: dict[str, Attempt] = {}
        for attempt in self.attempts:
            last[attempt.task_id] = attempt
        return tuple(task_id for task_id, attempt in last.items() if attempt.succeeded)

    @property
    def failed(self) -> tuple[Attempt, ...]:
        """The attempts that did not succeed (raised, or were cut off)."""
        return tuple(a for a in self.attempts if not a.succeeded)

    def attempts_of(self, task_id: str) -> tuple[Attempt, ...]:
        """The attempts of one task, in order."""
        return tuple(a for a in self.attempts if a.task_id == task_id)

    def types(self) -> list[str]:
        """The task type of every attempt, in order (handy for ``assert report.types() == ...``)."""
        return [a.type for a in self.attempts]


class DrainIncomplete(AssertionError):
    """A drain hit one of its bounds (``max_tasks``, ``max_rounds``, ``timeout``).

    An ``AssertionError``, so a test that drains a runaway task chain fails
    with this message. Running tasks were allowed to finish (``timeout``:
    requeued at once).

    Attributes:
        report: what ran until the bound was hit.
    """

    def __init__(self, message: str, report: DrainReport) -> None:
        super().__init__(message)
        self.report = report


class Drain(Protocol):
    """The ``taskq_drain`` fixture's type: :func:`drain` with the broker and clock bound."""

    def __call__(self, mux: ServeMux, queues: Any = None, /, **options: Any) -> DrainReport:
        """Drain the fixture's broker with ``mux`` (``options`` as for :func:`drain`)."""
        ...


class _Recorder:
    """Notes each handler call; flags when more than ``max_tasks`` have started."""

    def __init__(self, max_tasks: int) -> None:
        self._max = max_tasks
        self._lock = threading.Lock()
        self._started = 0
        self.attempts: list[Attempt] = []
        self.over_limit = threading.Event()
        self.on_over_limit: Callable[[], None] = lambda: None

    def _start(self) -> None:
        with self._lock:
            self._started += 1
            if self._started <= self._max or self.over_limit.is_set():
                return
            self.over_limit.set()
        self.on_over_limit()  # stop fetching at once; what was fetched still runs

    def _end(self, ctx: Context, task: Task, error: BaseException | None) -> None:
        attempt = Attempt(
            task_id=ctx.task_id,
            queue=ctx.queue,
            type=task.type,
            payload=task.payload,
            retry_count=ctx.retry_count,
            error=error,
            cancel_reason=ctx.cancel_reason,
        )
        with self._lock:
            self.attempts.append(attempt)

    def wrap(self, handler: Handler) -> Handler:
        """Return ``handler`` (sync or async, kept so) recording each call."""
        if is_async_handler(handler):

            async def recorded_async(ctx: Context, task: Task) -> None:
                self._start()
                try:
                    await handler(ctx, task)  # type: ignore[misc]
                except BaseException as exc:
                    self._end(ctx, task, exc)
                    raise
                self._end(ctx, task, None)

            return recorded_async

        def recorded(ctx: Context, task: Task) -> Any:
            self._start()
            try:
                result = handler(ctx, task)
            except BaseException as exc:
                self._end(ctx, task, exc)
                raise
            self._end(ctx, task, None)
            return result

        return recorded


class _RecordingMux(ServeMux):
    """The user's mux, unchanged, with every resolved handler chain recorded."""

    def __init__(self, inner: ServeMux, recorder: _Recorder) -> None:
        super().__init__()
        self._inner = inner
        self._recorder = recorder

    @property
    def version(self) -> int:
        """The wrapped mux's version (so the runtime's handler cache follows it)."""
        return self._inner.version

    def resolve(self, type_name: str, adapt_sync: Callable[[Handler], Handler]) -> Handler:
        """The wrapped mux's handler chain for ``type_name``, recorded."""
        return self._recorder.wrap(self._inner.resolve(type_name, adapt_sync))


def _weights(queues: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    if isinstance(queues, str):
        raise InvalidArgumentError("queues must be a list of names or a name -> weight mapping")
    if isinstance(queues, Mapping):
        return dict(queues)
    return dict.fromkeys(queues, 1)


def _seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")
    return seconds


def _run_round(
    target: Broker | str,
    config: Config,
    clock: FakeClock | None,
    mux: ServeMux,
    recorder: _Recorder,
    deadline: float,
) -> str:
    """Run one burst server to its end (blocking); return why it ended."""
    server = Server(target, config, clock=clock)
    recorder.on_over_limit = server.stop
    server.start(mux)
    try:
        while not server.wait(_POLL):
            if recorder.over_limit.is_set():
                server.shutdown()
                return "max_tasks"
            if time.monotonic() > deadline:
                server.shutdown_now()
                return "timeout"
    finally:
        server.shutdown()
    return "drained"


async def _tasks(broker: Broker, queues: Sequence[str], state: TaskState) -> list[TaskInfo]:
    found: list[TaskInfo] = []
    for queue in queues:
        offset = 0
        while True:
            try:
                page = await broker.list_tasks(queue, state, offset=offset, limit=_PAGE)
            except QueueNotFoundError:
                break
            found.extend(page)
            if len(page) < _PAGE:
                break
            offset += len(page)
    return found


async def _has_pending(broker: Broker, queues: Sequence[str]) -> bool:
    for queue in queues:
        try:
            stats = await broker.queue_stats(queue)
        except QueueNotFoundError:
            continue
        if stats.pending and not stats.paused:
            return True
    return False


async def adrain(
    broker: Broker | str,
    mux: ServeMux,
    queues: Sequence[str] | Mapping[str, int] | None = None,
    *,
    clock: FakeClock | None = None,
    until: timedelta | None = None,
    config: Config | None = None,
    max_tasks: int = 1000,
    max_rounds: int = 100,
    timeout: float | timedelta = 30.0,
) -> DrainReport:
    """The coroutine form of :func:`drain`, for ``async def`` tests (same arguments).

    The servers run on their own threads; the calling event loop stays free.
    """
    if not isinstance(mux, ServeMux):
        raise InvalidArgumentError(f"drain() needs a taskq.ServeMux, got {type(mux).__name__}")
    if isinstance(broker, str) and broker.lower().startswith("memory://"):
        raise InvalidArgumentError(
            "drain() cannot share a memory:// URL (each connection is a new empty broker); "
            "pass the InMemoryBroker object"
        )
    if isinstance(broker, str) and clock is not None:
        raise InvalidArgumentError("a clock needs a broker object built with that clock")
    if not isinstance(broker, str) and not isinstance(broker, Broker):
        raise InvalidArgumentError(
            f"broker must be a Broker or a broker URL, got {type(broker).__name__}"
        )
    if not isinstance(max_tasks, int) or max_tasks < 1:
        raise InvalidArgumentError(f"max_tasks must be an int >= 1, got {max_tasks!r}")
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise InvalidArgumentError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
    seconds = _seconds(timeout, "timeout")
    fixed = _weights(queues) if queues is not None else None
    for name in fixed or ():
        validate_queue_name(name)
    base = config if config is not None else Config(concurrency=1)
    conn = connect(broker) if isinstance(broker, str) else broker
    try:
        return await _drain(
            broker,
            conn,
            mux,
            fixed,
            clock=clock,
            until=until,
            base=base,
            max_tasks=max_tasks,
            max_rounds=max_rounds,
            seconds=seconds,
        )
    finally:
        if conn is not broker:
            await conn.close()


async def _drain(
    target: Broker | str,
    broker: Broker,
    mux: ServeMux,
    fixed: dict[str, int] | None,
    *,
    clock: FakeClock | None,
    until: timedelta | None,
    base: Config,
    max_tasks: int,
    max_rounds: int,
    seconds: float,
) -> DrainReport:
    if clock is not None and await broker.now() != clock.now_ms():
        raise InvalidArgumentError(
            "the clock is not the broker's clock: build the broker with it, "
            "e.g. InMemoryBroker(clock=clock)"
        )
    deadline = time.monotonic() + seconds
    began_ms = clock.now_ms() if clock is not None else 0
    limit_ms = None
    if clock is not None and until is not None:
        limit_ms = began_ms + td_to_ms(until, name="until")
    recorder = _Recorder(max_tasks)
    recording = _RecordingMux(mux, recorder)

    async def weights() -> dict[str, int]:
        if fixed is not None:
            return fixed
        return dict.fromkeys(await broker.queues(), 1)

    names = list(await weights())
    archived_before = {t.id for t in await _tasks(broker, names, TaskState.ARCHIVED)}
    rounds = 0

    async def report() -> DrainReport:
        final = list(await weights())
        archived = [
            t
            for t in await _tasks(broker, final, TaskState.ARCHIVED)
            if t.id not in archived_before
        ]
        waiting = await _tasks(broker, final, TaskState.SCHEDULED)
        waiting += await _tasks(broker, final, TaskState.RETRY)
        return DrainReport(
            attempts=tuple(recorder.attempts),
            archived=tuple(archived),
            waiting=tuple(waiting),
            rounds=rounds,
            advanced=timedelta(milliseconds=clock.now_ms() - began_ms if clock is not None else 0),
        )

    while True:
        current = await weights()
        if current:
            if rounds >= max_rounds:
                raise DrainIncomplete(
                    f"drain() still had work after {max_rounds} rounds (max_rounds)", await report()
                )
            rounds += 1
            config = base.with_overrides(queues=current, burst=True)
            run = functools.partial(
                _run_round, target, config, clock, recording, recorder, deadline
            )
            ended = await asyncio.to_thread(run)
            if ended == "max_tasks":
                raise DrainIncomplete(
                    f"drain() stopped after more than {max_tasks} handler calls (max_tasks)",
                    await report(),
                )
            if ended == "timeout":
                raise DrainIncomplete(
                    f"drain() did not finish within {seconds:g}s (timeout)", await report()
                )
            if await _has_pending(broker, list(await weights())):
                continue  # e.g. handlers enqueued into a queue found after the round began
        if clock is None:
            break
        waiting = [
            t
            for state in (TaskState.SCHEDULED, TaskState.RETRY)
            for t in await _tasks(broker, list(await weights()), state)
        ]
        due = [dt_to_ms(t.next_process_at) for t in waiting if t.next_process_at is not None]
        if not due or (limit_ms is not None and min(due) > limit_ms):
            break
        if min(due) > clock.now_ms():
            clock.set(min(due))
    return await report()


def drain(
    broker: Broker | str,
    mux: ServeMux,
    queues: Sequence[str] | Mapping[str, int] | None = None,
    *,
    clock: FakeClock | None = None,
    until: timedelta | None = None,
    config: Config | None = None,
    max_tasks: int = 1000,
    max_rounds: int = 100,
    timeout: float | timedelta = 30.0,
) -> DrainReport:
    """Run ``mux``'s handlers on ``broker``'s tasks until none is pending or due; report.

    Each round is a real burst :class:`~taskq.Server` (the production path:
    leases, Context, middleware, retries, archiving), started and stopped
    here. With ``clock``, once a round found nothing more to run, the clock
    jumps to the earliest scheduled or retry task and another round runs,
    until no such task is left (or the next one is due after ``until``).
    Tasks the handlers enqueue are drained too.

    Args:
        broker: the broker holding the tasks: an object (typically an
            :class:`~taskq.InMemoryBroker`), or a URL the servers connect to
            (not ``memory://``).
        mux: the handlers (not modified).
        queues: the queues to drain (names, or name -> weight); default: every
            queue the broker knows, looked up again each round. Overrides
            ``config.queues``.
        clock: a :class:`FakeClock` the broker was built with; without it,
            tasks not due yet are left waiting (see ``DrainReport.waiting``).
        until: with ``clock``, advance it at most this far from where it was.
        config: server settings (``retry_delay``, ``is_failure``,
            ``error_handler``, ...); default ``Config(concurrency=1)``, which
            runs tasks one at a time in queue order.
        max_tasks: a bound on handler calls, against tasks that enqueue each
            other forever.
        max_rounds: a bound on rounds (clock jumps included).
        timeout: a bound on wall-clock time, in seconds or a timedelta.

    Returns:
        A :class:`DrainReport` of every attempt and of the tasks archived or
        left waiting.

    Raises:
        DrainIncomplete: a bound was hit (an ``AssertionError``; its
            ``report`` says what ran).
        InvalidArgumentError: a bad argument, or a clock that is not the broker's.
        BrokerError: the broker cannot be reached.
    """
    coro = adrain(
        broker,
        mux,
        queues,
        clock=clock,
        until=until,
        config=config,
        max_tasks=max_tasks,
        max_rounds=max_rounds,
        timeout=timeout,
    )
    return _run_in_thread(coro)


def _run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh event loop in a new thread (works inside a running loop too)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="taskq-drain") as pool:
        return pool.submit(asyncio.run, coro).result()
