"""Parsing command-line values: durations, times, headers, task states.

Each parser raises :class:`argparse.ArgumentTypeError` with a message that
says what was expected, so argparse reports it as one line naming the option.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from taskq import _time
from taskq.errors import InvalidDurationError

__all__ = ["parse_days", "parse_duration", "parse_header", "parse_positive_int", "parse_time"]

_DURATION_HINT = "use a number with a unit: 250ms, 30s, 5m, 1h30m, 2d"


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``250ms``, ``30s``, ``5m``, ``1h30m`` or ``1.5h``.

    Units: ``ms``, ``s``, ``m``, ``h``, ``d`` in any case; parts add up. A bare
    number is refused (it would be ambiguous).

    Raises:
        argparse.ArgumentTypeError: the text is not such a duration.
    """
    try:
        return timedelta(milliseconds=_time.parse_duration(text.lower()))
    except InvalidDurationError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} ({_DURATION_HINT})") from None


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time with a UTC offset, e.g. ``2030-01-02T15:04:05+01:00`` or ``...Z``.

    Raises:
        argparse.ArgumentTypeError: not ISO-8601, or no offset (taskq never
            guesses a timezone).
    """
    value = text.strip()
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r} (use ISO-8601 with an offset, e.g. 2030-01-02T15:04:05Z)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"time {text!r} has no UTC offset (add one, e.g. {text}Z or {text}+02:00)"
        )
    return parsed


def parse_header(text: str) -> tuple[str, str]:
    """Parse a ``key=value`` header.

    Raises:
        argparse.ArgumentTypeError: there is no ``=`` or the key is empty.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"invalid header {text!r} (use key=value)")
    return key.strip(), value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r} (expected an integer)") from None


def parse_positive_int(text: str) -> int:
    """Parse an integer >= 1.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r} (must be at least 1)")
    return value


def parse_non_negative_int(text: str) -> int:
    """Parse an integer >= 0.

    Raises:
        argparse.ArgumentTypeError: it is not one.
    """
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid number {text!r} (must not be negative)")
    return value


def parse_days(text: str) -> int:
    """Parse a number of days from 1 to 3650.

    Raises:
        argparse.ArgumentTypeError: out of range or not a number.
    """
    value = parse_positive_int(text)
    if value > 3650:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r} (at most 3650)")
    return value
