"""The broker conformance suite over RedisBroker via Sentinel (1 master, 1 replica, 3 sentinels)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskq.brokers.base import Broker
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing.conformance import CorruptDropLease
from taskq.testing.servers import RedisSentinel

pytestmark = pytest.mark.redis


class TestRedisSentinelConformance(BrokerConformance):
    """Every conformance test, with the current master flushed before each one."""

    @pytest.fixture
    async def broker(
        self, clock: FakeClock, redis_sentinel: RedisSentinel
    ) -> AsyncIterator[Broker]:
        redis_sentinel.flushall()
        broker = RedisBroker.from_url(redis_sentinel.url, clock=clock)
        try:
            yield broker
        finally:
            await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, redis_sentinel: RedisSentinel) -> CorruptDropLease:
        async def drop(queue: str, task_id: str) -> None:
            redis_sentinel.master.call("ZREM", QueueKeys.for_queue(queue).leases, task_id)

        return drop
