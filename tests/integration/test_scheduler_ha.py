"""HA scheduling: three scheduler processes, one broker, each tick enqueued exactly once.

Three ``taskq scheduler`` processes run the same ``@every 1s`` entry; one is
SIGKILLed halfway. Over 30+ ticks, no tick may be missing and none enqueued
twice. Bounded: about 35 s.
"""

from __future__ import annotations

import gc
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

REPO = Path(__file__).resolve().parents[2]
QUEUE = "ha"
TICKS = 30

_APP = textwrap.dedent(
    """
    import os
    from datetime import timedelta
    import taskq

    scheduler = taskq.Scheduler(
        os.environ["HA_TEST_BROKER"], recovery_delay=timedelta(seconds=2)
    )
    scheduler.register("@every 1s", taskq.Task("tick"), queue="ha")
    """
)


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis)])
def broker_url(request: pytest.FixtureRequest) -> str:
    redis_server = request.getfixturevalue("redis_server")
    redis_server.flushall()
    return str(redis_server.url)


@pytest.fixture
def schedulers(broker_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    (tmp_path / "ha_app.py").write_text(_APP)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HA_TEST_BROKER": broker_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "taskq.cli.scheduler", "ha_app:scheduler"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"scheduler{i}.log").open("wb"),
        )
        for i in range(3)
    ]
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _ticks(inspector: taskq.Inspector) -> dict[int, str]:
    """Tick (epoch ms) -> entry id, from the ids of the enqueued tasks (sched:<entry>:<tick>)."""
    if QUEUE not in inspector.queues():
        return {}
    found: dict[int, str] = {}
    for page in range(10):
        tasks = inspector.list_pending_tasks(QUEUE, page=page + 1, page_size=100)
        for task in tasks:
            assert task.type == "tick"
            prefix, entry, tick = task.id.split(":")
            assert prefix == "sched"
            found[int(tick)] = entry
        if len(tasks) < 100:
            break
    return found


def _wait(what: str, check: object, timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        for proc in procs:
            assert proc.poll() is None or proc.returncode == -signal.SIGKILL, (
                f"a scheduler exited early with {proc.returncode}"
            )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_three_schedulers_enqueue_each_tick_once_even_when_one_is_killed(
    broker_url: str, schedulers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    with taskq.Inspector(broker_url) as inspector:
        _run_and_check(inspector, schedulers, tmp_path)
    gc.collect()


def _run_and_check(
    inspector: taskq.Inspector, schedulers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    _wait("the first tick", lambda: _ticks(inspector), 20, schedulers)
    first = min(_ticks(inspector))

    _wait("half the ticks", lambda: max(_ticks(inspector)) >= first + 14_000, 25, schedulers)
    os.kill(schedulers[0].pid, signal.SIGKILL)
    schedulers[0].wait(5)

    _wait(
        f"{TICKS} ticks",
        lambda: max(_ticks(inspector)) >= first + (TICKS - 1) * 1000,
        TICKS + 5,
        schedulers,
    )
    time.sleep(2.2)  # the survivors' recovery check (2 s) of the last ticks
    for proc in schedulers[1:]:
        os.kill(proc.pid, signal.SIGTERM)
    for proc in schedulers[1:]:
        assert proc.wait(10) == 0

    ticks = _ticks(inspector)
    ordered = sorted(ticks)
    missing = sorted(set(range(ordered[0], ordered[-1] + 1, 1000)) - set(ordered))
    assert missing == []
    assert len(ordered) >= TICKS
    assert all(t % 1000 == 0 for t in ordered)
    [entry_id] = set(ticks.values())
    history = inspector.scheduler_history(entry_id, page_size=1000)
    recorded = [event.task_id for event in history]
    assert len(recorded) == len(set(recorded)) == len(ordered)  # each tick enqueued once
    logs = "".join((tmp_path / f"scheduler{i}.log").read_text() for i in range(3))
    assert "Traceback" not in logs
