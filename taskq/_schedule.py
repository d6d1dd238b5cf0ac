"""Schedule specs: parse ``"*/5 * * * *"``, ``"@every 30s"``, ``"CRON_TZ=Europe/Berlin 0 9 * * *"``.

A parsed :class:`Schedule` answers one question, :meth:`Schedule.next_after`:
the first firing strictly after an instant (epoch ms). Cron arithmetic is
croniter's; this module adds the spec grammar, timezones, ``@every``
intervals and the daylight-saving rule described in ``docs/scheduler.md``.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from taskq._time import dt_to_ms, ms_to_dt, parse_duration
from taskq.errors import InvalidArgumentError

__all__ = [
    "MIN_INTERVAL_MS",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "parse_duration",
    "parse_spec",
    "resolve_timezone",
    "timezone_name",
]

MIN_INTERVAL_MS = 100

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Schedule(Protocol):
    """When an entry fires."""

    def next_after(self, ms: int) -> int:
        """Return the first firing time (epoch ms) strictly after ``ms``."""
        ...


def resolve_timezone(value: str | tzinfo) -> tzinfo:
    """Return a tzinfo for an IANA name (``"Europe/Berlin"``) or a tzinfo itself.

    Raises:
        InvalidArgumentError: the name is not a known timezone.
    """
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"timezone must be an IANA name or a tzinfo, got {value!r}")
    try:
        return ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgumentError(f"unknown timezone {value!r}") from None


def timezone_name(tz: tzinfo) -> str:
    """A stable name for ``tz``: its IANA key when it has one."""
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else str(tz)


class EverySchedule:
    """A fixed interval, aligned to the Unix epoch.

    Alignment makes every scheduler process compute the same ticks (``@every
    30s`` fires at :00 and :30 of each minute), which is what lets several
    processes agree on "this tick" in HA mode.
    """

    def __init__(self, period_ms: int) -> None:
        if period_ms < MIN_INTERVAL_MS:
            raise InvalidArgumentError(
                f"@every interval must be at least {MIN_INTERVAL_MS} ms, got {period_ms} ms"
            )
        self.period_ms = period_ms

    def next_after(self, ms: int) -> int:
        """Return the first multiple of the period strictly after ``ms``."""
        return (ms // self.period_ms + 1) * self.period_ms

    def __repr__(self) -> str:
        return f"EverySchedule({self.period_ms} ms)"


class CronSchedule:
    """A cron expression evaluated on the wall clock of one timezone.

    Five fields (minute hour day-of-month month day-of-week), or six with a
    leading seconds field. Around daylight-saving changes:

    * a wall time skipped by a spring-forward change fires at the first
      instant after the gap (croniter's behaviour, as Vixie cron);
    * a wall time repeated by a fall-back change fires twice only when the
      hour field is a wildcard (``*``, ``*/2``, ...): ``*/5 * * * *`` keeps
      firing every five real minutes, while ``30 2 * * *`` fires once.
    """

    def __init__(self, expression: str, tz: tzinfo) -> None:
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise InvalidArgumentError(
                f"cron spec {expression!r} has {len(fields)} field(s); expected 5 "
                "(minute hour day month weekday) or 6 (with a leading seconds field)"
            )
        self.expression = " ".join(fields)
        self.tz = tz
        self._seconds = len(fields) == 6
        hour_field = fields[2] if self._seconds else fields[1]
        self._repeat_in_fold = hour_field.startswith("*")
        try:
            valid = croniter.is_valid(self.expression, second_at_beginning=self._seconds)
        except CroniterError:
            valid = False
        if not valid:
            raise InvalidArgumentError(f"invalid cron spec {expression!r}")
        try:
            self.next_after(0)
        except InvalidArgumentError:
            raise InvalidArgumentError(f"cron spec {expression!r} never fires") from None

    def _is_repeat(self, when: datetime) -> bool:
        wall = when.replace(tzinfo=None, fold=0)
        first = wall.replace(tzinfo=self.tz)
        return dt_to_ms(first) != dt_to_ms(when)

    def next_after(self, ms: int) -> int:
        """Return the first matching instant strictly after ``ms``.

        Raises:
            InvalidArgumentError: the expression matches no date (e.g. Feb 30).
        """
        start = ms_to_dt(ms).astimezone(self.tz)
        try:
            it = croniter(self.expression, start, second_at_beginning=self._seconds)
            while True:
                candidate: datetime = it.get_next(datetime)
                if self._repeat_in_fold or not self._is_repeat(candidate):
                    return dt_to_ms(candidate)
        except CroniterError as exc:
            raise InvalidArgumentError(f"cron spec {self.expression!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {timezone_name(self.tz)!r})"


def parse_spec(spec: str, default_tz: tzinfo) -> tuple[Schedule, tzinfo]:
    """Parse a schedule spec; return the schedule and the timezone it runs in.

    Accepted: 5-field cron, 6-field cron with a leading seconds field,
    ``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/
    ``@midnight``/``@hourly``, ``@every <duration>``, each optionally prefixed
    by ``CRON_TZ=<IANA name>`` or ``TZ=<IANA name>``.

    Raises:
        InvalidArgumentError: the spec or its timezone is invalid.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"schedule spec must be a non-empty str, got {spec!r}")
    text = spec.strip()
    tz = default_tz
    if text.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, text = text.partition(" ")
        tz = resolve_timezone(prefix.partition("=")[2])
        text = text.strip()
        if not text:
            raise InvalidArgumentError(f"schedule spec {spec!r} has a timezone but no schedule")
    if text.startswith("@every"):
        rest = text[len("@every") :]
        if not rest[:1].isspace():
            raise InvalidArgumentError(f"invalid schedule spec {spec!r}: use '@every 30s'")
        return EverySchedule(parse_duration(rest)), tz
    if text.startswith("@"):
        expression = _DESCRIPTORS.get(text.lower())
        if expression is None:
            known = ", ".join([*_DESCRIPTORS, "@every <duration>"])
            raise InvalidArgumentError(f"unknown schedule {text!r}; known: {known}")
        return CronSchedule(expression, tz), tz
    return CronSchedule(text, tz), tz
