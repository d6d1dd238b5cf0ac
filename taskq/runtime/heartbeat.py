"""Heartbeat: keep this server's leases alive and publish its state for the inspector."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol

from taskq._time import td_to_ms
from taskq.brokers.base import Consumer, Fleet, LeaseRef, ServerInfo
from taskq.errors import BrokerError
from taskq.runtime._util import sleep_or_stop

__all__ = ["Heartbeat", "LeaseHolder"]


class HeartbeatBroker(Consumer, Fleet, Protocol):
    """The slice of the broker the heartbeat uses."""


class LeaseHolder(Protocol):
    """What holds leases: the processor."""

    def leased(self) -> list[LeaseRef]:
        """The leases to extend."""
        ...

    def lease_lost(self, ref: LeaseRef) -> None:
        """Told when a lease could not be extended."""
        ...


class Heartbeat:
    """Every ``interval``: extend every held lease, then publish the server state.

    A lease the broker refuses to extend (stale token, or already expired) is
    reported to the holder, which cancels that attempt and writes nothing more
    for it. The published state lives ``3 * interval`` so a dead server
    disappears on its own; a clean stop removes it at once.

    Args:
        broker: the consumer and fleet slices of the broker.
        holder: the processor (gives the leases, is told about lost ones).
        server_state: builds the current :class:`ServerInfo`.
        interval: time between beats (``lease / 3`` by default in the server).
        lease: the lease length to extend to.
        logger: where to log.
    """

    def __init__(
        self,
        broker: HeartbeatBroker,
        *,
        holder: LeaseHolder,
        server_state: Callable[[], ServerInfo],
        interval: timedelta,
        lease: timedelta,
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._holder = holder
        self._server_state = server_state
        self._interval = interval.total_seconds()
        self._lease_ms = td_to_ms(lease)
        self._ttl_ms = max(td_to_ms(interval * 3), 1000)
        self._log = logger
        self._server_id: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set, then remove the published state."""
        try:
            while True:
                await self.beat()
                if await sleep_or_stop(stop, self._interval):
                    break
        finally:
            await self._clear()

    async def beat(self) -> None:
        """Extend the leases once and publish the state once."""
        await self.extend()
        await self.publish()

    async def extend(self) -> None:
        """Extend every held lease; report the ones that were lost."""
        refs = self._holder.leased()
        if not refs:
            return
        try:
            held: Sequence[bool] = await self._broker.extend_leases(refs, lease=self._lease_ms)
        except BrokerError as exc:
            self._log.error("extending %d lease(s) failed: %s", len(refs), exc)
            return
        for ref, ok in zip(refs, held, strict=False):
            if not ok:
                self._holder.lease_lost(ref)

    async def publish(self) -> None:
        """Publish the server state (with its running tasks) for the inspector."""
        info = self._server_state()
        self._server_id = info.id
        try:
            await self._broker.write_server_state(info, ttl=self._ttl_ms)
        except BrokerError as exc:
            self._log.warning("publishing the server state failed: %s", exc)

    async def _clear(self) -> None:
        if self._server_id is None:
            return
        try:
            await self._broker.clear_server_state(self._server_id)
        except BrokerError as exc:
            self._log.warning("clearing the server state failed: %s", exc)
