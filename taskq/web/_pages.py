"""The HTML pages and the form posts behind their buttons.

Pages are GET and change nothing. Every button posts a form (with the CSRF
token) to an ``/actions/...`` route, which makes the change and redirects
(303) back to a page with a notice chosen from a fixed list, so no text of
the request is ever echoed as a message. Changing every task of a state and
deleting a queue go through a confirmation page first.
"""

from __future__ import annotations

from typing import Final

from starlette.responses import Response

from taskq.cli.stats import summarize
from taskq.task import TaskState
from taskq.web._actions import bulk_action, queue_action, task_action
from taskq.web._core import (
    BULK_ACTIONS,
    MAX_PAGE,
    ROW_ACTIONS,
    Dashboard,
    HttpError,
    Visit,
    int_param,
    state_param,
    text_param,
)
from taskq.web._render import show_bytes

__all__ = ["Pages"]

MAX_REFRESH: Final = 3600
HISTORY_DAYS: Final = 7
NOTICES: Final = {
    "paused": "Paused the queue.",
    "unpaused": "Unpaused the queue.",
    "deleted_queue": "Deleted the queue.",
    "run": "Queued {n} to run now.",
    "archive": "Archived {n}.",
    "delete": "Deleted {n}.",
    "cancel": "Canceled {n} (active ones are told to stop).",
    "logged_out": "Logged out.",
}
_CONFIRMABLE: Final = ("delete_queue", "run_all", "archive_all", "delete_all")


class Pages:
    """The HTML handlers, each taking a :class:`~taskq.web._core.Visit`."""

    def __init__(self, dash: Dashboard) -> None:
        self.dash = dash

    # ----------------------------------------------------------------- helpers

    def _notice(self, visit: Visit) -> str | None:
        key = visit.query.get("notice")
        if key not in NOTICES:
            return None
        n = int_param(visit.query.get("n"), "n", 0, 0, 10**9)
        failed = int_param(visit.query.get("failed"), "failed", 0, 0, 10**9)
        text = NOTICES[key].format(n=f"{n} task{'' if n == 1 else 's'}")
        if failed:
            text += f" {failed} could not be changed (gone, or in another state by now)."
        return text

    def _refresh(self, visit: Visit) -> int:
        return int_param(visit.query.get("refresh"), "refresh", 0, 0, MAX_REFRESH)

    def _page_size(self, raw: str | None) -> int:
        s = self.dash.settings
        return int_param(raw, "size", s.default_page_size, 1, s.max_page_size)

    # ----------------------------------------------------------------- pages

    async def dashboard(self, visit: Visit) -> Response:
        """Every queue with its sizes, today's outcomes and actions; fleet totals."""
        refresh = self._refresh(visit)
        summary = await summarize(self.dash.inspector())
        return self.dash.render(
            visit, "dashboard.html", s=summary, refresh=refresh, notice=self._notice(visit)
        )

    async def queue(self, visit: Visit) -> Response:
        """One queue: counts, one tab per state with a page of tasks, history."""
        q = visit.query
        queue = text_param(q.get("queue"), "queue")
        state = state_param(q.get("state"), TaskState.PENDING)
        page = int_param(q.get("page"), "page", 1, 1, MAX_PAGE)
        size = self._page_size(q.get("size"))
        group = q.get("group") or None
        refresh = self._refresh(visit)
        insp = self.dash.inspector()
        info = await insp.get_queue_info(queue)
        groups = await insp.groups(queue) if state is TaskState.AGGREGATING else []
        tasks = await insp.list_tasks(queue, state, page=page, page_size=size, group=group)
        history = await insp.history(queue, HISTORY_DAYS)
        return self.dash.render(
            visit,
            "queue.html",
            info=info,
            state=state,
            page=page,
            size=size,
            group=group,
            groups=sorted(groups, key=lambda g: g.group),
            tasks=tasks,
            history=history,
            most=max([1, *(d.processed for d in history)]),
            row_actions=ROW_ACTIONS[state],
            bulk_actions=BULK_ACTIONS[state],
            refresh=refresh,
            notice=self._notice(visit),
        )

    async def task(self, visit: Visit) -> Response:
        """Every field of one task; payload and result escaped and truncated."""
        queue = text_param(visit.query.get("queue"), "queue")
        task_id = text_param(visit.query.get("id"), "id")
        info = await self.dash.inspector().get_task_info(queue, task_id)
        limit = self.dash.settings.max_payload_length
        return self.dash.render(
            visit,
            "task.html",
            task=info,
            payload=show_bytes(info.payload, limit),
            result=show_bytes(info.result, limit),
            actions=ROW_ACTIONS[info.state],
            notice=self._notice(visit),
        )

    async def confirm(self, visit: Visit) -> Response:
        """Ask before deleting a queue or changing every task of a state."""
        if self.dash.settings.read_only:
            raise HttpError(403, "the dashboard is read-only")
        q = visit.query
        queue = text_param(q.get("queue"), "queue")
        action = q.get("action")
        if action not in _CONFIRMABLE:
            raise HttpError(400, f"action must be one of: {', '.join(_CONFIRMABLE)}")
        insp = self.dash.inspector()
        info = await insp.get_queue_info(queue)
        if action == "delete_queue":
            return self.dash.render(visit, "confirm.html", info=info, action=action)
        state = state_param(q.get("state"))
        verb = action.removesuffix("_all")
        if verb not in BULK_ACTIONS[state]:
            raise HttpError(400, f"cannot {verb} every {state.value} task")
        group = q.get("group") or None
        count = info.count(state)
        if group is not None:
            sizes = {g.group: g.size for g in await insp.groups(queue)}
            count = sizes.get(group, 0)
        return self.dash.render(
            visit,
            "confirm.html",
            info=info,
            action=action,
            verb=verb,
            state=state,
            group=group,
            count=count,
        )

    async def servers(self, visit: Visit) -> Response:
        """Live worker servers and the tasks they are running."""
        refresh = self._refresh(visit)
        found = await self.dash.inspector().servers()
        return self.dash.render(visit, "servers.html", servers=found, refresh=refresh)

    async def schedulers(self, visit: Visit) -> Response:
        """Periodic-task entries of the live schedulers."""
        entries = await self.dash.inspector().scheduler_entries()
        return self.dash.render(visit, "schedulers.html", entries=entries)

    async def scheduler_history(self, visit: Visit) -> Response:
        """A page of what one scheduler entry enqueued, newest first."""
        entry = text_param(visit.query.get("entry"), "entry")
        page = int_param(visit.query.get("page"), "page", 1, 1, MAX_PAGE)
        size = self._page_size(visit.query.get("size"))
        insp = self.dash.inspector()
        events = await insp.scheduler_history(entry, page=page, page_size=size)
        found = [e for e in await insp.scheduler_entries() if e.id == entry]
        return self.dash.render(
            visit,
            "scheduler.html",
            entry_id=entry,
            entry=found[0] if found else None,
            events=events,
            page=page,
            size=size,
        )

    # ----------------------------------------------------------------- login

    async def login_form(self, visit: Visit) -> Response:
        """The login page (the dashboard itself when no login is configured)."""
        if self.dash.settings.auth is None or visit.session.user is not None:
            return visit.redirect("/")
        return self.dash.render(visit, "login.html", failed=False, notice=self._notice(visit))

    async def login(self, visit: Visit) -> Response:
        """Check the credentials; on success start a new, logged-in session.

        An address with too many recent failures gets a 429 instead, whatever
        it sends (see :class:`~taskq.web._security.LoginLimiter`).
        """
        auth = self.dash.settings.auth
        if auth is None:
            return visit.redirect("/")
        username = visit.body.get("username") or ""
        self.dash.refuse_if_locked_out(visit, username)
        password = visit.body.get("password") or ""
        ok = auth.check(username, password)
        self.dash.count_login(visit, username, ok)
        if not ok:
            return self.dash.render(visit, "login.html", 401, failed=True, notice=None)
        self.dash.start_session(visit, auth.username)
        return visit.redirect("/")

    async def logout(self, visit: Visit) -> Response:
        """End the session."""
        self.dash.start_session(visit, None)
        if self.dash.settings.auth is None:
            return visit.redirect("/")
        return visit.redirect("/login", notice="logged_out")

    # ----------------------------------------------------------------- form posts

    async def post_queue(self, visit: Visit) -> Response:
        """Pause, unpause or (confirmed) delete a queue, then go back."""
        b = visit.body
        queue = text_param(b.get("queue"), "queue")
        action = text_param(b.get("action"), "action")
        await queue_action(
            self.dash, visit, action, queue, force=b.flag("force"), confirmed=b.flag("confirm")
        )
        if action == "delete":
            return visit.redirect("/", notice="deleted_queue")
        notice = "paused" if action == "pause" else "unpaused"
        if b.get("return_to") == "queue":
            return visit.redirect("/queue", queue=queue, notice=notice)
        return visit.redirect("/", notice=notice)

    async def post_tasks(self, visit: Visit) -> Response:
        """Run, archive, delete or cancel one task (``row``) or the selected ones."""
        b = visit.body
        queue = text_param(b.get("queue"), "queue")
        row = b.get("row")
        if row:
            action, _, task_id = row.partition(":")
            ids = [task_id]
        else:
            action = text_param(b.get("action"), "action")
            ids = b.getlist("id")
        outcome = await task_action(self.dash, visit, action, queue, ids)
        notice = {"notice": action, "n": outcome.done, "failed": len(outcome.failed) or None}
        if b.get("return_to") == "task" and action not in {"delete"}:
            return visit.redirect("/task", queue=queue, id=ids[0], **notice)
        return visit.redirect("/queue", **self._queue_params(visit), **notice)

    async def post_bulk(self, visit: Visit) -> Response:
        """Run, archive or delete every task of a state, once confirmed."""
        b = visit.body
        queue = text_param(b.get("queue"), "queue")
        action = text_param(b.get("action"), "action")
        state = state_param(b.get("state"))
        group = b.get("group") or None
        count = await bulk_action(
            self.dash, visit, action, queue, state, group, confirmed=b.flag("confirm")
        )
        return visit.redirect(
            "/queue", queue=queue, state=state.value, group=group, notice=action, n=count
        )

    def _queue_params(self, visit: Visit) -> dict[str, object]:
        """Where a task form came from (queue, state, page, size, group), checked."""
        b = visit.body
        state = state_param(b.get("state"), TaskState.PENDING)
        return {
            "queue": b.get("queue"),
            "state": state.value,
            "page": int_param(b.get("page"), "page", 1, 1, MAX_PAGE),
            "size": self._page_size(b.get("size")),
            "group": b.get("group") or None,
        }
