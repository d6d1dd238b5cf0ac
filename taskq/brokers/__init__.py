"""Brokers: the storage side of taskq. See :mod:`taskq.brokers.base` for the protocol."""

from taskq.brokers.base import Broker
from taskq.brokers.registry import connect

__all__ = ["Broker", "connect"]
