"""Helpers for the CLI and dashboard end-to-end tests: a shared broker URL and a CLI runner.

The CLI runs in a subprocess, so the broker must be shared between
processes: a real Redis (from the ``redis_server`` fixture) or a SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs
import pytest

import taskq
from taskq.brokers.base import Broker

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{module} is not available: {exc}")


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty broker shared between processes (Redis, or a SQLite file)."""
    if request.param == "redis":
        _require("taskq.brokers.redis")
        server = request.getfixturevalue("redis_server")
        server.flushall()
        return str(server.url)
    _require("taskq.brokers.sqlite")
    return f"sqlite:///{tmp_path / 'taskq.db'}"


def with_broker(url: str, work: Callable[[Broker], Awaitable[T]]) -> T:
    """Run ``work(broker)`` on a fresh connection to ``url`` and close it."""

    async def main() -> T:
        broker = taskq.connect(url)
        try:
            return await work(broker)
        finally:
            await broker.close()

    return asyncio.run(main())


@attrs.frozen
class CliResult:
    """The outcome of one ``taskq`` run."""

    code: int
    out: str
    err: str


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a ``taskq`` subprocess: this checkout importable, no colours."""
    env = dict(os.environ)
    env.pop("TASKQ_BROKER", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_cli(
    url: str | None,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> CliResult:
    """Run ``python -m taskq.cli.main [--broker url] args...`` and capture its output."""
    command = [sys.executable, "-m", "taskq.cli.main"]
    if url is not None:
        command += ["--broker", url]
    proc = subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        env=env or cli_env(),
        timeout=timeout,
        check=False,
    )
    return CliResult(
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
