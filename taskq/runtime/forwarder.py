"""Forwarder: move due scheduled and retry tasks to pending."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from taskq.brokers.base import Timekeeper
from taskq.errors import BrokerError
from taskq.runtime._util import sleep_or_stop

__all__ = ["Forwarder"]

_BATCH = 1000


class Forwarder:
    """Every ``interval``, forward each queue's due tasks (the broker decides what is due).

    The broker compares due times with its own clock, in milliseconds, so a
    task due at T becomes pending within ``interval`` of T whatever the
    workers' clocks say.

    Args:
        broker: the timekeeping slice of the broker.
        queues: the queues to forward.
        interval: time between passes (50 ms by default).
        logger: where to log.
    """

    def __init__(
        self,
        broker: Timekeeper,
        *,
        queues: Sequence[str],
        interval: timedelta,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._log = logger

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set."""
        while not stop.is_set():
            await self.forward_once()
            if await sleep_or_stop(stop, self._interval):
                return

    async def forward_once(self) -> int:
        """Forward every due task of every queue now; return how many moved."""
        moved = 0
        for queue in self._queues:
            try:
                while True:
                    count = await self._broker.forward(queue, limit=_BATCH)
                    moved += count
                    if count < _BATCH:
                        break
            except BrokerError as exc:
                self._log.error("forwarding due tasks of %r failed: %s", queue, exc)
        return moved
