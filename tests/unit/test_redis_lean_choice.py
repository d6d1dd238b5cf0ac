"""Which redis clients the lean lane serves (``taskq.brokers.redis._lean``); no server needed."""

from __future__ import annotations

import fakeredis
import fakeredis.aioredis
import pytest
import redis.asyncio
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from taskq.brokers.redis import RedisBroker, _lean
from taskq.brokers.redis._lean import DriverLane, Lane, RetryPolicy
from taskq.brokers.redis._lean_sync import SyncLane

pytestmark = pytest.mark.skipif(not _lean.HAVE_HIREDIS, reason="the lean lane needs hiredis")


async def test_a_plain_standalone_client_gets_the_lean_lane() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0")
    assert isinstance(Lane.for_client(client), Lane)
    unix = redis.asyncio.Redis.from_url("unix:///nowhere.sock?db=1")
    assert isinstance(Lane.for_client(unix), Lane)
    await client.aclose()
    await unix.aclose()


@pytest.mark.parametrize(
    "make",
    [
        lambda: fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer()),
        lambda: redis.asyncio.RedisCluster(host="127.0.0.1", port=1),
        lambda: redis.asyncio.Redis(host="127.0.0.1", port=1, protocol=3),
    ],
    ids=["fakeredis", "cluster", "resp3"],
)
async def test_other_clients_keep_redis_py(make: object) -> None:
    assert callable(make)
    client = make()
    assert Lane.for_client(client) is None
    await client.aclose()


async def test_without_hiredis_every_client_keeps_redis_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_lean, "HAVE_HIREDIS", False)
    broker = RedisBroker.from_url("redis://127.0.0.1:1/0")
    assert isinstance(broker._connector.lane(), DriverLane)
    await broker.close()


async def test_a_fakeredis_broker_runs_its_scripts_through_redis_py() -> None:
    broker = RedisBroker(fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer()))
    await broker.ping()
    assert isinstance(broker._connector.lane(), DriverLane)
    await broker.close()


async def test_a_failed_connect_never_keeps_a_slot_of_max_connections() -> None:
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0?max_connections=1")
    lane = Lane.for_client(client)
    assert lane is not None and lane._max == 1
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError) as caught:
            await lane.call("PING")
        assert not isinstance(caught.value, redis.exceptions.MaxConnectionsError)
        assert lane._open == 0
    await lane.aclose()
    await client.aclose()


# -- the blocking lane of the sync Client (taskq.brokers.redis._lean_sync)


class _MyRedis(redis.Redis):
    """A user's subclass: its methods may be overridden, so the lane leaves it alone."""


def test_a_plain_sync_client_gets_the_blocking_lane() -> None:
    for url in ("redis://127.0.0.1:1/0", "unix:///nowhere.sock?db=1"):
        client = redis.Redis.from_url(url)
        assert isinstance(SyncLane.for_client(client), SyncLane)
        client.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: fakeredis.FakeRedis(server=fakeredis.FakeServer()),
        lambda: redis.Redis(host="127.0.0.1", port=1, protocol=3),
        lambda: _MyRedis(host="127.0.0.1", port=1),
    ],
    ids=["fakeredis", "resp3", "subclass"],
)
def test_other_sync_clients_keep_redis_py(make: object) -> None:
    assert callable(make)
    client = make()
    assert SyncLane.for_client(client) is None
    client.close()


def test_without_hiredis_the_sync_client_keeps_redis_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lean, "HAVE_HIREDIS", False)
    connector = RedisBroker.from_url("redis://127.0.0.1:1/0")._connector
    assert connector.sync_client() is not None
    assert connector.sync_lane() is None


def test_a_broker_on_a_user_client_has_no_blocking_lane() -> None:
    broker = RedisBroker(fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer()))
    assert broker._connector.sync_lane() is None


# -- the retry policy both lanes apply (redis-py's Retry object, read per failed call)


def test_the_retry_policy_follows_redis_py_retry_counts_error_types_and_backoff() -> None:
    lost = redis.exceptions.ConnectionError("lost")
    twice = RetryPolicy(Retry(ConstantBackoff(0.25), 2))
    assert [twice.next_delay(lost) for _ in range(3)] == [0.25, 0.25, None]
    assert RetryPolicy(Retry(NoBackoff(), 3)).next_delay(ValueError("no")) is None
    forever = RetryPolicy(Retry(NoBackoff(), -1))
    assert [forever.next_delay(lost) for _ in range(50)] == [0.0] * 50
    assert RetryPolicy(None).next_delay(lost) is None  # no policy: no retry
