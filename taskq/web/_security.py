"""Who may use the dashboard and how requests are protected.

* :class:`PasswordAuth`: one username and password, compared in constant
  time. Browsers log in with a form and get a session cookie; scripts send
  ``Authorization: Bearer <password>`` to ``/api``.
* :class:`Sessions`: a session lives in a signed cookie (HMAC-SHA256 over the
  session id, the user and the expiry; ``HttpOnly``, ``SameSite=Strict``), so
  nothing is kept on the server. Every visitor gets one, logged in or not,
  because the CSRF token of every form is derived from it.
* :class:`LoginLimiter`: counts failed logins (form or bearer token) per
  client address and refuses further attempts from an address with too many
  recent failures, in bounded memory.
* :class:`SecurityHeaders`: an ASGI middleware that refuses unknown ``Host``
  headers (DNS rebinding against a dashboard on 127.0.0.1) and adds a strict
  Content-Security-Policy and its companions to every response.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import attrs
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskq.errors import InvalidArgumentError

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "MAX_TRACKED_ADDRESSES",
    "PASSWORD_ENV",
    "SECRET_ENV",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "USERNAME_ENV",
    "LoginLimiter",
    "PasswordAuth",
    "SecurityHeaders",
    "Session",
    "Sessions",
    "bearer_token",
    "client_address",
    "read_secret_file",
]

SESSION_COOKIE: Final = "taskq_session"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
PASSWORD_ENV: Final = "TASKQ_WEB_PASSWORD"
USERNAME_ENV: Final = "TASKQ_WEB_USERNAME"
SECRET_ENV: Final = "TASKQ_WEB_SECRET"
DEFAULT_USERNAME: Final = "admin"
_MAX_SECRET_FILE: Final = 4096
MAX_TRACKED_ADDRESSES: Final = 10_000
"""How many client addresses a :class:`LoginLimiter` remembers by default."""

SECURITY_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cache-control", "no-store"),
)
"""Headers added to every response that does not set them itself."""


def read_secret_file(path: str | os.PathLike[str], what: str) -> str:
    """The first line of a small file holding a secret, without its line ending.

    Raises:
        InvalidArgumentError: the file cannot be read, is too large or is empty.
    """
    try:
        with Path(path).open("rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the {what} file: {exc.strerror}") from None
    if len(data) > _MAX_SECRET_FILE:
        raise InvalidArgumentError(f"the {what} file is larger than {_MAX_SECRET_FILE} bytes")
    lines = data.decode("utf-8", "replace").splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise InvalidArgumentError(f"the {what} file is empty")
    return value


@attrs.frozen
class PasswordAuth:
    """One username and password guarding the dashboard.

    The password is never shown by ``repr``. Browsers log in on the login
    page; scripts send ``Authorization: Bearer <password>`` to ``/api``.

    Args:
        username: the login name (not a secret).
        password: the password; not empty.

    Raises:
        InvalidArgumentError: the username or password is empty.
    """

    username: str
    password: str = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.username, str) or not self.username.strip():
            raise InvalidArgumentError("the dashboard username must be a non-empty str")
        if not isinstance(self.password, str) or not self.password.strip():
            raise InvalidArgumentError("the dashboard password must be a non-empty str")

    @classmethod
    def from_env(
        cls,
        *,
        password_file: str | os.PathLike[str] | None = None,
        username: str | None = None,
    ) -> PasswordAuth | None:
        """Credentials from a file or the environment, never from the command line.

        The password is the first line of ``password_file`` when given, else
        ``$TASKQ_WEB_PASSWORD``; the username is ``username``, else
        ``$TASKQ_WEB_USERNAME``, else ``admin``.

        Returns:
            the credentials, or None when no password is configured.

        Raises:
            InvalidArgumentError: the password file cannot be read or is empty.
        """
        if password_file is not None:
            password: str | None = read_secret_file(password_file, "password")
        else:
            password = os.environ.get(PASSWORD_ENV) or None
        if password is None:
            return None
        name = username or os.environ.get(USERNAME_ENV) or DEFAULT_USERNAME
        return cls(name, password)

    def check(self, username: str, password: str) -> bool:
        """Whether the pair matches, in time independent of where they differ."""
        user_ok = hmac.compare_digest(username.encode("utf-8"), self.username.encode("utf-8"))
        password_ok = hmac.compare_digest(password.encode("utf-8"), self.password.encode("utf-8"))
        return user_ok & password_ok

    def check_token(self, token: str) -> bool:
        """Whether a bearer token is the password (constant-time)."""
        return hmac.compare_digest(token.encode("utf-8"), self.password.encode("utf-8"))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def client_address(scope: Scope) -> str:
    """The address of the client of an HTTP request, ``"unknown"`` when the server gives none.

    Behind a reverse proxy this is the proxy's address unless the server
    rewrites it from ``X-Forwarded-For`` (uvicorn does for trusted proxies).
    """
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class LoginLimiter:
    """Refuse logins from an address after ``max_failures`` failures within ``window`` seconds.

    Each address keeps the times of its last ``max_failures`` failures. Once
    that many fall within the window, :meth:`retry_after` says how long until
    the oldest leaves it; attempts refused meanwhile are not failures (their
    password is never checked), so they do not extend the lockout. A success
    forgets the address. At most ``max_addresses`` addresses are remembered:
    a new one evicts the one whose last failure is oldest, so memory stays
    bounded whatever the number of clients. Not thread-safe: the dashboard
    uses it from its event loop only, with no ``await`` inside a method.

    Args:
        max_failures: failed attempts allowed within the window (at least 1).
        window: the window in seconds (more than 0).
        max_addresses: how many addresses are remembered (at least 1).
        clock: monotonic seconds; :attr:`clock` may be replaced in tests.

    Raises:
        InvalidArgumentError: an argument is out of range.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        *,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise InvalidArgumentError("max_failures must be an int of at least 1")
        if not window > 0:
            raise InvalidArgumentError("the login failure window must be more than 0 seconds")
        if (
            isinstance(max_addresses, bool)
            or not isinstance(max_addresses, int)
            or max_addresses < 1
        ):
            raise InvalidArgumentError("max_addresses must be an int of at least 1")
        self.max_failures = max_failures
        self.window = float(window)
        self.max_addresses = max_addresses
        self.clock = clock
        # address -> times of its last failures, least recently failing address first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._failures)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it may now."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str) -> None:
        """Count a failed attempt from ``address``."""
        now = self.clock()
        self._forget_expired(now)
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.max_failures)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(address)
        times.append(now)

    def succeeded(self, address: str) -> None:
        """Forget the failures of ``address`` (it logged in)."""
        self._failures.pop(address, None)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        """The failure times of ``address`` still within the window, or None if none."""
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def _forget_expired(self, now: float) -> None:
        """Drop addresses whose last failure left the window (they are first in order)."""
        while self._failures:
            times = next(iter(self._failures.values()))
            if times and times[-1] > now - self.window:
                return
            self._failures.popitem(last=False)


@attrs.frozen
class Session:
    """A visitor's session: an id (the CSRF tokens derive from it), the user, the expiry.

    ``user`` is None until the visitor logs in (and always when the dashboard
    has no authentication).
    """

    sid: str
    user: str | None
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and verifies signed session cookies and the CSRF tokens bound to them.

    Args:
        secret: the signing key; sessions signed with another key are
            ignored. Keep it stable across restarts to keep users logged in.
        ttl: a session's lifetime in seconds.
    """

    def __init__(self, secret: bytes, ttl: int) -> None:
        if len(secret) < 16:
            raise InvalidArgumentError("the session secret must be at least 16 bytes")
        self._key = hashlib.sha256(b"taskq-web-session\0" + secret).digest()
        self._csrf_key = hashlib.sha256(b"taskq-web-csrf\0" + secret).digest()
        self.ttl = ttl

    def new(self, user: str | None = None) -> Session:
        """A fresh session (a new id, so logging in never keeps an old one)."""
        return Session(secrets.token_urlsafe(18), user, int(time.time()) + self.ttl)

    def dump(self, session: Session) -> str:
        """The cookie value of ``session``."""
        body = json.dumps([session.sid, session.user, session.expires], separators=(",", ":"))
        payload = _b64(body.encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def load(self, cookie: str | None) -> Session | None:
        """The session in a cookie value, or None when absent, forged or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            sid, user, expires = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not isinstance(sid, str) or not isinstance(expires, int):
            return None
        if user is not None and not isinstance(user, str):
            return None
        if expires <= time.time():
            return None
        return Session(sid, user, expires)

    def csrf_token(self, session: Session) -> str:
        """The CSRF token every form and mutating API call of ``session`` must carry."""
        return _b64(hmac.new(self._csrf_key, session.sid.encode("ascii"), "sha256").digest())

    def check_csrf(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is ``session``'s CSRF token (constant-time)."""
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), "sha256").digest())


def _normal_host(host: str) -> str:
    """``host`` lower-cased, without a port; IPv6 addresses keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") > 1:  # a bare IPv6 address
        return f"[{host}]"
    return host.split(":", 1)[0]


class SecurityHeaders:
    """ASGI middleware: refuse unknown Host headers, add :data:`SECURITY_HEADERS`.

    Args:
        app: the application to wrap.
        allowed_hosts: the host names (without port) requests may be addressed
            to; None accepts any. A request for another host gets a 400.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self.allowed = (
            None if allowed_hosts is None else frozenset(_normal_host(h) for h in allowed_hosts)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name.encode("latin-1") not in present:
                        headers.append((name.encode("latin-1"), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        if self.allowed is not None:
            host = ""
            for name, value in scope.get("headers", []):
                if name == b"host":
                    host = _normal_host(value.decode("latin-1"))
            if host not in self.allowed:
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send_with_headers(
                    {"type": "http.response.body", "body": b"Unknown Host header.\n"}
                )
                return
        await self.app(scope, receive, send_with_headers)
