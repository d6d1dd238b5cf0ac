"""The taskq pytest plug-in (entry point ``pytest11: taskq``).

Provides the ``clock`` fixture (a fresh :class:`~taskq.testing.FakeClock`
per test) and registers the ``conformance`` marker. It imports nothing heavy,
so it costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import pytest

from taskq.testing.clock import FakeClock

__all__ = ["clock", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``conformance`` marker used by the broker conformance suite."""
    config.addinivalue_line("markers", "conformance: the taskq broker conformance suite")


@pytest.fixture
def clock() -> FakeClock:
    """A :class:`~taskq.testing.FakeClock` at a fixed instant; move it with ``clock.advance``."""
    return FakeClock()
