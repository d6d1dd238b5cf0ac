"""The processor: fetch -> dispatch -> settle, with ``concurrency`` tasks at a time.

One loop fetches as many tasks as there are free slots with one blocking
``dequeue`` (the broker wakes it as soon as a task arrives: no sleep-polling),
then starts each one: an ``async def`` handler as a task on the event loop,
a ``def`` handler on the thread pool. Each outcome becomes one fenced broker
transition: successes are acknowledged in batches (``done_many``, flushed at
once when no flush is in flight, so a lone ack never waits for a batch to
fill), failures become ``retry`` or ``archive``.

Burst mode (``on_idle`` given): fetches do not wait in the broker, and a
fetch that finds nothing while none of this processor's own attempts is in
flight (running, or its ack, retry or archive not yet stored) calls
``on_idle``; when that returns True the fetch loop ends. While attempts are
still in flight, an empty fetch is repeated once one of them is settled, or
after ``fetch_wait``.

Time limits: a task's limit is the earlier of ``started + timeout`` (the
task's timeout, or ``Config.default_timeout`` when it has neither timeout nor
deadline) and its deadline. When the limit hits, the attempt is settled at
once: an async handler is cancelled; a sync handler sees ``ctx.cancelled``
become True and gets :class:`~taskq.errors.Interrupted` raised in its thread
(``Config.interrupt_sync_handlers``, CPython), and whatever it does later is
ignored. The exception arrives when the thread next runs Python code, so a
call blocked in C keeps the thread (and its concurrency slot) busy until it
returns; the same goes for a cancel, a lost lease and a requeue at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from taskq._time import Clock, ms_to_dt
from taskq.brokers.base import Ack, Consumer, Delivery, LeaseRef, WorkerInfo
from taskq.errors import (
    BrokerError,
    HandlerNotFoundError,
    LeaseLostError,
    RevokeTask,
    SkipRetry,
)
from taskq.mux import Context, Handler, ServeMux, is_async_handler
from taskq.runtime._util import format_error
from taskq.runtime.config import Config, default_retry_delay
from taskq.runtime.queues import QueueSelector
from taskq.runtime.threads import HandlerThreads, Interruptible
from taskq.task import Task, TaskMessage

__all__ = ["CANCELED", "DEADLINE", "LEASE_LOST", "SHUTDOWN", "TIMEOUT", "Processor"]

TIMEOUT = "timeout"
DEADLINE = "deadline"
CANCELED = "canceled"
LEASE_LOST = "lease lost"
SHUTDOWN = "shutdown"

_MAX_ACK_BATCH = 1000
_HANDLER_CACHE_SIZE = 1024
_TRANSITION_ATTEMPTS = 5
_FETCH_GRACE = 5.0


class _Job:
    """One attempt in flight: from dequeue until its final transition landed."""

    __slots__ = (
        "call",
        "ctx",
        "delivery",
        "limit",
        "ref",
        "running",
        "settled",
        "task",
        "timer",
    )

    def __init__(
        self, delivery: Delivery, ref: LeaseRef, ctx: Context, task: Task | None, limit: int
    ) -> None:
        self.delivery = delivery
        self.ref = ref
        self.ctx = ctx
        self.limit = limit  # epoch ms when the attempt is cut off (0: never)
        self.task = task
        self.settled = False  # an outcome was decided; later ones are ignored
        self.running = True  # the handler still holds its concurrency slot
        self.timer: asyncio.TimerHandle | None = None
        self.call: Interruptible | None = None  # a def handler's call on its thread


class _Reason(Exception):
    """A failure whose text is its message alone (no traceback is stored)."""


class TimeLimitExceeded(_Reason):
    """The failure recorded when an attempt hits its timeout or deadline."""


class Processor:
    """Runs tasks: fetches them, calls their handlers and settles each outcome.

    Args:
        broker: the consuming slice of the broker.
        mux: routes task types to handlers.
        clock: the local wall clock (for deadlines, which are absolute times).
        config: the server settings (concurrency, queues, lease, retry policy, ...).
        logger: where to log.
        on_idle: burst mode: called when a fetch found nothing and no attempt
            is in flight; returning True ends :meth:`run` (the queues are
            drained), False fetches again.
        on_stuck: called with a description when a handler is still running
            ``Config.stuck_handler_timeout`` after its attempt was cut off.
    """

    def __init__(
        self,
        broker: Consumer,
        *,
        mux: ServeMux,
        clock: Clock,
        config: Config,
        logger: logging.Logger,
        on_idle: Callable[[], Awaitable[bool]] | None = None,
        on_stuck: Callable[[str], None] | None = None,
    ) -> None:
        self._broker = broker
        self._on_idle = on_idle
        self._mux = mux
        self._clock = clock
        self._config = config
        self._log = logger
        self._capacity = config.concurrency
        self._lease_ms = config.lease_ms
        self._wait_ms = max(1, int(config.fetch_wait.total_seconds() * 1000))
        self._default_timeout_ms = int(config.default_timeout.total_seconds() * 1000)
        self._selector = QueueSelector(config.queues, strict=config.strict_priority)
        self._threads = HandlerThreads(config.concurrency)
        self._interrupt = config.interrupt_sync_handlers
        stuck = config.stuck_handler_timeout
        self._stuck_after = stuck.total_seconds() if stuck is not None else None
        self._on_stuck = on_stuck
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._overrun: set[_Job] = set()  # settled (cut off) while their handler runs on
        self._running = 0
        self._unsettled = 0
        self._quiet = False
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._mux_version = -1
        self._acks: list[tuple[_Job, Ack]] = []
        self._flushing = False
        self._background: set[asyncio.Task[Any]] = set()
        self._fetch: asyncio.Task[list[Delivery]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot_freed: asyncio.Event | None = None
        self._all_settled: asyncio.Event | None = None
        self._quiet_event: asyncio.Event | None = None
        self._job_gone: asyncio.Event | None = None

    # ------------------------------------------------------------------ views

    @property
    def in_flight(self) -> int:
        """How many attempts are running or awaiting their final transition."""
        return len(self._jobs)

    @property
    def busy_slots(self) -> int:
        """How many concurrency slots are taken by running handlers."""
        return self._running

    @property
    def is_quiet(self) -> bool:
        """True once fetching has stopped (quiet or shutting down)."""
        return self._quiet

    def leased(self) -> list[LeaseRef]:
        """The leases this server holds and must keep extending."""
        return [job.ref for job in self._jobs.values()]

    def running_by_queue(self) -> dict[str, list[str]]:
        """Ids of the tasks whose outcome is not decided yet, per queue."""
        found: dict[str, list[str]] = {}
        for (queue, task_id), job in self._jobs.items():
            if not job.settled:
                found.setdefault(queue, []).append(task_id)
        return found

    def workers(self) -> list[WorkerInfo]:
        """The running tasks, as published for the inspector.

        An attempt that was cut off while its handler runs on is listed too,
        with why (``cut_off``): it still holds its slot.
        """
        out = [_worker_info(job) for job in self._jobs.values() if not job.settled]
        out += [_worker_info(job, job.ctx.cancel_reason or "") for job in self._overrun]
        return out

    # ------------------------------------------------------------------ control

    def quiet(self) -> None:
        """Stop fetching new tasks; running ones go on."""
        if not self._quiet:
            self._quiet = True
            self._log.info("quiet: no new tasks will be fetched")
            if self._quiet_event is not None:
                self._quiet_event.set()

    def cancel(self, task_id: str, reason: str = CANCELED) -> bool:
        """Cancel the running attempt of ``task_id`` (archived as "canceled"); False if none."""
        for job in list(self._jobs.values()):
            if job.ref.task_id == task_id and not job.settled:
                self._log.info("task %s in %r: cancel requested", task_id, job.ref.queue)
                job.ctx._cancel(reason)
                self._settle(job, None)
                return True
        return False

    def lease_lost(self, ref: LeaseRef) -> None:
        """Give up an attempt whose lease is gone: cancel it and write nothing more for it."""
        job = self._jobs.get((ref.queue, ref.task_id))
        if job is None or job.ref.token != ref.token:
            return
        self._log.warning(
            "task %s in %r: lease lost, another attempt owns it now", ref.task_id, ref.queue
        )
        job.ctx._cancel(LEASE_LOST)
        if not job.settled:
            self._mark_settled(job)
        self._forget(job)

    # ------------------------------------------------------------------ fetch loop

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and start tasks until ``stop`` is set or the processor goes quiet."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._slot_freed = asyncio.Event()
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._quiet_event = asyncio.Event()
        self._job_gone = asyncio.Event()
        if self._quiet:
            self._quiet_event.set()
        stop_waiter = loop.create_task(_first_of(stop, self._quiet_event))
        backoff = 0.0
        burst = self._on_idle is not None
        wait = 0 if burst else self._wait_ms
        try:
            while not stop_waiter.done():
                free = self._capacity - self._running
                if free <= 0:
                    self._slot_freed.clear()
                    slot = loop.create_task(self._slot_freed.wait())
                    await asyncio.wait({slot, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                    slot.cancel()
                    continue
                order = self._selector.order()
                fetch = loop.create_task(
                    self._broker.dequeue(order, count=free, lease=self._lease_ms, wait=wait)
                )
                self._fetch = fetch
                await asyncio.wait({fetch, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    # Stopping: let the fetch finish on its own and requeue what it
                    # brings (cancelling a broker call could lose track of tasks).
                    fetch.add_done_callback(self._requeue_fetched)
                    break
                self._fetch = None
                try:
                    deliveries = fetch.result()
                except Exception as exc:
                    backoff = min(max(backoff * 2, 0.1), 5.0)
                    self._log.error(
                        "fetch failed (retrying in %.1fs): %s",
                        backoff,
                        exc,
                        exc_info=not isinstance(exc, BrokerError),
                    )
                    await asyncio.wait({stop_waiter}, timeout=backoff)
                    continue
                backoff = 0.0
                if stop_waiter.done():
                    self._requeue_all(deliveries)
                    break
                if deliveries:
                    self._selector.record(order, deliveries, free)
                    for delivery in deliveries:
                        self._start(delivery)
                elif burst and await self._burst_idle(stop_waiter):
                    break
        finally:
            stop_waiter.cancel()

    async def _burst_idle(self, stop_waiter: asyncio.Task[None]) -> bool:
        """After an empty fetch in burst mode: return True once the queues are drained.

        With attempts of our own in flight, waits for one of them to be
        settled (it may have been retried for now) or ``fetch_wait``, and
        returns False to fetch again.
        """
        assert self._on_idle is not None and self._job_gone is not None
        if not self._jobs:
            return await self._on_idle()
        self._job_gone.clear()
        gone = asyncio.ensure_future(self._job_gone.wait())
        await asyncio.wait(
            {gone, stop_waiter}, timeout=self._wait_ms / 1000, return_when=asyncio.FIRST_COMPLETED
        )
        gone.cancel()
        return False

    def _requeue_fetched(self, fetch: asyncio.Future[list[Delivery]]) -> None:
        if fetch.cancelled() or fetch.exception() is not None:
            return
        self._requeue_all(fetch.result())

    def _requeue_all(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._spawn(
                self._transition(
                    delivery.ref, functools.partial(self._broker.requeue, delivery.ref)
                )
            )

    # ------------------------------------------------------------------ dispatch

    def _handler_for(self, type_name: str) -> tuple[Handler, bool]:
        if self._mux.version != self._mux_version:
            self._handlers.clear()
            self._mux_version = self._mux.version
        entry = self._handlers.get(type_name)
        if entry is None:
            handler = self._mux.resolve(type_name, self._adapt_sync)
            entry = (handler, is_async_handler(handler))
            if len(self._handlers) >= _HANDLER_CACHE_SIZE:
                self._handlers.clear()
            self._handlers[type_name] = entry
        return entry

    def _adapt_sync(self, handler: Handler) -> Handler:
        """Make a sync handler awaitable (for middleware): it runs on the thread pool."""
        threads = self._threads
        interrupt = self._interrupt_call if self._interrupt else None

        async def in_thread(ctx: Context, task: Task) -> None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            call = Interruptible()
            threads.submit(_call_in_thread, loop, future, call, handler, ctx, task)
            try:
                await future
            except asyncio.CancelledError:
                if interrupt is not None:
                    interrupt(call, ctx)
                raise

        functools.update_wrapper(in_thread, handler)
        return in_thread

    def _start(self, delivery: Delivery) -> None:
        loop = self._loop
        assert loop is not None
        msg = delivery.message
        limit_ms, reason = self._limit(msg)
        ref = delivery.ref
        ctx = Context(
            task_id=msg.id,
            queue=msg.queue,
            retry_count=msg.retried,
            max_retry=msg.max_retry,
            headers=msg.headers,
            result_writer=functools.partial(self._broker.write_result, ref),
            loop=loop,
        )
        ctx._ms = (limit_ms, msg.enqueued_at, delivery.started_at)
        try:
            task: Task | None = msg.to_task()
            error: BaseException | None = None
        except Exception as exc:  # a stored message no Task can be built from
            task, error = None, exc
        job = _Job(delivery, ref, ctx, task, limit_ms)
        key = (msg.queue, msg.id)
        stale = self._jobs.get(key)
        if stale is not None:  # our own earlier attempt lost its lease and was re-delivered
            self._forget(stale)
        self._jobs[key] = job
        self._running += 1
        self._unsettled += 1
        if self._all_settled is not None:
            self._all_settled.clear()
        if task is None:
            self._release(job)
            self._settle(job, _Undecodable(f"cannot decode task: {error}"))
            return
        remaining = (limit_ms - self._clock.now_ms()) / 1000 if limit_ms else None
        if remaining is not None and remaining <= 0:
            ctx._cancel(reason)
            self._release(job)
            self._settle(job, None)
            return
        handler, is_async = self._handler_for(msg.type)
        if remaining is not None:
            job.timer = loop.call_later(remaining, self._expire, job, reason)
        if is_async:
            try:
                coro = handler(ctx, task)
                if not inspect.iscoroutine(coro):
                    raise TypeError(f"async handler for {msg.type!r} did not return a coroutine")
                handle = loop.create_task(coro)
            except Exception as exc:
                self._release(job)
                self._settle(job, exc)
                return
            ctx._task_handle = handle
            handle.add_done_callback(functools.partial(self._async_done, job))
        else:
            if self._interrupt:
                call = job.call = Interruptible()
                ctx._on_cancel = functools.partial(self._interrupt_call, call, ctx)
            self._threads.submit(self._run_sync, loop, job, handler)

    def _limit(self, msg: TaskMessage) -> tuple[int, str]:
        """The attempt's cut-off (epoch ms, 0 = none) and what it is called."""
        timeout = msg.timeout or (0 if msg.deadline else self._default_timeout_ms)
        timeout_at = self._clock.now_ms() + timeout if timeout else 0
        if msg.deadline and (not timeout_at or msg.deadline <= timeout_at):
            return msg.deadline, DEADLINE
        return timeout_at, TIMEOUT

    def _run_sync(self, loop: asyncio.AbstractEventLoop, job: _Job, handler: Handler) -> None:
        """On a pool thread: call the handler and report back to the loop."""
        error: BaseException | None = None
        try:
            if job.ctx.cancelled:  # cut off while it waited for a thread
                return self._post(loop, job, None)
            assert job.task is not None
            if job.call is not None:
                job.call.run(_invoke, loop, handler, job.ctx, job.task)
            else:
                _invoke(loop, handler, job.ctx, job.task)
        except BaseException as exc:
            error = exc
        self._post(loop, job, error)

    def _interrupt_call(self, call: Interruptible, ctx: Context) -> None:
        """Stop a def handler's call whose attempt was cut off (see :class:`Interruptible`)."""
        if call.interrupt():
            self._log.info(
                "task %s in %r: interrupting its handler (%s)",
                ctx.task_id,
                ctx.queue,
                ctx.cancel_reason,
            )

    def _post(
        self, loop: asyncio.AbstractEventLoop, job: _Job, error: BaseException | None
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is down
            loop.call_soon_threadsafe(self._sync_done, job, error)

    def _sync_done(self, job: _Job, error: BaseException | None) -> None:
        self._release(job)
        self._settle(job, error)

    def _async_done(self, job: _Job, handle: asyncio.Task[Any]) -> None:
        self._release(job)
        if handle.cancelled():
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = handle.exception()
        self._settle(job, error)

    def _expire(self, job: _Job, reason: str) -> None:
        job.timer = None
        if job.settled:
            return
        self._log.warning("task %s in %r: %s reached", job.ref.task_id, job.ref.queue, reason)
        job.ctx._cancel(reason)
        self._settle(job, None)

    def _check_stuck(self, job: _Job) -> None:
        if not job.running or self._on_stuck is None:
            return
        assert self._stuck_after is not None
        self._on_stuck(
            f"the handler of task {job.ref.task_id} in {job.ref.queue!r} is still running "
            f"{self._stuck_after:g}s after it was cut off ({job.ctx.cancel_reason})"
        )

    def _release(self, job: _Job) -> None:
        """The handler returned: its concurrency slot is free again."""
        if job.running:
            job.running = False
            self._overrun.discard(job)
            self._running -= 1
            if self._slot_freed is not None:
                self._slot_freed.set()

    # ------------------------------------------------------------------ outcomes

    def _mark_settled(self, job: _Job) -> None:
        job.settled = True
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        if job.running and job.ctx.cancel_reason not in (None, SHUTDOWN):
            # Cut off while its handler runs on: still listed as holding its slot,
            # and with stuck_handler_timeout it must return within the grace.
            self._overrun.add(job)
            if self._stuck_after is not None and self._loop is not None:
                self._loop.call_later(self._stuck_after, self._check_stuck, job)
        self._unsettled -= 1
        if self._unsettled == 0 and self._all_settled is not None:
            self._all_settled.set()

    def _settle(self, job: _Job, error: BaseException | None) -> None:
        """Decide the attempt's outcome (once; later reports are ignored)."""
        if job.settled:
            return
        self._mark_settled(job)
        reason = job.ctx.cancel_reason
        if reason == LEASE_LOST:
            self._forget(job)
            return
        if reason == CANCELED:
            self._spawn(self._fail(job, TaskCanceled("canceled")))
            return
        if reason in (TIMEOUT, DEADLINE):
            self._spawn(self._fail(job, TimeLimitExceeded(self._limit_text(job, reason))))
            return
        if error is None:
            if job.ctx._pending_writes:
                self._spawn(self._ack_after_writes(job))
            else:
                self._ack(job)
            return
        self._spawn(self._fail(job, error))

    def _limit_text(self, job: _Job, reason: str) -> str:
        msg = job.delivery.message
        if reason == DEADLINE:
            return f"deadline exceeded ({ms_to_dt(msg.deadline).isoformat()})"
        timeout = msg.timeout or self._default_timeout_ms
        return f"task timed out after {timeout / 1000:g}s"

    async def _ack_after_writes(self, job: _Job) -> None:
        writes = job.ctx._pending_writes or []
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                self._log.warning("task %s: writing its result failed: %s", job.ref.task_id, result)
        self._ack(job)

    def _ack(self, job: _Job, *, drop: bool = False) -> None:
        retention = 0 if drop else job.delivery.message.retention
        self._acks.append((job, Ack(job.ref, retention)))
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush_acks())

    async def _flush_acks(self) -> None:
        """Send pending acks in batches; a new batch goes as soon as the previous one landed."""
        failures = 0
        try:
            while self._acks:
                batch = self._acks[:_MAX_ACK_BATCH]
                del self._acks[:_MAX_ACK_BATCH]
                try:
                    results = await self._broker.done_many([ack for _, ack in batch])
                except Exception as exc:
                    failures += 1
                    unexpected = not isinstance(exc, BrokerError)
                    if failures >= _TRANSITION_ATTEMPTS:
                        self._log.error(
                            "acknowledging %d tasks failed; giving up (the recoverer takes "
                            "them over once their leases expire): %s",
                            len(batch),
                            exc,
                            exc_info=unexpected,
                        )
                        for job, _ in batch:
                            self._forget(job)
                        failures = 0
                        continue
                    self._log.error(
                        "acknowledging %d tasks failed: %s", len(batch), exc, exc_info=unexpected
                    )
                    self._acks[:0] = batch  # the leases are still extended: try again
                    await asyncio.sleep(0.05 * 2**failures)
                    continue
                failures = 0
                for (job, _), result in zip(batch, results, strict=False):
                    if isinstance(result, LeaseLostError):
                        self._log.warning(
                            "task %s in %r: ack refused, lease lost", job.ref.task_id, job.ref.queue
                        )
                    elif result is not None:
                        self._log.error("task %s: ack failed: %s", job.ref.task_id, result)
                    self._forget(job)
        finally:
            self._flushing = False

    async def _fail(self, job: _Job, error: BaseException) -> None:
        """Turn a failed attempt into retry, archive or drop."""
        msg = job.delivery.message
        task = job.task
        if task is not None:
            await self._call_error_handler(job.ctx, task, error)
        ref = job.ref
        broker = self._broker
        text = format_error(error) if not isinstance(error, _Reason) else str(error)
        if isinstance(error, RevokeTask):
            self._log.info("task %s in %r: revoked", msg.id, msg.queue)
            self._ack(job, drop=True)
            return
        if isinstance(error, HandlerNotFoundError):
            text = str(error)
        release = self._config.release_unique_on_archive
        if isinstance(
            error,
            (
                SkipRetry,
                HandlerNotFoundError,
                _Undecodable,
                TaskCanceled,
                *self._config.no_retry_errors,
            ),
        ):
            self._log.warning("task %s in %r: archived: %s", msg.id, msg.queue, _first_line(text))
            await self._transition(
                ref, functools.partial(broker.archive, ref, error=text, release_unique=release)
            )
        elif isinstance(error, TimeLimitExceeded) and job.ctx.cancel_reason == DEADLINE:
            self._log.warning("task %s in %r: archived: %s", msg.id, msg.queue, text)
            await self._transition(
                ref, functools.partial(broker.archive, ref, error=text, release_unique=release)
            )
        elif not self._is_failure(error):
            delay = self._retry_delay(msg, error, task)
            await self._transition(
                ref, functools.partial(broker.retry, ref, delay=delay, error=text, is_failure=False)
            )
        elif msg.retried >= msg.max_retry:
            self._log.warning(
                "task %s in %r: archived after %d retries: %s",
                msg.id,
                msg.queue,
                msg.retried,
                _first_line(text),
            )
            await self._transition(
                ref, functools.partial(broker.archive, ref, error=text, release_unique=release)
            )
        else:
            delay = self._retry_delay(msg, error, task)
            self._log.info(
                "task %s in %r: failed (retry %d/%d in %.3fs): %s",
                msg.id,
                msg.queue,
                msg.retried + 1,
                msg.max_retry,
                delay / 1000,
                _first_line(text),
            )
            await self._transition(
                ref, functools.partial(broker.retry, ref, delay=delay, error=text)
            )
        self._forget(job)

    async def _call_error_handler(self, ctx: Context, task: Task, error: BaseException) -> None:
        handler = self._config.error_handler
        if handler is None:
            return
        try:
            result = handler(ctx, task, error)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._log.exception("error_handler raised")

    def _is_failure(self, error: BaseException) -> bool:
        try:
            return bool(self._config.is_failure(error))
        except Exception:
            self._log.exception("is_failure raised; counting the error as a failure")
            return True

    def _retry_delay(self, msg: TaskMessage, error: BaseException, task: Task | None) -> int:
        task = task if task is not None else Task("undecodable")
        try:
            delay = self._config.retry_delay(msg.retried, error, task)
            ms = int(delay.total_seconds() * 1000)
            if ms < 0:
                raise ValueError(f"negative delay {delay}")
            return ms
        except Exception:
            self._log.exception("retry_delay failed; using the default backoff")
            return int(default_retry_delay(msg.retried, error, task).total_seconds() * 1000)

    async def _transition(self, ref: LeaseRef, call: Callable[[], Awaitable[None]]) -> None:
        """Run a fenced transition; retry broker failures a few times; a lost lease is final."""
        for attempt in range(1, _TRANSITION_ATTEMPTS + 1):
            try:
                await call()
                return
            except LeaseLostError:
                self._log.warning(
                    "task %s in %r: lease lost before its outcome was stored "
                    "(another attempt owns it now)",
                    ref.task_id,
                    ref.queue,
                )
                return
            except BrokerError as exc:
                if attempt == _TRANSITION_ATTEMPTS:
                    self._log.error(
                        "task %s in %r: storing its outcome failed (the recoverer takes "
                        "it over once its lease expires): %s",
                        ref.task_id,
                        ref.queue,
                        exc,
                    )
                    return
                await asyncio.sleep(0.05 * 2**attempt)
            except Exception:
                self._log.exception(
                    "task %s in %r: storing its outcome failed unexpectedly", ref.task_id, ref.queue
                )
                return

    def _forget(self, job: _Job) -> None:
        key = (job.ref.queue, job.ref.task_id)
        if self._jobs.get(key) is job:
            del self._jobs[key]
            if self._job_gone is not None:
                self._job_gone.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ shutdown

    async def shutdown(self, timeout: float, hurry: asyncio.Event) -> None:
        """Stop fetching, wait up to ``timeout`` s for running tasks, requeue the rest.

        Setting ``hurry`` (a second signal) requeues the running tasks at once.
        Returns once every outcome and requeue has been stored (or given up on).
        """
        self.quiet()
        loop = asyncio.get_running_loop()
        if self._loop is None:  # never ran
            self._loop = loop
        settled: asyncio.Task[Any] | None = None
        if self._all_settled is not None and not self._all_settled.is_set():
            settled = loop.create_task(self._all_settled.wait())
        if settled is not None and not hurry.is_set():
            hurry_waiter = loop.create_task(hurry.wait())
            await asyncio.wait(
                {settled, hurry_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            hurry_waiter.cancel()
        if settled is not None:
            settled.cancel()
        # A fetch still waiting in the broker could take the tasks requeued below:
        # let it finish first (its own deliveries are requeued as it returns).
        fetch = self._fetch
        if fetch is not None and not fetch.done():
            await asyncio.wait({fetch}, timeout=self._wait_ms / 1000 + _FETCH_GRACE)
        unfinished = [job for job in self._jobs.values() if not job.settled]
        if unfinished:
            self._log.warning("shutdown: requeueing %d unfinished task(s)", len(unfinished))
        for job in unfinished:
            job.ctx._cancel(SHUTDOWN)
            self._mark_settled(job)
            self._spawn(self._requeue(job))
        await self._drain_background()
        self._threads.close()

    async def _requeue(self, job: _Job) -> None:
        await self._transition(job.ref, functools.partial(self._broker.requeue, job.ref))
        self._forget(job)

    async def _drain_background(self) -> None:
        while self._background:
            await asyncio.wait(set(self._background), timeout=30)


class TaskCanceled(_Reason):
    """The failure recorded when a running task's cancellation was requested."""


class _Undecodable(_Reason):
    """The stored message cannot be turned into a Task."""


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _worker_info(job: _Job, cut_off: str = "") -> WorkerInfo:
    msg = job.delivery.message
    return WorkerInfo(
        task_id=msg.id,
        task_type=msg.type,
        queue=msg.queue,
        started_at=job.delivery.started_at,
        deadline=job.limit,
        cut_off=cut_off,
    )


def _invoke(loop: asyncio.AbstractEventLoop, handler: Handler, ctx: Context, task: Task) -> None:
    """Call a def handler; an awaitable it returns is awaited on ``loop``."""
    result = handler(ctx, task)
    if inspect.isawaitable(result):
        asyncio.run_coroutine_threadsafe(_await(result), loop).result()


def _call_in_thread(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[None],
    call: Interruptible,
    handler: Handler,
    ctx: Context,
    task: Task,
) -> None:
    try:
        if ctx.cancelled:
            outcome: BaseException | None = None
        else:
            call.run(_invoke, loop, handler, ctx, task)
            outcome = None
    except BaseException as exc:
        outcome = exc
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
