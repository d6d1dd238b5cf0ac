"""The taskq pytest plug-in (entry point ``pytest11: taskq``).

Fixtures for testing task handlers:

* ``clock``: a fresh :class:`~taskq.testing.FakeClock` per test.
* ``taskq_broker``: a fresh :class:`~taskq.InMemoryBroker` on that clock.
* ``taskq_client``: a :class:`~taskq.Client` of that broker on that clock
  (so ``process_in`` counts from the fake "now").
* ``taskq_drain``: :func:`~taskq.testing.drain` bound to both:
  ``report = taskq_drain(mux)`` runs every task that is pending or comes due
  (jumping the clock) and reports what ran.

It also registers the ``conformance`` marker. It imports nothing heavy at
load time, so it costs nothing in test runs that do not use it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from taskq.testing.clock import FakeClock

if TYPE_CHECKING:
    from taskq.brokers.memory import InMemoryBroker
    from taskq.client import Client
    from taskq.testing._drain import Drain

__all__ = ["clock", "pytest_configure", "taskq_broker", "taskq_client", "taskq_drain"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``conformance`` marker used by the broker conformance suite."""
    config.addinivalue_line("markers", "conformance: the taskq broker conformance suite")


@pytest.fixture
def clock() -> FakeClock:
    """A :class:`~taskq.testing.FakeClock` at a fixed instant; move it with ``clock.advance``."""
    return FakeClock()


@pytest.fixture
def taskq_broker(clock: FakeClock) -> InMemoryBroker:
    """A fresh :class:`~taskq.InMemoryBroker` whose time is the ``clock`` fixture."""
    from taskq.brokers.memory import InMemoryBroker

    return InMemoryBroker(clock=clock)


@pytest.fixture
def taskq_client(taskq_broker: InMemoryBroker, clock: FakeClock) -> Iterator[Client]:
    """A :class:`~taskq.Client` of ``taskq_broker`` whose "now" is the ``clock`` fixture."""
    from taskq.client import Client

    with Client(taskq_broker, clock=clock) as client:
        yield client


@pytest.fixture
def taskq_drain(taskq_broker: InMemoryBroker, clock: FakeClock) -> Drain:
    """:func:`~taskq.testing.drain` on ``taskq_broker``, jumping ``clock`` to due tasks."""
    from taskq.testing._drain import drain

    bound: Drain = functools.partial(drain, taskq_broker, clock=clock)
    return bound
