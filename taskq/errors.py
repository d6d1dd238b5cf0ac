"""The taskq error tree.

Every error taskq raises derives from :class:`TaskqError`. Driver errors (redis,
sqlite3) are translated into this tree at the broker boundary, so application
code never needs to import a driver to handle a failure::

    TaskqError
    ├── InvalidArgumentError (also a ValueError)
    │   ├── InvalidQueueNameError
    │   ├── InvalidDurationError
    │   └── PayloadTooLargeError
    ├── BrokerError
    │   ├── BrokerConnectionError
    │   │   └── BrokerAuthError
    │   ├── BrokerTimeoutError
    │   ├── BrokerOutOfMemoryError
    │   ├── BrokerConfigError          (a broker setting can lose tasks; strict start-up)
    │   ├── UnknownBrokerError         (no broker for a URL scheme)
    │   ├── SchemaVersionError         (stored data newer than this taskq)
    │   └── MessageDecodeError         (a stored message cannot be decoded)
    ├── TaskIDConflictError            (task_id already used in the queue)
    ├── DuplicateTaskError             (a unique lock is held)
    ├── QueueNotFoundError
    ├── QueueNotEmptyError
    ├── TaskNotFoundError
    ├── TaskStateError                 (operation not allowed in the task's state)
    ├── TaskFailedError                (a waited-for task ended archived)
    ├── WaitTimeoutError               (a wait ran out of time; also a TimeoutError)
    ├── LeaseLostError                 (fencing: stale or expired lease token)
    ├── HandlerError
    │   └── HandlerNotFoundError
    └── ServerClosedError

    TaskqSignal (BaseException-free control flow raised by handlers)
    ├── SkipRetry                      (archive at once, no retry)
    └── RevokeTask                     (drop the task: no retry, no archive)

    Interrupted (a BaseException)      (raised inside a ``def`` handler that was cut off)

Control-flow signals are deliberately *not* ``TaskqError``: a handler that
catches ``TaskqError`` around its own broker calls must not swallow them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskq.task import TaskInfo

__all__ = [
    "BrokerAuthError",
    "BrokerConfigError",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerOutOfMemoryError",
    "BrokerTimeoutError",
    "DuplicateTaskError",
    "HandlerError",
    "HandlerNotFoundError",
    "Interrupted",
    "InvalidArgumentError",
    "InvalidDurationError",
    "InvalidQueueNameError",
    "LeaseLostError",
    "MessageDecodeError",
    "PayloadTooLargeError",
    "QueueNotEmptyError",
    "QueueNotFoundError",
    "RevokeTask",
    "SchemaVersionError",
    "ServerClosedError",
    "SkipRetry",
    "TaskFailedError",
    "TaskIDConflictError",
    "TaskNotFoundError",
    "TaskStateError",
    "TaskqError",
    "TaskqSignal",
    "UnknownBrokerError",
    "WaitTimeoutError",
]


class TaskqError(Exception):
    """Root of every error raised by taskq."""


class InvalidArgumentError(TaskqError, ValueError):
    """An argument is invalid; raised before any broker I/O.

    The one exception: ``wait`` given a task id reads the task first, and
    refuses it then if its outcome would not be kept.
    """


class InvalidQueueNameError(InvalidArgumentError):
    """A queue name is empty, too long, or contains a forbidden character."""


class InvalidDurationError(InvalidArgumentError):
    """A duration or time is negative, naive, or cannot be parsed."""


class PayloadTooLargeError(InvalidArgumentError):
    """A payload, result or header set exceeds the configured size limit."""


class BrokerError(TaskqError):
    """The broker failed to carry out an operation."""


class BrokerConnectionError(BrokerError):
    """The broker cannot be reached, the connection dropped, or it refuses writes for now.

    The last case is Redis replying NOREPLICAS (``min-replicas-to-write`` not
    met, as while a failover fences the old master) or MASTERDOWN: like a
    dropped connection, it passes, and a retry is the caller's move.
    """


class BrokerAuthError(BrokerConnectionError):
    """The broker refused the credentials. The message never contains them."""


class BrokerTimeoutError(BrokerError):
    """A broker operation did not finish in time; its outcome is unknown."""


class BrokerOutOfMemoryError(BrokerError):
    """The broker refused a write because it is out of memory."""


class BrokerConfigError(BrokerError):
    """The broker's server runs with a setting that can lose tasks.

    Raised by a worker started with ``Config(strict_broker_checks=True)``
    instead of only logging the warning (e.g. Redis ``maxmemory-policy`` other
    than ``noeviction``).
    """


class UnknownBrokerError(BrokerError):
    """No broker is registered for a URL scheme."""


class SchemaVersionError(BrokerError):
    """Stored data was written by a newer, incompatible version of taskq."""


class MessageDecodeError(BrokerError):
    """A stored task message cannot be decoded."""


class TaskIDConflictError(TaskqError):
    """A task with the same id already exists in the queue."""


class DuplicateTaskError(TaskqError):
    """A unique task with the same queue, type and payload already holds the lock."""


class QueueNotFoundError(TaskqError):
    """The queue does not exist."""


class QueueNotEmptyError(TaskqError):
    """The queue still holds tasks (use ``force=True`` to remove it anyway)."""


class TaskNotFoundError(TaskqError):
    """No task with this id exists in the queue."""


class TaskStateError(TaskqError):
    """The operation is not allowed in the task's current state."""


class TaskFailedError(TaskqError):
    """A task that was waited for ended ``archived``: it failed for good.

    Attributes:
        info: the archived task's :class:`~taskq.TaskInfo`; ``info.last_error``
            holds the stored error (``Type: message`` and the traceback's last
            frames), ``info.retried`` how many retries it spent.
    """

    def __init__(self, info: TaskInfo) -> None:
        super().__init__(info)
        self.info = info

    def __str__(self) -> str:
        info = self.info
        reason = info.last_error.partition("\n")[0] or "no error recorded"
        return f"task {info.id!r} ({info.type}) in queue {info.queue!r} was archived: {reason}"


class WaitTimeoutError(TaskqError, TimeoutError):
    """A wait for a task's outcome ran out of time; the task itself is left as it is.

    Attributes:
        info: the task's :class:`~taskq.TaskInfo` as last read (its state then).
        timeout: the timeout that passed, in seconds.
    """

    def __init__(self, info: TaskInfo, timeout: float) -> None:
        super().__init__(info, timeout)
        self.info = info
        self.timeout = timeout

    def __str__(self) -> str:
        info = self.info
        return (
            f"task {info.id!r} in queue {info.queue!r} is still {info.state.value} "
            f"after waiting {self.timeout:g}s"
        )


class LeaseLostError(TaskqError):
    """The lease token is stale or expired: another attempt owns the task now.

    Raised by every fenced transition (done, complete, retry, archive, requeue,
    write_result, extend). Nothing was changed.
    """


class HandlerError(TaskqError):
    """A problem with handler registration or dispatch."""


class HandlerNotFoundError(HandlerError):
    """No handler is registered for a task type."""


class ServerClosedError(TaskqError):
    """The server, client or broker has been shut down."""


class TaskqSignal(Exception):
    """Base of the control-flow signals a handler raises."""


class SkipRetry(TaskqSignal):
    """Raise from a handler to archive the task at once, without retrying."""


class RevokeTask(TaskqSignal):
    """Raise from a handler to drop the task: no retry, no archive."""


class Interrupted(BaseException):
    """Raised inside a running ``def`` handler whose attempt was cut off.

    The worker raises it in the handler's thread when the attempt passes its
    time limit or deadline, is cancelled, loses its lease or is requeued at
    shutdown (``ctx.cancel_reason`` says which); the attempt itself was
    settled already. It arrives when the thread next runs Python code: a call
    blocked in C (a socket read, ``time.sleep``) finishes first.

    It derives from ``BaseException``, as ``KeyboardInterrupt`` and
    ``asyncio.CancelledError`` do, so that ``except Exception`` in a handler
    does not swallow it; catch it only to clean up, and let it propagate.
    ``Config(interrupt_sync_handlers=False)`` turns it off. CPython only;
    elsewhere a cut-off handler runs on until it returns.
    """
