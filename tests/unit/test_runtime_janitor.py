"""The janitor trims each archive it serves, in bounded batches, with the configured bounds."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from taskq.brokers.base import Delivery
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import InvalidArgumentError
from taskq.mux import ServeMux
from taskq.runtime.config import Config
from taskq.runtime.janitor import Janitor
from taskq.task import TaskMessage, TaskState
from taskq.testing import FakeClock
from tests.unit._runtime import call, message, serving, wait_until

DAY_MS = 86_400_000
log = logging.getLogger("test.janitor")


class CountingBroker(InMemoryBroker):
    """Records the ``limit`` of every trim_archived call and what it returned."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.trims: list[tuple[str, int, int]] = []

    async def trim_archived(
        self, queue: str, *, max_size: int | None, max_age: int | None, limit: int = 1000
    ) -> int:
        count = await super().trim_archived(queue, max_size=max_size, max_age=max_age, limit=limit)
        self.trims.append((queue, limit, count))
        return count


class NoTrimBroker:
    """A timekeeper without the ArchiveTrimmer capability."""

    def __init__(self) -> None:
        self._inner = InMemoryBroker()

    async def now(self) -> int:
        return await self._inner.now()

    async def forward(self, queue: str, *, limit: int = 1000) -> int:
        return 0

    async def expired_leases(self, queue: str, *, limit: int = 100) -> list[str]:
        return []

    async def reclaim_expired(self, queue: str, *, lease: int, limit: int = 100) -> list[Delivery]:
        return []

    async def delete_expired_completed(self, queue: str, *, limit: int = 100) -> int:
        return 0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> CountingBroker:
    return CountingBroker(clock)


def archive(broker: InMemoryBroker, n: int, queue: str = "default") -> list[TaskMessage]:
    """Archive ``n`` new tasks by hand now; return them, oldest first."""
    messages = [message(queue=queue) for _ in range(n)]

    async def go() -> None:
        for msg in messages:
            await broker.enqueue(msg)
            await broker.archive_task(queue, msg.id)

    call(go())
    return messages


def archived_ids(broker: InMemoryBroker, queue: str = "default") -> list[str]:
    return [i.id for i in call(broker.list_tasks(queue, TaskState.ARCHIVED, limit=100_000))]


def janitor(broker: object, **kwargs: object) -> Janitor:
    settings: dict[str, object] = {
        "queues": ["default"],
        "interval": timedelta(seconds=1),
        "batch_size": 100,
        "logger": log,
    }
    settings.update(kwargs)
    return Janitor(broker, **settings)  # type: ignore[arg-type]


def test_the_archive_bounds_default_to_10000_tasks_and_90_days() -> None:
    config = Config()
    assert (config.archive_max_size, config.archive_max_age) == (10_000, timedelta(days=90))
    assert config.archive_max_age_ms == 90 * DAY_MS


def test_none_turns_each_archive_bound_off() -> None:
    config = Config(archive_max_size=None, archive_max_age=None)
    assert (config.archive_max_size, config.archive_max_age_ms) == (None, None)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("archive_max_size", -1, "archive_max_size must be an int >= 0"),
        ("archive_max_size", 1.5, "archive_max_size must be an int >= 0"),
        ("archive_max_size", True, "archive_max_size must be an int >= 0"),
        ("archive_max_age", -5, "archive_max_age: "),
        ("archive_max_age", "90d", "archive_max_age: "),
    ],
)
def test_an_invalid_archive_bound_is_refused_by_name(field: str, value: object, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        Config(**{field: value})  # type: ignore[arg-type]


def test_the_janitor_keeps_the_newest_archived_tasks_of_every_queue_it_serves(
    broker: CountingBroker,
) -> None:
    first = archive(broker, 5, "first")
    second = archive(broker, 2, "second")
    untouched = archive(broker, 4, "not-served")
    j = janitor(broker, queues=["first", "second"], archive_max_size=3)
    assert call(j.clean_once()) == 2
    assert archived_ids(broker, "first") == [m.id for m in first[2:]]
    assert archived_ids(broker, "second") == [m.id for m in second]
    assert archived_ids(broker, "not-served") == [m.id for m in untouched]


def test_the_janitor_deletes_archived_tasks_once_they_reach_the_max_age(
    broker: CountingBroker, clock: FakeClock
) -> None:
    old = archive(broker, 2)
    clock.advance(1_000)
    new = archive(broker, 1)
    j = janitor(broker, archive_max_age=timedelta(days=1))
    clock.advance(DAY_MS - 1_001)
    assert call(j.clean_once()) == 0
    clock.advance(1)
    assert call(j.clean_once()) == 2
    assert archived_ids(broker) == [new[0].id]
    assert all(m.id not in archived_ids(broker) for m in old)


def test_each_trim_call_is_bounded_by_the_batch_size(broker: CountingBroker) -> None:
    archive(broker, 7)
    j = janitor(broker, batch_size=3, archive_max_size=0)
    assert call(j.clean_once()) == 7
    assert broker.trims == [("default", 3, 3), ("default", 3, 3), ("default", 3, 1)]


def test_a_stop_ends_the_trimming_between_batches(broker: CountingBroker) -> None:
    archive(broker, 7)
    j = janitor(broker, batch_size=3, archive_max_size=0)

    async def go() -> int:
        stop = asyncio.Event()
        stop.set()
        return await j.clean_once(stop)

    assert call(go()) == 0
    assert broker.trims == []
    assert len(archived_ids(broker)) == 7


def test_with_both_bounds_off_the_archive_is_never_trimmed(
    broker: CountingBroker, clock: FakeClock
) -> None:
    archive(broker, 3)
    clock.advance(1_000 * DAY_MS)
    j = janitor(broker, archive_max_size=None, archive_max_age=None)
    assert call(j.clean_once()) == 0
    assert broker.trims == []
    assert len(archived_ids(broker)) == 3


def test_a_broker_that_cannot_trim_is_logged_once_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    j = janitor(NoTrimBroker(), archive_max_size=10)

    async def run_briefly() -> None:
        stop = asyncio.Event()
        stop.set()
        await j.run(stop)
        assert await j.clean_once() == 0

    with caplog.at_level(logging.INFO, logger=log.name):
        call(run_briefly())
    found = [r for r in caplog.records if "cannot trim archived tasks" in r.getMessage()]
    assert [r.levelno for r in found] == [logging.INFO]
    assert "NoTrimBroker" in found[0].getMessage()


def test_nothing_is_logged_about_trimming_when_both_bounds_are_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    j = janitor(NoTrimBroker(), archive_max_size=None, archive_max_age=None)

    async def run_briefly() -> None:
        stop = asyncio.Event()
        stop.set()
        await j.run(stop)

    with caplog.at_level(logging.DEBUG, logger=log.name):
        call(run_briefly())
    assert not [r for r in caplog.records if "trim" in r.getMessage()]


def test_a_server_trims_to_the_default_bounds(broker: CountingBroker, clock: FakeClock) -> None:
    archive(broker, 10_002)
    with serving(broker, ServeMux(), janitor_interval=0.05):
        wait_until(
            lambda: call(broker.queue_stats("default")).archived == 10_000,
            what="the archive trimmed to 10 000 tasks",
        )
        clock.advance(90 * DAY_MS)
        wait_until(
            lambda: call(broker.queue_stats("default")).archived == 0,
            what="the archive trimmed after 90 days",
        )
    assert {limit for _, limit, _ in broker.trims} == {Config().janitor_batch_size}


def test_a_server_applies_the_configured_archive_size(broker: CountingBroker) -> None:
    kept = archive(broker, 5)[-2:]
    with serving(broker, ServeMux(), janitor_interval=0.05, archive_max_size=2):
        wait_until(lambda: archived_ids(broker) == [m.id for m in kept], what="the trim")
