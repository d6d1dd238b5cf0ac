"""The conformance suite on InMemoryBroker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskq.brokers.memory import InMemoryBroker
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing.conformance import CorruptDropLease


class TestInMemoryBroker(BrokerConformance):
    @pytest.fixture
    async def broker(self, clock: FakeClock) -> AsyncIterator[InMemoryBroker]:
        broker = InMemoryBroker(clock=clock)
        yield broker
        await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, broker: InMemoryBroker) -> CorruptDropLease:
        async def drop(queue: str, task_id: str) -> None:
            broker._queues[queue].tasks[task_id].lease_expires = None

        return drop
