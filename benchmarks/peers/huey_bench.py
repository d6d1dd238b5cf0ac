"""Huey 3 on Redis (``RedisHuey``, blocking dequeue): calling the task enqueues it;
one ``huey.create_consumer(...).run()`` per worker process."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from huey import RedisHuey

WORKERS = int(os.environ.get("BENCH_HUEY_WORKERS", "1"))


def _huey(url: str) -> tuple[Any, Any]:
    huey = RedisHuey("bench", url=url, results=False)

    @huey.task(name="noop")
    def noop(sent: float = 0.0) -> None:
        _workload.record(sent)

    return huey, noop


class Huey:
    name = "huey"
    version = version("huey")
    worker_config = f"1 process x {WORKERS} worker thread(s), blocking BRPOP, results=False"

    def open(self, url: str) -> None:
        self.huey, self.task = _huey(url)

    def close(self) -> None:
        self.huey.storage.conn.connection_pool.disconnect()

    def enqueue(self, sent: float) -> None:
        self.task(sent)

    def run_worker(self, url: str) -> None:
        huey, _ = _huey(url)
        # Huey stops gracefully on SIGINT and at once on SIGTERM (its defaults).
        huey.create_consumer(workers=WORKERS, worker_type="thread", periodic=False).run()


if __name__ == "__main__":
    _workload.main(Huey(), __file__)
