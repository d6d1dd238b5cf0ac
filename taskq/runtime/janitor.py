"""Janitor: delete completed tasks whose retention has ended."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from taskq.brokers.base import Timekeeper
from taskq.errors import BrokerError
from taskq.runtime._util import sleep_or_stop

__all__ = ["Janitor"]


class Janitor:
    """Every ``interval``, delete each queue's expired completed tasks in batches.

    Args:
        broker: the timekeeping slice of the broker.
        queues: the queues to clean.
        interval: time between passes.
        batch_size: how many tasks one broker call deletes.
        logger: where to log.
    """

    def __init__(
        self,
        broker: Timekeeper,
        *,
        queues: Sequence[str],
        interval: timedelta,
        batch_size: int,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._batch = batch_size
        self._log = logger

    async def run(self, stop: asyncio.Event) -> None:
        """Clean until ``stop`` is set."""
        while not stop.is_set():
            await self.clean_once(stop)
            if await sleep_or_stop(stop, self._interval):
                return

    async def clean_once(self, stop: asyncio.Event | None = None) -> int:
        """Delete every expired completed task now; return how many were deleted."""
        deleted = 0
        for queue in self._queues:
            try:
                while stop is None or not stop.is_set():
                    count = await self._broker.delete_expired_completed(queue, limit=self._batch)
                    deleted += count
                    if count < self._batch:
                        break
            except BrokerError as exc:
                self._log.error("deleting expired completed tasks of %r failed: %s", queue, exc)
        if deleted:
            self._log.debug("janitor deleted %d completed task(s)", deleted)
        return deleted
