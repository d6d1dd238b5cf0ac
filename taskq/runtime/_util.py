"""Small helpers shared by the runtime components."""

from __future__ import annotations

import asyncio
import contextlib
import os
import traceback

from taskq.task import truncate_error

__all__ = ["format_error", "sleep_or_stop"]

_TRACEBACK_FRAMES = 12
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first; return whether it is set."""
    if stop.is_set():
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def format_error(error: BaseException) -> str:
    """The stored text of a failure: ``Type: message`` and the last frames of its traceback.

    Bounded (see :func:`taskq.task.truncate_error`), so a huge message or a deep
    recursion cannot bloat the stored task.
    """
    head = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    tb = error.__traceback__
    if tb is None:
        return truncate_error(head)
    # The runtime's own frames (where the handler was called) say nothing useful.
    summary = [f for f in traceback.extract_tb(tb) if not f.filename.startswith(_RUNTIME_DIR)]
    frames = traceback.format_list(summary[-_TRACEBACK_FRAMES:])
    return truncate_error(head + "\nTraceback (most recent call last):\n" + "".join(frames))
