"""Dramatiq 2 on Redis: ``actor.send``; one programmatic ``dramatiq.Worker`` per process."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
import dramatiq
from dramatiq.brokers.redis import RedisBroker

THREADS = int(os.environ.get("BENCH_DRAMATIQ_THREADS", "8"))


def noop(sent: float = 0.0) -> None:
    """The no-op task."""
    _workload.record(sent)


class Dramatiq:
    name = "dramatiq"
    version = version("dramatiq")
    worker_config = f"1 process x {THREADS} threads, default prefetch (2 x threads), max_retries=0"

    def _declare(self, url: str) -> Any:
        broker = RedisBroker(url=url)
        dramatiq.set_broker(broker)
        return broker, dramatiq.actor(noop, actor_name="noop", max_retries=0, broker=broker)

    def open(self, url: str) -> None:
        self.broker, self.actor = self._declare(url)

    def close(self) -> None:
        self.broker.close()

    def enqueue(self, sent: float) -> None:
        self.actor.send(sent)

    def run_worker(self, url: str) -> None:
        broker, _ = self._declare(url)
        worker = dramatiq.Worker(broker, worker_threads=THREADS)
        worker.start()
        try:
            _workload.wait_for_sigterm()
        finally:
            worker.stop()


if __name__ == "__main__":
    _workload.main(Dramatiq(), __file__)
