"""Milliseconds everywhere: clocks and conversions between the API's datetimes and broker ints."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from taskq.errors import InvalidDurationError

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

__all__ = [
    "Clock",
    "SystemClock",
    "dt_to_ms",
    "ms_to_dt",
    "ms_to_td",
    "now_ms",
    "parse_duration",
    "td_to_ms",
]


@runtime_checkable
class Clock(Protocol):
    """A source of wall-clock time in milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        """Return ``time.time()`` in whole milliseconds."""
        return time.time_ns() // 1_000_000

    def __repr__(self) -> str:
        return "SystemClock()"


def now_ms() -> int:
    """Return the system time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def dt_to_ms(value: datetime, *, name: str = "time") -> int:
    """Convert an aware datetime to epoch milliseconds.

    Raises:
        InvalidDurationError: if ``value`` is naive (no tzinfo). taskq never
            guesses a timezone for a naive datetime.
    """
    if not isinstance(value, datetime):
        raise InvalidDurationError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidDurationError(
            f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got a naive datetime"
        )
    delta = value - _EPOCH
    return delta // timedelta(milliseconds=1)


def ms_to_dt(value: int) -> datetime:
    """Convert epoch milliseconds to an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=value)


def td_to_ms(value: timedelta | float | int, *, name: str = "duration") -> int:
    """Convert a timedelta (or a number of seconds) to whole milliseconds.

    Raises:
        InvalidDurationError: if the value is negative or not a duration.
    """
    if isinstance(value, timedelta):
        ms = value // timedelta(milliseconds=1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = round(value * 1000)
    else:
        raise InvalidDurationError(f"{name} must be a timedelta, got {type(value).__name__}")
    if ms < 0:
        raise InvalidDurationError(f"{name} must not be negative, got {value!r}")
    return ms


def ms_to_td(value: int) -> timedelta:
    """Convert milliseconds to a timedelta."""
    return timedelta(milliseconds=value)


def parse_duration(text: str) -> int:
    """Parse a Go-style duration (``"30s"``, ``"1m30s"``, ``"500ms"``, ``"1.5h"``) to ms.

    Units: ``ms``, ``s``, ``m``, ``h``, ``d`` (lower case); parts add up. A
    bare number is refused (it would be ambiguous).

    Raises:
        InvalidDurationError: the text is not such a duration.
    """
    compact = text.strip()
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise InvalidDurationError(
            f"invalid duration {text!r}: expected e.g. 30s, 1m30s, 500ms, 2h, 1d"
        )
    return round(total)
