"""Routing tasks to handlers: :class:`ServeMux`, :class:`Context`, middleware.

A handler is a plain function or coroutine function taking ``(ctx, task)``::

    mux = taskq.ServeMux()

    @mux.handle("email:welcome")
    def send_welcome(ctx: taskq.Context, task: taskq.Task) -> None:
        ...                         # runs on the server's thread pool

    @mux.handle("email:")           # any type starting with "email:" not matched exactly
    async def send_other(ctx: taskq.Context, task: taskq.Task) -> None:
        ...                         # runs on the server's event loop

Returning normally is success; raising fails the attempt (it is retried until
``max_retry`` is spent, then archived); :class:`taskq.SkipRetry` archives at
once and :class:`taskq.RevokeTask` drops the task.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar, overload

from taskq._time import ms_to_dt
from taskq.errors import (
    HandlerError,
    HandlerNotFoundError,
    InvalidArgumentError,
    ServerClosedError,
)
from taskq.task import Task

__all__ = ["Context", "Handler", "Middleware", "ServeMux", "is_async_handler"]

_RESULT_WRITE_TIMEOUT = 30.0


class Handler(Protocol):
    """Anything callable as ``handler(ctx, task)``: a ``def`` or an ``async def``."""

    def __call__(self, ctx: Context, task: Task, /) -> Awaitable[None] | None:
        """Process one task; return to succeed, raise to fail."""
        ...


_H = TypeVar("_H", bound=Callable[..., Any])

Middleware = Callable[[Handler], Handler]
"""A function wrapping a handler in another (logging, tracing, metrics).

The handler a middleware receives is always an ``async def`` (a sync handler is
adapted to run on the thread pool), so a middleware is written as::

    def timing(next_handler: taskq.Handler) -> taskq.Handler:
        async def wrapped(ctx: taskq.Context, task: taskq.Task) -> None:
            started = time.perf_counter()
            try:
                await next_handler(ctx, task)
            finally:
                log.info("%s took %.3fs", task.type, time.perf_counter() - started)
        return wrapped
"""


def is_async_handler(handler: object) -> bool:
    """Return whether ``handler`` is an ``async def`` (or an object with an async ``__call__``)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class _Written:
    """An awaitable that is already done: a result write that completed in a thread."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_WRITTEN = _Written()


class Context:
    """What a handler knows about the attempt it runs, and how it talks back.

    The runtime builds one per attempt. You may build one yourself to call a
    handler in a unit test (``write_result`` then only records the bytes in
    :attr:`result`).

    Attributes:
        task_id: the task's id.
        queue: the queue it was taken from.
        retry_count: failed attempts before this one.
        max_retry: how many retries the task may spend.
        headers: the task's str -> str headers.
    """

    __slots__ = (
        "_cancel_reason",
        "_deadline",
        "_enqueued_at",
        "_loop",
        "_ms",
        "_on_cancel",
        "_pending_writes",
        "_result",
        "_started_at",
        "_task_handle",
        "_writer",
        "headers",
        "max_retry",
        "queue",
        "retry_count",
        "task_id",
    )

    def __init__(
        self,
        *,
        task_id: str,
        queue: str,
        retry_count: int = 0,
        max_retry: int = 0,
        deadline: datetime | None = None,
        headers: Mapping[str, str] | None = None,
        enqueued_at: datetime | None = None,
        started_at: datetime | None = None,
        result_writer: Callable[[bytes], Coroutine[Any, Any, None]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Build a context.

        Args:
            result_writer: a coroutine function storing a result (the runtime
                passes the broker's fenced ``write_result``).
            loop: the event loop ``result_writer`` must run on.
        """
        self.task_id = task_id
        self.queue = queue
        self.retry_count = retry_count
        self.max_retry = max_retry
        self._deadline = deadline
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        self._enqueued_at = enqueued_at
        self._started_at = started_at
        # The runtime hands over epoch ms (deadline, enqueued, started) and the
        # datetimes are built only if a handler asks: most never do.
        self._ms: tuple[int, int, int] | None = None
        self._writer = result_writer
        self._loop = loop
        self._cancel_reason: str | None = None
        self._task_handle: asyncio.Task[Any] | None = None
        self._on_cancel: Callable[[], object] | None = None  # stops a def handler's thread
        self._pending_writes: list[asyncio.Task[None]] | None = None
        self._result: bytes | None = None

    def __repr__(self) -> str:
        return f"Context(task_id={self.task_id!r}, queue={self.queue!r}, retry={self.retry_count})"

    def _times(self) -> None:
        ms = self._ms
        if ms is not None:
            self._ms = None
            deadline, enqueued, started = ms
            self._deadline = ms_to_dt(deadline) if deadline else None
            self._enqueued_at = ms_to_dt(enqueued) if enqueued else None
            self._started_at = ms_to_dt(started) if started else None

    @property
    def deadline(self) -> datetime | None:
        """When this attempt is cut off (the earlier of its timeout and deadline), or None."""
        if self._ms is not None:
            self._times()
        return self._deadline

    @property
    def enqueued_at(self) -> datetime | None:
        """When the task was enqueued, or None if unknown."""
        if self._ms is not None:
            self._times()
        return self._enqueued_at

    @property
    def started_at(self) -> datetime | None:
        """Broker time of the dequeue (so wait time needs no clock sync), or None."""
        if self._ms is not None:
            self._times()
        return self._started_at

    @property
    def cancelled(self) -> bool:
        """True once this attempt should stop: timeout, deadline, cancel request,
        lost lease or forced shutdown. Sync handlers should poll it in long loops;
        async handlers are also cancelled (``asyncio.CancelledError``)."""
        return self._cancel_reason is not None

    @property
    def cancel_reason(self) -> str | None:
        """Why the attempt was cancelled ("timeout", "deadline", "canceled",
        "lease lost", "shutdown"), or None."""
        return self._cancel_reason

    @property
    def result(self) -> bytes | None:
        """The last bytes passed to :meth:`write_result`, or None."""
        return self._result

    def write_result(self, data: bytes) -> Awaitable[None]:
        """Store ``data`` as the task's result (kept with the task while it is retained).

        From a sync handler (a pool thread) the call blocks until the broker
        stored the data. From an async handler the write is started at once and
        the returned awaitable may be awaited to wait for it; the runtime waits
        for unfinished writes before it acknowledges the task either way.

        Raises:
            InvalidArgumentError: ``data`` is not bytes.
            LeaseLostError: (sync callers) the attempt no longer owns the task.
            ServerClosedError: (sync callers) the server stopped before the write.
        """
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise InvalidArgumentError(f"result must be bytes, got {type(data).__name__}")
        self._result = data
        writer, loop = self._writer, self._loop
        if writer is None or loop is None:
            return _WRITTEN
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(writer(data))
            if self._pending_writes is None:
                self._pending_writes = []
            self._pending_writes.append(task)
            return task
        if loop.is_closed():
            raise ServerClosedError("the server stopped; the result was not stored")
        future = asyncio.run_coroutine_threadsafe(writer(data), loop)
        future.result(_RESULT_WRITE_TIMEOUT)
        return _WRITTEN

    # -- runtime side -----------------------------------------------------------------

    def _cancel(self, reason: str) -> bool:
        """Mark the attempt cancelled (first reason wins), cancel its coroutine or thread."""
        if self._cancel_reason is not None:
            return False
        self._cancel_reason = reason
        handle = self._task_handle
        if handle is not None and not handle.done():
            handle.cancel()
        if self._on_cancel is not None:
            self._on_cancel()
        return True


class _NotFound:
    """The handler used when nothing matches: it fails with HandlerNotFoundError."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    async def __call__(self, ctx: Context, task: Task) -> None:
        raise HandlerNotFoundError(f"no handler for task type {self.type_name!r}")


class ServeMux:
    """Routes a task to the handler registered for its type.

    An exact match wins; otherwise the longest registered pattern that is a
    prefix of the type (a plain string prefix, as in asynq: ``"email"`` also
    matches ``"emails"``; end patterns with ``":"`` to match by segment). A type
    nothing matches is archived at once with the reason "no handler for task
    type ...".

    Middleware added with :meth:`use` wraps every handler, the first one added
    outermost (it also wraps the "no handler" case).
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._middleware: list[Middleware] = []
        self._lock = threading.Lock()
        self._version = 0

    def __repr__(self) -> str:
        return f"ServeMux(patterns={sorted(self._handlers)!r}, middleware={len(self._middleware)})"

    @overload
    def handle(self, pattern: str) -> Callable[[_H], _H]: ...

    @overload
    def handle(self, pattern: str, handler: _H) -> _H: ...

    def handle(self, pattern: str, handler: _H | None = None) -> _H | Callable[[_H], _H]:
        """Register ``handler`` for ``pattern``; without a handler, return a decorator.

        Raises:
            InvalidArgumentError: the pattern is empty or not a str, or the
                handler is not callable.
            HandlerError: a handler is already registered for the pattern.
        """
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidArgumentError(f"handler pattern must be a non-empty str, got {pattern!r}")
        if handler is None:
            return functools.partial(self.handle, pattern)  # type: ignore[return-value]
        if not callable(handler):
            raise InvalidArgumentError(f"handler for {pattern!r} must be callable")
        with self._lock:
            if pattern in self._handlers:
                raise HandlerError(f"a handler for {pattern!r} is already registered")
            self._handlers[pattern] = handler
            self._version += 1
        return handler

    def use(self, *middleware: Middleware) -> None:
        """Add middleware; the first one added is the outermost.

        Raises:
            InvalidArgumentError: a middleware is not callable.
        """
        for mw in middleware:
            if not callable(mw):
                raise InvalidArgumentError(f"middleware must be callable, got {mw!r}")
        with self._lock:
            self._middleware.extend(middleware)
            self._version += 1

    @property
    def patterns(self) -> list[str]:
        """The registered patterns, sorted."""
        return sorted(self._handlers)

    @property
    def version(self) -> int:
        """A counter bumped by every registration (lets the runtime cache lookups)."""
        return self._version

    def match(self, type_name: str) -> Handler | None:
        """Return the handler registered for ``type_name`` (exact, else longest prefix), or None."""
        handler = self._handlers.get(type_name)
        if handler is not None:
            return handler
        best = ""
        for pattern in self._handlers:
            if len(pattern) > len(best) and type_name.startswith(pattern):
                best = pattern
        return self._handlers[best] if best else None

    def resolve(self, type_name: str, adapt_sync: Callable[[Handler], Handler]) -> Handler:
        """Return the handler chain for ``type_name``, middleware applied.

        With no middleware the matched handler is returned as is (sync or
        async). With middleware, a sync handler is first made async with
        ``adapt_sync`` (the runtime passes one running it on its thread pool),
        because middleware awaits the handler it wraps. A type nothing matches
        gets a handler raising :class:`~taskq.errors.HandlerNotFoundError`.
        """
        handler = self.match(type_name)
        if handler is None:
            handler = _NotFound(type_name)
        if not self._middleware:
            return handler
        if not is_async_handler(handler):
            handler = adapt_sync(handler)
        for mw in reversed(self._middleware):
            handler = mw(handler)
        return handler
