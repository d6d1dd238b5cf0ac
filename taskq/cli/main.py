"""The ``taskq`` command: argument parsing, dispatch, errors and exit codes.

Exit codes (also in docs/cli.md):

====  ==========================================================
0     success
1     error (anything not listed below)
2     usage: unknown command or option, bad value (duration, time, name)
3     not found: unknown queue, task or scheduler entry
4     conflict: the task's state forbids it, the queue is not empty,
      the task id is taken, a unique task is already queued
5     the broker cannot be reached, or timed out
130   interrupted (Ctrl-C)
====  ==========================================================

Errors are printed as one line on stderr (``taskq: error: ...``); ``--debug``
adds the traceback. Broker passwords never appear in any output.

A subcommand module exposes ``add_parser(subparsers)``; the parser it adds
sets ``func`` with ``set_defaults(func=...)``. ``func(args)`` returns an exit
code (None means 0) or an awaitable of one, which is run with
:func:`asyncio.run`. ``args.broker`` (None when not given: use
:func:`taskq.cli._common.broker_url`), ``args.json`` and ``args.debug`` are
always present.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast

from taskq.cli._common import (
    BAD_INPUT,
    BROKER_DOWN,
    CONFLICT,
    EXIT_BROKER,
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    NOT_FOUND,
    OTHER,
    CliError,
    add_global_options,
    broker_url,
    error_kind,
    one_line,
)

__all__ = ["build_parser", "main"]

# Our own subcommands, then the ones other parts of taskq contribute.
_COMMANDS = ("enqueue", "queues", "tasks", "fleet", "stats", "dash", "web")
_OPTIONAL_COMMANDS = {
    "worker": "run a worker server (taskq worker APP:MUX)",
    "scheduler": "run a periodic-task scheduler",
}

log = logging.getLogger("taskq.cli")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line with a pointer to ``--help`` and exit 2."""
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """Build the complete ``taskq`` argument parser."""
    from taskq import __version__

    parser = Parser(
        prog="taskq",
        description="Inspect and manage taskq queues, tasks, servers and schedulers.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict, "
        "5 broker unreachable, 130 interrupted.",
    )
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"taskq {__version__}")
    # Subcommand parsers are of the parser's own class (Parser): one-line errors everywhere.
    subparsers = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )
    for name in _COMMANDS:
        module = importlib.import_module(f"taskq.cli.{name}")
        module.add_parser(subparsers)
    for name, summary in _OPTIONAL_COMMANDS.items():
        _add_optional(subparsers, name, summary)
    return parser


def _add_optional(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> None:
    """Add a subcommand another part of taskq provides, or a placeholder explaining its absence."""
    try:
        module = importlib.import_module(f"taskq.cli.{name}")
        add_parser: Callable[..., None] = module.add_parser
    except ModuleNotFoundError as exc:
        if exc.name != f"taskq.cli.{name}":
            reason = f"it needs a module that is not installed: {exc.name}"
        else:
            reason = "it is not part of this installation"
        _add_placeholder(subparsers, name, summary, reason)
        return
    except Exception as exc:  # a broken plug-in must not take the whole CLI down
        _add_placeholder(subparsers, name, summary, f"it failed to load: {exc}")
        return
    add_parser(subparsers)


def _add_placeholder(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    reason: str,
) -> None:
    def unavailable(args: argparse.Namespace) -> int:
        raise CliError(f"'taskq {name}' is unavailable: {reason}")

    sub = subparsers.add_parser(name, help=f"{summary} (unavailable)", add_help=True)
    sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    sub.set_defaults(func=unavailable)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, CliError):
        return exc.code
    return _EXIT_BY_KIND[error_kind(exc)]


_EXIT_BY_KIND = {
    NOT_FOUND: EXIT_NOT_FOUND,
    CONFLICT: EXIT_CONFLICT,
    BAD_INPUT: EXIT_USAGE,
    BROKER_DOWN: EXIT_BROKER,
    OTHER: EXIT_ERROR,
}
_one_line = one_line  # the name the tests and older imports use


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskq`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(args.debug)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result = func(args)
        if inspect.isawaitable(result):
            import asyncio

            async def _await() -> object:
                return await result

            result = asyncio.run(_await())
    except KeyboardInterrupt:
        sys.stderr.write("taskq: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            log.exception("command failed")
        sys.stderr.write(f"taskq: error: {_one_line(exc, broker_url(args))}\n")
        return _exit_code(exc)
    finally:
        sys.stdout.flush()
    return EXIT_OK if result is None else int(result)


if __name__ == "__main__":
    sys.exit(main())
