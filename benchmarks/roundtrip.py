"""Where a single enqueue's time goes: round trips through each Redis client layer.

Usage::

    python -m benchmarks.roundtrip [--n 20000]

Starts its own ``redis-server`` (as ``benchmarks.run`` does) and times, one
call at a time from one process:

* PING over a bare ``asyncio.Protocol`` with a hiredis reader (the floor for
  an asyncio client), and through ``redis.asyncio`` and sync ``redis``;
* RPUSH of a 100-byte value through sync ``redis`` (what Huey's enqueue costs);
* taskq's real enqueue script (EVALSHA, same keys and arguments as
  ``RedisBroker.enqueue``) through ``redis.asyncio``, through the bare
  protocol, and through the broker's own script call (``RedisBroker._run``,
  which takes the lean lane of ``taskq.brokers.redis._lean`` when hiredis is
  installed);
* the whole ``AsyncClient.enqueue``, and the whole sync ``Client.enqueue``
  (called from a plain thread, as a Flask or Django view would), with PING and
  the enqueue script on the sync Client's own blocking lane
  (``taskq.brokers.redis._lean_sync``) beside it.

The difference between the first two EVALSHA rows is what ``redis.asyncio``
adds per call, between the bare and the broker rows what the lean lane adds;
the difference between the broker row and ``AsyncClient.enqueue`` is taskq's
own Python work (validation, encoding, the returned TaskInfo).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import hiredis
import redis
import redis.asyncio

import taskq
from benchmarks.run import RedisServer


def _pack(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class BareRedis(asyncio.Protocol):
    """The least an asyncio Redis client can do: write RESP, parse replies with hiredis."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: list[asyncio.Future[Any]] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._waiters.pop(0).set_result(reply)

    async def call(self, *args: Any) -> Any:
        """Send one command and wait for its reply."""
        assert self._transport is not None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._transport.write(_pack(*args))
        return await future


async def _rate(n: int, call: Callable[[int], Awaitable[Any]]) -> float:
    for i in range(min(200, n)):
        await call(-i - 1)
    start = time.perf_counter()
    for i in range(n):
        await call(i)
    return n / (time.perf_counter() - start)


def _sync_rate(n: int, call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - start)


async def _enqueue_call(client: taskq.AsyncClient) -> tuple[str, Sequence[Any], Sequence[Any]]:
    """Capture the EVALSHA that ``client.enqueue`` sends: (sha, keys, args)."""
    broker: Any = client.broker
    captured: list[tuple[str, Sequence[Any], Sequence[Any]]] = []
    original = broker._run

    async def spy(name: str, keys: Sequence[Any], *args: Any) -> Any:
        captured.append((name, keys, args))
        return await original(name, keys, *args)

    broker._run = spy
    try:
        await client.enqueue(taskq.Task("noop", b"0.0"))
    finally:
        broker._run = original
    name, keys, args = captured[0]
    script = broker._scripts[name]
    return (script.sha if broker._shebang else script.plain_sha), keys, args


async def measure(url: str, port: int, n: int) -> dict[str, float]:
    """Every row of the table, in calls per second."""
    out: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    _, bare = await loop.create_connection(BareRedis, "127.0.0.1", port)
    out["PING, bare asyncio protocol + hiredis"] = await _rate(n, lambda i: bare.call("PING"))
    aio = redis.asyncio.Redis.from_url(url)
    out["PING, redis.asyncio"] = await _rate(n, lambda i: aio.ping())
    sync = redis.Redis.from_url(url)
    out["PING, sync redis"] = _sync_rate(n, sync.ping)
    value = b"x" * 100
    out["RPUSH 100 bytes, sync redis (Huey's enqueue)"] = _sync_rate(
        n, lambda: sync.rpush("roundtrip:list", value)
    )
    client = taskq.AsyncClient(url)
    sha, keys, args = await _enqueue_call(client)
    head, tail = list(args[:2]), list(args[3:])  # ARGV: now, layout, then id, message, ...

    def with_id(i: int) -> list[Any]:
        return [*head, f"rt-{i}", *tail]

    out["taskq enqueue script, redis.asyncio EVALSHA"] = await _rate(
        n, lambda i: aio.evalsha(sha, len(keys), *keys, *with_id(i))
    )
    out["taskq enqueue script, bare protocol EVALSHA"] = await _rate(
        n, lambda i: bare.call("EVALSHA", sha, len(keys), *keys, *with_id(n + 1000 + i))
    )
    broker: Any = client.broker
    lane = type(broker._connector.lane()).__name__
    out[f"taskq enqueue script, RedisBroker._run ({lane})"] = await _rate(
        n, lambda i: broker._run("enqueue", keys, *with_id(2 * n + 2000 + i))
    )
    out["taskq AsyncClient.enqueue (whole path)"] = await _rate(
        n, lambda i: client.enqueue(taskq.Task("noop", b"0.0"))
    )
    await client.close()
    await aio.aclose()
    sync.close()
    sync_client = taskq.Client(url)
    task = taskq.Task("noop", b"0.0")
    sync_client.enqueue(task)
    sync_lane = sync_client.broker._connector.sync_lane()  # type: ignore[attr-defined]
    if sync_lane is not None:
        ids = itertools.count(3 * n + 3000)
        out["PING, taskq SyncLane (raw socket + hiredis)"] = await asyncio.to_thread(
            _warm_sync_rate, n, lambda: sync_lane.call("PING")
        )
        out["taskq enqueue script, SyncLane EVALSHA"] = await asyncio.to_thread(
            _warm_sync_rate,
            n,
            lambda: sync_lane.call("EVALSHA", sha, len(keys), *keys, *with_id(next(ids))),
        )
    sync_rate = await asyncio.to_thread(_warm_sync_rate, n, lambda: sync_client.enqueue(task))
    out["taskq Client.enqueue (sync, whole path)"] = sync_rate
    await asyncio.to_thread(sync_client.close)
    return out


def _warm_sync_rate(n: int, call: Callable[[], Any]) -> float:
    for _ in range(min(200, n)):
        call()
    return _sync_rate(n, call)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements on a throw-away redis-server and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roundtrip", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="calls per row")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="taskq-roundtrip-"))
    try:
        server = RedisServer(workdir)
        try:
            results = asyncio.run(measure(server.url, server.port, args.n))
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"| one call at a time, {args.n:,} calls, redis {server.version} | calls/s | us/call |")
    print("|---|---|---|")
    for label, rate in results.items():
        print(f"| {label} | {rate:,.0f} | {1e6 / rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
