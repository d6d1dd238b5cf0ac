"""The taskq web dashboard: an ASGI application (needs ``pip install 'taskq[web]'``).

Serve it with ``taskq web`` (uvicorn, 127.0.0.1:8080 by default), with any
ASGI server, or mount it in your own Starlette or FastAPI application::

    from taskq.web import PasswordAuth, create_app

    dashboard = create_app("redis://localhost:6379/0", auth=PasswordAuth.from_env())
    app.mount("/taskq", dashboard)

See docs/web.md for the pages, the JSON API, authentication and read-only mode.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"taskq.web needs the 'web' extra ({exc.name or 'a dependency'} is not installed): "
        "pip install 'taskq[web]'"
    ) from exc

from taskq.web._app import create_app
from taskq.web._security import PasswordAuth

__all__ = ["PasswordAuth", "create_app"]
