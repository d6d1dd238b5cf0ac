"""The brokers' state machine (tests/unit/test_broker_model.py) on a real redis-server.

fakeredis runs the Redis broker's Lua scripts with its own interpreter and
command implementations; this runs the same random sequences with the
Redis broker on a real server, against the in-memory and SQLite brokers.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from taskq.testing.servers import ExternalRedis, RedisServer
from tests.unit.test_broker_model import BrokersAgree

pytestmark = pytest.mark.redis


def test_the_brokers_agree_with_redis_on_a_real_server(
    redis_server: RedisServer | ExternalRedis,
) -> None:
    class OnRealRedis(BrokersAgree):
        def redis_client(self) -> Any:
            client = redis.asyncio.Redis.from_url(redis_server.url)
            self.loop.run_until_complete(client.flushall())
            return client

    run_state_machine_as_test(
        OnRealRedis,
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
