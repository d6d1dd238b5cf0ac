"""Recoverer: take over tasks whose worker died (lease expired) and settle them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from taskq._time import td_to_ms
from taskq.brokers.base import Consumer, Delivery, Timekeeper
from taskq.errors import BrokerError, LeaseLostError
from taskq.runtime._util import sleep_or_stop

__all__ = ["LEASE_EXPIRED", "Recoverer"]

LEASE_EXPIRED = "lease expired: worker presumed dead"
_BATCH = 100


class RecovererBroker(Consumer, Timekeeper, Protocol):
    """The slice of the broker the recoverer uses."""


class Recoverer:
    """At start and every ``interval``, recover each queue's expired leases.

    A reclaimed task (also an ``active`` task that has no lease at all) goes
    to ``retry``, due at once, with the error "lease expired: worker presumed
    dead". The attempt counts as a failure, so a task that kills its worker
    every time (a poison pill) ends ``archived`` once its retries are spent;
    with none left it is archived right away. Any server recovers any task of
    the queues it serves.

    Args:
        broker: the consumer and timekeeping slices of the broker.
        queues: the queues to watch.
        interval: time between passes.
        lease: the lease taken while settling a reclaimed task.
        release_unique_on_archive: passed to ``archive``.
        logger: where to log.
    """

    def __init__(
        self,
        broker: RecovererBroker,
        *,
        queues: Sequence[str],
        interval: timedelta,
        lease: timedelta,
        release_unique_on_archive: bool,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._queues = list(queues)
        self._interval = interval.total_seconds()
        self._lease_ms = td_to_ms(lease)
        self._release = release_unique_on_archive
        self._log = logger

    async def run(self, stop: asyncio.Event) -> None:
        """Recover now, then every ``interval`` until ``stop`` is set."""
        while not stop.is_set():
            await self.recover_once()
            if await sleep_or_stop(stop, self._interval):
                return

    async def recover_once(self) -> int:
        """Recover every expired lease of every queue now; return how many tasks were settled."""
        recovered = 0
        for queue in self._queues:
            try:
                while True:
                    deliveries = await self._broker.reclaim_expired(
                        queue, lease=self._lease_ms, limit=_BATCH
                    )
                    for delivery in deliveries:
                        recovered += await self._settle(delivery)
                    if len(deliveries) < _BATCH:
                        break
            except BrokerError as exc:
                self._log.error("recovering expired leases of %r failed: %s", queue, exc)
        return recovered

    async def _settle(self, delivery: Delivery) -> int:
        msg = delivery.message
        ref = delivery.ref
        try:
            if msg.retried >= msg.max_retry:
                self._log.warning(
                    "task %s in %r: %s; no retries left, archived", msg.id, msg.queue, LEASE_EXPIRED
                )
                await self._broker.archive(ref, error=LEASE_EXPIRED, release_unique=self._release)
            else:
                self._log.warning(
                    "task %s in %r: %s; retrying it (%d/%d)",
                    msg.id,
                    msg.queue,
                    LEASE_EXPIRED,
                    msg.retried + 1,
                    msg.max_retry,
                )
                await self._broker.retry(ref, delay=0, error=LEASE_EXPIRED)
        except LeaseLostError:
            return 0  # another server recovered it first
        return 1
