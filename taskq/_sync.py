"""Running the async core from synchronous code.

The sync :class:`taskq.Client` and :class:`taskq.Inspector` are thin wrappers:
each call is a coroutine of the async twin, run on one private event-loop
thread per process. That works from plain threads, from a thread pool of a
running event loop, and after ``os.fork()`` (a child gets a fresh thread; it
never touches the parent's loop).

The one exception: ``Client.enqueue`` / ``enqueue_many`` store through the
broker's :class:`~taskq.brokers.base.BlockingProducer` path on the calling
thread when it has one, and come here only when it does not.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from taskq.errors import TaskqError

__all__ = ["LoopThread", "run_sync"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="taskq-sync-loop", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop thread and return its result (re-raising its error).

        Raises:
            TaskqError: when called from the loop thread itself (it would deadlock).
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise TaskqError("a sync taskq call was made from taskq's own event-loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)


_lock = threading.Lock()
_instance: tuple[int, LoopThread] | None = None


def loop_thread() -> LoopThread:
    """The process-wide loop thread, created on first use (again after a fork)."""
    global _instance
    pid = os.getpid()
    current = _instance
    if current is not None and current[0] == pid:
        return current[1]
    with _lock:
        if _instance is None or _instance[0] != pid:
            _instance = (pid, LoopThread())
        return _instance[1]


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` on the process-wide loop thread and wait for its result."""
    return loop_thread().run(coro, timeout)
