"""RQ on Redis: ``Queue.enqueue`` and ``Queue.enqueue_many`` (pipelined);
one ``SimpleWorker`` (no fork per job) per process."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from redis import Redis
from rq import Queue, SimpleWorker

BATCH = 1000
FUNC = "rq_bench.noop"  # the worker imports it by name (benchmarks/peers is on sys.path)


def noop(sent: float = 0.0) -> None:
    """The no-op task."""
    _workload.record(sent)


class RQ:
    name = "rq"
    version = version("rq")
    worker_config = "SimpleWorker (runs jobs in-process, no fork), result_ttl=0"

    def open(self, url: str) -> None:
        self.conn = Redis.from_url(url)
        self.queue = Queue("default", connection=self.conn)

    def close(self) -> None:
        self.conn.close()

    def enqueue(self, sent: float) -> None:
        self.queue.enqueue(FUNC, sent, result_ttl=0)

    def enqueue_batch(self, n: int) -> None:
        for start in range(0, n, BATCH):
            jobs = [
                Queue.prepare_data(FUNC, (0.0,), result_ttl=0) for _ in range(min(BATCH, n - start))
            ]
            with self.conn.pipeline() as pipe:
                self.queue.enqueue_many(jobs, pipeline=pipe)
                pipe.execute()

    def run_worker(self, url: str) -> None:
        conn = Redis.from_url(url)
        worker = SimpleWorker([Queue("default", connection=conn)], connection=conn)
        worker.work(logging_level="WARNING")


if __name__ == "__main__":
    _workload.main(RQ(), __file__)
