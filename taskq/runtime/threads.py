"""The thread pool that runs sync handlers, and interrupting a call on it."""

from __future__ import annotations

import ctypes
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from taskq.errors import Interrupted

__all__ = ["CAN_INTERRUPT", "HandlerThreads", "Interruptible"]

T = TypeVar("T")

# PyThreadState_SetAsyncExc(thread id, exception type or NULL) -> threads changed.
# ctypes.pythonapi calls it holding the GIL, as it must be called.
_set_async_exc: Any = (
    getattr(ctypes.pythonapi, "PyThreadState_SetAsyncExc", None)
    if sys.implementation.name == "cpython"
    else None
)
CAN_INTERRUPT = _set_async_exc is not None
"""Whether this interpreter can raise an exception inside another thread."""

# Guards every Interruptible's thread and sent flag: held for a few
# instructions, by a pool thread entering or leaving a call and by whoever
# interrupts one.
_LOCK = threading.Lock()


class Interruptible:
    """One call on a pool thread that another thread can interrupt once.

    :meth:`interrupt` raises :class:`~taskq.errors.Interrupted` inside the
    call (when its thread next runs Python code), or, when the call has not
    started yet, makes it raise at once without calling anything. The
    exception is raised at most once and never outside the call: a call that
    returns first clears one still pending before the thread moves on.
    """

    __slots__ = ("_done", "_sent", "_thread")

    def __init__(self) -> None:
        self._thread: int | None = None  # the thread inside the call
        self._sent = False  # interrupted (before or during the call)
        self._done = False

    @property
    def interrupted(self) -> bool:
        """Whether :meth:`interrupt` has stopped (or kept from starting) this call."""
        return self._sent

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on this thread, interruptibly.

        Raises:
            Interrupted: interrupted before or during the call (or while it
                returned).
        """
        with _LOCK:
            if self._sent:
                raise Interrupted()
            self._thread = threading.get_ident()
        try:
            return fn(*args)
        finally:
            self._leave()

    def _leave(self) -> None:
        with _LOCK:
            self._thread = None
            self._done = True
            sent = self._sent
        if sent and _set_async_exc is not None:
            # Sent while the call ran and maybe not raised yet: take it back,
            # so it cannot go off in whatever this thread runs next. (If it goes
            # off here instead, it leaves through run(), still inside the call.)
            _set_async_exc(ctypes.c_ulong(threading.get_ident()), None)

    def interrupt(self) -> bool:
        """Stop the call: raise :class:`Interrupted` in it, or keep it from starting.

        Returns whether this did anything: False when the call has returned,
        was interrupted already, or runs on an interpreter that cannot raise
        in another thread (then the call runs on until it returns).
        """
        with _LOCK:
            if self._sent or self._done:
                return False
            thread = self._thread
            if thread is None:
                self._sent = True  # not started: run() raises without calling
                return True
            if _set_async_exc is None:
                return False
            self._sent = True
            changed = _set_async_exc(ctypes.c_ulong(thread), ctypes.py_object(Interrupted))
            return bool(changed)


class HandlerThreads:
    """A fixed-size pool of daemon threads running submitted calls in order.

    Unlike :class:`concurrent.futures.ThreadPoolExecutor` its threads are
    daemons: a sync handler that never returns (blocked in C, where
    :class:`Interruptible` cannot reach it) cannot keep the process alive
    after the server has shut down (its task was requeued by then). Threads
    start on first use, so a server with only async handlers starts none.

    Args:
        size: the number of threads.
        name: the prefix of the threads' names.
    """

    def __init__(self, size: int, name: str = "taskq-handler") -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def started(self) -> int:
        """How many threads have been started."""
        return len(self._threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a pool thread; ``fn`` must not raise (its errors are lost).

        Raises:
            RuntimeError: the pool is closed.
        """
        if self._closed:
            raise RuntimeError("the handler thread pool is closed")
        if len(self._threads) < self._size:
            self._start_threads()
        self._queue.put((fn, args))

    def _start_threads(self) -> None:
        with self._lock:
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            fn(*args)

    def close(self) -> None:
        """Let every thread exit once its current call returns (does not wait)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for closed threads to exit; return whether all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
