"""taskq-prometheus: a Prometheus exporter for taskq, built on taskq's public Inspector.

Register :class:`TaskqCollector` in a ``prometheus_client`` registry (see
:func:`register`), or run ``python -m taskq_prometheus --broker URL`` to serve
``/metrics`` on its own. See README.md for the metrics and example alerts.
"""

from __future__ import annotations

from taskq_prometheus._cli import DEFAULT_PORT, main
from taskq_prometheus._collector import STATES, TaskqCollector, register

__version__ = "0.1.0"

__all__ = ["DEFAULT_PORT", "STATES", "TaskqCollector", "main", "register"]
