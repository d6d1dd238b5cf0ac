"""LoopWatchdog: say so when something blocks the server's event loop.

Every ``async def`` handler runs on the server's event loop, beside the
heartbeat that extends the leases of every running task. A handler that
calls blocking code (``time.sleep``, a sync HTTP or database client, heavy
CPU work) stops all of them: no other task starts or ends, no lease is
extended, and once a lease runs out another worker runs the task again.

A daemon thread watches a timestamp the loop refreshes a few times per
``threshold``; when the loop has not refreshed it for ``threshold``, the
watchdog logs a warning with what the loop thread is running (its innermost
Python frames: the handler's own line), and once more, at info level, when
the loop runs again. It never touches the loop or the tasks itself.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

__all__ = ["LoopWatchdog"]

_FRAMES = 6  # innermost frames of the loop thread shown in a warning


class LoopWatchdog:
    """Warns when the event loop it watches makes no progress for ``threshold`` seconds.

    Args:
        threshold: seconds without progress that count as blocked.
        logger: where the warnings go.
        name: how the warnings name the loop's owner (the server id).
    """

    def __init__(self, threshold: float, logger: logging.Logger, name: str) -> None:
        self._threshold = threshold
        self._period = threshold / 4
        self._log = logger
        self._name = name
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tick_handle: asyncio.TimerHandle | None = None
        self.blocks = 0  # how many times the loop was found blocked

    def start(self) -> None:
        """Start watching the running loop (call from the loop's own thread)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._tick()
        self._thread = threading.Thread(target=self._watch, name="taskq-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (from the loop's thread). Idempotent."""
        self._stop.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    def _tick(self) -> None:
        self._last = time.monotonic()
        if not self._stop.is_set() and self._loop is not None:
            self._tick_handle = self._loop.call_later(self._period, self._tick)

    def _watch(self) -> None:
        blocked_since: float | None = None
        while not self._stop.wait(self._period):
            last = self._last
            lag = time.monotonic() - last
            if lag > self._threshold + self._period:
                if blocked_since is None:
                    blocked_since = last
                    self.blocks += 1
                    self._log.warning(
                        "taskq worker %s: the event loop has been blocked for %.1fs; leases "
                        "cannot be extended and no other task runs meanwhile. An async def "
                        "handler must not call blocking code (make it a def handler, or await "
                        "asyncio.to_thread(...)). The loop is running:\n%s",
                        self._name,
                        lag,
                        self._where(),
                    )
            elif blocked_since is not None:
                self._log.info(
                    "taskq worker %s: the event loop runs again after %.1fs",
                    self._name,
                    last - blocked_since,
                )
                blocked_since = None

    def _where(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (unknown)"
        stack = traceback.extract_stack(frame)[-_FRAMES:]
        return "".join(traceback.format_list(stack)).rstrip("\n")
