"""taskq-prometheus: a Prometheus exporter for taskq, built on taskq's public Inspector.

Register :class:`TaskqCollector` in a ``prometheus_client`` registry (see
:func:`register`).
"""

from __future__ import annotations

from taskq_prometheus._collector import STATES, TaskqCollector, register

__version__ = "0.1.0"

__all__ = ["STATES", "TaskqCollector", "register"]
