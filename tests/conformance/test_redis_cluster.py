"""The broker conformance suite over RedisBroker on Redis Cluster (3 masters, 3 replicas)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskq.brokers.base import Broker
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing.conformance import CorruptDropLease
from taskq.testing.servers import RedisCluster

pytestmark = pytest.mark.redis


class TestRedisClusterConformance(BrokerConformance):
    """Every conformance test, with the cluster flushed before each one."""

    @pytest.fixture
    async def broker(self, clock: FakeClock, redis_cluster: RedisCluster) -> AsyncIterator[Broker]:
        redis_cluster.flushall()
        broker = RedisBroker.from_url(redis_cluster.url, clock=clock)
        try:
            yield broker
        finally:
            await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, redis_cluster: RedisCluster) -> CorruptDropLease:
        async def drop(queue: str, task_id: str) -> None:
            key = QueueKeys.for_queue(queue).leases
            redis_cluster.master_of_slot(redis_cluster.key_slot(key)).call("ZREM", key, task_id)

        return drop
