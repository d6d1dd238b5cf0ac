"""``taskq stats``: one summary of every queue, today's outcomes and the fleet."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from taskq.cli._common import common_options, open_inspector, wants_json
from taskq.cli._output import print_json, print_kv, print_table

if TYPE_CHECKING:
    from taskq.inspector import AsyncInspector

__all__ = ["STATES", "add_parser", "collect", "summarize"]

STATES = ("pending", "active", "scheduled", "retry", "archived", "completed", "aggregating")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``stats`` subcommand."""
    parser = subparsers.add_parser(
        "stats", parents=[common_options()], help="totals by state, per queue, today and fleet"
    )
    parser.set_defaults(func=show_stats)


async def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Gather the numbers ``taskq stats`` shows."""
    async with open_inspector(args) as insp:
        return await summarize(insp)


async def summarize(insp: AsyncInspector) -> dict[str, Any]:
    """The numbers ``taskq stats`` shows, read through an open inspector.

    Also the web dashboard's overview. ``queues`` holds a
    :class:`~taskq.inspector.QueueInfo` per queue; a queue removed while the
    summary is read is left out.
    """
    from taskq.errors import QueueNotFoundError

    queues = []
    for name in await insp.queues():
        try:
            queues.append(await insp.get_queue_info(name))
        except QueueNotFoundError:
            continue
    servers = await insp.servers()
    processed = sum(q.processed for q in queues)
    failed = sum(q.failed for q in queues)
    return {
        "states": {s: sum(q.count(s) for q in queues) for s in STATES},
        "queues": queues,
        "processed_today": processed,
        "failed_today": failed,
        "failure_rate_today": (failed / processed) if processed else 0.0,
        "servers": len(servers),
        "busy_workers": sum(len(s.active_workers) for s in servers),
        "concurrency": sum(s.concurrency for s in servers),
    }


async def show_stats(args: argparse.Namespace) -> int:
    """Print the summary."""
    stats = await collect(args)
    if wants_json(args):
        print_json(stats)
        return 0
    states: dict[str, int] = stats["states"]
    total = sum(states.values()) or 1
    print_table(
        ["state", "tasks", "share"],
        [[s, n, _bar(n / total)] for s, n in states.items()],
        title="Tasks by state",
    )
    print()
    rows = [
        [
            q.queue,
            q.size,
            "paused" if q.paused else "run",
            q.processed,
            q.failed,
            _rate(q.failed, q.processed),
        ]
        for q in stats["queues"]
    ]
    print_table(
        ["queue", "size", "state", "processed today", "failed today", "failure rate"],
        rows,
        title="Queues",
        empty="No queues.",
    )
    print()
    print_kv(
        [
            ("Processed today (UTC)", stats["processed_today"]),
            ("Failed today (UTC)", stats["failed_today"]),
            ("Failure rate today", _rate(stats["failed_today"], stats["processed_today"])),
            ("Servers", stats["servers"]),
            ("Busy workers", f"{stats['busy_workers']}/{stats['concurrency']}"),
        ]
    )
    return 0


def _rate(failed: int, processed: int) -> str:
    return f"{100 * failed / processed:.1f}%" if processed else "-"


def _bar(share: float, width: int = 20) -> str:
    filled = round(share * width)
    return "#" * filled + "." * (width - filled) + f" {100 * share:5.1f}%"
