"""What a Server does with its broker's settings check at start-up (on an in-memory broker).

Unsafe findings are logged as warnings before the start-up line, or refuse the
start with ``strict_broker_checks``; notes are logged at INFO; a check that
fails or never answers never stops the start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import taskq
from taskq.brokers.base import ConfigFinding
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import BrokerConfigError, BrokerConnectionError
from taskq.runtime import server as server_module
from taskq.runtime.config import Config
from taskq.runtime.server import Server


class _CheckedBroker(InMemoryBroker):
    """An in-memory broker whose settings check returns (or raises) what the test says."""

    def __init__(self, outcome: list[ConfigFinding] | BaseException | None) -> None:
        super().__init__()
        self.outcome = outcome
        self.checks = 0

    async def check_config(self) -> list[ConfigFinding]:
        self.checks += 1
        if self.outcome is None:
            await asyncio.Event().wait()  # never answers
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


UNSAFE = ConfigFinding(
    "Redis x:1 runs with maxmemory-policy allkeys-lru: tasks can be silently lost"
)
NOTE = ConfigFinding("could not read the maxmemory-policy of Redis x:1", unsafe=False)


def _start_and_stop(broker: InMemoryBroker, **config: Any) -> Server:
    server = Server(broker, Config(concurrency=1, fetch_wait=0.1, **config))
    server.start(taskq.ServeMux())
    server.shutdown()
    return server


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_an_unsafe_finding_is_logged_once_as_a_warning_before_the_worker_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    broker = _CheckedBroker([UNSAFE])
    _start_and_stop(broker)
    (record,) = _records(caplog, "allkeys-lru")
    assert record.levelno == logging.WARNING
    started = _records(caplog, "started")[0]
    assert caplog.records.index(record) < caplog.records.index(started)
    assert broker.checks == 1


def test_strict_broker_checks_refuse_to_start_on_an_unsafe_finding() -> None:
    server = Server(_CheckedBroker([UNSAFE, NOTE]), Config(strict_broker_checks=True))
    try:
        with pytest.raises(BrokerConfigError, match="allkeys-lru") as caught:
            server.start(taskq.ServeMux())
        assert "could not read" not in str(caught.value)
        assert server.state == "stopped"
    finally:
        server.shutdown()


def test_a_note_is_logged_at_info_and_never_refuses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(_CheckedBroker([NOTE]), strict_broker_checks=True)
    (record,) = _records(caplog, "could not read")
    assert record.levelno == logging.INFO


def test_a_check_that_fails_does_not_stop_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(_CheckedBroker(BrokerConnectionError("reset")), strict_broker_checks=True)
    (record,) = _records(caplog, "could not check the broker's settings")
    assert record.levelno == logging.WARNING and "reset" in record.getMessage()
    assert _records(caplog, "started")


def test_a_check_that_never_answers_is_given_up_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_CHECK_TIMEOUT", 0.1)
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(_CheckedBroker(None))
    assert _records(caplog, "could not check the broker's settings")
    assert _records(caplog, "started")


def test_no_findings_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(_CheckedBroker([]), strict_broker_checks=True)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
