"""``taskq scheduler APP:SCHEDULER``: loading the target and running it until a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskq
from taskq.cli._common import EXIT_USAGE, CliError
from taskq.cli.main import build_parser
from taskq.cli.scheduler import load_target, run_command
from taskq.scheduler import PeriodicTaskManager, Scheduler

REPO = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import os
    import taskq

    scheduler = taskq.Scheduler(os.environ.get("APP_BROKER", "memory://"))
    scheduler.register("@every 100ms", taskq.Task("tick"))

    class Provider:
        def get_configs(self):
            return [taskq.PeriodicTaskConfig("@hourly", taskq.Task("hourly"))]

    manager = taskq.PeriodicTaskManager(Provider(), "memory://")

    def make_scheduler():
        return taskq.Scheduler("memory://")

    not_a_scheduler = 42

    class Holder:
        inner = scheduler
    """
)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"cron_app_{os.getpid()}_{id(tmp_path)}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_scheduler_a_manager_a_factory_and_a_dotted_path_can_be_loaded(app: str) -> None:
    assert isinstance(load_target(f"{app}:scheduler"), Scheduler)
    assert isinstance(load_target(f"{app}:manager"), PeriodicTaskManager)
    assert isinstance(load_target(f"{app}:make_scheduler"), Scheduler)
    assert isinstance(load_target(f"{app}:Holder.inner"), Scheduler)


@pytest.mark.parametrize(
    "target",
    ["no_colon", ":scheduler", "{app}:", "no_such_module_xyz:scheduler", "{app}:missing"],
)
def test_a_bad_target_is_a_usage_error(app: str, target: str) -> None:
    with pytest.raises(CliError) as caught:
        load_target(target.format(app=app))
    assert caught.value.code == EXIT_USAGE


def test_an_object_that_is_not_a_scheduler_is_refused(app: str) -> None:
    with pytest.raises(CliError, match=r"not a taskq\.Scheduler"):
        load_target(f"{app}:not_a_scheduler")


def test_the_taskq_command_has_the_scheduler_subcommand() -> None:
    args = build_parser().parse_args(["scheduler", "mod:obj", "--log-level", "debug"])
    assert args.func is run_command
    assert (args.target, args.log_level) == ("mod:obj", "debug")


def test_the_command_runs_until_sigterm_and_withdraws_its_entries(tmp_path: Path) -> None:
    (tmp_path / "cron_app.py").write_text(APP)
    url = f"sqlite:///{tmp_path / 'cron.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "APP_BROKER": url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskq.cli.scheduler", "cron_app:scheduler"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with taskq.Inspector(url) as inspector:
            deadline = time.monotonic() + 15
            while not inspector.scheduler_entries() or "default" not in inspector.queues():
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the scheduler never enqueued"
                time.sleep(0.05)
            [entry] = inspector.scheduler_entries()
            assert entry.spec == "@every 100ms"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert inspector.scheduler_entries() == []
            assert inspector.get_queue_info("default").pending >= 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    assert "received SIGTERM" in log
