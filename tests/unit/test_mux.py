"""ServeMux routing, registration rules, middleware order and the Context."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

import taskq
from taskq.errors import HandlerError, HandlerNotFoundError, InvalidArgumentError
from taskq.mux import Context, Handler, ServeMux, is_async_handler


def _noop(ctx: Context, task: taskq.Task) -> None:
    return None


def _other(ctx: Context, task: taskq.Task) -> None:
    return None


def _ctx() -> Context:
    return Context(task_id="t1", queue="default")


def test_exact_match_wins_over_a_longer_prefix_pattern() -> None:
    mux = ServeMux()
    mux.handle("email:welcome", _noop)
    mux.handle("email:", _other)
    assert mux.match("email:welcome") is _noop


def test_longest_registered_prefix_wins() -> None:
    mux = ServeMux()
    mux.handle("email", _noop)
    mux.handle("email:welcome:", _other)
    assert mux.match("email:welcome:vip") is _other
    assert mux.match("email:reminder") is _noop


def test_prefix_is_a_plain_string_prefix_as_in_asynq() -> None:
    mux = ServeMux()
    mux.handle("email", _noop)
    assert mux.match("emails") is _noop


def test_type_matching_nothing_has_no_handler() -> None:
    mux = ServeMux()
    mux.handle("email:", _noop)
    assert mux.match("sms:send") is None


def test_resolving_an_unknown_type_gives_a_handler_raising_not_found() -> None:
    mux = ServeMux()
    handler = mux.resolve("sms:send", lambda h: h)
    with pytest.raises(HandlerNotFoundError, match="no handler for task type 'sms:send'"):
        asyncio.run(handler(_ctx(), taskq.Task("sms:send")))  # type: ignore[arg-type]


def test_duplicate_pattern_is_refused() -> None:
    mux = ServeMux()
    mux.handle("a", _noop)
    with pytest.raises(HandlerError, match="already registered"):
        mux.handle("a", _other)


@pytest.mark.parametrize("pattern", ["", "   ", None, 3])
def test_empty_or_non_string_pattern_is_refused(pattern: object) -> None:
    with pytest.raises(InvalidArgumentError):
        ServeMux().handle(pattern, _noop)  # type: ignore[arg-type]


def test_non_callable_handler_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="callable"):
        ServeMux().handle("a", "not a function")  # type: ignore[type-var]


def test_non_callable_middleware_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="callable"):
        ServeMux().use(42)  # type: ignore[arg-type]


def test_decorator_registers_and_returns_the_function_unchanged() -> None:
    mux = ServeMux()

    @mux.handle("a")
    async def handler(ctx: Context, task: taskq.Task) -> None:
        return None

    assert mux.match("a") is handler
    assert mux.patterns == ["a"]


def test_registration_bumps_the_version() -> None:
    mux = ServeMux()
    before = mux.version
    mux.handle("a", _noop)
    mux.use(lambda h: h)
    assert mux.version == before + 2


def test_without_middleware_the_handler_is_returned_as_registered() -> None:
    mux = ServeMux()
    mux.handle("a", _noop)
    assert mux.resolve("a", lambda h: pytest.fail("must not adapt")) is _noop


def test_first_registered_middleware_is_outermost() -> None:
    calls: list[str] = []

    def tag(name: str) -> taskq.mux.Middleware:
        def middleware(inner: Handler) -> Handler:
            async def wrapped(ctx: Context, task: taskq.Task) -> None:
                calls.append(f"{name}>")
                await inner(ctx, task)  # type: ignore[misc]
                calls.append(f"<{name}")

            return wrapped

        return middleware

    mux = ServeMux()

    @mux.handle("a")
    async def handler(ctx: Context, task: taskq.Task) -> None:
        calls.append("handler")

    mux.use(tag("outer"))
    mux.use(tag("inner"))
    chain = mux.resolve("a", lambda h: h)
    asyncio.run(chain(_ctx(), taskq.Task("a")))  # type: ignore[arg-type]
    assert calls == ["outer>", "inner>", "handler", "<inner", "<outer"]


def test_middleware_receives_sync_handlers_adapted_to_async() -> None:
    adapted: list[Handler] = []

    def adapt(handler: Handler) -> Handler:
        adapted.append(handler)

        async def run(ctx: Context, task: taskq.Task) -> None:
            handler(ctx, task)

        return run

    mux = ServeMux()
    mux.handle("a", _noop)
    mux.use(lambda inner: inner)
    chain = mux.resolve("a", adapt)
    assert adapted == [_noop]
    assert is_async_handler(chain)


def test_middleware_also_wraps_the_not_found_handler() -> None:
    seen: list[str] = []

    def spy(inner: Handler) -> Handler:
        async def wrapped(ctx: Context, task: taskq.Task) -> None:
            seen.append(task.type)
            await inner(ctx, task)  # type: ignore[misc]

        return wrapped

    mux = ServeMux()
    mux.use(spy)
    with pytest.raises(HandlerNotFoundError):
        asyncio.run(mux.resolve("x", lambda h: h)(_ctx(), taskq.Task("x")))  # type: ignore[arg-type]
    assert seen == ["x"]


def test_async_handlers_are_recognised_also_as_objects() -> None:
    class Async:
        async def __call__(self, ctx: Context, task: taskq.Task) -> None:
            return None

    assert is_async_handler(Async())
    assert not is_async_handler(_noop)


def test_a_bare_context_records_written_results() -> None:
    ctx = _ctx()
    ctx.write_result(bytearray(b"abc"))
    assert ctx.result == b"abc"


def test_write_result_refuses_non_bytes() -> None:
    with pytest.raises(InvalidArgumentError, match="bytes"):
        _ctx().write_result("text")  # type: ignore[arg-type]


def test_context_reports_the_first_cancel_reason() -> None:
    ctx = Context(
        task_id="t",
        queue="q",
        retry_count=2,
        max_retry=5,
        deadline=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    assert not ctx.cancelled and ctx.cancel_reason is None
    assert ctx._cancel("timeout")
    assert not ctx._cancel("canceled")
    assert ctx.cancelled and ctx.cancel_reason == "timeout"
    assert (ctx.retry_count, ctx.max_retry) == (2, 5)
