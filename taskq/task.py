"""The task model: Task (built by users), TaskMessage (stored), TaskInfo (read back).

Times inside a :class:`TaskMessage` are integer milliseconds since the Unix
epoch (0 means "not set"); the user-facing classes use timezone-aware
datetimes and timedeltas. The stored encoding of a message is described byte
for byte in ``docs/wire-format.md``: versioned JSON, never pickle.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from taskq._time import ms_to_dt, ms_to_td
from taskq.errors import (
    InvalidArgumentError,
    InvalidQueueNameError,
    MessageDecodeError,
    PayloadTooLargeError,
    SchemaVersionError,
)

__all__ = [
    "DEFAULT_MAX_RETRY",
    "DEFAULT_QUEUE",
    "DEFAULT_TIMEOUT",
    "ENQUEUE_OPTIONS",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "WIRE_VERSION",
    "Task",
    "TaskInfo",
    "TaskMessage",
    "TaskState",
    "validate_group_name",
    "validate_queue_name",
    "validate_task_type",
]

DEFAULT_QUEUE = "default"
DEFAULT_MAX_RETRY = 25
DEFAULT_TIMEOUT = timedelta(minutes=30)
MAX_NAME_LENGTH = 255
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
MAX_ERROR_LENGTH = 4096
WIRE_VERSION = 1
ENQUEUE_OPTIONS = (
    "queue",
    "max_retry",
    "timeout",
    "deadline",
    "unique",
    "task_id",
    "retention",
    "group",
    "process_at",
    "process_in",
)
"""The enqueue options, as set on a :class:`Task` and as ``Client.enqueue`` keywords."""

_FORBIDDEN_NAME_CHARS = frozenset("{}") | frozenset(chr(c) for c in range(32)) | {"\x7f"}


class TaskState(str, enum.Enum):
    """The state of a stored task."""

    PENDING = "pending"
    ACTIVE = "active"
    SCHEDULED = "scheduled"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    AGGREGATING = "aggregating"

    def __str__(self) -> str:
        return self.value


_VALID_NAMES: set[str] = set()
"""Names that passed :func:`_check_name` (the rules are the same for every kind of name)."""
_VALID_NAMES_MAX = 4096


def _check_name(value: object, what: str, error: type[InvalidArgumentError]) -> str:
    # Most programs use a handful of task types and queues: remember the good ones.
    if type(value) is str and value in _VALID_NAMES:
        return value
    if not isinstance(value, str):
        raise error(f"{what} must be a str, got {type(value).__name__}")
    if not value or not value.strip():
        raise error(f"{what} must not be empty")
    if value != value.strip():
        raise error(f"{what} {value!r} must not start or end with whitespace")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
        raise error(f"{what} is longer than {MAX_NAME_LENGTH} bytes")
    bad = _FORBIDDEN_NAME_CHARS.intersection(value)
    if bad:
        shown = ", ".join(repr(c) for c in sorted(bad))
        raise error(f"{what} {value!r} contains forbidden characters: {shown}")
    if type(value) is str:
        if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
            _VALID_NAMES.clear()
        _VALID_NAMES.add(value)
    return value


def validate_queue_name(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name.

    A queue name is a non-empty str of at most 255 UTF-8 bytes with no control
    characters, no leading or trailing whitespace and no ``{`` or ``}`` (they
    would break Redis Cluster hash tags). Unicode, spaces inside, ``:`` and
    glob characters are allowed.

    Raises:
        InvalidQueueNameError: if it is not.
    """
    return _check_name(queue, "queue name", InvalidQueueNameError)


def validate_group_name(group: object) -> str:
    """Return ``group`` if it is a valid group name (same rules as queue names).

    Raises:
        InvalidArgumentError: if it is not.
    """
    return _check_name(group, "group name", InvalidArgumentError)


def validate_task_type(type_name: object) -> str:
    """Return ``type_name`` if it is a valid task type (same rules as queue names).

    Raises:
        InvalidArgumentError: if it is not.
    """
    return _check_name(type_name, "task type", InvalidArgumentError)


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if value is None or (type(value) is dict and not value):
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError("headers must be a mapping of str to str")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise InvalidArgumentError("headers must be a mapping of str to str")
    return dict(value)


def _payload(value: bytes | bytearray | memoryview) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentError(
        f"payload must be bytes, got {type(value).__name__} "
        "(encode it first, e.g. json.dumps(x).encode())"
    )


# Task, TaskMessage and TaskInfo (and brokers.base.EnqueueRequest) are frozen
# classes with a __dict__ rather than slots: attrs then builds an instance by
# writing its dict (1.0-1.4 us here) instead of calling object.__setattr__ per
# field (2.5-3.1 us), and batch paths can copy a prototype's fields. One of
# each is made per task enqueued, and a message per task dequeued.
@attrs.frozen(slots=False)
class Task:
    """A unit of work: a type name, an opaque byte payload and string headers.

    Enqueue options given here (queue, max_retry, ...) are defaults that the
    options given to :meth:`taskq.Client.enqueue` override.

    Args:
        type: the task type; the worker's :class:`taskq.ServeMux` routes on it.
        payload: opaque bytes for your own codec (JSON, msgpack, ...).
        headers: str -> str metadata carried with the task (tracing, tenancy).
    """

    type: str = attrs.field(validator=lambda _i, _a, v: validate_task_type(v))
    payload: bytes = attrs.field(default=b"", converter=_payload)
    headers: Mapping[str, str] = attrs.field(default=None, converter=_headers)
    queue: str | None = attrs.field(default=None, kw_only=True)
    max_retry: int | None = attrs.field(default=None, kw_only=True)
    timeout: timedelta | None = attrs.field(default=None, kw_only=True)
    deadline: datetime | None = attrs.field(default=None, kw_only=True)
    unique: timedelta | None = attrs.field(default=None, kw_only=True)
    task_id: str | None = attrs.field(default=None, kw_only=True)
    retention: timedelta | None = attrs.field(default=None, kw_only=True)
    group: str | None = attrs.field(default=None, kw_only=True)
    process_at: datetime | None = attrs.field(default=None, kw_only=True)
    process_in: timedelta | None = attrs.field(default=None, kw_only=True)

    def options(self) -> dict[str, Any]:
        """Return the enqueue options set on this task (those that are not None)."""
        return {n: getattr(self, n) for n in ENQUEUE_OPTIONS if getattr(self, n) is not None}


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# One encoder for every message: json.dumps() with options builds a new one per
# call. The output is the same as json.dumps(doc, separators=..., ensure_ascii=False);
# a message document holds no containers that could refer to themselves.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)

# A str as a JSON string literal, escaped as json.dumps(..., ensure_ascii=False) does.
_jstr: Callable[[str], str] = json.encoder.encode_basestring


@attrs.frozen(slots=False)
class TaskMessage:
    """The stored envelope of a task, as brokers keep it. Times are epoch ms; 0 = unset.

    ``timeout`` and ``retention`` are durations in ms. ``retried`` counts
    failed attempts so far; ``last_error`` is bounded to 4 KiB.
    """

    id: str
    type: str
    payload: bytes
    queue: str
    headers: Mapping[str, str] = attrs.field(factory=dict)
    max_retry: int = DEFAULT_MAX_RETRY
    retried: int = 0
    last_error: str = ""
    last_failed_at: int = 0
    timeout: int = 0
    deadline: int = 0
    unique_key: str = ""
    group: str = ""
    retention: int = 0
    enqueued_at: int = 0
    completed_at: int = 0

    def encode(self, *, addressed: bool = True) -> bytes:
        """Return the wire encoding (versioned JSON, see docs/wire-format.md).

        Args:
            addressed: include ``id`` and ``queue``. A broker that files each
                message under its queue and id (Redis: a hash field in a
                per-queue key) may store it without them, 60-odd bytes less per
                task, and pass them back to :meth:`decode`.

        Written field by field rather than through a dict and ``json``: the
        bytes are those of ``json.dumps(doc, separators=(",", ":"),
        ensure_ascii=False)`` (strings go through the json module's own C
        escaper), at a third of the cost, which matters when enqueueing in bulk.
        """
        if addressed:
            out = (
                f'{{"v":{WIRE_VERSION:d},"id":{_jstr(self.id)},"type":{_jstr(self.type)},'
                f'"queue":{_jstr(self.queue)},"payload":"{_b64(self.payload)}",'
                f'"max_retry":{self.max_retry:d}'
            )
        else:
            out = (
                f'{{"v":{WIRE_VERSION:d},"type":{_jstr(self.type)},'
                f'"payload":"{_b64(self.payload)}","max_retry":{self.max_retry:d}'
            )
        if self.headers:
            out += ',"headers":' + _JSON.encode(dict(self.headers))
        if self.retried:
            out += f',"retried":{self.retried:d}'
        if self.last_error:
            out += ',"last_error":' + _jstr(self.last_error)
        if self.last_failed_at:
            out += f',"last_failed_at":{self.last_failed_at:d}'
        if self.timeout:
            out += f',"timeout":{self.timeout:d}'
        if self.deadline:
            out += f',"deadline":{self.deadline:d}'
        if self.unique_key:
            out += ',"unique_key":' + _jstr(self.unique_key)
        if self.group:
            out += ',"group":' + _jstr(self.group)
        if self.retention:
            out += f',"retention":{self.retention:d}'
        if self.enqueued_at:
            out += f',"enqueued_at":{self.enqueued_at:d}'
        if self.completed_at:
            out += f',"completed_at":{self.completed_at:d}'
        return (out + "}").encode("utf-8")

    @classmethod
    def decode(
        cls, data: bytes | str, *, task_id: str | None = None, queue: str | None = None
    ) -> TaskMessage:
        """Decode a stored message.

        Args:
            data: the encoded message.
            task_id, queue: where the broker found it, for a message stored without
                them (``encode(addressed=False)``); when given they win over
                the message's own fields.

        Raises:
            SchemaVersionError: the message was written by a newer wire version.
            MessageDecodeError: the bytes are not a valid message.
        """
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageDecodeError(f"task message is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise MessageDecodeError("task message is not a JSON object")
        version = doc.get("v")
        if not isinstance(version, int):
            raise MessageDecodeError("task message has no wire version")
        if version > WIRE_VERSION:
            raise SchemaVersionError(
                f"task message has wire version {version}; this taskq reads up to {WIRE_VERSION}"
            )
        try:
            headers = doc.get("headers") or {}
            if not isinstance(headers, dict):
                raise TypeError("headers")
            return cls(
                id=task_id if task_id is not None else _req_str(doc, "id"),
                type=_req_str(doc, "type"),
                queue=queue if queue is not None else _req_str(doc, "queue"),
                payload=base64.b64decode(doc["payload"], validate=True),
                headers={str(k): str(v) for k, v in headers.items()},
                max_retry=int(doc.get("max_retry", DEFAULT_MAX_RETRY)),
                retried=int(doc.get("retried", 0)),
                last_error=str(doc.get("last_error", "")),
                last_failed_at=int(doc.get("last_failed_at", 0)),
                timeout=int(doc.get("timeout", 0)),
                deadline=int(doc.get("deadline", 0)),
                unique_key=str(doc.get("unique_key", "")),
                group=str(doc.get("group", "")),
                retention=int(doc.get("retention", 0)),
                enqueued_at=int(doc.get("enqueued_at", 0)),
                completed_at=int(doc.get("completed_at", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageDecodeError(f"task message is malformed: {exc!r}") from None

    def to_task(self) -> Task:
        """Return the :class:`Task` a handler receives for this message."""
        return Task(self.type, self.payload, self.headers)


def encode_unaddressed(messages: Iterable[TaskMessage]) -> list[bytes]:
    """``[m.encode(addressed=False) for m in messages]``, byte for byte, at about half the cost.

    Messages of one batch mostly differ only in id, queue and payload: the
    bytes around the payload are encoded once per run of messages that share
    every other field, and each payload is spliced in between. A message with
    headers is encoded on its own.
    """
    out: list[bytes] = []
    shape: tuple[object, ...] | None = None
    prefix: bytes | None = None
    suffix = b""
    b64 = binascii.b2a_base64
    for m in messages:
        if m.headers:
            out.append(m.encode(addressed=False))
            continue
        key = (
            m.type,
            m.max_retry,
            m.retried,
            m.last_error,
            m.last_failed_at,
            m.timeout,
            m.deadline,
            m.unique_key,
            m.group,
            m.retention,
            m.enqueued_at,
            m.completed_at,
        )
        if key != shape:
            # The first of a shape is encoded on its own (a batch of one pays
            # nothing extra); the bytes around the payload are cut out of it
            # when a second message of the same shape follows.
            shape, prefix = key, None
            out.append(m.encode(addressed=False))
            continue
        if prefix is None:
            # With an empty payload the field reads "payload":"" and its quotes
            # are the only unescaped ones of that text: every string is escaped.
            whole = attrs.evolve(m, payload=b"").encode(addressed=False)
            cut = whole.index(_PAYLOAD_FIELD) + len(_PAYLOAD_FIELD)
            prefix, suffix = whole[:cut], whole[cut:]
        out.append(prefix + b64(m.payload, newline=False) + suffix)
    return out


_PAYLOAD_FIELD = b'"payload":"'


def _req_str(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def truncate_error(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """Bound an error text to ``limit`` characters, keeping its tail (the most useful part)."""
    if len(text) <= limit:
        return text
    return "...[truncated]...\n" + text[-(limit - 18) :]


def check_payload_size(payload: bytes, limit: int = MAX_PAYLOAD_BYTES) -> None:
    """Raise :class:`PayloadTooLargeError` if ``payload`` is longer than ``limit``."""
    if len(payload) > limit:
        raise PayloadTooLargeError(f"payload is {len(payload)} bytes; the limit is {limit}")


@attrs.frozen(slots=False)
class TaskInfo:
    """What taskq knows about a stored task (returned by enqueue and the Inspector).

    Attributes:
        next_process_at: when a pending/scheduled/retry task is due (pending: now).
        is_orphaned: an active task whose lease has expired (worker presumed dead).
        result: bytes written with ``ctx.write_result`` (kept while retention lasts).
    """

    id: str
    queue: str
    type: str
    payload: bytes
    headers: Mapping[str, str]
    state: TaskState
    max_retry: int
    retried: int
    last_error: str
    last_failed_at: datetime | None
    timeout: timedelta | None
    deadline: datetime | None
    group: str | None
    next_process_at: datetime | None
    retention: timedelta | None
    enqueued_at: datetime | None
    completed_at: datetime | None
    result: bytes | None = None
    is_orphaned: bool = False

    @classmethod
    def from_message(
        cls,
        msg: TaskMessage,
        state: TaskState,
        *,
        next_process_at: int = 0,
        result: bytes | None = None,
        is_orphaned: bool = False,
    ) -> TaskInfo:
        """Build a TaskInfo from a stored message and what the broker knows beside it."""
        return cls(
            id=msg.id,
            queue=msg.queue,
            type=msg.type,
            payload=msg.payload,
            headers=dict(msg.headers),
            state=state,
            max_retry=msg.max_retry,
            retried=msg.retried,
            last_error=msg.last_error,
            last_failed_at=ms_to_dt(msg.last_failed_at) if msg.last_failed_at else None,
            timeout=ms_to_td(msg.timeout) if msg.timeout else None,
            deadline=ms_to_dt(msg.deadline) if msg.deadline else None,
            group=msg.group or None,
            next_process_at=ms_to_dt(next_process_at) if next_process_at else None,
            retention=ms_to_td(msg.retention) if msg.retention else None,
            enqueued_at=ms_to_dt(msg.enqueued_at) if msg.enqueued_at else None,
            completed_at=ms_to_dt(msg.completed_at) if msg.completed_at else None,
            result=result,
            is_orphaned=is_orphaned,
        )
