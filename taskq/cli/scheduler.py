"""``taskq scheduler APP:SCHEDULER``: run a Scheduler or PeriodicTaskManager from your code.

``APP`` is an importable module (the current directory is on the path) and
``SCHEDULER`` the name of a :class:`taskq.Scheduler` or
:class:`taskq.PeriodicTaskManager` in it (dots reach attributes), or of a
function without arguments returning one. The object brings its own broker.
The command blocks until SIGTERM or SIGINT, then shuts the scheduler down
cleanly. Also runnable as ``python -m taskq.cli.scheduler APP:SCHEDULER``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from taskq.cli._common import CliError, common_options, load_app_object

__all__ = ["add_parser", "load_target", "main", "run_command"]

_LEVELS = ("debug", "info", "warning", "error")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        metavar="APP:SCHEDULER",
        help="a Scheduler or PeriodicTaskManager as module:attribute (e.g. myapp.cron:scheduler)",
    )
    parser.add_argument(
        "--log-level",
        choices=_LEVELS,
        default="info",
        help="log level of the scheduler's messages (default: info)",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scheduler APP:SCHEDULER`` on the ``taskq`` command's subparsers."""
    parser = subparsers.add_parser(
        "scheduler",
        parents=[common_options()],
        help="run a periodic-task scheduler (taskq scheduler APP:SCHEDULER)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_command)


def load_target(target: str) -> Any:
    """Import ``module:attr`` and return the Scheduler or PeriodicTaskManager it names.

    A function (without arguments) found there is called and its result used.

    Raises:
        CliError: the target is malformed, cannot be imported, or is not a scheduler.
    """
    from taskq.scheduler import PeriodicTaskManager, Scheduler

    return load_app_object(
        target,
        (Scheduler, PeriodicTaskManager),
        "APP:SCHEDULER",
        "taskq.Scheduler or PeriodicTaskManager",
    )


def run_command(args: argparse.Namespace) -> int:
    """Load the target and run it until SIGTERM / SIGINT; the exit code."""
    logging.getLogger("taskq").setLevel(args.log_level.upper())
    scheduler = load_target(args.target)
    scheduler.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scheduler APP:SCHEDULER`` on its own (``python -m taskq.cli.scheduler``)."""
    parser = argparse.ArgumentParser(prog="taskq scheduler", description=__doc__)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_command(args)
    except CliError as exc:
        sys.stderr.write(f"taskq scheduler: error: {exc}\n")
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
