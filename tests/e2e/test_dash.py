"""``taskq dash`` in a real terminal: tmux runs it, the test sends keys and reads the screen."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskq.brokers.base import Broker
from tests.e2e import cli_support
from tests.e2e.cli_support import ROOT, with_broker
from tests.unit.test_inspector import msg

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

broker_url = cli_support.broker_url

WAIT = 20.0


class Terminal:
    """A tmux session on a private socket running one command."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"taskq-test-{uuid.uuid4().hex[:10]}"
        self.session = "dash"
        self.rc_file = tmp_path / "dash.rc"

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return proc.stdout

    def start(self, url: str, tmp_path: Path) -> None:
        command = [sys.executable, "-m", "taskq.cli.main", "--broker", url, "dash"]
        script = tmp_path / "dash.sh"
        script.write_text(
            f"cd {shlex.quote(str(tmp_path))}\n"
            f"export PYTHONPATH={shlex.quote(str(ROOT))} TERM=xterm-256color\n"
            "unset TASKQ_BROKER\n"
            f"{shlex.join(command)}\n"
            f"echo $? > {shlex.quote(str(self.rc_file))}\n"
        )
        self.tmux("new-session", "-d", "-s", self.session, "-x", "160", "-y", "40", f"sh {script}")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + WAIT
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; the screen was:\n{screen}")

    def exit_code(self) -> int:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.rc_file.exists() and self.rc_file.read_text().strip():
                return int(self.rc_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the dashboard did not exit; the screen was:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-session", "-t", self.session)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    try:
        yield term
    finally:
        term.close()


async def _pending_and_active(broker: Broker) -> None:
    """Queue "dashq": p0 and p1 active, p2..p5 pending."""
    for i in range(2):
        await broker.enqueue(msg(f"p{i}", "dashq"))
    await broker.dequeue(["dashq"], count=2, lease=600_000)
    for i in range(2, 6):
        await broker.enqueue(msg(f"p{i}", "dashq"))


def _row(screen: str, first: str) -> list[str]:
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == first:
            return cells
    return []


def test_dash_shows_queue_sizes_by_state_and_quits_on_q(
    broker_url: str, terminal: Terminal, tmp_path: Path
) -> None:
    with_broker(broker_url, _pending_and_active)
    terminal.start(broker_url, tmp_path)
    screen = terminal.wait_for(lambda s: bool(_row(s, "dashq")), "the dashq row")
    assert _row(screen, "queue")[:5] == ["queue", "state", "size", "pending", "active"]
    # queue, state, size, pending, active, scheduled, retry, archived, completed, aggregating
    assert _row(screen, "dashq")[:10] == ["dashq", "run", "6", "4", "2", "0", "0", "0", "0", "0"]
    assert "Servers and their active tasks" in screen

    # Live: a task enqueued now shows up at the next refresh.
    with_broker(broker_url, lambda b: b.enqueue(msg("late", "dashq")))
    terminal.wait_for(lambda s: _row(s, "dashq")[2:4] == ["7", "5"], "the refreshed counts")

    terminal.keys("q")
    assert terminal.exit_code() == 0


def test_dash_drills_into_a_queue_pauses_it_and_cancels_a_task(
    broker_url: str, terminal: Terminal, tmp_path: Path
) -> None:
    with_broker(broker_url, _pending_and_active)
    terminal.start(broker_url, tmp_path)
    terminal.wait_for(lambda s: bool(_row(s, "dashq")), "the dashq row")

    terminal.keys("Enter")
    screen = terminal.wait_for(lambda s: bool(_row(s, "p5")), "the pending tasks of dashq")
    assert [_row(screen, f"p{i}")[:2] for i in range(2, 6)] == [
        [f"p{i}", "email:send"] for i in range(2, 6)
    ]

    terminal.keys("2")
    screen = terminal.wait_for(
        lambda s: bool(_row(s, "p0")) and not _row(s, "p5"), "the active tasks"
    )
    assert _row(screen, "p0")[-1] == "running"

    terminal.keys("p")
    terminal.wait_for(lambda s: "PAUSED" in s, "the paused marker")
    info = with_broker(broker_url, lambda b: b.queue_stats("dashq"))
    assert info.paused is True

    terminal.keys("c")
    terminal.wait_for(lambda s: "Cancellation sent to task p0" in s, "the cancel notice")
    assert with_broker(broker_url, lambda b: b.cancel_requested("dashq", ["p0", "p1"])) == {"p0"}

    terminal.keys("Escape")
    screen = terminal.wait_for(lambda s: _row(s, "dashq")[1:2] == ["PAUSED"], "the main screen")
    terminal.keys("p")
    terminal.wait_for(lambda s: _row(s, "dashq")[1:2] == ["run"], "the unpaused queue")
    assert with_broker(broker_url, lambda b: b.queue_stats("dashq")).paused is False

    terminal.keys("C-c")
    assert terminal.exit_code() == 0


def test_dash_on_an_unreachable_broker_fails_with_one_line(tmp_path: Path) -> None:
    result = cli_support.run_cli("nosuch://host", "dash")
    assert result.code == 1
    assert len(result.err.strip().splitlines()) == 1
    assert "no broker for scheme" in result.err
