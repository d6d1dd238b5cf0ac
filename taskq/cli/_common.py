"""What every taskq subcommand shares: the global options, the broker, the Inspector."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskq.brokers.base import Broker
    from taskq.inspector import AsyncInspector

__all__ = [
    "EXIT_BROKER",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_RESTART",
    "EXIT_USAGE",
    "CliError",
    "broker_url",
    "common_options",
    "load_app_object",
    "open_broker",
    "open_inspector",
    "wants_json",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_BROKER = 5
EXIT_RESTART = 75  # EX_TEMPFAIL: a worker stopped for a stuck handler; start a new one
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error a command reports as one line with a chosen exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


_COMMON: argparse.ArgumentParser | None = None


def common_options() -> argparse.ArgumentParser:
    """A parent parser holding ``--broker``, ``--json`` and ``--debug``.

    Subcommands list it in ``parents=`` so the options work after the
    subcommand too (``taskq queue ls --json``). Defaults are suppressed there so
    a value given before the subcommand is not overwritten.
    """
    global _COMMON
    if _COMMON is None:
        parser = argparse.ArgumentParser(add_help=False)
        add_global_options(parser, suppress=True)
        _COMMON = parser
    return _COMMON


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Add ``--broker``, ``--json`` and ``--debug`` to ``parser``."""
    default_broker: object = argparse.SUPPRESS if suppress else None
    default_flag: object = argparse.SUPPRESS if suppress else False
    group = parser.add_argument_group("global options")
    group.add_argument(
        "--broker",
        "-b",
        metavar="URL",
        default=default_broker,
        help="broker URL (default: $TASKQ_BROKER, else sqlite:///taskq.db)",
    )
    group.add_argument(
        "--json", action="store_true", default=default_flag, help="print JSON for scripts"
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=default_flag,
        help="show tracebacks and debug logs on errors",
    )


def broker_url(args: argparse.Namespace) -> str:
    """The broker URL: ``--broker``, else ``$TASKQ_BROKER``, else the SQLite default."""
    from taskq.brokers.registry import DEFAULT_BROKER_URL

    given = getattr(args, "broker", None)
    return str(given or os.environ.get("TASKQ_BROKER") or DEFAULT_BROKER_URL)


def wants_json(args: argparse.Namespace) -> bool:
    """Whether ``--json`` was given."""
    return bool(getattr(args, "json", False))


def open_broker(args: argparse.Namespace) -> Broker:
    """Connect to the broker named by the arguments.

    Raises:
        CliError: the broker's module cannot be loaded (e.g. a missing extra).
    """
    from taskq.brokers.registry import connect, redact_url

    url = broker_url(args)
    try:
        return connect(url)
    except ImportError as exc:
        raise CliError(
            f"the broker for {redact_url(url)} is not available in this installation ({exc})"
        ) from exc


@contextlib.asynccontextmanager
async def open_inspector(args: argparse.Namespace) -> AsyncIterator[AsyncInspector]:
    """An :class:`~taskq.AsyncInspector` on the broker, closed on exit."""
    from taskq.inspector import AsyncInspector

    inspector = AsyncInspector(open_broker(args))
    try:
        yield inspector
    finally:
        await inspector.broker.close()


def stdout_is_tty() -> bool:
    """Whether standard output is a terminal."""
    return sys.stdout.isatty()


def load_app_object(spec: str, kinds: tuple[type, ...], usage: str, what: str) -> Any:
    """Import ``module:attribute`` and return the object of one of ``kinds`` it names.

    Dots in the attribute reach nested ones (``myapp.tasks:Holder.mux``); a
    callable that is not of ``kinds`` is taken as a factory and called without
    arguments. The current directory is importable, as with ``python -m``.

    Args:
        spec: the ``module:attribute`` text from the command line.
        kinds: the accepted types.
        usage: the argument's name in messages, e.g. ``APP:MUX``.
        what: the accepted types in messages, e.g. ``taskq.ServeMux``.

    Raises:
        CliError: (exit code 2) the spec is malformed, the import fails, an
            attribute is missing or the object is of none of ``kinds``.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(f"{usage} must look like module.path:attribute, got {spec!r}", EXIT_USAGE)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}", EXIT_USAGE) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"{module_name!r} has no attribute {attribute!r}", EXIT_USAGE) from None
    if not isinstance(obj, kinds) and callable(obj):
        obj = obj()
    if not isinstance(obj, kinds):
        raise CliError(
            f"{spec} is a {type(obj).__name__}, not a {what} (or a function returning one)",
            EXIT_USAGE,
        )
    return obj


# --------------------------------------------------------------------------- errors

NOT_FOUND, CONFLICT, BAD_INPUT, BROKER_DOWN, OTHER = (
    "not found",
    "conflict",
    "bad input",
    "broker down",
    "other",
)


def error_kind(exc: BaseException) -> str:
    """How a taskq error is classed for the CLI's exit codes and the dashboard's statuses.

    One of NOT_FOUND (queue or task), CONFLICT (wrong state, queue not empty,
    id or unique-lock conflict), BAD_INPUT (an invalid argument), BROKER_DOWN
    (unreachable or timed out: worth a retry) and OTHER.
    """
    from taskq import errors

    if isinstance(exc, (errors.QueueNotFoundError, errors.TaskNotFoundError)):
        return NOT_FOUND
    if isinstance(
        exc,
        (
            errors.TaskStateError,
            errors.QueueNotEmptyError,
            errors.TaskIDConflictError,
            errors.DuplicateTaskError,
        ),
    ):
        return CONFLICT
    if isinstance(exc, errors.InvalidArgumentError):
        return BAD_INPUT
    if isinstance(exc, (errors.BrokerConnectionError, errors.BrokerTimeoutError)):
        return BROKER_DOWN
    return OTHER


def one_line(exc: BaseException, url: str) -> str:
    """The error as one line, with the broker's password masked wherever it appears."""
    from urllib.parse import unquote, urlsplit

    from taskq.brokers.registry import redact_url

    text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    text = text.replace(url, redact_url(url))
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")}:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
