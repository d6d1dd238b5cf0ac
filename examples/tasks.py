"""The demo's task handlers: ``taskq worker examples.tasks:mux`` serves them.

Each handler prints what it does, so the worker's output tells the story.
"""

from __future__ import annotations

import asyncio
import json

import taskq

mux = taskq.ServeMux()


def _say(text: str) -> None:
    print(f"  [worker] {text}", flush=True)


@mux.handle("email:welcome")
def send_welcome(ctx: taskq.Context, task: taskq.Task) -> None:
    """A sync handler: runs on the worker's thread pool."""
    user = json.loads(task.payload)["user_id"]
    _say(f"email:welcome   -> sending the welcome email to user {user}")
    ctx.write_result(json.dumps({"sent_to": user}).encode())


@mux.handle("email:reminder")
async def send_reminder(ctx: taskq.Context, task: taskq.Task) -> None:
    """An async handler: runs on the worker's event loop."""
    user = json.loads(task.payload)["user_id"]
    await asyncio.sleep(0.1)  # e.g. an HTTP call to the mail provider
    _say(f"email:reminder  -> reminding user {user} (task {ctx.task_id[:8]})")


@mux.handle("report:generate")
def generate_report(ctx: taskq.Context, task: taskq.Task) -> None:
    """Fails on its first two attempts, then succeeds: shows retries."""
    attempt = ctx.retry_count + 1
    if ctx.retry_count < 2:
        _say(f"report:generate -> attempt {attempt} fails (the database is 'down')")
        raise ConnectionError("database unavailable")
    _say(f"report:generate -> attempt {attempt} succeeds")
