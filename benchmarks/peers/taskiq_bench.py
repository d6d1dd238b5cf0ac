"""taskiq + taskiq-redis (``RedisStreamBroker``, the one with acknowledgements): ``task.kiq``;
one in-process receiver (``taskiq.api.run_receiver_task``) per worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from importlib.metadata import version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _workload
from taskiq.api import run_receiver_task
from taskiq_redis import RedisStreamBroker

MAX_ASYNC = int(os.environ.get("BENCH_TASKIQ_MAX_ASYNC", "1000"))


def _broker(url: str) -> tuple[Any, Any]:
    # consumer_id="0": the group also reads tasks enqueued before it was created.
    broker = RedisStreamBroker(url, consumer_id="0")

    @broker.task(task_name="noop")
    async def noop(sent: float = 0.0) -> None:
        _workload.record(sent)

    return broker, noop


class Taskiq:
    name = "taskiq"
    version = f"{version('taskiq')} + taskiq-redis {version('taskiq-redis')}"
    worker_config = (
        f"RedisStreamBroker (xread_count=100), max_async_tasks={MAX_ASYNC}, ack after execution"
    )

    async def open(self, url: str) -> None:
        self.broker, self.task = _broker(url)
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self, sent: float) -> None:
        await self.task.kiq(sent)

    def run_worker(self, url: str) -> None:
        async def serve() -> None:
            broker, _ = _broker(url)
            broker.is_worker_process = True
            await broker.startup()
            receiver = asyncio.create_task(
                run_receiver_task(broker, max_async_tasks=MAX_ASYNC, run_startup=False)
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            receiver.cancel()
            await broker.shutdown()

        asyncio.run(serve())


if __name__ == "__main__":
    _workload.main(Taskiq(), __file__)
