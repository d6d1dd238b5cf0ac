"""FakeClock: a clock that moves only when a test moves it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from taskq._time import dt_to_ms, td_to_ms
from taskq.errors import InvalidDurationError

__all__ = ["DEFAULT_START", "FakeClock"]

DEFAULT_START = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)
"""Where a :class:`FakeClock` starts by default: a fixed instant at noon UTC,
far from a day boundary so daily counts do not roll over by accident."""


def _to_ms(value: int | datetime, name: str) -> int:
    if isinstance(value, datetime):
        return dt_to_ms(value, name=name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidDurationError(f"{name} must be epoch ms (int) or an aware datetime")


class FakeClock:
    """A :class:`taskq.Clock` for tests: time stands still until moved. Thread-safe.

    Args:
        start: the initial time, as epoch milliseconds or an aware datetime.

    Raises:
        InvalidDurationError: ``start`` is a naive datetime or not a time.
    """

    def __init__(self, start: int | datetime = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._now = _to_ms(start, "start")

    def now_ms(self) -> int:
        """Return the current fake time in epoch milliseconds."""
        with self._lock:
            return self._now

    def now(self) -> datetime:
        """Return the current fake time as an aware UTC datetime."""
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=self.now_ms())

    def advance(self, delta: int | timedelta) -> int:
        """Move time forward by ``delta`` (milliseconds or a timedelta); return the new time.

        Raises:
            InvalidDurationError: ``delta`` is negative (use :meth:`set` to go back).
        """
        if isinstance(delta, timedelta):
            ms = td_to_ms(delta, name="delta")
        elif isinstance(delta, int) and not isinstance(delta, bool):
            ms = delta
        else:
            raise InvalidDurationError("delta must be milliseconds (int) or a timedelta")
        if ms < 0:
            raise InvalidDurationError(f"cannot advance a clock by a negative delta ({ms} ms)")
        with self._lock:
            self._now += ms
            return self._now

    def set(self, when: int | datetime) -> None:
        """Jump to ``when`` (epoch milliseconds or an aware datetime), even backwards.

        Raises:
            InvalidDurationError: ``when`` is a naive datetime or not a time.
        """
        ms = _to_ms(when, "when")
        with self._lock:
            self._now = ms

    def __repr__(self) -> str:
        return f"FakeClock({self.now().isoformat()})"
