"""Testing helpers for taskq users and broker authors.

* :class:`FakeClock`: a clock that moves only when the test moves it.
* :func:`drain` (and :func:`adrain`): run a mux's handlers over a broker's
  tasks until none is pending or due, through real burst servers, and get a
  :class:`DrainReport` of every attempt and of what ended archived.
* :class:`BrokerConformance`: the conformance suite; subclass it in a test
  module and define one ``broker`` fixture (see ``docs/brokers.md``).
* A pytest plug-in (:mod:`taskq.testing.plugin`, registered automatically)
  with the fixtures ``clock``, ``taskq_broker`` (an InMemoryBroker on that
  clock) and ``taskq_drain`` (``drain`` bound to both).

Importing this package is cheap: the suite (and pytest), and the drain
helpers (and the worker runtime), load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskq.testing.clock import FakeClock

__all__ = [
    "Attempt",
    "BrokerConformance",
    "Drain",
    "DrainIncomplete",
    "DrainReport",
    "FakeClock",
    "adrain",
    "drain",
]

_LAZY = {
    "Attempt": "taskq.testing._drain",
    "BrokerConformance": "taskq.testing.conformance",
    "Drain": "taskq.testing._drain",
    "DrainIncomplete": "taskq.testing._drain",
    "DrainReport": "taskq.testing._drain",
    "adrain": "taskq.testing._drain",
    "drain": "taskq.testing._drain",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskq.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from taskq.testing._drain import (
        Attempt,
        Drain,
        DrainIncomplete,
        DrainReport,
        adrain,
        drain,
    )
    from taskq.testing.conformance import BrokerConformance
