"""Connections: URLs and user clients -> one asyncio redis client per event loop.

``redis.asyncio`` clients are bound to the event loop they first ran on, and
one :class:`~taskq.brokers.redis.RedisBroker` may be used from two loops at
once (a sync ``taskq.Client`` runs its own loop thread beside a worker's
loop). A :class:`Connector` therefore keeps a recipe (a zero-argument
factory) and creates one client per running loop, lazily; it closes them all
in :meth:`Connector.aclose`. Beside each client it keeps the loop's lane for
script calls (:meth:`Connector.lane`): the lean lane of
:mod:`taskq.brokers.redis._lean` when it can serve the client, else redis-py.

Recipes come from a URL (:func:`connector_from_url`) or from a client object
the user already has (:func:`connector_from_client`): ``redis.asyncio.Redis``,
``redis.asyncio.RedisCluster``, their sync counterparts, a Sentinel-managed
client (``sentinel.master_for(...)``) or a ``Sentinel`` object. Sync objects
are converted to asyncio clients built from their connection settings.

Beside the per-loop clients, a connector built from a standalone or Sentinel
URL keeps one *sync* ``redis.Redis`` (:meth:`Connector.sync_client`), made on
first use from the same settings: the broker's blocking enqueue runs on it
from any thread (its pool is thread-safe and resets itself in a forked
child), through the blocking lean lane of :mod:`taskq.brokers.redis._lean_sync`
when it can serve the client (:meth:`Connector.sync_lane`). Cluster URLs and
user-supplied clients have none.

Driver errors become taskq errors here (:func:`translate_error`); messages
never contain a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.backoff
import redis.cluster
import redis.connection
import redis.exceptions
import redis.retry
import redis.sentinel

from taskq.brokers.redis._lean import AnyLane, DriverLane, Lane
from taskq.brokers.redis._lean_sync import SyncLane
from taskq.brokers.registry import redact_url
from taskq.errors import (
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    BrokerOutOfMemoryError,
    BrokerTimeoutError,
    InvalidArgumentError,
)

__all__ = [
    "AsyncRedis",
    "Connector",
    "connector_from_client",
    "connector_from_url",
    "translate_error",
]

AsyncRedis = redis.asyncio.Redis | redis.asyncio.RedisCluster
"""The asyncio client types the broker runs commands on."""

_Handle = tuple[AsyncRedis, Callable[[], Awaitable[None]]]
_Factory = Callable[[], _Handle]
_SyncHandle = tuple[redis.Redis, Callable[[], None]]
_SyncFactory = Callable[[], _SyncHandle]

_AUTH_MARKERS = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid password", "invalid username")
# Error replies of a server that refuses writes for now and will take them again
# (min-replicas-to-write not met, e.g. while a failover fences the old master;
# a replica cut off from its master): to callers, like a dropped connection.
_UNAVAILABLE_PREFIXES = ("NOREPLICAS", "MASTERDOWN")
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.SlotNotCoveredError,
    redis.sentinel.MasterNotFoundError,
    redis.sentinel.SlaveNotFoundError,
    ssl.SSLError,
    OSError,
)


def translate_error(exc: BaseException, where: str, secrets: Sequence[str] = ()) -> BrokerError:
    """The taskq error for a driver error raised while doing ``where``.

    Args:
        exc: the redis-py (or socket) error.
        where: what was being done and against what (already redacted), for the message.
        secrets: strings (passwords) to mask if the driver's message contains them.
    """
    text = str(exc) or type(exc).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    message = f"{where}: {text}"
    if isinstance(
        exc,
        (
            redis.exceptions.AuthenticationError,
            redis.exceptions.AuthenticationWrongNumberOfArgsError,
            redis.exceptions.AuthorizationError,
            redis.exceptions.NoPermissionError,
        ),
    ) or any(marker in text for marker in _AUTH_MARKERS):
        return BrokerAuthError(message)
    if isinstance(exc, (redis.exceptions.TimeoutError, asyncio.TimeoutError, TimeoutError)):
        return BrokerTimeoutError(message)
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or text.startswith("OOM"):
        return BrokerOutOfMemoryError(message)
    if isinstance(exc, _CONNECTION_ERRORS) or text.startswith(_UNAVAILABLE_PREFIXES):
        return BrokerConnectionError(message)
    return BrokerError(message)


class _LoopState:
    """What a Connector keeps for one event loop."""

    __slots__ = ("client", "close", "lane")

    def __init__(self, client: AsyncRedis, close: Callable[[], Awaitable[None]]) -> None:
        self.client = client
        self.close = close
        self.lane: AnyLane | None = None

    async def aclose(self) -> None:
        try:
            if self.lane is not None:
                await self.lane.aclose()
        finally:
            await self.close()


class Connector:
    """One asyncio redis client per running event loop, created from a recipe.

    Args:
        factory: builds a fresh ``(client, close)`` pair for the running loop.
        url: the (redacted) address shown in reprs and error messages.
        is_cluster: the clients are Redis Cluster clients.
        secrets: passwords to mask in error messages.
        first: an existing client to use for the first loop that asks (the
            user's own object); it is not closed by :meth:`aclose`.
        sync_factory: builds the sync client of :meth:`sync_client` with the
            same settings as ``factory``'s (None: no blocking calls).
    """

    def __init__(
        self,
        factory: _Factory,
        *,
        url: str,
        is_cluster: bool,
        secrets: Sequence[str] = (),
        first: AsyncRedis | None = None,
        sync_factory: _SyncFactory | None = None,
    ) -> None:
        self._factory = factory
        self._sync_factory = sync_factory
        self._sync: _SyncHandle | None = None
        self._sync_lane: SyncLane | None = None
        self._sync_lane_tried = False
        self.url = url
        self.is_cluster = is_cluster
        self.secrets = tuple(s for s in secrets if s)
        self._first = first
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        # The last loop asked about and its state: one identity check on the hot path.
        self._last: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        found = self._clients.get(loop)
        if found is not None:
            self._last = (loop, found)
            return found
        with self._lock:
            found = self._clients.get(loop)
            if found is None:
                # A client may keep its loop alive; forget those of loops that ended.
                for ended in [other for other in self._clients if other.is_closed()]:
                    del self._clients[ended]
                if self._first is not None:
                    first, self._first = self._first, None
                    found = _LoopState(first, _nothing)
                else:
                    found = _LoopState(*self._factory())
                self._clients[loop] = found
            self._last = (loop, found)
            return found

    def client(self) -> AsyncRedis:
        """The client of the running event loop (created on first use)."""
        return self._state().client

    def lane(self) -> AnyLane:
        """Where the running loop's script calls go (created on first use).

        The lean lane when it can serve the loop's client (hiredis installed,
        a plain standalone or Sentinel-managed ``redis.asyncio.Redis``), else
        the client itself through :class:`~taskq.brokers.redis._lean.DriverLane`.
        """
        state = self._state()
        lane = state.lane
        if lane is None:
            client = state.client
            lane = state.lane = Lane.for_client(client) or DriverLane(client)
        elif isinstance(lane, Lane) and lane.unusable:
            lane = state.lane = lane.fallback
        return lane

    def socket_timeout(self) -> float | None:
        """The read timeout (seconds) of the running loop's client connections."""
        client = self.client()
        if isinstance(client, redis.asyncio.RedisCluster):
            kwargs: dict[str, Any] = client.get_connection_kwargs()
        else:
            kwargs = client.connection_pool.connection_kwargs
        value = kwargs.get("socket_timeout")
        return float(value) if value else None

    def sync_client(self) -> redis.Redis | None:
        """The sync client for blocking calls from any thread (made on first use).

        None when this connector has no recipe for one (Cluster, user clients).
        """
        handle = self._sync
        if handle is None:
            if self._sync_factory is None:
                return None
            with self._lock:
                handle = self._sync
                if handle is None:
                    handle = self._sync = self._sync_factory()
        return handle[0]

    def sync_lane(self) -> SyncLane | None:
        """The blocking lean lane over :meth:`sync_client`'s pool (made on first use).

        None when there is no sync client or the lane cannot serve it (no
        hiredis, a user-supplied client): blocking calls then go through
        the sync client itself.
        """
        if self._sync_lane_tried:
            return self._sync_lane
        client = self.sync_client()
        with self._lock:
            if not self._sync_lane_tried:
                self._sync_lane = None if client is None else SyncLane.for_client(client)
                self._sync_lane_tried = True
            return self._sync_lane

    async def aclose(self) -> None:
        """Close every client (and lane) this connector created. Idempotent.

        Clients of other, still running loops are closed on their own loop;
        those of loops that are gone are dropped. The sync client is closed
        too (a blocking call running in another thread at that moment may
        fail); the next blocking call makes a new one.
        """
        with self._lock:
            states = list(self._clients.items())
            self._clients.clear()
            self._last = None
            sync, self._sync = self._sync, None
            sync_lane, self._sync_lane = self._sync_lane, None
            self._sync_lane_tried = False
        if sync_lane is not None:
            sync_lane.close()
        if sync is not None:
            with contextlib.suppress(Exception):
                sync[1]()
        current = asyncio.get_running_loop()
        for loop, state in states:
            with contextlib.suppress(Exception):
                if loop is current:
                    await state.aclose()
                elif loop.is_running() and not loop.is_closed():
                    future = asyncio.run_coroutine_threadsafe(state.aclose(), loop)
                    await asyncio.wait_for(asyncio.wrap_future(future), timeout=5)


async def _nothing() -> None:
    return None


# --------------------------------------------------------------------------- URLs


def _split_hosts(netloc: str, default_port: int) -> tuple[str, list[tuple[str, int]]]:
    """Split ``[userinfo@]h1:p1,h2:p2`` into the userinfo and the (host, port) list."""
    userinfo, _, hosts = netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise InvalidArgumentError(f"invalid port {port_text!r} in the Redis URL") from None
        nodes.append((unquote(host), port))
    if not nodes:
        raise InvalidArgumentError("the Redis URL names no host")
    return userinfo, nodes


def _base_kwargs(userinfo: str, query: str, tls: bool, db: int | None) -> dict[str, Any]:
    """Connection kwargs (auth, TLS, query options) parsed as redis-py parses its URLs."""
    scheme = "rediss" if tls else "redis"
    auth = f"{userinfo}@" if userinfo else ""
    path = f"/{db}" if db is not None else ""
    kwargs: dict[str, Any] = dict(
        redis.asyncio.connection.parse_url(f"{scheme}://{auth}localhost{path}?{query}")
    )
    for key in ("host", "port", "connection_class"):
        kwargs.pop(key, None)
    if tls:
        kwargs["ssl"] = True
        kwargs.update(_verify_defaults(kwargs))
    return kwargs


def _verify_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """Certificate and host name checks for TLS unless the URL chose otherwise.

    (Older redis-py versions do not check host names by default.)
    """
    if "ssl_cert_reqs" in options or "ssl_check_hostname" in options:
        return {}
    return {"ssl_cert_reqs": "required", "ssl_check_hostname": True}


def connector_from_url(url: str) -> Connector:
    """A connector for a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``
    or ``redis+cluster://`` URL (and the ``rediss+`` variants).

    Sentinel: ``redis+sentinel://[user:pass@]h1:26379,h2:26379/<service>/<db>``;
    ``sentinel_username`` / ``sentinel_password`` query options authenticate
    to the sentinels. Cluster: ``redis+cluster://[user:pass@]h1:7000,h2:7001``.
    Other query options are redis-py's (``socket_timeout``, ``ssl_ca_certs``,
    ``ssl_cert_reqs``, ...). TLS certificates are verified unless the URL says
    ``ssl_cert_reqs=none``.

    Raises:
        InvalidArgumentError: the URL is malformed.
    """
    shown = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    password = unquote(parts.password) if parts.password else ""
    query = dict(parse_qsl(parts.query))
    secrets = [password, query.get("password", ""), query.get("sentinel_password", "")]
    try:
        if scheme in ("redis", "rediss", "unix"):
            redis.asyncio.connection.parse_url(url)  # validate now, not on first use

            tls = _verify_defaults(query) if scheme == "rediss" else {}

            def standalone() -> _Handle:
                client = redis.asyncio.Redis.from_url(url, decode_responses=False, **tls)
                return client, client.aclose

            def standalone_sync() -> _SyncHandle:
                client = redis.Redis.from_url(url, decode_responses=False, **tls)
                return client, client.close

            return Connector(
                standalone,
                url=shown,
                is_cluster=False,
                secrets=secrets,
                sync_factory=standalone_sync,
            )
        if scheme in ("redis+sentinel", "rediss+sentinel"):
            return _sentinel_connector(
                parts.netloc, parts.path, parts.query, scheme, shown, secrets
            )
        if scheme in ("redis+cluster", "rediss+cluster"):
            return _cluster_connector(parts.netloc, parts.path, parts.query, scheme, shown, secrets)
    except ValueError as exc:
        raise InvalidArgumentError(f"invalid Redis URL {shown!r}: {exc}") from None
    raise InvalidArgumentError(f"not a Redis URL: {shown!r}")


def _sentinel_connector(
    netloc: str, path: str, query: str, scheme: str, shown: str, secrets: list[str]
) -> Connector:
    userinfo, sentinels = _split_hosts(netloc, 26379)
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        raise InvalidArgumentError(
            f"a Sentinel URL needs a service name: redis+sentinel://host:26379/<service>/<db>, "
            f"got {shown!r}"
        )
    service = segments[0]
    try:
        db = int(segments[1]) if len(segments) > 1 else 0
    except ValueError:
        raise InvalidArgumentError(f"invalid database number in {shown!r}") from None
    tls = scheme.startswith("rediss")
    master_kwargs = _base_kwargs(userinfo, query, tls, db)
    sentinel_kwargs = {k: v for k, v in master_kwargs.items() if k.startswith(("socket_", "ssl"))}
    for name in ("sentinel_username", "sentinel_password"):
        value = master_kwargs.pop(name, None)
        if value:
            sentinel_kwargs[name.removeprefix("sentinel_")] = value

    def build() -> _Handle:
        return _sentinel_handle(sentinels, service, master_kwargs, sentinel_kwargs)

    def build_sync() -> _SyncHandle:
        manager = _SyncSentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(sentinels),
            sentinel_kwargs={**sentinel_kwargs, "retry": redis.retry.Retry(_NO_BACKOFF, 0)},
            **master_kwargs,
        )
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            service, redis_class=redis.Redis
        )

        def close() -> None:
            client.close()
            for node in manager.sentinels:
                node.close()

        return client, close

    return Connector(build, url=shown, is_cluster=False, secrets=secrets, sync_factory=build_sync)


# Each sentinel is asked once per discovery, with no retries of its own: the
# next sentinel is the retry, and the master connection's own Retry policy
# repeats the whole discovery. (With redis-py's default per-sentinel retries a
# group whose every sentinel refuses the TLS handshake took 11-13 s to fail.)
_NO_BACKOFF = redis.backoff.NoBackoff()


def _sentinel_address(node: Any) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


_SENTINEL_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What asking one sentinel may raise and the lookup goes on after (as redis-py's)."""


def _consider(
    manager: Any, service: str, index: int, answer: object, reasons: list[str]
) -> tuple[str, int] | None:
    """The master's address from sentinel ``index``'s answer, or None (and why in ``reasons``).

    ``answer`` is its reply to SENTINEL MASTERS or the error asking raised.
    As redis-py's ``discover_master``: a master in good state moves the
    sentinel that named it to the front; ``force_master_ip`` is honoured.
    """
    node = manager.sentinels[index]
    if isinstance(answer, BaseException):
        reasons.append(f"{_sentinel_address(node)}: {answer}")
        return None
    state = answer.get(service) if isinstance(answer, dict) else None
    if state and manager.check_master_state(state, service):
        manager.sentinels[0], manager.sentinels[index] = node, manager.sentinels[0]
        forced = getattr(manager, "_force_master_ip", None)
        return (forced if forced is not None else state["ip"]), state["port"]
    reasons.append(f"{_sentinel_address(node)}: no master {service!r} in good state")
    return None


def _no_master(service: str, reasons: list[str]) -> redis.sentinel.MasterNotFoundError:
    return redis.sentinel.MasterNotFoundError(
        f"no sentinel named a master for {service!r}: {'; '.join(reasons)}"
    )


class _AsyncSentinel(redis.asyncio.sentinel.Sentinel):
    """redis-py's Sentinel, saying why each sentinel gave no master when none did.

    redis-py 8 keeps only each error's class in its message ("network:
    ConnectionError"); this keeps its text, e.g. the certificate that failed.
    Only the asking differs from :class:`_SyncSentinel`; :func:`_consider`
    reads each answer for both.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        reasons: list[str] = []
        for index, node in enumerate(self.sentinels):
            try:
                answer: object = await node.sentinel_masters()
            except _SENTINEL_ERRORS as exc:
                answer = exc
            found = _consider(self, service_name, index, answer, reasons)
            if found is not None:
                return found
        raise _no_master(service_name, reasons)


class _SyncSentinel(redis.sentinel.Sentinel):
    """:class:`_AsyncSentinel` for the sync client."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        reasons: list[str] = []
        for index, node in enumerate(self.sentinels):
            try:
                answer: object = node.sentinel_masters()
            except _SENTINEL_ERRORS as exc:
                answer = exc
            found = _consider(self, service_name, index, answer, reasons)
            if found is not None:
                return found
        raise _no_master(service_name, reasons)


def _sentinel_handle(
    sentinels: Sequence[tuple[str, int]],
    service: str,
    master_kwargs: dict[str, Any],
    sentinel_kwargs: dict[str, Any],
) -> _Handle:
    manager = _AsyncSentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(sentinels),
        sentinel_kwargs={**sentinel_kwargs, "retry": redis.asyncio.retry.Retry(_NO_BACKOFF, 0)},
        **master_kwargs,
    )
    client = manager.master_for(service, redis_class=redis.asyncio.Redis)

    async def close() -> None:
        await client.aclose()
        await manager.aclose()

    return client, close


def _cluster_connector(
    netloc: str, path: str, query: str, scheme: str, shown: str, secrets: list[str]
) -> Connector:
    userinfo, nodes = _split_hosts(netloc, 6379)
    if path.strip("/") not in ("", "0"):
        raise InvalidArgumentError(f"Redis Cluster has only database 0: {shown!r}")
    kwargs = _base_kwargs(userinfo, query, scheme.startswith("rediss"), None)
    kwargs.pop("db", None)
    return Connector(
        lambda: _cluster_handle(nodes, kwargs), url=shown, is_cluster=True, secrets=secrets
    )


def _cluster_handle(nodes: Sequence[tuple[str, int]], kwargs: dict[str, Any]) -> _Handle:
    accepted = _parameters(redis.asyncio.RedisCluster)
    client = redis.asyncio.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes],
        decode_responses=False,
        **{k: v for k, v in kwargs.items() if k in accepted and k != "decode_responses"},
    )
    return client, client.aclose


# --------------------------------------------------------------------------- user clients


def _parameters(cls: type) -> set[str]:
    """Keyword parameters accepted by ``cls.__init__`` or any base's ``__init__``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        with contextlib.suppress(TypeError, ValueError):
            for param in inspect.signature(init).parameters.values():
                if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                    names.add(param.name)
    names.discard("self")
    return names


# Sync driver objects that cannot move to another loop or another module.
_NOT_PORTABLE = ("retry", "connection_pool", "redis_connect_func", "event_dispatcher")

_ASYNC_CONNECTION = {
    redis.connection.Connection: redis.asyncio.connection.Connection,
    redis.connection.SSLConnection: redis.asyncio.connection.SSLConnection,
    redis.connection.UnixDomainSocketConnection: (
        redis.asyncio.connection.UnixDomainSocketConnection
    ),
}


def _portable(kwargs: dict[str, Any], accepted: set[str]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k in accepted and k not in _NOT_PORTABLE}


def _check_bytes(kwargs: dict[str, Any]) -> None:
    if kwargs.get("decode_responses"):
        raise InvalidArgumentError(
            "RedisBroker needs a client with decode_responses=False (results are raw bytes)"
        )


def _secrets_of(kwargs: dict[str, Any]) -> list[str]:
    return [str(kwargs.get("password") or "")]


def _shown(kind: str, kwargs: dict[str, Any], where: str) -> str:
    user = kwargs.get("username") or ""
    auth = f"{user}:***@" if kwargs.get("password") else (f"{user}@" if user else "")
    return f"{kind}://{auth}{where}"


def connector_from_client(client: object, *, service_name: str | None = None) -> Connector:
    """A connector built from a redis-py client object the user already has.

    Args:
        client: ``redis.asyncio.Redis`` / ``RedisCluster`` (used as is on the
            first loop, cloned for others), a sync ``redis.Redis`` /
            ``redis.cluster.RedisCluster`` (converted to asyncio clients with
            the same settings), a Sentinel-managed client from
            ``Sentinel.master_for``, a ``Sentinel`` (with ``service_name``), or
            a zero-argument callable returning a ``redis.asyncio`` client.
        service_name: the master's service name, for a ``Sentinel`` object.

    Raises:
        InvalidArgumentError: the object is not a supported client, uses
            ``decode_responses=True``, or a Sentinel comes without a service name.
    """
    if isinstance(client, redis.asyncio.RedisCluster):
        return _from_async_cluster(client)
    if isinstance(client, redis.asyncio.Redis):
        return _from_async_redis(client)
    if isinstance(client, redis.cluster.RedisCluster):
        return _from_sync_cluster(client)
    if isinstance(client, redis.Redis):
        return _from_sync_redis(client)
    if isinstance(client, (redis.sentinel.Sentinel, redis.asyncio.sentinel.Sentinel)):
        if not service_name:
            raise InvalidArgumentError("a Sentinel object needs service_name='<master name>'")
        return _from_sentinel(client, service_name)
    if callable(client):
        return _from_factory(client)
    raise InvalidArgumentError(
        f"RedisBroker takes a URL or a redis-py client, not {type(client).__name__}"
    )


def _from_factory(factory: Callable[[], object]) -> Connector:
    def build() -> _Handle:
        made = factory()
        if not isinstance(made, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            raise InvalidArgumentError(
                "a RedisBroker client factory must return a redis.asyncio client, "
                f"not {type(made).__name__}"
            )
        return made, made.aclose

    return Connector(build, url="redis (client factory)", is_cluster=False)


def _sentinel_parts(
    manager: redis.sentinel.Sentinel | redis.asyncio.sentinel.Sentinel,
) -> tuple[list[tuple[str, int]], dict[str, Any], dict[str, Any]]:
    sentinels = []
    for node in manager.sentinels:
        node_kwargs = node.connection_pool.connection_kwargs
        sentinels.append((str(node_kwargs["host"]), int(node_kwargs["port"])))
    accepted = _parameters(redis.asyncio.connection.SSLConnection) | {"ssl"}
    master_kwargs = _portable(dict(manager.connection_kwargs), accepted)
    sentinel_kwargs = _portable(dict(manager.sentinel_kwargs), accepted)
    return sentinels, master_kwargs, sentinel_kwargs


def _from_sentinel(
    manager: redis.sentinel.Sentinel | redis.asyncio.sentinel.Sentinel, service: str
) -> Connector:
    sentinels, master_kwargs, sentinel_kwargs = _sentinel_parts(manager)
    _check_bytes(master_kwargs)
    hosts = ",".join(f"{h}:{p}" for h, p in sentinels)
    return Connector(
        lambda: _sentinel_handle(sentinels, service, master_kwargs, sentinel_kwargs),
        url=_shown("redis+sentinel", master_kwargs, f"{hosts}/{service}"),
        is_cluster=False,
        secrets=_secrets_of(master_kwargs),
    )


def _from_pool(pool: Any, first: redis.asyncio.Redis | None) -> Connector:
    kwargs = dict(pool.connection_kwargs)
    _check_bytes(kwargs)
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        connector = _from_sentinel(manager, pool.service_name)
        connector._first = first
        return connector
    connection_class = _ASYNC_CONNECTION.get(pool.connection_class, pool.connection_class)
    if not issubclass(connection_class, redis.asyncio.connection.AbstractConnection):
        raise InvalidArgumentError(
            f"cannot run {pool.connection_class.__name__} connections on asyncio; "
            "pass a redis.asyncio client instead"
        )
    kwargs = {k: v for k, v in kwargs.items() if k not in _NOT_PORTABLE}
    if first is None:
        # A sync pool's settings must fit the asyncio connection class.
        kwargs = _portable(kwargs, _parameters(connection_class))

    def build() -> _Handle:
        new_pool = redis.asyncio.ConnectionPool(connection_class=connection_class, **kwargs)
        client = redis.asyncio.Redis.from_pool(new_pool)
        return client, client.aclose

    where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    kind = (
        "unix"
        if "path" in kwargs
        else (
            "rediss"
            if issubclass(connection_class, redis.asyncio.connection.SSLConnection)
            else "redis"
        )
    )
    return Connector(
        build,
        url=_shown(kind, kwargs, f"{where}/{kwargs.get('db', 0)}"),
        is_cluster=False,
        secrets=_secrets_of(kwargs),
        first=first,
    )


def _from_async_redis(client: redis.asyncio.Redis) -> Connector:
    return _from_pool(client.connection_pool, client)


def _from_sync_redis(client: redis.Redis) -> Connector:
    return _from_pool(client.connection_pool, None)


def _cluster_from(
    nodes: list[tuple[str, int]], kwargs: dict[str, Any], first: redis.asyncio.RedisCluster | None
) -> Connector:
    _check_bytes(kwargs)
    connection_class = kwargs.pop("connection_class", None)
    if connection_class is not None and issubclass(
        connection_class, (redis.connection.SSLConnection, redis.asyncio.connection.SSLConnection)
    ):
        kwargs["ssl"] = True
    kwargs = _portable(kwargs, _parameters(redis.asyncio.RedisCluster))
    hosts = ",".join(f"{h}:{p}" for h, p in nodes)
    return Connector(
        lambda: _cluster_handle(nodes, kwargs),
        url=_shown("redis+cluster", kwargs, hosts),
        is_cluster=True,
        secrets=_secrets_of(kwargs),
        first=first,
    )


def _from_async_cluster(client: redis.asyncio.RedisCluster) -> Connector:
    nodes = [(n.host, int(n.port)) for n in client.get_nodes()]
    if not nodes:
        nodes = [(n.host, int(n.port)) for n in client.nodes_manager.startup_nodes.values()]
    return _cluster_from(nodes, dict(client.get_connection_kwargs()), client)


def _from_sync_cluster(client: redis.cluster.RedisCluster) -> Connector:
    nodes = [(str(n.host), int(n.port)) for n in client.get_nodes()]  # type: ignore[no-untyped-call]
    return _cluster_from(nodes, dict(client.nodes_manager.connection_kwargs), None)
