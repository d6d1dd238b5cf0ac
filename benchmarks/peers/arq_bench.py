"""arq on Redis: ``pool.enqueue_job``; one ``arq.Worker`` per process (arq polls the queue)."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from arq import Worker, create_pool
from arq.connections import RedisSettings

MAX_JOBS = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "100"))
POLL_DELAY = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.05"))


async def noop(ctx: dict[str, Any], sent: float = 0.0) -> None:
    """The no-op task."""
    _workload.record(sent)


class Arq:
    name = "arq"
    version = version("arq")
    worker_config = (
        f"max_jobs={MAX_JOBS} (= queue_read_limit), poll_delay={POLL_DELAY} s for drains and "
        "0.005 s for latency (default 0.5 s; shorter slows drains), keep_result=0, max_tries=1"
    )
    latency_env = {"BENCH_ARQ_POLL_DELAY": "0.005"}

    async def open(self, url: str) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, sent: float) -> None:
        await self.pool.enqueue_job("noop", sent)

    def run_worker(self, url: str) -> None:
        Worker(
            functions=[noop],
            redis_settings=RedisSettings.from_dsn(url),
            max_jobs=MAX_JOBS,
            poll_delay=POLL_DELAY,
            keep_result=0,
            max_tries=1,
            handle_signals=True,
        ).run()


if __name__ == "__main__":
    _workload.main(Arq(), __file__)
