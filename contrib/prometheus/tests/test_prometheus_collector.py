"""TaskqCollector on the in-memory broker: exact metric values, failures, cost and caching."""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections import Counter
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import attrs
import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from taskq_prometheus import STATES, TaskqCollector, register

import taskq
from taskq.brokers import base
from taskq.brokers.registry import register_scheme
from taskq.testing import FakeClock

T = TypeVar("T")
MINUTE_MS = 60_000


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class CountingBroker(taskq.InMemoryBroker):
    """An in-memory broker that counts calls of its protocol methods and can be made to fail."""

    def __init__(self, clock: taskq.Clock | None = None) -> None:
        super().__init__(clock)
        self.calls: Counter[str] = Counter()
        self.failure: Exception | None = None
        self.vanishing: set[str] = set()
        self.memory: dict[str, int] = {}
        self.closed = 0

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if not name.startswith("_") and inspect.iscoroutinefunction(value):
            super().__getattribute__("calls")[name] += 1
        return value

    async def queues(self) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return await super().queues()

    async def queue_stats(self, queue: str) -> base.QueueStats:
        if queue in self.vanishing:
            raise taskq.QueueNotFoundError(f"queue {queue!r} not found")
        stats = await super().queue_stats(queue)
        if queue in self.memory:
            stats = attrs.evolve(stats, memory_bytes=self.memory[queue])
        return stats

    async def close(self) -> None:
        self.closed += 1
        await super().close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> CountingBroker:
    return CountingBroker(clock)


@pytest.fixture
def client(broker: CountingBroker) -> taskq.Client:
    return taskq.Client(broker)


@pytest.fixture
def registry(broker: CountingBroker) -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    collector = TaskqCollector(broker)
    registry.register(collector)
    yield registry
    collector.close()


class Scrape:
    """The samples of one collection of ``registry``, looked up by name and labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.values = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in registry.collect()
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))


def task(n: int = 0) -> taskq.Task:
    return taskq.Task("email:send", f'{{"n": {n}}}'.encode())


def test_tasks_are_counted_per_queue_and_state(
    broker: CountingBroker, client: taskq.Client, clock: FakeClock, registry: CollectorRegistry
) -> None:
    for n in range(3):
        client.enqueue(task(n))
    client.enqueue(task(3), process_at=clock.now() + timedelta(days=1))
    client.enqueue(task(4), group="user1")
    for n in range(4):
        client.enqueue(task(n), queue="high")
    deliveries = run(broker.dequeue(["high"], count=4, lease=MINUTE_MS))
    run(broker.retry(deliveries[1].ref, delay=MINUTE_MS, error="boom"))
    run(broker.archive(deliveries[2].ref, error="gave up"))
    run(broker.complete(deliveries[3].ref, retention=MINUTE_MS))

    expected = {
        "default": {"pending": 3, "scheduled": 1, "aggregating": 1},
        "high": {"active": 1, "retry": 1, "archived": 1, "completed": 1},
    }
    scrape = Scrape(registry)
    for queue, counts in expected.items():
        for state in STATES:
            got = scrape("taskq_tasks", queue=queue, state=state)
            assert got == counts.get(state, 0), (queue, state)
    assert scrape("taskq_queue_groups", queue="default") == 1
    assert scrape("taskq_up") == 1
    assert scrape("taskq_scrape_errors_total") == 0


def test_processed_and_failed_are_exposed_for_today_and_as_counters(
    broker: CountingBroker, client: taskq.Client, registry: CollectorRegistry
) -> None:
    for n in range(4):
        client.enqueue(task(n))
    deliveries = run(broker.dequeue(["default"], count=4, lease=MINUTE_MS))
    run(broker.done(deliveries[0].ref))
    run(broker.complete(deliveries[1].ref, retention=MINUTE_MS))
    run(broker.retry(deliveries[2].ref, delay=MINUTE_MS, error="boom"))
    run(broker.archive(deliveries[3].ref, error="gave up"))

    scrape = Scrape(registry)
    assert scrape("taskq_processed_today", queue="default") == 4
    assert scrape("taskq_failed_today", queue="default") == 2
    assert scrape("taskq_processed_total", queue="default") == 4
    assert scrape("taskq_failed_total", queue="default") == 2


def test_paused_queue_is_1_and_a_running_one_0(
    client: taskq.Client, broker: CountingBroker, registry: CollectorRegistry
) -> None:
    client.enqueue(task(), queue="a")
    client.enqueue(task(), queue="b")
    taskq.Inspector(broker).pause_queue("a")

    scrape = Scrape(registry)
    assert scrape("taskq_queue_paused", queue="a") == 1
    assert scrape("taskq_queue_paused", queue="b") == 0


def test_latency_is_the_age_of_the_oldest_pending_task(
    client: taskq.Client, clock: FakeClock, registry: CollectorRegistry
) -> None:
    client.enqueue(task(1), queue="slow")
    clock.advance(timedelta(seconds=60))
    client.enqueue(task(2), queue="slow")
    client.enqueue(task(3), queue="idle", process_at=clock.now() + timedelta(hours=1))
    clock.advance(timedelta(seconds=30))

    scrape = Scrape(registry)
    assert scrape("taskq_queue_latency_seconds", queue="slow") == 90.0
    assert scrape("taskq_queue_latency_seconds", queue="idle") == 0.0


def test_memory_is_exposed_only_where_the_broker_can_tell(
    broker: CountingBroker, client: taskq.Client, registry: CollectorRegistry
) -> None:
    client.enqueue(task(), queue="known")
    client.enqueue(task(), queue="unknown")
    broker.memory["known"] = 4096

    scrape = Scrape(registry)
    assert scrape("taskq_queue_memory_bytes", queue="known") == 4096
    assert ("taskq_queue_memory_bytes", frozenset({("queue", "unknown")})) not in scrape.values


def test_fleet_counts_servers_busy_workers_concurrency_and_scheduler_entries(
    broker: CountingBroker, clock: FakeClock, registry: CollectorRegistry
) -> None:
    now = clock.now_ms()
    busy = [base.WorkerInfo(f"t{i}", "email:send", "default", now, 0) for i in range(3)]
    for server_id, concurrency, workers in [("s1", 10, busy), ("s2", 5, [])]:
        info = base.ServerInfo(
            server_id, "host", 1, concurrency, {"default": 1}, False, now, "active", workers
        )
        run(broker.write_server_state(info, ttl=MINUTE_MS))
    entries = [
        base.SchedulerEntryInfo(f"e{i}", "@every 30s", "report", b"", {}, now + 30_000)
        for i in range(3)
    ]
    run(broker.write_scheduler_entries("sched1", entries, ttl=MINUTE_MS))

    scrape = Scrape(registry)
    assert scrape("taskq_servers") == 2
    assert scrape("taskq_active_workers") == 3
    assert scrape("taskq_worker_concurrency") == 15
    assert scrape("taskq_scheduler_entries") == 3


def test_running_attempts_per_queue_with_the_longest_running(
    broker: CountingBroker, client: taskq.Client, clock: FakeClock
) -> None:
    # From the same servers() read as taskq_active_workers: no extra broker call.
    client.enqueue(task(), queue="emails")
    client.enqueue(task(), queue="idle")
    now = clock.now_ms()
    workers = [
        base.WorkerInfo("a", "email:send", "emails", now - 90_000, now + 1_000),
        base.WorkerInfo("b", "email:send", "emails", now - 5_000, now + 60_000),
        base.WorkerInfo("c", "report", "unlisted", now - 2_000, 0),  # no deadline
        base.WorkerInfo("d", "report", "unlisted", now - 1_000, now - 500, cut_off="timeout"),
    ]
    info = base.ServerInfo("s1", "host", 1, 10, {"emails": 1}, False, now, "active", workers)
    run(broker.write_server_state(info, ttl=MINUTE_MS))
    registry = CollectorRegistry()
    collector = TaskqCollector(broker, now=clock.now)
    registry.register(collector)

    scrape = Scrape(registry)
    collector.close()
    assert scrape("taskq_running_tasks", queue="emails") == 2
    assert scrape("taskq_running_oldest_seconds", queue="emails") == 90
    assert scrape("taskq_running_tasks", queue="unlisted") == 2
    assert scrape("taskq_running_oldest_seconds", queue="unlisted") == 2
    assert scrape("taskq_cut_off_handlers", queue="unlisted") == 1
    assert scrape("taskq_cut_off_handlers", queue="emails") == 0
    assert scrape("taskq_running_tasks", queue="idle") == 0
    assert scrape("taskq_running_oldest_seconds", queue="idle") == 0
    assert scrape("taskq_cut_off_handlers", queue="idle") == 0


def test_an_empty_broker_is_up_with_a_zero_fleet(registry: CollectorRegistry) -> None:
    scrape = Scrape(registry)
    assert scrape("taskq_up") == 1
    assert scrape("taskq_servers") == 0
    assert scrape("taskq_scheduler_entries") == 0
    assert scrape("taskq_scrape_duration_seconds") is not None


@pytest.mark.parametrize(
    "failure", [taskq.BrokerConnectionError("connection refused"), RuntimeError("a bug")]
)
def test_a_failing_broker_gives_up_0_counts_the_error_and_never_raises(
    broker: CountingBroker,
    client: taskq.Client,
    registry: CollectorRegistry,
    failure: Exception,
) -> None:
    client.enqueue(task())
    broker.failure = failure

    generate_latest(registry)  # must not raise
    down = Scrape(registry)
    broker.failure = None
    back = Scrape(registry)

    assert down("taskq_up") == 0
    assert down("taskq_scrape_errors_total") == 2
    assert down("taskq_tasks", queue="default", state="pending") is None
    assert down("taskq_servers") is None
    assert back("taskq_up") == 1
    assert back("taskq_scrape_errors_total") == 2
    assert back("taskq_tasks", queue="default", state="pending") == 1


def test_a_queue_removed_while_being_read_is_left_out(
    broker: CountingBroker, client: taskq.Client, registry: CollectorRegistry
) -> None:
    client.enqueue(task(), queue="stays")
    client.enqueue(task(), queue="goes")
    broker.vanishing.add("goes")

    scrape = Scrape(registry)
    assert scrape("taskq_up") == 1
    assert scrape("taskq_tasks", queue="stays", state="pending") == 1
    assert scrape("taskq_tasks", queue="goes", state="pending") is None
    assert scrape("taskq_scrape_errors_total") == 0


def test_one_read_makes_one_broker_call_per_queue_plus_three(
    broker: CountingBroker, client: taskq.Client
) -> None:
    for queue in ("a", "b", "c", "d", "e"):
        client.enqueue(task(), queue=queue)
    collector = TaskqCollector(broker)
    broker.calls.clear()

    list(collector.collect())

    assert broker.calls == {"queues": 1, "queue_stats": 5, "servers": 1, "scheduler_entries": 1}


def test_registering_reads_nothing_from_the_broker(broker: CountingBroker) -> None:
    # Like prometheus_client's global REGISTRY, which collects to learn the
    # names of a collector that cannot describe itself.
    registry = CollectorRegistry(auto_describe=True)
    broker.calls.clear()

    register(broker, registry)

    assert not broker.calls


def test_a_read_is_reused_until_the_cache_ttl_passes(
    broker: CountingBroker, client: taskq.Client
) -> None:
    now = [100.0]
    registry = CollectorRegistry()
    registry.register(TaskqCollector(broker, cache_ttl=10.0, clock=lambda: now[0]))
    client.enqueue(task(1))
    assert Scrape(registry)("taskq_tasks", queue="default", state="pending") == 1
    reads = broker.calls["queues"]

    client.enqueue(task(2))
    now[0] += 9.9
    assert Scrape(registry)("taskq_tasks", queue="default", state="pending") == 1
    assert broker.calls["queues"] == reads

    now[0] += 0.1
    assert Scrape(registry)("taskq_tasks", queue="default", state="pending") == 2
    assert broker.calls["queues"] == reads + 1


def test_a_failed_read_is_cached_too(broker: CountingBroker) -> None:
    now = [0.0]
    registry = CollectorRegistry()
    registry.register(TaskqCollector(broker, cache_ttl=5.0, clock=lambda: now[0]))
    broker.failure = taskq.BrokerConnectionError("down")

    for _ in range(3):
        assert Scrape(registry)("taskq_up") == 0
    assert Scrape(registry)("taskq_scrape_errors_total") == 1
    assert broker.calls["queues"] == 1


def test_negative_cache_ttl_is_refused(broker: CountingBroker) -> None:
    with pytest.raises(ValueError, match="cache_ttl"):
        TaskqCollector(broker, cache_ttl=-1)


def test_register_adds_the_collector_and_refuses_a_second_one(
    broker: CountingBroker, client: taskq.Client
) -> None:
    registry = CollectorRegistry()
    client.enqueue(task())

    collector = register(broker, registry)

    assert isinstance(collector, TaskqCollector)
    assert Scrape(registry)("taskq_tasks", queue="default", state="pending") == 1
    with pytest.raises(ValueError, match="taskq_up"):
        register(broker, registry)


def test_the_exposition_uses_the_documented_names_and_labels(
    client: taskq.Client, registry: CollectorRegistry
) -> None:
    client.enqueue(task(), queue="emails")

    text = generate_latest(registry).decode()

    for line in [
        "taskq_up 1.0",
        "taskq_scrape_errors_total 0.0",
        'taskq_tasks{queue="emails",state="pending"} 1.0',
        'taskq_tasks{queue="emails",state="aggregating"} 0.0',
        'taskq_queue_paused{queue="emails"} 0.0',
        'taskq_queue_latency_seconds{queue="emails"} 0.0',
        'taskq_queue_groups{queue="emails"} 0.0',
        'taskq_processed_today{queue="emails"} 0.0',
        'taskq_failed_today{queue="emails"} 0.0',
        'taskq_processed_total{queue="emails"} 0.0',
        'taskq_failed_total{queue="emails"} 0.0',
        "taskq_servers 0.0",
        "taskq_active_workers 0.0",
        "taskq_worker_concurrency 0.0",
        "taskq_scheduler_entries 0.0",
        'taskq_running_tasks{queue="emails"} 0.0',
        'taskq_running_oldest_seconds{queue="emails"} 0.0',
        'taskq_cut_off_handlers{queue="emails"} 0.0',
    ]:
        assert line in text.splitlines(), line
    types = {family.name: family.type for family in registry.collect()}
    counters = {"taskq_scrape_errors", "taskq_processed", "taskq_failed"}
    assert {name for name, kind in types.items() if kind == "counter"} == counters
    assert all(kind == "gauge" for name, kind in types.items() if name not in counters)


def test_close_closes_a_broker_built_from_a_url_only(broker: CountingBroker) -> None:
    built: list[CountingBroker] = []

    def factory(url: str) -> CountingBroker:
        built.append(CountingBroker())
        return built[-1]

    register_scheme("promclose", factory)
    TaskqCollector("promclose://x").close()
    TaskqCollector(broker).close()
    TaskqCollector(taskq.Inspector(broker)).close()

    assert [b.closed for b in built] == [1]
    assert broker.closed == 0


def test_failures_are_logged_once_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = secrets.token_hex(12)
    url = f"promleaky://user:{canary}@db.example:1234/0"
    leaky = CountingBroker()
    # A careless third-party broker that puts its raw URL and password in its errors.
    leaky.failure = taskq.BrokerConnectionError(f"cannot reach {url} (auth {canary})")
    register_scheme("promleaky", lambda _: leaky)
    registry = CollectorRegistry()
    registry.register(TaskqCollector(url))

    with caplog.at_level(logging.DEBUG, logger="taskq_prometheus"):
        for _ in range(3):
            assert Scrape(registry)("taskq_up") == 0
        leaky.failure = None
        assert Scrape(registry)("taskq_up") == 1

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "BrokerConnectionError" in warnings[0].getMessage()
    assert "user:***@db.example" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert canary not in caplog.text
    assert canary not in generate_latest(registry).decode()
