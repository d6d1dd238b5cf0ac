"""Handlers for the subprocess worker tests: they log each attempt to a shared file.

``$TASKQ_TEST_LOG`` names the file; each line is ``event task_id pid time``
(``start`` or ``end``), written with one O_APPEND write so lines from several
processes never interleave.
"""

from __future__ import annotations

import json
import os
import time

import taskq

mux = taskq.ServeMux()


def _log(event: str, task_id: str) -> None:
    line = f"{event} {task_id} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["TASKQ_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@mux.handle("sleep")
def sleep(ctx: taskq.Context, task: taskq.Task) -> None:
    """Sleep ``payload["seconds"]``; stop early when cancelled."""
    _log("start", ctx.task_id)
    deadline = time.monotonic() + json.loads(task.payload)["seconds"]
    while time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.01)
    _log("end", ctx.task_id)


@mux.handle("spin")
def spin(ctx: taskq.Context, task: taskq.Task) -> None:
    """Run ``payload["seconds"]`` without looking at ``ctx.cancelled``; log an interrupt."""
    _log("start", ctx.task_id)
    deadline = time.monotonic() + json.loads(task.payload)["seconds"]
    try:
        while time.monotonic() < deadline:
            time.sleep(0.005)
    except taskq.Interrupted:
        _log("interrupted", ctx.task_id)
        raise
    _log("end", ctx.task_id)


@mux.handle("block")
def block(ctx: taskq.Context, task: taskq.Task) -> None:
    """Sleep ``payload["seconds"]`` in one C call: neither a cancel nor an interrupt reaches it."""
    _log("start", ctx.task_id)
    time.sleep(json.loads(task.payload)["seconds"])
    _log("end", ctx.task_id)


def build_mux() -> taskq.ServeMux:
    """A factory, for ``APP:FACTORY`` specs."""
    return mux
