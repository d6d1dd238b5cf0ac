"""The broker conformance suite: the Broker protocol's executable definition.

Subclass :class:`BrokerConformance` in a test module and define one fixture,
an empty broker built on the suite's clock::

    import pytest
    from taskq.testing import BrokerConformance

    class TestMyBroker(BrokerConformance):
        @pytest.fixture
        async def broker(self, clock):
            b = MyBroker(clock=clock)
            yield b
            await b.close()

Each area is also a mixin of its own (``ProduceConformance``, ...), so a
broker still under construction can run one part at a time. Optional hooks a
subclass may override: ``corrupt_drop_lease`` (see :class:`ConformanceBase`).
Tests of an optional capability (``ArchiveConformance`` for
:class:`~taskq.brokers.base.ArchiveTrimmer`) skip brokers without it.
The suite needs pytest-asyncio with ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

from taskq.testing.conformance._support import ConformanceBase, CorruptDropLease
from taskq.testing.conformance.archive import ArchiveConformance
from taskq.testing.conformance.cancellation import CancellationConformance
from taskq.testing.conformance.concurrency import ConcurrencyConformance
from taskq.testing.conformance.consume import ConsumeConformance
from taskq.testing.conformance.fencing import FencingConformance
from taskq.testing.conformance.fleet import FleetConformance
from taskq.testing.conformance.groups import GroupConformance
from taskq.testing.conformance.inspection import InspectionConformance
from taskq.testing.conformance.invariants import InvariantConformance
from taskq.testing.conformance.produce import ProduceConformance
from taskq.testing.conformance.timekeeping import TimeConformance

__all__ = [
    "ArchiveConformance",
    "BrokerConformance",
    "CancellationConformance",
    "ConcurrencyConformance",
    "ConformanceBase",
    "ConsumeConformance",
    "CorruptDropLease",
    "FencingConformance",
    "FleetConformance",
    "GroupConformance",
    "InspectionConformance",
    "InvariantConformance",
    "ProduceConformance",
    "TimeConformance",
]


class BrokerConformance(
    ProduceConformance,
    ConsumeConformance,
    FencingConformance,
    TimeConformance,
    GroupConformance,
    CancellationConformance,
    FleetConformance,
    InspectionConformance,
    ConcurrencyConformance,
    InvariantConformance,
    ArchiveConformance,
):
    """Every conformance test. Subclass it and define the ``broker`` fixture."""
