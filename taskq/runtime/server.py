"""The worker server: :class:`Server`, :class:`Config` and :func:`run` (the composition root).

A server runs its own asyncio event loop in a background thread. On it run
the components, each one small loop talking only to the Broker protocol:

* the processor (fetch -> handler -> outcome, ``concurrency`` at a time),
* the heartbeat (extends leases at ``lease / 3``, publishes server state),
* the recoverer (expired leases -> retry or archive; at start-up too),
* the forwarder (due scheduled and retry tasks -> pending),
* the janitor (completed tasks past retention -> deleted, the archive trimmed),
* cancellation (cancel requests -> running tasks cancelled),
* the health check and the group aggregator, when configured.

With ``Config(burst=True)`` the server shuts itself down once its queues
are drained: nothing pending or due, and none of its own tasks running or
waiting for its outcome to be stored (see :class:`Config`).

Shutdown, in order: the forwarder, recoverer, janitor, health check and
aggregator stop; the processor stops fetching, waits up to
``shutdown_timeout`` for running tasks and requeues the rest (no retry
spent); then the heartbeat and cancellation stop and the server's published
state is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import attrs

from taskq._time import Clock, SystemClock
from taskq.brokers.base import Broker, ConfigCheck, ServerInfo
from taskq.brokers.registry import DEFAULT_BROKER_URL, connect, redact_url
from taskq.errors import BrokerConfigError, InvalidArgumentError, ServerClosedError
from taskq.mux import ServeMux
from taskq.runtime.cancellation import Cancellation
from taskq.runtime.config import Config
from taskq.runtime.forwarder import Forwarder
from taskq.runtime.healthcheck import HealthChecker
from taskq.runtime.heartbeat import Heartbeat
from taskq.runtime.janitor import Janitor
from taskq.runtime.processor import Processor
from taskq.runtime.recoverer import Recoverer
from taskq.runtime.watchdog import LoopWatchdog

__all__ = ["Config", "Server", "default_broker_url", "run"]

_START_TIMEOUT = 60.0
_CHECK_TIMEOUT = 10.0
_COMPONENT_STOP_TIMEOUT = 10.0
_RESTART_DELAY = 1.0

NEW, ACTIVE, QUIET, STOPPING, STOPPED = "new", "active", "quiet", "stopping", "stopped"


def default_broker_url() -> str:
    """The broker URL used when none is given: env ``TASKQ_BROKER``, else ``sqlite:///taskq.db``.

    Falls back to ``memory://`` only while the SQLite broker is not installed.
    """
    url = os.environ.get("TASKQ_BROKER")
    if url:
        return url
    try:
        importlib.import_module("taskq.brokers.sqlite")
    except ImportError:
        return "memory://"
    return DEFAULT_BROKER_URL


def _describe(broker: Broker | str) -> str:
    return redact_url(broker) if isinstance(broker, str) else repr(broker)


class Server:
    """A worker server: runs the handlers of a :class:`ServeMux` on tasks from a broker.

    Args:
        broker: a broker, or a broker URL (the server then connects and closes it).
        config: settings (default ``Config()``).
        clock: the local wall clock (tests may pass a fake one).

    Raises:
        InvalidArgumentError: ``broker`` is neither a URL nor a broker, or
            ``config`` is not a :class:`Config`.
    """

    def __init__(
        self, broker: Broker | str, config: Config | None = None, *, clock: Clock | None = None
    ) -> None:
        if not isinstance(broker, str) and not isinstance(broker, Broker):
            raise InvalidArgumentError(
                f"broker must be a broker URL or a Broker, got {type(broker).__name__}"
            )
        if config is None:
            config = Config()
        if not isinstance(config, Config):
            raise InvalidArgumentError(
                f"config must be a taskq.Config, got {type(config).__name__}"
            )
        self._broker_arg = broker
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._log = config.get_logger()
        self._host = socket.gethostname()
        self._id = f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._state = NEW
        self._started_at = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._start_error: BaseException | None = None
        self._processor: Processor | None = None
        self._shutdown_event: asyncio.Event | None = None
        self._hurry_event: asyncio.Event | None = None
        self._quiet_requested = False
        self._hurry_requested = False
        self._restart_requested = False

    def __repr__(self) -> str:
        return f"Server(id={self._id!r}, broker={_describe(self._broker_arg)}, state={self._state})"

    @property
    def id(self) -> str:
        """The server id published to the inspector (``host:pid:random``)."""
        return self._id

    @property
    def config(self) -> Config:
        """The server's settings."""
        return self._config

    @property
    def state(self) -> str:
        """``new``, ``active``, ``quiet``, ``stopping`` or ``stopped``."""
        return self._state

    @property
    def restart_requested(self) -> bool:
        """Whether the server shut itself down for a stuck handler (``stuck_handler_timeout``).

        Its process should then be replaced: the stuck thread can only go
        with it. ``taskq worker`` exits with status 75 (``EX_TEMPFAIL``).
        """
        return self._restart_requested

    # ------------------------------------------------------------------ public control

    def start(self, mux: ServeMux) -> None:
        """Start serving ``mux`` on a background thread; return once the server runs.

        Connects (for a URL), pings the broker, checks the broker's settings
        (a setting that can lose tasks, such as a Redis ``maxmemory-policy``
        other than ``noeviction``, is logged as a warning), then starts every
        component; expired leases are recovered at once.

        Raises:
            InvalidArgumentError: ``mux`` is not a ServeMux.
            ServerClosedError: the server was already started.
            BrokerError: the broker cannot be reached.
            BrokerConfigError: with ``strict_broker_checks``, the broker runs
                with a setting that can lose tasks.
        """
        if not isinstance(mux, ServeMux):
            raise InvalidArgumentError(f"start() needs a taskq.ServeMux, got {type(mux).__name__}")
        if self._state != NEW:
            raise ServerClosedError(f"server {self._id} was already started (state {self._state})")
        self._state = ACTIVE
        self._thread = threading.Thread(
            target=self._thread_main, args=(mux,), name=f"taskq-server-{self._id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.shutdown()
            raise ServerClosedError(f"server did not start within {_START_TIMEOUT:g}s")
        if self._start_error is not None:
            self._thread.join()
            self._state = STOPPED
            raise self._start_error

    def stop(self) -> None:
        """Stop fetching new tasks ("quiet"); running tasks finish; call :meth:`shutdown` later."""
        if self._state not in (ACTIVE,):
            return
        self._state = QUIET
        self._quiet_requested = True
        self._call_in_loop(self._quiet)

    def shutdown(self) -> None:
        """Stop gracefully and wait until done.

        Running tasks get up to ``shutdown_timeout`` to finish; the rest are
        requeued without spending a retry. Idempotent.

        Raises:
            ServerClosedError: called from a handler of this server (it would wait on itself).
        """
        thread = self._thread
        if thread is None:
            self._state = STOPPED
            return
        if threading.current_thread() is thread:
            raise ServerClosedError("shutdown() cannot be called from the server's own event loop")
        if self._state in (ACTIVE, QUIET):
            self._state = STOPPING
        self._call_in_loop(self._begin_shutdown)
        thread.join()
        self._state = STOPPED

    def shutdown_now(self) -> None:
        """Requeue running tasks at once and stop (what a second SIGTERM does)."""
        self._hurry_requested = True
        self._call_in_loop(self._hurry)
        self.shutdown()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped; return whether it has.

        A burst server (``Config(burst=True)``) stops by itself once its
        queues are drained.
        """
        return self._finished.wait(timeout)

    def run(self, mux: ServeMux) -> None:
        """Start, wait for a signal, shut down (blocks).

        With ``Config(burst=True)`` it also returns once the queues are
        drained. SIGTERM or SIGINT: graceful shutdown; a second one requeues running
        tasks at once. SIGTSTP: stop fetching and keep running (quiet).
        Signals are handled only when called from the main thread; elsewhere
        it returns when another thread calls :meth:`shutdown`.

        Raises:
            as :meth:`start`.
        """
        terminate = threading.Event()
        # Handlers go in before the server starts: a signal that arrives right
        # after the start-up line must shut down gracefully, not kill the process.
        with self._signals(terminate):
            self.start(mux)
            try:
                while not terminate.is_set() and not self._finished.wait(0.5):
                    pass
            finally:
                self.shutdown()

    # ------------------------------------------------------------------ signals

    @contextlib.contextmanager
    def _signals(self, terminate: threading.Event) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_term(signum: int, frame: FrameType | None) -> None:
            if terminate.is_set():
                self._log.warning("second %s: requeueing running tasks now", _signame(signum))
                self._hurry_requested = True
                self._call_in_loop(self._hurry)
            else:
                self._log.info("%s: shutting down gracefully", _signame(signum))
                terminate.set()

        def on_tstp(signum: int, frame: FrameType | None) -> None:
            self._log.info("SIGTSTP: no new tasks will be fetched")
            self.stop()

        handlers: dict[int, Callable[[int, FrameType | None], Any]] = {
            signal.SIGTERM: on_term,
            signal.SIGINT: on_term,
        }
        if hasattr(signal, "SIGTSTP"):
            handlers[signal.SIGTSTP] = on_tstp
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    # ------------------------------------------------------------------ the loop thread

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(fn)

    def _begin_shutdown(self) -> None:
        if self._shutdown_event is not None:
            self._shutdown_event.set()

    def _quiet(self) -> None:
        if self._processor is not None:
            self._processor.quiet()

    def _hurry(self) -> None:
        if self._hurry_event is not None:
            self._hurry_event.set()
        self._begin_shutdown()

    def _thread_main(self, mux: ServeMux) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(mux))
        except BaseException as exc:
            if not self._ready.is_set():
                self._start_error = exc
            else:
                self._log.exception("taskq server crashed")
        finally:
            try:
                loop.run_until_complete(_cancel_leftovers())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                self._loop = None
                loop.close()
                self._state = STOPPED
                self._ready.set()
                self._finished.set()

    async def _main(self, mux: ServeMux) -> None:
        log = self._log
        self._shutdown_event = asyncio.Event()
        self._hurry_event = asyncio.Event()
        if self._hurry_requested:
            self._hurry_event.set()
        owned = isinstance(self._broker_arg, str)
        broker = (
            connect(self._broker_arg) if isinstance(self._broker_arg, str) else self._broker_arg
        )
        try:
            try:
                await broker.ping()
                await self._check_broker(broker)
            except BaseException as exc:
                self._start_error = exc
                self._ready.set()
                return
            await self._serve(mux, broker)
        finally:
            if owned:
                try:
                    await broker.close()
                except Exception as exc:
                    log.warning("closing the broker failed: %s", exc)

    async def _check_broker(self, broker: Broker) -> None:
        """Log what the broker's settings check finds; refuse unsafe ones in strict mode.

        A check that fails or times out is logged and never stops the start.
        """
        if not isinstance(broker, ConfigCheck):
            return
        log = self._log
        try:
            findings = await asyncio.wait_for(broker.check_config(), _CHECK_TIMEOUT)
        except Exception as exc:
            log.warning("could not check the broker's settings: %s", str(exc) or type(exc).__name__)
            return
        unsafe = [f.message for f in findings if f.unsafe]
        if unsafe and self._config.strict_broker_checks:
            raise BrokerConfigError(
                " ".join(["refusing to start (strict_broker_checks):", *unsafe])
            )
        for finding in findings:
            log.log(logging.WARNING if finding.is_warning else logging.INFO, "%s", finding.message)

    async def _serve(self, mux: ServeMux, broker: Broker) -> None:
        config, log = self._config, self._log
        queues = config.queue_names
        self._started_at = self._clock.now_ms()
        recoverer = Recoverer(
            broker,
            queues=queues,
            interval=config.effective_recoverer_interval,
            lease=config.lease,
            release_unique_on_archive=config.release_unique_on_archive,
            logger=log,
        )
        forwarder = Forwarder(broker, queues=queues, interval=config.forwarder_interval, logger=log)

        async def drained() -> bool:
            # Burst mode: nothing pending and nothing of ours in flight. Tasks
            # that are due (or whose worker died) count as pending: move them
            # first, and only when there were none is the burst over.
            if await recoverer.recover_once() or await forwarder.forward_once():
                return False
            log.info("taskq worker %s: queues drained (burst)", self._id)
            self._begin_shutdown()
            return True

        def stuck(what: str) -> None:
            if self._restart_requested:
                return
            self._restart_requested = True
            log.error(
                "taskq worker %s: %s; shutting down so that a new process takes over "
                "(stuck_handler_timeout)",
                self._id,
                what,
            )
            self._begin_shutdown()

        processor = Processor(
            broker,
            mux=mux,
            clock=self._clock,
            config=config,
            logger=log,
            on_idle=drained if config.burst else None,
            on_stuck=stuck,
        )
        self._processor = processor
        if self._quiet_requested:
            processor.quiet()
        early_stop, fetch_stop, late_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        early: list[Callable[[asyncio.Event], Awaitable[None]]] = [
            recoverer.run,
            forwarder.run,
            Janitor(
                broker,
                queues=queues,
                interval=config.janitor_interval,
                batch_size=config.janitor_batch_size,
                logger=log,
                archive_max_size=config.archive_max_size,
                archive_max_age=config.archive_max_age,
            ).run,
        ]
        if config.health_check is not None:
            early.append(
                HealthChecker(
                    broker,
                    callback=config.health_check,
                    interval=config.health_check_interval,
                    logger=log,
                ).run
            )
        aggregator = self._aggregator(broker)
        if aggregator is not None:
            early.append(aggregator)
        late: list[Callable[[asyncio.Event], Awaitable[None]]] = [
            Heartbeat(
                broker,
                holder=processor,
                server_state=self._server_info,
                interval=config.effective_heartbeat_interval,
                lease=config.lease,
                logger=log,
            ).run,
            Cancellation(
                broker, target=processor, interval=config.cancel_check_interval, logger=log
            ).run,
        ]
        early_tasks = [asyncio.create_task(self._guard(c, early_stop)) for c in early]
        late_tasks = [asyncio.create_task(self._guard(c, late_stop)) for c in late]
        fetcher = asyncio.create_task(processor.run(fetch_stop))
        log.info(
            "taskq worker %s started: broker=%s queues=%s%s concurrency=%d%s",
            self._id,
            _describe(self._broker_arg),
            ",".join(f"{q}={config.queues[q]}" for q in queues),
            " (strict)" if config.strict_priority else "",
            config.concurrency,
            " burst" if config.burst else "",
        )
        watchdog = None
        if config.blocked_loop_warning is not None:
            watchdog = LoopWatchdog(config.blocked_loop_warning.total_seconds(), log, self._id)
            watchdog.start()
        self._ready.set()
        assert self._shutdown_event is not None and self._hurry_event is not None
        try:
            await self._shutdown_event.wait()
        finally:
            if watchdog is not None:
                watchdog.stop()

        log.info("taskq worker %s shutting down", self._id)
        early_stop.set()
        fetch_stop.set()
        await _join(early_tasks, log)
        await _join([fetcher], log)
        await processor.shutdown(config.shutdown_timeout.total_seconds(), self._hurry_event)
        late_stop.set()
        await _join(late_tasks, log)
        log.info("taskq worker %s stopped", self._id)

    async def _guard(
        self, component: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Run a component until ``stop``; a crash (a bug) is logged and the component restarted."""
        name = getattr(
            getattr(component, "__self__", component), "__class__", type(component)
        ).__name__
        while not stop.is_set():
            try:
                await component(stop)
                return
            except Exception:
                self._log.exception("%s crashed; restarting it", name)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), _RESTART_DELAY)

    def _aggregator(self, broker: Broker) -> Callable[[asyncio.Event], Awaitable[None]] | None:
        config = self._config
        if config.group_aggregator is None:
            return None
        try:
            module = importlib.import_module("taskq.runtime.aggregator")
        except ImportError:
            self._log.error("group_aggregator is set but taskq.runtime.aggregator is not available")
            return None
        aggregator = module.Aggregator(
            broker, clock=self._clock, queues=config.queue_names, config=config, logger=self._log
        )
        run: Callable[[asyncio.Event], Awaitable[None]] = aggregator.run
        return run

    def _server_info(self) -> ServerInfo:
        processor = self._processor
        state = self._state
        if processor is not None and processor.is_quiet and state == ACTIVE:
            state = QUIET
        return ServerInfo(
            id=self._id,
            host=self._host,
            pid=os.getpid(),
            concurrency=self._config.concurrency,
            queues=dict(self._config.queues),
            strict_priority=self._config.strict_priority,
            started_at=self._started_at,
            status=state,
            active_workers=tuple(processor.workers()) if processor is not None else (),
        )


async def _cancel_leftovers() -> None:
    """Cancel what is still pending (a component that ignored its stop) before the loop closes."""
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


async def _join(tasks: list[asyncio.Task[Any]], log: logging.Logger) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=_COMPONENT_STOP_TIMEOUT)
    for task in pending:
        log.warning("a component did not stop in time; cancelling it")
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            if task.done() and task.exception() is not None:
                log.error("component failed: %s", task.exception())


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def run(
    mux: ServeMux,
    broker: Broker | str | None = None,
    *,
    concurrency: int | None = None,
    queues: Mapping[str, int] | None = None,
    strict_priority: bool = False,
    **config: Any,
) -> None:
    """Serve ``mux`` until SIGTERM or SIGINT (blocks). See :meth:`Server.run`.

    Args:
        mux: the handlers.
        broker: a broker or URL (default: env ``TASKQ_BROKER``, else ``sqlite:///taskq.db``).
        concurrency: tasks at once (default: the CPU count).
        queues: queue name -> weight (default ``{"default": 1}``).
        strict_priority: take from the heaviest queue first.
        **config: any other :class:`Config` field.

    Raises:
        InvalidArgumentError: an unknown or invalid setting.
        BrokerError: the broker cannot be reached.
    """
    settings: dict[str, Any] = dict(config)
    if concurrency is not None:
        settings["concurrency"] = concurrency
    if queues is not None:
        settings["queues"] = queues
    settings["strict_priority"] = strict_priority
    known = {f.name for f in attrs.fields(Config)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InvalidArgumentError(f"unknown server setting(s): {', '.join(unknown)}")
    server = Server(broker if broker is not None else default_broker_url(), Config(**settings))
    server.run(mux)
