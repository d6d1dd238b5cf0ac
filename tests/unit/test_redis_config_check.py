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
from taskq.brokers.redis.checks import (
    Persistence,
    maxmemory_findings,
    min_replicas_findings,
    persistence_findings,
    read_maxmemory_policy,
    read_min_replicas,
    read_persistence,
)
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
        finding, persistence = await broker.check_config()
    finally:
        await broker.close()
    assert not finding.unsafe
    assert "could not read the maxmemory-policy" in finding.message
    assert not persistence.unsafe and not persistence.is_warning
    assert "persistence settings that could not be read" in persistence.message


async def test_a_broker_that_cannot_be_reached_raises_a_broker_error() -> None:
    broker = RedisBroker.from_url("redis://127.0.0.1:1/0?socket_connect_timeout=1")
    try:
        with pytest.raises(BrokerConnectionError):
            await broker.check_config()
    finally:
        await broker.close()


def test_the_memory_broker_has_nothing_to_check() -> None:
    assert not isinstance(InMemoryBroker(), ConfigCheck)


# --------------------------------------------------------------------------- persistence


class _ConfigNode:
    """CONFIG GET answers per setting name; INFO persistence answers ``info``."""

    def __init__(self, config: dict[str, str] | BaseException, info: object) -> None:
        self.config, self.info = config, info

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args[0] == "CONFIG GET":
            if isinstance(self.config, BaseException):
                raise self.config
            return {args[1]: self.config[args[1]]} if args[1] in self.config else {}
        if isinstance(self.info, BaseException):
            raise self.info
        return self.info


@pytest.mark.parametrize(
    ("config", "info", "expected"),
    [
        (
            {"appendonly": "yes", "appendfsync": "everysec", "save": ""},
            DENIED,
            Persistence(True, "everysec", ""),
        ),
        (
            {"appendonly": "no", "appendfsync": "everysec", "save": "3600 1 300 100"},
            DENIED,
            Persistence(False, "everysec", "3600 1 300 100"),
        ),
        (DENIED, {"aof_enabled": 1}, Persistence(True)),
        (UNKNOWN, {"aof_enabled": "0"}, Persistence(False)),
        (DENIED, DENIED, Persistence(None)),
    ],
    ids=["aof", "rdb-only", "info-aof", "info-no-aof", "both-denied"],
)
async def test_persistence_comes_from_config_get_else_from_info(
    config: dict[str, str] | BaseException, info: object, expected: Persistence
) -> None:
    assert await read_persistence(_ConfigNode(config, info)) == expected


@pytest.mark.parametrize(
    ("mode", "warns", "words"),
    [
        (Persistence(True, "always", ""), False, "no acknowledged write is lost"),
        (Persistence(True, "everysec", "3600 1"), False, "AOF (appendfsync everysec) and RDB"),
        (Persistence(False, "everysec", "3600 1"), True, "RDB snapshots only"),
        (Persistence(False, "everysec", ""), True, "keeps nothing on disk"),
        (Persistence(False), True, "snapshot schedule unknown"),
        (Persistence(None), False, "persistence settings that could not be read"),
    ],
    ids=["aof-always", "aof-and-rdb", "rdb-only", "nothing", "no-aof-unknown-rdb", "unknown"],
)
def test_each_persistence_mode_is_reported_never_unsafe(
    mode: Persistence, warns: bool, words: str
) -> None:
    (finding,) = persistence_findings([("a:1", mode)])
    assert not finding.unsafe  # a strict start is never refused for it
    assert finding.is_warning is warns
    assert words in finding.message and "a:1" in finding.message
    if warns:
        assert "appendonly yes" in finding.message


def test_servers_with_the_same_persistence_share_one_report() -> None:
    aof, nothing = Persistence(True, "everysec", ""), Persistence(False, "everysec", "")
    findings = persistence_findings([("a:1", aof), ("b:2", nothing), ("c:3", aof)])
    assert [f.message.split(" ", 2)[1] for f in findings] == ["a:1,", "b:2"]
    assert "a:1, c:3 persists with AOF" in findings[0].message


# --------------------------------------------------------------------------- sentinel


@pytest.mark.parametrize(
    ("config", "expected"),
    [({"min-replicas-to-write": "0"}, 0), ({"min-replicas-to-write": "2"}, 2), (DENIED, None)],
)
async def test_min_replicas_to_write_is_read_with_config_get(
    config: dict[str, str] | BaseException, expected: int | None
) -> None:
    assert await read_min_replicas(_ConfigNode(config, DENIED)) == expected


def test_a_sentinel_master_that_writes_alone_gets_a_recommendation_only_then() -> None:
    (finding,) = min_replicas_findings("redis+sentinel://s:26379/mymaster/0", 0)
    assert not finding.unsafe and not finding.is_warning
    assert "min-replicas-to-write 1" in finding.message and "mymaster" in finding.message
    assert min_replicas_findings("x", 1) == []
    assert min_replicas_findings("x", None) == []  # unreadable: nothing to say
