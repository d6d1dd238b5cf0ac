"""RedisBroker: the whole Broker protocol on Redis (standalone, Sentinel or Cluster).

Every state transition is one Lua script (``scripts/*.lua``) run with EVALSHA
on the keys of one queue, all under the queue's ``{<queue>}`` hash tag (see
:mod:`taskq.brokers.redis.keys` and ``docs/redis.md``). Batches (enqueue many,
dequeue many, ack many, extend many) are one script call per queue, and calls
for several queues are pipelined into one round trip.

A consumer waiting on empty queues blocks (BLPOP) on the queues' ``notify``
lists, which every transition into ``pending`` pushes to, so it wakes within
a round trip of an enqueue instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import redis
import redis.asyncio
import redis.exceptions
from redis.crc import key_slot

from taskq._time import Clock
from taskq.brokers._fleet_codec import entry_from_doc, entry_to_doc, server_from_doc, server_to_doc
from taskq.brokers.base import (
    Ack,
    ClusterSlotInfo,
    ConfigFinding,
    DailyStats,
    Delivery,
    EnqueueRequest,
    GroupInfo,
    LeaseRef,
    QueueStats,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    trim_wanted,
)
from taskq.brokers.redis._lean import AnyLane, Lane
from taskq.brokers.redis.checks import (
    NodeClient,
    maxmemory_findings,
    min_replicas_findings,
    persistence_findings,
    read_maxmemory_policy,
    read_min_replicas,
    read_persistence,
)
from taskq.brokers.redis.client import (
    Connector,
    connector_from_client,
    connector_from_url,
    translate_error,
)
from taskq.brokers.redis.keys import DEFAULT_PREFIX, FleetKeys, QueueKeys
from taskq.brokers.redis.scripts import load_scripts
from taskq.errors import (
    BrokerError,
    BrokerTimeoutError,
    DuplicateTaskError,
    InvalidArgumentError,
    LeaseLostError,
    MessageDecodeError,
    QueueNotEmptyError,
    QueueNotFoundError,
    SchemaVersionError,
    TaskIDConflictError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq.task import TaskInfo, TaskMessage, TaskState, encode_unaddressed, truncate_error

__all__ = ["RedisBroker"]

_STATE_OF_LETTER = {
    b"p": TaskState.PENDING,
    b"a": TaskState.ACTIVE,
    b"s": TaskState.SCHEDULED,
    b"r": TaskState.RETRY,
    b"x": TaskState.ARCHIVED,
    b"c": TaskState.COMPLETED,
    b"g": TaskState.AGGREGATING,
    b"G": TaskState.AGGREGATING,
    b"C": None,
    b"D": None,
}
_LETTER_OF_STATE = {
    TaskState.PENDING: "p",
    TaskState.ACTIVE: "a",
    TaskState.SCHEDULED: "s",
    TaskState.RETRY: "r",
    TaskState.ARCHIVED: "x",
    TaskState.COMPLETED: "c",
    TaskState.AGGREGATING: "g",
}
_DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
_ENQUEUE_CHUNK = 200
_ACK_CHUNK = 500
_SUBSCRIBE_TIMEOUT = 5.0
_PROBE = "#!lua flags=no-writes\nreturn 1"

# RedisClusterException (the cluster client's "cannot be connected" after a refused
# login or TLS handshake on every seed) is not a RedisError.
_DRIVER_ERRORS = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
    asyncio.TimeoutError,
)


def _driver_pipeline(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Several commands in one redis-py pipeline on a sync client; error replies in place."""
    pipe = client.pipeline(transaction=False)
    queue_command: Callable[..., Any] = pipe.execute_command
    for command in commands:
        queue_command(*command)
    results: list[Any] = pipe.execute(raise_on_error=False)
    return results


def _lease_lost(ref: LeaseRef) -> LeaseLostError:
    return LeaseLostError(f"lease of task {ref.task_id!r} in {ref.queue!r} is stale or expired")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _chunks_by_queue(queues: Iterable[str], size: int | None = None) -> list[tuple[str, list[int]]]:
    """The items' indexes grouped by queue (first seen first), cut in chunks of ``size``.

    A batch method sends one script call per chunk: each touches the keys of
    one queue (one hash slot). Without ``size``, one chunk per queue.
    """
    by_queue: dict[str, list[int]] = {}
    for index, queue in enumerate(queues):
        by_queue.setdefault(queue, []).append(index)
    chunks: list[tuple[str, list[int]]] = []
    for queue, indexes in by_queue.items():
        step = size or len(indexes)
        chunks += [(queue, indexes[i : i + step]) for i in range(0, len(indexes), step)]
    return chunks


class _CancelSubscription:
    """Cancelled task ids from the broker's pub/sub channel (see ``subscribe_cancellations``)."""

    def __init__(self, broker: RedisBroker, pubsub: Any) -> None:
        self._broker = broker
        self._pubsub = pubsub
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[str]:
        """Yield task ids as cancellations are requested, until :meth:`aclose`.

        Raises:
            BrokerError: the subscription connection failed for good.
        """
        while not self._closed:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            except _DRIVER_ERRORS as exc:
                if self._closed:
                    return
                raise self._broker._error(exc, "cancellation subscription") from exc
            if message is not None and message.get("type") == "message":
                yield _text(message["data"])

    async def aclose(self) -> None:
        """Stop listening and close the subscription's connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._broker._subscriptions.discard(self)
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._pubsub.aclose()


class RedisBroker:
    """The Broker protocol on Redis: standalone, Sentinel or Cluster.

    Build it from a URL with :meth:`from_url` (or ``taskq.connect(url)``), or
    from a redis-py client you already have::

        RedisBroker(redis.asyncio.Redis(...))
        RedisBroker(redis.Redis(...))                      # converted to asyncio
        RedisBroker(redis.asyncio.RedisCluster(...))
        RedisBroker(sentinel.master_for("mymaster"))
        RedisBroker(sentinel, service_name="mymaster")

    A given ``redis.asyncio`` client is used for the first event loop that
    uses the broker (and is not closed by :meth:`close`); any other loop gets
    its own client with the same settings. Clients must keep
    ``decode_responses=False``.

    Args:
        client_or_factory: a client (see above) or a zero-argument callable
            returning a ``redis.asyncio`` client.
        clock: where "now" comes from. None (the default) uses the Redis
            server's ``TIME`` inside every script, so worker clocks do not
            matter; tests pass a :class:`taskq.testing.FakeClock`.
        prefix: the first part of every key (default ``"taskq"``).
        service_name: the master's name, when ``client_or_factory`` is a
            ``Sentinel`` object.

    Raises:
        InvalidArgumentError: an unsupported client or an invalid prefix.
    """

    def __init__(
        self,
        client_or_factory: object,
        *,
        clock: Clock | None = None,
        prefix: str = DEFAULT_PREFIX,
        service_name: str | None = None,
    ) -> None:
        if isinstance(client_or_factory, Connector):
            self._connector = client_or_factory
        else:
            self._connector = connector_from_client(client_or_factory, service_name=service_name)
        self._clock = clock
        self._prefix = prefix
        self._fleet = FleetKeys.for_prefix(prefix)
        self._scripts = load_scripts()
        self._shebang: bool | None = None
        self._queue_keys: dict[str, QueueKeys] = {}
        self._script_keys: dict[tuple[str, str], tuple[bytes, ...]] = {}
        self._subscriptions: weakref.WeakSet[_CancelSubscription] = weakref.WeakSet()
        self._closes = 0

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock | None = None, prefix: str = DEFAULT_PREFIX
    ) -> RedisBroker:
        """A broker for a Redis URL (nothing is connected until first use).

        Accepted: ``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS,
        certificates verified), ``unix:///path.sock?db=0``,
        ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>/<db>`` and
        ``redis+cluster://[user:pass@]h1:7000,h2:7001`` (``rediss+`` for TLS).
        Query options are redis-py's (``socket_timeout``, ``ssl_ca_certs``, ...).

        Raises:
            InvalidArgumentError: the URL is malformed.
        """
        return cls(connector_from_url(url), clock=clock, prefix=prefix)

    def __repr__(self) -> str:
        return f"RedisBroker({self._connector.url!r})"

    @property
    def is_cluster(self) -> bool:
        """Whether the broker talks to a Redis Cluster."""
        return self._connector.is_cluster

    # ------------------------------------------------------------------ plumbing

    def _error(self, exc: BaseException, what: str) -> BrokerError:
        return translate_error(exc, f"redis {self._connector.url}: {what}", self._connector.secrets)

    def _keys(self, queue: str) -> QueueKeys:
        keys = self._queue_keys.get(queue)
        if keys is None:
            keys = self._queue_keys[queue] = QueueKeys.for_queue(queue, self._prefix)
        return keys

    def _keys_for(self, name: str, queue: str) -> tuple[bytes, ...]:
        """The KEYS of script ``name`` for ``queue`` (cached, already encoded)."""
        cached = self._script_keys.get((name, queue))
        if cached is None:
            names = self._scripts[name].keys
            cached = tuple(k.encode() for k in self._keys(queue).named(names))
            self._script_keys[(name, queue)] = cached
        return cached

    def _now_arg(self) -> str | int:
        return self._clock.now_ms() if self._clock is not None else ""

    async def _variant(self, lane: AnyLane) -> bool:
        """Whether the server takes scripts with a ``#!lua`` shebang (Redis >= 7)."""
        if self._shebang is None:
            try:
                await lane.call("EVAL", _PROBE, 0)
            except redis.exceptions.ResponseError:
                self._shebang = False
            else:
                self._shebang = True
        return self._shebang

    async def _run(self, name: str, keys: Sequence[str | bytes], *args: Any) -> Any:
        """Run script ``name`` (EVALSHA, then EVAL after a NOSCRIPT)."""
        script = self._scripts[name]
        try:
            lane = self._connector.lane()
            shebang = self._shebang
            if shebang is None:
                shebang = await self._variant(lane)
            try:
                return await lane.call(
                    "EVALSHA", script.sha if shebang else script.plain_sha, len(keys), *keys, *args
                )
            except redis.exceptions.NoScriptError:
                source = script.source if shebang else script.plain_source
                return await lane.call("EVAL", source, len(keys), *keys, *args)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, name) from exc

    async def _run_many(
        self, calls: Sequence[tuple[str, Sequence[str | bytes], Sequence[Any]]]
    ) -> list[Any]:
        """Run several script calls in one round trip (not atomic together)."""
        if len(calls) == 1:
            name, keys, args = calls[0]
            return [await self._run(name, keys, *args)]
        try:
            lane = self._connector.lane()
            shebang = await self._variant(lane)
            results = await lane.pipeline(
                [
                    ("EVALSHA", self._scripts[name].variant(shebang)[0], len(keys), *keys, *args)
                    for name, keys, args in calls
                ]
            )
            for i, result in enumerate(results):
                if isinstance(result, redis.exceptions.NoScriptError):
                    name, keys, args = calls[i]
                    source = self._scripts[name].variant(shebang)[1]
                    results[i] = await lane.call("EVAL", source, len(keys), *keys, *args)
                elif isinstance(result, BaseException):
                    raise result
            return results
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, calls[0][0]) from exc

    async def _command(self, what: str, *args: Any) -> Any:
        """Run one plain command on the running loop's lane.

        On the lean lane the reply is raw (no redis-py response callback):
        callers accept both forms.
        """
        try:
            return await self._connector.lane().call(*args)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, what) from exc

    async def _register(self, queues: Iterable[str]) -> None:
        names = list(queues)
        if names:
            await self._command("register queue", "SADD", self._fleet.queues, *names)

    # ------------------------------------------------------------------ producing

    async def enqueue(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as pending (aggregating if it has a group).

        Raises:
            TaskIDConflictError: the id exists in the queue (any state).
            DuplicateTaskError: the unique lock is held by another task.
            BrokerError: Redis failed (translated driver error).
        """
        return self._single(await self._store([EnqueueRequest(message, 0, unique_ttl)]))

    async def schedule(
        self, message: TaskMessage, process_at: int, *, unique_ttl: int = 0
    ) -> TaskState:
        """Store a new task as scheduled until ``process_at`` (as enqueue if not in the future).

        Raises:
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        return self._single(await self._store([EnqueueRequest(message, process_at, unique_ttl)]))

    async def add_to_group(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as aggregating in ``message.group``.

        Raises:
            InvalidArgumentError: ``message.group`` is empty.
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        if not message.group:
            raise InvalidArgumentError("add_to_group needs a message with a group")
        return self._single(await self._store([EnqueueRequest(message, 0, unique_ttl)]))

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """Store many tasks, each atomic on its own; per item the state or the refusal.

        One script call per queue (in chunks of 200), all pipelined; on a
        standalone or Sentinel server each call is sent as soon as it is built.
        """
        return await self._store(requests)

    @staticmethod
    def _single(results: list[TaskState | Exception]) -> TaskState:
        result = results[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def _store(self, items: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        chunks = self._enqueue_chunks(items)
        if not chunks:
            return []
        lane = self._connector.lane()
        replies = None
        if len(chunks) > 1 and isinstance(lane, Lane) and self._shebang is not None:
            replies = await self._stream_enqueue(lane, items, chunks)
        if replies is None:
            now = self._now_arg()
            calls = [self._enqueue_call(items, queue, chunk, now) for queue, chunk in chunks]
            replies = await self._run_many(calls)
        results, registered = self._enqueue_results(items, chunks, replies)
        if registered:
            await self._register(registered)
        return results

    async def _stream_enqueue(
        self,
        lane: Lane,
        items: Sequence[EnqueueRequest],
        chunks: Sequence[tuple[str, list[int]]],
    ) -> list[Any] | None:
        """Send each chunk's script call as soon as it is built; None if nothing could be sent.

        Redis runs chunk n while the next one is encoded and packed, so a
        large batch costs about the server's time rather than the sum of
        both. Calls go out in order on one connection, so FIFO order holds
        across chunks. A chunk refused with NOSCRIPT is sent again with EVAL.
        """
        script = self._scripts["enqueue"]
        sha = script.variant(bool(self._shebang))[0]
        now = self._now_arg()
        calls = []
        futures: list[asyncio.Future[Any]] = []
        for queue, chunk in chunks:
            call = self._enqueue_call(items, queue, chunk, now)
            keys, args = call[1], call[2]
            future = lane.start("EVALSHA", sha, len(keys), *keys, *args)
            if future is None:
                if not futures:
                    return None  # no live connection: the caller connects
                # The connection was lost while sending: what was sent fails with it.
                break
            calls.append(call)
            futures.append(future)
        await asyncio.wait(futures)
        errors = [future.exception() for future in futures]  # each one retrieved
        replies: list[Any] = []
        for (name, keys, args), future, error in zip(calls, futures, errors, strict=True):
            if isinstance(error, redis.exceptions.NoScriptError):
                replies.append(await self._run(name, keys, *args))
            elif error is not None:
                raise self._error(error, "enqueue") from error
            else:
                replies.append(future.result())
        if len(replies) < len(chunks):
            raise self._error(redis.exceptions.ConnectionError("connection lost"), "enqueue")
        return replies

    def enqueue_blocking(
        self, requests: Sequence[EnqueueRequest]
    ) -> list[TaskState | Exception] | None:
        """:meth:`enqueue_many` from any thread, on a sync connection (no event loop).

        The same script calls, queue registration, clock and errors as
        :meth:`enqueue_many`. The sync client is made on first use from the
        broker's URL (standalone or Sentinel); its pool is thread-safe and
        starts afresh in a forked child. With hiredis installed the calls go
        through the blocking lean lane (:mod:`taskq.brokers.redis._lean_sync`)
        on sockets that pool made.

        Returns:
            per item the state or the refusal; None (nothing sent) when the
            broker has no sync client: Redis Cluster, or a client object
            passed in by the user (fakeredis included).

        Raises:
            BrokerError: Redis failed (translated driver error).
        """
        lane = self._connector.sync_lane()
        if lane is not None:
            command: Callable[..., Any] = lane.call
            pipeline: Callable[[list[tuple[Any, ...]]], list[Any]] = lane.pipeline
        else:
            client = self._connector.sync_client()
            if client is None:
                return None
            command = client.execute_command  # untyped in redis-py
            pipeline = functools.partial(_driver_pipeline, client)
        chunks, calls = self._enqueue_calls(requests)
        if not calls:
            return []
        try:
            replies = self._run_many_blocking(command, pipeline, calls)
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "enqueue") from exc
        results, registered = self._enqueue_results(requests, chunks, replies)
        if registered:
            try:
                command("SADD", self._fleet.queues, *registered)
            except _DRIVER_ERRORS as exc:
                raise self._error(exc, "register queue") from exc
        return results

    def _run_many_blocking(
        self,
        command: Callable[..., Any],
        pipeline: Callable[[list[tuple[Any, ...]]], list[Any]],
        calls: Sequence[tuple[str, Sequence[str | bytes], Sequence[Any]]],
    ) -> list[Any]:
        """:meth:`_run_many` in blocking form: EVALSHA (pipelined), EVAL after a NOSCRIPT.

        ``command`` runs one command and raises error replies; ``pipeline``
        runs several in one round trip with error replies in place.
        """
        shebang = self._shebang
        if shebang is None:
            try:
                command("EVAL", _PROBE, 0)
            except redis.exceptions.ResponseError:
                shebang = self._shebang = False
            else:
                shebang = self._shebang = True
        if len(calls) == 1:
            name, keys, args = calls[0]
            sha, source = self._scripts[name].variant(shebang)
            try:
                return [command("EVALSHA", sha, len(keys), *keys, *args)]
            except redis.exceptions.NoScriptError:
                return [command("EVAL", source, len(keys), *keys, *args)]
        results = pipeline(
            [
                ("EVALSHA", self._scripts[name].variant(shebang)[0], len(keys), *keys, *args)
                for name, keys, args in calls
            ]
        )
        for i, result in enumerate(results):
            if isinstance(result, redis.exceptions.NoScriptError):
                name, keys, args = calls[i]
                source = self._scripts[name].variant(shebang)[1]
                results[i] = command("EVAL", source, len(keys), *keys, *args)
            elif isinstance(result, BaseException):
                raise result
        return results

    def _enqueue_calls(
        self, items: Sequence[EnqueueRequest]
    ) -> tuple[list[tuple[str, list[int]]], list[tuple[str, Sequence[str | bytes], Sequence[Any]]]]:
        """The enqueue script calls for ``items``: the chunks (queue, item indexes) and calls.

        Raises:
            InvalidArgumentError: a task id or group contains NUL.
        """
        chunks = self._enqueue_chunks(items)
        now = self._now_arg()
        return chunks, [self._enqueue_call(items, queue, chunk, now) for queue, chunk in chunks]

    @staticmethod
    def _enqueue_chunks(
        items: Sequence[EnqueueRequest],
    ) -> list[tuple[str, list[int]]]:
        """``items`` split per queue into script-call sized chunks (queue, item indexes).

        Raises:
            InvalidArgumentError: a task id or group contains NUL.
        """
        messages = [r.message for r in items]
        for message in messages:
            if "\x00" in message.id or "\x00" in message.group:
                raise InvalidArgumentError("task ids and group names must not contain NUL")
        if len(items) == 1:
            return [(messages[0].queue, [0])]
        return _chunks_by_queue([message.queue for message in messages], _ENQUEUE_CHUNK)

    def _enqueue_call(
        self,
        items: Sequence[EnqueueRequest],
        queue: str,
        chunk: Sequence[int],
        now: str | int,
    ) -> tuple[str, Sequence[str | bytes], Sequence[Any]]:
        """The enqueue script call storing ``items[i]`` for each i of ``chunk`` in ``queue``.

        A chunk of plain tasks (due now, no group, no unique lock, an
        enqueued_at: the common load, which the clients always give) is sent
        as id and message only, two values per task instead of six, and is
        stored without state entries: pending since its enqueued_at.
        """
        keys = self._keys_for("enqueue", queue)
        chosen = [items[i] for i in chunk]
        messages = [r.message for r in chosen]
        encoded = encode_unaddressed(messages)
        if all(
            m.enqueued_at and not (r.process_at or r.unique_ttl or m.group)
            for r, m in zip(chosen, messages, strict=True)
        ):
            args: list[Any] = [now, b"2", *([b""] * (2 * len(chosen)))]
            args[2::2] = [message.id for message in messages]
            args[3::2] = encoded
            return ("enqueue", keys, args)
        args = [now, b"6"]
        extend = args.extend
        for r, data in zip(chosen, encoded, strict=True):
            message, process_at, unique_ttl = r.message, r.process_at, r.unique_ttl
            # Numbers and empty strings already as bytes: they are sent as
            # they are instead of being converted one by one.
            extend(
                (
                    message.id,
                    data,
                    b"%d" % process_at if process_at else b"0",
                    message.group or b"",
                    message.unique_key or b"",
                    b"%d" % unique_ttl if unique_ttl else b"0",
                )
            )
        return ("enqueue", keys, args)

    @staticmethod
    def _enqueue_results(
        items: Sequence[EnqueueRequest],
        chunks: Sequence[tuple[str, list[int]]],
        replies: Sequence[Any],
    ) -> tuple[list[TaskState | Exception], list[str]]:
        """Per item the state or the refusal, and the queues the calls registered first."""
        results: list[TaskState | Exception] = [TaskState.PENDING] * len(items)
        registered = []
        for (queue, chunk), reply in zip(chunks, replies, strict=True):
            if reply[0] == 1:
                registered.append(queue)
            for i, code in zip(chunk, reply[1:], strict=True):
                state = _STATE_OF_LETTER[code]
                if state is not None:
                    results[i] = state
                elif code == b"C":
                    results[i] = TaskIDConflictError(
                        f"task id {items[i].message.id!r} already exists in queue {queue!r}"
                    )
                elif code == b"D":
                    results[i] = DuplicateTaskError(
                        f"unique lock {items[i].message.unique_key!r} in queue {queue!r} is held"
                    )
        return results, registered

    # ------------------------------------------------------------------ consuming

    async def dequeue(
        self, queues: Sequence[str], *, count: int, lease: int, wait: int = 0
    ) -> list[Delivery]:
        """Lease up to ``count`` pending tasks, trying ``queues`` in order.

        With ``wait`` > 0 and nothing pending, blocks (BLPOP on the queues'
        notify lists, no polling) up to ``wait`` ms and returns as soon as a
        task arrives. Paused and unknown queues are skipped. A task whose
        stored message cannot be decoded is archived at once with the reason
        and not returned.

        Raises:
            BrokerError: Redis failed (translated driver error).
        """
        if count <= 0:
            return []
        names = list(dict.fromkeys(queues))
        got = await self._take(names, count, lease) if names else []
        if got or wait <= 0:
            return got
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait / 1000
        closes = self._closes
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0.001 or closes != self._closes:
                return []
            if not names:
                await asyncio.sleep(remaining)
                return []
            try:
                got = await self._wait_and_take(names, remaining, count, lease)
            except BrokerError:
                if closes != self._closes:
                    return []  # close() cut the wait short
                raise
            if got:
                return got

    async def _take(self, names: Sequence[str], count: int, lease: int) -> list[Delivery]:
        if not self.is_cluster:
            all_keys = [k for q in names for k in self._keys_for("dequeue", q)]
            reply = await self._run("dequeue", all_keys, self._now_arg(), count, lease, _nonce())
            return await self._deliveries(reply, lease, names)
        out: list[Delivery] = []
        for queue in names:
            keys = self._keys_for("dequeue", queue)
            reply = await self._run(
                "dequeue", keys, self._now_arg(), count - len(out), lease, _nonce()
            )
            out += await self._deliveries(reply, lease, (queue,))
            if len(out) >= count:
                break
        return out

    async def _deliveries(
        self, reply: list[Any], lease: int, queues: Sequence[str]
    ) -> list[Delivery]:
        """Deliveries from a dequeue or reclaim reply; ``queues`` in the script's KEYS order."""
        now = int(reply[0])
        expires = now + lease
        out: list[Delivery] = []
        for i in range(1, len(reply), 5):
            token = _text(reply[i + 3])
            try:
                message = TaskMessage.decode(
                    reply[i + 2], task_id=_text(reply[i + 1]), queue=queues[int(reply[i])]
                )
            except (MessageDecodeError, SchemaVersionError) as exc:
                ref = LeaseRef(queues[int(reply[i])], _text(reply[i + 1]), token)
                await self.archive(ref, error=f"undecodable task message: {exc}")
                continue
            # 0: pending without a state entry, since its enqueued_at (see _lib.lua)
            since = int(reply[i + 4]) or message.enqueued_at
            out.append(Delivery(message, token, expires, now, since))
        return out

    async def _wait_and_take(
        self, names: Sequence[str], remaining: float, count: int, lease: int
    ) -> list[Delivery]:
        """Wait for work on ``names``, then lease up to ``count`` tasks.

        On a standalone server the dequeue script is pipelined behind the
        BLPOP on the notify lists: Redis runs it as soon as the BLPOP returns
        (or times out), so a woken worker has its tasks after one round trip
        instead of two.
        """
        if self.is_cluster:
            await self._wait_for_work(names, remaining)
            return await self._take(names, count, lease)
        block = self._block_for(remaining)
        keys = [k for q in names for k in self._keys_for("dequeue", q)]
        notify = [self._keys(q).notify for q in names]
        try:
            lane = self._connector.lane()
            sha = self._scripts["dequeue"].variant(await self._variant(lane))[0]
            waited, reply = await lane.blocking(
                [
                    ("BLPOP", *notify, block),
                    ("EVALSHA", sha, len(keys), *keys, self._now_arg(), count, lease, _nonce()),
                ]
            )
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "wait for tasks") from exc
        if isinstance(waited, BaseException):
            raise self._error(waited, "wait for tasks")
        if isinstance(reply, redis.exceptions.NoScriptError):
            return await self._take(names, count, lease)  # EVAL loads the script again
        if isinstance(reply, BaseException):
            raise self._error(reply, "dequeue")
        return await self._deliveries(reply, lease, names)

    def _block_for(self, remaining: float) -> float:
        """How long one BLPOP may block: within ``remaining`` and the client's socket timeout."""
        timeout = self._connector.socket_timeout()
        block = remaining if timeout is None else min(remaining, max(timeout - 0.5, timeout / 2))
        return max(block, 0.001)

    async def _wait_for_work(self, names: Sequence[str], remaining: float) -> None:
        """Block until a notify list of ``names`` gets a token, or ``remaining`` seconds pass."""
        block = self._block_for(remaining)
        keys = [self._keys(q).notify for q in names]
        try:
            if not self.is_cluster:
                (waited,) = await self._connector.lane().blocking([("BLPOP", *keys, block)])
                if isinstance(waited, BaseException):
                    raise waited
                return
            client = self._connector.client()
            by_slot: dict[int, list[str]] = {}
            for key in keys:
                by_slot.setdefault(key_slot(key.encode()), []).append(key)
            waits = [
                asyncio.ensure_future(client.blpop(g, timeout=block)) for g in by_slot.values()
            ]
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            for finished in done:
                finished.result()
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "wait for tasks") from exc

    async def extend_leases(self, refs: Sequence[LeaseRef], *, lease: int) -> list[bool]:
        """Extend each still-held lease to ``lease`` ms from now; per ref whether it was held.

        One script call per queue, pipelined.
        """
        chunks = _chunks_by_queue(ref.queue for ref in refs)
        if not chunks:
            return []
        now = self._now_arg()
        calls: list[tuple[str, Sequence[str | bytes], Sequence[Any]]] = []
        for queue, indexes in chunks:
            args: list[Any] = [now, lease]
            for i in indexes:
                args += (refs[i].task_id, refs[i].token)
            calls.append(("extend", self._keys_for("extend", queue), args))
        replies = await self._run_many(calls)
        out = [False] * len(refs)
        for (_, indexes), reply in zip(chunks, replies, strict=True):
            for i, held in zip(indexes, reply, strict=True):
                out[i] = held == 1
        return out

    async def done(self, ref: LeaseRef) -> None:
        """active -> deleted; releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        self._raise_first(await self.done_many([Ack(ref)]))

    async def complete(self, ref: LeaseRef, *, retention: int) -> None:
        """active -> completed for ``retention`` ms (with its result); releases the lock.

        Raises:
            LeaseLostError: stale or expired token.
        """
        self._raise_first(await self._ack([(ref, max(retention, 0))]))

    async def done_many(self, acks: Sequence[Ack]) -> list[Exception | None]:
        """Apply many done/complete outcomes; per ack None or the LeaseLostError.

        One script call per queue (in chunks of 500), pipelined.
        """
        return await self._ack([(a.ref, a.retention if a.retention > 0 else -1) for a in acks])

    @staticmethod
    def _raise_first(results: list[Exception | None]) -> None:
        if results[0] is not None:
            raise results[0]

    async def _ack(self, items: Sequence[tuple[LeaseRef, int]]) -> list[Exception | None]:
        chunks = _chunks_by_queue((ref.queue for ref, _ in items), _ACK_CHUNK)
        now = self._now_arg()
        calls: list[tuple[str, Sequence[str | bytes], Sequence[Any]]] = []
        for queue, chunk in chunks:
            args: list[Any] = [now]
            for i in chunk:
                ref, retention = items[i]
                args += (ref.task_id, ref.token, retention)
            calls.append(("ack", self._keys_for("ack", queue), args))
        if not calls:
            return []
        replies = await self._run_many(calls)
        out: list[Exception | None] = [None] * len(items)
        for (_, chunk), reply in zip(chunks, replies, strict=True):
            for i, applied in zip(chunk, reply, strict=True):
                if applied != 1:
                    out[i] = _lease_lost(items[i][0])
        return out

    async def _fenced(self, name: str, ref: LeaseRef, *args: Any) -> None:
        keys = self._keys_for(name, ref.queue)
        if await self._run(name, keys, self._now_arg(), ref.task_id, ref.token, *args) != 1:
            raise _lease_lost(ref)

    async def retry(
        self, ref: LeaseRef, *, delay: int, error: str, is_failure: bool = True
    ) -> None:
        """active -> retry, due ``delay`` ms from now (broker time); records the error.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._fenced("retry", ref, delay, truncate_error(error), int(is_failure))

    async def archive(self, ref: LeaseRef, *, error: str, release_unique: bool = True) -> None:
        """active -> archived with ``error``; counts processed + failed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._fenced("archive", ref, truncate_error(error), int(release_unique))

    async def requeue(self, ref: LeaseRef) -> None:
        """active -> pending at the head of the queue, no retry spent.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._fenced("requeue", ref)

    async def write_result(self, ref: LeaseRef, data: bytes) -> None:
        """Store ``data`` as the task's result.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._fenced("write_result", ref, bytes(data))

    # ------------------------------------------------------------------ time

    async def now(self) -> int:
        """The broker's time in epoch ms: the clock given, else the Redis server's TIME."""
        if self._clock is not None:
            return self._clock.now_ms()
        seconds, micros = await self._command("TIME", "TIME")
        return int(seconds) * 1000 + int(micros) // 1000

    async def forward(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled and retry tasks to pending (or their group)."""
        keys = self._keys_for("forward", queue)
        return int(await self._run("forward", keys, self._now_arg(), max(limit, 0)))

    async def expired_leases(self, queue: str, *, limit: int = 100) -> list[str]:
        """Ids of active tasks whose lease expired (or that have none)."""
        keys = self._keys_for("expired_leases", queue)
        reply = await self._run("expired_leases", keys, self._now_arg(), max(limit, 0))
        return [_text(i) for i in reply]

    async def reclaim_expired(self, queue: str, *, lease: int, limit: int = 100) -> list[Delivery]:
        """Take over active tasks whose lease expired (or is missing) with fresh tokens."""
        keys = self._keys_for("reclaim", queue)
        reply = await self._run("reclaim", keys, self._now_arg(), lease, max(limit, 0), _nonce())
        return await self._deliveries(reply, lease, (queue,))

    async def delete_expired_completed(self, queue: str, *, limit: int = 100) -> int:
        """Delete up to ``limit`` completed tasks whose retention has ended."""
        keys = self._keys_for("delete_expired_completed", queue)
        return int(
            await self._run("delete_expired_completed", keys, self._now_arg(), max(limit, 0))
        )

    async def trim_archived(
        self,
        queue: str,
        *,
        max_size: int | None,
        max_age: int | None,
        limit: int = 1000,
    ) -> int:
        """Delete the oldest archived tasks beyond ``max_size`` or ``max_age`` ms; how many.

        At most ``limit`` per call, in one script; each trimmed task goes with
        every hash entry it has (message, state, result, group, unique-lock
        bookkeeping) and its unique lock if it still holds it.

        Raises:
            InvalidArgumentError: ``max_size`` or ``max_age`` is negative.
        """
        if not trim_wanted(max_size, max_age, limit):
            return 0
        keys = self._keys_for("trim_archived", queue)
        size_arg = "" if max_size is None else max_size
        age_arg = "" if max_age is None else max_age
        return int(
            await self._run("trim_archived", keys, self._now_arg(), size_arg, age_arg, limit)
        )

    # ------------------------------------------------------------------ groups

    async def groups(self, queue: str) -> list[GroupInfo]:
        """Groups of ``queue`` holding aggregating tasks (not yet in a set), sorted by name."""
        reply = await self._command("groups", "HGETALL", self._keys(queue).groups)
        pairs = (
            reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2], strict=True)
        )
        found = [GroupInfo(_text(g), int(n)) for g, n in pairs if int(n) > 0]
        return sorted(found, key=lambda g: g.group)

    async def aggregation_check(
        self,
        queue: str,
        group: str,
        *,
        grace_period: int,
        max_delay: int = 0,
        max_size: int = 0,
    ) -> str | None:
        """Move a ready group's oldest members (up to ``max_size``) into a new set; its id."""
        set_id = uuid.uuid4().hex
        reply = await self._run(
            "aggregation_check",
            self._keys(queue).all(),
            self._now_arg(),
            group,
            set_id,
            grace_period,
            max_delay,
            max_size,
        )
        return None if reply is None else _text(reply)

    async def read_aggregation_set(self, queue: str, group: str, set_id: str) -> list[TaskMessage]:
        """Messages of an aggregation set, oldest first (empty when it is gone).

        Raises:
            MessageDecodeError: a member's stored message cannot be decoded.
        """
        reply = await self._run(
            "read_aggregation_set", self._keys(queue).all(), self._now_arg(), group, set_id
        )
        return [
            TaskMessage.decode(reply[i + 1], task_id=_text(reply[i]), queue=queue)
            for i in range(0, len(reply), 2)
        ]

    async def finish_aggregation(
        self, queue: str, group: str, set_id: str, message: TaskMessage
    ) -> bool:
        """Enqueue ``message`` as pending and delete the set with its members; False if gone.

        Raises:
            TaskIDConflictError: ``message.id`` is used by a task outside the set.
        """
        reply = await self._run(
            "finish_aggregation",
            self._keys(queue).all(),
            self._now_arg(),
            group,
            set_id,
            message.id,
            message.encode(addressed=False),
        )
        if reply == -1:
            raise TaskIDConflictError(f"task id {message.id!r} already exists in queue {queue!r}")
        return bool(reply == 1)

    async def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """Delete an aggregation set and its member tasks (no-op when it is gone)."""
        await self._run(
            "delete_aggregation_set", self._keys(queue).all(), self._now_arg(), group, set_id
        )

    async def reclaim_stale_aggregation_sets(self, queue: str, *, older_than: int) -> int:
        """Return members of sets older than ``older_than`` ms to their group; how many tasks."""
        reply = await self._run(
            "reclaim_aggregation_sets", self._keys(queue).all(), self._now_arg(), older_than
        )
        return int(reply)

    # ------------------------------------------------------------------ cancellation

    async def request_cancel(self, task_id: str, queue: str | None = None) -> TaskState | None:
        """Mark an active task cancelled (persisted, and published), or archive one not started.

        Archiving releases the task's unique lock (if it still owns it).
        With ``queue`` None every known queue is searched (sorted); the first
        one holding the id is used.
        """
        names = [queue] if queue is not None else await self.queues()
        for name in names:
            letter = await self._run("cancel", self._keys(name).all(), self._now_arg(), task_id)
            if letter is None:
                continue
            if letter == b"a":
                await self._command(
                    "publish cancel", "PUBLISH", self._fleet.cancel_channel, task_id
                )
            return _STATE_OF_LETTER[letter]
        return None

    async def cancel_requested(self, queue: str, task_ids: Sequence[str]) -> set[str]:
        """The ids among ``task_ids`` whose cancellation was requested while active."""
        ids = list(task_ids)
        if not ids:
            return set()
        reply = await self._command(
            "cancel_requested", "SMISMEMBER", self._keys(queue).cancelled, *ids
        )
        return {task_id for task_id, flag in zip(ids, reply, strict=True) if flag}

    async def subscribe_cancellations(self) -> _CancelSubscription:
        """Subscribe to cancellation requests (task ids) made from now on.

        Returns once the subscription is active, so a request made after this
        call returns is delivered. Uses its own connection (in a Cluster, to
        one node: PUBLISH reaches every node).

        Raises:
            BrokerError: the subscription could not be set up.
        """
        try:
            client = self._connector.client()
            if isinstance(client, redis.asyncio.RedisCluster):
                await client.initialize()  # its pub/sub needs the slot map
            pubsub: Any = client.pubsub()
            await pubsub.subscribe(self._fleet.cancel_channel)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _SUBSCRIBE_TIMEOUT
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    await pubsub.aclose()
                    raise BrokerTimeoutError(
                        f"redis {self._connector.url}: no confirmation of the cancel subscription"
                    )
                message = await pubsub.get_message(timeout=min(remaining, 1.0))
                if message is not None and message.get("type") == "subscribe":
                    break
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "subscribe to cancellations") from exc
        subscription = _CancelSubscription(self, pubsub)
        self._subscriptions.add(subscription)
        return subscription

    # ------------------------------------------------------------------ fleet

    async def write_server_state(self, info: ServerInfo, *, ttl: int) -> None:
        """Publish a server and its active workers for ``ttl`` ms."""
        doc = server_to_doc(info)
        await self._fleet_write(self._fleet.servers, self._fleet.server_data, info.id, ttl, doc)

    async def clear_server_state(self, server_id: str) -> None:
        """Remove a server's published state."""
        keys = (self._fleet.servers, self._fleet.server_data)
        await self._run("fleet_clear", keys, self._now_arg(), server_id)

    async def servers(self) -> list[ServerInfo]:
        """Servers whose state has not expired, sorted by id."""
        docs = await self._fleet_read(self._fleet.servers, self._fleet.server_data)
        return [server_from_doc(doc) for doc in docs]

    async def write_scheduler_entries(
        self, scheduler_id: str, entries: Sequence[SchedulerEntryInfo], *, ttl: int
    ) -> None:
        """Publish a scheduler's entries for ``ttl`` ms (replacing its previous ones)."""
        doc = [entry_to_doc(e) for e in entries]
        await self._fleet_write(
            self._fleet.schedulers, self._fleet.scheduler_data, scheduler_id, ttl, doc
        )

    async def clear_scheduler_entries(self, scheduler_id: str) -> None:
        """Remove a scheduler's published entries."""
        keys = (self._fleet.schedulers, self._fleet.scheduler_data)
        await self._run("fleet_clear", keys, self._now_arg(), scheduler_id)

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """Entries of every live scheduler (by scheduler id, then in published order)."""
        docs = await self._fleet_read(self._fleet.schedulers, self._fleet.scheduler_data)
        return [entry_from_doc(e) for entries in docs for e in entries]

    async def _fleet_write(self, index: str, data: str, member: str, ttl: int, doc: Any) -> None:
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        await self._run("fleet_write", (index, data), self._now_arg(), member, ttl, text)

    async def _fleet_read(self, index: str, data: str) -> list[Any]:
        reply = await self._run("fleet_read", (index, data), self._now_arg())
        members = sorted(zip(reply[::2], reply[1::2], strict=True), key=lambda pair: pair[0])
        return [json.loads(doc) for _, doc in members]

    async def record_scheduler_event(
        self, entry_id: str, event: SchedulerEvent, *, keep: int = 1000
    ) -> None:
        """Append to an entry's history, keeping the newest ``keep`` events."""
        await self._run(
            "record_event",
            (self._fleet.history(entry_id),),
            self._now_arg(),
            event.task_id,
            event.enqueued_at,
            max(keep, 0),
        )

    async def scheduler_events(self, entry_id: str, *, limit: int = 100) -> list[SchedulerEvent]:
        """An entry's history, newest first."""
        if limit <= 0:
            return []
        reply = await self._command(
            "scheduler_events",
            "ZREVRANGE",
            self._fleet.history(entry_id),
            0,
            limit - 1,
            "WITHSCORES",
        )
        pairs = (
            zip(reply[::2], reply[1::2], strict=True)
            if reply and not isinstance(reply[0], list)
            else reply
        )
        return [SchedulerEvent(_text(task_id), int(float(score))) for task_id, score in pairs]

    async def claim_scheduler_tick(self, entry_id: str, tick: int, *, ttl: int) -> bool:
        """True for exactly one caller per (entry, tick) while the claim lives (``ttl`` ms)."""
        reply = await self._run(
            "claim_tick", (self._fleet.claims,), self._now_arg(), entry_id, tick, ttl
        )
        return bool(reply == 1)

    async def history(self, queue: str, days: int) -> list[DailyStats]:
        """Processed/failed counts of the last ``days`` UTC days of broker time (today first)."""
        if days <= 0:
            return []
        reply = await self._run("history", (self._keys(queue).stats,), self._now_arg(), days)
        today = int(reply[0])
        return [
            DailyStats(queue, _EPOCH + timedelta(days=today - n), int(p), int(f))
            for n, (p, f) in enumerate(zip(reply[1::2], reply[2::2], strict=True))
        ]

    # ------------------------------------------------------------------ admin

    async def queues(self) -> list[str]:
        """Every known queue, sorted."""
        reply = await self._command("queues", "SMEMBERS", self._fleet.queues)
        return sorted(_text(q) for q in reply)

    async def queue_stats(self, queue: str) -> QueueStats:
        """A snapshot of one queue.

        ``memory_bytes`` sums ``MEMORY USAGE <key> SAMPLES 5`` over the
        queue's keys (an estimate); None where the server has no MEMORY
        command (fakeredis) or refuses it.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        keys = self._keys(queue)
        reply = await self._run("queue_stats", keys.all(), self._now_arg())
        if reply is None:
            raise QueueNotFoundError(f"queue {queue!r} does not exist")
        v = [int(x) for x in reply]
        now, pending_since = v[0], v[11]
        return QueueStats(
            queue=queue,
            size=v[1],
            pending=v[2],
            active=v[3],
            scheduled=v[4],
            retry=v[5],
            archived=v[6],
            completed=v[7],
            aggregating=v[8],
            groups=v[9],
            paused=bool(v[10]),
            latency=max(0, now - pending_since) if v[2] and pending_since else 0,
            processed=v[12],
            failed=v[13],
            processed_total=v[14],
            failed_total=v[15],
            timestamp=now,
            memory_bytes=await self._memory_usage(keys),
        )

    async def _memory_usage(self, keys: QueueKeys) -> int | None:
        try:
            pipe = self._connector.client().pipeline(transaction=False)
            for key in keys.all():
                pipe.execute_command("MEMORY USAGE", key, "SAMPLES", 5)
            sizes = await pipe.execute(raise_on_error=True)
        except redis.exceptions.ResponseError:
            return None
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "MEMORY USAGE") from exc
        return sum(int(s) for s in sizes if s is not None)

    async def list_tasks(
        self,
        queue: str,
        state: TaskState,
        *,
        offset: int = 0,
        limit: int = 30,
        group: str | None = None,
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``, in the state's natural order.

        Listing aggregating tasks reads every member of the group (or of the
        queue when ``group`` is None) to order them.

        Raises:
            QueueNotFoundError: the queue is unknown.
            InvalidArgumentError: a negative offset or limit.
        """
        if offset < 0 or limit < 0:
            raise InvalidArgumentError("offset and limit must not be negative")
        letter = _LETTER_OF_STATE[TaskState(state)]
        reply = await self._run(
            "list_tasks",
            self._keys(queue).all(),
            self._now_arg(),
            letter,
            offset,
            limit,
            group or "",
        )
        if reply is None:
            raise QueueNotFoundError(f"queue {queue!r} does not exist")
        return [
            _info(reply[i + 1 : i + 6], _text(reply[i]), queue) for i in range(1, len(reply), 6)
        ]

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task in whatever state it is.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
            MessageDecodeError: its stored message cannot be decoded.
        """
        reply = await self._run("get_task", self._keys(queue).all(), self._now_arg(), task_id)
        self._check_found(reply, queue, task_id)
        return _info(reply[1:6], task_id, queue)

    @staticmethod
    def _check_found(reply: list[Any], queue: str, task_id: str) -> None:
        if reply[0] == b"Q":
            raise QueueNotFoundError(f"queue {queue!r} does not exist")
        if reply[0] == b"N":
            raise TaskNotFoundError(f"no task {task_id!r} in queue {queue!r}")

    async def _admin(
        self,
        name: str,
        verb: str,
        queue: str,
        task_id: str,
        state: TaskState | None,
        group: str | None,
        limit: int,
    ) -> int:
        letter = _LETTER_OF_STATE[TaskState(state)] if state is not None else ""
        reply = await self._run(
            name,
            self._keys(queue).all(),
            self._now_arg(),
            task_id,
            letter,
            group or "",
            max(limit, 0),
        )
        self._check_found(reply, queue, task_id)
        if reply[0] == b"S":
            shown = _STATE_OF_LETTER[reply[1]]
            what = f"task {task_id!r} is" if task_id else "tasks that are"
            raise TaskStateError(f"cannot {verb} {what} {shown}")
        return int(reply[1])

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active; releases its unique lock.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active).
        """
        await self._admin("delete_tasks", "delete", queue, task_id, None, None, 1)

    async def run_task(self, queue: str, task_id: str) -> None:
        """Move a scheduled, retry, archived, completed or aggregating task to pending.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (pending or active).
        """
        await self._admin("run_tasks", "run", queue, task_id, None, None, 1)

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a pending, scheduled, retry or aggregating task to archived.

        Releases its unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active, archived, completed).
        """
        await self._admin("archive_tasks", "archive", queue, task_id, None, None, 1)

    async def delete_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Delete up to ``limit`` tasks in ``state``, oldest first; how many. Call again until 0.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active.
        """
        return await self._admin("delete_tasks", "delete", queue, "", state, group, limit)

    async def run_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Run up to ``limit`` tasks in ``state`` as :meth:`run_task`; how many.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is pending or active.
        """
        return await self._admin("run_tasks", "run", queue, "", state, group, limit)

    async def archive_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Archive up to ``limit`` tasks in ``state`` as :meth:`archive_task`; how many.

        Releases each task's unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active, archived or completed.
        """
        return await self._admin("archive_tasks", "archive", queue, "", state, group, limit)

    async def pause_queue(self, queue: str) -> None:
        """Stop dequeuing from ``queue`` (enqueue and forwarding go on).

        Raises:
            QueueNotFoundError.
        """
        await self._pause(queue, True)

    async def unpause_queue(self, queue: str) -> None:
        """Resume dequeuing from ``queue`` (and wake waiting consumers).

        Raises:
            QueueNotFoundError.
        """
        await self._pause(queue, False)

    async def _pause(self, queue: str, paused: bool) -> None:
        keys = self._keys_for("pause", queue)
        if await self._run("pause", keys, self._now_arg(), int(paused)) != 1:
            raise QueueNotFoundError(f"queue {queue!r} does not exist")

    async def remove_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove a queue and all of its keys.

        Raises:
            QueueNotFoundError: unknown queue.
            QueueNotEmptyError: it holds tasks (without ``force``) or active tasks.
        """
        reply = await self._run(
            "remove_queue", self._keys(queue).all(), self._now_arg(), int(force)
        )
        if reply[0] == b"Q":
            raise QueueNotFoundError(f"queue {queue!r} does not exist")
        if reply[0] == b"A":
            raise QueueNotEmptyError(f"queue {queue!r} has {int(reply[1])} active tasks")
        if reply[0] == b"E":
            raise QueueNotEmptyError(
                f"queue {queue!r} holds {int(reply[1])} tasks (use force=True)"
            )
        await self._command("unregister queue", "SREM", self._fleet.queues, queue)

    # ------------------------------------------------------------------ cluster

    async def cluster_info(self, queue: str) -> ClusterSlotInfo:
        """The hash slot of ``queue`` and the nodes serving it (primary first).

        Raises:
            BrokerError: the broker is not connected to a Redis Cluster.
        """
        slot = key_slot(self._keys(queue).pending.encode())
        client = self._connector.client()
        if not isinstance(client, redis.asyncio.RedisCluster):
            raise BrokerError(f"redis {self._connector.url} is not a Redis Cluster")
        try:
            await client.initialize()
            nodes = client.nodes_manager.slots_cache.get(slot, [])
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "cluster slots") from exc
        return ClusterSlotInfo(queue, slot, [f"{n.host}:{n.port}" for n in nodes])

    # ------------------------------------------------------------------ settings

    async def check_config(self) -> list[ConfigFinding]:
        """Settings of the Redis server(s) that can lose tasks, and how they persist.

        Reads ``maxmemory-policy`` (``CONFIG GET``, else ``INFO memory``) of
        the server, or of every master of a Cluster; any policy other than
        ``noeviction`` is an unsafe finding. When neither command is
        permitted the finding says so, with ``unsafe=False``. Then one report
        per persistence mode (``appendonly``, ``appendfsync``, ``save``):
        never unsafe, a warning when a restart or crash loses more than the
        last second of tasks; and, for a Sentinel-managed master with
        ``min-replicas-to-write 0``, the recommendation to raise it (INFO).
        The worker server calls this once at start-up.

        Raises:
            BrokerError: Redis cannot be reached.
        """
        try:
            client = self._connector.client()
            nodes: list[tuple[str, NodeClient]]
            if isinstance(client, redis.asyncio.RedisCluster):
                await client.initialize()
                nodes = [(m.name, m) for m in client.get_primaries()]
            else:
                nodes = [(self._connector.url, client)]
            policies = await asyncio.gather(*(read_maxmemory_policy(n) for _, n in nodes))
            modes = await asyncio.gather(*(read_persistence(n) for _, n in nodes))
            sentinel = hasattr(getattr(client, "connection_pool", None), "sentinel_manager")
            replicas = await read_min_replicas(client) if sentinel else None
        except _DRIVER_ERRORS as exc:
            raise self._error(exc, "maxmemory-policy check") from exc
        names = [name for name, _ in nodes]
        return (
            maxmemory_findings(list(zip(names, policies, strict=True)))
            + persistence_findings(list(zip(names, modes, strict=True)))
            + min_replicas_findings(self._connector.url, replicas)
        )

    # ------------------------------------------------------------------ lifecycle

    async def ping(self) -> None:
        """Check that Redis is reachable.

        Raises:
            BrokerConnectionError: it is not (BrokerAuthError: credentials refused).
        """
        await self._command("PING", "PING")

    async def close(self) -> None:
        """End waiting dequeues and cancellation subscriptions, close every connection.

        Idempotent; the broker stays usable (new connections are made on demand).
        """
        self._closes += 1
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        await self._connector.aclose()


def _nonce() -> str:
    """A random prefix for the lease tokens handed out by one script call."""
    return os.urandom(8).hex() + "-"


def _info(fields: Sequence[Any], task_id: str, queue: str) -> TaskInfo:
    """A TaskInfo from ``message, letter, next_process_at, result, orphaned``."""
    raw, letter, next_at, result, orphaned = fields
    state = _STATE_OF_LETTER[letter]
    assert state is not None
    return TaskInfo.from_message(
        TaskMessage.decode(raw, task_id=task_id, queue=queue),
        state,
        next_process_at=int(next_at),
        result=result,
        is_orphaned=orphaned == 1,
    )
