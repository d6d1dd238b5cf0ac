"""Testing helpers for taskq users and broker authors.

* :class:`FakeClock`: a clock that moves only when the test moves it.
* :class:`BrokerConformance`: the conformance suite; subclass it in a test
  module and define one ``broker`` fixture (see ``docs/brokers.md``).
* A pytest plug-in (:mod:`taskq.testing.plugin`, registered automatically)
  with a ``clock`` fixture.

Importing this package is cheap: the suite (and pytest) load only when
:class:`BrokerConformance` is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskq.testing.clock import FakeClock

__all__ = ["BrokerConformance", "FakeClock"]

_LAZY = {"BrokerConformance": "taskq.testing.conformance"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskq.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from taskq.testing.conformance import BrokerConformance
