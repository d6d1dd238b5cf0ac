"""Health check: ping the broker periodically and report the outcome to a callback."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Protocol

from taskq.runtime._util import sleep_or_stop
from taskq.runtime.config import HealthCheck

__all__ = ["HealthChecker"]


class Pingable(Protocol):
    """The slice of the broker the health check uses."""

    async def ping(self) -> None:
        """Raise if the broker is unreachable."""
        ...


class HealthChecker:
    """Every ``interval``, ping the broker and call ``callback(error or None)``.

    Args:
        broker: anything with ``ping``.
        callback: the user's ``health_check`` function.
        interval: time between pings.
        logger: where to log (a callback that raises is logged, not fatal).
    """

    def __init__(
        self,
        broker: Pingable,
        *,
        callback: HealthCheck,
        interval: timedelta,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._callback = callback
        self._interval = interval.total_seconds()
        self._log = logger

    async def run(self, stop: asyncio.Event) -> None:
        """Check until ``stop`` is set."""
        while not stop.is_set():
            await self.check_once()
            if await sleep_or_stop(stop, self._interval):
                return

    async def check_once(self) -> BaseException | None:
        """Ping once, tell the callback, and return the error (or None)."""
        error: BaseException | None = None
        try:
            await self._broker.ping()
        except Exception as exc:
            error = exc
        try:
            self._callback(error)
        except Exception:
            self._log.exception("health_check callback raised")
        return error
