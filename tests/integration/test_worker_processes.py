"""`taskq worker` in real processes on brokers shared between processes (SQLite, Redis).

Crash (kill -9) recovery, graceful and forced SIGTERM, SIGTSTP, the
``--processes`` supervisor, and the command line itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

import taskq
from taskq.task import TaskState

ROOT = Path(__file__).resolve().parents[2]
KEEP = timedelta(minutes=10)  # retention: finished tasks stay visible as completed
APP = "tests.integration._worker_app:mux"


def _redis_available() -> bool:
    try:
        from taskq.brokers.redis import RedisBroker  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'taskq.db'}"
    if not _redis_available():
        pytest.skip("the Redis broker is not part of this installation yet")
    server = request.getfixturevalue("redis_server")
    return str(server.url)


@dataclass
class Attempt:
    event: str
    task_id: str
    pid: int
    at: float


class Harness:
    """Starts workers on one broker and reads what their handlers logged."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.queue = f"q{uuid.uuid4().hex[:10]}"
        self.log = tmp_path / "attempts.log"
        self.log.touch()
        self.client = taskq.Client(url)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stderr_files: list[Path] = []
        self._tmp = tmp_path

    def enqueue(
        self, seconds: float, *, count: int = 1, type: str = "sleep", **options: object
    ) -> list[str]:
        payload = json.dumps({"seconds": seconds}).encode()
        return [
            self.client.enqueue(taskq.Task(type, payload), queue=self.queue, **options).id
            for _ in range(count)
        ]

    def start(self, *args: str, app: str = APP) -> subprocess.Popen[bytes]:
        env = dict(os.environ, TASKQ_BROKER=self.url, TASKQ_TEST_LOG=str(self.log))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        stderr = self._tmp / f"worker-{len(self.workers)}.err"
        argv = [sys.executable, "-m", "taskq.cli.worker", app, "--queue", f"{self.queue}=1"]
        with stderr.open("wb") as err:
            proc = subprocess.Popen([*argv, *args], env=env, stderr=err, cwd=self._tmp)
        self.workers.append(proc)
        self.stderr_files.append(stderr)
        return proc

    def attempts(self) -> list[Attempt]:
        out = []
        for line in self.log.read_text().splitlines():
            event, task_id, pid, at = line.split()
            out.append(Attempt(event, task_id, int(pid), float(at)))
        return out

    def ended(self) -> set[str]:
        return {a.task_id for a in self.attempts() if a.event == "end"}

    def starts_of(self, task_id: str) -> list[Attempt]:
        return [a for a in self.attempts() if a.event == "start" and a.task_id == task_id]

    def state(self, task_id: str) -> TaskState:
        return self.client.get_task_info(self.queue, task_id).state

    def info(self, task_id: str) -> taskq.TaskInfo:
        return self.client.get_task_info(self.queue, task_id)

    def stderr(self, index: int = 0) -> str:
        return self.stderr_files[index].read_text(errors="replace")

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.client.close()


@pytest.fixture
def harness(broker_url: str, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(broker_url, tmp_path)
    try:
        yield h
    finally:
        h.close()


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_a_worker_killed_mid_task_loses_nothing_and_only_in_flight_tasks_run_again(
    harness: Harness,
) -> None:
    ids = harness.enqueue(0.3, count=24, retention=KEEP, max_retry=5)
    first = harness.start("--concurrency", "4", "--lease", "3")

    def mid_run() -> bool:
        attempts = harness.attempts()
        started = {a.task_id for a in attempts if a.event == "start"}
        ended = {a.task_id for a in attempts if a.event == "end"}
        return len(ended) >= 6 and bool(started - ended)

    wait_for(mid_run, 20, "some tasks finished and some running")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = time.time()
    before = harness.attempts()
    started_before = {a.task_id for a in before if a.event == "start"}
    ended_before = {a.task_id for a in before if a.event == "end"}
    # In flight at the kill: started and not finished, or finished so recently
    # that the acknowledgement may not have reached the broker.
    recent = {a.task_id for a in before if a.event == "end" and a.at > killed_at - 0.3}
    in_flight = (started_before - ended_before) | recent
    assert started_before - ended_before, "the kill must catch tasks mid-run"

    harness.start("--concurrency", "4", "--lease", "3")
    wait_for(lambda: harness.ended() >= set(ids), 40, "every task to finish")

    for task_id in ids:
        starts = harness.starts_of(task_id)
        if task_id in in_flight:
            assert 1 <= len(starts) <= 2
        else:
            assert len(starts) == 1, f"{task_id} ran {len(starts)} times"
    for task_id in started_before - ended_before:
        again = [a for a in harness.starts_of(task_id) if a.at > killed_at]
        assert again and again[0].at - killed_at < 10, "re-run within 10 s of the kill"
        assert harness.info(task_id).last_error == "lease expired: worker presumed dead"
    wait_for(lambda: all(harness.state(i) is TaskState.COMPLETED for i in ids), 10, "all completed")


def test_sigterm_lets_running_tasks_finish_and_exits_zero(harness: Harness) -> None:
    ids = harness.enqueue(1.0, count=3, retention=KEEP)
    worker = harness.start("--concurrency", "3", "--shutdown-timeout", "10")
    wait_for(lambda: len([a for a in harness.attempts() if a.event == "start"]) == 3, 20, "starts")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert harness.ended() == set(ids)
    assert all(harness.state(i) is TaskState.COMPLETED for i in ids)


def test_sigterm_requeues_tasks_outlasting_the_shutdown_timeout_without_spending_a_retry(
    harness: Harness,
) -> None:
    (task_id,) = harness.enqueue(60.0, max_retry=3)
    worker = harness.start("--shutdown-timeout", "0.5")
    wait_for(lambda: harness.starts_of(task_id), 20, "the task to start")
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert time.monotonic() - began < 5
    info = harness.info(task_id)
    assert info.state is TaskState.PENDING, harness.stderr()
    assert info.retried == 0


def test_a_second_sigterm_requeues_running_tasks_at_once(harness: Harness) -> None:
    (task_id,) = harness.enqueue(60.0)
    worker = harness.start("--shutdown-timeout", "60")
    wait_for(lambda: harness.starts_of(task_id), 20, "the task to start")
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert worker.poll() is None, "the first SIGTERM waits for the running task"
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert time.monotonic() - began < 5
    assert harness.state(task_id) is TaskState.PENDING, harness.stderr()


def test_sigtstp_stops_fetching_but_keeps_running_tasks(harness: Harness) -> None:
    (first,) = harness.enqueue(1.0, retention=KEEP)
    worker = harness.start()
    wait_for(lambda: harness.starts_of(first), 20, "the first task to start")
    worker.send_signal(signal.SIGTSTP)
    time.sleep(0.3)
    (second,) = harness.enqueue(0.0)
    wait_for(lambda: first in harness.ended(), 10, "the running task to finish")
    time.sleep(0.5)
    assert worker.poll() is None
    assert harness.starts_of(second) == []
    assert harness.state(second) is TaskState.PENDING
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0


def test_the_supervisor_restarts_a_worker_that_dies_and_stops_all_on_sigterm(
    harness: Harness,
) -> None:
    supervisor = harness.start("--processes", "2", "--lease", "3")

    def worker_pids() -> set[int]:
        return _server_pids(harness.url, harness.queue)

    wait_for(lambda: len(worker_pids()) == 2, 30, "two workers")
    victim = sorted(worker_pids())[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(pids := worker_pids() - {victim}) == 2 and victim not in pids,
        30,
        "a replacement worker",
    )
    ids = harness.enqueue(0.0, count=4, retention=KEEP)
    wait_for(lambda: harness.ended() >= set(ids), 20, "tasks run by the supervised workers")
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(20) == 0


def test_a_burst_worker_runs_what_is_due_and_exits_zero(harness: Harness) -> None:
    ids = harness.enqueue(0.1, count=6, retention=KEEP)
    (later,) = harness.enqueue(0.0, process_in=timedelta(hours=1))
    worker = harness.start("--burst", "--concurrency", "3")
    assert worker.wait(30) == 0, harness.stderr()
    assert harness.ended() == set(ids)
    assert all(harness.state(i) is TaskState.COMPLETED for i in ids)
    assert harness.state(later) is TaskState.SCHEDULED
    assert "drained (burst)" in harness.stderr()


def test_burst_with_processes_runs_every_task_once_and_the_supervisor_exits_zero(
    harness: Harness,
) -> None:
    ids = harness.enqueue(0.05, count=20, retention=KEEP)
    supervisor = harness.start("--burst", "--processes", "2", "--concurrency", "2")
    assert supervisor.wait(60) == 0, harness.stderr()
    starts = [a for a in harness.attempts() if a.event == "start"]
    assert sorted(a.task_id for a in starts) == sorted(ids)
    assert len({a.pid for a in starts}) <= 2
    assert "restarting" not in harness.stderr()


def test_a_def_handler_past_its_timeout_is_interrupted_unless_no_interrupt(
    harness: Harness,
) -> None:
    (first,) = harness.enqueue(20, type="spin", timeout=timedelta(milliseconds=300), max_retry=0)
    worker = harness.start("--concurrency", "1")
    wait_for(lambda: any(a.event == "interrupted" for a in harness.attempts()), 20, "interrupt")
    assert harness.state(first) is TaskState.ARCHIVED
    assert "timed out" in harness.info(first).last_error
    # Its one slot is free again: the next task runs and ends.
    (after,) = harness.enqueue(0.0)
    wait_for(lambda: after in harness.ended(), 20, "the next task")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, harness.stderr()

    (second,) = harness.enqueue(20, type="spin", timeout=timedelta(milliseconds=300), max_retry=0)
    harness.start("--concurrency", "1", "--no-interrupt")
    wait_for(lambda: harness.state(second) is TaskState.ARCHIVED, 20, "the archive")
    time.sleep(0.5)
    assert [a.event for a in harness.attempts() if a.task_id == second] == ["start"]


def test_a_handler_stuck_in_c_past_the_stuck_timeout_makes_the_worker_exit_75(
    harness: Harness,
) -> None:
    # reliability scenario 7: a handler that ignores cancellation (time.sleep in C)
    (stuck,) = harness.enqueue(600, type="block", timeout=timedelta(milliseconds=500))
    worker = harness.start("--stuck-timeout", "1", "--retry-delay", "3600")
    assert worker.wait(30) == 75, harness.stderr()
    err = harness.stderr()
    assert "still running 1s after it was cut off (timeout)" in err
    assert "stuck_handler_timeout" in err
    stored = harness.info(stuck)
    assert stored.state is TaskState.RETRY and stored.retried == 1
    assert "timed out" in stored.last_error


def test_the_supervisor_replaces_a_worker_that_exits_for_a_stuck_handler(harness: Harness) -> None:
    harness.enqueue(600, type="block", timeout=timedelta(milliseconds=500), max_retry=0)
    supervisor = harness.start(
        "--processes", "2", "--concurrency", "1", "--stuck-timeout", "1", "--log-level", "INFO"
    )
    try:
        wait_for(lambda: "exited with 75; restarting it" in harness.stderr(), 40, "a restart")
        (after,) = harness.enqueue(0.0, retention=KEEP)
        wait_for(lambda: after in harness.ended(), 30, "a task after the restart")
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)


def _server_pids(url: str, queue: str) -> set[int]:
    """Pids of the live worker servers serving ``queue`` (from their heartbeats)."""

    async def pids() -> set[int]:
        broker = taskq.connect(url)
        try:
            servers = await broker.servers()
        finally:
            await broker.close()
        return {s.pid for s in servers if queue in s.queues}

    return asyncio.run(pids())


def test_start_up_log_names_broker_queues_and_concurrency(harness: Harness) -> None:
    worker = harness.start("--concurrency", "3")
    wait_for(lambda: "started" in harness.stderr(), 20, "the start-up line")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    line = next(x for x in harness.stderr().splitlines() if "started" in x)
    assert f"queues={harness.queue}=1" in line and "concurrency=3" in line
    assert "broker=" in line


def test_a_password_in_the_broker_url_never_reaches_the_output(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TASKQ_BROKER", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskq.cli.worker",
            APP,
            "--broker",
            "redis://user:s3cr3tpw@127.0.0.1:1/0",
        ],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert b"s3cr3tpw" not in output
    if _redis_available():
        assert result.returncode == 5  # the broker cannot be reached
        assert b"redis://user:***@127.0.0.1:1/0" in output
    else:
        assert result.returncode != 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "module.path:attribute"),
        ("no.such.module:mux", "cannot import"),
        ("tests.integration._worker_app:missing", "has no attribute"),
        ("tests.integration._worker_app:json", "not a taskq.ServeMux"),
    ],
)
def test_a_bad_app_spec_is_a_usage_error(spec: str, message: str, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TASKQ_BROKER="memory://")
    result = subprocess.run(
        [sys.executable, "-m", "taskq.cli.worker", spec],
        env=env,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
