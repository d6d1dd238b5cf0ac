"""The worker server's settings: :class:`Config` (re-exported as ``taskq.Config``)."""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from taskq._time import td_to_ms
from taskq.errors import InvalidArgumentError, InvalidDurationError, MessageDecodeError
from taskq.runtime.aggregator import DEFAULT_RECLAIM_AFTER, GroupLimits, SupportsAggregate
from taskq.task import Task, validate_queue_name

if TYPE_CHECKING:
    from taskq.mux import Context

__all__ = [
    "Config",
    "ErrorHandler",
    "GroupAggregator",
    "HealthCheck",
    "RetryDelayFunc",
    "default_retry_delay",
]

RetryDelayFunc = Callable[[int, BaseException, Task], timedelta]
"""``retry_delay(retried, error, task) -> timedelta``: how long to wait before the next attempt."""

ErrorHandler = Callable[["Context", Task, BaseException], "Awaitable[None] | None"]
"""``error_handler(ctx, task, error)``: called on every failed attempt (sync or async)."""

HealthCheck = Callable[[BaseException | None], None]
"""``health_check(error_or_none)``: called every ``health_check_interval`` after a broker ping."""

GroupAggregator = Callable[[str, Sequence[Task]], Task]
"""``aggregate(group, tasks) -> task``: turns a ready group into one task."""

_BASE_DELAY = 10.0
_MAX_DELAY = 3600.0


def default_retry_delay(retried: int, error: BaseException, task: Task) -> timedelta:
    """Exponential backoff with jitter: ``min(10 s * 2**retried, 1 h) * uniform(0.75, 1.25)``.

    So the first retry comes after about 10 s, the second after about 20 s,
    then 40 s, 80 s, ... and from the ninth on about every hour (with the
    default ``max_retry`` of 25, a task keeps being retried for about a day).
    The jitter spreads retries of tasks that failed together.
    """
    base = min(_BASE_DELAY * 2.0 ** min(retried, 32), _MAX_DELAY)
    return timedelta(seconds=base * random.uniform(0.75, 1.25))


def _always_failure(error: BaseException) -> bool:
    return True


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _duration(value: object) -> timedelta:
    """Accept a timedelta or a number of seconds; refuse negatives."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise InvalidDurationError(
            f"expected a timedelta or seconds, got {type(value).__name__}: {value!r}"
        )
    if result < timedelta(0):
        raise InvalidDurationError(f"duration must not be negative, got {value!r}")
    return result


def _opt_duration(value: object) -> timedelta | None:
    return None if value is None else _duration(value)


def _archive_max_age(value: object) -> timedelta | None:
    try:
        return _opt_duration(value)
    except InvalidDurationError as exc:
        raise InvalidDurationError(
            f"archive_max_age: {exc} (None keeps archived tasks forever)"
        ) from None


def _queues(value: object) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"queues must be a mapping of queue name to weight, got {type(value).__name__}"
        )
    if not value:
        raise InvalidArgumentError("queues must name at least one queue")
    result: dict[str, int] = {}
    for name, weight in value.items():
        validate_queue_name(name)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise InvalidArgumentError(
                f"weight of queue {name!r} must be an int >= 1, got {weight!r}"
            )
        result[name] = weight
    return result


def _group_limits(value: object) -> Mapping[str, GroupLimits]:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError("group_limits must be a mapping of queue name to GroupLimits")
    for name, limits in value.items():
        validate_queue_name(name)
        if not isinstance(limits, GroupLimits):
            raise InvalidArgumentError(
                f"group_limits[{name!r}] must be a taskq.GroupLimits, got {type(limits).__name__}"
            )
    return dict(value)


def _positive(name: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise InvalidArgumentError(f"{name} must be positive, got {value}")


def _check_callable(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise InvalidArgumentError(f"{name} must be callable, got {value!r}")


_NO_RETRY_DEFAULT: tuple[type[BaseException], ...] = (
    MessageDecodeError,
    json.JSONDecodeError,
    UnicodeDecodeError,
)


@attrs.frozen(kw_only=True)
class Config:
    """Settings of a worker :class:`taskq.Server` (immutable; use ``attrs.evolve`` to change).

    Durations accept a :class:`~datetime.timedelta` or a number of seconds.

    Attributes:
        concurrency: how many tasks run at once (default: the CPU count). Sync
            handlers run on a thread pool of this size; async handlers on the
            server's event loop.
        queues: queue name -> weight (int >= 1). Without ``strict_priority``,
            each queue gets a share of the fetched tasks proportional to its
            weight while it has work (6/3/1 gives 60/30/10 %).
        strict_priority: always take from the heaviest queue first (lower
            queues may starve).
        retry_delay: ``(retried, error, task) -> timedelta`` before the next
            attempt; default :func:`default_retry_delay`.
        is_failure: ``(error) -> bool``; False means the attempt does not count
            (the task is retried without spending a retry, forever if need be).
        error_handler: ``(ctx, task, error)`` called on every failed attempt
            (sync: runs on the event loop, keep it quick; or ``async def``).
        health_check: ``(error | None)`` called every ``health_check_interval``
            with the outcome of a broker ping.
        shutdown_timeout: how long a graceful shutdown waits for running tasks
            before it requeues them (without spending a retry).
        lease: how long a dequeued task stays leased without a heartbeat; a
            task whose worker died is recovered after about this long.
        heartbeat_interval: how often leases are extended and the server state
            published (default ``lease / 3``).
        recoverer_interval: how often expired leases are recovered (default
            ``lease / 2``, at most 60 s); also done at start-up.
        forwarder_interval: how often due scheduled and retry tasks are moved to
            pending (default 50 ms: a task due at T starts within ~50 ms of T).
        janitor_interval: how often completed tasks past retention are deleted.
        janitor_batch_size: how many the janitor deletes per broker call.
        archive_max_size: the janitor keeps at most this many archived tasks
            per queue, deleting the oldest beyond it (default 10 000; 0 keeps
            none; None: no size bound). Needs a broker that can trim its
            archive (:class:`~taskq.brokers.base.ArchiveTrimmer`: memory,
            SQLite and Redis do); with another broker it is not applied.
        archive_max_age: the janitor deletes archived tasks this long after
            they were archived (default 90 days; None: kept forever, unless
            ``archive_max_size`` removes them).
        cancel_check_interval: how often the broker is asked about cancel
            requests for running tasks (a backstop for missed notifications).
        fetch_wait: how long one fetch waits in the broker for a task to arrive
            (the worker wakes as soon as one does); also the longest a stop
            waits for an idle fetch to return.
        default_timeout: the time limit of a task enqueued with neither timeout
            nor deadline.
        no_retry_errors: exception types that archive the task at once (the
            payload cannot be decoded, so retrying cannot help).
        release_unique_on_archive: release a unique task's lock when a worker
            archives it (so an equal task can be enqueued again at once).
            Archiving by hand or cancelling before start always releases it.
        group_aggregator: ``(group, tasks) -> task`` (plain or ``async def``), or an
            object with such an ``aggregate`` method; None turns aggregation off.
        group_grace_period: aggregate once no task joined the group for this long
            (at least 1 s).
        group_max_delay: aggregate once the oldest member is this old (None: no limit).
        group_max_size: aggregate once the group has this many tasks (0: no limit).
        group_limits: per-queue overrides of the three limits above, e.g.
            ``{"bulk": GroupLimits(max_size=100)}``.
        group_reclaim_after: an aggregation that has not finished after this
            long (its server died, or the aggregator raised) is undone and the
            group aggregated again.
        burst: process every task that is pending or due, then shut down
            gracefully (``Server.run`` returns, ``taskq worker --burst`` exits
            0). The server is done once a fetch finds all its queues empty and
            none of its own tasks is running or waiting for its outcome to be
            stored; tasks scheduled or retried for later, aggregating groups
            and paused queues do not keep it alive (before deciding, it moves
            due scheduled/retry tasks and expired leases back to pending, so
            a retry due now is run, one due in 10 s is not).
        strict_broker_checks: refuse to start (``BrokerConfigError``) when the
            broker's start-up check finds a setting that can lose tasks (Redis
            ``maxmemory-policy`` other than ``noeviction``); by default it is
            logged as a warning. A check that cannot run never stops a start.
        interrupt_sync_handlers: raise :class:`~taskq.errors.Interrupted` inside a
            ``def`` handler whose attempt was cut off (time limit, deadline,
            cancel, lost lease, requeue at shutdown), so that its thread and
            concurrency slot come back (CPython; default True). False: the
            handler only sees ``ctx.cancelled`` and runs on until it returns.
        stuck_handler_timeout: when a handler is still running this long after
            its attempt was cut off (it caught :class:`~taskq.errors.Interrupted`
            or the cancellation, or it is blocked in C where neither arrives),
            the server shuts itself down gracefully and
            :attr:`Server.restart_requested` becomes True, so that a supervisor
            (``taskq worker`` exits with status 75, and ``--processes``
            restarts it) starts a fresh process and the stuck thread's slot
            comes back. None (the default): never.
        blocked_loop_warning: log a warning (with what the loop runs) when the
            server's event loop makes no progress for this long: an ``async
            def`` handler calling blocking code stops every other task and
            the lease heartbeat. None: no watchdog thread. Default 1 s.
        logger: where the server logs (default ``logging.getLogger("taskq.worker")``).

    Raises:
        InvalidArgumentError: a value is out of range or of the wrong type.
    """

    concurrency: int = attrs.field(factory=_cpu_count)
    queues: Mapping[str, int] = attrs.field(factory=lambda: {"default": 1}, converter=_queues)
    strict_priority: bool = False
    retry_delay: RetryDelayFunc = default_retry_delay
    is_failure: Callable[[BaseException], bool] = _always_failure
    error_handler: ErrorHandler | None = None
    health_check: HealthCheck | None = None
    health_check_interval: timedelta = attrs.field(
        default=timedelta(seconds=15), converter=_duration
    )
    shutdown_timeout: timedelta = attrs.field(default=timedelta(seconds=8), converter=_duration)
    lease: timedelta = attrs.field(default=timedelta(seconds=30), converter=_duration)
    heartbeat_interval: timedelta | None = attrs.field(default=None, converter=_opt_duration)
    recoverer_interval: timedelta | None = attrs.field(default=None, converter=_opt_duration)
    forwarder_interval: timedelta = attrs.field(
        default=timedelta(milliseconds=50), converter=_duration
    )
    janitor_interval: timedelta = attrs.field(default=timedelta(seconds=8), converter=_duration)
    janitor_batch_size: int = 100
    archive_max_size: int | None = 10_000
    archive_max_age: timedelta | None = attrs.field(
        default=timedelta(days=90), converter=_archive_max_age
    )
    cancel_check_interval: timedelta = attrs.field(
        default=timedelta(milliseconds=500), converter=_duration
    )
    fetch_wait: timedelta = attrs.field(default=timedelta(milliseconds=500), converter=_duration)
    default_timeout: timedelta = attrs.field(default=timedelta(minutes=30), converter=_duration)
    no_retry_errors: tuple[type[BaseException], ...] = _NO_RETRY_DEFAULT
    release_unique_on_archive: bool = True
    group_aggregator: GroupAggregator | SupportsAggregate | None = None
    group_grace_period: timedelta = attrs.field(default=timedelta(minutes=1), converter=_duration)
    group_max_delay: timedelta | None = attrs.field(default=None, converter=_opt_duration)
    group_max_size: int = 0
    group_limits: Mapping[str, GroupLimits] = attrs.field(factory=dict, converter=_group_limits)
    group_reclaim_after: timedelta = attrs.field(default=DEFAULT_RECLAIM_AFTER, converter=_duration)
    strict_broker_checks: bool = False
    burst: bool = False
    interrupt_sync_handlers: bool = True
    stuck_handler_timeout: timedelta | None = attrs.field(default=None, converter=_opt_duration)
    blocked_loop_warning: timedelta | None = attrs.field(
        default=timedelta(seconds=1), converter=_opt_duration
    )
    logger: logging.Logger | None = None

    def __attrs_post_init__(self) -> None:
        if (
            not isinstance(self.concurrency, int)
            or isinstance(self.concurrency, bool)
            or self.concurrency < 1
        ):
            raise InvalidArgumentError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        for name in ("retry_delay", "is_failure"):
            _check_callable(name, getattr(self, name), optional=False)
        for name in ("error_handler", "health_check"):
            _check_callable(name, getattr(self, name), optional=True)
        _check_callable(
            "group_aggregator",
            getattr(self.group_aggregator, "aggregate", self.group_aggregator),
            optional=True,
        )
        for name in (
            "health_check_interval",
            "lease",
            "forwarder_interval",
            "janitor_interval",
            "cancel_check_interval",
            "fetch_wait",
            "default_timeout",
            "group_reclaim_after",
        ):
            _positive(name, getattr(self, name))
        if self.lease < timedelta(milliseconds=300):
            raise InvalidArgumentError(f"lease must be at least 300 ms, got {self.lease}")
        if self.heartbeat_interval is not None:
            _positive("heartbeat_interval", self.heartbeat_interval)
            if self.heartbeat_interval * 2 > self.lease:
                raise InvalidArgumentError(
                    "heartbeat_interval must be at most half the lease "
                    f"({self.heartbeat_interval} > {self.lease / 2})"
                )
        if self.recoverer_interval is not None:
            _positive("recoverer_interval", self.recoverer_interval)
        if self.stuck_handler_timeout is not None:
            _positive("stuck_handler_timeout", self.stuck_handler_timeout)
        if self.blocked_loop_warning is not None:
            _positive("blocked_loop_warning", self.blocked_loop_warning)
        if not isinstance(self.janitor_batch_size, int) or self.janitor_batch_size < 1:
            raise InvalidArgumentError(
                f"janitor_batch_size must be an int >= 1, got {self.janitor_batch_size!r}"
            )
        if self.archive_max_size is not None and (
            not isinstance(self.archive_max_size, int)
            or isinstance(self.archive_max_size, bool)
            or self.archive_max_size < 0
        ):
            raise InvalidArgumentError(
                "archive_max_size must be an int >= 0, or None for no size bound, "
                f"got {self.archive_max_size!r}"
            )
        for name in (
            "strict_priority",
            "strict_broker_checks",
            "burst",
            "interrupt_sync_handlers",
            "release_unique_on_archive",
        ):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.no_retry_errors, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.no_retry_errors
        ):
            raise InvalidArgumentError("no_retry_errors must be a tuple of exception types")
        if self.group_grace_period < timedelta(seconds=1):
            raise InvalidArgumentError(
                f"group_grace_period must be at least 1 s, got {self.group_grace_period}"
            )
        if self.group_max_delay is not None:
            _positive("group_max_delay", self.group_max_delay)
        if not isinstance(self.group_max_size, int) or self.group_max_size < 0:
            raise InvalidArgumentError(
                f"group_max_size must be an int >= 0, got {self.group_max_size!r}"
            )

    # -- derived values (milliseconds, as the broker wants them) -------------------------

    @property
    def lease_ms(self) -> int:
        """The lease length in ms."""
        return td_to_ms(self.lease)

    @property
    def archive_max_age_ms(self) -> int | None:
        """``archive_max_age`` in ms (None: no age bound)."""
        return None if self.archive_max_age is None else td_to_ms(self.archive_max_age)

    @property
    def effective_heartbeat_interval(self) -> timedelta:
        """``heartbeat_interval``, or ``lease / 3`` when unset."""
        return self.heartbeat_interval if self.heartbeat_interval is not None else self.lease / 3

    @property
    def effective_recoverer_interval(self) -> timedelta:
        """``recoverer_interval``, or ``lease / 2`` capped at 60 s when unset."""
        if self.recoverer_interval is not None:
            return self.recoverer_interval
        return min(self.lease / 2, timedelta(seconds=60))

    @property
    def queue_names(self) -> list[str]:
        """Queue names, heaviest first (ties by name)."""
        return sorted(self.queues, key=lambda q: (-self.queues[q], q))

    def get_logger(self) -> logging.Logger:
        """The configured logger, or ``taskq.worker``."""
        return self.logger if self.logger is not None else logging.getLogger("taskq.worker")

    def with_overrides(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (validated again).

        Raises:
            InvalidArgumentError: an unknown field name or a bad value.
        """
        known = {f.name for f in attrs.fields(Config)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown Config field(s): {', '.join(unknown)}")
        return attrs.evolve(self, **changes)
