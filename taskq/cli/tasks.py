"""``taskq task ls|inspect|cancel|delete|archive|run|deleteall|archiveall|runall``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from taskq.cli._common import common_options, open_inspector, wants_json
from taskq.cli._output import (
    ago,
    fmt_duration,
    fmt_time,
    print_json,
    print_kv,
    print_table,
    short_payload,
    to_jsonable,
)
from taskq.cli._parse import parse_positive_int

if TYPE_CHECKING:
    from taskq.task import TaskInfo

__all__ = ["add_parser"]

_STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")
_DEFAULT_QUEUE = "default"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``task`` subcommand group."""
    common = common_options()
    parser = subparsers.add_parser("task", help="list, inspect and manage tasks")
    sub = parser.add_subparsers(dest="task_command", metavar="ACTION", required=True)

    ls = sub.add_parser("ls", parents=[common], help="list a page of tasks in one state")
    _queue_option(ls)
    ls.add_argument("--state", "-s", choices=_STATES, default="pending", help="default pending")
    ls.add_argument("--group", "-g", help="only this group (aggregating tasks)")
    ls.add_argument("--page", type=parse_positive_int, default=1, help="page number, from 1")
    ls.add_argument(
        "--size", type=parse_positive_int, default=30, help="tasks per page (default 30)"
    )
    ls.set_defaults(func=list_tasks)

    inspect = sub.add_parser("inspect", parents=[common], help="show everything about a task")
    inspect.add_argument("ids", nargs="+", metavar="ID")
    _queue_option(inspect)
    inspect.set_defaults(func=inspect_tasks)

    cancel = sub.add_parser(
        "cancel",
        parents=[common],
        help="stop active tasks; archive ones not started yet",
    )
    cancel.add_argument("ids", nargs="+", metavar="ID")
    cancel.add_argument("--queue", "-q", help="the tasks' queue (default: search every queue)")
    cancel.set_defaults(func=cancel_tasks)

    for action, verb, text in (
        ("delete", "Deleted", "delete tasks (not active ones)"),
        ("archive", "Archived", "archive tasks so they never run"),
        ("run", "Queued to run now", "run tasks now (an archived one gets its retries back)"),
    ):
        one = sub.add_parser(action, parents=[common], help=text)
        one.add_argument("ids", nargs="+", metavar="ID")
        _queue_option(one)
        one.set_defaults(func=change_tasks, action=action, verb=verb)

    for action, verb, states in (
        ("deleteall", "Deleted", [s for s in _STATES if s != "active"]),
        ("archiveall", "Archived", ["pending", "scheduled", "retry", "aggregating"]),
        (
            "runall",
            "Queued to run now",
            ["scheduled", "retry", "archived", "completed", "aggregating"],
        ),
    ):
        bulk = sub.add_parser(
            action, parents=[common], help=f"{action[:-3]} every task in one state"
        )
        _queue_option(bulk)
        bulk.add_argument("--state", "-s", choices=states, required=True)
        bulk.add_argument("--group", "-g", help="only this group (aggregating tasks)")
        bulk.set_defaults(func=bulk_change, action=action, verb=verb)


def _queue_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue", "-q", default=_DEFAULT_QUEUE, help=f"queue name (default: {_DEFAULT_QUEUE})"
    )


def _columns(state: str) -> tuple[list[str], list[str]]:
    """Extra headers and TaskInfo-derived columns worth showing for ``state``."""
    extra = {
        "pending": ["enqueued"],
        "active": ["orphaned", "deadline"],
        "scheduled": ["process at"],
        "retry": ["next retry", "retried", "last error"],
        "archived": ["failed at", "retried", "last error"],
        "completed": ["completed", "result"],
        "aggregating": ["group", "enqueued"],
    }
    names = extra[state]
    return ["id", "type", "payload", *names], names


def _cell(task: TaskInfo, column: str) -> str:
    if column == "enqueued":
        return ago(task.enqueued_at)
    if column == "orphaned":
        return "yes" if task.is_orphaned else "no"
    if column == "deadline":
        return fmt_time(task.deadline)
    if column in {"process at", "next retry"}:
        return ago(task.next_process_at)
    if column == "retried":
        return f"{task.retried}/{task.max_retry}"
    if column == "last error":
        return short_payload(task.last_error.encode("utf-8"), 60) if task.last_error else "-"
    if column == "failed at":
        return ago(task.last_failed_at)
    if column == "completed":
        return ago(task.completed_at)
    if column == "result":
        return short_payload(task.result)
    if column == "group":
        return task.group or "-"
    raise AssertionError(column)


async def list_tasks(args: argparse.Namespace) -> int:
    """Print one page of the tasks of a queue in one state."""
    async with open_inspector(args) as insp:
        tasks = await insp.list_tasks(
            args.queue, args.state, page=args.page, page_size=args.size, group=args.group
        )
    if wants_json(args):
        print_json(tasks)
        return 0
    headers, extra = _columns(args.state)
    rows = [[t.id, t.type, short_payload(t.payload), *(_cell(t, c) for c in extra)] for t in tasks]
    empty = f"No {args.state} tasks in queue {args.queue!r}"
    print_table(headers, rows, empty=empty + (f" on page {args.page}." if args.page > 1 else "."))
    if len(tasks) == args.size:
        print(f"(page {args.page}; more may follow: --page {args.page + 1})")
    return 0


async def inspect_tasks(args: argparse.Namespace) -> int:
    """Print every detail of the given tasks."""
    async with open_inspector(args) as insp:
        infos = [await insp.get_task_info(args.queue, task_id) for task_id in args.ids]
    if wants_json(args):
        print_json(infos)
        return 0
    for n, task in enumerate(infos):
        if n:
            print()
        payload = to_jsonable(task.payload)
        result = "-" if task.result is None else to_jsonable(task.result)
        print_kv(
            [
                ("ID", task.id),
                ("Queue", task.queue),
                ("Type", task.type),
                ("State", task.state.value + (" (orphaned)" if task.is_orphaned else "")),
                ("Payload", payload if payload is not None else f"<{len(task.payload)} bytes>"),
                ("Headers", ", ".join(f"{k}={v}" for k, v in task.headers.items()) or "-"),
                ("Group", task.group or "-"),
                ("Retried", f"{task.retried}/{task.max_retry}"),
                ("Last error", task.last_error or "-"),
                ("Last failed at", fmt_time(task.last_failed_at)),
                ("Timeout", fmt_duration(task.timeout)),
                ("Deadline", fmt_time(task.deadline)),
                ("Next process at", fmt_time(task.next_process_at)),
                ("Enqueued at", fmt_time(task.enqueued_at)),
                ("Completed at", fmt_time(task.completed_at)),
                ("Retention", fmt_duration(task.retention)),
                ("Result", result if result is not None else f"<{len(task.result or b'')} bytes>"),
            ]
        )
    return 0


async def cancel_tasks(args: argparse.Namespace) -> int:
    """Cancel the given tasks wherever they are."""
    done = []
    async with open_inspector(args) as insp:
        for task_id in args.ids:
            state = await insp.cancel_processing(task_id, args.queue)
            done.append({"id": task_id, "previous_state": state.value})
            if wants_json(args):
                continue
            if state.value == "active":
                print(f"Cancellation sent to active task {task_id}")
            else:
                print(f"Task {task_id} was {state.value}: archived as canceled")
    if wants_json(args):
        print_json(done)
    return 0


async def change_tasks(args: argparse.Namespace) -> int:
    """Delete, archive or run the given tasks."""
    done = []
    async with open_inspector(args) as insp:
        operation = {
            "delete": insp.delete_task,
            "archive": insp.archive_task,
            "run": insp.run_task,
        }[args.action]
        for task_id in args.ids:
            await operation(args.queue, task_id)
            done.append({"id": task_id, "queue": args.queue, "action": args.action})
            if not wants_json(args):
                print(f"{args.verb}: task {task_id} in queue {args.queue!r}")
    if wants_json(args):
        print_json(done)
    return 0


async def bulk_change(args: argparse.Namespace) -> int:
    """Delete, archive or run every task of a queue in one state."""
    async with open_inspector(args) as insp:
        operation = {
            "deleteall": insp.delete_all_tasks,
            "archiveall": insp.archive_all_tasks,
            "runall": insp.run_all_tasks,
        }[args.action]
        count = await operation(args.queue, args.state, group=args.group)
    if wants_json(args):
        print_json({"queue": args.queue, "state": args.state, "count": count})
        return 0
    where = f"queue {args.queue!r}" + (f", group {args.group!r}" if args.group else "")
    print(f"{args.verb}: {count} {args.state} task{'s' if count != 1 else ''} in {where}")
    return 0
