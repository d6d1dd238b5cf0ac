"""The ``taskq web`` command's checks before it serves (in process; no server is started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taskq.cli.main import main
from taskq.cli.web import is_loopback


def test_taskq_web_command_without_the_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["--broker", "memory://", "web"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("taskq: error: taskq web needs the 'web' extra (uvicorn not installed)")
    assert "pip install 'taskq[web]'" in err


def test_taskq_web_refuses_a_public_address_without_a_login(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TASKQ_WEB_PASSWORD", raising=False)
    for host in ("0.0.0.0", "192.0.2.7", "::", "dashboard.example"):
        assert main(["--broker", "memory://", "web", "--host", host]) == 2
        err = capsys.readouterr().err
        assert f"refusing to serve the dashboard on {host} without a login" in err


def test_taskq_web_takes_no_password_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["web", "--password", "hunter2"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_cli_parser_does_not_import_the_web_dependencies() -> None:
    code = (
        "import sys\n"
        "from taskq.cli.main import build_parser\n"
        "build_parser()\n"
        "print(','.join(m for m in ('starlette', 'jinja2', 'uvicorn', 'taskq.web') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
