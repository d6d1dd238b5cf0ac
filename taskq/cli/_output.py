"""Printing command results: human tables (rich when installed, plain text otherwise) and JSON.

JSON output is a stable, script-friendly rendering of taskq's value types:
datetimes as ISO-8601 UTC strings, durations as float seconds, task states as
their names, and every ``bytes`` field ``x`` as ``x`` (the text, or null when
it is not UTF-8) plus ``x_base64`` (exact bytes).
"""

from __future__ import annotations

import base64
import enum
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, TextIO

import attrs

__all__ = [
    "ago",
    "fmt_bytes",
    "fmt_duration",
    "fmt_time",
    "print_json",
    "print_kv",
    "print_table",
    "short_payload",
    "to_jsonable",
]


def to_jsonable(value: Any) -> Any:
    """Convert taskq values (attrs classes, datetimes, bytes, enums) to JSON-ready data."""
    if attrs.has(type(value)):
        out: dict[str, Any] = {}
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if isinstance(item, bytes):
                out[field.name] = _text_or_none(item)
                out[f"{field.name}_base64"] = base64.b64encode(item).decode("ascii")
            else:
                out[field.name] = to_jsonable(item)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return _text_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return value


def _text_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def print_json(value: Any, *, stream: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON (see :func:`to_jsonable`)."""
    out = stream or sys.stdout
    json.dump(to_jsonable(value), out, indent=2, ensure_ascii=False)
    out.write("\n")


def _use_rich() -> bool:
    if os.environ.get("TASKQ_PLAIN"):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    title: str | None = None,
    empty: str = "(none)",
    plain: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print rows under headers: a rich table when rich is installed, else aligned text.

    Args:
        plain: force plain text (True) or rich (False); None decides by
            whether rich is importable and ``$TASKQ_PLAIN`` is unset.
        empty: the line printed instead of a table when there are no rows.
    """
    out = stream or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    if not cells:
        if title:
            out.write(f"{title}\n")
        out.write(f"{empty}\n")
        return
    use_plain = (not _use_rich()) if plain is None else plain
    if use_plain:
        _plain_table(headers, cells, title, out)
    else:
        _rich_table(headers, cells, title, out)


def _plain_table(
    headers: Sequence[str], cells: Sequence[Sequence[str]], title: str | None, out: TextIO
) -> None:
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    if title:
        out.write(f"{title}\n")
    out.write("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    out.write("\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _rich_table(
    headers: Sequence[str], cells: Sequence[Sequence[str]], title: str | None, out: TextIO
) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        # Piped output: never wrap or cut cells to an assumed 80 columns.
        console = Console(file=out, highlight=False, soft_wrap=False, width=4096)
    table = Table(
        box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, show_edge=False
    )
    for header in headers:
        table.add_column(header.upper(), no_wrap=True, overflow="ignore")
    for row in cells:
        table.add_row(*row)
    console.print(table, markup=False)


def print_kv(pairs: Sequence[tuple[str, object]], *, stream: TextIO | None = None) -> None:
    """Print ``key: value`` lines with the values aligned (continuation lines indented)."""
    out = stream or sys.stdout
    width = max((len(k) for k, _ in pairs), default=0)
    indent = "\n" + " " * (width + 2)
    for key, value in pairs:
        text = indent.join(str(value).rstrip("\n").splitlines() or [""])
        out.write(f"{(key + ':').ljust(width + 1)} {text}\n")


def fmt_time(value: datetime | None) -> str:
    """An aware datetime as ``YYYY-MM-DD HH:MM:SS UTC`` ("-" for None)."""
    if value is None:
        return "-"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(value: timedelta | None) -> str:
    """A duration in the CLI's own syntax (``1h30m``, ``250ms``; "-" for None)."""
    if value is None:
        return "-"
    ms = value // timedelta(milliseconds=1)
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    if ms < 1000:
        return f"{sign}{ms}ms"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    seconds = ms / 1000
    if seconds or not parts:
        parts.append(f"{seconds:g}s" if not parts else f"{int(seconds)}s")
    return sign + "".join(parts)


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """A time relative to now: ``in 5m`` or ``5m ago`` ("-" for None)."""
    if value is None:
        return "-"
    current = now or datetime.now(timezone.utc)
    delta = value - current
    if delta >= timedelta(0):
        return f"in {fmt_duration(_round_s(delta))}"
    return f"{fmt_duration(_round_s(-delta))} ago"


def _round_s(value: timedelta) -> timedelta:
    if value < timedelta(seconds=1):
        return value
    return timedelta(seconds=round(value.total_seconds()))


def fmt_bytes(value: int | None) -> str:
    """A byte count for humans (``1.2 MiB``; "-" for None)."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def short_payload(data: bytes | None, limit: int = 40) -> str:
    """A payload shortened for a table cell: its text, or its size when binary."""
    if data is None:
        return "-"
    text = _text_or_none(data)
    if text is None:
        return f"<{len(data)} bytes>"
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
