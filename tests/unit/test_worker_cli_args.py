"""`taskq worker` options: what reaches Config, and what the supervisor passes to its workers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from taskq.cli import worker
from taskq.cli.main import build_parser
from taskq.runtime.config import Config

EVERY_OPTION = [
    "app:mux",
    "--concurrency",
    "3",
    "--queue",
    "critical=6",
    "--queue",
    "low",
    "--strict",
    "--burst",
    "--shutdown-timeout",
    "4.5",
    "--lease",
    "12",
    "--retry-delay",
    "2",
    "--strict-broker-checks",
    "--no-interrupt",
    "--stuck-timeout",
    "20",
    "--blocked-loop-warning",
    "2.5",
    "--log-level",
    "warning",
]


def _parse(argv: list[str]) -> Any:
    return build_parser().parse_args(["worker", *argv])


def _settings(argv: list[str]) -> dict[str, Any]:
    settings = worker._config_from(_parse(argv))
    delay = settings.pop("retry_delay", None)
    if delay is not None:  # a fresh callable per parse: compare what it returns
        settings["retry_delay"] = delay(0, RuntimeError(), None)
    return settings


def test_every_worker_option_reaches_the_config() -> None:
    settings = _settings(EVERY_OPTION)
    assert settings == {
        "concurrency": 3,
        "queues": {"critical": 6, "low": 1},
        "strict_priority": True,
        "burst": True,
        "shutdown_timeout": timedelta(seconds=4.5),
        "lease": timedelta(seconds=12),
        "retry_delay": timedelta(seconds=2),
        "strict_broker_checks": True,
        "interrupt_sync_handlers": False,
        "stuck_handler_timeout": timedelta(seconds=20),
        "blocked_loop_warning": timedelta(seconds=2.5),
    }
    Config(**worker._config_from(_parse(EVERY_OPTION)))  # and Config accepts them


@pytest.mark.parametrize(
    "argv",
    [
        EVERY_OPTION,
        ["app:mux"],
        ["app:mux", "--stuck-timeout", "1"],
        ["app:mux", "--blocked-loop-warning", "0"],
    ],
)
def test_the_supervisor_gives_its_workers_the_same_options(argv: list[str]) -> None:
    child = worker._child_argv(_parse([*argv, "--processes", "2"]))
    assert child[1:3] == ["-m", "taskq.cli.worker"]
    assert _settings(child[3:]) == _settings(argv)
    assert _parse(child[3:]).log_level == _parse(argv).log_level


def test_a_blocked_loop_warning_of_0_turns_the_watchdog_off() -> None:
    settings = _settings(["app:mux", "--blocked-loop-warning", "0"])
    assert settings == {"blocked_loop_warning": None}
    assert Config(**settings).blocked_loop_warning is None
