"""The task model: validation, the wire encoding and TaskInfo."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings, strategies as st

import taskq.task
from taskq.errors import (
    InvalidArgumentError,
    InvalidQueueNameError,
    MessageDecodeError,
    SchemaVersionError,
)
from taskq.task import (
    ENQUEUE_OPTIONS,
    Task,
    TaskInfo,
    TaskMessage,
    TaskState,
    truncate_error,
    validate_group_name,
    validate_queue_name,
    validate_task_type,
)


def full_message() -> TaskMessage:
    return TaskMessage(
        id="id-1",
        type="email:welcome",
        payload=bytes(range(256)),
        queue="队列-🚀",
        headers={"traceparent": "00-abc", "tenant": "t1"},
        max_retry=7,
        retried=2,
        last_error="boom",
        last_failed_at=1_700_000_000_123,
        timeout=30_000,
        deadline=1_700_000_100_000,
        unique_key="q:t:abc",
        group="user1:email",
        retention=7_200_000,
        enqueued_at=1_700_000_000_000,
        completed_at=1_700_000_001_000,
    )


def test_message_round_trips_every_field_byte_exact() -> None:
    msg = full_message()
    assert TaskMessage.decode(msg.encode()) == msg


def test_minimal_message_omits_default_fields() -> None:
    msg = TaskMessage(id="a", type="t", payload=b"{}", queue="default", enqueued_at=5)
    doc = json.loads(msg.encode())
    assert doc == {
        "v": 1,
        "id": "a",
        "type": "t",
        "queue": "default",
        "payload": "e30=",
        "max_retry": 25,
        "enqueued_at": 5,
    }


def test_encoding_matches_the_documented_example() -> None:
    msg = TaskMessage(
        id="3f1c2a9e-6f0e-4f7a-9d0e-0b5d2c1e7a11",
        type="email:welcome",
        payload=b'{"user_id": 42}',
        queue="default",
        enqueued_at=1795716000000,
    )
    with open("docs/wire-format.md", encoding="utf-8") as f:
        doc = f.read()
    assert msg.encode().decode() in doc


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage",
        b"[1,2]",
        b'{"id":"a"}',
        b'{"v":1,"id":"a","type":"t","queue":"q","payload":"***"}',
        b'{"v":1,"id":1,"type":"t","queue":"q","payload":""}',
        b'{"v":"1","id":"a","type":"t","queue":"q","payload":""}',
        b"\xff\xfe",
    ],
)
def test_malformed_message_raises_decode_error(raw: bytes) -> None:
    with pytest.raises(MessageDecodeError):
        TaskMessage.decode(raw)


def test_newer_wire_version_raises_schema_version_error() -> None:
    raw = b'{"v":99,"id":"a","type":"t","queue":"q","payload":""}'
    with pytest.raises(SchemaVersionError, match="99"):
        TaskMessage.decode(raw)


@pytest.mark.parametrize(
    "name", ["default", "队列-🚀", "a:b", "with space", "*", "?", "[x]", "a" * 255]
)
def test_valid_queue_names_are_accepted(name: str) -> None:
    assert validate_queue_name(name) == name


@pytest.mark.parametrize(
    "name", ["", " ", " lead", "trail ", "{}", "a{b", "a}b", "nul\x00", "tab\tx", "a" * 256, 5]
)
def test_invalid_queue_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidQueueNameError):
        validate_queue_name(name)


def test_task_rejects_non_bytes_payload_and_bad_headers() -> None:
    with pytest.raises(InvalidArgumentError, match="payload must be bytes"):
        Task("t", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="headers"):
        Task("t", b"", {"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError, match="task type"):
        Task("", b"")


def test_task_is_frozen_and_copies_headers() -> None:
    headers = {"a": "1"}
    task = Task("t", bytearray(b"x"), headers)  # type: ignore[arg-type]
    headers["a"] = "2"
    assert task.payload == b"x"
    assert task.headers == {"a": "1"}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.type = "u"  # type: ignore[misc]


def test_task_options_lists_only_the_options_set() -> None:
    task = Task("t", b"", queue="high", max_retry=3)
    assert task.options() == {"queue": "high", "max_retry": 3}


def test_enqueue_options_are_exactly_the_task_option_fields() -> None:
    fields = {f.name for f in attrs.fields(Task) if f.kw_only}
    assert set(ENQUEUE_OPTIONS) == fields
    assert len(ENQUEUE_OPTIONS) == len(fields)


def test_task_info_converts_milliseconds_to_aware_datetimes() -> None:
    info = TaskInfo.from_message(full_message(), TaskState.RETRY, next_process_at=1_700_000_200_000)
    assert info.state is TaskState.RETRY
    assert info.timeout == timedelta(seconds=30)
    assert info.retention == timedelta(hours=2)
    assert info.deadline == datetime.fromtimestamp(1_700_000_100, timezone.utc)
    assert info.last_failed_at is not None and info.last_failed_at.tzinfo is not None
    assert info.next_process_at == datetime.fromtimestamp(1_700_000_200, timezone.utc)
    assert info.group == "user1:email"


def test_unset_times_are_none_in_task_info() -> None:
    msg = TaskMessage(id="a", type="t", payload=b"", queue="q")
    info = TaskInfo.from_message(msg, TaskState.PENDING)
    assert info.timeout is None and info.deadline is None and info.completed_at is None
    assert info.group is None


def test_truncate_error_keeps_the_tail_within_the_limit() -> None:
    text = "head" + "x" * 10_000 + "TAIL"
    out = truncate_error(text)
    assert len(out) <= 4096
    assert out.endswith("TAIL")
    assert truncate_error("short") == "short"


def test_task_state_values_are_the_documented_names() -> None:
    assert [s.value for s in TaskState] == [
        "pending",
        "active",
        "scheduled",
        "retry",
        "archived",
        "completed",
        "aggregating",
    ]


def test_name_checks_give_the_same_answer_every_time() -> None:
    for _ in range(2):
        assert validate_queue_name("mail") == "mail"
        assert validate_task_type("mail") == "mail"
        with pytest.raises(InvalidQueueNameError):
            validate_queue_name("bad{name}")
        with pytest.raises(InvalidArgumentError):
            validate_group_name(" padded")


def test_remembered_valid_names_stay_bounded() -> None:
    for i in range(taskq.task._VALID_NAMES_MAX + 10):
        validate_queue_name(f"queue-{i}")
    assert len(taskq.task._VALID_NAMES) <= taskq.task._VALID_NAMES_MAX


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    ident=_TEXT.filter(bool),
    task_type=_TEXT.filter(bool),
    queue=_TEXT.filter(bool),
    payload=st.binary(max_size=64),
    headers=st.dictionaries(_TEXT, _TEXT, max_size=3),
    numbers=st.lists(st.integers(min_value=0, max_value=2**53), min_size=8, max_size=8),
    strings=st.lists(_TEXT, min_size=3, max_size=3),
)
def test_encoding_is_byte_for_byte_the_documented_json(
    ident: str,
    task_type: str,
    queue: str,
    payload: bytes,
    headers: dict[str, str],
    numbers: list[int],
    strings: list[str],
) -> None:
    # encode() writes the JSON itself (for speed); it must equal json.dumps of
    # the documented document: compact separators, non-ASCII as itself, keys in
    # the table's order, default-valued optional keys omitted.
    msg = TaskMessage(
        id=ident,
        type=task_type,
        queue=queue,
        payload=payload,
        headers=headers,
        max_retry=numbers[0],
        retried=numbers[1],
        last_error=strings[0],
        last_failed_at=numbers[2],
        timeout=numbers[3],
        deadline=numbers[4],
        unique_key=strings[1],
        group=strings[2],
        retention=numbers[5],
        enqueued_at=numbers[6],
        completed_at=numbers[7],
    )
    doc: dict[str, object] = {
        "v": 1,
        "id": ident,
        "type": task_type,
        "queue": queue,
        "payload": base64.b64encode(payload).decode(),
        "max_retry": numbers[0],
    }
    optional: dict[str, object] = {
        "headers": headers,
        "retried": numbers[1],
        "last_error": strings[0],
        "last_failed_at": numbers[2],
        "timeout": numbers[3],
        "deadline": numbers[4],
        "unique_key": strings[1],
        "group": strings[2],
        "retention": numbers[5],
        "enqueued_at": numbers[6],
        "completed_at": numbers[7],
    }
    doc.update({k: v for k, v in optional.items() if v})
    expected = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert msg.encode() == expected
    assert TaskMessage.decode(expected) == msg


def test_an_unaddressed_message_leaves_out_id_and_queue_and_takes_them_back() -> None:
    msg = full_message()
    bare = msg.encode(addressed=False)
    doc = json.loads(bare)
    assert "id" not in doc and "queue" not in doc
    assert doc == {k: v for k, v in json.loads(msg.encode()).items() if k not in ("id", "queue")}
    assert TaskMessage.decode(bare, task_id=msg.id, queue=msg.queue) == msg
    with pytest.raises(MessageDecodeError):
        TaskMessage.decode(bare)  # nowhere to take the id from


def test_the_address_a_broker_gives_wins_over_the_messages_own() -> None:
    msg = full_message()
    moved = TaskMessage.decode(msg.encode(), task_id="other", queue="elsewhere")
    assert (moved.id, moved.queue) == ("other", "elsewhere")
    assert attrs.evolve(moved, id=msg.id, queue=msg.queue) == msg


_SHAPE = st.fixed_dictionaries(
    {
        "type": _TEXT.filter(bool),
        "max_retry": st.integers(min_value=0, max_value=30),
        "retried": st.sampled_from([0, 2]),
        "last_error": st.sampled_from(["", 'boom "quoted" \\ \u00e9']),
        "timeout": st.sampled_from([0, 30_000]),
        "unique_key": st.sampled_from(["", 'q:t:"payload":"x']),
        "group": st.sampled_from(["", "g"]),
        "enqueued_at": st.sampled_from([0, 1_795_694_400_000]),
        "headers": st.sampled_from([{}, {"trace": "x"}]),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    shapes=st.lists(_SHAPE, min_size=1, max_size=3),
    tasks=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2), st.binary(max_size=40)), max_size=12
    ),
)
def test_a_batch_encodes_each_message_as_encode_does(
    shapes: list[dict[str, object]], tasks: list[tuple[int, bytes]]
) -> None:
    # encode_unaddressed reuses the bytes around the payload while the other
    # fields stay the same; runs of equal shapes, changes of shape, headers
    # and strings that look like the payload field must all come out as
    # encode(addressed=False) would write them.
    messages = [
        TaskMessage(id=f"id{i}", queue="q", payload=payload, **shapes[k % len(shapes)])  # type: ignore[arg-type]
        for i, (k, payload) in enumerate(tasks)
    ]
    assert taskq.task.encode_unaddressed(messages) == [m.encode(addressed=False) for m in messages]


@pytest.mark.parametrize(
    "field",
    [f.name for f in attrs.fields(TaskMessage) if f.name not in ("id", "queue", "payload")],
)
def test_a_batch_notices_a_change_in_any_one_field(field: str) -> None:
    first = TaskMessage(id="a", type="t", queue="q", payload=b"1", enqueued_at=5)
    changed = {
        "type": "u",
        "headers": {"k": "v"},
        "max_retry": 3,
        "retried": 1,
        "last_error": "e",
        "last_failed_at": 9,
        "timeout": 7,
        "deadline": 8,
        "unique_key": "k",
        "group": "g",
        "retention": 6,
        "enqueued_at": 4,
        "completed_at": 3,
    }
    second = attrs.evolve(first, id="b", payload=b"2", **{field: changed[field]})
    batch = [first, second, first]
    assert taskq.task.encode_unaddressed(batch) == [m.encode(addressed=False) for m in batch]
