"""The blocking lean lane: script calls from any thread on sockets of our own.

Why: a sync redis-py call costs about 40 us of Python on top of the network
round trip (pure-Python command packing, a pool get/release, the Retry
wrapper, observability hooks): measured on one machine, PING through
``execute_command`` 70 us, on a raw socket with hiredis 31 us. The sync
:class:`~taskq.Client` pays one EVALSHA per enqueue, so that overhead is a
third of its cost. A :class:`SyncLane` packs with ``hiredis.pack_command``,
writes with ``sendall`` and parses with a ``hiredis.Reader``.

As with the asyncio :class:`~taskq.brokers.redis._lean.Lane`, connection
set-up is redis-py's: each connection is a connection of the sync client's
pool class, made with the pool's settings and ``connect()``-ed by redis-py
(TCP, unix socket or TLS, AUTH, SELECT, Sentinel master discovery), and only
then its socket is taken over. The lane counts its own sockets against the
pool's ``max_connections`` (freed when a socket closes), so a client built
with ``?max_connections=N`` holds at most N lane sockets at once and
reconnecting never uses up the limit.

Invariants:

* A connection serves one caller at a time: a caller takes an idle one (or
  makes one), runs its commands, and gives it back. Threads never share a
  socket, so replies cannot be crossed; at most one connection per
  concurrently calling thread is kept.
* A call that fails in any way (lost connection, timeout, protocol error,
  ``READONLY`` from a Sentinel-managed master that was demoted, an exception
  raised into the thread) closes its connection: the stream may hold a
  reply nobody will read. The next call makes a new one. The connection's
  redis-py ``Retry`` policy is applied to failed calls as redis-py would.
* ``socket_timeout`` is the socket's own timeout, as redis-py set it.
* After ``fork()`` a child never touches the parent's sockets: it forgets
  them and makes its own.
* Messages name the server address only, never credentials.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.connection
import redis.exceptions

from taskq.brokers.redis import _lean

if _lean.HAVE_HIREDIS:
    import hiredis

__all__ = ["SyncLane"]

T = TypeVar("T")

_FAILURES = _lean._FAILURES
_IDLE_CAP = 64  # idle sockets kept; more concurrent callers get theirs closed after use


class _SyncConnection:
    """One taken-over socket: writes packed commands and reads their replies."""

    __slots__ = (
        "_address",
        "_buffer",
        "_demote_readonly",
        "_on_close",
        "_reader",
        "_sock",
        "closed",
    )

    def __init__(
        self, sock: Any, address: str, demote_readonly: bool, on_close: Callable[[], None]
    ) -> None:
        self._sock = sock
        self._on_close = on_close
        self._address = address
        self._demote_readonly = demote_readonly
        self._reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=_lean._parse_error
        )
        self._buffer = bytearray(65536)
        self.closed = False

    def exchange(self, data: bytes, size: int) -> list[Any]:
        """Write ``size`` packed commands; their replies in order, error replies in place.

        Raises:
            redis.exceptions.ConnectionError, TimeoutError: the connection
                failed; it is closed.
        """
        try:
            self._sock.sendall(data)
            replies: list[Any] = []
            reader, sock, buffer = self._reader, self._sock, self._buffer
            while True:
                while (reply := reader.gets()) is not False:
                    if self._demote_readonly and isinstance(reply, redis.exceptions.ReadOnlyError):
                        # A demoted master: as redis-py's Sentinel connection does.
                        raise redis.exceptions.ConnectionError(_lean._DEMOTED)
                    replies.append(reply)
                    if len(replies) == size:
                        return replies
                received = sock.recv_into(buffer)
                if not received:
                    raise redis.exceptions.ConnectionError(_lean._CLOSED_BY_SERVER)
                reader.feed(buffer, 0, received)  # type: ignore[arg-type]  # any buffer
        except TimeoutError:
            self.close()
            raise redis.exceptions.TimeoutError(f"Timeout reading from {self._address}") from None
        except redis.exceptions.InvalidResponse as exc:
            self.close()
            raise redis.exceptions.ConnectionError(f"{self._address}: {exc}") from None
        except OSError as exc:
            self.close()
            raise redis.exceptions.ConnectionError(
                f"Error while reading from {self._address} : {exc}"
            ) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the socket. Idempotent."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self._sock.close()
            self._on_close()


class SyncLane:
    """Blocking calls from any thread, on sockets made by a sync redis-py pool.

    Use :meth:`for_client` (None when the lane cannot serve that client).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._demote_readonly = hasattr(self._pool, "sentinel_manager")
        self._idle: list[_SyncConnection] = []
        self._lock = threading.Lock()
        self._retry: Any = None
        self._generation = _lean._fork_generation
        self._closed = False
        self._max: int = getattr(self._pool, "max_connections", None) or 2**31
        self._open = 0  # sockets made and not closed yet (idle or in use)

    @classmethod
    def for_client(cls, client: object) -> SyncLane | None:
        """A lane for ``client``, or None to keep using redis-py.

        The lane serves only a plain ``redis.Redis`` (not a Cluster, not
        fakeredis or another subclass) speaking RESP2, whose pool makes
        redis-py sync connections, and only when hiredis is installed.
        """
        if not _lean.HAVE_HIREDIS or type(client) is not redis.Redis:
            return None
        pool = client.connection_pool
        kwargs = getattr(pool, "connection_kwargs", None)
        connection_class = getattr(pool, "connection_class", None)
        if (
            not isinstance(kwargs, dict)
            or not isinstance(connection_class, type)
            or not issubclass(connection_class, redis.connection.AbstractConnection)
            or str(kwargs.get("protocol") or 2) != "2"
        ):
            return None
        return cls(client)

    def __repr__(self) -> str:
        return f"<SyncLane {'closed' if self._closed else 'open'}, {len(self._idle)} idle>"

    @property
    def idle(self) -> int:
        """Connections waiting for the next caller."""
        return len(self._idle)

    def call(self, *args: Any) -> Any:
        """Run one command; its raw reply.

        Raises:
            redis.exceptions.ResponseError: the server's error reply (a
                subclass such as NoScriptError, as redis-py parses it).
            redis.exceptions.ConnectionError, TimeoutError: the connection failed.
        """
        reply = self.pipeline((args,))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[_lean.Command]) -> list[Any]:
        """Run several commands in one round trip; replies in order, error replies in place.

        Raises:
            redis.exceptions.DataError: an argument cannot be sent.
            redis.exceptions.ConnectionError, TimeoutError: the connection failed.
        """
        data, size = _lean._pack(commands), len(commands)
        try:
            return self._once(data, size)
        except _FAILURES as exc:
            return self._retrying(exc, lambda: self._once(data, size))

    def close(self) -> None:
        """Close every idle connection; calls running now close theirs when done. Idempotent.

        The lane refuses calls afterwards.
        """
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections

    def _once(self, data: bytes, size: int) -> list[Any]:
        conn = self._take()
        replies = conn.exchange(data, size)  # closes conn on any failure
        self._give(conn)
        return replies

    def _take(self) -> _SyncConnection:
        if self._generation != _lean._fork_generation:
            with self._lock:
                self._idle = []  # the parent's sockets: forgotten, never closed
                self._open = 0
                self._generation = _lean._fork_generation
        try:
            return self._idle.pop()
        except IndexError:
            return self._connect()

    def _give(self, conn: _SyncConnection) -> None:
        if self._closed or len(self._idle) >= _IDLE_CAP:
            conn.close()
            return
        self._idle.append(conn)
        if self._closed:  # closed meanwhile: close() may have missed it
            self.close()

    def _connect(self) -> _SyncConnection:
        """A new connection: made and set up by redis-py, then taken over.

        Raises:
            redis.exceptions.MaxConnectionsError: ``max_connections`` sockets are open.
        """
        if self._closed:
            raise redis.exceptions.ConnectionError(_lean._CLOSED_BY_BROKER)
        with self._lock:
            if self._open >= self._max:
                raise redis.exceptions.MaxConnectionsError(
                    f"Too many connections: max_connections={self._max} are open "
                    "(one per thread calling the sync Client)"
                )
            self._open += 1
            generation = self._generation
        try:
            made: Any = self._pool.connection_class(**self._pool.connection_kwargs)
            made.connect()
        except BaseException:
            self._closed_one(generation)
            raise
        self._retry = getattr(made, "retry", None)
        sock = getattr(made, "_sock", None)
        if sock is None:  # pragma: no cover - redis-py always sets it on connect
            made.disconnect()
            self._closed_one(generation)
            raise redis.exceptions.ConnectionError("redis-py made no socket")
        host_error = getattr(made, "_host_error", None)
        address = str(host_error()) if callable(host_error) else "redis"
        made._sock = None  # ours now: redis-py must not close it
        return _SyncConnection(
            sock, address, self._demote_readonly, lambda: self._closed_one(generation)
        )

    def _closed_one(self, generation: int) -> None:
        """A socket made in ``generation`` closed; it no longer counts (a child counts anew)."""
        with self._lock:
            if generation == self._generation:
                self._open -= 1

    def _retrying(self, error: Exception, again: Callable[[], T]) -> T:
        """Retry a failed call as the connection's redis-py ``Retry`` policy says."""
        policy = _lean.RetryPolicy(self._retry)
        while True:
            delay = policy.next_delay(error)
            if delay is None or self._closed:
                raise error
            if delay > 0:
                time.sleep(delay)
            try:
                return again()
            except _FAILURES as exc:
                error = exc
