"""Every ``taskq`` subcommand end to end, in a subprocess, against a broker shared with the test."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from taskq.brokers.base import Broker, SchedulerEntryInfo, SchedulerEvent, ServerInfo, WorkerInfo
from taskq.task import TaskState
from tests.e2e import cli_support
from tests.e2e.cli_support import cli_env, run_cli, with_broker
from tests.unit.test_inspector import msg, populate

pytestmark = pytest.mark.timeout(180)

broker_url = cli_support.broker_url


def ok(url: str, *args: str, stdin: bytes | None = None) -> str:
    result = run_cli(url, *args, stdin=stdin)
    assert result.code == 0, result.err
    assert result.err == ""
    return result.out


def ok_json(url: str, *args: str) -> Any:
    return json.loads(ok(url, *args, "--json"))


def fails(url: str | None, code: int, *args: str) -> str:
    """Run a command expected to fail; return its one-line error."""
    result = run_cli(url, *args)
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def seeded(url: str) -> None:
    with_broker(url, populate)


def state_of(url: str, queue: str, task_id: str) -> str:
    return str(ok_json(url, "task", "inspect", task_id, "--queue", queue)[0]["state"])


# --------------------------------------------------------------------------- enqueue


def test_enqueue_stores_a_pending_task_and_prints_its_id(broker_url: str) -> None:
    out = ok(broker_url, "enqueue", "email:welcome", '{"user": 42}', "--task-id", "t1")
    assert out == "Enqueued task t1 to queue 'default' (pending)\n"
    (task,) = ok_json(broker_url, "task", "inspect", "t1")
    assert (task["state"], task["type"], task["payload"]) == (
        "pending",
        "email:welcome",
        '{"user": 42}',
    )


def test_enqueue_applies_every_option(broker_url: str) -> None:
    info = ok_json(
        broker_url,
        "enqueue",
        "report",
        "{}",
        "--queue",
        "reports",
        "--process-in",
        "1h30m",
        "--max-retry",
        "3",
        "--timeout",
        "250ms",
        "--deadline",
        "2100-01-02T03:04:05+02:00",
        "--unique",
        "2h",
        "--task-id",
        "r1",
        "--retention",
        "1d",
        "--header",
        "tenant=acme",
        "-H",
        "trace=abc=1",
    )
    assert info["id"] == "r1"
    assert (info["queue"], info["state"], info["max_retry"]) == ("reports", "scheduled", 3)
    assert (info["timeout"], info["retention"]) == (0.25, 86400.0)
    assert info["deadline"] == "2100-01-02T01:04:05Z"
    assert info["headers"] == {"tenant": "acme", "trace": "abc=1"}
    (stored,) = ok_json(broker_url, "task", "inspect", "r1", "-q", "reports")
    assert stored["state"] == "scheduled"
    assert stored["headers"] == {"tenant": "acme", "trace": "abc=1"}
    dup = fails(broker_url, 4, "enqueue", "report", "{}", "--queue", "reports", "--unique", "1h")
    assert "unique" in dup.lower() or "duplicate" in dup.lower()


def test_enqueue_at_a_time_schedules_the_task(broker_url: str) -> None:
    info = ok_json(broker_url, "enqueue", "t", "--process-at", "2100-01-01T00:00:00Z")
    assert info["state"] == "scheduled"
    assert info["next_process_at"] == "2100-01-01T00:00:00Z"


def test_enqueue_reads_a_binary_payload_from_stdin(broker_url: str) -> None:
    payload = bytes(range(256))
    info = json.loads(ok(broker_url, "enqueue", "blob", "-", "--json", stdin=payload))
    assert info["payload"] is None
    assert base64.b64decode(info["payload_base64"]) == payload
    (stored,) = ok_json(broker_url, "task", "inspect", info["id"])
    assert base64.b64decode(stored["payload_base64"]) == payload


def test_enqueue_into_a_group_makes_an_aggregating_task(broker_url: str) -> None:
    out = ok(broker_url, "enqueue", "digest", "x", "--group", "user1", "--task-id", "g1")
    assert out == "Enqueued task g1 to queue 'default' (aggregating, group 'user1')\n"
    assert ok_json(broker_url, "group", "ls") == [{"group": "user1", "size": 1}]
    table = ok(broker_url, "group", "ls", "--queue", "default").splitlines()
    assert table[0].split() == ["GROUP", "SIZE"]
    assert table[2].split() == ["user1", "1"]


def test_enqueue_with_a_used_task_id_is_a_conflict(broker_url: str) -> None:
    ok(broker_url, "enqueue", "t", "--task-id", "same")
    line = fails(broker_url, 4, "enqueue", "t", "--task-id", "same")
    assert line.startswith("taskq: error:") and "same" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--process-in", "5x"], "invalid duration '5x'"),
        (["--process-in", "10"], "invalid duration '10'"),
        (["--timeout=-1s"], "invalid duration '-1s'"),
        (["--process-at", "tomorrow"], "invalid time 'tomorrow'"),
        (["--process-at", "2030-01-01T00:00:00"], "has no UTC offset"),
        (["--max-retry", "many"], "invalid number 'many'"),
        (["--header", "novalue"], "invalid header 'novalue'"),
        (["--process-in", "1s", "--process-at", "2030-01-01T00:00:00Z"], "not allowed with"),
    ],
)
def test_enqueue_bad_option_values_are_usage_errors(
    broker_url: str, args: list[str], expected: str
) -> None:
    line = fails(broker_url, 2, "enqueue", "t", "x", *args)
    assert expected in line
    assert line.startswith("taskq enqueue: error:")


def test_enqueue_bad_queue_name_is_a_usage_error(broker_url: str) -> None:
    line = fails(broker_url, 2, "enqueue", "t", "--queue", "{bad}")
    assert "forbidden characters" in line


# --------------------------------------------------------------------------- queue


def test_queue_ls_shows_every_queue_with_sizes_by_state(broker_url: str) -> None:
    seeded(broker_url)
    with_broker(broker_url, lambda b: b.enqueue(msg("o1", "other")))
    out = ok(broker_url, "queue", "ls")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["QUEUE", "STATE", "SIZE", "PENDING"]
    row = next(line.split() for line in lines if line.startswith("q "))
    # queue, state, size, pending, active, scheduled, retry, archived, completed, aggregating
    assert row[:10] == ["q", "run", "9", "2", "1", "1", "1", "1", "1", "2"]
    assert any(line.startswith("other ") for line in lines)
    infos = ok_json(broker_url, "queue", "ls")
    assert [i["queue"] for i in infos] == ["other", "q"]
    assert infos[1]["pending"] == 2 and infos[1]["paused"] is False


def test_queue_ls_on_an_empty_broker_says_so(broker_url: str) -> None:
    assert ok(broker_url, "queue", "ls") == "No queues.\n"
    assert ok_json(broker_url, "queue", "ls") == []


def test_queue_inspect_shows_counts_and_todays_outcomes(broker_url: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "queue", "inspect", "q")
    assert "Queue:           q" in out
    assert "Processed today: 3" in out
    assert "Failed today:    2" in out
    (info,) = ok_json(broker_url, "queue", "inspect", "q")
    assert (info["size"], info["processed_total"], info["failed_total"]) == (9, 3, 2)
    assert isinstance(info["latency"], float)


def test_queue_commands_on_an_unknown_queue_exit_3(broker_url: str) -> None:
    seeded(broker_url)
    for args in (
        ["queue", "inspect", "nope"],
        ["queue", "history", "nope"],
        ["queue", "pause", "nope"],
        ["queue", "unpause", "nope"],
        ["queue", "rm", "nope"],
        ["task", "ls", "--queue", "nope"],
        ["group", "ls", "--queue", "nope"],
    ):
        assert "nope" in fails(broker_url, 3, *args)


def test_queue_history_shows_one_row_per_day(broker_url: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "queue", "history", "q", "--days", "3")
    rows = [line.split() for line in out.splitlines() if line[:2] == "20"]
    assert len(rows) == 3
    assert rows[0][1:4] == ["3", "2", "66.7%"]
    days = ok_json(broker_url, "queue", "history", "q", "-x", "2")
    assert [(d["processed"], d["failed"]) for d in days] == [(3, 2), (0, 0)]
    assert "invalid number" in fails(broker_url, 2, "queue", "history", "q", "--days", "0")


def test_queue_pause_and_unpause_change_the_queue_state(broker_url: str) -> None:
    seeded(broker_url)
    assert ok(broker_url, "queue", "pause", "q") == "Paused queue 'q'\n"
    assert ok_json(broker_url, "queue", "inspect", "q")[0]["paused"] is True
    assert "paused" in ok(broker_url, "queue", "ls")
    assert ok_json(broker_url, "queue", "unpause", "q") == [{"queue": "q", "paused": False}]
    assert ok_json(broker_url, "queue", "inspect", "q")[0]["paused"] is False


def test_queue_rm_needs_force_for_tasks_and_refuses_active_ones(broker_url: str) -> None:
    with_broker(broker_url, lambda b: b.enqueue(msg("p1", "full")))
    assert "use --force" in fails(broker_url, 4, "queue", "rm", "full")
    assert ok(broker_url, "queue", "rm", "full", "--force") == "Removed queue 'full'\n"
    assert ok_json(broker_url, "queue", "ls") == []
    seeded(broker_url)
    assert "stop its workers" in fails(broker_url, 4, "queue", "rm", "q", "--force")


# --------------------------------------------------------------------------- task


@pytest.mark.parametrize(
    ("state", "ids", "column"),
    [
        ("pending", ["p1", "p2"], "ENQUEUED"),
        ("active", ["a1"], "ORPHANED"),
        ("scheduled", ["s1"], "PROCESS AT"),
        ("retry", ["r1"], "LAST ERROR"),
        ("archived", ["x1"], "LAST ERROR"),
        ("completed", ["c1"], "COMPLETED"),
        ("aggregating", ["g1", "g2"], "GROUP"),
    ],
)
def test_task_ls_lists_each_state(broker_url: str, state: str, ids: list[str], column: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "task", "ls", "--queue", "q", "--state", state)
    assert column in out.splitlines()[0]
    listed = [line.split()[0] for line in out.splitlines()[2:] if line.strip()]
    assert listed == ids
    tasks = ok_json(broker_url, "task", "ls", "-q", "q", "-s", state)
    assert [t["id"] for t in tasks] == ids
    assert {t["state"] for t in tasks} == {state}


def test_task_ls_pages_and_filters_by_group(broker_url: str) -> None:
    async def many(broker: Broker) -> None:
        for i in range(5):
            await broker.enqueue(msg(f"t{i}"))
        await broker.add_to_group(msg("g1", group="a"))
        await broker.add_to_group(msg("g2", group="b"))

    with_broker(broker_url, many)
    page = ok_json(broker_url, "task", "ls", "-q", "q", "--page", "2", "--size", "2")
    assert [t["id"] for t in page] == ["t2", "t3"]
    out = ok(broker_url, "task", "ls", "-q", "q", "--size", "2")
    assert "more may follow: --page 2" in out
    grouped = ok_json(broker_url, "task", "ls", "-q", "q", "-s", "aggregating", "-g", "b")
    assert [t["id"] for t in grouped] == ["g2"]
    assert "No pending tasks in queue 'q' on page 9." in ok(
        broker_url, "task", "ls", "-q", "q", "--page", "9"
    )
    assert "invalid choice" in fails(broker_url, 2, "task", "ls", "-q", "q", "-s", "done")
    assert "invalid number" in fails(broker_url, 2, "task", "ls", "-q", "q", "--page", "0")


def test_task_inspect_shows_every_field(broker_url: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "task", "inspect", "r1", "--queue", "q")
    assert "State:           retry" in out
    assert "Retried:         1/3" in out
    assert "Last error:      boom" in out
    assert 'Payload:         {"n": "r1"}' in out
    line = fails(broker_url, 3, "task", "inspect", "missing", "--queue", "q")
    assert line.startswith("taskq: error:") and "missing" in line


def test_task_delete_archive_and_run_move_tasks(broker_url: str) -> None:
    seeded(broker_url)
    assert ok(broker_url, "task", "archive", "p1", "-q", "q") == (
        "Archived: task p1 in queue 'q'\n"
    )
    assert state_of(broker_url, "q", "p1") == "archived"
    assert ok(broker_url, "task", "run", "p1", "-q", "q") == (
        "Queued to run now: task p1 in queue 'q'\n"
    )
    assert state_of(broker_url, "q", "p1") == "pending"
    assert ok_json(broker_url, "task", "delete", "p1", "-q", "q") == [
        {"id": "p1", "queue": "q", "action": "delete"}
    ]
    fails(broker_url, 3, "task", "inspect", "p1", "-q", "q")
    fails(broker_url, 3, "task", "delete", "p1", "-q", "q")
    fails(broker_url, 4, "task", "delete", "a1", "-q", "q")
    fails(broker_url, 4, "task", "run", "p2", "-q", "q")


def test_running_an_archived_task_gives_back_its_retries(broker_url: str) -> None:
    async def archived_after_a_failure(broker: Broker) -> None:
        await broker.enqueue(msg("x1"))
        (d,) = await broker.dequeue(["q"], count=1, lease=60_000)
        await broker.retry(d.ref, delay=0, error="first")
        await broker.forward("q")
        (d,) = await broker.dequeue(["q"], count=1, lease=60_000)
        await broker.archive(d.ref, error="second")

    with_broker(broker_url, archived_after_a_failure)
    ok(broker_url, "task", "run", "x1", "-q", "q")
    (task,) = ok_json(broker_url, "task", "inspect", "x1", "-q", "q")
    assert (task["state"], task["retried"], task["last_error"]) == ("pending", 0, "")


def test_task_cancel_archives_waiting_tasks_and_signals_active_ones(broker_url: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "task", "cancel", "p1", "a1")
    assert out.splitlines() == [
        "Task p1 was pending: archived as canceled",
        "Cancellation sent to active task a1",
    ]
    assert state_of(broker_url, "q", "p1") == "archived"
    assert with_broker(broker_url, lambda b: b.cancel_requested("q", ["a1"])) == {"a1"}
    assert "missing" in fails(broker_url, 3, "task", "cancel", "missing")


@pytest.mark.parametrize(
    ("command", "state", "count", "after"),
    [
        ("deleteall", "archived", 1, None),
        ("deleteall", "pending", 2, None),
        ("archiveall", "pending", 2, "archived"),
        ("archiveall", "scheduled", 1, "archived"),
        ("runall", "retry", 1, "pending"),
        ("runall", "archived", 1, "pending"),
        ("runall", "aggregating", 2, "pending"),
    ],
)
def test_bulk_task_commands_apply_to_every_task_in_a_state(
    broker_url: str, command: str, state: str, count: int, after: str | None
) -> None:
    seeded(broker_url)
    result = ok_json(broker_url, "task", command, "--queue", "q", "--state", state)
    assert result == {"queue": "q", "state": state, "count": count}
    info = ok_json(broker_url, "queue", "inspect", "q")[0]
    assert info[state] == 0
    if after is not None:
        assert info[after] >= count


def test_bulk_task_commands_print_a_summary_and_refuse_wrong_states(broker_url: str) -> None:
    seeded(broker_url)
    out = ok(broker_url, "task", "archiveall", "-q", "q", "-s", "aggregating", "-g", "grp")
    assert out == "Archived: 2 aggregating tasks in queue 'q', group 'grp'\n"
    assert "invalid choice: 'active'" in fails(
        broker_url, 2, "task", "deleteall", "-q", "q", "-s", "active"
    )
    assert "required" in fails(broker_url, 2, "task", "runall", "-q", "q")


# --------------------------------------------------------------------------- fleet


async def _fleet(broker: Broker) -> None:
    now = await broker.now()
    await broker.write_server_state(
        ServerInfo(
            id="srv-1",
            host="worker-box",
            pid=4242,
            concurrency=8,
            queues={"q": 3, "low": 1},
            strict_priority=False,
            started_at=now - 60_000,
            status="active",
            active_workers=(
                WorkerInfo("a1", "email:send", "q", now - 1000, now + 60_000),
                WorkerInfo("a0", "pdf:render", "q", now - 9000, now - 4000, cut_off="timeout"),
            ),
        ),
        ttl=60_000,
    )
    await broker.write_scheduler_entries(
        "sched-1",
        [
            SchedulerEntryInfo(
                id="entry-1",
                spec="*/5 * * * *",
                task_type="report:daily",
                payload=b"{}",
                options={"queue": "q"},
                next_enqueue_at=now + 300_000,
                prev_enqueue_at=now - 10_000,
                scheduler_id="sched-1",
            )
        ],
        ttl=60_000,
    )
    for i in range(3):
        await broker.record_scheduler_event("entry-1", SchedulerEvent(f"ev{i}", now - 1000 * i))


def test_server_ls_shows_servers_and_their_active_tasks(broker_url: str) -> None:
    assert ok(broker_url, "server", "ls") == "No servers are running.\n"
    with_broker(broker_url, _fleet)
    out = ok(broker_url, "server", "ls")
    row = next(line.split() for line in out.splitlines() if line.startswith("worker-box"))
    assert row[:4] == ["worker-box", "4242", "active", "2/8"]
    assert "low=1, q=3" in out
    assert "Active tasks" in out and "email:send" in out
    stuck = next(line for line in out.splitlines() if " a0 " in line)
    assert stuck.rstrip().endswith("ago (cut off: timeout)")
    running = next(line for line in out.splitlines() if " a1 " in line)
    assert "cut off" not in running
    (server,) = ok_json(broker_url, "server", "ls")
    assert (server["id"], server["queues"]) == ("srv-1", {"q": 3, "low": 1})
    assert server["active_workers"][0]["task_id"] == "a1"
    assert [w["cut_off"] for w in server["active_workers"]] == ["", "timeout"]


def test_cron_ls_and_history_show_entries_and_their_enqueues(broker_url: str) -> None:
    assert ok(broker_url, "cron", "ls") == "No scheduler entries.\n"
    with_broker(broker_url, _fleet)
    out = ok(broker_url, "cron", "ls")
    assert "entry-1" in out and "*/5 * * * *" in out and "report:daily" in out
    (entry,) = ok_json(broker_url, "cron", "ls")
    assert (entry["id"], entry["options"]) == ("entry-1", {"queue": "q"})
    history = ok(broker_url, "cron", "history", "entry-1")
    assert [line.split()[0] for line in history.splitlines() if line.startswith("ev")] == [
        "ev0",
        "ev1",
        "ev2",
    ]
    paged = ok_json(broker_url, "cron", "history", "entry-1", "--page", "2", "--size", "2")
    assert [e["task_id"] for e in paged["entry-1"]] == ["ev2"]


def test_stats_sums_states_queues_and_fleet(broker_url: str) -> None:
    seeded(broker_url)
    with_broker(broker_url, _fleet)
    stats = ok_json(broker_url, "stats")
    assert stats["states"] == {
        "pending": 2,
        "active": 1,
        "scheduled": 1,
        "retry": 1,
        "archived": 1,
        "completed": 1,
        "aggregating": 2,
    }
    assert (stats["processed_today"], stats["failed_today"], stats["servers"]) == (3, 2, 1)
    out = ok(broker_url, "stats")
    assert "Tasks by state" in out and "Processed today (UTC): 3" in out
    assert "Busy workers:          2/8" in out  # the cut-off handler holds its slot too


# --------------------------------------------------------------------------- globals


def test_broker_comes_from_the_environment_when_not_given(broker_url: str) -> None:
    with_broker(broker_url, lambda b: b.enqueue(msg("p1", "envq")))
    result = run_cli(None, "queue", "ls", "--json", env=cli_env(TASKQ_BROKER=broker_url))
    assert result.code == 0, result.err
    assert [q["queue"] for q in json.loads(result.out)] == ["envq"]


def test_global_options_work_before_and_after_the_subcommand(broker_url: str) -> None:
    seeded(broker_url)
    before = run_cli(broker_url, "--json", "queue", "ls")
    after = run_cli(broker_url, "queue", "ls", "--json")
    assert before.code == after.code == 0
    assert [q["queue"] for q in json.loads(before.out)] == [
        q["queue"] for q in json.loads(after.out)
    ]


def test_debug_adds_a_traceback_to_errors(broker_url: str) -> None:
    seeded(broker_url)
    result = run_cli(broker_url, "--debug", "queue", "inspect", "nope")
    assert result.code == 3
    assert "Traceback" in result.err
    assert result.err.strip().splitlines()[-1].startswith("taskq: error:")


def test_usage_errors_exit_2_with_one_line() -> None:
    assert "invalid choice" in fails(None, 2, "frobnicate")
    assert "required" in fails(None, 2, "queue")
    assert "unrecognized arguments" in fails(None, 2, "stats", "--bogus")


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_cli(None)
    assert result.code == 2
    assert "usage: taskq" in result.err


def test_unknown_broker_scheme_is_one_line_error() -> None:
    line = fails("nosuch://host", 1, "queue", "ls")
    assert "no broker for scheme 'nosuch'" in line


@pytest.mark.redis
def test_unreachable_broker_exits_5_without_showing_the_password() -> None:
    pytest.importorskip("taskq.brokers.redis")
    from taskq.testing._proc import free_port

    url = f"redis://user:hunter2secret@127.0.0.1:{free_port()}/0"
    result = run_cli(url, "queue", "ls")
    assert result.code == 5, result.err
    assert "hunter2secret" not in result.err + result.out
    assert len(result.err.strip().splitlines()) == 1


def test_passwords_in_broker_urls_are_never_printed() -> None:
    line = fails("nosuch://user:hunter2secret@host/0", 1, "queue", "ls")
    assert "hunter2secret" not in line
    assert "***" in line


def test_task_states_named_in_the_cli_are_the_task_states() -> None:
    from taskq.cli.tasks import _STATES

    assert set(_STATES) == {s.value for s in TaskState}
