"""FakeClock and the pytest plug-in's ``clock`` fixture."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from importlib.metadata import entry_points

import pytest

from taskq._time import Clock
from taskq.errors import InvalidDurationError
from taskq.testing import FakeClock
from taskq.testing.clock import DEFAULT_START

pytest_plugins = ["pytester"]


def test_a_fake_clock_stands_still_until_advanced() -> None:
    clock = FakeClock(1_000)
    assert clock.now_ms() == clock.now_ms() == 1_000
    assert clock.advance(250) == 1_250
    assert clock.advance(timedelta(seconds=2)) == 3_250
    assert clock.now_ms() == 3_250


def test_a_fake_clock_starts_at_a_fixed_aware_instant() -> None:
    assert FakeClock().now() == DEFAULT_START
    start = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    assert FakeClock(start).now() == start
    assert isinstance(FakeClock(), Clock)


def test_set_jumps_anywhere_even_backwards() -> None:
    clock = FakeClock(10_000)
    clock.set(5)
    assert clock.now_ms() == 5
    clock.set(datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
    assert clock.now_ms() == 1_000


@pytest.mark.parametrize(
    "bad",
    [-1, timedelta(seconds=-1), 1.5, "10"],
    ids=["negative-ms", "negative-td", "float", "str"],
)
def test_advance_refuses_a_negative_or_non_duration(bad: object) -> None:
    clock = FakeClock(0)
    with pytest.raises(InvalidDurationError):
        clock.advance(bad)  # type: ignore[arg-type]
    assert clock.now_ms() == 0


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(InvalidDurationError):
        FakeClock(datetime(2030, 1, 1))
    with pytest.raises(InvalidDurationError):
        FakeClock(0).set(datetime(2030, 1, 1))


def test_advances_from_many_threads_all_count() -> None:
    clock = FakeClock(0)

    def tick() -> None:
        for _ in range(1_000):
            clock.advance(1)

    threads = [threading.Thread(target=tick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert clock.now_ms() == 4_000


def test_the_plugin_provides_a_clock_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        from taskq.testing import FakeClock

        def test_uses_clock(clock):
            assert isinstance(clock, FakeClock)
            before = clock.now_ms()
            clock.advance(5)
            assert clock.now_ms() == before + 5
        """
    )
    # Installed taskq registers the plug-in through its pytest11 entry point;
    # only an uninstalled checkout needs it named with -p.
    autoloaded = any(ep.value == "taskq.testing.plugin" for ep in entry_points(group="pytest11"))
    plugin_args = () if autoloaded else ("-p", "taskq.testing.plugin")
    result = pytester.runpytest_inprocess(*plugin_args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
