"""Start-up checks of the Redis server's settings (``RedisBroker.check_config``).

taskq keeps every task only in Redis. Under any ``maxmemory-policy`` other
than ``noeviction``, a server that reaches ``maxmemory`` deletes keys to make
room, and a deleted message, lease or queue is a task lost without an error.
With ``noeviction`` it refuses writes instead (``BrokerOutOfMemoryError``).

The policy is read with ``CONFIG GET``; where that is not allowed (an ACL
user without ``+config``, managed Redis that renames or disables ``CONFIG``)
from ``INFO memory``. When neither is allowed the check says so and the worker
starts anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import redis.exceptions

from taskq.brokers.base import ConfigFinding

__all__ = [
    "SAFE_POLICY",
    "NodeClient",
    "Persistence",
    "maxmemory_findings",
    "min_replicas_findings",
    "persistence_findings",
    "read_maxmemory_policy",
    "read_min_replicas",
    "read_persistence",
]

SAFE_POLICY = "noeviction"
"""The only ``maxmemory-policy`` under which Redis never deletes a task on its own."""


class NodeClient(Protocol):
    """What the check needs of one server: a ``redis.asyncio`` client or cluster node."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Run one command and return its parsed reply."""
        ...


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _field(reply: object, name: str) -> str | None:
    """``name``'s value in a CONFIG GET or INFO reply (a dict, or a flat list of pairs)."""
    if isinstance(reply, Mapping):
        items = list(reply.items())
    elif isinstance(reply, (list, tuple)):
        items = list(zip(reply[::2], reply[1::2], strict=False))
    else:
        return None
    for key, value in items:
        if _text(key) == name:
            return _text(value)
    return None


async def _config_get(node: NodeClient, name: str) -> str | None:
    """``CONFIG GET name``'s value; None when refused (NOPERM, unknown or disabled) or unset."""
    try:
        return _field(await node.execute_command("CONFIG GET", name), name)
    except redis.exceptions.ResponseError:
        return None


async def _info_get(node: NodeClient, section: str, name: str) -> str | None:
    """Field ``name`` of ``INFO section``; None when refused or absent."""
    try:
        return _field(await node.execute_command("INFO", section), name)
    except redis.exceptions.ResponseError:
        return None


async def read_maxmemory_policy(node: NodeClient) -> str | None:
    """The server's ``maxmemory-policy``, or None when it may not be read.

    Tries ``CONFIG GET maxmemory-policy``, then ``INFO memory``; a refusal
    (``NOPERM``, unknown or disabled command) of both gives None.

    Raises:
        redis.exceptions.ConnectionError, TimeoutError: the server cannot be reached.
    """
    policy = await _config_get(node, "maxmemory-policy")
    return policy or await _info_get(node, "memory", "maxmemory_policy") or None


def maxmemory_findings(policies: Sequence[tuple[str, str | None]]) -> list[ConfigFinding]:
    """The findings for the policies read from each server, as ``(address, policy or None)``.

    One warning per unsafe policy (naming every server that has it), and one
    note naming the servers whose policy could not be read.
    """
    unsafe: dict[str, list[str]] = {}
    unknown: list[str] = []
    for address, policy in policies:
        if policy is None:
            unknown.append(address)
        elif policy != SAFE_POLICY:
            unsafe.setdefault(policy, []).append(address)
    findings = [
        ConfigFinding(
            f"Redis {', '.join(addresses)} runs with maxmemory-policy {policy}: when it "
            "reaches maxmemory it evicts keys and tasks can be silently lost. Set "
            f"maxmemory-policy {SAFE_POLICY} (see docs/redis.md, Production settings)."
        )
        for policy, addresses in unsafe.items()
    ]
    if unknown:
        findings.append(
            ConfigFinding(
                f"could not read the maxmemory-policy of Redis {', '.join(unknown)} "
                "(CONFIG GET and INFO are not permitted); it must be "
                f"{SAFE_POLICY} (see docs/redis.md, Production settings).",
                unsafe=False,
            )
        )
    return findings


class Persistence(NamedTuple):
    """How a server keeps its data on disk (``aof`` None: not readable)."""

    aof: bool | None
    fsync: str = ""  # appendfsync, when readable
    save: str | None = None  # the RDB snapshot schedule ("" = none), None when not readable


async def read_persistence(node: NodeClient) -> Persistence:
    """The server's ``appendonly``, ``appendfsync`` and ``save`` settings.

    From ``CONFIG GET``; where that is refused, whether AOF is on from ``INFO
    persistence`` (the snapshot schedule is then unknown).

    Raises:
        redis.exceptions.ConnectionError, TimeoutError: the server cannot be reached.
    """
    appendonly = await _config_get(node, "appendonly")
    if appendonly is not None:
        return Persistence(
            appendonly == "yes",
            await _config_get(node, "appendfsync") or "",
            await _config_get(node, "save"),
        )
    enabled = await _info_get(node, "persistence", "aof_enabled")
    return Persistence(None if enabled is None else enabled == "1")


_FSYNC = {
    "always": "no acknowledged write is lost on a crash",
    "everysec": "a crash loses at most about the last second of writes",
    "no": "a crash loses what the OS had not flushed yet (up to about 30 s)",
}


def _describe(p: Persistence) -> tuple[str, bool]:
    """A sentence on what a restart or crash loses, and whether it deserves a warning."""
    if p.aof:
        snapshots = " and RDB snapshots" if p.save else ""
        loses = _FSYNC.get(p.fsync, f"appendfsync {p.fsync}" if p.fsync else "")
        return f"persists with AOF (appendfsync {p.fsync or '?'}){snapshots}: {loses}", False
    if p.aof is None:
        return (
            "has persistence settings that could not be read (CONFIG GET and INFO are "
            "not permitted); "
            "tasks survive a restart only with appendonly yes",
            False,
        )
    if p.save:
        return (
            f'persists with RDB snapshots only (save "{p.save}"): a crash or restart loses '
            "the tasks enqueued since the last snapshot; set appendonly yes to keep them",
            True,
        )
    if p.save is None:
        return (
            "runs without AOF (appendonly no; snapshot schedule unknown): a crash or "
            "restart can lose tasks; set appendonly yes to keep them",
            True,
        )
    return (
        'keeps nothing on disk (appendonly no, save ""): a restart loses every task '
        "(fine for tests); for tasks you keep, set appendonly yes",
        True,
    )


def persistence_findings(found: Sequence[tuple[str, Persistence]]) -> list[ConfigFinding]:
    """One report per distinct persistence mode, naming the servers that have it.

    Never ``unsafe`` (a strict start is not refused: running without
    persistence can be a deliberate choice), but a WARNING where a restart or
    crash loses more than the last second of tasks.
    """
    modes: dict[tuple[str, bool], list[str]] = {}
    for address, persistence in found:
        modes.setdefault(_describe(persistence), []).append(address)
    return [
        ConfigFinding(
            f"Redis {', '.join(addresses)} {text} (see docs/redis.md, Production settings).",
            unsafe=False,
            warn=warn,
        )
        for (text, warn), addresses in modes.items()
    ]


async def read_min_replicas(node: NodeClient) -> int | None:
    """The server's ``min-replicas-to-write`` (None when ``CONFIG GET`` is refused)."""
    value = await _config_get(node, "min-replicas-to-write")
    return int(value) if value is not None and value.isdigit() else None


def min_replicas_findings(address: str, min_replicas: int | None) -> list[ConfigFinding]:
    """R10's recommendation for a Sentinel-managed master that accepts writes alone."""
    if min_replicas != 0:
        return []
    return [
        ConfigFinding(
            f"Redis {address} (Sentinel-managed) runs with min-replicas-to-write 0: while "
            "it is cut off from its replicas it still acknowledges enqueues, which a "
            "failover then loses. Set min-replicas-to-write 1 and min-replicas-max-lag 10 "
            "(see docs/redis.md, Production settings).",
            unsafe=False,
        )
    ]
