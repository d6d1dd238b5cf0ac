"""Interrupting def handlers: Interruptible on its own, then through a running server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import taskq
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import Interrupted
from taskq.mux import Context, Handler, ServeMux
from taskq.runtime.threads import CAN_INTERRUPT, Interruptible
from taskq.task import TaskState
from tests.unit._runtime import call, enqueue, info, message, serving, wait_until

needs_cpython = pytest.mark.skipif(not CAN_INTERRUPT, reason="needs PyThreadState_SetAsyncExc")
HOUR = {"retry_delay": lambda n, e, t: timedelta(hours=1)}


def _spin(stop: threading.Event, entered: threading.Event | None = None) -> None:
    """Python code that never looks at ctx.cancelled (the loop runs bytecode)."""
    if entered is not None:
        entered.set()
    while not stop.is_set():
        pass


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            fn()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def _spinning_mux(
    stop: threading.Event, entered: threading.Event, reasons: list[str | None]
) -> ServeMux:
    """Type "t": a def handler that spins until ``stop``; records why it was interrupted."""
    mux = ServeMux()

    @mux.handle("t")
    def busy(ctx: Context, task: taskq.Task) -> None:
        try:
            _spin(stop, entered)
        except Interrupted:
            reasons.append(ctx.cancel_reason)
            raise

    return mux


# -- Interruptible --------------------------------------------------------------------


def test_interrupted_is_a_base_exception_that_except_exception_does_not_catch() -> None:
    assert issubclass(Interrupted, BaseException)
    assert not issubclass(Interrupted, Exception)
    assert taskq.Interrupted is Interrupted


@needs_cpython
def test_interrupt_raises_inside_a_running_call() -> None:
    stop, entered = threading.Event(), threading.Event()
    running = Interruptible()
    thread, outcome = _in_thread(lambda: running.run(_spin, stop, entered))
    try:
        assert entered.wait(5)
        assert running.interrupt() is True
        thread.join(5)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], Interrupted)
        assert running.interrupted
        assert running.interrupt() is False  # once only
    finally:
        stop.set()


def test_interrupt_before_the_call_starts_keeps_it_from_running() -> None:
    ran: list[int] = []
    pending = Interruptible()
    assert pending.interrupt() is True
    with pytest.raises(Interrupted):
        pending.run(ran.append, 1)
    assert ran == []


def test_interrupt_after_the_call_returned_does_nothing() -> None:
    done = Interruptible()
    assert done.run(lambda x: x * 2, 21) == 42
    assert done.interrupt() is False
    assert not done.interrupted


def _interrupt_as_it_returns() -> tuple[bool, str, bool]:
    """One call whose thread, having returned, waits to leave it while an interrupt waits too.

    Both queue on the lock (held here meanwhile), the interrupt first. Returns
    whether the interrupt was sent, how the call ended, and whether
    Interrupted went off in the code after it.
    """
    from taskq.runtime import threads

    one, inside, go = Interruptible(), threading.Event(), threading.Event()
    ended: list[str] = []
    leaked: list[bool] = []
    sent: list[bool] = []

    def caller() -> None:
        try:
            one.run(lambda: (inside.set(), go.wait(5)))
            ended.append("returned")
        except Interrupted:
            ended.append("interrupted")
        try:
            for _ in range(2000):  # bytecode after the call: a leak goes off here
                pass
        except Interrupted:
            leaked.append(True)

    a = threading.Thread(target=caller)
    a.start()
    assert inside.wait(5)
    b = threading.Thread(target=lambda: sent.append(one.interrupt()))
    with threads._LOCK:
        b.start()
        time.sleep(0.002)  # the interrupt queues on the lock
        go.set()  # the call returns; its thread queues on the lock to leave
        time.sleep(0.002)
    a.join(5)
    b.join(5)
    assert not a.is_alive() and not b.is_alive()
    return sent[0], ended[0], bool(leaked)


@needs_cpython
def test_an_interrupt_sent_as_the_call_returns_never_goes_off_after_it() -> None:
    # The narrowest window: whichever gets the lock first, Interrupted must
    # never surface in the code that runs after run() on that thread.
    rounds = [_interrupt_as_it_returns() for _ in range(40)]
    assert not any(leaked for _, _, leaked in rounds)
    assert any(sent for sent, _, _ in rounds), "the interrupt never won: the window was not tested"
    assert all(ended == "interrupted" for sent, ended, _ in rounds if sent)


# -- through the server ---------------------------------------------------------------


@needs_cpython
def test_a_def_handler_past_its_timeout_is_interrupted_and_frees_its_slot(
    broker: InMemoryBroker,
) -> None:
    stop = threading.Event()
    seen: list[tuple[str, str | None]] = []
    second_ran = threading.Event()
    mux = ServeMux()

    @mux.handle("stuck")
    def stuck(ctx: Context, task: taskq.Task) -> None:
        try:
            try:
                _spin(stop)
            except Exception:  # must not swallow the interrupt
                seen.append(("exception", ctx.cancel_reason))
        except Interrupted:
            seen.append(("interrupted", ctx.cancel_reason))
            raise

    mux.handle("next", lambda ctx, task: second_ran.set())
    first = message("stuck", timeout=300, max_retry=3)
    second = message("next")
    enqueue(broker, first, second)
    try:
        with serving(broker, mux, concurrency=1, **HOUR):
            # One slot: the second task runs only once the stuck thread is back.
            assert second_ran.wait(5), "the interrupted handler must give its slot back"
            wait_until(lambda: info(broker, first).state is TaskState.RETRY, what="retry")
    finally:
        stop.set()
    assert seen == [("interrupted", "timeout")]
    stored = info(broker, first)
    assert stored.retried == 1
    assert stored.last_error == "task timed out after 0.3s"  # the limit, not the interrupt


@needs_cpython
def test_cancelling_a_running_def_handler_interrupts_it(broker: InMemoryBroker) -> None:
    stop, entered = threading.Event(), threading.Event()
    reasons: list[str | None] = []
    mux = _spinning_mux(stop, entered, reasons)
    msg = message("t", max_retry=5)
    enqueue(broker, msg)
    try:
        with serving(broker, mux) as server:
            assert entered.wait(5)
            assert call(broker.request_cancel(msg.id)) is TaskState.ACTIVE
            wait_until(lambda: reasons == ["canceled"], what="the interrupt")
            wait_until(lambda: info(broker, msg).state is TaskState.ARCHIVED, what="archived")
            processor = server._processor
            assert processor is not None
            wait_until(lambda: processor.in_flight == 0, what="the slot")
    finally:
        stop.set()
    assert info(broker, msg).last_error == "canceled"


@needs_cpython
def test_a_def_handler_behind_middleware_is_interrupted_too(broker: InMemoryBroker) -> None:
    stop, entered = threading.Event(), threading.Event()
    interrupted = threading.Event()
    mux = ServeMux()

    def passthrough(next_handler: Handler) -> Handler:
        async def wrapped(ctx: Context, task: taskq.Task) -> None:
            result = next_handler(ctx, task)
            if asyncio.iscoroutine(result):
                await result

        return wrapped

    mux.use(passthrough)

    @mux.handle("t")
    def busy(ctx: Context, task: taskq.Task) -> None:
        try:
            _spin(stop, entered)
        except Interrupted:
            interrupted.set()
            raise

    msg = message("t", timeout=300, max_retry=3)
    enqueue(broker, msg)
    try:
        with serving(broker, mux, **HOUR):
            assert entered.wait(5)
            assert interrupted.wait(5), "the thread under the middleware must be interrupted"
            wait_until(lambda: info(broker, msg).state is TaskState.RETRY, what="retry")
    finally:
        stop.set()
    assert info(broker, msg).last_error == "task timed out after 0.3s"


@needs_cpython
def test_a_def_handler_still_running_at_shutdown_is_requeued_and_interrupted(
    broker: InMemoryBroker,
) -> None:
    stop, entered = threading.Event(), threading.Event()
    reasons: list[str | None] = []
    mux = _spinning_mux(stop, entered, reasons)
    msg = message("t", max_retry=5)
    enqueue(broker, msg)
    try:
        with serving(broker, mux, shutdown_timeout=0.3):
            assert entered.wait(5)
        wait_until(lambda: reasons == ["shutdown"], what="the interrupt")
    finally:
        stop.set()
    stored = info(broker, msg)
    assert stored.state is TaskState.PENDING
    assert stored.retried == 0


def test_with_interrupts_off_a_cut_off_def_handler_runs_on(broker: InMemoryBroker) -> None:
    stop, entered, returned = threading.Event(), threading.Event(), threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    def busy(ctx: Context, task: taskq.Task) -> None:
        entered.set()
        while not stop.is_set():
            time.sleep(0.005)
        returned.set()

    msg = message("t", timeout=200, max_retry=3)
    enqueue(broker, msg)
    try:
        with serving(broker, mux, interrupt_sync_handlers=False, **HOUR):
            assert entered.wait(5)
            wait_until(lambda: info(broker, msg).state is TaskState.RETRY, what="retry")
            time.sleep(0.3)
            assert not returned.is_set()  # still running: nothing interrupted it
            stop.set()
            assert returned.wait(5)
    finally:
        stop.set()


@pytest.mark.parametrize(
    "name",
    [
        "interrupt_sync_handlers",
        "strict_priority",
        "strict_broker_checks",
        "burst",
        "release_unique_on_archive",
    ],
)
def test_config_switches_must_be_bools(name: str) -> None:
    with pytest.raises(taskq.InvalidArgumentError, match=f"{name} must be a bool"):
        taskq.Config(**{name: 1})
    assert taskq.Config().interrupt_sync_handlers is True


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


# -- stuck handlers -------------------------------------------------------------------


def _blocked_in_c(release: threading.Event, entered: threading.Event) -> Callable[..., None]:
    """A def handler blocked in a C-level wait, where Interrupted cannot arrive."""

    def handler(ctx: Context, task: taskq.Task) -> None:
        entered.set()
        release.wait(30)

    return handler


def test_a_handler_stuck_past_the_grace_shuts_the_server_down_for_a_restart(
    broker: InMemoryBroker,
) -> None:
    release, entered = threading.Event(), threading.Event()
    mux = ServeMux()
    mux.handle("t", _blocked_in_c(release, entered))
    msg = message("t", timeout=200, max_retry=3)
    enqueue(broker, msg)
    server = taskq.Server(
        broker,
        taskq.Config(concurrency=2, fetch_wait=0.05, stuck_handler_timeout=0.5, **HOUR),
    )
    assert not server.restart_requested
    server.start(mux)
    try:
        assert entered.wait(5)
        assert server.wait(10), "the server must stop by itself"
        assert server.restart_requested
        assert server.state == "stopped"
    finally:
        release.set()
        server.shutdown()
    stored = info(broker, msg)
    assert stored.state is TaskState.RETRY
    assert stored.last_error == "task timed out after 0.2s"


def test_without_a_grace_a_stuck_handler_does_not_stop_the_server(broker: InMemoryBroker) -> None:
    release, entered = threading.Event(), threading.Event()
    mux = ServeMux()
    mux.handle("t", _blocked_in_c(release, entered))
    mux.handle("next", lambda ctx, task: None)
    msg = message("t", timeout=200, max_retry=3)
    enqueue(broker, msg)
    try:
        with serving(broker, mux, **HOUR) as server:
            assert entered.wait(5)
            wait_until(lambda: info(broker, msg).state is TaskState.RETRY, what="retry")
            assert not server.wait(1.0)
            assert not server.restart_requested
            later = message("next", retention=60_000)
            enqueue(broker, later)  # the other slots still serve
            wait_until(lambda: info(broker, later).state is TaskState.COMPLETED, what="next")
    finally:
        release.set()


def test_a_handler_that_returns_within_the_grace_is_not_stuck(broker: InMemoryBroker) -> None:
    returned = threading.Event()
    mux = ServeMux()

    @mux.handle("t")
    def slow_to_stop(ctx: Context, task: taskq.Task) -> None:
        try:
            while True:
                time.sleep(0.01)
        except Interrupted:
            time.sleep(0.3)  # cleaning up after the cut-off, within the grace
            returned.set()
            raise

    msg = message("t", timeout=200, max_retry=3)
    enqueue(broker, msg)
    with serving(broker, mux, stuck_handler_timeout=1.0, **HOUR) as server:
        assert returned.wait(5)
        assert not server.wait(1.5)
        assert not server.restart_requested


def test_stuck_handler_timeout_must_be_positive() -> None:
    with pytest.raises(taskq.InvalidArgumentError, match="stuck_handler_timeout"):
        taskq.Config(stuck_handler_timeout=0)
    assert taskq.Config(stuck_handler_timeout=2).stuck_handler_timeout == timedelta(seconds=2)


def test_a_cut_off_handler_that_runs_on_is_published_with_why(broker: InMemoryBroker) -> None:
    release, entered = threading.Event(), threading.Event()
    mux = ServeMux()
    mux.handle("t", _blocked_in_c(release, entered))
    msg = message("t", timeout=200, max_retry=3)
    enqueue(broker, msg)

    def published() -> list[tuple[str, str]]:
        return [(w.task_id, w.cut_off) for s in call(broker.servers()) for w in s.active_workers]

    try:
        with serving(broker, mux, lease=1.0, heartbeat_interval=0.1, **HOUR):
            assert entered.wait(5)
            wait_until(lambda: published() == [(msg.id, "")], what="published as running")
            wait_until(lambda: info(broker, msg).state is TaskState.RETRY, what="retry")
            wait_until(lambda: published() == [(msg.id, "timeout")], what="published cut off")
            release.set()
            wait_until(lambda: published() == [], what="gone once it returned")
    finally:
        release.set()
