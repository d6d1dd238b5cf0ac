"""taskq: a distributed task queue for Python.

Everything public is re-exported here; every other module is private. Names
are loaded lazily so that ``import taskq`` stays cheap (the CLI starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # task model
    "Task": "taskq.task",
    "TaskInfo": "taskq.task",
    "TaskState": "taskq.task",
    # time
    "Clock": "taskq._time",
    "SystemClock": "taskq._time",
    # brokers
    "Broker": "taskq.brokers.base",
    "connect": "taskq.brokers.registry",
    "InMemoryBroker": "taskq.brokers.memory",
    "SQLiteBroker": "taskq.brokers.sqlite",
    # client
    "AsyncClient": "taskq.client",
    "Client": "taskq.client",
    # worker
    "Context": "taskq.mux",
    "Handler": "taskq.mux",
    "ServeMux": "taskq.mux",
    "Config": "taskq.runtime.server",
    "GroupLimits": "taskq.runtime.aggregator",
    "Server": "taskq.runtime.server",
    "run": "taskq.runtime.server",
    # inspection and scheduling
    "AsyncInspector": "taskq.inspector",
    "Inspector": "taskq.inspector",
    "QueueInfo": "taskq.inspector",
    "PeriodicTaskConfig": "taskq.scheduler",
    "PeriodicTaskManager": "taskq.scheduler",
    "Scheduler": "taskq.scheduler",
    "SchedulerEntry": "taskq.scheduler",
    # errors
    "BrokerConnectionError": "taskq.errors",
    "BrokerError": "taskq.errors",
    "BrokerTimeoutError": "taskq.errors",
    "DuplicateTaskError": "taskq.errors",
    "InvalidArgumentError": "taskq.errors",
    "Interrupted": "taskq.errors",
    "LeaseLostError": "taskq.errors",
    "QueueNotEmptyError": "taskq.errors",
    "QueueNotFoundError": "taskq.errors",
    "RevokeTask": "taskq.errors",
    "SkipRetry": "taskq.errors",
    "TaskFailedError": "taskq.errors",
    "TaskIDConflictError": "taskq.errors",
    "TaskNotFoundError": "taskq.errors",
    "TaskStateError": "taskq.errors",
    "TaskqError": "taskq.errors",
    "UnknownBrokerError": "taskq.errors",
    "WaitTimeoutError": "taskq.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from taskq._time import Clock as Clock, SystemClock as SystemClock
    from taskq.brokers.base import Broker as Broker
    from taskq.brokers.memory import InMemoryBroker as InMemoryBroker
    from taskq.brokers.registry import connect as connect
    from taskq.brokers.sqlite import SQLiteBroker as SQLiteBroker
    from taskq.client import AsyncClient as AsyncClient, Client as Client
    from taskq.errors import (
        BrokerConnectionError as BrokerConnectionError,
        BrokerError as BrokerError,
        BrokerTimeoutError as BrokerTimeoutError,
        DuplicateTaskError as DuplicateTaskError,
        Interrupted as Interrupted,
        InvalidArgumentError as InvalidArgumentError,
        LeaseLostError as LeaseLostError,
        QueueNotEmptyError as QueueNotEmptyError,
        QueueNotFoundError as QueueNotFoundError,
        RevokeTask as RevokeTask,
        SkipRetry as SkipRetry,
        TaskFailedError as TaskFailedError,
        TaskIDConflictError as TaskIDConflictError,
        TaskNotFoundError as TaskNotFoundError,
        TaskqError as TaskqError,
        TaskStateError as TaskStateError,
        UnknownBrokerError as UnknownBrokerError,
        WaitTimeoutError as WaitTimeoutError,
    )
    from taskq.inspector import (
        AsyncInspector as AsyncInspector,
        Inspector as Inspector,
        QueueInfo as QueueInfo,
    )
    from taskq.mux import Context as Context, Handler as Handler, ServeMux as ServeMux
    from taskq.runtime.aggregator import GroupLimits as GroupLimits
    from taskq.runtime.server import Config as Config, Server as Server, run as run
    from taskq.scheduler import (
        PeriodicTaskConfig as PeriodicTaskConfig,
        PeriodicTaskManager as PeriodicTaskManager,
        Scheduler as Scheduler,
        SchedulerEntry as SchedulerEntry,
    )
    from taskq.task import Task as Task, TaskInfo as TaskInfo, TaskState as TaskState
