"""SAQ on Redis: ``queue.enqueue``; one ``saq.Worker`` per process."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from saq import Queue, Worker

CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY", "100"))


async def noop(ctx: dict[str, Any], *, sent: float = 0.0) -> None:
    """The no-op task."""
    _workload.record(sent)


class Saq:
    name = "saq"
    version = version("saq")
    worker_config = f"concurrency={CONCURRENCY} (default 10), default timeouts and result ttl"

    async def open(self, url: str) -> None:
        self.queue = Queue.from_url(url)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, sent: float) -> None:
        await self.queue.enqueue("noop", sent=sent)

    def run_worker(self, url: str) -> None:
        async def serve() -> None:
            queue = Queue.from_url(url)
            worker = Worker(queue, functions=[noop], concurrency=CONCURRENCY)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in ("SIGTERM", "SIGINT"):
                loop.add_signal_handler(getattr(__import__("signal"), sig), stop.set)
            task = asyncio.create_task(worker.start())
            await stop.wait()
            await worker.stop()
            task.cancel()

        asyncio.run(serve())


if __name__ == "__main__":
    _workload.main(Saq(), __file__)
