"""The README demo: enqueue a few tasks, run a worker in its own process, watch them finish.

Run it with ``make demo`` (or ``python -m examples.demo``). It uses the broker
in ``$TASKQ_BROKER``, else a fresh SQLite file ``taskq-demo.db`` in the current
directory (the embedded default broker: no server needed). It enqueues:

* ``email:welcome`` (a sync handler) and ``email:reminder`` (an async one),
* a reminder delayed by 3 seconds,
* ``report:generate``, which fails twice and then succeeds (retried after 1 s),

starts ``taskq worker examples.tasks:mux`` as a subprocess, prints every state
change it sees, stops the worker with SIGTERM once every task is done, and
exits (status 0 on success) -- in about 10 seconds.

Without the SQLite broker (a trimmed installation) it falls back to the
in-memory broker, which cannot be shared between processes, so the worker then
runs on a thread of this process instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import taskq
from taskq.brokers.registry import redact_url

DEMO_DB = "taskq-demo.db"
TIME_LIMIT = 20.0
RETENTION = timedelta(minutes=10)  # keep finished tasks visible as "completed"


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _broker_url() -> str:
    url = os.environ.get("TASKQ_BROKER")
    if url:
        return url
    if importlib.util.find_spec("taskq.brokers.sqlite") is None:
        return "memory://"
    path = Path(DEMO_DB).resolve()
    for suffix in ("", "-wal", "-shm"):  # start from an empty demo database
        Path(str(path) + suffix).unlink(missing_ok=True)
    # Absolute, so the worker process finds the same file whatever its directory.
    return f"sqlite:///{path}"


def _enqueue(client: taskq.Client) -> list[taskq.TaskInfo]:
    tasks = [
        (taskq.Task("email:welcome", json.dumps({"user_id": 42}).encode()), {}),
        (taskq.Task("email:reminder", json.dumps({"user_id": 42}).encode()), {}),
        (
            taskq.Task("email:reminder", json.dumps({"user_id": 7}).encode()),
            {"process_in": timedelta(seconds=3)},
        ),
        (taskq.Task("report:generate", b"{}"), {"max_retry": 3}),
    ]
    infos = []
    for task, options in tasks:
        info = client.enqueue(task, retention=RETENTION, **options)
        extra = " (due in 3 s)" if "process_in" in options else ""
        _say(f"enqueued {task.type:<16} id={info.id[:8]} state={info.state}{extra}")
        infos.append(info)
    return infos


def _start_worker_process(url: str) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, TASKQ_BROKER=url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    argv = [
        sys.executable,
        "-m",
        "taskq.cli.worker",
        "examples.tasks:mux",
        "--concurrency",
        "4",
        "--retry-delay",
        "1",
    ]
    _say("starting: taskq worker examples.tasks:mux --concurrency 4 --retry-delay 1")
    return subprocess.Popen(argv, env=env)


def _watch(client: taskq.Client, infos: list[taskq.TaskInfo]) -> bool:
    """Print each state change; return True once every task completed."""
    last: dict[str, str] = {i.id: str(i.state) for i in infos}
    deadline = time.monotonic() + TIME_LIMIT
    while time.monotonic() < deadline:
        done = 0
        for info in infos:
            now = client.get_task_info(info.queue, info.id)
            state = str(now.state)
            if state != last[info.id]:
                if state == "completed":
                    retries = f" after {now.retried} retries" if now.retried else ""
                    result = f" result={now.result.decode()}" if now.result else ""
                    note = retries + result
                elif now.last_error:
                    note = f" (last error: {now.last_error.splitlines()[0]})"
                else:
                    note = ""
                _say(f"{info.type:<16} id={info.id[:8]} {last[info.id]} -> {state}{note}")
                last[info.id] = state
            done += state == "completed"
        if done == len(infos):
            return True
        time.sleep(0.05)
    return False


def _stop(worker: subprocess.Popen[bytes]) -> int:
    _say(f"all done: stopping the worker (SIGTERM to pid {worker.pid})")
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(15)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def main() -> int:
    """Run the demo; return the process exit status."""
    url = _broker_url()
    _say(f"broker: {redact_url(url)}")
    started = time.monotonic()
    with taskq.Client(url) as client:
        infos = _enqueue(client)
        if url.startswith("memory://"):
            _say("no SQLite broker: running the worker on a thread of this process")
            from examples.tasks import mux

            server = taskq.Server(
                client.broker,
                taskq.Config(concurrency=4, retry_delay=lambda n, e, t: timedelta(seconds=1)),
            )
            server.start(mux)
            ok = _watch(client, infos)
            server.shutdown()
            code = 0
        else:
            worker = _start_worker_process(url)
            try:
                ok = _watch(client, infos)
            finally:
                code = _stop(worker)
    elapsed = time.monotonic() - started
    if ok and code == 0:
        _say(f"every task completed in {elapsed:.1f}s; the worker exited cleanly")
        return 0
    _say(f"FAILED after {elapsed:.1f}s (all completed: {ok}, worker exit status: {code})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
