"""``python -m taskq_prometheus`` as a real process: /metrics over HTTP, secrets kept out."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import taskq_prometheus
from prometheus_client.parser import text_string_to_metric_families
from taskq_prometheus import main
from taskq_prometheus._cli import build_parser

import taskq

PACKAGE_ROOT = Path(taskq_prometheus.__file__).resolve().parent.parent
FORBIDDEN_PORTS = {6379, *range(6390, 6400)}
START_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nothing listens on now (never one of the Redis ports in use here)."""
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in FORBIDDEN_PORTS:
            return port
    raise RuntimeError("no free loopback port")


class Exporter:
    """The exporter in a subprocess, stopped by its pid."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tmp_path / f"exporter-{self.port}.log"
        environ = {k: v for k, v in os.environ.items() if k != "TASKQ_BROKER"}
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PACKAGE_ROOT), environ.get("PYTHONPATH")])
        )
        environ.update(env)
        command = [sys.executable, "-m", "taskq_prometheus", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--cache-ttl", "0", *args]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=tmp_path, env=environ, stdout=log, stderr=subprocess.STDOUT
            )

    def scrape(self) -> str:
        """GET /metrics once the exporter listens (bounded in tries and time)."""
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(400):
            if self.proc.poll() is not None:
                raise AssertionError(f"exporter exited early:\n{self.output()}")
            try:
                url = f"http://127.0.0.1:{self.port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    body: bytes = response.read()
                    return body.decode()
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        raise AssertionError(f"exporter never answered:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM the exporter's pid and wait for it; SIGKILL if it does not stop."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Start(Protocol):
    def __call__(self, args: list[str], env: dict[str, str] | None = None) -> Exporter: ...


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    started: list[Exporter] = []

    def start_exporter(args: list[str], env: dict[str, str] | None = None) -> Exporter:
        started.append(Exporter(tmp_path, args, env or {}))
        return started[-1]

    yield start_exporter
    for exporter in started:
        exporter.stop()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_exporter_serves_a_sqlite_brokers_metrics_over_http_and_stops_on_sigterm(
    tmp_path: Path, start: Start
) -> None:
    url = f"sqlite:///{tmp_path / 'taskq.db'}"
    with taskq.Client(url) as client:
        for n in range(3):
            client.enqueue(taskq.Task("email:send", str(n).encode()), queue="emails")
    with taskq.Inspector(url) as inspector:
        inspector.pause_queue("emails")

    exporter = start(["--broker", url])
    found = samples(exporter.scrape())

    assert found[("taskq_up", frozenset())] == 1
    assert found[("taskq_tasks", frozenset({("queue", "emails"), ("state", "pending")}))] == 3
    assert found[("taskq_queue_paused", frozenset({("queue", "emails")}))] == 1
    assert found[("taskq_scrape_errors_total", frozenset())] == 0
    assert exporter.stop() == 0
    assert "serving" in exporter.output()


def test_exporter_keeps_the_broker_password_out_of_metrics_and_logs(
    start: Start,
) -> None:
    canary = secrets.token_hex(12)
    # Nothing listens there: every read fails with a connection error.
    url = f"redis://:{canary}@127.0.0.1:{free_port()}/0"

    exporter = start(["--log-level", "DEBUG"], env={"TASKQ_BROKER": url})
    body = exporter.scrape()
    found = samples(body)
    exporter.stop()

    assert found[("taskq_up", frozenset())] == 0
    assert found[("taskq_scrape_errors_total", frozenset())] == 1
    output = exporter.output()
    assert "BrokerConnectionError" in output
    assert ":***@127.0.0.1" in output
    assert canary not in output
    assert canary not in body


def test_an_unusable_broker_url_exits_2_without_its_password(start: Start) -> None:
    canary = secrets.token_hex(12)

    exporter = start(["--broker", f"nosuchscheme://user:{canary}@host/0"])

    assert exporter.proc.wait(timeout=START_TIMEOUT) == 2
    output = exporter.output()
    assert "nosuchscheme" in output
    assert canary not in output


def test_by_default_the_exporter_listens_on_loopback_port_9808_with_a_5s_cache() -> None:
    args = build_parser().parse_args([])

    assert (args.host, args.port, args.cache_ttl, args.broker) == ("127.0.0.1", 9808, 5.0, None)


def test_a_negative_cache_ttl_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--cache-ttl", "-1"])

    assert exit_info.value.code == 2
    assert "--cache-ttl must be >= 0" in capsys.readouterr().err
