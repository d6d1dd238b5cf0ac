"""Turning taskq values into HTML and JSON that are safe to send to a browser.

HTML comes from Jinja2 templates with autoescaping on for every template, so
a queue name, task type, payload, header, error or result is always text,
never markup. JSON is rendered with ``<``, ``>`` and ``&`` as ``\\u`` escapes
(as Go's encoder does), so even a response sniffed as HTML holds no tag.
Payloads and results are bytes: shown as text when they are UTF-8 (JSON
pretty-printed), else as a hex dump, and cut to a configured length.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Final

import attrs
import jinja2
from starlette.responses import HTMLResponse, JSONResponse

from taskq.cli._output import ago, fmt_bytes, fmt_duration, fmt_time, short_payload, to_jsonable

__all__ = ["SafeJSONResponse", "Shown", "Templates", "show_bytes"]

_PRETTY_LIMIT: Final = 1 << 20
"""Payloads up to this size are parsed to pretty-print them as JSON."""


@attrs.frozen
class Shown:
    """Bytes made displayable.

    Attributes:
        text: what to show (already cut to the limit; escaped by the template).
        size: the length of the original bytes.
        binary: the bytes are not UTF-8, so ``text`` is a hex dump.
        truncated: ``text`` shows only the beginning.
    """

    text: str
    size: int
    binary: bool
    truncated: bool


def show_bytes(data: bytes | None, limit: int) -> Shown | None:
    """Make ``data`` displayable in at most ``limit`` characters (None stays None)."""
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        count = max(1, limit // 3)
        dump = " ".join(f"{b:02x}" for b in data[:count])
        return Shown(dump, len(data), binary=True, truncated=len(data) > count)
    if len(data) <= _PRETTY_LIMIT and text[:1] in "{[":
        with contextlib.suppress(ValueError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    if len(text) > limit:
        return Shown(text[:limit], len(data), binary=False, truncated=True)
    return Shown(text, len(data), binary=False, truncated=False)


class SafeJSONResponse(JSONResponse):
    """JSON of taskq values (see the CLI's ``--json``) with ``<``, ``>``, ``&`` escaped."""

    def render(self, content: Any) -> bytes:
        """Encode ``content`` (taskq values are converted like the CLI's ``--json``)."""
        text = json.dumps(to_jsonable(content), ensure_ascii=False, separators=(",", ":"))
        for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, escape)
        return text.encode("utf-8")


def _cell(data: bytes | None, limit: int = 60) -> str:
    return short_payload(data, limit)


def _count(value: int, word: str) -> str:
    return f"{value} {word}{'' if value == 1 else 's'}"


class Templates:
    """The dashboard's Jinja2 templates, autoescaped, with taskq's formatting filters."""

    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("taskq.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            time=fmt_time,
            duration=fmt_duration,
            ago=ago,
            bytes=fmt_bytes,
            cell=_cell,
            count=_count,
        )

    def render(self, name: str, context: Mapping[str, Any], status_code: int = 200) -> HTMLResponse:
        """Render template ``name`` with ``context`` into an HTML response."""
        page = self.env.get_template(name).render({**context, "now": datetime.now(timezone.utc)})
        return HTMLResponse(page, status_code=status_code)
