"""``create_app``: the dashboard's routes, wired to one broker."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from taskq.brokers.base import Broker
from taskq.errors import InvalidArgumentError
from taskq.web._api import Api
from taskq.web._core import Dashboard, Handler, Settings
from taskq.web._pages import Pages
from taskq.web._security import PasswordAuth, SecurityHeaders

__all__ = ["create_app"]

_STATIC = Path(__file__).parent / "static"


class _RootPath:
    """ASGI middleware: serve under ``prefix`` behind a proxy that strips it."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in {"http", "websocket"}:
            root = scope.get("root_path", "")
            path = scope["path"]
            rest = path[len(root) :] if root and path.startswith(root) else path
            scope = {**scope, "root_path": root + self.prefix, "path": root + self.prefix + rest}
        await self.app(scope, receive, send)


def create_app(
    broker: Broker | str | None = None,
    *,
    read_only: bool = False,
    auth: PasswordAuth | None = None,
    root_path: str = "",
    max_payload_length: int = 4096,
    default_page_size: int = 30,
    max_page_size: int = 100,
    allowed_hosts: Sequence[str] | None = None,
    secret_key: str | bytes | None = None,
    session_ttl: timedelta = timedelta(hours=12),
    max_login_failures: int = 5,
    login_failure_window: timedelta = timedelta(seconds=60),
) -> Starlette:
    """Build the web dashboard as an ASGI application.

    Serve it with any ASGI server (``uvicorn module:app``), or mount it in a
    Starlette or FastAPI application (``app.mount("/taskq", create_app(...))``;
    links then carry the mount path).

    Args:
        broker: a :class:`~taskq.brokers.base.Broker` (left open), a broker
            URL, or None for ``$TASKQ_BROKER`` / ``sqlite:///taskq.db``. A
            broker from a URL is opened on the first request and closed when
            the application shuts down (its lifespan; a mounted application
            does not get one, so pass a Broker you close yourself there).
        read_only: refuse every change (403) on the server, and hide its buttons.
        auth: the login that guards every page and API call; None for no
            login (only behind your own authentication, or on 127.0.0.1).
        root_path: a path prefix a reverse proxy strips before forwarding
            (e.g. ``/taskq``); links and the cookie carry it. Not needed
            when mounting, nor with ``uvicorn --root-path``.
        max_payload_length: payloads and results are cut to this many characters.
        default_page_size: tasks per page unless ``?size=`` says otherwise.
        max_page_size: the largest ``?size=`` accepted (at most 1000).
        allowed_hosts: the host names requests may be addressed to (others
            get a 400, defeating DNS rebinding); None accepts any.
        secret_key: the key signing session cookies (at least 16 bytes);
            None for a random one, so sessions end when the process does.
        session_ttl: how long a login lasts.
        max_login_failures: failed logins (form or bearer token) one client
            address may make within ``login_failure_window``; its further
            attempts get a 429 with ``Retry-After`` until the oldest failure
            leaves the window, and a successful login clears its count
            (1 to 100; the last 10,000 addresses are remembered).
        login_failure_window: the window those failures are counted in
            (1 second to 1 day).

    Raises:
        InvalidArgumentError: an option is out of range.
    """
    settings = Settings(
        read_only=bool(read_only),
        auth=auth,
        root_path=root_path,
        max_payload_length=max_payload_length,
        default_page_size=default_page_size,
        max_page_size=max_page_size,
        allowed_hosts=None if allowed_hosts is None else tuple(allowed_hosts),
        session_ttl=session_ttl,
        max_login_failures=max_login_failures,
        login_failure_window=login_failure_window,
    )
    if isinstance(secret_key, str):
        secret_key = secret_key.encode("utf-8")
    if secret_key is not None and len(secret_key) < 16:
        raise InvalidArgumentError("secret_key must be at least 16 bytes")
    dash = Dashboard(broker, settings, secret_key or secrets.token_bytes(32))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await dash.close()

    middleware = [Middleware(SecurityHeaders, allowed_hosts=settings.allowed_hosts)]
    if root_path:
        middleware.insert(0, Middleware(_RootPath, prefix=root_path))
    app = Starlette(routes=_routes(dash), middleware=middleware, lifespan=lifespan)
    app.state.dashboard = dash
    return app


def _routes(dash: Dashboard) -> list[BaseRoute]:
    pages = Pages(dash)
    api = Api(dash)

    def page(path: str, handler: Handler, **kind: bool) -> Route:
        return Route(path, dash.endpoint(handler, api=False, **kind), methods=["GET"])

    def post(path: str, handler: Handler, **kind: bool) -> Route:
        return Route(path, dash.endpoint(handler, api=False, **kind), methods=["POST"])

    def api_get(path: str, handler: Handler) -> Route:
        return Route(path, dash.endpoint(handler, api=True), methods=["GET"])

    def api_post(path: str, handler: Handler) -> Route:
        return Route(path, dash.endpoint(handler, api=True, mutation=True), methods=["POST"])

    return [
        page("/", pages.dashboard),
        page("/queue", pages.queue),
        page("/task", pages.task),
        page("/confirm", pages.confirm),
        page("/servers", pages.servers),
        page("/schedulers", pages.schedulers),
        page("/scheduler", pages.scheduler_history),
        page("/login", pages.login_form, public=True),
        post("/login", pages.login, public=True),
        post("/logout", pages.logout, public=True),
        post("/actions/queue", pages.post_queue, mutation=True),
        post("/actions/tasks", pages.post_tasks, mutation=True),
        post("/actions/bulk", pages.post_bulk, mutation=True),
        api_get("/api/session", api.session),
        api_get("/api/stats", api.stats),
        api_get("/api/queues", api.queues),
        api_get("/api/queue", api.queue),
        api_get("/api/history", api.history),
        api_get("/api/groups", api.groups),
        api_get("/api/tasks", api.tasks),
        api_get("/api/task", api.task),
        api_get("/api/servers", api.servers),
        api_get("/api/schedulers", api.schedulers),
        api_get("/api/scheduler/history", api.scheduler_history),
        api_post("/api/queue/{action}", api.post_queue),
        api_post("/api/tasks/{action}", api.post_tasks),
        api_post("/api/bulk/{action}", api.post_bulk),
        Mount("/static", StaticFiles(directory=os.fspath(_STATIC)), name="static"),
    ]
