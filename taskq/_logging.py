"""Logging shared by taskq's background loops (the scheduler and the worker's aggregator)."""

from __future__ import annotations

import logging
import sys

from taskq.errors import BrokerError

__all__ = ["log_failure"]


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """Log the exception being handled: one line for a broker failure, else a traceback.

    A broker failure (the server is down, a timeout) is expected and retried,
    so its traceback would only be noise; anything else is a bug worth one.

    Args:
        logger: where to log (at ERROR).
        message: a %-format string; ``args`` fill it.
    """
    error = sys.exc_info()[1]
    if isinstance(error, BrokerError):
        logger.error(message + ": %s", *args, error)
    else:
        logger.exception(message, *args)
