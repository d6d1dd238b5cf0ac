"""The Scheduler on the in-memory broker, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from taskq._time import dt_to_ms, ms_to_dt
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import (
    BrokerConnectionError,
    DuplicateTaskError,
    InvalidArgumentError,
    ServerClosedError,
)
from taskq.scheduler import Scheduler, SchedulerEntry
from taskq.task import Task, TaskInfo, TaskState
from taskq.testing import FakeClock

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2030, 1, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def broker(clock: FakeClock) -> InMemoryBroker:
    return InMemoryBroker(clock=clock)


def make(broker: InMemoryBroker, clock: FakeClock, **kwargs: Any) -> Scheduler:
    return Scheduler(broker, clock=clock, **kwargs)


async def drive(
    schedulers: list[Scheduler], clock: FakeClock, *, total: timedelta, step: timedelta
) -> list[datetime]:
    """Move the clock in steps; return the times at which something was enqueued."""
    fired: list[datetime] = []
    for _ in range(total // step):
        clock.advance(step)
        count = 0
        for scheduler in schedulers:
            count += await scheduler.run_pending()
        fired.extend([ms_to_dt(clock.now_ms())] * count)
    return fired


async def pending(broker: InMemoryBroker, queue: str = "default") -> list[TaskInfo]:
    return await broker.list_tasks(queue, TaskState.PENDING, limit=1000)


async def test_every_10s_enqueues_6_times_in_60s(broker: InMemoryBroker, clock: FakeClock) -> None:
    scheduler = make(broker, clock)
    scheduler.register("@every 10s", Task("ping", b"p"))
    fired = await drive([scheduler], clock, total=timedelta(seconds=60), step=timedelta(seconds=1))
    assert len(fired) == 6
    assert [t.second for t in fired] == [10, 20, 30, 40, 50, 0]
    tasks = await pending(broker)
    assert len(tasks) == 6
    assert {(t.type, t.payload) for t in tasks} == {("ping", b"p")}


async def test_every_is_aligned_to_the_epoch_so_all_processes_agree(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    clock.advance(timedelta(seconds=7, milliseconds=123))
    scheduler = make(broker, clock)
    entry = scheduler.register("@every 1m30s", Task("ping"))
    assert dt_to_ms(scheduler.next_run(entry)) % 90_000 == 0
    assert scheduler.next_run(entry) - ms_to_dt(clock.now_ms()) <= timedelta(seconds=90)


async def test_sub_second_every_fires_on_time(broker: InMemoryBroker, clock: FakeClock) -> None:
    scheduler = make(broker, clock)
    scheduler.register("@every 500ms", Task("ping"))
    fired = await drive(
        [scheduler], clock, total=timedelta(seconds=5), step=timedelta(milliseconds=100)
    )
    assert len(fired) == 10


@pytest.mark.parametrize(
    ("start", "expected_local"),
    [
        # Spring forward: 02:00 CET becomes 03:00 CEST; the wall-clock gap is skipped.
        (
            datetime(2024, 3, 31, 0, 48, tzinfo=timezone.utc),
            ["01:50+01", "01:55+01", "03:00+02", "03:05+02", "03:10+02"],
        ),
        # Fall back: 03:00 CEST becomes 02:00 CET; */5 keeps firing every 5 real minutes.
        (
            datetime(2024, 10, 27, 0, 48, tzinfo=timezone.utc),
            ["02:50+02", "02:55+02", "02:00+01", "02:05+01", "02:10+01"],
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_cron_fires_at_the_right_minutes_in_a_timezone_across_dst(
    broker: InMemoryBroker, clock: FakeClock, start: datetime, expected_local: list[str]
) -> None:
    clock.set(start)
    scheduler = make(broker, clock, timezone="Europe/Berlin")
    scheduler.register("*/5 * * * *", Task("report"))
    fired = await drive([scheduler], clock, total=timedelta(minutes=24), step=timedelta(minutes=1))
    local = [t.astimezone(BERLIN).strftime("%H:%M%z")[:-2] for t in fired]
    assert local == expected_local
    gaps = {b - a for a, b in itertools.pairwise(fired)}
    assert gaps == {timedelta(minutes=5)}


async def test_a_fixed_time_job_runs_once_when_the_hour_repeats(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    clock.set(datetime(2024, 10, 26, 22, 0, tzinfo=timezone.utc))
    scheduler = make(broker, clock, timezone=BERLIN)
    scheduler.register("30 2 * * *", Task("nightly"))
    fired = await drive([scheduler], clock, total=timedelta(hours=6), step=timedelta(minutes=5))
    assert [t.astimezone(BERLIN).isoformat() for t in fired] == ["2024-10-27T02:30:00+02:00"]


async def test_a_fixed_time_job_in_the_skipped_hour_runs_right_after_the_gap(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    clock.set(datetime(2024, 3, 30, 23, 0, tzinfo=timezone.utc))
    scheduler = make(broker, clock, timezone=BERLIN)
    scheduler.register("30 2 * * *", Task("nightly"))
    fired = await drive([scheduler], clock, total=timedelta(hours=4), step=timedelta(minutes=5))
    assert [t.astimezone(BERLIN).isoformat() for t in fired] == ["2024-03-31T03:00:00+02:00"]


async def test_cron_tz_prefix_overrides_the_scheduler_timezone(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    clock.set(datetime(2030, 1, 15, 7, 30, tzinfo=timezone.utc))
    scheduler = make(broker, clock, timezone="America/New_York")
    berlin = scheduler.register("CRON_TZ=Europe/Berlin 0 9 * * *", Task("morning", b"berlin"))
    utc = scheduler.register("TZ=UTC 0 9 * * *", Task("morning", b"utc"))
    assert scheduler.next_run(berlin) == datetime(2030, 1, 15, 8, 0, tzinfo=timezone.utc)
    assert scheduler.next_run(utc) == datetime(2030, 1, 15, 9, 0, tzinfo=timezone.utc)
    assert {e.timezone for e in scheduler.entries()} == {"Europe/Berlin", "UTC"}


async def test_a_sixth_leading_field_is_seconds(broker: InMemoryBroker, clock: FakeClock) -> None:
    scheduler = make(broker, clock)
    scheduler.register("*/15 * * * * *", Task("fast"))
    fired = await drive([scheduler], clock, total=timedelta(minutes=1), step=timedelta(seconds=1))
    assert [t.second for t in fired] == [15, 30, 45, 0]


@pytest.mark.parametrize(
    ("spec", "first"),
    [
        ("@hourly", datetime(2030, 1, 15, 13, 0, tzinfo=timezone.utc)),
        ("@daily", datetime(2030, 1, 16, 0, 0, tzinfo=timezone.utc)),
        ("@midnight", datetime(2030, 1, 16, 0, 0, tzinfo=timezone.utc)),
        ("@weekly", datetime(2030, 1, 20, 0, 0, tzinfo=timezone.utc)),
        ("@monthly", datetime(2030, 2, 1, 0, 0, tzinfo=timezone.utc)),
        ("@yearly", datetime(2031, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("@annually", datetime(2031, 1, 1, 0, 0, tzinfo=timezone.utc)),
        ("@every 2h", datetime(2030, 1, 15, 14, 0, tzinfo=timezone.utc)),
        ("0 9 * * 1-5", datetime(2030, 1, 16, 9, 0, tzinfo=timezone.utc)),
    ],
)
def test_descriptors_and_cron_specs_fire_when_expected(
    broker: InMemoryBroker, clock: FakeClock, spec: str, first: datetime
) -> None:
    scheduler = make(broker, clock)
    assert scheduler.next_run(scheduler.register(spec, Task("t"))) == first


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "61 * * * *",
        "0 0 30 2 *",
        "not a spec",
        "@every",
        "@every 10",
        "@every 5x",
        "@every 0s",
        "@every 10ms",
        "@fortnightly",
        "CRON_TZ=Mars/Olympus 0 9 * * *",
        "CRON_TZ=Europe/Berlin",
    ],
)
def test_an_invalid_spec_is_refused_at_register(
    broker: InMemoryBroker, clock: FakeClock, spec: str
) -> None:
    scheduler = make(broker, clock)
    with pytest.raises(InvalidArgumentError):
        scheduler.register(spec, Task("t"))
    assert scheduler.entries() == []


@pytest.mark.parametrize(
    "options",
    [
        {"queue": "bad{queue}"},
        {"max_retry": -1},
        {"colour": "blue"},
        {"process_at": START + timedelta(days=1)},
        {"timeout": 5},
    ],
)
def test_invalid_enqueue_options_are_refused_at_register(
    broker: InMemoryBroker, clock: FakeClock, options: dict[str, Any]
) -> None:
    scheduler = make(broker, clock)
    with pytest.raises(InvalidArgumentError):
        scheduler.register("@every 1m", Task("t"), **options)


def test_an_unknown_timezone_is_refused(broker: InMemoryBroker) -> None:
    with pytest.raises(InvalidArgumentError):
        Scheduler(broker, timezone="Nowhere/Special")


def test_entry_ids_are_stable_across_schedulers_and_depend_on_what_runs(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    first, second = make(broker, clock), make(broker, clock)
    task = Task("report", b"{}", headers={"k": "v"})
    entry = first.register("*/5 * * * *", task, queue="reports")
    assert second.register("*/5  *  * * *", task, queue="reports") == entry
    assert first.register("*/5 * * * *", task, queue="reports") == entry
    assert len(first.entries()) == 1
    others = {
        first.register("*/10 * * * *", task, queue="reports"),
        first.register("*/5 * * * *", Task("report", b"[]"), queue="reports"),
        first.register("*/5 * * * *", Task("other", b"{}"), queue="reports"),
        first.register("*/5 * * * *", task, queue="low"),
        first.register("CRON_TZ=Europe/Berlin */5 * * * *", task, queue="reports"),
        make(broker, clock, timezone="Asia/Tokyo").register("*/5 * * * *", task, queue="reports"),
    }
    assert entry not in others
    assert len(others) == 6


async def test_unregister_stops_an_entry(broker: InMemoryBroker, clock: FakeClock) -> None:
    scheduler = make(broker, clock)
    keep = scheduler.register("@every 10s", Task("keep"))
    drop = scheduler.register("@every 10s", Task("drop"))
    await drive([scheduler], clock, total=timedelta(seconds=10), step=timedelta(seconds=1))
    scheduler.unregister(drop)
    await drive([scheduler], clock, total=timedelta(seconds=30), step=timedelta(seconds=1))
    types = sorted(t.type for t in await pending(broker))
    assert types == ["drop"] + ["keep"] * 4
    assert [e.id for e in scheduler.entries()] == [keep]
    with pytest.raises(InvalidArgumentError):
        scheduler.unregister(drop)


async def test_enqueue_options_apply_to_every_run(broker: InMemoryBroker, clock: FakeClock) -> None:
    scheduler = make(broker, clock)
    scheduler.register(
        "@every 10s", Task("t", max_retry=7), queue="low", retention=timedelta(hours=1)
    )
    scheduler.register("@every 10s", Task("later"), queue="low", process_in=timedelta(minutes=1))
    await drive([scheduler], clock, total=timedelta(seconds=10), step=timedelta(seconds=1))
    [task] = await pending(broker, "low")
    assert (task.type, task.max_retry, task.retention) == ("t", 7, timedelta(hours=1))
    [later] = await broker.list_tasks("low", TaskState.SCHEDULED)
    assert later.next_process_at == ms_to_dt(clock.now_ms()) + timedelta(minutes=1)


async def test_three_schedulers_on_one_broker_enqueue_each_tick_once(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    schedulers = [make(broker, clock) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.register("@every 1s", Task("tick"))
    fired = await drive(schedulers, clock, total=timedelta(seconds=30), step=timedelta(seconds=1))
    assert len(fired) == 30
    assert len(set(fired)) == 30
    assert len(await pending(broker)) == 30


async def test_a_tick_claimed_by_a_scheduler_that_died_is_enqueued_by_another(
    broker: InMemoryBroker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    survivor = make(broker, clock, recovery_delay=timedelta(seconds=3))
    entry = survivor.register("@every 10s", Task("tick"))
    tick = dt_to_ms(survivor.next_run(entry))
    # Another process claimed this tick, then was killed before it enqueued.
    assert await broker.claim_scheduler_tick(entry, tick, ttl=600_000)

    fired = await drive([survivor], clock, total=timedelta(seconds=10), step=timedelta(seconds=1))
    assert fired == []
    with caplog.at_level(logging.WARNING, logger="taskq.scheduler"):
        fired = await drive(
            [survivor], clock, total=timedelta(seconds=3), step=timedelta(seconds=1)
        )
    assert len(fired) == 1
    assert "never recorded" in caplog.text
    # Later ticks go on normally, and nothing is enqueued twice.
    await drive([survivor], clock, total=timedelta(seconds=20), step=timedelta(seconds=1))
    assert len(await pending(broker)) == 3
    assert len(await broker.scheduler_events(entry)) == 3


async def test_the_recovery_check_never_duplicates_a_tick_that_was_enqueued(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    schedulers = [make(broker, clock, recovery_delay=timedelta(seconds=2)) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.register("@every 1s", Task("tick"))
    await drive(schedulers, clock, total=timedelta(seconds=10), step=timedelta(milliseconds=250))
    assert len(await pending(broker)) == 10


async def test_a_tick_enqueued_but_not_recorded_is_recorded_not_enqueued_again(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    died = make(broker, clock)
    survivor = make(broker, clock, recovery_delay=timedelta(seconds=1))
    entry = died.register("@every 10s", Task("tick"))
    survivor.register("@every 10s", Task("tick"))
    tick = dt_to_ms(died.next_run(entry))
    clock.set(tick)
    assert await broker.claim_scheduler_tick(entry, tick, ttl=600_000)
    # It enqueued with the tick's deterministic id and died before recording it.
    await died._client.enqueue(Task("tick"), task_id=f"sched:{entry}:{tick}")

    await drive([survivor], clock, total=timedelta(seconds=3), step=timedelta(milliseconds=500))
    assert len(await pending(broker)) == 1
    assert [e.task_id for e in await broker.scheduler_events(entry)] == [f"sched:{entry}:{tick}"]


async def test_each_enqueue_is_recorded_in_the_entry_history(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    scheduler = make(broker, clock, history_keep=3)
    entry = scheduler.register("@every 10s", Task("tick"))
    await drive([scheduler], clock, total=timedelta(seconds=50), step=timedelta(seconds=1))
    events = await broker.scheduler_events(entry)
    assert len(events) == 3
    ids = {t.id for t in await pending(broker)}
    assert {e.task_id for e in events} <= ids
    assert [e.enqueued_at for e in events] == sorted((e.enqueued_at for e in events), reverse=True)
    assert events[0].enqueued_at == clock.now_ms()


async def test_ticks_missed_beyond_the_misfire_grace_are_skipped(
    broker: InMemoryBroker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = make(broker, clock, misfire_grace=timedelta(seconds=30))
    scheduler.register("@every 10s", Task("tick"))
    clock.advance(timedelta(minutes=10))  # e.g. the process was suspended
    with caplog.at_level(logging.WARNING, logger="taskq.scheduler"):
        assert await scheduler.run_pending() == 4  # only ticks of the last 30 s
    assert "missed" in caplog.text
    clock.advance(timedelta(seconds=10))
    assert await scheduler.run_pending() == 1


async def test_a_unique_entry_skips_runs_while_the_previous_one_holds_the_lock(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    outcomes: list[tuple[str, TaskInfo | None, BaseException | None]] = []
    scheduler = make(
        broker,
        clock,
        post_enqueue=lambda entry, info, error: outcomes.append((entry.id, info, error)),
    )
    scheduler.register("@every 10s", Task("sync"), unique=timedelta(seconds=25))
    await drive([scheduler], clock, total=timedelta(seconds=40), step=timedelta(seconds=1))
    assert len(await pending(broker)) == 2  # at 10 s and at 40 s (the lock ended at 35 s)
    kinds = [type(error).__name__ if error else "ok" for _, _, error in outcomes]
    assert kinds == ["ok", "DuplicateTaskError", "DuplicateTaskError", "ok"]
    assert all(isinstance(e, DuplicateTaskError) for _, info, e in outcomes if info is None)


async def test_hooks_see_every_enqueue_and_their_errors_do_not_stop_it(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    seen: list[SchedulerEntry] = []

    def pre(entry: SchedulerEntry) -> None:
        seen.append(entry)
        raise RuntimeError("hook bug")

    scheduler = make(broker, clock, pre_enqueue=pre)
    scheduler.register("@every 10s", Task("tick"))
    await drive([scheduler], clock, total=timedelta(seconds=20), step=timedelta(seconds=1))
    assert len(seen) == 2
    assert len(await pending(broker)) == 2


async def test_serve_publishes_the_entries_and_withdraws_them_on_stop(
    broker: InMemoryBroker, clock: FakeClock
) -> None:
    scheduler = make(broker, clock)
    entry = scheduler.register("@every 1m", Task("tick", b"x"), queue="low")
    stop = asyncio.Event()
    serving = asyncio.create_task(scheduler.serve(stop))
    for _ in range(100):
        published = await broker.scheduler_entries()
        if published:
            break
        await asyncio.sleep(0.01)
    [info] = published
    assert (info.id, info.spec, info.task_type, info.payload) == (entry, "@every 1m", "tick", b"x")
    assert info.options == {"queue": "low"}
    assert info.scheduler_id == scheduler.id
    assert info.next_enqueue_at == dt_to_ms(scheduler.next_run(entry))

    clock.advance(timedelta(minutes=1))
    scheduler.register("@every 1h", Task("other"))  # wakes the loop at once
    for _ in range(100):
        if "low" in await broker.queues() and len(await broker.scheduler_entries()) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(await pending(broker, "low")) == 1

    stop.set()
    await asyncio.wait_for(serving, 5)
    assert await broker.scheduler_entries() == []


def test_start_and_shutdown_run_the_scheduler_in_the_background() -> None:
    enqueued: list[TaskInfo | None] = []
    scheduler = Scheduler(InMemoryBroker(), post_enqueue=lambda e, info, err: enqueued.append(info))
    scheduler.register("@every 100ms", Task("tick"))
    scheduler.start()
    try:
        deadline = time.monotonic() + 5
        while len(enqueued) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        scheduler.shutdown()
    assert len(enqueued) >= 3
    assert all(info is not None for info in enqueued)
    count = len(enqueued)
    time.sleep(0.3)
    assert len(enqueued) == count  # stopped
    scheduler.shutdown()  # idempotent


class FlakyBroker(InMemoryBroker):
    """Refuses the first ``failures`` claims as if the broker were unreachable."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__(clock=clock)
        self.failures = failures

    async def claim_scheduler_tick(self, entry_id: str, tick: int, *, ttl: int) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise BrokerConnectionError("connection refused")
        return await super().claim_scheduler_tick(entry_id, tick, ttl=ttl)


async def test_a_tick_whose_claim_failed_is_tried_again_and_logged_in_one_line(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FlakyBroker(clock, failures=1)
    scheduler = make(broker, clock, recovery_delay=timedelta(seconds=2))
    scheduler.register("@every 10s", Task("tick"))
    with caplog.at_level(logging.ERROR, logger="taskq.scheduler"):
        fired = await drive(
            [scheduler], clock, total=timedelta(seconds=12), step=timedelta(seconds=1)
        )
    assert len(fired) == 1  # at 12 s: the 10 s tick, once the broker answered again
    assert "could not claim tick" in caplog.text
    assert "connection refused" in caplog.text
    assert "Traceback" not in caplog.text
    assert len(await pending(broker)) == 1


async def test_a_scheduler_that_closed_the_broker_it_created_cannot_serve_again() -> None:
    scheduler = Scheduler("memory://")
    stop = asyncio.Event()
    stop.set()
    await scheduler.serve(stop)
    with pytest.raises(ServerClosedError):
        await scheduler.serve(stop)


async def test_a_scheduler_on_a_given_broker_can_serve_again(broker: InMemoryBroker) -> None:
    scheduler = Scheduler(broker)
    stop = asyncio.Event()
    stop.set()
    await scheduler.serve(stop)
    await scheduler.serve(stop)


def test_run_from_another_thread_returns_after_shutdown() -> None:
    running = threading.Event()
    scheduler = Scheduler(InMemoryBroker(), post_enqueue=lambda entry, info, err: running.set())
    scheduler.register("@every 100ms", Task("tick"))
    runner = threading.Thread(target=scheduler.run)
    runner.start()
    assert running.wait(5)
    scheduler.shutdown()
    runner.join(5)
    assert not runner.is_alive()
