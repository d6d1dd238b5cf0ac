"""RedisBroker.check_config without a Redis server: reading maxmemory-policy and the findings.

The policy comes from CONFIG GET, else INFO memory, else nowhere (then the
check says so instead of failing); every policy but noeviction is a warning.
"""

from __future__ import annotations

from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
import redis.exceptions

from taskq.brokers.base import ConfigCheck
from taskq.brokers.memory import InMemoryBroker
from taskq.brokers.redis import RedisBroker
from taskq.brokers.redis.checks import maxmemory_findings, read_maxmemory_policy
from taskq.errors import BrokerConnectionError

DENIED = redis.exceptions.NoPermissionError("NOPERM User taskq has no permissions")
UNKNOWN = redis.exceptions.ResponseError("unknown command 'CONFIG'")


class _Node:
    """Answers CONFIG GET and INFO with fixed replies (or raises them)."""

    def __init__(self, config: object, info: object) -> None:
        self.replies = {"CONFIG GET": config, "INFO": info}
        self.sent: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(args[0])
        reply = self.replies[args[0]]
        if isinstance(reply, BaseException):
            raise reply
        return reply


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    ("config", "info", "policy", "sent"),
    [
        ({b"maxmemory-policy": b"allkeys-lru"}, DENIED, "allkeys-lru", ["CONFIG GET"]),
        ({"maxmemory-policy": "noeviction"}, DENIED, "noeviction", ["CONFIG GET"]),
        ([b"maxmemory-policy", b"volatile-ttl"], DENIED, "volatile-ttl", ["CONFIG GET"]),
        (DENIED, {"maxmemory_policy": "volatile-lru"}, "volatile-lru", ["CONFIG GET", "INFO"]),
        (UNKNOWN, {"maxmemory_policy": "noeviction"}, "noeviction", ["CONFIG GET", "INFO"]),
        ({}, {"maxmemory_policy": "allkeys-lfu"}, "allkeys-lfu", ["CONFIG GET", "INFO"]),
        (DENIED, DENIED, None, ["CONFIG GET", "INFO"]),
        (UNKNOWN, UNKNOWN, None, ["CONFIG GET", "INFO"]),
        (DENIED, {"used_memory": 1}, None, ["CONFIG GET", "INFO"]),
    ],
    ids=[
        "config-bytes",
        "config-str",
        "config-resp-list",
        "config-denied-info",
        "config-disabled-info",
        "config-empty-info",
        "both-denied",
        "both-disabled",
        "info-without-policy",
    ],
)
async def test_the_policy_comes_from_config_get_else_from_info_memory(
    config: object, info: object, policy: str | None, sent: list[str]
) -> None:
    node = _Node(config, info)
    assert await read_maxmemory_policy(node) == policy
    assert node.sent == sent


async def test_a_connection_error_while_reading_the_policy_is_not_swallowed() -> None:
    node = _Node(redis.exceptions.ConnectionError("reset"), {})
    with pytest.raises(redis.exceptions.ConnectionError):
        await read_maxmemory_policy(node)


# --------------------------------------------------------------------------- findings


def test_noeviction_everywhere_gives_no_findings() -> None:
    assert maxmemory_findings([("a:1", "noeviction"), ("b:2", "noeviction")]) == []


def test_each_evicting_policy_gives_one_warning_naming_every_server_that_has_it() -> None:
    findings = maxmemory_findings(
        [
            ("a:1", "allkeys-lru"),
            ("b:2", "noeviction"),
            ("c:3", "allkeys-lru"),
            ("d:4", "volatile-lru"),
        ]
    )
    assert [f.unsafe for f in findings] == [True, True]
    lru, volatile = (f.message for f in findings)
    assert "a:1, c:3" in lru and "maxmemory-policy allkeys-lru" in lru and "b:2" not in lru
    assert "d:4" in volatile and "maxmemory-policy volatile-lru" in volatile
    for message in (lru, volatile):
        assert "silently lost" in message
        assert "maxmemory-policy noeviction" in message
        assert "docs/redis.md" in message


def test_an_unreadable_policy_is_a_note_not_a_warning() -> None:
    (finding,) = maxmemory_findings([("a:1", None), ("b:2", "noeviction")])
    assert not finding.unsafe
    assert "a:1" in finding.message and "b:2" not in finding.message


# --------------------------------------------------------------------------- brokers


async def test_on_fakeredis_which_has_neither_command_the_check_only_says_so() -> None:
    broker = RedisBroker(fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer()))
    try:
        assert isinstance(broker, ConfigCheck)
        (finding,) = await broker.check_config()
    finally:
        await broker.close()
    assert not finding.unsafe
    assert "could not read the maxmemory-policy" in finding.message


async def test_a_broker_that_cannot_be_reached_raises_a_broker_error() -> None:
    broker = RedisBroker.from_url("redis://127.0.0.1:1/0?socket_connect_timeout=1")
    try:
        with pytest.raises(BrokerConnectionError):
            await broker.check_config()
    finally:
        await broker.close()


def test_the_memory_broker_has_nothing_to_check() -> None:
    assert not isinstance(InMemoryBroker(), ConfigCheck)
