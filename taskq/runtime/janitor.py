"""Janitor: delete completed tasks whose retention has ended, and trim the archive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

from taskq._time import td_to_ms
from taskq.brokers.base import ArchiveTrimmer, Timekeeper
from taskq.errors import BrokerError
from taskq.runtime._util import sleep_or_stop

__all__ = ["Janitor"]


class Janitor:
    """Every ``interval``, delete each queue's expired completed tasks and trim its archive.

    Both run in batches of ``batch_size`` tasks per broker call, repeated
    until a batch comes back short (or the server stops). The archive is
    trimmed only when the broker implements
    :class:`~taskq.brokers.base.ArchiveTrimmer`; otherwise that is logged once
    when the janitor starts.

    Args:
        broker: the timekeeping slice of the broker.
        queues: the queues to clean.
        interval: time between passes.
        batch_size: how many tasks one broker call deletes.
        logger: where to log.
        archive_max_size: keep at most this many archived tasks per queue
            (None: no size bound).
        archive_max_age: delete archived tasks this long after they were
            archived (None: no age bound).
    """

    def __init__(
        self,
        broker: Timekeeper,
        *,
        queues: Sequence[str],
        interval: timedelta,
        batch_size: int,
        logger: logging.Logger,
        archive_max_size: int | None = None,
        archive_max_age: timedelta | None = None,
    ) -> None:
        self._broker = broker
        self._trimmer = broker if isinstance(broker, ArchiveTrimmer) else None
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._batch = batch_size
        self._log = logger
        self._max_size = archive_max_size
        self._max_age = None if archive_max_age is None else td_to_ms(archive_max_age)

    @property
    def _trims(self) -> bool:
        return self._max_size is not None or self._max_age is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Clean until ``stop`` is set."""
        if self._trims and self._trimmer is None:
            self._log.info(
                "the broker %s cannot trim archived tasks: archive_max_size and "
                "archive_max_age are not applied, archived tasks are kept until deleted",
                type(self._broker).__name__,
            )
        while not stop.is_set():
            await self.clean_once(stop)
            if await sleep_or_stop(stop, self._interval):
                return

    async def clean_once(self, stop: asyncio.Event | None = None) -> int:
        """Delete every expired completed task and trim every archive now; return how many went."""
        deleted = trimmed = 0
        for queue in self._queues:
            try:
                while stop is None or not stop.is_set():
                    count = await self._broker.delete_expired_completed(queue, limit=self._batch)
                    deleted += count
                    if count < self._batch:
                        break
            except BrokerError as exc:
                self._log.error("deleting expired completed tasks of %r failed: %s", queue, exc)
            trimmed += await self._trim(queue, stop)
        if deleted:
            self._log.debug("janitor deleted %d completed task(s)", deleted)
        if trimmed:
            self._log.debug("janitor trimmed %d archived task(s)", trimmed)
        return deleted + trimmed

    async def _trim(self, queue: str, stop: asyncio.Event | None) -> int:
        if self._trimmer is None or not self._trims:
            return 0
        trimmed = 0
        try:
            while stop is None or not stop.is_set():
                count = await self._trimmer.trim_archived(
                    queue, max_size=self._max_size, max_age=self._max_age, limit=self._batch
                )
                trimmed += count
                if count < self._batch:
                    break
        except BrokerError as exc:
            self._log.error("trimming the archive of %r failed: %s", queue, exc)
        return trimmed
