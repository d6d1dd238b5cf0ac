"""TaskqCollector: taskq's queues and fleet as Prometheus metrics, read on each scrape."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

import taskq
from taskq.inspector import ServerInfo, WorkerInfo
from taskq_prometheus._redact import scrub

__all__ = ["STATES", "TaskqCollector", "register"]

log = logging.getLogger("taskq_prometheus")

STATES: tuple[str, ...] = tuple(s.value for s in taskq.TaskState)
"""Every task state, the values of the ``state`` label of ``taskq_tasks``."""


@dataclass(frozen=True)
class _Snapshot:
    """What one broker read found."""

    queues: Sequence[taskq.QueueInfo]
    servers: int
    active_workers: int
    concurrency: int
    scheduler_entries: int
    running: Sequence[_Running] = ()


@dataclass(frozen=True)
class _Running:
    """The attempts live servers are running for one queue."""

    queue: str
    count: int
    oldest_seconds: float
    cut_off: int = 0


def _running(
    queues: Sequence[str], servers: Sequence[ServerInfo], now: datetime
) -> tuple[_Running, ...]:
    """Per queue (every listed one, then any other a server runs), its running attempts."""
    workers: dict[str, list[WorkerInfo]] = {name: [] for name in queues}
    for server in servers:
        for worker in server.active_workers:
            workers.setdefault(worker.queue, []).append(worker)
    return tuple(
        _Running(
            queue,
            len(running),
            max(((now - w.started_at).total_seconds() for w in running), default=0.0),
            sum(1 for w in running if w.cut_off),
        )
        for queue, running in workers.items()
    )


@dataclass(frozen=True)
class _Read:
    """The outcome of one broker read: a snapshot, or None when the read failed."""

    snapshot: _Snapshot | None
    duration: float
    at: float


class TaskqCollector:
    """A ``prometheus_client`` collector that reads taskq through its Inspector on each scrape.

    One read issues ``len(queues) + 3`` broker calls: the queue list, one
    :meth:`taskq.Inspector.get_queue_info` per queue, the servers and the
    scheduler entries. With ``cache_ttl`` > 0 a read is reused for that many
    seconds, so scrapers that come often (or several at once) cannot hammer
    the broker. Concurrent scrapes take turns: one read runs at a time.

    A scrape never raises: when the broker fails, ``taskq_up`` is 0,
    ``taskq_scrape_errors_total`` goes up by one and no other taskq sample is
    exposed. A failed read is cached like a good one.

    Args:
        source: a :class:`taskq.Inspector`, a :class:`taskq.Broker`, a broker
            URL, or None for ``$TASKQ_BROKER`` / the SQLite file ``taskq.db``
            (as :class:`taskq.Inspector` resolves it).
        cache_ttl: seconds a read is reused (0: read on every scrape).
        clock: monotonic seconds, for the cache (tests pass their own).
        now: the current time (aware), for how long running attempts have
            been running; the broker's servers stamp them with their clock.

    Raises:
        ValueError: ``cache_ttl`` is negative.
        taskq.TaskqError: ``source`` is a URL no broker handles, or malformed.
    """

    def __init__(
        self,
        source: taskq.Inspector | taskq.Broker | str | None = None,
        *,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        if cache_ttl < 0:
            raise ValueError(f"cache_ttl must be >= 0, got {cache_ttl!r}")
        self._url = source if isinstance(source, str) else None
        if isinstance(source, taskq.Inspector):
            self._inspector = source
            self._owns_inspector = False
        else:
            self._inspector = taskq.Inspector(source)
            self._owns_inspector = True
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._last: _Read | None = None
        self._errors = 0

    def __repr__(self) -> str:
        return f"TaskqCollector({self._inspector!r}, cache_ttl={self._cache_ttl!r})"

    def close(self) -> None:
        """Close the Inspector (and a broker built from a URL) if this collector created it."""
        if self._owns_inspector:
            self._inspector.close()

    def describe(self) -> Iterator[Metric]:
        """The metric families this collector exposes, without samples and without broker I/O.

        ``prometheus_client`` calls this on registration to check for name
        clashes; without it, registering would read the broker.
        """
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        """Read the broker (or reuse a read younger than ``cache_ttl``) and yield the metrics."""
        read, errors = self._current()
        families = _Families()
        families.up.add_metric([], 1 if read.snapshot is not None else 0)
        families.scrape_errors.add_metric([], errors)
        families.scrape_duration.add_metric([], read.duration)
        if read.snapshot is not None:
            families.fill(read.snapshot)
        yield from families.all()

    def _current(self) -> tuple[_Read, int]:
        with self._lock:
            last = self._last
            now = self._clock()
            if last is None or now - last.at >= self._cache_ttl:
                last = self._read(now)
                self._last = last
            return last, self._errors

    def _read(self, now: float) -> _Read:
        started = time.perf_counter()
        try:
            snapshot: _Snapshot | None = self._snapshot()
        except Exception as exc:  # a scrape must never raise: any failure is taskq_up 0
            snapshot = None
            self._errors += 1
            self._log_failure(exc)
        else:
            if self._last is not None and self._last.snapshot is None:
                log.info("taskq_prometheus: the broker answers again")
        return _Read(snapshot, time.perf_counter() - started, now)

    def _snapshot(self) -> _Snapshot:
        inspector = self._inspector
        queues = []
        for name in inspector.queues():
            try:
                queues.append(inspector.get_queue_info(name))
            except taskq.QueueNotFoundError:
                continue  # removed since it was listed
        servers = inspector.servers()
        entries = inspector.scheduler_entries()
        return _Snapshot(
            queues=tuple(queues),
            servers=len(servers),
            active_workers=sum(len(s.active_workers) for s in servers),
            concurrency=sum(s.concurrency for s in servers),
            scheduler_entries=len(entries),
            running=_running([q.queue for q in queues], servers, self._now()),
        )

    def _log_failure(self, exc: Exception) -> None:
        message = scrub(f"{type(exc).__name__}: {exc}", self._url)
        was_up = self._last is None or self._last.snapshot is not None
        # One warning when the broker goes away, not one per scrape while it stays away.
        log.log(
            logging.WARNING if was_up else logging.DEBUG,
            "taskq_prometheus: reading the broker failed: %s",
            message,
        )


class _Families:
    """One fresh set of metric families, filled from a snapshot."""

    def __init__(self) -> None:
        q = ["queue"]
        self.up = GaugeMetricFamily(
            "taskq_up", "1 if the last read of the taskq broker succeeded, else 0."
        )
        self.scrape_errors = CounterMetricFamily(
            "taskq_scrape_errors", "Reads of the taskq broker that failed."
        )
        self.scrape_duration = GaugeMetricFamily(
            "taskq_scrape_duration_seconds", "How long the last read of the taskq broker took."
        )
        self.tasks = GaugeMetricFamily(
            "taskq_tasks", "Tasks in the queue by state.", labels=["queue", "state"]
        )
        self.paused = GaugeMetricFamily(
            "taskq_queue_paused", "1 if workers do not dequeue from the queue.", labels=q
        )
        self.latency = GaugeMetricFamily(
            "taskq_queue_latency_seconds",
            "Age of the oldest pending task (0 when none is pending).",
            labels=q,
        )
        self.groups = GaugeMetricFamily(
            "taskq_queue_groups", "Groups holding aggregating tasks.", labels=q
        )
        self.memory = GaugeMetricFamily(
            "taskq_queue_memory_bytes",
            "Storage the queue uses, where the broker can tell.",
            labels=q,
        )
        self.processed_today = GaugeMetricFamily(
            "taskq_processed_today",
            "Attempts ended today (UTC day, broker time): success, retry or archive.",
            labels=q,
        )
        self.failed_today = GaugeMetricFamily(
            "taskq_failed_today", "Attempts failed today (UTC day, broker time).", labels=q
        )
        self.processed = CounterMetricFamily(
            "taskq_processed", "Attempts ended, as counted by the broker.", labels=q
        )
        self.failed = CounterMetricFamily(
            "taskq_failed", "Attempts failed, as counted by the broker.", labels=q
        )
        self.servers = GaugeMetricFamily("taskq_servers", "Live worker servers.")
        self.active_workers = GaugeMetricFamily(
            "taskq_active_workers", "Tasks being processed by live servers."
        )
        self.concurrency = GaugeMetricFamily(
            "taskq_worker_concurrency", "Tasks live servers can process at once, in total."
        )
        self.scheduler_entries = GaugeMetricFamily(
            "taskq_scheduler_entries", "Periodic-task entries of live schedulers."
        )
        self.running = GaugeMetricFamily(
            "taskq_running_tasks",
            "Handlers live servers are running now (cut-off ones included).",
            labels=q,
        )
        self.cut_off = GaugeMetricFamily(
            "taskq_cut_off_handlers",
            "Handlers still running after their attempt was cut off (time limit, cancel, "
            "lost lease), each holding a slot; see Config.stuck_handler_timeout.",
            labels=q,
        )
        self.running_oldest = GaugeMetricFamily(
            "taskq_running_oldest_seconds",
            "How long the longest-running attempt has been running (0 when none).",
            labels=q,
        )

    def fill(self, snapshot: _Snapshot) -> None:
        for info in snapshot.queues:
            labels = [info.queue]
            for state in STATES:
                self.tasks.add_metric([info.queue, state], info.count(state))
            self.paused.add_metric(labels, 1 if info.paused else 0)
            self.latency.add_metric(labels, info.latency.total_seconds())
            self.groups.add_metric(labels, info.groups)
            if info.memory_bytes is not None:
                self.memory.add_metric(labels, info.memory_bytes)
            self.processed_today.add_metric(labels, info.processed)
            self.failed_today.add_metric(labels, info.failed)
            self.processed.add_metric(labels, info.processed_total)
            self.failed.add_metric(labels, info.failed_total)
        self.servers.add_metric([], snapshot.servers)
        self.active_workers.add_metric([], snapshot.active_workers)
        self.concurrency.add_metric([], snapshot.concurrency)
        self.scheduler_entries.add_metric([], snapshot.scheduler_entries)
        for running in snapshot.running:
            labels = [running.queue]
            self.running.add_metric(labels, running.count)
            self.running_oldest.add_metric(labels, running.oldest_seconds)
            self.cut_off.add_metric(labels, running.cut_off)

    def all(self) -> list[Metric]:
        return [
            self.up,
            self.scrape_errors,
            self.scrape_duration,
            self.tasks,
            self.paused,
            self.latency,
            self.groups,
            self.memory,
            self.processed_today,
            self.failed_today,
            self.processed,
            self.failed,
            self.servers,
            self.active_workers,
            self.concurrency,
            self.scheduler_entries,
            self.running,
            self.running_oldest,
            self.cut_off,
        ]


def register(
    source: taskq.Inspector | taskq.Broker | str | None = None,
    registry: CollectorRegistry = REGISTRY,
    *,
    cache_ttl: float = 0.0,
) -> TaskqCollector:
    """Build a :class:`TaskqCollector` for ``source`` and register it in ``registry``.

    Args:
        source: as for :class:`TaskqCollector`.
        registry: where to register (default: ``prometheus_client``'s global one,
            which ``start_http_server`` and ``make_wsgi_app`` / ``make_asgi_app`` serve).
        cache_ttl: as for :class:`TaskqCollector`.

    Returns:
        The collector; ``registry.unregister(collector)`` and
        ``collector.close()`` undo this.

    Raises:
        ValueError: a taskq metric is already registered in ``registry``.
        taskq.TaskqError: ``source`` is a URL no broker handles, or malformed.
    """
    collector = TaskqCollector(source, cache_ttl=cache_ttl)
    try:
        registry.register(collector)
    except BaseException:
        collector.close()
        raise
    return collector
