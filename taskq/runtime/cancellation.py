"""Cancellation: stop a running task when its cancellation is requested anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Protocol

from taskq.brokers.base import Canceller
from taskq.errors import BrokerError
from taskq.runtime._util import sleep_or_stop

__all__ = ["CancelTarget", "Cancellation"]

_RESUBSCRIBE_MAX = 5.0


class CancelTarget(Protocol):
    """What runs tasks and can cancel them: the processor."""

    def running_by_queue(self) -> dict[str, list[str]]:
        """Ids of the running tasks, per queue."""
        ...

    def cancel(self, task_id: str) -> bool:
        """Cancel the running attempt of ``task_id``; False if it does not run here."""
        ...


class Cancellation:
    """Listens for cancel requests and cancels the matching running tasks.

    Two paths, so that a request reaches its task within about a second: the
    broker's notifications (``subscribe_cancellations``, resubscribing after
    a failure), and every ``interval`` a check of the running tasks' persisted
    cancel marks (``cancel_requested``), which catches a notification missed
    while disconnected. A cancelled task is archived with the reason
    "canceled"; a task cancelled before it started never reaches a worker
    (the broker archives it).

    Args:
        broker: the cancellation slice of the broker.
        target: the processor.
        interval: time between checks of the persisted marks.
        logger: where to log.
    """

    def __init__(
        self,
        broker: Canceller,
        *,
        target: CancelTarget,
        interval: timedelta,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._target = target
        self._interval = interval.total_seconds()
        self._log = logger

    async def run(self, stop: asyncio.Event) -> None:
        """Listen and check until ``stop`` is set."""
        listener = asyncio.create_task(self._listen(stop))
        try:
            while not stop.is_set():
                await self.check_once()
                if await sleep_or_stop(stop, self._interval):
                    break
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def check_once(self) -> int:
        """Cancel every running task whose cancellation is marked; return how many."""
        cancelled = 0
        for queue, ids in self._target.running_by_queue().items():
            try:
                marked = await self._broker.cancel_requested(queue, ids)
            except BrokerError as exc:
                self._log.warning("checking cancel requests in %r failed: %s", queue, exc)
                continue
            for task_id in marked:
                cancelled += self._target.cancel(task_id)
        return cancelled

    async def _listen(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            try:
                subscription = await self._broker.subscribe_cancellations()
            except BrokerError as exc:
                backoff = min(max(backoff * 2, 0.2), _RESUBSCRIBE_MAX)
                self._log.warning("subscribing to cancellations failed: %s", exc)
                await sleep_or_stop(stop, backoff)
                continue
            backoff = 0.0
            try:
                async for task_id in subscription:
                    self._target.cancel(task_id)
            except BrokerError as exc:
                self._log.warning("cancellation subscription dropped: %s", exc)
            finally:
                with contextlib.suppress(BrokerError):
                    await subscription.aclose()
            await sleep_or_stop(stop, 0.2)
