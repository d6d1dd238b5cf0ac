"""The master lookup of Sentinel URLs: the first sentinel naming a master in good
state wins, and when none does the error says why for each sentinel."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions
import redis.sentinel

from taskq.brokers.redis.client import _AsyncSentinel, _SyncSentinel


class _Pool:
    def __init__(self, port: int) -> None:
        self.connection_kwargs = {"host": "10.0.0.1", "port": port}


class _Node:
    """A sentinel's client: answers SENTINEL MASTERS with ``answer`` or raises it."""

    def __init__(self, port: int, answer: Any) -> None:
        self.connection_pool = _Pool(port)
        self.answer = answer

    def _reply(self) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def sentinel_masters(self) -> Any:
        return self._reply()


class _AsyncNode(_Node):
    async def sentinel_masters(self) -> Any:  # type: ignore[override]
        return self._reply()


def _master(ip: str, *, down: bool = False) -> dict[str, Any]:
    return {
        "mymaster": {
            "ip": ip,
            "port": 6379,
            "is_master": True,
            "is_sdown": down,
            "is_odown": False,
            "num-other-sentinels": 2,
        }
    }


def _answers() -> list[Any]:
    return [
        redis.exceptions.ConnectionError("Error 1 connecting: [SSL: CERTIFICATE_VERIFY_FAILED]"),
        _master("10.0.0.7", down=True),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        _master("10.0.0.9"),
    ]


async def _discover(kind: str, answers: list[Any]) -> tuple[Any, tuple[str, int]]:
    if kind == "async":
        manager: Any = _AsyncSentinel([])
        manager.sentinels = [_AsyncNode(26379 + i, a) for i, a in enumerate(answers)]
        return manager, await manager.discover_master("mymaster")
    manager = _SyncSentinel([])
    manager.sentinels = [_Node(26379 + i, a) for i, a in enumerate(answers)]
    return manager, manager.discover_master("mymaster")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_the_first_sentinel_naming_a_master_in_good_state_wins_and_moves_first(
    kind: str,
) -> None:
    manager, address = await _discover(kind, _answers())
    assert address == ("10.0.0.9", 6379)
    ports = [node.connection_pool.connection_kwargs["port"] for node in manager.sentinels]
    assert ports == [26382, 26380, 26381, 26379]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_without_a_master_the_error_says_why_for_each_sentinel(kind: str) -> None:
    with pytest.raises(redis.sentinel.MasterNotFoundError) as caught:
        await _discover(kind, _answers()[:3])
    assert str(caught.value) == (
        "no sentinel named a master for 'mymaster': "
        "10.0.0.1:26379: Error 1 connecting: [SSL: CERTIFICATE_VERIFY_FAILED]; "
        "10.0.0.1:26380: no master 'mymaster' in good state; "
        "10.0.0.1:26381: Timeout reading from socket"
    )
    # A ConnectionError: the broker reports it as BrokerConnectionError.
    assert isinstance(caught.value, redis.exceptions.ConnectionError)
