"""Celery 5 on Redis (kombu): ``task.apply_async``; one ``worker_main`` process per worker."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from celery import Celery

POOL = os.environ.get("BENCH_CELERY_POOL", "solo")
CONCURRENCY = int(os.environ.get("BENCH_CELERY_CONCURRENCY", "1"))
PREFETCH = int(os.environ.get("BENCH_CELERY_PREFETCH", "64"))


def _app(url: str) -> tuple[Celery, Any]:
    app = Celery("bench", broker=url, set_as_current=True)
    app.conf.update(
        task_ignore_result=True,
        worker_prefetch_multiplier=PREFETCH,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
    )

    @app.task(name="noop")
    def noop(sent: float = 0.0) -> None:
        _workload.record(sent)

    return app, noop


class CeleryAdapter:
    name = "celery"
    version = version("celery")
    worker_config = (
        f"--pool={POOL} --concurrency={CONCURRENCY} prefetch multiplier {PREFETCH}, "
        "acks early (default), ignore_result, without gossip/mingle/heartbeat"
    )

    def open(self, url: str) -> None:
        self.app, self.task = _app(url)

    def close(self) -> None:
        self.app.close()

    def enqueue(self, sent: float) -> None:
        self.task.apply_async((sent,))

    def run_worker(self, url: str) -> None:
        app, _ = _app(url)
        app.worker_main(
            [
                "worker",
                f"--pool={POOL}",
                f"--concurrency={CONCURRENCY}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ]
        )


if __name__ == "__main__":
    _workload.main(CeleryAdapter(), __file__)
