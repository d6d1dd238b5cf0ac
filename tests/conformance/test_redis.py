"""The broker conformance suite over RedisBroker: on fakeredis and on a real standalone Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import fakeredis.aioredis
import pytest
import redis.asyncio

from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing.conformance import CorruptDropLease
from taskq.testing.servers import ExternalRedis, RedisServer


def _dropper(client: redis.asyncio.Redis) -> CorruptDropLease:
    async def drop(queue: str, task_id: str) -> None:
        await client.zrem(QueueKeys.for_queue(queue).leases, task_id)

    return drop


class TestRedisBrokerOnFakeRedis(BrokerConformance):
    """Every conformance test on fakeredis (Lua through lupa): fast, no server."""

    @pytest.fixture
    def fake(self) -> fakeredis.aioredis.FakeRedis:
        return fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())

    @pytest.fixture
    async def broker(
        self, clock: FakeClock, fake: fakeredis.aioredis.FakeRedis
    ) -> AsyncIterator[RedisBroker]:
        broker = RedisBroker(fake, clock=clock)
        yield broker
        await broker.close()
        await fake.aclose()

    @pytest.fixture
    def corrupt_drop_lease(self, fake: fakeredis.aioredis.FakeRedis) -> CorruptDropLease:
        return _dropper(fake)


@pytest.mark.redis
class TestRedisBrokerOnStandaloneRedis(BrokerConformance):
    """Every conformance test on a real redis-server, flushed before each test."""

    @pytest.fixture
    async def admin(
        self, redis_server: RedisServer | ExternalRedis
    ) -> AsyncIterator[redis.asyncio.Redis]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        await client.flushall()
        yield client
        await client.aclose()

    @pytest.fixture
    async def broker(
        self,
        clock: FakeClock,
        redis_server: RedisServer | ExternalRedis,
        admin: redis.asyncio.Redis,
    ) -> AsyncIterator[RedisBroker]:
        broker = RedisBroker.from_url(redis_server.url, clock=clock)
        yield broker
        await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, admin: redis.asyncio.Redis) -> CorruptDropLease:
        return _dropper(admin)
