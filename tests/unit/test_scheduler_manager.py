"""PeriodicTaskManager: keeping a scheduler in line with a config provider."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from taskq.brokers.memory import InMemoryBroker
from taskq.errors import InvalidArgumentError
from taskq.scheduler import PeriodicTaskConfig, PeriodicTaskManager
from taskq.task import Task, TaskState
from taskq.testing import FakeClock


class Provider:
    def __init__(self, *configs: Any) -> None:
        self.configs: list[Any] = list(configs)
        self.calls = 0
        self.error: Exception | None = None

    def get_configs(self) -> list[Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return list(self.configs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> InMemoryBroker:
    return InMemoryBroker(clock=clock)


def specs(manager: PeriodicTaskManager) -> list[tuple[str, str]]:
    return sorted((e.spec, e.task.type) for e in manager.scheduler.entries())


async def test_sync_registers_added_and_unregisters_removed_configs(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    a = PeriodicTaskConfig("@every 1m", Task("a"))
    b = PeriodicTaskConfig("*/5 * * * *", Task("b"), {"queue": "low"})
    provider = Provider(a, b)
    manager = PeriodicTaskManager(provider, broker, clock=clock)
    assert await manager.sync()
    assert specs(manager) == [("*/5 * * * *", "b"), ("@every 1m", "a")]
    first_ids = {e.id for e in manager.scheduler.entries()}

    provider.configs = [a, PeriodicTaskConfig("@hourly", Task("c"))]
    assert await manager.sync()
    assert specs(manager) == [("@every 1m", "a"), ("@hourly", "c")]
    assert len(first_ids & {e.id for e in manager.scheduler.entries()}) == 1


async def test_a_changed_config_replaces_its_entry(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    provider = Provider(PeriodicTaskConfig("@every 1m", Task("a"), {"queue": "low"}))
    manager = PeriodicTaskManager(provider, broker, clock=clock)
    await manager.sync()
    [old] = manager.scheduler.entries()
    provider.configs = [PeriodicTaskConfig("@every 1m", Task("a"), {"queue": "high"})]
    await manager.sync()
    [new] = manager.scheduler.entries()
    assert new.id != old.id
    assert new.options == {"queue": "high"}


async def test_an_unchanged_config_keeps_its_entry_and_schedule(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    provider = Provider(PeriodicTaskConfig("@every 10s", Task("a")))
    manager = PeriodicTaskManager(provider, broker, clock=clock)
    await manager.sync()
    [entry] = manager.scheduler.entries()
    before = manager.scheduler.next_run(entry.id)
    clock.advance(timedelta(seconds=25))
    await manager.sync()
    assert manager.scheduler.entries() == [entry]
    assert manager.scheduler.next_run(entry.id) == before


async def test_an_invalid_config_is_logged_and_skipped_without_stopping_the_others(
    broker: InMemoryBroker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(
        PeriodicTaskConfig("not a spec", Task("bad_spec")),
        PeriodicTaskConfig("@every 1m", Task("bad_option"), {"queue": "{x}"}),
        "not even a config",
        PeriodicTaskConfig("@every 1m", Task("good")),
    )
    manager = PeriodicTaskManager(provider, broker, clock=clock)
    with caplog.at_level(logging.ERROR, logger="taskq.scheduler"):
        assert await manager.sync()
    assert specs(manager) == [("@every 1m", "good")]
    assert caplog.text.count("skipping invalid periodic task config") == 3


async def test_a_failing_provider_keeps_the_current_entries(
    broker: InMemoryBroker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(PeriodicTaskConfig("@every 1m", Task("a")))
    manager = PeriodicTaskManager(provider, broker, clock=clock)
    await manager.sync()
    provider.error = ConnectionError("config database is down")
    with caplog.at_level(logging.ERROR, logger="taskq.scheduler"):
        assert not await manager.sync()
    assert "config database is down" in caplog.text
    assert specs(manager) == [("@every 1m", "a")]


async def test_an_async_provider_is_awaited(broker: InMemoryBroker, clock: FakeClock) -> None:
    class AsyncProvider:
        async def get_configs(self) -> list[PeriodicTaskConfig]:
            await asyncio.sleep(0)
            return [PeriodicTaskConfig("@daily", Task("nightly"))]

    manager = PeriodicTaskManager(AsyncProvider(), broker, clock=clock)
    await manager.sync()
    assert specs(manager) == [("@daily", "nightly")]


async def test_serve_syncs_every_interval_and_runs_the_entries(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    provider = Provider(PeriodicTaskConfig("@every 1m", Task("a")))
    manager = PeriodicTaskManager(
        provider, broker, sync_interval=timedelta(milliseconds=50), clock=clock
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(manager.serve(stop))
    for _ in range(200):
        if provider.calls >= 3:
            break
        await asyncio.sleep(0.01)
    assert provider.calls >= 3
    provider.configs = [PeriodicTaskConfig("@every 1m", Task("b"))]
    calls = provider.calls
    for _ in range(200):
        if provider.calls > calls + 1:
            break
        await asyncio.sleep(0.01)
    clock.advance(timedelta(minutes=1))
    for _ in range(200):
        if "default" in await broker.queues():
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(serving, 5)
    [task] = await broker.list_tasks("default", TaskState.PENDING)
    assert task.type == "b"


def test_a_provider_without_get_configs_is_refused(broker: InMemoryBroker) -> None:
    with pytest.raises(InvalidArgumentError):
        PeriodicTaskManager(object(), broker)  # type: ignore[arg-type]
