"""The changes the dashboard can make, shared by the HTML forms and the JSON API.

Each one is a call of the :class:`~taskq.AsyncInspector` (bulk ones run in
chunks there) and is logged by :meth:`~taskq.web._core.Dashboard.audit`.
"""

from __future__ import annotations

from typing import Final

import attrs

from taskq import errors
from taskq.task import TaskState
from taskq.web._core import BULK_ACTIONS, Dashboard, HttpError, Visit

__all__ = [
    "QUEUE_ACTIONS",
    "TASK_ACTIONS",
    "Outcome",
    "bulk_action",
    "queue_action",
    "task_action",
]

QUEUE_ACTIONS: Final = ("pause", "unpause", "delete")
TASK_ACTIONS: Final = ("run", "archive", "delete", "cancel")


@attrs.frozen
class Outcome:
    """How a change of several tasks went: how many were done, which failed and why."""

    done: int
    failed: tuple[tuple[str, str], ...] = ()


async def queue_action(
    dash: Dashboard, visit: Visit, action: str, queue: str, *, force: bool, confirmed: bool
) -> None:
    """Pause, unpause or delete ``queue`` (deleting needs ``confirmed``).

    Raises:
        HttpError: unknown action, or a delete without confirmation.
        TaskqError: from the inspector.
    """
    insp = dash.inspector()
    if action == "pause":
        await insp.pause_queue(queue)
    elif action == "unpause":
        await insp.unpause_queue(queue)
    elif action == "delete":
        if not confirmed:
            raise HttpError(400, "deleting a queue needs confirmation (confirm=true)")
        await insp.delete_queue(queue, force=force)
    else:
        raise HttpError(404, f"unknown queue action; one of: {', '.join(QUEUE_ACTIONS)}")
    dash.audit(visit, f"queue {action}" + (" (force)" if force else ""), queue)


async def task_action(
    dash: Dashboard, visit: Visit, action: str, queue: str, ids: list[str]
) -> Outcome:
    """Run, archive, delete or cancel the tasks ``ids`` of ``queue``, one by one.

    A task that fails (gone, or in a state that forbids the action) does not
    stop the others; with a single id its error is raised instead.

    Raises:
        HttpError: unknown action, no ids, or more ids than a page holds.
        TaskqError: the only task could not be changed.
    """
    if action not in TASK_ACTIONS:
        raise HttpError(404, f"unknown task action; one of: {', '.join(TASK_ACTIONS)}")
    if not ids:
        raise HttpError(400, "select at least one task")
    if len(ids) > dash.settings.max_page_size:
        raise HttpError(400, f"at most {dash.settings.max_page_size} tasks at once")
    insp = dash.inspector()
    done = 0
    failed: list[tuple[str, str]] = []
    for task_id in ids:
        try:
            if action == "run":
                await insp.run_task(queue, task_id)
            elif action == "archive":
                await insp.archive_task(queue, task_id)
            elif action == "delete":
                await insp.delete_task(queue, task_id)
            else:
                await insp.cancel_processing(task_id, queue)
        except (errors.TaskNotFoundError, errors.TaskStateError) as exc:
            if len(ids) == 1:
                raise
            failed.append((task_id, dash.scrub(exc)))
        else:
            done += 1
    dash.audit(visit, f"task {action}", queue, ids)
    return Outcome(done, tuple(failed))


async def bulk_action(
    dash: Dashboard,
    visit: Visit,
    action: str,
    queue: str,
    state: TaskState,
    group: str | None,
    *,
    confirmed: bool,
) -> int:
    """Run, archive or delete every task of ``queue`` in ``state``; returns how many.

    Raises:
        HttpError: unknown action, one the state does not allow, or no confirmation.
        TaskqError: from the inspector.
    """
    if action not in BULK_ACTIONS[state]:
        allowed = ", ".join(BULK_ACTIONS[state]) or "none"
        raise HttpError(400, f"cannot {action} every {state.value} task (allowed: {allowed})")
    if not confirmed:
        raise HttpError(400, f"{action} of every {state.value} task needs confirmation")
    insp = dash.inspector()
    if action == "run":
        count = await insp.run_all_tasks(queue, state, group=group)
    elif action == "archive":
        count = await insp.archive_all_tasks(queue, state, group=group)
    else:
        count = await insp.delete_all_tasks(queue, state, group=group)
    dash.audit(visit, f"{action} all {count} {state.value}", queue, [group] if group else [])
    return count
