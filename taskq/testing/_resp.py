"""A tiny blocking RESP2 client for the test-server fixtures.

The fixtures only need a handful of admin commands (PING, FLUSHALL, INFO,
CLUSTER INFO, SENTINEL ...) to start, probe and reset servers. Speaking the
wire protocol directly keeps ``taskq.testing`` independent of the redis
driver, which only ``taskq.brokers.redis`` may import, and lets a probe work
while the broker under test is broken.
"""

from __future__ import annotations

import socket
import ssl
from types import TracebackType
from typing import Union

__all__ = ["Reply", "RespConnection", "RespError", "info_fields", "pairs", "text"]

Reply = Union[bytes, int, None, "RespError", list["Reply"]]


class RespError(Exception):
    """An error reply from the server (``-ERR ...``), or a broken reply stream."""


class RespConnection:
    """One blocking connection to a Redis server or Sentinel.

    Args:
        host: the server's address.
        port: its TCP port.
        timeout: seconds for connecting and for each reply.
        ssl_context: wrap the socket in TLS with this context when given.
        username: the ACL user to authenticate as (``None``: the default user).
        password: authenticate with ``AUTH`` when given.

    Raises:
        OSError: the server cannot be reached (refused, timed out, TLS failure).
        RespError: the server refused the credentials.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            self._sock = sock
            self._file = sock.makefile("rb")
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                self.call(*auth)
        except BaseException:
            sock.close()
            raise

    def __enter__(self) -> RespConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._file.close()
        self._sock.close()

    def call(self, *args: str | int | bytes) -> Reply:
        """Send one command and return its reply.

        Raises:
            RespError: the server answered with an error.
            OSError: the connection failed or timed out.
        """
        self._sock.sendall(_encode(args))
        reply = self._read()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def _read(self) -> Reply:
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by the server")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            return RespError(body.decode("utf-8", "replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RespError(f"unexpected reply type {kind!r}")


def _encode(args: tuple[str | int | bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def text(reply: Reply) -> str:
    """Decode a bulk or simple string reply (``""`` for nil)."""
    if reply is None:
        return ""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return str(reply)


def info_fields(reply: Reply) -> dict[str, str]:
    """Parse an ``INFO`` / ``CLUSTER INFO`` reply into a dict of its ``key:value`` lines."""
    fields: dict[str, str] = {}
    for line in text(reply).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def pairs(reply: Reply) -> dict[str, str]:
    """Turn a flat ``[k1, v1, k2, v2, ...]`` reply (as ``SENTINEL REPLICAS`` gives) into a dict."""
    items = reply if isinstance(reply, list) else []
    return {text(items[i]): text(items[i + 1]) for i in range(0, len(items) - 1, 2)}
