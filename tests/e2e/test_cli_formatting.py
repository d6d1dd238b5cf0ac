"""The CLI's value parsers and output formatting, in process (fast, no broker)."""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from taskq.cli._output import (
    ago,
    fmt_bytes,
    fmt_duration,
    fmt_time,
    print_json,
    print_kv,
    print_table,
    short_payload,
)
from taskq.cli._parse import parse_days, parse_duration, parse_header, parse_time
from taskq.cli.main import _exit_code, _one_line, main
from taskq.errors import (
    BrokerConnectionError,
    DuplicateTaskError,
    InvalidDurationError,
    QueueNotEmptyError,
    QueueNotFoundError,
    TaskNotFoundError,
    TaskqError,
    TaskStateError,
)
from taskq.inspector import GroupInfo
from taskq.task import TaskInfo, TaskMessage, TaskState


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1.5h", timedelta(minutes=90)),
        ("1m30s500ms", timedelta(seconds=90, milliseconds=500)),
        ("0s", timedelta(0)),
        (" 10S ", timedelta(seconds=10)),
    ],
)
def test_durations_accept_units_that_add_up(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "5x", "-1s", "1h 30m", "s", "1.s", "m5", "1h-30m"])
def test_durations_without_a_clear_unit_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration(text)


def test_times_need_an_offset_and_z_means_utc() -> None:
    assert parse_time("2030-01-02T03:04:05Z") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    parsed = parse_time("2030-01-02T05:04:05+02:00")
    assert parsed == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    with pytest.raises(argparse.ArgumentTypeError, match="no UTC offset"):
        parse_time("2030-01-02T03:04:05")
    with pytest.raises(argparse.ArgumentTypeError, match="invalid time"):
        parse_time("next tuesday")


def test_headers_split_on_the_first_equals_sign() -> None:
    assert parse_header("trace=a=b") == ("trace", "a=b")
    assert parse_header("empty=") == ("empty", "")
    for bad in ("novalue", "=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_header(bad)


def test_days_are_bounded() -> None:
    assert parse_days("90") == 90
    for bad in ("0", "3651", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_days(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=1, seconds=5), "1d5s"),
        (timedelta(0), "0ms"),
        (None, "-"),
    ],
)
def test_durations_print_in_the_syntax_the_cli_reads(value: timedelta | None, text: str) -> None:
    assert fmt_duration(value) == text
    if value is not None and value >= timedelta(seconds=1) and "." not in text:
        assert parse_duration(text) == value


def test_times_print_in_utc_and_relative_to_now() -> None:
    moment = datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert fmt_time(moment) == "2030-01-02 03:04:05 UTC"
    assert fmt_time(None) == "-"
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert ago(now + timedelta(minutes=5), now) == "in 5m"
    assert ago(now - timedelta(seconds=90), now) == "1m30s ago"
    assert ago(None, now) == "-"


def test_bytes_and_payloads_are_shortened_for_tables() -> None:
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert fmt_bytes(None) == "-"
    assert short_payload(b'{"a": 1}') == '{"a": 1}'
    assert short_payload(b"x" * 100, 10) == "xxxxxxx..."
    assert short_payload(b"\xff\x00") == "<2 bytes>"


def test_plain_tables_align_columns_under_upper_case_headers() -> None:
    out = io.StringIO()
    print_table(["queue", "size"], [["default", 12], ["q", 3]], plain=True, stream=out)
    assert out.getvalue().splitlines() == [
        "QUEUE    SIZE",
        "-------  ----",
        "default  12",
        "q        3",
    ]


def test_rich_tables_show_every_cell_even_when_piped() -> None:
    out = io.StringIO()
    long_id = "x" * 150
    print_table(["id", "state"], [[long_id, "pending"]], plain=False, stream=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["ID", "STATE"]
    assert lines[2].split() == [long_id, "pending"]


def test_key_values_align_and_indent_multi_line_values() -> None:
    out = io.StringIO()
    print_kv([("ID", "t1"), ("Last error", "boom\n  at line 3\n")], stream=out)
    assert out.getvalue().splitlines() == [
        "ID:         t1",
        "Last error: boom",
        "              at line 3",
    ]


def test_empty_tables_print_their_message() -> None:
    out = io.StringIO()
    print_table(["a"], [], empty="No queues.", plain=True, stream=out)
    assert out.getvalue() == "No queues.\n"


def test_json_renders_task_infos_with_exact_bytes_and_iso_times() -> None:
    message = TaskMessage(
        id="t1", type="x", payload=b"\xff", queue="q", timeout=1500, enqueued_at=1_000
    )
    info = TaskInfo.from_message(message, TaskState.PENDING, result=b"done")
    out = io.StringIO()
    print_json([info, GroupInfo("g", 2)], stream=out)
    task, group = json.loads(out.getvalue())
    assert (task["payload"], task["payload_base64"]) == (None, "/w==")
    assert (task["result"], task["result_base64"]) == ("done", "ZG9uZQ==")
    assert (task["state"], task["timeout"]) == ("pending", 1.5)
    assert task["enqueued_at"] == "1970-01-01T00:00:01Z"
    assert group == {"group": "g", "size": 2}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (QueueNotFoundError("q"), 3),
        (TaskNotFoundError("t"), 3),
        (TaskStateError("active"), 4),
        (QueueNotEmptyError("q"), 4),
        (DuplicateTaskError("dup"), 4),
        (InvalidDurationError("bad"), 2),
        (BrokerConnectionError("down"), 5),
        (TaskqError("other"), 1),
        (RuntimeError("bug"), 1),
    ],
)
def test_errors_map_to_documented_exit_codes(error: Exception, code: int) -> None:
    assert _exit_code(error) == code


def test_error_lines_are_single_and_mask_the_broker_password() -> None:
    url = "redis://user:s3cr%21t@host:6379/0"
    error = BrokerConnectionError(f"cannot reach {url}:\n  password s3cr!t refused")
    line = _one_line(error, url)
    assert "\n" not in line
    assert "s3cr" not in line
    assert "redis://user:***@host:6379/0" in line


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("taskq ")
    assert main(["task", "--help"]) == 0
    assert "deleteall" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--concurrency", "0"], "invalid number '0' (must be at least 1)"),
        (["--concurrency", "many"], "invalid number 'many' (expected an integer)"),
        (["--processes", "-2"], "invalid number '-2' (must be at least 1)"),
    ],
)
def test_worker_count_options_are_checked_like_every_other_number(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["worker", "app:mux", *args]) == 2
    assert expected in capsys.readouterr().err


def test_subcommands_from_other_parts_are_listed_even_when_unavailable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("worker", "scheduler", "enqueue", "queue", "task", "dash", "stats"):
        assert f"    {name}" in out
