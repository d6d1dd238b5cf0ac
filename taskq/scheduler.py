"""Periodic tasks: :class:`Scheduler` and :class:`PeriodicTaskManager`.

A scheduler enqueues a task each time an entry's schedule fires::

    scheduler = taskq.Scheduler("redis://localhost:6379/0", timezone="Europe/Berlin")
    scheduler.register("*/5 * * * *", taskq.Task("report:build"), queue="reports")
    scheduler.register("@every 30s", taskq.Task("health:ping"))
    scheduler.run()          # blocks; SIGTERM / SIGINT stop it

Several scheduler processes with the same entries may run at once (HA): each
tick of an entry is claimed through the broker (``claim_scheduler_tick``), so
exactly one process enqueues it; if that process dies between its claim and
its enqueue, another one notices the tick missing from the entry's history
and enqueues it (once). Spec grammar, timezones and daylight-saving rules are
in ``docs/scheduler.md``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta, tzinfo
from types import FrameType
from typing import Any, Protocol

import attrs

from taskq._logging import log_failure
from taskq._schedule import Schedule, parse_spec, resolve_timezone, timezone_name
from taskq._sync import loop_thread
from taskq._time import Clock, SystemClock, ms_to_dt, td_to_ms
from taskq.brokers.base import Broker, SchedulerEntryInfo, SchedulerEvent
from taskq.client import AsyncClient
from taskq.errors import (
    DuplicateTaskError,
    InvalidArgumentError,
    ServerClosedError,
    TaskIDConflictError,
)
from taskq.task import Task, TaskInfo

__all__ = [
    "ConfigProvider",
    "PeriodicTaskConfig",
    "PeriodicTaskManager",
    "Scheduler",
    "SchedulerEntry",
]

_RECOVERY_SUFFIX = ":recover"
_MAX_IDLE_S = 1.0


def _default_logger() -> logging.Logger:
    return logging.getLogger("taskq.scheduler")


@attrs.frozen
class SchedulerEntry:
    """A registered periodic task.

    Attributes:
        id: stable id, derived from the spec, timezone, task and options (the
            same entry gets the same id in every process and after restarts).
        spec: the schedule spec as given.
        task: the task enqueued at each firing.
        options: the enqueue options (as for :meth:`taskq.AsyncClient.enqueue`).
        timezone: the IANA name of the timezone the spec is evaluated in.
    """

    id: str
    spec: str
    task: Task
    options: Mapping[str, Any]
    timezone: str


@attrs.define
class _Slot:
    entry: SchedulerEntry
    schedule: Schedule
    next_tick: int
    prev_tick: int = 0


def _option_text(value: Any) -> str:
    if isinstance(value, timedelta):
        return f"{td_to_ms(value)}ms"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _entry_id(spec: str, tz: str, task: Task, options: Mapping[str, Any]) -> str:
    merged = {**task.options(), **{k: v for k, v in options.items() if v is not None}}
    doc = {
        "spec": " ".join(spec.split()),
        "tz": tz,
        "type": task.type,
        "payload": base64.b64encode(task.payload).decode("ascii"),
        "headers": dict(sorted(task.headers.items())),
        "options": {k: _option_text(v) for k, v in sorted(merged.items())},
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8")).hexdigest()
    return digest[:32]


def _tick_task_id(entry_id: str, tick: int) -> str:
    return f"sched:{entry_id}:{tick}"


class _Service:
    """start / run / shutdown around an async ``serve(stop)``, shared by both classes."""

    _logger: logging.Logger

    def __init__(self) -> None:
        self._future: Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._state_lock = threading.Lock()

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (implemented by subclasses)."""
        raise NotImplementedError

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set()
        await self.serve(self._stop)

    def start(self) -> None:
        """Start in taskq's background event-loop thread and return at once.

        Raises:
            ServerClosedError: it is already running.
        """
        with self._state_lock:
            if self._future is not None and not self._future.done():
                raise ServerClosedError(f"{type(self).__name__} is already running")
            ready = threading.Event()
            self._future = asyncio.run_coroutine_threadsafe(self._main(ready), loop_thread().loop)
        while not ready.wait(0.05):
            if self._future.done():
                self._future.result()

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Stop a started instance and wait (up to ``timeout`` seconds) until it has stopped.

        Re-raises the error that stopped it early, if any. Idempotent.
        """
        with self._state_lock:
            future, loop, stop = self._future, self._loop, self._stop
        if future is None:
            return
        if loop is not None and stop is not None and not future.done():
            loop.call_soon_threadsafe(stop.set)
        future.result(timeout)

    def run(self) -> None:
        """Start, block until SIGTERM or SIGINT (or a fatal error), then shut down.

        Signals are handled only when called from the main thread; from another
        thread it returns once another thread calls :meth:`shutdown`.
        """
        signalled = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            self._logger.info("received %s, shutting down", signal.Signals(signum).name)
            signalled.set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            future = self._future
            while not signalled.wait(0.2):
                if future is not None and future.done():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()


class Scheduler(_Service):
    """Enqueues registered tasks on their schedules; safe to run as N processes (HA).

    Args:
        broker: a Broker, a broker URL, or None for ``$TASKQ_BROKER`` / the default.
        timezone: the timezone cron specs are evaluated in (IANA name or
            tzinfo; default UTC). A spec may override it with ``CRON_TZ=``.
        clock: the time source (tests pass a ``taskq.testing.FakeClock``).
        heartbeat_interval: how often entries are published for the
            inspector (they expire after twice this).
        misfire_grace: a tick found more than this late (the process was
            suspended, the broker was down) is skipped instead of enqueued.
        recovery_delay: how long after a tick the other processes check that
            its claimer really enqueued it.
        history_keep: enqueue events kept per entry in the broker.
        pre_enqueue: called with the entry before each enqueue this process makes.
        post_enqueue: called with (entry, info, error) after each enqueue this
            process attempts; exactly one of info and error is None.
        logger: where to log (default ``logging.getLogger("taskq.scheduler")``).

    Raises:
        InvalidArgumentError: an argument is invalid.
    """

    def __init__(
        self,
        broker: Broker | str | None = None,
        *,
        timezone: str | tzinfo = "UTC",
        clock: Clock | None = None,
        heartbeat_interval: timedelta = timedelta(seconds=10),
        misfire_grace: timedelta = timedelta(minutes=1),
        recovery_delay: timedelta = timedelta(seconds=3),
        history_keep: int = 1000,
        pre_enqueue: Callable[[SchedulerEntry], None] | None = None,
        post_enqueue: Callable[[SchedulerEntry, TaskInfo | None, BaseException | None], None]
        | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        self._tz = resolve_timezone(timezone)
        self._clock: Clock = clock or SystemClock()
        self._heartbeat_ms = _positive(heartbeat_interval, "heartbeat_interval")
        self._misfire_ms = _positive(misfire_grace, "misfire_grace")
        self._recovery_ms = _positive(recovery_delay, "recovery_delay")
        if isinstance(history_keep, bool) or not isinstance(history_keep, int) or history_keep < 1:
            raise InvalidArgumentError(f"history_keep must be an int >= 1, got {history_keep!r}")
        self._history_keep = history_keep
        self._claim_ttl = 2 * (self._misfire_ms + self._recovery_ms) + 60_000
        self._pre_enqueue = pre_enqueue
        self._post_enqueue = post_enqueue
        self._logger = logger or _default_logger()
        self._client = AsyncClient(broker, clock=self._clock)
        self._owns_broker = broker is None or isinstance(broker, str)
        self.broker: Broker = self._client.broker
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._followups: list[tuple[int, str, int]] = []
        self._wakeup: asyncio.Event | None = None
        self._wakeup_loop: asyncio.AbstractEventLoop | None = None
        self._dirty = False
        self._closed = False

    def __repr__(self) -> str:
        return f"Scheduler(id={self.id!r}, entries={len(self._slots)})"

    # ------------------------------------------------------------------ entries

    def register(self, spec: str, task: Task, **options: Any) -> str:
        """Enqueue ``task`` with ``options`` each time ``spec`` fires; return the entry id.

        The id is derived from the spec, timezone, task and options, so it is
        the same in every process and after a restart; registering the same
        entry again returns the same id and changes nothing.

        Args:
            spec: ``"*/5 * * * *"``, ``"*/10 * * * * *"`` (leading seconds),
                ``"@every 30s"``, ``"@daily"``..., optionally prefixed with
                ``CRON_TZ=<IANA name>``.
            task: the task to enqueue.
            options: enqueue options, as for :meth:`taskq.AsyncClient.enqueue`
                (``process_in`` delays each run; ``process_at`` is refused).

        Raises:
            InvalidArgumentError: the spec, the task or an option is invalid.
        """
        schedule, tz = parse_spec(spec, self._tz)
        if not isinstance(task, Task):
            raise InvalidArgumentError(f"expected a taskq.Task, got {type(task).__name__}")
        if "process_at" in options or task.process_at is not None:
            raise InvalidArgumentError(
                "process_at would give every run the same time; use process_in for a delay"
            )
        # Validate the options exactly as the client will at each firing.
        self._client._plan(task, dict(options))
        entry = SchedulerEntry(
            id=_entry_id(spec, timezone_name(tz), task, options),
            spec=spec.strip(),
            task=task,
            options=dict(options),
            timezone=timezone_name(tz),
        )
        with self._lock:
            if entry.id in self._slots:
                return entry.id
            now = self._clock.now_ms()
            self._slots[entry.id] = _Slot(entry, schedule, schedule.next_after(now))
        self._logger.info("registered entry %s: %r -> %s", entry.id, entry.spec, task.type)
        self._poke()
        return entry.id

    def unregister(self, entry_id: str) -> None:
        """Remove an entry; it is not enqueued again by this scheduler.

        Raises:
            InvalidArgumentError: no entry has this id.
        """
        with self._lock:
            slot = self._slots.pop(entry_id, None)
        if slot is None:
            raise InvalidArgumentError(f"no scheduler entry with id {entry_id!r}")
        self._logger.info("unregistered entry %s: %r", entry_id, slot.entry.spec)
        self._poke()

    def entries(self) -> list[SchedulerEntry]:
        """The registered entries, in registration order."""
        with self._lock:
            return [slot.entry for slot in self._slots.values()]

    def next_run(self, entry_id: str) -> datetime:
        """When ``entry_id`` fires next (an aware UTC datetime).

        Raises:
            InvalidArgumentError: no entry has this id.
        """
        with self._lock:
            slot = self._slots.get(entry_id)
            if slot is None:
                raise InvalidArgumentError(f"no scheduler entry with id {entry_id!r}")
            tick = slot.next_tick
        return ms_to_dt(tick)

    def _poke(self) -> None:
        self._dirty = True
        wakeup, loop = self._wakeup, self._wakeup_loop
        if wakeup is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wakeup.set)

    # ------------------------------------------------------------------ firing

    async def run_pending(self) -> int:
        """Enqueue every tick that is due now (by the scheduler's clock); return how many.

        :meth:`serve` calls this in its loop; tests with a fake clock call it
        directly after advancing the clock.
        """
        now = self._clock.now_ms()
        enqueued = 0
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            while slot.next_tick <= now:
                tick = slot.next_tick
                if now - tick > self._misfire_ms:
                    slot.next_tick = slot.schedule.next_after(now - self._misfire_ms - 1)
                    self._logger.warning(
                        "entry %s: ticks from %d ms ago were missed (scheduler suspended or "
                        "broker unavailable); skipping them",
                        slot.entry.id,
                        now - tick,
                    )
                    continue
                slot.next_tick = slot.schedule.next_after(tick)
                slot.prev_tick = tick
                if await self._fire(slot.entry, tick):
                    enqueued += 1
        enqueued += await self._run_followups(now)
        return enqueued

    async def _fire(self, entry: SchedulerEntry, tick: int) -> bool:
        try:
            claimed = await self.broker.claim_scheduler_tick(entry.id, tick, ttl=self._claim_ttl)
        except Exception:
            log_failure(self._logger, "entry %s: could not claim tick %d", entry.id, tick)
            self._follow_up(entry, tick)
            return False
        if not claimed:
            self._follow_up(entry, tick)
            return False
        outcome = await self._enqueue(entry, tick)
        if outcome is None:
            self._follow_up(entry, tick)
        return bool(outcome)

    def _follow_up(self, entry: SchedulerEntry, tick: int) -> None:
        if "task_id" in entry.options or entry.task.task_id is not None:
            return  # a fixed task id cannot tell one tick's task from another's
        due = self._clock.now_ms() + self._recovery_ms
        self._followups.append((due, entry.id, tick))

    async def _run_followups(self, now: int) -> int:
        due = [f for f in self._followups if f[0] <= now]
        if not due:
            return 0
        self._followups = [f for f in self._followups if f[0] > now]
        enqueued = 0
        for _, entry_id, tick in due:
            with self._lock:
                slot = self._slots.get(entry_id)
            if slot is not None and await self._recover(slot.entry, tick):
                enqueued += 1
        return enqueued

    async def _recover(self, entry: SchedulerEntry, tick: int) -> bool:
        task_id = _tick_task_id(entry.id, tick)
        try:
            if not await self.broker.claim_scheduler_tick(
                entry.id + _RECOVERY_SUFFIX, tick, ttl=self._claim_ttl
            ):
                return False
            events = await self.broker.scheduler_events(entry.id, limit=100)
        except Exception:
            log_failure(self._logger, "entry %s: could not check tick %d", entry.id, tick)
            return False
        if any(event.task_id == task_id for event in events):
            return False
        self._logger.warning(
            "entry %s: tick %d was claimed but never recorded (its scheduler died?); "
            "enqueueing it now",
            entry.id,
            tick,
        )
        return bool(await self._enqueue(entry, tick))

    async def _enqueue(self, entry: SchedulerEntry, tick: int) -> bool | None:
        """Enqueue one tick; True done, False refused for good, None failed (retry later)."""
        options = dict(entry.options)
        if "task_id" not in options and entry.task.task_id is None:
            options["task_id"] = _tick_task_id(entry.id, tick)
        self._call_hook(self._pre_enqueue, entry)
        try:
            info = await self._client.enqueue(entry.task, **options)
        except TaskIDConflictError as exc:
            if options.get("task_id") != _tick_task_id(entry.id, tick):
                self._logger.error("entry %s: %s", entry.id, exc)
                self._call_hook(self._post_enqueue, entry, None, exc)
                return False
            # Our own tick id exists: this tick was enqueued already (its claimer
            # died before recording it); record it now so history is complete.
            await self._record(entry, options["task_id"])
            return False
        except DuplicateTaskError as exc:
            self._logger.info("entry %s: skipped, the unique lock is held (%s)", entry.id, exc)
            self._call_hook(self._post_enqueue, entry, None, exc)
            return False
        except Exception as exc:
            log_failure(self._logger, "entry %s: enqueue of tick %d failed", entry.id, tick)
            self._call_hook(self._post_enqueue, entry, None, exc)
            return None
        await self._record(entry, info.id)
        self._logger.debug("entry %s: enqueued task %s", entry.id, info.id)
        self._call_hook(self._post_enqueue, entry, info, None)
        return True

    async def _record(self, entry: SchedulerEntry, task_id: str) -> None:
        event = SchedulerEvent(task_id=task_id, enqueued_at=self._clock.now_ms())
        try:
            await self.broker.record_scheduler_event(entry.id, event, keep=self._history_keep)
        except Exception:
            log_failure(self._logger, "entry %s: could not record enqueue history", entry.id)

    def _call_hook(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            self._logger.exception("scheduler hook %r failed", hook)

    # ------------------------------------------------------------------ publishing

    def _entry_infos(self) -> list[SchedulerEntryInfo]:
        with self._lock:
            slots = list(self._slots.values())
        return [
            SchedulerEntryInfo(
                id=s.entry.id,
                spec=s.entry.spec,
                task_type=s.entry.task.type,
                payload=s.entry.task.payload,
                options={k: _option_text(v) for k, v in s.entry.options.items()},
                next_enqueue_at=s.next_tick,
                prev_enqueue_at=s.prev_tick,
                scheduler_id=self.id,
            )
            for s in slots
        ]

    async def _publish(self) -> None:
        self._dirty = False
        try:
            await self.broker.write_scheduler_entries(
                self.id, self._entry_infos(), ttl=2 * self._heartbeat_ms
            )
        except Exception:
            log_failure(self._logger, "could not publish scheduler entries")

    # ------------------------------------------------------------------ loop

    def _next_wake(self) -> int:
        with self._lock:
            ticks = [s.next_tick for s in self._slots.values()]
        ticks.extend(f[0] for f in self._followups)
        return min(ticks, default=self._clock.now_ms() + self._heartbeat_ms)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the scheduler in the current event loop until ``stop`` is set.

        Publishes the entries, enqueues each due tick, and on the way out
        withdraws the published entries. A broker the scheduler created from a
        URL is closed then, and the scheduler cannot run again.

        Raises:
            ServerClosedError: the scheduler closed its broker in an earlier run.
        """
        if self._closed:
            raise ServerClosedError(f"scheduler {self.id} was shut down and closed its broker")
        self._wakeup = asyncio.Event()
        self._wakeup_loop = asyncio.get_running_loop()
        self._logger.info("scheduler %s started with %d entries", self.id, len(self._slots))
        next_heartbeat = 0
        try:
            while not stop.is_set():
                self._wakeup.clear()
                await self.run_pending()
                now = self._clock.now_ms()
                if self._dirty or now >= next_heartbeat:
                    await self._publish()
                    next_heartbeat = now + self._heartbeat_ms
                wake = min(self._next_wake(), next_heartbeat)
                delay = max(0.0, min((wake - self._clock.now_ms()) / 1000, _MAX_IDLE_S))
                await _wait_any(stop, self._wakeup, delay)
        finally:
            self._wakeup = None
            self._wakeup_loop = None
            with contextlib.suppress(Exception):
                await self.broker.clear_scheduler_entries(self.id)
            await self._client.close()
            self._closed = self._owns_broker
            self._logger.info("scheduler %s stopped", self.id)


async def _wait_any(stop: asyncio.Event, wakeup: asyncio.Event, delay: float) -> None:
    if delay <= 0:
        await asyncio.sleep(0)
        return
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _positive(value: timedelta, name: str) -> int:
    if not isinstance(value, timedelta):
        raise InvalidArgumentError(f"{name} must be a timedelta, got {type(value).__name__}")
    ms = td_to_ms(value, name=name)
    if ms <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")
    return ms


# ---------------------------------------------------------------------- periodic task manager


@attrs.frozen
class PeriodicTaskConfig:
    """One periodic task as a config provider describes it.

    Attributes:
        cronspec: the schedule spec (as :meth:`Scheduler.register` takes it).
        task: the task to enqueue.
        options: enqueue options (as :meth:`taskq.AsyncClient.enqueue` takes them).
    """

    cronspec: str
    task: Task
    options: Mapping[str, Any] = attrs.field(factory=dict)


class ConfigProvider(Protocol):
    """Where a :class:`PeriodicTaskManager` reads the wanted periodic tasks from.

    ``get_configs`` may be a plain function (run in a worker thread, so it may
    block on a database or a file) or a coroutine function.
    """

    def get_configs(self) -> Sequence[PeriodicTaskConfig] | Any:
        """Return the periodic tasks that should exist now."""
        ...


class PeriodicTaskManager(_Service):
    """Keeps a :class:`Scheduler`'s entries in line with a config provider.

    Every ``sync_interval`` it calls ``provider.get_configs()``, registers the
    configs that are new and unregisters those that disappeared or changed
    (a changed config is a different entry id). A config that is invalid is
    logged and skipped; the others still apply. If the provider itself fails,
    the current entries stay as they are until the next sync.

    Args:
        provider: an object with ``get_configs()`` (see :class:`ConfigProvider`).
        broker: a Broker or a broker URL (as :class:`Scheduler`).
        sync_interval: how often to call the provider (default 3 minutes).
        scheduler_options: passed on to :class:`Scheduler` (timezone, clock, ...).

    Raises:
        InvalidArgumentError: the provider has no ``get_configs`` or an argument is invalid.
    """

    def __init__(
        self,
        provider: ConfigProvider,
        broker: Broker | str | None = None,
        sync_interval: timedelta = timedelta(minutes=3),
        **scheduler_options: Any,
    ) -> None:
        super().__init__()
        if not callable(getattr(provider, "get_configs", None)):
            raise InvalidArgumentError("provider must have a get_configs() method")
        self._provider = provider
        self._sync_ms = _positive(sync_interval, "sync_interval")
        self.scheduler = Scheduler(broker, **scheduler_options)
        self._logger = self.scheduler._logger
        self._managed: set[str] = set()

    def __repr__(self) -> str:
        return f"PeriodicTaskManager({self.scheduler!r})"

    async def _configs(self) -> list[Any]:
        get = self._provider.get_configs
        if inspect.iscoroutinefunction(get):
            result = await get()
        else:
            result = await asyncio.to_thread(get)
            if inspect.isawaitable(result):
                result = await result
        return list(result)

    async def sync(self) -> bool:
        """Read the provider once and apply the difference; False if the provider failed."""
        try:
            configs = await self._configs()
        except Exception:
            self._logger.exception("periodic task provider failed; keeping the current entries")
            return False
        wanted: set[str] = set()
        for config in configs:
            try:
                if not isinstance(config, PeriodicTaskConfig):
                    raise InvalidArgumentError(
                        f"expected a PeriodicTaskConfig, got {type(config).__name__}"
                    )
                wanted.add(
                    self.scheduler.register(config.cronspec, config.task, **dict(config.options))
                )
            except Exception as exc:
                self._logger.error("skipping invalid periodic task config %r: %s", config, exc)
        for entry_id in self._managed - wanted:
            with contextlib.suppress(InvalidArgumentError):
                self.scheduler.unregister(entry_id)
        self._managed = wanted
        return True

    async def serve(self, stop: asyncio.Event) -> None:
        """Sync once, then run the scheduler and re-sync every ``sync_interval`` until ``stop``."""
        await self.sync()
        runner = asyncio.ensure_future(self.scheduler.serve(stop))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [runner, stopper],
                    timeout=self._sync_ms / 1000,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if done:
                    break
                await self.sync()
        finally:
            stopper.cancel()
            stop.set()
            await runner
