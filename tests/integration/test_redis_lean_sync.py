"""The blocking lean lane (``taskq.brokers.redis._lean_sync``) on real servers.

The sync Client's enqueues on a standalone or Sentinel broker go over raw
sockets taken over from the sync redis-py pool, packed and parsed by hiredis:
one socket per concurrently calling thread, never shared; a failed call
closes its socket and the next call makes a new one; error replies leave the
socket usable; failures become the same taskq errors as through redis-py.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import traceback
from collections.abc import Iterator

import pytest
import redis

import taskq
from taskq.brokers.base import EnqueueRequest
from taskq.brokers.redis import RedisBroker, _lean
from taskq.brokers.redis._lean_sync import SyncLane
from taskq.errors import BrokerAuthError, BrokerConnectionError, BrokerError, BrokerTimeoutError
from taskq.task import TaskState
from taskq.testing.servers import (
    ExternalRedis,
    RedisSentinel,
    RedisServer,
    RedisServerFactory,
    TLSFiles,
)
from tests.integration.test_redis_lean import ECHO, SLOW, _message

pytestmark = [
    pytest.mark.redis,
    pytest.mark.timeout(60),
    pytest.mark.skipif(not _lean.HAVE_HIREDIS, reason="the lean lane needs hiredis"),
]


def _enqueue(broker: RedisBroker, *ids: str, queue: str = "q") -> list[object]:
    results = broker.enqueue_blocking([EnqueueRequest(_message(i, queue)) for i in ids])
    assert results is not None
    return list(results)


def _lane(broker: RedisBroker) -> SyncLane:
    lane = broker._connector.sync_lane()
    assert isinstance(lane, SyncLane), f"expected the blocking lean lane, got {lane!r}"
    return lane


def _clients(server: RedisServer | ExternalRedis) -> list[str]:
    """The server's connections (CLIENT LIST lines), not counting the one asking."""
    listing = server.call("CLIENT", "LIST")
    assert isinstance(listing, bytes)
    return [line for line in listing.decode().strip().splitlines() if "cmd=client" not in line]


def _until(check: object, what: str, bound: float = 5.0) -> None:
    """Poll ``check()`` (socket counts: no event to wait on) for up to ``bound`` s."""
    assert callable(check)
    deadline = time.monotonic() + bound
    for _ in range(int(bound / 0.01) + 1):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"not within {bound} s: {what}")


def _close(broker: RedisBroker) -> None:
    lane = broker._connector.sync_lane()
    if lane is not None:
        lane.close()
    client = broker._connector.sync_client()
    if client is not None:
        client.close()


@pytest.fixture
def broker(redis_server: RedisServer | ExternalRedis) -> Iterator[RedisBroker]:
    redis_server.flushall()
    b = RedisBroker.from_url(redis_server.url)
    try:
        yield b
    finally:
        _close(b)


def test_blocking_enqueues_go_through_the_lane_not_through_redis_py(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("redis-py's execute_command was used")

    monkeypatch.setattr(redis.Redis, "execute_command", refuse)
    monkeypatch.setattr(redis.Redis, "pipeline", refuse)
    assert _enqueue(broker, "t1") == [TaskState.PENDING]
    assert _enqueue(broker, *(f"b{i}" for i in range(300))) == [TaskState.PENDING] * 300
    lane = _lane(broker)
    assert lane.idle == 1  # one caller at a time: one socket
    assert lane.call("EVAL", ECHO, 0, "x") == b"x"


def test_without_hiredis_the_blocking_path_keeps_redis_py(
    redis_server: RedisServer | ExternalRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server.flushall()
    monkeypatch.setattr(_lean, "HAVE_HIREDIS", False)
    broker = RedisBroker.from_url(redis_server.url)
    try:
        assert broker._connector.sync_lane() is None
        assert _enqueue(broker, "t1", "t2") == [TaskState.PENDING] * 2
        (again,) = _enqueue(broker, "t1")
        assert isinstance(again, taskq.TaskIDConflictError)
    finally:
        _close(broker)


def test_an_error_reply_leaves_the_socket_usable(
    broker: RedisBroker, redis_server: RedisServer | ExternalRedis
) -> None:
    _enqueue(broker, "t1")
    lane = _lane(broker)
    (conn,) = lane._idle
    redis_server.call("SET", "taskq:{broken}:states", "not a hash")
    with pytest.raises(BrokerError, match="WRONGTYPE"):
        _enqueue(broker, "t2", queue="broken")
    with pytest.raises(redis.exceptions.ResponseError):
        lane.call("NO-SUCH-COMMAND")
    assert _enqueue(broker, "t3") == [TaskState.PENDING]
    assert lane._idle == [conn] and not conn.closed


def test_eight_threads_each_get_their_own_replies_on_their_own_sockets(
    broker: RedisBroker,
) -> None:
    lane = _lane(broker)
    barrier = threading.Barrier(8)
    wrong: list[object] = []

    def work(n: int) -> None:
        barrier.wait(10)
        for i in range(200):
            expected = f"{n}-{i}".encode()
            try:
                got = lane.call("EVAL", ECHO, 0, expected)
            except BaseException as exc:  # pragma: no cover - reported below
                wrong.append(exc)
                return
            if got != expected:
                wrong.append((expected, got))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert wrong == []
    assert 1 <= lane.idle <= 8


def test_a_connection_killed_by_the_server_is_replaced(
    broker: RedisBroker, redis_server: RedisServer | ExternalRedis
) -> None:
    _enqueue(broker, "t1")
    lane = _lane(broker)
    (conn,) = lane._idle
    redis_server.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    # The idle socket is dead: the call fails as a connection error, or is
    # retried on a new socket when the client's Retry policy allows it.
    try:
        outcome: object = _enqueue(broker, "t2")
    except BrokerConnectionError:
        outcome = "connection error"
    assert outcome in ([TaskState.PENDING], "connection error")
    assert conn.closed
    assert _enqueue(broker, "t3") == [TaskState.PENDING]
    assert lane.idle == 1 and not lane._idle[0].closed


def test_a_killed_server_fails_fast_and_the_first_call_after_a_restart_succeeds(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = RedisBroker.from_url(server.url)
    try:
        assert _enqueue(broker, "before") == [TaskState.PENDING]
        server.kill()
        started = time.monotonic()
        for attempt in ("down-1", "down-2"):
            with pytest.raises(BrokerConnectionError):
                _enqueue(broker, attempt)
        assert time.monotonic() - started < 2.0
        server.start()
        assert _enqueue(broker, "after") == [TaskState.PENDING]
        _lane(broker)
    finally:
        _close(broker)


def test_a_call_outlasting_the_socket_timeout_fails_and_the_next_call_reconnects(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    broker = RedisBroker.from_url(f"{server.url}?socket_timeout=0.3")
    try:
        _enqueue(broker, "t1")
        lane = _lane(broker)
        (conn,) = lane._idle
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            lane.call("EVAL", SLOW, 0, 1_200_000, "late")
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 1.5
        assert conn.closed, "a socket with a reply still due is never reused"
        time.sleep(1.0)  # the slow script ends on the server
        assert lane.call("EVAL", ECHO, 0, "next") == b"next"
        assert isinstance(
            broker._error(redis.exceptions.TimeoutError("x"), "slow"), BrokerTimeoutError
        )
    finally:
        _close(broker)


def test_a_wrong_password_is_an_auth_error_that_never_shows_it(
    redis_server_factory: RedisServerFactory,
) -> None:
    right, wrong = f"canary-{secrets.token_hex(8)}", f"canary-{secrets.token_hex(8)}"
    server = redis_server_factory(password=right)
    broker = taskq.connect(server.url_for(None, wrong))
    assert isinstance(broker, RedisBroker)
    try:
        assert isinstance(broker._connector.sync_lane(), SyncLane)
        with pytest.raises(BrokerAuthError) as caught:
            _enqueue(broker, "t1")
        shown = "\n".join(
            [str(caught.value), repr(caught.value), *traceback.format_exception(caught.value)]
        )
    finally:
        _close(broker)
    assert wrong not in shown and right not in shown


def test_a_tls_server_is_served_through_the_lane(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files)
    broker = taskq.connect(server.url)
    assert isinstance(broker, RedisBroker)
    try:
        assert _enqueue(broker, *(f"t{i}" for i in range(250))) == [TaskState.PENDING] * 250
        lane = _lane(broker)
        assert [lane.call("EVAL", ECHO, 0, n) for n in range(20)] == [
            str(n).encode() for n in range(20)
        ]
        assert lane.idle == 1
    finally:
        _close(broker)


def test_a_forked_child_does_not_reuse_the_parents_socket(broker: RedisBroker) -> None:
    _enqueue(broker, "t1")
    lane = _lane(broker)
    (parent_conn,) = lane._idle
    _lean._forked()  # what os.fork() runs in the child
    assert _enqueue(broker, "t2") == [TaskState.PENDING]
    assert lane._idle != [parent_conn]
    assert not parent_conn.closed, "the parent's socket is left alone"
    parent_conn.close()


def test_close_closes_every_idle_socket_and_refuses_later_calls(
    broker: RedisBroker, redis_server: RedisServer | ExternalRedis
) -> None:
    _enqueue(broker, "t1")
    lane = _lane(broker)
    before = len(_clients(redis_server))
    lane.close()
    _until(lambda: len(_clients(redis_server)) == before - 1, "the server sees the socket closed")
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        lane.call("PING")


def test_a_sentinel_broker_uses_the_lane(redis_sentinel: RedisSentinel) -> None:
    broker = taskq.connect(redis_sentinel.url)
    assert isinstance(broker, RedisBroker)
    try:
        assert _enqueue(broker, "s1", queue="lean-sync-sentinel") == [TaskState.PENDING]
        assert _lane(broker)._demote_readonly
    finally:
        _close(broker)


def test_reconnecting_never_uses_up_max_connections(
    redis_server: RedisServer | ExternalRedis,
) -> None:
    redis_server.flushall()
    broker = RedisBroker.from_url(f"{redis_server.url}?max_connections=1")
    try:
        for n in range(4):
            assert _enqueue(broker, f"before-kill-{n}") == [TaskState.PENDING]
            redis_server.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with contextlib.suppress(BrokerConnectionError):
                _enqueue(broker, f"after-kill-{n}")  # may fail: its socket was killed
        assert _enqueue(broker, "last") == [TaskState.PENDING]
        assert _lane(broker)._open == 1
    finally:
        _close(broker)


def test_max_connections_bounds_the_sockets_of_concurrent_threads(broker: RedisBroker) -> None:
    lane = _lane(broker)
    lane._max = 2
    inside, release = threading.Barrier(3), threading.Event()

    def hold() -> None:
        conn = lane._take()
        inside.wait(10)
        release.wait(10)
        lane._give(conn)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait(10)
    try:
        with pytest.raises(redis.exceptions.MaxConnectionsError, match="max_connections=2 are"):
            lane.call("PING")
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert lane.call("PING") == b"PONG"
    assert lane._open == 2 and lane.idle == 2
