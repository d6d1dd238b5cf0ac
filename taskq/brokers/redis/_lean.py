"""The lean lane: script calls on a pipelining asyncio RESP connection of our own.

Why: a call through ``redis.asyncio`` costs about 90 us of Python on top of the
network round trip (pure-Python command packing, a pool get/release, the
Retry wrapper, ``asyncio.wait_for`` per read). The broker's hot path is one
EVALSHA per operation, so that overhead doubles its cost. A :class:`Lane`
sends the same commands packed by ``hiredis.pack_command`` and parses replies
with a ``hiredis.Reader`` straight from ``data_received``.

What it does not do: connection set-up. Each connection is made by the
redis-py client's own pool (``make_connection()`` + ``connect()``: TCP, unix
socket or TLS, AUTH, SELECT, CLIENT SETNAME, Sentinel master discovery), and
only then taken over: its transport is switched to a :class:`_Connection`
protocol. redis-py's pool does not count connections it did not lend, so the
lane counts its own against the pool's ``max_connections`` (as the blocking
lane does): a client built with ``?max_connections=N`` holds at most N lane
connections at once. Replies are raw (no redis-py response callbacks), so
the lane only carries commands whose raw replies the broker reads: scripts,
BLPOP and the few plain commands of ``RedisBroker._command``.

Invariants:

* One shared connection per lane serves every caller on the lane's event
  loop: a command is written at once and replies are matched first in,
  first out. A caller cancelled while waiting leaves its entry in the queue;
  its reply is read and dropped, so the stream never desynchronises.
* Blocking commands (BLPOP) never go on the shared connection: each waiter
  takes an idle dedicated connection (or makes one) and gives it back after.
* A connection that fails (lost, timed out, protocol error, ``READONLY``
  from a Sentinel-managed master that was demoted) fails every pending call
  with ``redis.exceptions.ConnectionError`` / ``TimeoutError`` and is
  dropped; the next call makes a new one. The connection's redis-py
  ``Retry`` policy is applied to failed calls as redis-py would.
* ``socket_timeout`` is enforced by one watchdog timer per connection (no
  per-call timer): a call fails between one and two timeouts after it was
  sent, never earlier.
* A connection counts against ``max_connections`` from the moment it is
  being made until it closes, is lost or is forgotten after a fork (the
  moment its ``closed`` turns true), so a replaced shared connection never
  uses up the limit. One over the limit is refused with
  ``redis.exceptions.MaxConnectionsError`` (a ConnectionError), not waited
  for. The count is a plain integer: a lane runs on one event loop.
* A lane belongs to one event loop (the :class:`~taskq.brokers.redis.client.Connector`
  keeps one per loop); after ``fork()`` a child never touches the parent's
  sockets. Writes are not flow-controlled: every caller awaits its reply, so
  what is buffered is bounded by the number of callers.
* Messages name the server address only, never credentials.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio
import redis.asyncio.connection
import redis.exceptions

try:
    import hiredis

    HAVE_HIREDIS = True
except ImportError:  # pragma: no cover - exercised without the extra installed
    HAVE_HIREDIS = False

try:
    from redis._parsers.base import BaseParser as _Parser

    _parse_error: Callable[[str], Exception] = _Parser.parse_error
except ImportError:  # pragma: no cover - older or newer redis-py layouts

    def _parse_error(text: str) -> Exception:
        if text.startswith("NOSCRIPT "):
            return redis.exceptions.NoScriptError(text[len("NOSCRIPT ") :])
        return redis.exceptions.ResponseError(text)


__all__ = ["HAVE_HIREDIS", "AnyLane", "DriverLane", "Lane", "RetryPolicy"]

T = TypeVar("T")
Command = tuple[Any, ...]

_CLOSED_BY_SERVER = "Connection closed by server."
_DEMOTED = "The previous master is now a slave"
_CLOSED_BY_BROKER = "Connection closed by RedisBroker.close()."
_FAILURES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

_fork_generation = 0


def _forked() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_forked)


def _pack(commands: Sequence[Command]) -> bytes:
    try:
        return b"".join([hiredis.pack_command(command) for command in commands])
    except TypeError as exc:
        raise redis.exceptions.DataError(f"cannot send a command argument: {exc}") from None


class _Batch:
    """Several replies collected for one waiter (a pipeline)."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int) -> None:
        self.future = future
        self.size = size
        self.replies: list[Any] = []


class _Connection(asyncio.Protocol):
    """One taken-over redis connection: writes commands, resolves waiters in order."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        address: str,
        timeout: float | None,
        demote_readonly: bool,
        on_close: Callable[[], None],
    ) -> None:
        self._writer = writer  # kept alive: a collected StreamWriter closes its transport
        self._transport = writer.transport
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(
            protocolError=redis.exceptions.InvalidResponse, replyError=_parse_error
        )
        self._pending: collections.deque[asyncio.Future[Any] | _Batch] = collections.deque()
        self._address = address
        self._demote_readonly = demote_readonly
        self._on_close = on_close
        self.closed = False
        self.sent = 0
        self._received = 0
        self._timeout = timeout
        self._watch: asyncio.TimerHandle | None = None
        self._mark = (0, 0)
        if timeout:
            self._watch = self._loop.call_later(timeout, self._tick)

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Write one packed command; the future gets its reply (an error reply raises)."""
        future = self._loop.create_future()
        self._pending.append(future)
        self.sent += 1
        self._transport.write(data)
        return future

    def send_many(self, data: bytes, size: int) -> asyncio.Future[list[Any]]:
        """Write ``size`` packed commands; the future gets their replies (errors in place)."""
        batch = _Batch(self._loop.create_future(), size)
        self._pending.append(batch)
        self.sent += size
        self._transport.write(data)
        return batch.future

    def data_received(self, data: bytes) -> None:
        """Feed the parser and hand every complete reply to its waiter."""
        reader = self._reader
        pending = self._pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                self._received += 1
                if self._demote_readonly and isinstance(reply, redis.exceptions.ReadOnlyError):
                    # A demoted master: as redis-py's Sentinel connection does.
                    self.close(redis.exceptions.ConnectionError(_DEMOTED))
                    return
                waiter = pending[0]
                if isinstance(waiter, _Batch):
                    waiter.replies.append(reply)
                    if len(waiter.replies) < waiter.size:
                        continue
                    pending.popleft()
                    if not waiter.future.done():
                        waiter.future.set_result(waiter.replies)
                    continue
                pending.popleft()
                if waiter.done():
                    continue  # its caller was cancelled: the reply is dropped
                if isinstance(reply, BaseException):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)
        except IndexError:
            self.close(redis.exceptions.ConnectionError(f"unexpected reply from {self._address}"))
        except redis.exceptions.InvalidResponse as exc:
            self.close(redis.exceptions.ConnectionError(f"{self._address}: {exc}"))

    def eof_received(self) -> bool:
        """The server closed its side: close ours too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every pending call."""
        if exc is None:
            error = redis.exceptions.ConnectionError(_CLOSED_BY_SERVER)
        else:
            error = redis.exceptions.ConnectionError(
                f"Error while reading from {self._address} : {exc}"
            )
        self._fail(error)

    def close(self, error: Exception | None = None) -> None:
        """Close the socket and fail every pending call with ``error``."""
        self._fail(error or redis.exceptions.ConnectionError("Connection closed by client."))
        self._writer.close()

    def abandon(self) -> None:
        """Forget the socket without touching it (it belongs to the parent after a fork)."""
        self._fail(redis.exceptions.ConnectionError("the connection belongs to the parent process"))

    def _fail(self, error: Exception) -> None:
        if not self.closed:
            self.closed = True
            self._on_close()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        pending, self._pending = self._pending, collections.deque()
        for waiter in pending:
            future = waiter.future if isinstance(waiter, _Batch) else waiter
            if not future.done():
                # One instance per caller: each raise writes its own traceback into it.
                future.set_exception(type(error)(*error.args))

    def _tick(self) -> None:
        """Watchdog: fail if the oldest call, already pending a tick ago, got no reply since."""
        received, sent_then = self._mark
        if self._received == received and sent_then > received:
            self.close(redis.exceptions.TimeoutError(f"Timeout reading from {self._address}"))
            return
        self._mark = (self._received, self.sent)
        assert self._timeout is not None
        self._watch = self._loop.call_later(self._timeout, self._tick)


class DriverLane:
    """The lane's calls through redis-py itself: for Cluster, fakeredis, no hiredis."""

    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.RedisCluster) -> None:
        self._client = client

    def call(self, *args: Any) -> Awaitable[Any]:
        """Run one command (``execute_command``)."""
        return self._client.execute_command(*args)

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Run several commands in one pipeline; error replies in place."""
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            # Not pipe.evalsha(): redis-py's ClusterPipeline blocks that
            # method, while the raw command is routed by its KEYS' slot.
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    blocking = pipeline  # redis-py takes a pooled connection of its own per pipeline

    async def aclose(self) -> None:
        """Nothing to close: the client's connections are the Connector's."""


class Lane:
    """Pipelined script calls for one event loop, on connections made by a redis-py pool.

    Use :meth:`for_client` (None when the lane cannot serve that client).
    """

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._pool = client.connection_pool
        self.fallback = DriverLane(client)
        self.unusable = False
        self._timeout = _positive(self._pool.connection_kwargs.get("socket_timeout"))
        self._demote_readonly = hasattr(self._pool, "sentinel_manager")
        self._shared: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._blocking: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._retry: Any = None
        self._generation = _fork_generation
        self._closed = False
        self._max: int = getattr(self._pool, "max_connections", None) or 2**31
        self._open = 0  # connections being made or made and not closed yet

    @classmethod
    def for_client(cls, client: object) -> Lane | None:
        """A lane for ``client``, or None to keep using redis-py.

        The lane serves only a plain ``redis.asyncio.Redis`` (not a Cluster,
        not fakeredis or another subclass) speaking RESP2, whose pool makes
        redis-py asyncio connections, and only when hiredis is installed.
        """
        if not HAVE_HIREDIS or type(client) is not redis.asyncio.Redis:
            return None
        pool = client.connection_pool
        kwargs = getattr(pool, "connection_kwargs", None)
        connection_class = getattr(pool, "connection_class", None)
        if (
            not callable(getattr(pool, "make_connection", None))
            or not isinstance(kwargs, dict)
            or not isinstance(connection_class, type)
            or not issubclass(connection_class, redis.asyncio.connection.AbstractConnection)
            or str(kwargs.get("protocol") or 2) != "2"
        ):
            return None
        return cls(client)

    def __repr__(self) -> str:
        return f"<Lane {'closed' if self._closed else 'open'}, {self.connections} connections>"

    @property
    def connections(self) -> int:
        """How many sockets the lane holds open now (shared, blocking idle and busy)."""
        shared = 1 if self._shared is not None and not self._shared.closed else 0
        return shared + len(self._blocking) + len(self._busy)

    @property
    def sent(self) -> int:
        """Commands written on the current shared connection since it was made."""
        return self._shared.sent if self._shared is not None else 0

    async def call(self, *args: Any) -> Any:
        """Run one command on the shared connection; its raw reply.

        Raises:
            redis.exceptions.ResponseError: the server's error reply (a
                subclass such as NoScriptError, as redis-py parses it).
            redis.exceptions.ConnectionError, TimeoutError: the connection failed.
        """
        conn = self._shared
        if conn is None or conn.closed or self._generation != _fork_generation:
            try:
                conn = await self._shared_connection()
            except _Unusable:
                return await self.fallback.call(*args)
        data = _pack((args,))
        try:
            return await conn.send(data)
        except _FAILURES as exc:
            return await self._retrying(exc, lambda: self._call_again(data))

    def start(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write one command now on the live shared connection; the future of its reply.

        For a caller that overlaps building its next command with the server
        running this one. None when there is no live shared connection (use
        :meth:`call`, which connects). Unlike :meth:`call` nothing is retried:
        a lost connection fails the future with ConnectionError.
        """
        conn = self._shared
        if conn is None or conn.closed or self._generation != _fork_generation:
            return None
        return conn.send(_pack((args,)))

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Run several commands in one round trip; replies in order, error replies in place.

        Raises:
            redis.exceptions.ConnectionError, TimeoutError: the connection failed.
        """
        conn = self._shared
        if conn is None or conn.closed or self._generation != _fork_generation:
            try:
                conn = await self._shared_connection()
            except _Unusable:
                return await self.fallback.pipeline(commands)
        data, size = _pack(commands), len(commands)
        try:
            return await conn.send_many(data, size)
        except _FAILURES as exc:
            return await self._retrying(exc, lambda: self._pipeline_again(data, size))

    async def blocking(self, commands: Sequence[Command]) -> list[Any]:
        """As :meth:`pipeline`, on a dedicated connection (for BLPOP and what follows it).

        A caller cancelled while waiting closes that connection (its reply
        would otherwise still be due on it).
        """
        data, size = _pack(commands), len(commands)
        try:
            return await self._blocking_once(data, size)
        except _Unusable:
            return await self.fallback.blocking(commands)
        except _FAILURES as exc:
            return await self._retrying(exc, lambda: self._blocking_once(data, size))

    async def aclose(self) -> None:
        """Close every connection (pending calls fail with ConnectionError). Idempotent.

        The lane refuses calls afterwards.
        """
        self._closed = True
        for conn in self._take_all():
            conn.close()

    # -- connections

    def _take_all(self) -> list[_Connection]:
        conns = [*self._blocking, *self._busy]
        if self._shared is not None:
            conns.append(self._shared)
        self._shared = None
        self._blocking = []
        self._busy = set()
        return conns

    def _check_fork(self) -> None:
        if self._generation != _fork_generation:
            self._generation = _fork_generation
            self._open = 0  # the parent's connections: its count, not ours
            for conn in self._take_all():
                conn.abandon()

    async def _shared_connection(self) -> _Connection:
        self._check_fork()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._shared
            if conn is None or conn.closed:
                conn = self._shared = await self._connect()
            return conn

    async def _connect(self) -> _Connection:
        """A new connection: made and set up by redis-py, then taken over.

        Raises:
            _Unusable: redis-py's connection does not look as expected.
            redis.exceptions.MaxConnectionsError: ``max_connections`` are open.
        """
        if self.unusable:
            raise _Unusable
        if self._closed:
            raise redis.exceptions.ConnectionError(_CLOSED_BY_BROKER)
        if self._open >= self._max:
            raise redis.exceptions.MaxConnectionsError(
                f"Too many connections: max_connections={self._max} are open (the broker's "
                "shared connection and one per waiting dequeue; a worker needs at least 2)"
            )
        self._open += 1
        generation = self._generation
        try:
            writer, transport, address = await self._connect_with_redis_py()
        except BaseException:
            self._closed_one(generation)
            raise
        conn = _Connection(
            writer,
            address,
            self._timeout,
            self._demote_readonly,
            lambda: self._closed_one(generation),
        )
        transport.set_protocol(conn)
        if not transport.is_reading():
            transport.resume_reading()
        if self._closed:  # closed while connecting
            conn.close()
            raise redis.exceptions.ConnectionError(_CLOSED_BY_BROKER)
        return conn

    def _closed_one(self, generation: int) -> None:
        """A connection made in ``generation`` closed: it no longer counts (a child counts anew)."""
        if generation == self._generation:
            self._open -= 1

    async def _connect_with_redis_py(self) -> tuple[asyncio.StreamWriter, asyncio.Transport, str]:
        """A connection made and set up by redis-py: its writer and transport (ours now), address.

        Raises:
            _Unusable: redis-py's connection does not look as expected.
        """
        made: Any = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await made.connect()
        self._retry = getattr(made, "retry", None)
        writer = getattr(made, "_writer", None)
        reader = getattr(made, "_reader", None)
        transport = getattr(writer, "transport", None)
        leftover = getattr(reader, "_buffer", None)
        if (
            not isinstance(writer, asyncio.StreamWriter)
            or not isinstance(reader, asyncio.StreamReader)
            or not isinstance(transport, asyncio.Transport)
            or leftover
            or reader.at_eof()
            or transport.is_closing()
        ):
            await made.disconnect()
            self.unusable = True
            raise _Unusable
        host_error = getattr(made, "_host_error", None)
        address = str(host_error()) if callable(host_error) else "redis"
        made._reader = made._writer = None  # ours now: redis-py must not close it
        return writer, transport, address

    async def _call_again(self, data: bytes) -> Any:
        return await (await self._shared_connection()).send(data)

    async def _pipeline_again(self, data: bytes, size: int) -> list[Any]:
        return await (await self._shared_connection()).send_many(data, size)

    async def _blocking_once(self, data: bytes, size: int) -> list[Any]:
        self._check_fork()
        conn = None
        while self._blocking and conn is None:
            candidate = self._blocking.pop()
            conn = None if candidate.closed else candidate
        if conn is None:
            conn = await self._connect()
        self._busy.add(conn)
        try:
            replies = await conn.send_many(data, size)
        except asyncio.CancelledError:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
        if not conn.closed and not self._closed:
            self._blocking.append(conn)
        return replies

    async def _retrying(self, error: Exception, again: Callable[[], Awaitable[T]]) -> T:
        """Retry a failed call as the connection's redis-py ``Retry`` policy says."""
        policy = RetryPolicy(self._retry)
        while True:
            delay = policy.next_delay(error)
            if delay is None or self._closed:
                raise error
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                return await again()
            except _FAILURES as exc:
                error = exc


class RetryPolicy:
    """A redis-py ``Retry`` object read for one failed call: whether and when to try again.

    The lanes apply the policy of the connections redis-py made for them, as
    redis-py would: only for the error types it supports, at most ``retries``
    times (a negative count: without limit), waiting its backoff between tries.
    """

    def __init__(self, retry: object) -> None:
        self._retries: int = getattr(retry, "_retries", 0)
        self._supported: tuple[type[Exception], ...] = getattr(retry, "_supported_errors", ())
        self._backoff: Any = getattr(retry, "_backoff", None)
        if self._backoff is not None:
            self._backoff.reset()
        self._failures = 0

    def next_delay(self, error: Exception) -> float | None:
        """Seconds to wait before the next try after ``error``; None to give up."""
        self._failures += 1
        if not isinstance(error, self._supported) or (
            self._retries >= 0 and self._failures > self._retries
        ):
            return None
        if self._backoff is None:
            return 0.0
        return float(self._backoff.compute(self._failures))


AnyLane = Lane | DriverLane
"""What the broker runs script calls on."""


class _Unusable(redis.exceptions.ConnectionError):
    """The connection cannot be taken over: the caller falls back to redis-py.

    A ConnectionError, so that should it ever surface (not expected: the
    first connection decides) it is still translated as one.
    """


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
