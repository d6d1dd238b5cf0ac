"""``taskq group ls``, ``taskq server ls``, ``taskq cron ls|history``."""

from __future__ import annotations

import argparse

from taskq.cli._common import common_options, open_inspector, wants_json
from taskq.cli._output import ago, print_json, print_table, short_payload
from taskq.cli._parse import parse_positive_int

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``group``, ``server`` and ``cron`` subcommand groups."""
    common = common_options()

    group = subparsers.add_parser("group", help="list task groups of a queue")
    group_sub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    group_ls = group_sub.add_parser("ls", parents=[common], help="groups and their sizes")
    group_ls.add_argument("--queue", "-q", default="default", help="queue (default: default)")
    group_ls.set_defaults(func=list_groups)

    server = subparsers.add_parser("server", help="list worker servers")
    server_sub = server.add_subparsers(dest="server_command", metavar="ACTION", required=True)
    server_ls = server_sub.add_parser("ls", parents=[common], help="live servers")
    server_ls.set_defaults(func=list_servers)

    cron = subparsers.add_parser("cron", help="periodic-task entries and their history")
    cron_sub = cron.add_subparsers(dest="cron_command", metavar="ACTION", required=True)
    cron_ls = cron_sub.add_parser("ls", parents=[common], help="entries of live schedulers")
    cron_ls.set_defaults(func=list_cron)
    history = cron_sub.add_parser("history", parents=[common], help="tasks an entry enqueued")
    history.add_argument("entries", nargs="+", metavar="ENTRY_ID")
    history.add_argument("--page", type=parse_positive_int, default=1, help="page, from 1")
    history.add_argument("--size", type=parse_positive_int, default=30, help="per page")
    history.set_defaults(func=cron_history)


async def list_groups(args: argparse.Namespace) -> int:
    """Print the groups of a queue."""
    async with open_inspector(args) as insp:
        groups = await insp.groups(args.queue)
    if wants_json(args):
        print_json(groups)
        return 0
    rows = [[g.group, g.size] for g in sorted(groups, key=lambda g: g.group)]
    print_table(["group", "size"], rows, empty=f"No groups in queue {args.queue!r}.")
    return 0


async def list_servers(args: argparse.Namespace) -> int:
    """Print live servers and what they are running."""
    async with open_inspector(args) as insp:
        servers = await insp.servers()
    if wants_json(args):
        print_json(servers)
        return 0
    rows = [
        [
            s.host,
            s.pid,
            s.status,
            f"{len(s.active_workers)}/{s.concurrency}",
            ", ".join(f"{q}={w}" for q, w in sorted(s.queues.items())),
            "yes" if s.strict_priority else "no",
            ago(s.started_at),
            s.id,
        ]
        for s in servers
    ]
    headers = ["host", "pid", "status", "busy", "queues", "strict", "started", "id"]
    print_table(headers, rows, empty="No servers are running.")
    workers = [(s, w) for s in servers for w in s.active_workers]
    if workers:
        print()
        print_table(
            ["server", "task id", "type", "queue", "payload", "started"],
            [
                [
                    f"{s.host}:{s.pid}",
                    w.task_id,
                    w.task_type,
                    w.queue,
                    short_payload(w.payload),
                    ago(w.started_at) + (f" (cut off: {w.cut_off})" if w.cut_off else ""),
                ]
                for s, w in workers
            ],
            title="Active tasks",
        )
    return 0


async def list_cron(args: argparse.Namespace) -> int:
    """Print the periodic-task entries of live schedulers."""
    async with open_inspector(args) as insp:
        entries = await insp.scheduler_entries()
    if wants_json(args):
        print_json(entries)
        return 0
    rows = [
        [
            e.id,
            e.spec,
            e.task_type,
            short_payload(e.payload),
            ", ".join(f"{k}={v}" for k, v in sorted(e.options.items())) or "-",
            ago(e.next_enqueue_at),
            ago(e.prev_enqueue_at),
        ]
        for e in entries
    ]
    headers = ["entry id", "spec", "type", "payload", "options", "next", "previous"]
    print_table(headers, rows, empty="No scheduler entries.")
    return 0


async def cron_history(args: argparse.Namespace) -> int:
    """Print the tasks the given scheduler entries enqueued, newest first."""
    async with open_inspector(args) as insp:
        histories = [
            (entry, await insp.scheduler_history(entry, page=args.page, page_size=args.size))
            for entry in args.entries
        ]
    if wants_json(args):
        print_json({entry: events for entry, events in histories})
        return 0
    for n, (entry, events) in enumerate(histories):
        if n:
            print()
        rows = [
            [e.task_id, e.enqueued_at.strftime("%Y-%m-%d %H:%M:%S UTC"), ago(e.enqueued_at)]
            for e in events
        ]
        print_table(
            ["task id", "enqueued at", "when"],
            rows,
            title=f"Entry {entry}",
            empty="No enqueues recorded.",
        )
    return 0
