"""Real Redis servers for tests: standalone, Cluster and Sentinel, as pytest fixtures.

Opt in from a ``conftest.py``::

    pytest_plugins = ["taskq.testing.servers"]

    async def test_roundtrip(redis_server):
        broker = taskq.connect(redis_server.url)
        ...

Fixtures (each returns an object with ``.url`` — a URL for
:func:`taskq.connect` — ports, pids and ``stop()``, ``kill()``, ``restart()``,
``flushall()``):

``redis_server`` (session)
    one standalone server; :class:`RedisServer`, or :class:`ExternalRedis`
    when ``TASKQ_TEST_REDIS_URL`` names a server to use instead.
``redis_cluster`` (session)
    a :class:`RedisCluster` of 3 masters and 3 replicas.
``redis_sentinel`` (session)
    a :class:`RedisSentinel` group: 1 master, 1 replica, 3 sentinels
    (service ``mymaster``, quorum 2).
``redis_server_factory`` (function)
    a :class:`RedisServerFactory`: ``redis_server_factory(aof=True,
    password=..., tls=...)`` starts a private server that the test may kill or
    restart; every server it started is stopped when the test ends.
``redis_tls_files`` (session)
    a :class:`TLSFiles` set (CA, server and client certificates) made with
    the ``openssl`` CLI.

Servers are started at most once per session, on free loopback ports (never
6379), bound to 127.0.0.1, each in its own temporary directory, without
persistence unless asked for; they are stopped by pid at teardown (SIGTERM,
then SIGKILL after a bound). They come from, in order: ``TASKQ_TEST_REDIS_URL``
(standalone only), the ``redis-server`` binary on ``PATH``, or Docker through
testcontainers (best effort). When none is available the test is skipped —
or fails when the environment variable ``CI`` is ``true``, so a CI run cannot
silently test nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit

import attrs
import pytest

from taskq.testing._proc import DockerLauncher, Launcher, LocalLauncher, ProcessHandle, free_port
from taskq.testing._resp import Reply, RespConnection, RespError, info_fields, pairs, text

__all__ = [
    "ExternalRedis",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "RedisServerFactory",
    "RedisUser",
    "ServerStartError",
    "TLSFiles",
    "find_launcher",
    "make_tls_files",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "redis_server_factory",
    "redis_tls_files",
    "require_launcher",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_POLL = 0.02
T = TypeVar("T")


class ServerStartError(RuntimeError):
    """A server did not come up (or a topology did not settle) within its bound."""


def _wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns a value other than None/False, or time out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except (OSError, RespError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ServerStartError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(_POLL)


# --------------------------------------------------------------------------- TLS


@attrs.frozen
class TLSFiles:
    """Certificates for a TLS test server, all PEM files in one directory.

    ``server_cert`` is valid for ``127.0.0.1`` and ``localhost``; the client
    pair is for mutual TLS. All are signed by ``ca_cert``.
    """

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise ServerStartError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a CA and a server and client certificate it signed, with the ``openssl`` CLI.

    Raises:
        ServerStartError: ``openssl`` failed.
        FileNotFoundError: ``openssl`` is not installed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        directory,
        *("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3"),
        *("-subj", "/CN=taskq test CA"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    for name, usage, san in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
        ("client", "clientAuth", ""),
    ):
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\nauthorityKeyIdentifier=keyid,issuer\n{san}"
        )
        _openssl(
            directory,
            *("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr"),
            *("-subj", f"/CN=taskq test {name}"),
        )
        _openssl(
            directory,
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "3", "-out", f"{name}.crt", "-extfile", f"{name}.ext"),
        )
    return TLSFiles(
        directory=directory,
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


# --------------------------------------------------------------------------- servers


@attrs.frozen
class RedisUser:
    """An ACL user configured on a :class:`RedisServer` (survives restarts).

    ``rules`` is the ACL rule list after the password, e.g.
    ``"~taskq:* +@read +@write"``.
    """

    name: str
    password: str
    rules: str

    def __repr__(self) -> str:
        return f"RedisUser(name={self.name!r}, password='***', rules={self.rules!r})"


class RedisServer:
    """One ``redis-server`` (or Sentinel) process on a loopback port.

    Configuration goes to ``redis.conf`` in ``workdir`` (mode 0600, so
    passwords are never on a command line), the log to ``redis.log``.

    Args:
        launcher: where the process runs (see :func:`find_launcher`).
        workdir: its own directory (``dir``, config, log, AOF).
        port: a fixed port (for a restart); default: a free one.
        aof: turn on the append-only file with ``appendfsync always``.
        password: ``requirepass`` for the default user.
        users: extra ACL users.
        tls: serve TLS only (``tls-port``; the plain port is closed);
            client certificates are optional.
        unix_socket: also listen on ``workdir/redis.sock``.
        config: extra ``redis.conf`` lines.
        sentinel: run as a Sentinel (``redis-server redis.conf --sentinel``).
        cluster_bus: reserve ``port + 10000`` too (Cluster nodes).
    """

    def __init__(
        self,
        launcher: Launcher,
        workdir: Path,
        *,
        port: int | None = None,
        aof: bool = False,
        password: str | None = None,
        users: Sequence[RedisUser] = (),
        tls: TLSFiles | None = None,
        unix_socket: bool = False,
        config: Sequence[str] = (),
        sentinel: bool = False,
        cluster_bus: bool = False,
    ) -> None:
        self.launcher = launcher
        self.workdir = workdir
        self.aof = aof
        self.password = password
        self.users = tuple(users)
        self.tls = tls
        self.unix_socket = unix_socket
        self.config = tuple(config)
        self.sentinel = sentinel
        self._bus_offset = 10000 if cluster_bus else None
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(bus_offset=self._bus_offset)
        self._handle: ProcessHandle | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    # -- identity

    @property
    def host(self) -> str:
        """The address it binds: always ``127.0.0.1``."""
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (HOST, self.port)

    @property
    def ports(self) -> tuple[int, ...]:
        """Every port it listens on."""
        return (self.port,)

    @property
    def pid(self) -> int | None:
        """The process id while running (None when stopped or in a container)."""
        return self._handle.pid if self._handle is not None else None

    @property
    def pids(self) -> tuple[int, ...]:
        """``(pid,)`` while running, else ``()``."""
        return (self.pid,) if self.pid is not None else ()

    @property
    def socket_path(self) -> Path:
        """The unix socket path (listened on only with ``unix_socket=True``)."""
        return self.workdir / "redis.sock"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.workdir / "redis.log"

    @property
    def url(self) -> str:
        """A ``redis://`` (or ``rediss://`` with the CA) URL, with the default user's password."""
        return self.url_for(None, self.password)

    @property
    def unix_url(self) -> str:
        """A ``unix://`` URL for the socket (with the default user's password)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    def url_for(
        self, username: str | None, password: str | None, *, db: int = 0, with_ca: bool = True
    ) -> str:
        """A URL authenticating as ``username`` (None: the default user) with ``password``.

        With TLS, ``with_ca`` adds ``ssl_ca_certs`` so the server certificate
        verifies; without it the client relies on the system trust store.
        """
        scheme = "rediss" if self.tls else "redis"
        auth = _userinfo(username, password)
        query = f"?ssl_ca_certs={quote(str(self.tls.ca_cert))}" if self.tls and with_ca else ""
        return f"{scheme}://{auth}{HOST}:{self.port}/{db}{query}"

    def __repr__(self) -> str:
        state = self._handle.ident if self._handle is not None else "stopped"
        kind = "sentinel" if self.sentinel else "redis"
        return f"RedisServer({kind} {HOST}:{self.port}, {state})"

    # -- lifecycle

    def _config_lines(self) -> list[str]:
        lines = [
            f"bind {HOST}",
            f"dir {self.workdir}",
            f"logfile {self.log_path}",
            f"pidfile {self.workdir / 'redis.pid'}",
        ]
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {self.tls.server_cert}",
                f"tls-key-file {self.tls.server_key}",
                f"tls-ca-cert-file {self.tls.ca_cert}",
                "tls-auth-clients optional",
            ]
        else:
            lines.append(f"port {self.port}")
        if not self.sentinel:
            # No replica should wait for company before its initial sync.
            lines += ['save ""', "repl-diskless-sync-delay 0"]
            lines.append(f"appendonly {'yes' if self.aof else 'no'}")
            if self.aof:
                lines.append("appendfsync always")
        if self.unix_socket:
            lines += [f"unixsocket {self.socket_path}", "unixsocketperm 700"]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        lines += [f"user {u.name} on >{u.password} {u.rules}" for u in self.users]
        return lines + list(self.config)

    def _write_config(self) -> Path:
        path = self.workdir / "redis.conf"
        # A Sentinel rewrites its own config (its discovered state lives
        # there), so an existing one is kept across restarts.
        if self.sentinel and path.exists():
            return path
        path.touch(mode=0o600)
        path.write_text("\n".join(self._config_lines()) + "\n")
        return path

    def launch(self) -> None:
        """Start the process without waiting for it to accept connections."""
        if self._handle is not None and self._handle.running():
            return
        conf = self._write_config()
        args = [str(conf), "--sentinel"] if self.sentinel else [str(conf)]
        self._handle = self.launcher.spawn(args, self.workdir)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until it answers PING (data loaded).

        Raises:
            ServerStartError: it exited or did not answer within ``timeout`` seconds.
        """

        def ready() -> bool:
            if self._handle is None or not self._handle.running():
                raise ServerStartError(f"{self!r} exited:\n{self.log_tail()}")
            try:
                return self.call("PING") == b"PONG"
            except RespError as exc:
                if str(exc).startswith("LOADING"):
                    return False
                raise

        try:
            _wait_for(f"{self!r} to accept connections", ready, timeout)
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}\n{self.log_tail()}") from None

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the process and wait until it is ready.

        A port taken by someone else between choosing and binding it is
        replaced by another free one (unless the port was fixed).

        Raises:
            ServerStartError: it did not come up.
        """
        for _ in range(3):
            self.launch()
            try:
                self.wait_ready(timeout)
                return
            except ServerStartError as exc:
                self.kill()
                if self._fixed_port or "Address already in use" not in str(exc):
                    raise
                self.port = free_port(bus_offset=self._bus_offset)
        raise ServerStartError(f"could not find a free port for {self!r}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop it: SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        if self._handle is not None:
            self._handle.terminate(timeout)
            self._handle = None

    def kill(self) -> None:
        """SIGKILL it (a crash: no shutdown save). Idempotent."""
        if self._handle is not None:
            self._handle.kill()
            self._handle = None

    def restart(self, *, kill: bool = True, down_for: float = 0.0) -> None:
        """Stop it (SIGKILL by default, else SIGTERM) and start it again on the same port and dir.

        Args:
            kill: crash it rather than shut it down gracefully.
            down_for: seconds to stay down before starting again.
        """
        if kill:
            self.kill()
        else:
            self.stop()
        if down_for:
            time.sleep(down_for)
        fixed, self._fixed_port = self._fixed_port, True
        try:
            self.start()
        finally:
            self._fixed_port = fixed

    def running(self) -> bool:
        """Whether the process is alive."""
        return self._handle is not None and self._handle.running()

    # -- commands

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting the test CA and presenting the client certificate.

        The certificate lets admin connections in when the server requires
        mutual TLS (``tls-auth-clients yes``).
        """
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        context.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        return context

    def connect(self, timeout: float = 2.0) -> RespConnection:
        """An admin connection (as the default user).

        Raises:
            OSError: it cannot be reached.
        """
        return RespConnection(
            HOST, self.port, timeout=timeout, ssl_context=self.ssl_context(), password=self.password
        )

    def call(self, *args: str | int | bytes) -> Reply:
        """Run one command on a fresh admin connection and return the reply.

        Raises:
            RespError: the server answered with an error.
            OSError: it cannot be reached.
        """
        with self.connect() as conn:
            return conn.call(*args)

    def info(self, section: str = "replication") -> dict[str, str]:
        """``INFO <section>`` as a dict."""
        return info_fields(self.call("INFO", section))

    def flushall(self) -> None:
        """Delete every key (scripts stay cached)."""
        self.call("FLUSHALL")


class ExternalRedis:
    """A standalone server this session did not start (``TASKQ_TEST_REDIS_URL``).

    It can be flushed (``FLUSHDB`` of the URL's database) but not stopped or
    restarted: tests that need that use :class:`RedisServerFactory`, which
    always starts its own servers.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("TASKQ_TEST_REDIS_URL must be a redis:// or rediss:// URL")
        self.url = url
        self.host = parts.hostname or HOST
        self.port = parts.port or 6379
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._db = int(parts.path.strip("/") or 0)
        self._tls = parts.scheme == "rediss"

    @property
    def ports(self) -> tuple[int, ...]:
        """``(port,)``."""
        return (self.port,)

    @property
    def pids(self) -> tuple[int, ...]:
        """Always ``()``: not ours."""
        return ()

    def __repr__(self) -> str:
        return f"ExternalRedis({self.host}:{self.port}/{self._db})"

    def call(self, *args: str | int | bytes) -> Reply:
        """Run one command (after ``SELECT`` of the URL's database)."""
        context = ssl.create_default_context() if self._tls else None
        with RespConnection(
            self.host,
            self.port,
            ssl_context=context,
            username=self._username,
            password=self._password,
        ) as conn:
            conn.call("SELECT", self._db)
            return conn.call(*args)

    def flushall(self) -> None:
        """``FLUSHDB`` the URL's database (never the server's other databases)."""
        self.call("FLUSHDB")

    def stop(self) -> NoReturn:
        """Not possible: skips the calling test."""
        pytest.skip("an external TASKQ_TEST_REDIS_URL server cannot be stopped")

    def kill(self) -> NoReturn:
        """Not possible: skips the calling test."""
        pytest.skip("an external TASKQ_TEST_REDIS_URL server cannot be killed")

    def restart(self) -> NoReturn:
        """Not possible: skips the calling test."""
        pytest.skip("an external TASKQ_TEST_REDIS_URL server cannot be restarted")


def _userinfo(username: str | None, password: str | None) -> str:
    """The ``user:password@`` part of a URL (quoted), "" without a password."""
    if password is None:
        return ""
    return f"{quote(username or '', safe='')}:{quote(password, safe='')}@"


def _stop_all(servers: Sequence[RedisServer]) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


def _tls_link_config(tls: TLSFiles | None) -> list[str]:
    """``redis.conf`` lines for TLS on the links a server opens to others (replication)."""
    if tls is None:
        return []
    # The server on the other end checks the certificate of such a link as a
    # client's: present the client pair, not the server one (serverAuth only).
    return [
        "tls-replication yes",
        f"tls-client-cert-file {tls.client_cert}",
        f"tls-client-key-file {tls.client_key}",
    ]


class RedisCluster:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each.

    Built with ``redis-cli --cluster create ... --cluster-replicas N
    --cluster-yes``; ``cluster-node-timeout`` defaults to 2000 ms so a
    failover takes a few seconds.

    Args:
        launcher: where the nodes run (see :func:`find_launcher`).
        workdir: the parent of the nodes' directories.
        masters: how many masters.
        replicas: replicas per master.
        node_timeout: ``cluster-node-timeout`` in milliseconds.
        tls: serve TLS only on every node, with TLS on the cluster bus and
            for replication too (``tls-cluster``, ``tls-replication``).
        users: ACL users on every node (the default user stays open to
            the admin connections and ``redis-cli``).
    """

    def __init__(
        self,
        launcher: Launcher,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout: int = 2000,
        tls: TLSFiles | None = None,
        users: Sequence[RedisUser] = (),
    ) -> None:
        self.launcher = launcher
        self.replicas = replicas
        self.tls = tls
        self.users = tuple(users)
        cluster_conf = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {node_timeout}",
        ]
        if tls is not None:
            cluster_conf += ["tls-cluster yes", *_tls_link_config(tls)]
        self.nodes = [
            RedisServer(
                launcher,
                workdir / f"node{i}",
                users=users,
                tls=tls,
                config=cluster_conf,
                cluster_bus=True,
            )
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """``redis+cluster://`` (``rediss+cluster://`` with the CA) with every node as a seed."""
        return self.url_for(None, None)

    def url_for(self, username: str | None, password: str | None, *, with_ca: bool = True) -> str:
        """A Cluster URL authenticating as ``username`` (None: the default user) with ``password``.

        With TLS, ``with_ca`` adds ``ssl_ca_certs`` so the nodes' certificates
        verify; without it the client relies on the system trust store.
        """
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        auth = _userinfo(username, password)
        hosts = ",".join(f"{HOST}:{n.port}" for n in self.nodes)
        query = f"/?ssl_ca_certs={quote(str(self.tls.ca_cert))}" if self.tls and with_ca else ""
        return f"{scheme}://{auth}{hosts}{query}"

    @property
    def ports(self) -> tuple[int, ...]:
        """The data ports of all nodes."""
        return tuple(n.port for n in self.nodes)

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids of the running nodes."""
        return tuple(p for n in self.nodes for p in n.pids)

    def __repr__(self) -> str:
        return f"RedisCluster(ports={list(self.ports)})"

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, create the cluster and wait until it is healthy.

        Raises:
            ServerStartError: a node did not start or the cluster did not settle.
        """
        try:
            for node in self.nodes:
                node.start()
            code, output = self.launcher.run_cli(
                [
                    *self._cli_tls_args(),
                    "--cluster",
                    "create",
                    *(f"{HOST}:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                timeout=timeout,
            )
            if code != 0:
                raise ServerStartError(f"redis-cli --cluster create failed:\n{output}")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _cli_tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        tls = self.tls
        return [
            *("--tls", "--cacert", str(tls.ca_cert)),
            *("--cert", str(tls.client_cert), "--key", str(tls.client_key)),
        ]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node sees all slots served and every replica is in sync.

        Raises:
            ServerStartError: not healthy within ``timeout`` seconds.
        """

        def healthy() -> bool:
            for node in self.nodes:
                state = info_fields(node.call("CLUSTER", "INFO"))
                if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                    return False
                repl = node.info()
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            return True

        _wait_for(f"{self!r} to become healthy", healthy, timeout)

    def masters(self) -> list[RedisServer]:
        """The nodes that are masters now."""
        return [n for n in self.nodes if n.running() and n.info().get("role") == "master"]

    def key_slot(self, key: str) -> int:
        """The hash slot of ``key`` (``CLUSTER KEYSLOT``)."""
        reply = self.nodes[0].call("CLUSTER", "KEYSLOT", key)
        assert isinstance(reply, int)
        return reply

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node serving ``slot`` now (``CLUSTER SHARDS`` of a live node).

        Raises:
            LookupError: no master serves it.
        """
        live = next(n for n in self.nodes if n.running())
        reply = live.call("CLUSTER", "SLOTS")
        for entry in reply if isinstance(reply, list) else []:
            assert isinstance(entry, list)
            start, end, master = entry[0], entry[1], entry[2]
            assert isinstance(start, int) and isinstance(end, int) and isinstance(master, list)
            if start <= slot <= end:
                port = master[1]
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def flushall(self) -> None:
        """Delete every key on every master (replicas follow)."""
        for node in self.masters():
            node.flushall()

    def stop(self) -> None:
        """Stop every node. Idempotent."""
        _stop_all(self.nodes)


class RedisSentinel:
    """A Sentinel-monitored group: a master, its replicas and the sentinels watching them.

    The service is ``mymaster``; sentinels use ``down-after-milliseconds``
    2000 and a short ``failover-timeout`` so a failover completes in seconds.

    Args:
        tls: serve TLS only on the data nodes and the sentinels, with TLS
            for replication and for the sentinels' links to the data nodes.
        users: ACL users on the data nodes (not on the sentinels; the
            default user stays open to the sentinels and admin connections).
    """

    service = "mymaster"

    def __init__(
        self,
        launcher: Launcher,
        workdir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after: int = 2000,
        failover_timeout: int = 4000,
        tls: TLSFiles | None = None,
        users: Sequence[RedisUser] = (),
    ) -> None:
        self.launcher = launcher
        self.quorum = quorum
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.tls = tls
        self.users = tuple(users)
        self._tls_conf = _tls_link_config(tls)
        self.servers = [
            RedisServer(launcher, workdir / f"data{i}", tls=tls, users=users, config=self._tls_conf)
            for i in range(1 + replicas)
        ]
        self.sentinels = [
            RedisServer(launcher, workdir / f"sentinel{i}", sentinel=True, tls=tls)
            for i in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """``redis+sentinel://h:p,h:p,h:p/mymaster/0`` (``rediss+`` with the CA under TLS)."""
        return self.url_for(None, None)

    def url_for(self, username: str | None, password: str | None, *, with_ca: bool = True) -> str:
        """A Sentinel URL authenticating to the master as ``username`` with ``password``.

        With TLS, ``with_ca`` adds ``ssl_ca_certs`` (for the sentinels and the
        master) so the certificates verify.
        """
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        auth = _userinfo(username, password)
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        query = f"?ssl_ca_certs={quote(str(self.tls.ca_cert))}" if self.tls and with_ca else ""
        return f"{scheme}://{auth}{hosts}/{self.service}/0{query}"

    @property
    def ports(self) -> tuple[int, ...]:
        """Data ports, then sentinel ports."""
        return tuple(s.port for s in self.servers + self.sentinels)

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids of the running processes."""
        return tuple(p for s in self.servers + self.sentinels for p in s.pids)

    def __repr__(self) -> str:
        return (
            f"RedisSentinel(data={[s.port for s in self.servers]}, "
            f"sentinels={[s.port for s in self.sentinels]})"
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the data nodes and the sentinels; wait until every sentinel sees the group.

        Raises:
            ServerStartError: something did not come up in time.
        """
        first, *replicas = self.servers
        try:
            first.start()
            # The replicas' and sentinels' configs name the master's final port.
            for replica in replicas:
                replica.config = (*self._tls_conf, f"replicaof {HOST} {first.port}")
                replica.start()
            for sentinel in self.sentinels:
                sentinel.config = (
                    *self._tls_conf,
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {self.service} {HOST} {first.port} {self.quorum}",
                    f"sentinel down-after-milliseconds {self.service} {self.down_after}",
                    f"sentinel failover-timeout {self.service} {self.failover_timeout}",
                    f"sentinel parallel-syncs {self.service} 1",
                )
                sentinel.start()
            self.wait_stable(timeout, sentinel_views=False)
        except BaseException:
            self.stop()
            raise

    def master_address(self) -> tuple[str, int]:
        """The master's address as the first answering sentinel reports it.

        Raises:
            ServerStartError: no sentinel answers.
        """

        def ask() -> tuple[str, int] | None:
            for sentinel in self.sentinels:
                if not sentinel.running():
                    continue
                with contextlib.suppress(OSError, RespError):
                    reply = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                    if isinstance(reply, list) and len(reply) == 2:
                        return (text(reply[0]), int(text(reply[1])))
            return None

        return _wait_for("a sentinel to name the master", ask, 5.0)

    @property
    def master(self) -> RedisServer:
        """The data node that is master now."""
        port = self.master_address()[1]
        return next(s for s in self.servers if s.port == port)

    @property
    def replicas(self) -> list[RedisServer]:
        """The data nodes that are replicas now."""
        port = self.master_address()[1]
        return [s for s in self.servers if s.port != port]

    def _stable(self, sentinel_views: bool) -> bool:
        master = self.master
        if master.info().get("role") != "master":
            return False
        replica_ports = {s.port for s in self.servers} - {master.port}
        for replica in self.servers:
            if replica.port == master.port:
                continue
            repl = replica.info()
            if (
                repl.get("master_port") != str(master.port)
                or repl.get("master_link_status") != "up"
            ):
                return False
        for sentinel in self.sentinels:
            reply = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            if not isinstance(reply, list) or text(reply[1]) != str(master.port):
                return False
            if not sentinel_views:
                continue
            seen = sentinel.call("SENTINEL", "REPLICAS", self.service)
            good = {
                int(d["port"])
                for d in map(pairs, seen if isinstance(seen, list) else [])
                if d.get("flags") == "slave" and d.get("master-link-status") == "ok"
            }
            if good != replica_ports:
                return False
            others = sentinel.call("SENTINEL", "SENTINELS", self.service)
            if not isinstance(others, list) or len(others) < len(self.sentinels) - 1:
                return False
        return True

    def wait_stable(self, timeout: float = 30.0, *, sentinel_views: bool = True) -> None:
        """Wait until the sentinels agree on the master and every replica is in sync with it.

        Args:
            timeout: seconds.
            sentinel_views: also wait until every sentinel sees each replica
                as healthy and has met the other sentinels, which a
                ``SENTINEL FAILOVER`` needs. Sentinels refresh their view of a
                replica only every 10 s, so this can take that long.

        Raises:
            ServerStartError: not stable within ``timeout``.
        """
        _wait_for(f"{self!r} to settle", lambda: self._stable(sentinel_views), timeout)

    def failover(self, *, graceful: bool = True, timeout: float = 30.0) -> RedisServer:
        """Run ``SENTINEL FAILOVER mymaster``; return the new master once all agree.

        Sentinel replication is asynchronous and, after a manual failover, a
        sentinel demotes the old master only some 8 s after the promotion: a
        write the old master acknowledges in between is lost. ``graceful``
        (the default) closes that window as Redis's own ``FAILOVER`` command
        does: the old master refuses writes (``min-replicas-to-write`` above
        its replica count, so clients get ``NOREPLICAS`` errors, never an
        acknowledgement) until its replicas have caught up; once the new
        master is promoted it is demoted at once (``REPLICAOF`` the new one)
        and its clients are disconnected so they rediscover the master.

        Raises:
            ServerStartError: the failover did not complete within ``timeout``.
        """
        self.wait_stable(timeout)
        old = self.master
        if graceful:
            old.call("CONFIG", "SET", "min-replicas-to-write", str(len(self.servers)))
        try:
            if graceful:
                target = int(old.info()["master_repl_offset"])
                _wait_for(
                    "the replicas to catch up",
                    lambda: all(
                        int(r.info().get("slave_repl_offset", -1)) >= target for r in self.replicas
                    ),
                    timeout,
                )
            self.sentinels[0].call("SENTINEL", "FAILOVER", self.service)
            new = _wait_for("the sentinels to name a new master", self._promoted(old), timeout)
            if graceful:
                old.call("REPLICAOF", HOST, new.port)
                old.call("CLIENT", "KILL", "TYPE", "normal")
        finally:
            if graceful:
                with contextlib.suppress(OSError, RespError):
                    old.call("CONFIG", "SET", "min-replicas-to-write", "0")
        self.wait_stable(timeout, sentinel_views=False)
        return new

    def _promoted(self, old: RedisServer) -> Callable[[], RedisServer | None]:
        def check() -> RedisServer | None:
            new = self.master
            if new is old or new.info().get("role") != "master":
                return None
            return new

        return check

    def flushall(self) -> None:
        """Delete every key on the current master (replicas follow)."""
        self.master.flushall()

    def stop(self) -> None:
        """Stop the sentinels, then the data nodes. Idempotent."""
        _stop_all(self.sentinels + self.servers)


# --------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def find_launcher() -> Launcher | None:
    """The first available source of servers: ``redis-server`` on PATH, else Docker."""
    return LocalLauncher.find() or DockerLauncher.find()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_launcher(what: str) -> Launcher:
    """Return :func:`find_launcher`'s launcher, or skip the test (fail it under ``CI=true``)."""
    launcher = find_launcher()
    if launcher is None:
        reason = (
            f"{what} needs redis-server on PATH or Docker with testcontainers "
            "(or TASKQ_TEST_REDIS_URL for a standalone server)"
        )
        if _in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return launcher


class RedisServerFactory:
    """Starts private standalone servers for one test and stops them all afterwards.

    Call it with :class:`RedisServer`'s keyword arguments::

        server = redis_server_factory(aof=True, password=secret)
    """

    def __init__(self, launcher: Launcher, root: Path) -> None:
        self._launcher = launcher
        self._root = root
        self._started: list[RedisServer] = []

    def __call__(
        self,
        *,
        aof: bool = False,
        password: str | None = None,
        users: Sequence[RedisUser] = (),
        tls: TLSFiles | None = None,
        unix_socket: bool = False,
        config: Sequence[str] = (),
    ) -> RedisServer:
        """Start a server and wait until it is ready.

        Raises:
            ServerStartError: it did not come up.
        """
        server = RedisServer(
            self._launcher,
            Path(tempfile.mkdtemp(prefix="redis-", dir=self._root)),
            aof=aof,
            password=password,
            users=users,
            tls=tls,
            unix_socket=unix_socket,
            config=config,
        )
        self._started.append(server)
        server.start()
        return server

    def stop_all(self) -> None:
        """Stop every server this factory started."""
        _stop_all(self._started)


# --------------------------------------------------------------------------- fixtures


_Topology = TypeVar("_Topology", RedisServer, RedisCluster, RedisSentinel)


def _running(topology: _Topology) -> Iterator[_Topology]:
    """Start ``topology``, yield it, and stop it when the fixture is torn down."""
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | ExternalRedis]:
    """A standalone Redis for the whole session (``TASKQ_TEST_REDIS_URL`` if set)."""
    external = os.environ.get("TASKQ_TEST_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    launcher = require_launcher("redis_server")
    yield from _running(RedisServer(launcher, tmp_path_factory.mktemp("redis")))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-master, 3-replica Redis Cluster for the whole session."""
    launcher = require_launcher("redis_cluster")
    yield from _running(RedisCluster(launcher, tmp_path_factory.mktemp("cluster")))


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A Sentinel group (1 master, 1 replica, 3 sentinels) for the whole session."""
    launcher = require_launcher("redis_sentinel")
    yield from _running(RedisSentinel(launcher, tmp_path_factory.mktemp("sentinel")))


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[RedisServerFactory]:
    """Start private servers (to kill, restart, or configure) for one test."""
    factory = RedisServerFactory(require_launcher("redis_server_factory"), tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def redis_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA with a server (127.0.0.1, localhost) and a client certificate."""
    try:
        return make_tls_files(tmp_path_factory.mktemp("tls"))
    except FileNotFoundError:
        if _in_ci():
            pytest.fail("CI=true but the openssl CLI is missing", pytrace=False)
        pytest.skip("the openssl CLI is missing")
