"""``taskq web`` end to end: a real uvicorn process on a free loopback port, a SQLite broker."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_support import cli_env, with_broker
from tests.unit.test_inspector import populate

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.timeout(60)

PASSWORD = "e2e-Canary-51d0c3"


def free_port() -> int:
    """A free loopback port (outside the 6390-6399 range kept for other servers)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not 6390 <= port <= 6399:
            return port
    raise AssertionError("no free port")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, *, method: str = "GET", body: bytes | None = None, **headers: str) -> Any:
    """(status, headers, text) of one request; redirects are not followed."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.headers, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode("utf-8")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``taskq web --read-only`` with a password from the environment, until stopped by pid."""
    url = f"sqlite:///{tmp_path / 'taskq.db'}"
    with_broker(url, populate)
    port = free_port()
    log = tmp_path / "web.log"
    command = [sys.executable, "-m", "taskq.cli.main", "--broker", url, "web", "--read-only"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "debug"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(TASKQ_WEB_PASSWORD=PASSWORD),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        for _ in range(200):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            try:
                with urllib.request.urlopen(f"{base}/static/taskq.css", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, log.read_text()
        yield base, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_taskq_web_serves_the_dashboard_over_http(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, log = served
    status, headers, _ = fetch(f"{base}/")
    assert (status, headers["location"]) == (303, "/login")
    assert headers["content-security-policy"].startswith("default-src 'self'")
    status, _, text = fetch(f"{base}/login")
    assert status == 200 and 'name="password"' in text

    bearer = {"Authorization": f"Bearer {PASSWORD}"}
    status, _, text = fetch(f"{base}/api/queues", **bearer)
    assert status == 200
    (queue,) = json.loads(text)
    assert (queue["queue"], queue["pending"], queue["active"]) == ("q", 2, 1)

    body = json.dumps({"queue": "q"}).encode()
    status, _, text = fetch(
        f"{base}/api/queue/pause",
        method="POST",
        body=body,
        **bearer,
        **{"Content-Type": "application/json"},
    )
    assert status == 403 and "read-only" in text
    status, _, _ = fetch(f"{base}/", Host="attacker.example")
    assert status == 303  # with a login configured, any Host may ask (and must log in)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    output = log.read_text()
    assert f"at {base}/, read-only, login as 'admin'" in output
    assert '"GET /api/queues HTTP/1.1" 200' in output
    assert "Application shutdown complete" in output
    assert PASSWORD not in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_taskq_web_exits_0_after_a_graceful_shutdown_on_a_signal(
    served: tuple[str, subprocess.Popen[bytes], Path], sig: signal.Signals
) -> None:
    base, proc, log = served
    assert fetch(f"{base}/login")[0] == 200
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"taskq web still runs 15 s after {sig.name}") from None
    output = log.read_text()
    assert code == 0, output
    assert "Application shutdown complete" in output  # the lifespan closed the broker
    assert "Traceback" not in output
