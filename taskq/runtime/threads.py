"""The thread pool that runs sync handlers."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HandlerThreads"]


class HandlerThreads:
    """A fixed-size pool of daemon threads running submitted calls in order.

    Unlike :class:`concurrent.futures.ThreadPoolExecutor` its threads are
    daemons: a sync handler that ignores ``ctx.cancelled`` and never returns
    cannot keep the process alive after the server has shut down (its task was
    requeued by then). Threads start on first use, so a server with only async
    handlers starts none.

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
