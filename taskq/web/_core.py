"""What every dashboard handler shares: settings, the inspector, the request guard.

Each route's handler is wrapped by :meth:`Dashboard.endpoint`, the one place
that decides, in this order: the session (every visitor gets one), whether
the visitor is logged in (or sent a valid bearer token to ``/api``, unless
its address is locked out by too many failed logins), whether
a mutation is allowed (``read_only``) and carries the session's CSRF token.
Handlers then only read parameters and call the inspector; taskq errors
become HTTP statuses here too, with broker passwords scrubbed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Final
from urllib.parse import parse_qs, urlencode

import attrs
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from taskq import errors
from taskq.brokers.base import Broker
from taskq.brokers.registry import DEFAULT_BROKER_URL, redact_url
from taskq.cli._common import (
    BAD_INPUT,
    BROKER_DOWN,
    CONFLICT,
    NOT_FOUND,
    OTHER,
    error_kind,
    one_line,
)
from taskq.inspector import MAX_PAGE_SIZE, AsyncInspector
from taskq.task import TaskState
from taskq.web._render import SafeJSONResponse, Templates
from taskq.web._security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginLimiter,
    PasswordAuth,
    Session,
    Sessions,
    bearer_token,
    client_address,
)

__all__ = [
    "BULK_ACTIONS",
    "MAX_BODY_BYTES",
    "MAX_PAGE",
    "ROW_ACTIONS",
    "Body",
    "Dashboard",
    "Handler",
    "HttpError",
    "Settings",
    "Visit",
    "int_param",
    "state_param",
    "text_param",
]

log = logging.getLogger("taskq.web")

MAX_BODY_BYTES: Final = 256 * 1024
MAX_PAGE: Final = 100_000
MAX_PAYLOAD_LENGTH: Final = 1 << 20
MAX_LOGIN_FAILURES: Final = 100

ROW_ACTIONS: Final[Mapping[TaskState, tuple[str, ...]]] = {
    TaskState.PENDING: ("archive", "delete"),
    TaskState.ACTIVE: ("cancel",),
    TaskState.SCHEDULED: ("run", "archive", "delete"),
    TaskState.RETRY: ("run", "archive", "delete"),
    TaskState.ARCHIVED: ("run", "delete"),
    TaskState.COMPLETED: ("run", "delete"),
    TaskState.AGGREGATING: ("run", "archive", "delete"),
}
"""What can be done to one task in each state (what the Inspector allows)."""

BULK_ACTIONS: Final[Mapping[TaskState, tuple[str, ...]]] = {
    state: tuple(a for a in actions if a != "cancel") for state, actions in ROW_ACTIONS.items()
}
"""What can be done to every task of a queue in each state."""

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]+@")


@attrs.frozen
class Settings:
    """The dashboard's options (see :func:`taskq.web.create_app`)."""

    read_only: bool
    auth: PasswordAuth | None
    root_path: str
    max_payload_length: int
    default_page_size: int
    max_page_size: int
    allowed_hosts: tuple[str, ...] | None
    session_ttl: timedelta
    max_login_failures: int = 5
    login_failure_window: timedelta = timedelta(seconds=60)

    def __attrs_post_init__(self) -> None:
        if self.auth is not None and not isinstance(self.auth, PasswordAuth):
            raise errors.InvalidArgumentError("auth must be a taskq.web.PasswordAuth or None")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise errors.InvalidArgumentError(
                "root_path must start with '/' and not end with one, e.g. '/taskq'"
            )
        _bounded("max_payload_length", self.max_payload_length, 16, MAX_PAYLOAD_LENGTH)
        _bounded("max_page_size", self.max_page_size, 1, MAX_PAGE_SIZE)
        _bounded("default_page_size", self.default_page_size, 1, self.max_page_size)
        if not timedelta(minutes=1) <= self.session_ttl <= timedelta(days=30):
            raise errors.InvalidArgumentError("session_ttl must be from 1 minute to 30 days")
        _bounded("max_login_failures", self.max_login_failures, 1, MAX_LOGIN_FAILURES)
        window = self.login_failure_window
        if not isinstance(window, timedelta) or not (
            timedelta(seconds=1) <= window <= timedelta(days=1)
        ):
            raise errors.InvalidArgumentError(
                "login_failure_window must be a timedelta from 1 second to 1 day"
            )


def _login_kind(username: str | None) -> str:
    return "login" if username is not None else "bearer token login"


def _bounded(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.InvalidArgumentError(f"{name} must be an int from {low} to {high}")


class HttpError(Exception):
    """Answer the request with ``status``, a one-line ``message`` and extra ``headers``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _status_for(exc: errors.TaskqError) -> int:
    return _STATUS_BY_KIND[error_kind(exc)]


_STATUS_BY_KIND = {NOT_FOUND: 404, CONFLICT: 409, BAD_INPUT: 400, BROKER_DOWN: 503, OTHER: 500}


# --------------------------------------------------------------------------- parameters

_DIGITS = re.compile(r"[0-9]{1,9}")


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A whole number from a query or form field, ``default`` when absent.

    Raises:
        HttpError: (400) not a number from ``low`` to ``high``.
    """
    if raw is None or raw == "":
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise HttpError(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def text_param(raw: str | None, name: str) -> str:
    """A required, non-empty text field.

    Raises:
        HttpError: (400) it is missing or empty.
    """
    if raw is None or raw == "":
        raise HttpError(400, f"the {name} parameter is required")
    return raw


def state_param(raw: str | None, default: TaskState | None = None) -> TaskState:
    """A task state by name.

    Raises:
        HttpError: (400) missing (without a default) or not a task state.
    """
    if (raw is None or raw == "") and default is not None:
        return default
    try:
        return TaskState(raw)
    except ValueError:
        names = ", ".join(s.value for s in TaskState)
        raise HttpError(400, f"state must be one of: {names}") from None


class Body:
    """The fields of a POST body, form-encoded or a JSON object, as lists of strings."""

    def __init__(self, fields: Mapping[str, Sequence[str]]) -> None:
        self._fields = {k: list(v) for k, v in fields.items()}

    @classmethod
    async def read(cls, request: Request) -> Body:
        """Read and parse the body of ``request`` (at most :data:`MAX_BODY_BYTES`).

        Raises:
            HttpError: (413) too large; (400) not a form or a flat JSON object.
        """
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY_BYTES:
                raise HttpError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            return cls._from_json(bytes(data))
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the request body is not UTF-8") from None
        return cls(parse_qs(text, keep_blank_values=True))

    @classmethod
    def _from_json(cls, data: bytes) -> Body:
        try:
            value = json.loads(data) if data else {}
        except ValueError:
            raise HttpError(400, "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise HttpError(400, "the request body must be a JSON object")
        fields: dict[str, list[str]] = {}
        for key, item in value.items():
            if item is None:
                continue
            items = item if isinstance(item, list) else [item]
            out = []
            for one in items:
                if isinstance(one, bool):
                    out.append("true" if one else "false")
                elif isinstance(one, (str, int)):
                    out.append(str(one))
                else:
                    raise HttpError(400, f"field {key!r} must be a string, number or boolean")
            fields[str(key)] = out
        return cls(fields)

    def get(self, name: str) -> str | None:
        """The first value of field ``name``, or None."""
        values = self._fields.get(name)
        return values[0] if values else None

    def getlist(self, name: str) -> list[str]:
        """Every value of field ``name``."""
        return list(self._fields.get(name, []))

    def flag(self, name: str) -> bool:
        """Whether field ``name`` is set to a true value (checked box, ``true``, ``yes``)."""
        return (self.get(name) or "").lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- the guard


@attrs.define
class Visit:
    """One request as handlers see it: the request, its session, its parsed body."""

    request: Request
    session: Session
    api: bool
    bearer: bool = False
    new_session: bool = False
    body: Body = attrs.field(factory=lambda: Body({}))

    @property
    def query(self) -> Mapping[str, str]:
        """The query parameters (first value of each)."""
        return self.request.query_params

    @property
    def base(self) -> str:
        """The path prefix the dashboard is served under ("" at the root)."""
        return str(self.request.scope.get("root_path", "")).rstrip("/")

    def link(self, path: str, **params: object) -> str:
        """A URL to one of the dashboard's own pages, with ``params`` in the query."""
        query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        return self.base + path + (f"?{urlencode(query)}" if query else "")

    def redirect(self, path: str, **params: object) -> RedirectResponse:
        """A 303 redirect to :meth:`link` (after a POST: the browser GETs it)."""
        return RedirectResponse(self.link(path, **params), status_code=303)


Handler = Callable[[Visit], Awaitable[Response]]


class Dashboard:
    """The state every handler shares: settings, sessions, templates, the inspector.

    Args:
        source: a Broker (left open), a URL or None (``$TASKQ_BROKER``; both
            closed by :meth:`close`).
        settings: the options.
        secret: the session signing key.
    """

    def __init__(self, source: Broker | str | None, settings: Settings, secret: bytes) -> None:
        self.source = source
        self.settings = settings
        self.sessions = Sessions(secret, int(settings.session_ttl.total_seconds()))
        self.templates = Templates()
        self.login_limiter = LoginLimiter(
            settings.max_login_failures, settings.login_failure_window.total_seconds()
        )
        self._inspector: AsyncInspector | None = None
        if isinstance(source, str) or source is None:
            self._url: str | None = source or os.environ.get("TASKQ_BROKER") or DEFAULT_BROKER_URL
            self.broker_display = redact_url(self._url)
        else:
            self._url = None
            self.broker_display = type(source).__name__

    def inspector(self) -> AsyncInspector:
        """The inspector, created on first use (inside the serving event loop)."""
        if self._inspector is None:
            source = self.source if self._url is None else self._url
            self._inspector = AsyncInspector(source)
        return self._inspector

    async def close(self) -> None:
        """Close the broker if the dashboard opened it from a URL."""
        if self._inspector is not None:
            await self._inspector.close()
            self._inspector = None

    def scrub(self, exc: BaseException) -> str:
        """``exc`` as one line without any broker password."""

        text = one_line(exc, self._url) if self._url else " ".join(str(exc).split())
        return _URL_PASSWORD.sub(r"\1***@", text or type(exc).__name__)

    # ----------------------------------------------------------------- guard

    def endpoint(
        self, handler: Handler, *, api: bool, mutation: bool = False, public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler`` with the session, auth, read-only and CSRF checks.

        Args:
            api: answer in JSON (errors too) and accept bearer tokens.
            mutation: the handler changes something: refused when read-only,
                needs the CSRF token unless a bearer token authenticated it.
            public: no login needed (the login page itself).
        """

        async def endpoint(request: Request) -> Response:
            visit = self._visit(request, api)
            try:
                response = await self._guarded(visit, handler, mutation, public)
            except HttpError as exc:
                response = self.error(visit, exc.status, exc.message, exc.headers)
            except errors.TaskqError as exc:
                response = self.error(visit, _status_for(exc), self.scrub(exc))
            self.finish(visit, response)
            return response

        return endpoint

    async def _guarded(
        self, visit: Visit, handler: Handler, mutation: bool, public: bool
    ) -> Response:
        if not public and not self._authorized(visit):
            if visit.api:
                raise HttpError(401, "authentication required")
            if visit.request.method == "GET":
                return visit.redirect("/login")
            raise HttpError(401, "your session has ended; log in again")
        if visit.request.method == "POST":
            if mutation and self.settings.read_only:
                raise HttpError(403, "the dashboard is read-only")
            visit.body = await Body.read(visit.request)
            token = visit.request.headers.get(CSRF_HEADER) or visit.body.get(CSRF_FIELD)
            if not visit.bearer and not self.sessions.check_csrf(visit.session, token):
                raise HttpError(403, "missing or invalid CSRF token; reload the page and retry")
        return await handler(visit)

    def _visit(self, request: Request, api: bool) -> Visit:
        session = self.sessions.load(request.cookies.get(SESSION_COOKIE))
        visit = Visit(request, session or self.sessions.new(), api, new_session=session is None)
        return visit

    def _authorized(self, visit: Visit) -> bool:
        auth = self.settings.auth
        if auth is None:
            return True
        if visit.api:
            token = bearer_token(visit.request.headers.get("authorization"))
            if token is not None:
                self.refuse_if_locked_out(visit, None)
                visit.bearer = auth.check_token(token)
                self.count_login(visit, None, visit.bearer)
                return visit.bearer
        return visit.session.user is not None and visit.session.user == auth.username

    def refuse_if_locked_out(self, visit: Visit, username: str | None) -> None:
        """Refuse a login attempt from an address with too many recent failures.

        Called before any password is checked; a refusal is audited with the
        client address.

        Args:
            username: the username typed in the login form, None for a
                bearer token (which has none).

        Raises:
            HttpError: (429, with ``Retry-After``) the address is locked out.
        """
        address = client_address(visit.request.scope)
        wait = self.login_limiter.retry_after(address)
        if wait is None:
            return
        self.audit(
            visit,
            f"refused {_login_kind(username)} (too many failures)",
            what=[] if username is None else [username],
            client=address,
        )
        raise HttpError(
            429,
            f"too many failed logins; try again in {wait} second{'' if wait == 1 else 's'}",
            {"retry-after": str(wait)},
        )

    def count_login(self, visit: Visit, username: str | None, ok: bool) -> None:
        """Record a login attempt's outcome: a success clears the address, a failure counts.

        Args:
            username: the username typed in the login form, None for a bearer token.
            ok: whether the credentials were right.
        """
        address = client_address(visit.request.scope)
        if ok:
            self.login_limiter.succeeded(address)
            return
        self.login_limiter.failed(address)
        if username is None:
            self.audit(visit, f"failed {_login_kind(None)}", client=address)
        else:
            self.audit(visit, "failed login", what=[username])

    def start_session(self, visit: Visit, user: str | None) -> None:
        """Replace the visitor's session by a fresh one (at login and logout)."""
        visit.session = self.sessions.new(user)
        visit.new_session = True

    def finish(self, visit: Visit, response: Response) -> None:
        """Set the session cookie on ``response`` if the session is new."""
        if visit.new_session:
            response.set_cookie(
                SESSION_COOKIE,
                self.sessions.dump(visit.session),
                max_age=self.sessions.ttl,
                path=visit.base or "/",
                secure=visit.request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )

    # ----------------------------------------------------------------- responses

    def context(self, visit: Visit, **values: object) -> dict[str, object]:
        """The values every template gets, plus ``values``."""
        return {
            "link": visit.link,
            "broker": self.broker_display,
            "read_only": self.settings.read_only,
            "auth": self.settings.auth is not None,
            "user": visit.session.user,
            "csrf": self.sessions.csrf_token(visit.session),
            "csrf_field": CSRF_FIELD,
            "states": list(TaskState),
            **values,
        }

    def render(
        self, visit: Visit, template: str, status_code: int = 200, **values: object
    ) -> Response:
        """Render ``template`` for ``visit``."""
        return self.templates.render(template, self.context(visit, **values), status_code)

    def error(
        self,
        visit: Visit,
        status: int,
        message: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Response:
        """An error response: JSON under ``/api``, else an HTML page."""
        headers = {"www-authenticate": 'Bearer realm="taskq"'} if status == 401 else {}
        headers.update(extra_headers or {})
        if visit.api:
            return SafeJSONResponse({"error": message}, status_code=status, headers=headers)
        response = self.render(visit, "error.html", status, status=status, message=message)
        if headers:
            response.headers.update(headers)
        return response

    def audit(
        self,
        visit: Visit,
        action: str,
        queue: str | None = None,
        what: Iterable[object] = (),
        client: str | None = None,
    ) -> None:
        """Log a change or a login event (never payloads nor passwords).

        Names and the client address are shown with %r so no line can be forged.
        """
        who = visit.session.user or ("bearer" if visit.bearer else "-")
        source = f" from {client!r}" if client is not None else ""
        where = f" in queue {queue!r}" if queue is not None else ""
        detail = ", ".join(repr(w) for w in what)
        log.info("%s by %s%s%s%s", action, who, source, where, f": {detail}" if detail else "")
