"""taskq on any broker URL: ``Client.enqueue`` (or ``AsyncClient.enqueue`` with
``BENCH_TASKQ_CLIENT=async``) / ``AsyncClient.enqueue_many``; one ``taskq.Server`` per
worker process (for ``memory://``, the server runs inside the producer's process).

Single enqueues go through the sync :class:`taskq.Client` by default: it is taskq's
faster client for one call at a time (no event loop between the caller and the
socket), as Huey, RQ, Celery and Dramatiq are sync. Both clients share the one
broker object, so a ``memory://`` worker sees what either enqueues.

Run by ``python -m benchmarks.run`` with the project's own interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _workload

import taskq

CONCURRENCY = int(os.environ.get("BENCH_TASKQ_CONCURRENCY", "1000"))
CLIENT = os.environ.get("BENCH_TASKQ_CLIENT", "sync")
BATCH = 1000
TASK_TYPE = "noop"


def _version() -> str:
    """The source revision benchmarked: as the harness says, else ``git describe``."""
    given = os.environ.get("BENCH_TASKQ_VERSION")
    if given:
        return given
    rev = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{taskq.__version__} {rev}".strip()


def _mux() -> taskq.ServeMux:
    mux = taskq.ServeMux()

    @mux.handle(TASK_TYPE)
    async def noop(ctx: taskq.Context, task: taskq.Task) -> None:
        _workload.record(float(task.payload))

    return mux


def _config() -> taskq.Config:
    return taskq.Config(concurrency=CONCURRENCY)


class Taskq:
    name = "taskq"
    version = _version()
    worker_config = (
        f"taskq.Server, concurrency={CONCURRENCY} (async handler on the server's loop), "
        "default lease 30 s, blocking batch dequeue, batched acks; single enqueues through "
        + ("the sync taskq.Client" if CLIENT == "sync" else "taskq.AsyncClient")
    )
    in_process = False

    async def open(self, url: str) -> None:
        self.url = url
        self.in_process = url.startswith("memory:")
        self.broker = taskq.connect(url)
        self.client = taskq.AsyncClient(self.broker)
        self.sync_client = taskq.Client(self.broker)
        if CLIENT == "async":
            self.enqueue = self.enqueue_async  # type: ignore[method-assign]
        # Connect both producers now. The latency phase's warm-up connects the
        # one that enqueues single tasks (as it does for every peer); the batch
        # phase's AsyncClient would otherwise connect inside its timed region.
        await self.client.ping()
        self.sync_client.ping()

    async def close(self) -> None:
        await self.broker.close()

    def enqueue(self, sent: float) -> None:
        self.sync_client.enqueue(taskq.Task(TASK_TYPE, repr(sent).encode()))

    async def enqueue_async(self, sent: float) -> None:
        await self.client.enqueue(taskq.Task(TASK_TYPE, repr(sent).encode()))

    async def enqueue_batch(self, n: int) -> None:
        for start in range(0, n, BATCH):
            tasks = [taskq.Task(TASK_TYPE, b"0.0") for _ in range(min(BATCH, n - start))]
            await self.client.enqueue_many(tasks)

    def storage_bytes(self) -> float:
        """Bytes of the SQLite file and its WAL (nothing for other brokers)."""
        if not self.url.startswith("sqlite:"):
            return float("nan")
        path = Path(self.url.removeprefix("sqlite:///"))
        wal = path.with_name(path.name + "-wal")
        return float(sum(p.stat().st_size for p in (path, wal) if p.exists()))

    def start_local_worker(self) -> Callable[[], None]:
        """Start a server on the producer's broker object (memory://); return its shutdown."""
        server = taskq.Server(self.broker, _config())
        server.start(_mux())
        return server.shutdown

    def run_worker(self, url: str) -> None:
        taskq.Server(url, _config()).run(_mux())


if __name__ == "__main__":
    _workload.main(Taskq(), __file__)
