"""The JSON API under ``/api``: the pages' data and actions for scripts.

Reads are GET; changes are POST with a form or a JSON object body. Values are
rendered as the CLI's ``--json`` renders them (times ISO-8601 UTC, durations
in seconds, every bytes field as text or null plus ``<field>_base64``).
Names go in the query or the body, never in the path, so any queue name or
task id round-trips. Errors are ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from starlette.responses import Response

from taskq.cli.stats import summarize
from taskq.web._actions import bulk_action, queue_action, task_action
from taskq.web._core import (
    MAX_PAGE,
    Dashboard,
    HttpError,
    Visit,
    int_param,
    state_param,
    text_param as _required,
)
from taskq.web._render import SafeJSONResponse

__all__ = ["Api"]

MAX_HISTORY_DAYS = 90


class Api:
    """The JSON handlers, each taking a :class:`~taskq.web._core.Visit`."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    def _size(self, raw: str | None) -> int:
        s = self.dash.settings
        return int_param(raw, "size", s.default_page_size, 1, s.max_page_size)

    # ----------------------------------------------------------------- reads

    async def session(self, visit: Visit) -> Response:
        """The CSRF token of this session (send it as ``X-CSRF-Token``), user, read-only."""
        return SafeJSONResponse(
            {
                "csrf_token": self.dash.sessions.csrf_token(visit.session),
                "user": visit.session.user,
                "read_only": self.dash.settings.read_only,
            }
        )

    async def stats(self, visit: Visit) -> Response:
        """What ``taskq stats --json`` prints: totals by state, queues, today, fleet."""
        return SafeJSONResponse(await summarize(self.dash.inspector()))

    async def queues(self, visit: Visit) -> Response:
        """Every queue's snapshot (a list of QueueInfo)."""
        summary = await summarize(self.dash.inspector())
        return SafeJSONResponse(summary["queues"])

    async def queue(self, visit: Visit) -> Response:
        """One queue's snapshot (``?queue=``)."""
        queue = _required(visit.query.get("queue"), "queue")
        return SafeJSONResponse(await self.dash.inspector().get_queue_info(queue))

    async def history(self, visit: Visit) -> Response:
        """Daily processed and failed counts (``?queue=&days=``, days 1 to 90)."""
        queue = _required(visit.query.get("queue"), "queue")
        days = int_param(visit.query.get("days"), "days", 7, 1, MAX_HISTORY_DAYS)
        return SafeJSONResponse(await self.dash.inspector().history(queue, days))

    async def groups(self, visit: Visit) -> Response:
        """The groups of aggregating tasks of a queue (``?queue=``)."""
        queue = _required(visit.query.get("queue"), "queue")
        return SafeJSONResponse(await self.dash.inspector().groups(queue))

    async def tasks(self, visit: Visit) -> Response:
        """A page of tasks (``?queue=&state=&page=&size=&group=``)."""
        q = visit.query
        queue = _required(q.get("queue"), "queue")
        state = state_param(q.get("state"))
        page = int_param(q.get("page"), "page", 1, 1, MAX_PAGE)
        size = self._size(q.get("size"))
        group = q.get("group") or None
        tasks = await self.dash.inspector().list_tasks(
            queue, state, page=page, page_size=size, group=group
        )
        return SafeJSONResponse(
            {"queue": queue, "state": state, "page": page, "size": size, "tasks": tasks}
        )

    async def task(self, visit: Visit) -> Response:
        """One task, every field (``?queue=&id=``)."""
        queue = _required(visit.query.get("queue"), "queue")
        task_id = _required(visit.query.get("id"), "id")
        return SafeJSONResponse(await self.dash.inspector().get_task_info(queue, task_id))

    async def servers(self, visit: Visit) -> Response:
        """Live servers with their active tasks."""
        return SafeJSONResponse(await self.dash.inspector().servers())

    async def schedulers(self, visit: Visit) -> Response:
        """Periodic-task entries of the live schedulers."""
        return SafeJSONResponse(await self.dash.inspector().scheduler_entries())

    async def scheduler_history(self, visit: Visit) -> Response:
        """A page of what one entry enqueued (``?entry=&page=&size=``), newest first."""
        entry = _required(visit.query.get("entry"), "entry")
        page = int_param(visit.query.get("page"), "page", 1, 1, MAX_PAGE)
        size = self._size(visit.query.get("size"))
        events = await self.dash.inspector().scheduler_history(entry, page=page, page_size=size)
        return SafeJSONResponse(events)

    # ----------------------------------------------------------------- changes

    async def post_queue(self, visit: Visit) -> Response:
        """``POST /api/queue/{pause|unpause|delete}`` with ``queue`` (``force``, ``confirm``)."""
        action = str(visit.request.path_params["action"])
        b = visit.body
        queue = _required(b.get("queue"), "queue")
        await queue_action(
            self.dash, visit, action, queue, force=b.flag("force"), confirmed=b.flag("confirm")
        )
        return SafeJSONResponse({"queue": queue, "action": action, "ok": True})

    async def post_tasks(self, visit: Visit) -> Response:
        """``POST /api/tasks/{run|archive|delete|cancel}`` with ``queue`` and ``ids``."""
        action = str(visit.request.path_params["action"])
        b = visit.body
        queue = _required(b.get("queue"), "queue")
        ids = b.getlist("ids") or b.getlist("id")
        outcome = await task_action(self.dash, visit, action, queue, ids)
        return SafeJSONResponse(
            {
                "queue": queue,
                "action": action,
                "done": outcome.done,
                "failed": [{"id": i, "error": e} for i, e in outcome.failed],
            }
        )

    async def post_bulk(self, visit: Visit) -> Response:
        """``POST /api/bulk/{run|archive|delete}`` with ``queue``, ``state``, ``confirm``."""
        action = str(visit.request.path_params["action"])
        b = visit.body
        queue = _required(b.get("queue"), "queue")
        state = state_param(b.get("state"))
        group = b.get("group") or None
        if action not in {"run", "archive", "delete"}:
            raise HttpError(404, "unknown bulk action; one of: run, archive, delete")
        count = await bulk_action(
            self.dash, visit, action, queue, state, group, confirmed=b.flag("confirm")
        )
        return SafeJSONResponse({"queue": queue, "state": state, "action": action, "count": count})
