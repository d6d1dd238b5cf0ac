"""``taskq enqueue TYPE [PAYLOAD|-]``: put one task on a queue."""

from __future__ import annotations

import argparse
import sys

from taskq.cli._common import common_options, open_broker, wants_json
from taskq.cli._output import fmt_time, print_json
from taskq.cli._parse import parse_duration, parse_header, parse_non_negative_int, parse_time

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``enqueue`` subcommand."""
    parser = subparsers.add_parser(
        "enqueue",
        parents=[common_options()],
        help="enqueue a task",
        description="Enqueue a task. The payload is taken as UTF-8 text; '-' reads raw bytes "
        "from standard input. Durations look like 250ms, 30s, 5m, 1h30m; times are ISO-8601 "
        "with an offset (2030-01-02T15:04:05Z).",
    )
    parser.add_argument("type", metavar="TYPE", help="the task type, e.g. email:welcome")
    parser.add_argument(
        "payload", metavar="PAYLOAD", nargs="?", default="", help="payload text, or - for stdin"
    )
    parser.add_argument("--queue", "-q", default=None, help="queue name (default: default)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--process-in", type=parse_duration, metavar="DURATION", help="delay")
    when.add_argument("--process-at", type=parse_time, metavar="TIME", help="run at this time")
    parser.add_argument(
        "--max-retry", type=parse_non_negative_int, metavar="N", help="retries (default 25)"
    )
    parser.add_argument("--timeout", type=parse_duration, metavar="DURATION", help="per attempt")
    parser.add_argument("--deadline", type=parse_time, metavar="TIME", help="must end by")
    parser.add_argument(
        "--unique", type=parse_duration, metavar="DURATION", help="hold a uniqueness lock this long"
    )
    parser.add_argument("--task-id", metavar="ID", help="your own task id")
    parser.add_argument(
        "--retention", type=parse_duration, metavar="DURATION", help="keep when completed"
    )
    parser.add_argument("--group", metavar="GROUP", help="aggregate into this group")
    parser.add_argument(
        "--header",
        "-H",
        action="append",
        type=parse_header,
        default=[],
        metavar="KEY=VALUE",
        help="a task header (repeatable)",
    )
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    """Enqueue the task described by ``args`` and print what was stored."""
    from taskq.client import AsyncClient
    from taskq.task import Task

    payload = sys.stdin.buffer.read() if args.payload == "-" else args.payload.encode("utf-8")
    task = Task(args.type, payload, dict(args.header))
    broker = open_broker(args)
    try:
        info = await AsyncClient(broker).enqueue(
            task,
            queue=args.queue,
            max_retry=args.max_retry,
            timeout=args.timeout,
            deadline=args.deadline,
            unique=args.unique,
            task_id=args.task_id,
            retention=args.retention,
            group=args.group,
            process_at=args.process_at,
            process_in=args.process_in,
        )
    finally:
        await broker.close()
    if wants_json(args):
        print_json(info)
        return 0
    line = f"Enqueued task {info.id} to queue {info.queue!r} ({info.state.value}"
    if info.next_process_at is not None and info.state.value == "scheduled":
        line += f", runs at {fmt_time(info.next_process_at)}"
    if info.group:
        line += f", group {info.group!r}"
    print(line + ")")
    return 0
