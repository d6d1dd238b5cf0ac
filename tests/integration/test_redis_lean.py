"""The lean lane (``taskq.brokers.redis._lean``) on real servers.

Script calls of a standalone or Sentinel broker go over the lane's own
pipelined connections when hiredis is installed: concurrent callers share one
connection and each gets its own reply, a cancelled caller does not shift
the replies of the others, blocking waits take connections of their own, and
failures become the same taskq errors as through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

import taskq
from taskq.brokers.base import EnqueueRequest
from taskq.brokers.redis import RedisBroker, _lean
from taskq.brokers.redis._lean import DriverLane, Lane
from taskq.errors import BrokerAuthError, BrokerConnectionError, BrokerTimeoutError
from taskq.task import TaskMessage
from taskq.testing.servers import (
    ExternalRedis,
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServerFactory,
    TLSFiles,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _lean.HAVE_HIREDIS, reason="the lean lane needs hiredis"),
]

LEASE = 30_000
ECHO = "return ARGV[1]"
# Busy for ARGV[1] microseconds of server time, then return ARGV[2].
SLOW = """
local t = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) >= tonumber(ARGV[1])
return ARGV[2]
"""


def _message(task_id: str, queue: str = "q") -> TaskMessage:
    return TaskMessage(id=task_id, type="lean:task", payload=task_id.encode(), queue=queue)


def _lane(broker: RedisBroker) -> Lane:
    lane = broker._connector.lane()
    assert isinstance(lane, Lane), f"expected the lean lane, got {lane!r}"
    return lane


def _lean_clients(server: RedisServer | ExternalRedis) -> int:
    """How many connections the server has, not counting the one asking."""
    listing = server.call("CLIENT", "LIST")
    assert isinstance(listing, bytes)
    return len(listing.decode().strip().splitlines()) - 1


async def _until(check: Callable[[], bool], what: str, bound: float = 5.0) -> None:
    """Poll ``check`` (state with no event to await: socket counts) for up to ``bound`` s."""
    deadline = time.monotonic() + bound
    for _ in range(int(bound / 0.01) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {bound} s: {what}")


@pytest.fixture
async def broker(redis_server: RedisServer | ExternalRedis) -> AsyncIterator[RedisBroker]:
    redis_server.flushall()
    b = RedisBroker.from_url(redis_server.url)
    try:
        yield b
    finally:
        await b.close()


async def test_script_calls_of_a_standalone_broker_go_through_the_lean_lane(
    broker: RedisBroker,
) -> None:
    await broker.enqueue(_message("t1"))
    lane = _lane(broker)
    sent = lane.sent
    await broker.enqueue(_message("t2"))
    (delivery,) = await broker.dequeue(["q"], count=1, lease=LEASE)
    await broker.done(delivery.ref)
    assert lane.sent >= sent + 3  # one EVALSHA each (plus an EVAL for a script not yet loaded)
    assert lane.connections == 1


async def test_two_hundred_concurrent_calls_each_get_their_own_reply(
    broker: RedisBroker,
) -> None:
    lane = _lane(broker)
    replies = await asyncio.gather(*(lane.call("EVAL", ECHO, 0, n) for n in range(200)))
    assert replies == [str(n).encode() for n in range(200)]
    for n in range(200):
        await broker.enqueue(_message(f"t{n}"))
    infos = await asyncio.gather(*(broker.get_task("q", f"t{n}") for n in range(200)))
    assert [info.id for info in infos] == [f"t{n}" for n in range(200)]
    assert lane.connections == 1


async def test_a_cancelled_caller_does_not_shift_the_replies_of_later_calls(
    broker: RedisBroker,
) -> None:
    lane = _lane(broker)
    slow = asyncio.ensure_future(lane.call("EVAL", SLOW, 0, 50_000, "slow"))
    calls = [asyncio.ensure_future(lane.call("EVAL", ECHO, 0, n)) for n in range(20)]
    await asyncio.sleep(0)  # every command is written
    slow.cancel()
    for call in calls[::2]:
        call.cancel()
    kept = await asyncio.gather(*calls[1::2])
    assert kept == [str(n).encode() for n in range(1, 20, 2)]
    assert await lane.call("EVAL", ECHO, 0, "after") == b"after"
    assert slow.cancelled()
    assert lane.connections == 1


async def test_a_blocked_dequeue_wakes_on_enqueue_while_other_calls_go_on(
    broker: RedisBroker,
) -> None:
    await broker.enqueue(_message("warm-up", queue="other"))
    waiting = asyncio.ensure_future(broker.dequeue(["q"], count=1, lease=LEASE, wait=10_000))
    lane = _lane(broker)
    await _until(lambda: lane.connections == 2, "the wait holds a connection of its own")
    started = time.monotonic()
    for n in range(50):
        await broker.enqueue(_message(f"o{n}", queue="other"))
    assert time.monotonic() - started < 2.0
    assert not waiting.done()
    await broker.enqueue(_message("wanted"))
    (delivery,) = await asyncio.wait_for(waiting, 5)
    assert delivery.message.id == "wanted"
    assert lane.connections == 2, "the blocking connection is kept for the next wait"


async def test_a_flushed_script_cache_is_reloaded_on_every_lane_path(
    broker: RedisBroker, redis_server: RedisServer | ExternalRedis
) -> None:
    await broker.enqueue(_message("one"))
    redis_server.call("SCRIPT", "FLUSH")
    states = await broker.enqueue_many(
        [EnqueueRequest(_message("a", "q1")), EnqueueRequest(_message("b", "q2"))]
    )
    assert all(not isinstance(s, Exception) for s in states)
    redis_server.call("SCRIPT", "FLUSH")
    waiting = asyncio.ensure_future(broker.dequeue(["empty"], count=1, lease=LEASE, wait=5_000))
    await asyncio.sleep(0.1)
    redis_server.call("SCRIPT", "FLUSH")
    await broker.enqueue(_message("late", "empty"))
    redis_server.call("SCRIPT", "FLUSH")
    (delivery,) = await asyncio.wait_for(waiting, 5)
    assert delivery.message.id == "late"
    assert (await broker.get_task("q", "one")).id == "one"
    _lane(broker)


async def test_a_large_batch_is_streamed_chunk_by_chunk_in_order(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # enqueue_many sends each chunk's script call as soon as it is built
    # (Redis runs one while the next is packed): FIFO order and each item's
    # result must survive the split.
    await broker.enqueue(_message("t700"))  # already there: a conflict mid-batch
    (first,) = await broker.dequeue(["q"], count=1, lease=LEASE)
    await broker.done(first.ref)
    lane = _lane(broker)
    started: list[int] = []
    real_start = lane.start

    def start(*args: object) -> asyncio.Future[object] | None:
        started.append(len(args))
        return real_start(*args)

    monkeypatch.setattr(lane, "start", start)
    await broker.enqueue(_message("t700"))
    messages = [_message(f"t{n}") for n in range(1050)]
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
    assert len(started) == 6  # 1,050 tasks in calls of at most 200
    assert isinstance(results[700], taskq.TaskIDConflictError)
    assert results[:700] + results[701:] == [taskq.TaskState.PENDING] * 1049
    got = []
    for _ in range(20):
        got += await broker.dequeue(["q"], count=500, lease=LEASE)
        if len(got) >= 1050:
            break
    expected = ["t700"] + [m.id for m in messages if m.id != "t700"]
    assert [d.message.id for d in got] == expected


async def test_a_batch_after_a_flushed_script_cache_keeps_its_order(
    broker: RedisBroker, redis_server: RedisServer | ExternalRedis
) -> None:
    await broker.enqueue(_message("warm-up", "other"))
    redis_server.call("SCRIPT", "FLUSH")
    messages = [_message(f"t{n}") for n in range(450)]
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
    assert results == [taskq.TaskState.PENDING] * 450
    got = await broker.dequeue(["q"], count=450, lease=LEASE)
    assert [d.message.id for d in got] == [m.id for m in messages]


async def test_a_connection_lost_while_streaming_a_batch_is_a_connection_error(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await broker.enqueue(_message("warm-up", "other"))
    lane = _lane(broker)
    real_start = lane.start
    calls = 0

    def start(*args: object) -> asyncio.Future[object] | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            assert lane._shared is not None
            lane._shared.close()  # the socket goes away after the first chunk was sent
        return real_start(*args)

    monkeypatch.setattr(lane, "start", start)
    with pytest.raises(BrokerConnectionError):
        await broker.enqueue_many([EnqueueRequest(_message(f"t{n}")) for n in range(450)])
    monkeypatch.setattr(lane, "start", real_start)
    results = await broker.enqueue_many([EnqueueRequest(_message(f"u{n}")) for n in range(450)])
    assert results == [taskq.TaskState.PENDING] * 450


async def test_close_closes_the_lane_sockets_and_ends_a_blocked_dequeue(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = taskq.connect(server.url)
    assert isinstance(broker, RedisBroker)
    await broker.enqueue(_message("t1"))
    await broker.dequeue(["q"], count=1, lease=LEASE)
    waiting = asyncio.ensure_future(broker.dequeue(["q"], count=1, lease=LEASE, wait=30_000))
    lane = _lane(broker)
    await _until(lambda: lane.connections == 2, "the wait holds a connection of its own")
    assert _lean_clients(server) >= 2
    started = time.monotonic()
    await broker.close()
    assert await asyncio.wait_for(waiting, 5) == []
    assert time.monotonic() - started < 2.0
    assert lane.connections == 0
    await _until(lambda: _lean_clients(server) == 0, "the server sees every socket closed")
    await broker.enqueue(_message("t2"))  # usable again, on a new lane
    assert _lane(broker) is not lane
    await broker.close()


async def test_a_killed_server_fails_fast_and_the_first_call_after_a_restart_succeeds(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = taskq.connect(server.url)
    try:
        await broker.enqueue(_message("before"))
        server.kill()
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError):
            await broker.enqueue(_message("down-1"))
        with pytest.raises(BrokerConnectionError):
            await broker.enqueue(_message("down-2"))
        assert time.monotonic() - started < 2.0
        await asyncio.to_thread(server.start)
        await broker.enqueue(_message("after"))
        assert (await broker.get_task("q", "after")).id == "after"
        _lane(broker)
    finally:
        await broker.close()


async def test_a_wrong_password_is_an_auth_error_that_never_shows_it(
    redis_server_factory: RedisServerFactory,
) -> None:
    right, wrong = f"canary-{secrets.token_hex(8)}", f"canary-{secrets.token_hex(8)}"
    server = redis_server_factory(password=right)
    broker = taskq.connect(server.url_for(None, wrong))
    assert isinstance(broker, RedisBroker)
    try:
        assert isinstance(broker._connector.lane(), Lane)
        with pytest.raises(BrokerAuthError) as caught:
            await broker.enqueue(_message("t1"))
        shown = "\n".join(
            [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
        )
    finally:
        await broker.close()
    assert wrong not in shown and right not in shown


async def test_a_tls_server_is_served_through_the_lean_lane(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files)
    broker = taskq.connect(server.url)
    assert isinstance(broker, RedisBroker)
    try:
        await broker.enqueue(_message("t1"))
        waiting = asyncio.ensure_future(broker.dequeue(["w"], count=1, lease=LEASE, wait=5_000))
        lane = _lane(broker)
        await _until(lambda: lane.connections == 2, "the wait holds a connection of its own")
        replies = await asyncio.gather(*(lane.call("EVAL", ECHO, 0, n) for n in range(50)))
        assert replies == [str(n).encode() for n in range(50)]
        await broker.enqueue(_message("t2", "w"))
        (delivery,) = await asyncio.wait_for(waiting, 5)
        assert delivery.message.id == "t2"
        assert lane.connections == 2
    finally:
        await broker.close()


async def test_a_call_outlasting_the_socket_timeout_fails_and_the_next_call_reconnects(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = taskq.connect(f"{server.url}?socket_timeout=0.3")
    assert isinstance(broker, RedisBroker)
    try:
        await broker.enqueue(_message("t1"))
        lane = _lane(broker)
        started = time.monotonic()
        with pytest.raises(BrokerTimeoutError):
            await _timed_out(broker, lane)
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.5
        await asyncio.sleep(1.0)  # the slow script ends on the server
        assert await lane.call("EVAL", ECHO, 0, "next") == b"next"
        # A blocking wait shorter than the timeout is not cut off by it.
        assert await broker.dequeue(["empty"], count=1, lease=LEASE, wait=1_000) == []
    finally:
        await broker.close()


async def _timed_out(broker: RedisBroker, lane: Lane) -> None:
    try:
        await lane.call("EVAL", SLOW, 0, 1_200_000, "late")
    except Exception as exc:
        raise broker._error(exc, "slow") from exc


async def test_a_forked_child_does_not_reuse_the_parents_socket(broker: RedisBroker) -> None:
    await broker.enqueue(_message("t1"))
    lane = _lane(broker)
    parent_conn = lane._shared
    assert parent_conn is not None
    _lean._forked()  # what os.fork() runs in the child
    try:
        await broker.enqueue(_message("t2"))
        assert lane._shared is not parent_conn
        assert parent_conn.closed
        assert not parent_conn._transport.is_closing(), "the parent's socket is left alone"
    finally:
        parent_conn._writer.close()


async def test_max_connections_two_holds_the_shared_connection_and_one_wait_and_refuses_a_second(
    redis_server: RedisServer | ExternalRedis,
) -> None:
    redis_server.flushall()
    broker = RedisBroker.from_url(f"{redis_server.url}?max_connections=2")
    try:
        await broker.enqueue(_message("t1", "other"))
        lane = _lane(broker)
        waiting = asyncio.ensure_future(broker.dequeue(["q"], count=1, lease=LEASE, wait=10_000))
        await _until(lambda: lane.connections == 2, "the wait holds a connection of its own")
        with pytest.raises(
            BrokerConnectionError, match=r"max_connections=2 are open .*a worker needs at least 2"
        ):
            await broker.dequeue(["r"], count=1, lease=LEASE, wait=5_000)
        assert lane._open == 2, "a refused connect takes no slot"
        await broker.enqueue(_message("wanted"))  # the shared connection goes on
        (delivery,) = await asyncio.wait_for(waiting, 5)
        assert delivery.message.id == "wanted"
        assert await broker.dequeue(["r"], count=1, lease=LEASE, wait=50) == []
        assert lane._open == 2 and lane.connections == 2, "the next wait reuses the idle one"
    finally:
        await broker.close()
    assert lane._open == 0


async def test_reconnecting_after_killed_connections_never_uses_up_max_connections_one(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = RedisBroker.from_url(f"{server.url}?max_connections=1")
    try:
        for n in range(4):
            await broker.enqueue(_message(f"before-kill-{n}"))
            server.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with contextlib.suppress(BrokerConnectionError):
                await broker.enqueue(_message(f"after-kill-{n}"))  # may fail: its socket was killed
        await broker.enqueue(_message("last"))
        lane = _lane(broker)
        assert lane._open == 1 and lane.connections == 1
        assert (await broker.get_task("q", "last")).id == "last"
    finally:
        await broker.close()


async def test_killed_wait_connections_are_replaced_within_max_connections_two(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = RedisBroker.from_url(f"{server.url}?max_connections=2")
    lane = _lane(broker)
    try:
        for n in range(4):
            await broker.enqueue(_message(f"t{n}", "other"))
            assert await broker.dequeue(["q"], count=1, lease=LEASE, wait=20) == []
            server.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await _until(lambda: lane._open == 0, "both killed connections are given back")
        assert await broker.dequeue(["q"], count=1, lease=LEASE, wait=20) == []
        await broker.enqueue(_message("last"))
        assert lane._open == 2
    finally:
        await broker.close()


async def test_failed_connects_to_a_stopped_server_keep_no_slot(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = RedisBroker.from_url(f"{server.url}?max_connections=1")
    try:
        await broker.enqueue(_message("before"))
        lane = _lane(broker)
        server.kill()
        for n in range(3):
            with pytest.raises(BrokerConnectionError):
                await broker.enqueue(_message(f"down-{n}"))
            assert lane._open == 0
        await asyncio.to_thread(server.start)
        await broker.enqueue(_message("after"))
        assert lane._open == 1
    finally:
        await broker.close()


async def test_a_connect_cancelled_midway_gives_its_slot_back(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await broker.enqueue(_message("t1"))
    lane = _lane(broker)
    assert lane._open == 1
    entered, never = asyncio.Event(), asyncio.Event()

    async def hang() -> tuple[asyncio.StreamWriter, asyncio.Transport, str]:
        entered.set()
        await never.wait()
        raise AssertionError("not reached")

    monkeypatch.setattr(lane, "_connect_with_redis_py", hang)
    waiting = asyncio.ensure_future(broker.dequeue(["empty"], count=1, lease=LEASE, wait=5_000))
    await asyncio.wait_for(entered.wait(), 5)
    assert lane._open == 2, "a connection being made counts"
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert lane._open == 1


async def test_a_forked_child_counts_its_connections_anew(
    redis_server: RedisServer | ExternalRedis,
) -> None:
    redis_server.flushall()
    broker = RedisBroker.from_url(f"{redis_server.url}?max_connections=2")
    lane = _lane(broker)
    try:
        await broker.enqueue(_message("t1"))
        assert await broker.dequeue(["empty"], count=1, lease=LEASE, wait=20) == []
        parent_conns = [lane._shared, *lane._blocking]
        assert lane._open == 2
        _lean._forked()  # what os.fork() runs in the child
        await broker.enqueue(_message("t2"))
        assert await broker.dequeue(["empty"], count=1, lease=LEASE, wait=20) == []
        assert lane._open == 2, "the parent's two connections are not the child's"
        for conn in parent_conns:
            assert conn is not None
            conn._writer.close()  # the parent's sockets, closed here only to end the test
        assert lane._open == 2
    finally:
        await broker.close()
    assert lane._open == 0


async def test_a_sentinel_broker_uses_the_lean_lane(redis_sentinel: RedisSentinel) -> None:
    redis_sentinel.flushall()
    broker = RedisBroker.from_url(redis_sentinel.url)
    try:
        await broker.enqueue(_message("t1"))
        (delivery,) = await broker.dequeue(["q"], count=1, lease=LEASE)
        await broker.done(delivery.ref)
        assert _lane(broker).connections == 1
    finally:
        await broker.close()


async def test_a_cluster_broker_keeps_redis_py(redis_cluster: RedisCluster) -> None:
    broker = RedisBroker.from_url(redis_cluster.url)
    try:
        await broker.ping()
        assert isinstance(broker._connector.lane(), DriverLane)
    finally:
        await broker.close()


class _WrappedWriter:
    """A stream writer that is not an asyncio.StreamWriter (as a future redis-py might have)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._inner = writer

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _OpaqueConnection(redis.asyncio.Connection):
    async def connect(self) -> None:
        await super().connect()
        if isinstance(self._writer, asyncio.StreamWriter):
            self._writer = _WrappedWriter(self._writer)  # type: ignore[assignment]


async def test_a_connection_that_cannot_be_taken_over_falls_back_to_redis_py(
    redis_server: RedisServer | ExternalRedis,
) -> None:
    redis_server.flushall()
    pool = redis.asyncio.ConnectionPool.from_url(
        redis_server.url, connection_class=_OpaqueConnection
    )
    client = redis.asyncio.Redis.from_pool(pool)
    broker = RedisBroker(client)
    try:
        await broker.enqueue(_message("t1"))
        waiting = asyncio.ensure_future(broker.dequeue(["w"], count=1, lease=LEASE, wait=5_000))
        await broker.enqueue(_message("t2", "w"))
        (delivery,) = await asyncio.wait_for(waiting, 5)
        assert delivery.message.id == "t2"
        assert isinstance(broker._connector.lane(), DriverLane)
    finally:
        await broker.close()
        await client.aclose()
