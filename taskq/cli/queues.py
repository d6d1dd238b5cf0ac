"""``taskq queue ls|inspect|history|pause|unpause|rm``."""

from __future__ import annotations

import argparse

from taskq.cli._common import EXIT_CONFLICT, CliError, common_options, open_inspector, wants_json
from taskq.cli._output import (
    fmt_bytes,
    fmt_duration,
    fmt_time,
    print_json,
    print_kv,
    print_table,
)
from taskq.cli._parse import parse_days

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``queue`` subcommand group."""
    common = common_options()
    parser = subparsers.add_parser("queue", help="list, inspect, pause and remove queues")
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    ls = sub.add_parser("ls", parents=[common], help="list queues with their sizes by state")
    ls.set_defaults(func=ls_queues)

    inspect = sub.add_parser("inspect", parents=[common], help="show everything about queues")
    inspect.add_argument("queues", nargs="+", metavar="QUEUE")
    inspect.set_defaults(func=inspect_queues)

    history = sub.add_parser(
        "history", parents=[common], help="processed and failed counts per day"
    )
    history.add_argument("queues", nargs="+", metavar="QUEUE")
    history.add_argument(
        "--days", "-x", type=parse_days, default=7, help="how many days (default 7)"
    )
    history.set_defaults(func=queue_history)

    pause = sub.add_parser("pause", parents=[common], help="stop workers taking tasks")
    pause.add_argument("queues", nargs="+", metavar="QUEUE")
    pause.set_defaults(func=pause_queues, paused=True)

    unpause = sub.add_parser(
        "unpause", aliases=["resume"], parents=[common], help="let workers take tasks again"
    )
    unpause.add_argument("queues", nargs="+", metavar="QUEUE")
    unpause.set_defaults(func=pause_queues, paused=False)

    rm = sub.add_parser(
        "rm",
        aliases=["remove"],
        parents=[common],
        help="remove queues (empty ones, or with --force any without active tasks)",
    )
    rm.add_argument("queues", nargs="+", metavar="QUEUE")
    rm.add_argument(
        "--force", "-f", action="store_true", help="remove even if it holds (inactive) tasks"
    )
    rm.set_defaults(func=remove_queues)


async def ls_queues(args: argparse.Namespace) -> int:
    """Print every queue with its size by state."""
    from taskq.errors import QueueNotFoundError

    async with open_inspector(args) as insp:
        infos = []
        for name in await insp.queues():
            try:
                infos.append(await insp.get_queue_info(name))
            except QueueNotFoundError:  # removed while we were listing
                continue
    if wants_json(args):
        print_json(infos)
        return 0
    headers = [
        "queue",
        "state",
        "size",
        "pending",
        "active",
        "scheduled",
        "retry",
        "archived",
        "completed",
        "aggregating",
        "latency",
    ]
    rows = [
        [
            i.queue,
            "paused" if i.paused else "run",
            i.size,
            i.pending,
            i.active,
            i.scheduled,
            i.retry,
            i.archived,
            i.completed,
            i.aggregating,
            fmt_duration(i.latency),
        ]
        for i in infos
    ]
    print_table(headers, rows, empty="No queues.")
    return 0


async def inspect_queues(args: argparse.Namespace) -> int:
    """Print every detail of the given queues."""
    async with open_inspector(args) as insp:
        infos = [await insp.get_queue_info(name) for name in args.queues]
    if wants_json(args):
        print_json(infos)
        return 0
    for n, info in enumerate(infos):
        if n:
            print()
        print_kv(
            [
                ("Queue", info.queue),
                ("Paused", "yes" if info.paused else "no"),
                ("Size", info.size),
                ("Groups", info.groups),
                ("Latency", fmt_duration(info.latency)),
                ("Memory", fmt_bytes(info.memory_bytes)),
                ("Processed today", info.processed),
                ("Failed today", info.failed),
                ("Processed total", info.processed_total),
                ("Failed total", info.failed_total),
                ("Snapshot at", fmt_time(info.timestamp)),
            ]
        )
        print()
        states = ["pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"]
        print_table(states, [[getattr(info, s) for s in states]])
    return 0


async def queue_history(args: argparse.Namespace) -> int:
    """Print daily processed and failed counts of the given queues."""
    async with open_inspector(args) as insp:
        histories = [(name, await insp.history(name, args.days)) for name in args.queues]
    if wants_json(args):
        print_json([day for _, days in histories for day in days])
        return 0
    for n, (name, days) in enumerate(histories):
        if n:
            print()
        rows = [
            [
                d.date.isoformat(),
                d.processed,
                d.failed,
                f"{100 * d.failed / d.processed:.1f}%" if d.processed else "-",
            ]
            for d in days
        ]
        print_table(["date", "processed", "failed", "failure rate"], rows, title=f"Queue {name!r}")
    return 0


async def pause_queues(args: argparse.Namespace) -> int:
    """Pause (or unpause) the given queues."""
    done = []
    async with open_inspector(args) as insp:
        for name in args.queues:
            if args.paused:
                await insp.pause_queue(name)
            else:
                await insp.unpause_queue(name)
            done.append({"queue": name, "paused": bool(args.paused)})
            if not wants_json(args):
                print(f"{'Paused' if args.paused else 'Unpaused'} queue {name!r}")
    if wants_json(args):
        print_json(done)
    return 0


async def remove_queues(args: argparse.Namespace) -> int:
    """Remove the given queues."""
    from taskq.errors import QueueNotEmptyError

    done = []
    async with open_inspector(args) as insp:
        for name in args.queues:
            try:
                await insp.delete_queue(name, force=args.force)
            except QueueNotEmptyError as exc:
                if args.force:
                    message = f"queue {name!r} has active tasks; stop its workers first ({exc})"
                else:
                    message = f"queue {name!r} is not empty; use --force to remove its tasks too"
                raise CliError(message, EXIT_CONFLICT) from exc
            done.append({"queue": name, "removed": True})
            if not wants_json(args):
                print(f"Removed queue {name!r}")
    if wants_json(args):
        print_json(done)
    return 0
