"""SQLiteBroker: the whole Broker protocol in one SQLite file, no server needed.

Several worker processes and clients may share one database file on one
machine. How it works, and why:

* **One connection, one thread.** Each broker owns one ``sqlite3`` connection
  used only by its own daemon thread. Coroutines submit a job and await a
  :class:`concurrent.futures.Future` wrapped for the *calling* loop, so the
  broker serves any number of event loops at once (a sync Client's private
  loop and a worker's loop) and never blocks any of them. After ``os.fork()``
  the child opens its own connection and thread on first use.
* **Atomic methods.** Every write runs in ``BEGIN IMMEDIATE`` (the file's one
  write lock is taken up front, so a transaction never fails half-way on a
  lock upgrade). When another process holds the lock, the transaction is
  retried with short jittered sleeps (finer than SQLite's own busy handler,
  whose back-off grows to 100 ms) until ``busy_timeout`` ms have passed; then
  :class:`~taskq.errors.BrokerTimeoutError`. WAL mode lets readers (the
  dashboard, the inspector) run next to a writer.
* **Group commit.** When several calls are queued on the broker thread at
  once (concurrent enqueues, a worker acking many handlers), they share one
  transaction, each in its own savepoint: each stays atomic (a failing call
  rolls back only its own writes) and its caller hears back only after the
  shared COMMIT. The commit is most of the cost of a small write.
* **Waking waiting workers.** A ``dequeue(wait=...)`` first looks for work; if
  none, it sleeps on a future. Writes made through the same broker object wake
  it at once (in-process notification). Writes from *other* connections are
  detected by the broker thread with ``PRAGMA data_version``, which changes
  exactly when another connection committed: a few microseconds of work, done
  only while somebody waits: every 2 ms for ``watch_interval`` ms after a
  check that saw a commit, then twice as long after each check that saw
  none, up to ``watch_interval`` ms (10 by default). That is bounded, cheap
  polling of a counter in shared memory, not a polling of the queue; an idle
  broker with nobody waiting does nothing at all. A wake-up that finds
  nothing (some other table changed) costs one read-only query and never
  takes the write lock.
* **Schema** is created on first use and versioned in the ``meta`` table; a
  file written by a newer taskq raises :class:`~taskq.errors.SchemaVersionError`
  instead of being misread.

Durability: ``synchronous=NORMAL`` (the default) survives any process crash,
``kill -9`` included; after a power loss or OS crash the last transactions
before it may be rolled back. Pass ``synchronous="FULL"`` to fsync every
commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import json
import logging
import os
import queue as queue_module
import random
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import date, timedelta
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote

import attrs

from taskq._time import Clock, SystemClock
from taskq.brokers._fleet_codec import entry_from_doc, entry_to_doc, server_from_doc, server_to_doc
from taskq.brokers.base import (
    Ack,
    DailyStats,
    Delivery,
    EnqueueRequest,
    GroupInfo,
    LeaseRef,
    QueueStats,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    trim_wanted,
)
from taskq.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerOutOfMemoryError,
    BrokerTimeoutError,
    DuplicateTaskError,
    InvalidArgumentError,
    LeaseLostError,
    MessageDecodeError,
    QueueNotEmptyError,
    QueueNotFoundError,
    SchemaVersionError,
    ServerClosedError,
    TaskIDConflictError,
    TaskNotFoundError,
    TaskStateError,
)
from taskq.task import (
    TaskInfo,
    TaskMessage,
    TaskState,
    check_payload_size,
    truncate_error,
    validate_queue_name,
)

__all__ = ["SCHEMA_VERSION", "SQLiteBroker"]

_T = TypeVar("_T")
_log = logging.getLogger("taskq.brokers.sqlite")

SCHEMA_VERSION: Final = 1
"""The version of the table layout this taskq writes (stored in ``meta``)."""

_DAY_MS = 86_400_000
_CANCELED = "canceled"
_CANCELLATION_KEEP_MS = 3_600_000
_MAX_PARAMS = 500
_BATCH_CHUNK = 1000
_COMPACT = (",", ":")  # json.dumps separators of the stored fleet documents
_MIN_SQLITE = (3, 24, 0)

_PENDING = TaskState.PENDING.value
_ACTIVE = TaskState.ACTIVE.value
_SCHEDULED = TaskState.SCHEDULED.value
_RETRY = TaskState.RETRY.value
_ARCHIVED = TaskState.ARCHIVED.value
_COMPLETED = TaskState.COMPLETED.value
_AGGREGATING = TaskState.AGGREGATING.value

# ``pos`` orders the tasks of one state: pending and active by arrival (a
# requeued task gets a position before the head), scheduled and retry by due
# time, archived and completed by time of entry, aggregating by time added to
# the group. ``due`` is the retention end of a completed task. ``seq`` (the
# rowid) breaks ties in insertion order.
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS queues (
        name TEXT PRIMARY KEY,
        paused INTEGER NOT NULL DEFAULT 0,
        processed_total INTEGER NOT NULL DEFAULT 0,
        failed_total INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS tasks (
        seq INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        id TEXT NOT NULL,
        state TEXT NOT NULL,
        pos INTEGER NOT NULL,
        due INTEGER NOT NULL DEFAULT 0,
        msg BLOB NOT NULL,
        grp TEXT NOT NULL DEFAULT '',
        set_id TEXT,
        unique_key TEXT NOT NULL DEFAULT '',
        token TEXT,
        lease_until INTEGER,
        pending_since INTEGER NOT NULL DEFAULT 0,
        cancel INTEGER NOT NULL DEFAULT 0,
        result BLOB,
        UNIQUE (queue, id)
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_order ON tasks (queue, state, pos)",
    "CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (queue, due) WHERE state = 'completed'",
    "CREATE INDEX IF NOT EXISTS tasks_group ON tasks (queue, grp, set_id, pos)"
    " WHERE state = 'aggregating'",
    """CREATE TABLE IF NOT EXISTS unique_locks (
        queue TEXT NOT NULL,
        key TEXT NOT NULL,
        task_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (queue, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS aggregation_sets (
        queue TEXT NOT NULL,
        set_id TEXT NOT NULL,
        grp TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (queue, set_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS daily_stats (
        queue TEXT NOT NULL,
        day INTEGER NOT NULL,
        processed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, day)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS cancellations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        task_id TEXT NOT NULL,
        requested_at INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS servers (
        id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS scheduler_entries (
        scheduler_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        info TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (scheduler_id, position)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS scheduler_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        entry_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        enqueued_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS scheduler_events_entry"
    " ON scheduler_events (entry_id, enqueued_at, seq)",
    """CREATE TABLE IF NOT EXISTS scheduler_claims (
        entry_id TEXT NOT NULL,
        tick INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (entry_id, tick)
    ) WITHOUT ROWID""",
)

_TASK_COLUMNS = "seq, id, state, pos, msg, set_id, lease_until, result, queue"


# --------------------------------------------------------------------------- errors


# Primary result codes (https://sqlite.org/rescode.html); sqlite3 exposes them
# as constants only from Python 3.11.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


def _error_code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    code = _error_code(exc)
    if code:
        return code in (_SQLITE_BUSY, _SQLITE_LOCKED)
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _translate(exc: sqlite3.Error, path: str) -> BrokerError:
    """Turn a driver error into taskq's error tree (the only place that knows sqlite3's)."""
    code = _error_code(exc)
    text = str(exc)
    detail = f"SQLite broker {path!r}: {text}"
    if _is_busy(exc):
        return BrokerTimeoutError(f"{detail} (another process held the write lock too long)")
    if code == _SQLITE_FULL or "disk is full" in text:
        return BrokerOutOfMemoryError(detail)
    if code in (_SQLITE_CANTOPEN, _SQLITE_IOERR, _SQLITE_NOTADB, _SQLITE_CORRUPT) or (
        "unable to open" in text or "not a database" in text or "malformed" in text
    ):
        return BrokerConnectionError(detail)
    return BrokerError(detail)


# --------------------------------------------------------------------------- encoding


def _load(raw: bytes, queue: str, task_id: str) -> TaskMessage:
    """Decode a stored message; an undecodable one becomes a readable placeholder.

    The placeholder carries the raw bytes as its payload and the reason as its
    error, so the inspector can show (and an operator delete) a corrupt task
    instead of failing the whole page.
    """
    try:
        return TaskMessage.decode(raw)
    except (MessageDecodeError, SchemaVersionError) as exc:
        return TaskMessage(
            id=task_id, type="", payload=bytes(raw), queue=queue, last_error=str(exc)
        )


_INSERT_TASK = (
    "INSERT INTO tasks (queue, id, state, pos, msg, grp, unique_key, pending_since)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
"""A new task's row, as :meth:`_Store._store` and :meth:`_Store._store_plain` write it."""


def _id_taken(task_id: str, queue: str) -> TaskIDConflictError:
    return TaskIDConflictError(f"task id {task_id!r} already exists in {queue!r}")


def _is_plain(req: EnqueueRequest, now: int) -> bool:
    """A request that :meth:`_Store._store` puts straight into pending, without a unique lock."""
    message = req.message
    if req.process_at > now or message.group:
        return False
    return not (req.unique_ttl > 0 and message.unique_key)


def _chunks(items: Sequence[_T], size: int = _MAX_PARAMS) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


# --------------------------------------------------------------------------- the store


class _Store:
    """Every protocol operation as a synchronous transaction on one connection.

    Used only from the broker's thread. Each public method is one transaction
    (or one read snapshot) and therefore atomic.
    """

    def __init__(self, path: str, clock: Clock, *, busy_timeout: int, synchronous: str) -> None:
        self.path = path
        self._clock = clock
        self._busy_timeout = busy_timeout / 1000
        self._tokens = itertools.count(1)
        self._token_prefix = os.urandom(6).hex() + "-"
        self._valid_names: set[str] = set()
        # Queues into which the last committed transaction made tasks pending,
        # and whether it requested a cancellation: the thread wakes local waiters.
        self.woken_queues: set[str] = set()
        self.cancel_woken = False
        self._in_group = False
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise BrokerError(
                f"the SQLite broker needs SQLite >= {'.'.join(map(str, _MIN_SQLITE))}, "
                f"this Python has {sqlite3.sqlite_version}"
            )
        self.conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        try:
            self._configure(synchronous)
            self._migrate()
        except BaseException:
            self.conn.close()
            raise
        self._data_version = self._read_data_version()

    # ------------------------------------------------------------ plumbing

    def _retrying(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` again while the file is locked by another connection, up to the timeout."""
        deadline = time.monotonic() + self._busy_timeout
        attempt = 0
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            attempt += 1
            time.sleep(min(0.002, 0.0001 * 2**attempt) * random.uniform(0.5, 1.5))

    def _configure(self, synchronous: str) -> None:
        conn = self.conn
        # Every statement that can meet a lock runs under _retrying, whose
        # sleeps stay short; SQLite's own handler backs off up to 100 ms.
        conn.execute("PRAGMA busy_timeout = 0")
        if self.path != ":memory:":
            mode = self._retrying(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            if str(mode[0]).lower() != "wal":
                _log.warning(
                    "SQLite broker %r: WAL mode unavailable (journal_mode=%s); "
                    "readers will block writers",
                    self.path,
                    mode[0],
                )
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA temp_store = MEMORY")

    def _migrate(self) -> None:
        def read_version() -> int | None:
            has_meta = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if not has_meta:
                return None
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            return int(row[0]) if row else None

        def create(now: int) -> None:
            version = read_version()
            if version is not None and version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"SQLite broker {self.path!r} has schema version {version}, written by a "
                    f"newer taskq; this taskq understands up to version {SCHEMA_VERSION}. "
                    "Upgrade taskq to use this file."
                )
            if version == SCHEMA_VERSION:
                return
            for statement in _SCHEMA:
                self.conn.execute(statement)
            self.conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

        version = self._retrying(read_version)
        if version == SCHEMA_VERSION:
            return
        self._write(create)

    def _read_data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_elsewhere(self) -> bool:
        """True if another connection committed since the last call."""
        version = self._read_data_version()
        if version == self._data_version:
            return False
        self._data_version = version
        return True

    def _write(self, fn: Callable[[int], _T]) -> _T:
        """Run ``fn(now)`` in one write transaction; nothing of it stays if it raises.

        Inside a group (see :meth:`begin_group`) it runs in a savepoint of the
        group's transaction instead.
        """
        conn = self.conn
        if self._in_group:
            conn.execute("SAVEPOINT job")
            try:
                result = fn(self._clock.now_ms())
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                raise
            conn.execute("RELEASE job")
            return result
        self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            result = fn(self._clock.now_ms())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.woken_queues.clear()
            self.cancel_woken = False
            raise
        return result

    def _read(self, fn: Callable[[int], _T]) -> _T:
        """Run ``fn(now)`` on one consistent snapshot."""
        conn = self.conn
        if self._in_group:
            return fn(self._clock.now_ms())

        def attempt() -> _T:
            conn.execute("BEGIN")
            try:
                return fn(self._clock.now_ms())
            finally:
                conn.execute("COMMIT")

        return self._retrying(attempt)

    def begin_group(self) -> None:
        """Start one transaction for several jobs (group commit): each job's
        :meth:`_write` becomes a savepoint, so each stays atomic on its own."""
        self._retrying(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        self._in_group = True

    def end_group(self, *, commit: bool) -> None:
        """Commit (or roll back) the group's transaction."""
        self._in_group = False
        if self.conn.in_transaction:
            self.conn.execute("COMMIT" if commit else "ROLLBACK")
        if not commit:
            self.woken_queues.clear()
            self.cancel_woken = False

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (false after SQLite aborted one on its own)."""
        return self.conn.in_transaction

    def close(self) -> None:
        self.conn.close()

    def _new_token(self) -> str:
        return f"{self._token_prefix}{next(self._tokens)}"

    def _register_queue(self, queue: str) -> None:
        if queue not in self._valid_names:
            validate_queue_name(queue)
            self._valid_names.add(queue)
        self.conn.execute("INSERT OR IGNORE INTO queues (name) VALUES (?)", (queue,))

    def _queue_row(self, queue: str) -> Any:
        row = self.conn.execute(
            "SELECT paused, processed_total, failed_total FROM queues WHERE name = ?", (queue,)
        ).fetchone()
        if row is None:
            raise QueueNotFoundError(f"queue {queue!r} does not exist")
        return row

    def _task_row(self, queue: str, task_id: str) -> Any:
        row = self.conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue = ? AND id = ?", (queue, task_id)
        ).fetchone()
        if row is None:
            raise TaskNotFoundError(f"no task {task_id!r} in queue {queue!r}")
        return row

    def _tail_pos(self, queue: str) -> int:
        row = self.conn.execute(
            "SELECT max(pos) FROM tasks WHERE queue = ? AND state = 'pending'", (queue,)
        ).fetchone()
        return (row[0] or 0) + 1

    def _head_pos(self, queue: str) -> int:
        row = self.conn.execute(
            "SELECT min(pos) FROM tasks WHERE queue = ? AND state = 'pending'", (queue,)
        ).fetchone()
        return (row[0] or 0) - 1

    def _make_pending(self, seq: int, queue: str, now: int, *, head: bool = False) -> None:
        pos = self._head_pos(queue) if head else self._tail_pos(queue)
        self.conn.execute(
            "UPDATE tasks SET state = 'pending', pos = ?, pending_since = ?, set_id = NULL,"
            " token = NULL, lease_until = NULL, cancel = 0, due = 0 WHERE seq = ?",
            (pos, now, seq),
        )
        self.woken_queues.add(queue)

    def _make_ready(self, seq: int, queue: str, group: str, now: int) -> str:
        """Make a task ready now: to its group if it has one, else pending."""
        if group:
            self.conn.execute(
                "UPDATE tasks SET state = 'aggregating', pos = ?, set_id = NULL, token = NULL,"
                " lease_until = NULL, cancel = 0, due = 0 WHERE seq = ?",
                (now, seq),
            )
            return _AGGREGATING
        self._make_pending(seq, queue, now)
        return _PENDING

    def _set_state(self, seq: int, state: str, pos: int, msg: TaskMessage | None = None) -> None:
        if msg is None:
            self.conn.execute(
                "UPDATE tasks SET state = ?, pos = ?, set_id = NULL, token = NULL,"
                " lease_until = NULL, cancel = 0 WHERE seq = ?",
                (state, pos, seq),
            )
        else:
            self.conn.execute(
                "UPDATE tasks SET state = ?, pos = ?, msg = ?, set_id = NULL, token = NULL,"
                " lease_until = NULL, cancel = 0 WHERE seq = ?",
                (state, pos, msg.encode(), seq),
            )

    def _release_lock(self, queue: str, unique_key: str, task_id: str) -> None:
        if unique_key:
            self.conn.execute(
                "DELETE FROM unique_locks WHERE queue = ? AND key = ? AND task_id = ?",
                (queue, unique_key, task_id),
            )

    def _release_lock_of(self, seq: int, queue: str, task_id: str) -> None:
        unique_key = self.conn.execute(
            "SELECT unique_key FROM tasks WHERE seq = ?", (seq,)
        ).fetchone()[0]
        self._release_lock(queue, unique_key, task_id)

    def _count(self, queue: str, now: int, processed: int, failed: int) -> None:
        self.conn.execute(
            "UPDATE queues SET processed_total = processed_total + ?,"
            " failed_total = failed_total + ? WHERE name = ?",
            (processed, failed, queue),
        )
        self.conn.execute(
            "INSERT INTO daily_stats (queue, day, processed, failed) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (queue, day) DO UPDATE SET processed = processed + excluded.processed,"
            " failed = failed + excluded.failed",
            (queue, now // _DAY_MS, processed, failed),
        )

    # ------------------------------------------------------------ producing

    def _store(
        self,
        message: TaskMessage,
        process_at: int,
        unique_ttl: int,
        now: int,
        *,
        pending: bool = False,
    ) -> str:
        queue = message.queue
        self._register_queue(queue)
        conn = self.conn
        if conn.execute(
            "SELECT 1 FROM tasks WHERE queue = ? AND id = ?", (queue, message.id)
        ).fetchone():
            raise _id_taken(message.id, queue)
        key = message.unique_key
        if unique_ttl > 0 and key:
            held = conn.execute(
                "SELECT task_id, expires_at FROM unique_locks WHERE queue = ? AND key = ?",
                (queue, key),
            ).fetchone()
            if held is not None and held[1] > now:
                raise DuplicateTaskError(f"unique lock {key!r} is held by task {held[0]!r}")
            conn.execute(
                "INSERT OR REPLACE INTO unique_locks (queue, key, task_id, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (queue, key, message.id, max(process_at, now) + unique_ttl),
            )
        if process_at > now:
            state, pos = _SCHEDULED, process_at
        elif message.group and not pending:
            state, pos = _AGGREGATING, now
        else:
            state, pos = _PENDING, self._tail_pos(queue)
            self.woken_queues.add(queue)
        conn.execute(
            _INSERT_TASK, (queue, message.id, state, pos, message.encode(), message.group, key, now)
        )
        return state

    def store(self, message: TaskMessage, process_at: int, unique_ttl: int) -> TaskState:
        return TaskState(self._write(lambda now: self._store(message, process_at, unique_ttl, now)))

    def store_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        out: list[TaskState | Exception] = []
        # One transaction per chunk keeps a huge batch from holding the write lock for long.
        for chunk in _chunks(requests, _BATCH_CHUNK):
            out += self._write(functools.partial(self._store_chunk, chunk))
        return out

    def _store_chunk(
        self, requests: Sequence[EnqueueRequest], now: int
    ) -> list[TaskState | Exception]:
        if all(_is_plain(req, now) for req in requests):
            return self._store_plain(requests, now)
        out: list[TaskState | Exception] = []
        for req in requests:
            try:
                state = self._store(req.message, req.process_at, req.unique_ttl, now)
            except (TaskIDConflictError, DuplicateTaskError) as exc:
                out.append(exc)
            else:
                out.append(TaskState(state))
        return out

    def _store_plain(
        self, requests: Sequence[EnqueueRequest], now: int
    ) -> list[TaskState | Exception]:
        """:meth:`_store_chunk` for requests that all go to pending (the common bulk load).

        The same checks and rows as :meth:`_store` task by task, with per
        queue one registration, one look-up of the ids already stored (in
        slices of ``_MAX_PARAMS``), one read of the tail position and one
        ``executemany`` instead of four statements per task. FIFO order holds:
        positions follow the requests' order.
        """
        conn = self.conn
        out: list[TaskState | Exception] = [TaskState.PENDING] * len(requests)
        by_queue: dict[str, list[int]] = {}
        for index, req in enumerate(requests):
            by_queue.setdefault(req.message.queue, []).append(index)
        for queue, indexes in by_queue.items():
            self._register_queue(queue)
            stored: set[str] = set()
            for part in _chunks([requests[i].message.id for i in indexes]):
                rows = conn.execute(
                    f"SELECT id FROM tasks WHERE queue = ? AND id IN ({_placeholders(len(part))})",
                    (queue, *part),
                )
                stored.update(row[0] for row in rows)
            pos = self._tail_pos(queue)
            new_rows = []
            for index in indexes:
                message = requests[index].message
                if message.id in stored:
                    out[index] = _id_taken(message.id, queue)
                    continue
                stored.add(message.id)  # a repeat later in the batch conflicts too
                row = (queue, message.id, _PENDING, pos, message.encode(), "")
                new_rows.append((*row, message.unique_key, now))
                pos += 1
            if new_rows:
                conn.executemany(_INSERT_TASK, new_rows)
                self.woken_queues.add(queue)
        return out

    # ------------------------------------------------------------ consuming

    def _open_queues(self, queues: Sequence[str]) -> list[str]:
        """The known, unpaused queues among ``queues`` that hold pending tasks, in order."""
        found = []
        for name in dict.fromkeys(queues):
            row = self.conn.execute(
                "SELECT 1 FROM queues WHERE name = ? AND paused = 0 AND EXISTS"
                " (SELECT 1 FROM tasks WHERE queue = ? AND state = 'pending')",
                (name, name),
            ).fetchone()
            if row:
                found.append(name)
        return found

    def dequeue(self, queues: Sequence[str], count: int, lease: int) -> list[Delivery]:
        # A read-only look first: an empty poll never takes the write lock.
        if count <= 0 or not self._retrying(lambda: self._open_queues(queues)):
            return []

        def op(now: int) -> list[Delivery]:
            out: list[Delivery] = []
            for name in self._open_queues(queues):
                rows = self.conn.execute(
                    "SELECT seq, id, msg, pending_since FROM tasks"
                    " WHERE queue = ? AND state = 'pending' ORDER BY pos LIMIT ?",
                    (name, count - len(out)),
                ).fetchall()
                out.extend(self._lease_rows(name, rows, now, lease))
                if len(out) >= count:
                    break
            return out

        return self._write(op)

    def _lease_rows(self, queue: str, rows: list[Any], now: int, lease: int) -> list[Delivery]:
        out: list[Delivery] = []
        updates = []
        for seq, task_id, raw, pending_since in rows:
            try:
                message = TaskMessage.decode(raw)
            except (MessageDecodeError, SchemaVersionError) as exc:
                # Never hand out (or loop on) a message nobody can read.
                _log.warning("archiving undecodable task %r in queue %r: %s", task_id, queue, exc)
                self._release_lock_of(seq, queue, task_id)
                self._set_state(seq, _ARCHIVED, now)
                continue
            token = self._new_token()
            updates.append((token, now + lease, seq))
            out.append(Delivery(message, token, now + lease, now, pending_since))
        self.conn.executemany(
            "UPDATE tasks SET state = 'active', token = ?, lease_until = ? WHERE seq = ?",
            updates,
        )
        return out

    def _fenced(self, ref: LeaseRef, now: int) -> Any:
        row = self.conn.execute(
            "SELECT seq, msg, unique_key, state, token, lease_until FROM tasks"
            " WHERE queue = ? AND id = ?",
            (ref.queue, ref.task_id),
        ).fetchone()
        if (
            row is None
            or row[3] != _ACTIVE
            or row[4] != ref.token
            or row[5] is None
            or row[5] <= now
        ):
            raise LeaseLostError(
                f"lease of task {ref.task_id!r} in {ref.queue!r} is stale or expired"
            )
        return row

    def extend_leases(self, refs: Sequence[LeaseRef], lease: int) -> list[bool]:
        def op(now: int) -> list[bool]:
            out = []
            for ref in refs:
                cursor = self.conn.execute(
                    "UPDATE tasks SET lease_until = ? WHERE queue = ? AND id = ?"
                    " AND state = 'active' AND token = ? AND lease_until > ?",
                    (now + lease, ref.queue, ref.task_id, ref.token, now),
                )
                out.append(cursor.rowcount == 1)
            return out

        return self._write(op)

    def _succeed(self, ref: LeaseRef, retention: int, now: int, *, keep: bool) -> None:
        seq, raw, unique_key, *_ = self._fenced(ref, now)
        self._release_lock(ref.queue, unique_key, ref.task_id)
        if keep:
            msg = attrs.evolve(TaskMessage.decode(raw), completed_at=now)
            self.conn.execute(
                "UPDATE tasks SET state = 'completed', pos = ?, due = ?, msg = ?, token = NULL,"
                " lease_until = NULL, cancel = 0 WHERE seq = ?",
                (now, now + max(retention, 0), msg.encode(), seq),
            )
        else:
            self.conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))

    def done(self, ref: LeaseRef, retention: int, keep: bool) -> None:
        def op(now: int) -> None:
            self._succeed(ref, retention, now, keep=keep)
            self._count(ref.queue, now, 1, 0)

        self._write(op)

    def done_many(self, acks: Sequence[Ack]) -> list[Exception | None]:
        def op(now: int) -> list[Exception | None]:
            out: list[Exception | None] = []
            counts: dict[str, int] = {}
            for ack in acks:
                try:
                    self._succeed(ack.ref, ack.retention, now, keep=ack.retention > 0)
                except LeaseLostError as exc:
                    out.append(exc)
                else:
                    out.append(None)
                    counts[ack.ref.queue] = counts.get(ack.ref.queue, 0) + 1
            for name, n in counts.items():
                self._count(name, now, n, 0)
            return out

        return self._write(op)

    def retry(self, ref: LeaseRef, delay: int, error: str, is_failure: bool) -> None:
        def op(now: int) -> None:
            seq, raw, *_ = self._fenced(ref, now)
            msg = TaskMessage.decode(raw)
            msg = attrs.evolve(
                msg,
                last_error=truncate_error(error),
                last_failed_at=now,
                retried=msg.retried + 1 if is_failure else msg.retried,
            )
            self._set_state(seq, _RETRY, now + max(delay, 0), msg)
            if is_failure:
                self._count(ref.queue, now, 1, 1)

        self._write(op)

    def archive(self, ref: LeaseRef, error: str, release_unique: bool) -> None:
        def op(now: int) -> None:
            seq, raw, unique_key, *_ = self._fenced(ref, now)
            if release_unique:
                self._release_lock(ref.queue, unique_key, ref.task_id)
            msg = attrs.evolve(
                TaskMessage.decode(raw), last_error=truncate_error(error), last_failed_at=now
            )
            self._set_state(seq, _ARCHIVED, now, msg)
            self._count(ref.queue, now, 1, 1)

        self._write(op)

    def requeue(self, ref: LeaseRef) -> None:
        def op(now: int) -> None:
            seq, *_ = self._fenced(ref, now)
            self._make_pending(seq, ref.queue, now, head=True)

        self._write(op)

    def requeue_lost(self, deliveries: Sequence[Delivery]) -> None:
        """Put back deliveries whose dequeue call was cancelled before the caller got them."""

        def op(now: int) -> None:
            for delivery in deliveries:
                with contextlib.suppress(LeaseLostError):
                    seq, *_ = self._fenced(delivery.ref, now)
                    self._make_pending(seq, delivery.message.queue, now, head=True)

        self._write(op)

    def write_result(self, ref: LeaseRef, data: bytes) -> None:
        def op(now: int) -> None:
            seq, *_ = self._fenced(ref, now)
            self.conn.execute("UPDATE tasks SET result = ? WHERE seq = ?", (data, seq))

        self._write(op)

    # ------------------------------------------------------------ time

    def forward(self, queue: str, limit: int) -> int:
        def op(now: int) -> int:
            # Due scheduled tasks first, then due retries, each by due time (as
            # the Redis and in-memory brokers, and asynq, do).
            wanted = max(limit, 0)  # SQLite's LIMIT -1 means no limit
            due: list[Any] = []
            for state in (_SCHEDULED, _RETRY):
                due += self.conn.execute(
                    "SELECT seq, grp FROM tasks WHERE queue = ? AND state = ? AND pos <= ?"
                    " ORDER BY pos, seq LIMIT ?",
                    (queue, state, now, wanted - len(due)),
                ).fetchall()
            for seq, group in due:
                self._make_ready(seq, queue, group, now)
            return len(due)

        return self._write(op)

    def _expired_rows(self, queue: str, now: int, limit: int) -> list[Any]:
        limit = max(limit, 0)  # SQLite's LIMIT -1 means no limit
        return self.conn.execute(
            "SELECT seq, id, msg, pending_since FROM tasks WHERE queue = ? AND state = 'active'"
            " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY pos LIMIT ?",
            (queue, now, limit),
        ).fetchall()

    def expired_leases(self, queue: str, limit: int) -> list[str]:
        return self._read(lambda now: [r[1] for r in self._expired_rows(queue, now, limit)])

    def reclaim_expired(self, queue: str, lease: int, limit: int) -> list[Delivery]:
        return self._write(
            lambda now: self._lease_rows(queue, self._expired_rows(queue, now, limit), now, lease)
        )

    def delete_expired_completed(self, queue: str, limit: int) -> int:
        def op(now: int) -> int:
            return self.conn.execute(
                "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE queue = ?"
                " AND state = 'completed' AND due <= ? ORDER BY due LIMIT ?)",
                (queue, now, max(limit, 0)),
            ).rowcount

        return self._write(op)

    def trim_archived(
        self, queue: str, max_size: int | None, max_age: int | None, limit: int
    ) -> int:
        def op(now: int) -> int:
            # Archived rows are ordered by (pos = archive time, seq): both bounds
            # cut a prefix of that order, so the longer prefix is what goes.
            count = 0
            if max_size is not None:
                (total,) = self.conn.execute(
                    "SELECT count(*) FROM tasks WHERE queue = ? AND state = 'archived'", (queue,)
                ).fetchone()
                count = min(max(total - max_size, 0), limit)
            if max_age is not None and count < limit:
                (old,) = self.conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE queue = ?"
                    " AND state = 'archived' AND pos <= ? LIMIT ?)",
                    (queue, now - max_age, limit),
                ).fetchone()
                count = max(count, old)
            if count <= 0:
                return 0
            rows = self.conn.execute(
                "SELECT seq, id, unique_key FROM tasks WHERE queue = ? AND state = 'archived'"
                " ORDER BY pos, seq LIMIT ?",
                (queue, count),
            ).fetchall()
            for seq, task_id, unique_key in rows:
                self._release_lock(queue, unique_key, task_id)
                self.conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))
            return len(rows)

        return self._write(op)

    # ------------------------------------------------------------ groups

    def groups(self, queue: str) -> list[GroupInfo]:
        rows = self._retrying(
            lambda: self.conn.execute(
                "SELECT grp, count(*) FROM tasks WHERE queue = ? AND state = 'aggregating'"
                " AND set_id IS NULL GROUP BY grp ORDER BY grp",
                (queue,),
            ).fetchall()
        )
        return [GroupInfo(group, size) for group, size in rows]

    def aggregation_check(
        self, queue: str, group: str, grace_period: int, max_delay: int, max_size: int
    ) -> str | None:
        def op(now: int) -> str | None:
            size, oldest, newest = self.conn.execute(
                "SELECT count(*), min(pos), max(pos) FROM tasks WHERE queue = ?"
                " AND state = 'aggregating' AND grp = ? AND set_id IS NULL",
                (queue, group),
            ).fetchone()
            if not size:
                return None
            ready = (
                (max_size > 0 and size >= max_size)
                or (max_delay > 0 and now - oldest >= max_delay)
                or now - newest >= grace_period
            )
            if not ready:
                return None
            set_id = uuid.uuid4().hex
            self.conn.execute(
                "UPDATE tasks SET set_id = ? WHERE seq IN (SELECT seq FROM tasks WHERE queue = ?"
                " AND state = 'aggregating' AND grp = ? AND set_id IS NULL"
                " ORDER BY pos, seq LIMIT ?)",
                (set_id, queue, group, max_size if max_size > 0 else -1),
            )
            self.conn.execute(
                "INSERT INTO aggregation_sets (queue, set_id, grp, created_at) VALUES (?, ?, ?, ?)",
                (queue, set_id, group, now),
            )
            return set_id

        return self._write(op)

    def _set_exists(self, queue: str, group: str, set_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM aggregation_sets WHERE queue = ? AND set_id = ? AND grp = ?",
            (queue, set_id, group),
        ).fetchone()
        return row is not None

    def read_aggregation_set(self, queue: str, group: str, set_id: str) -> list[TaskMessage]:
        def op(now: int) -> list[TaskMessage]:
            if not self._set_exists(queue, group, set_id):
                return []
            rows = self.conn.execute(
                "SELECT msg, id FROM tasks WHERE queue = ? AND state = 'aggregating' AND grp = ?"
                " AND set_id = ? ORDER BY pos, seq",
                (queue, group, set_id),
            ).fetchall()
            return [_load(raw, queue, task_id) for raw, task_id in rows]

        return self._read(op)

    def _drop_set(self, queue: str, set_id: str) -> None:
        rows = self.conn.execute(
            "SELECT seq, id, unique_key FROM tasks WHERE queue = ? AND set_id = ?",
            (queue, set_id),
        ).fetchall()
        for seq, task_id, unique_key in rows:
            self._release_lock(queue, unique_key, task_id)
            self.conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))
        self.conn.execute(
            "DELETE FROM aggregation_sets WHERE queue = ? AND set_id = ?", (queue, set_id)
        )

    def finish_aggregation(self, queue: str, group: str, set_id: str, message: TaskMessage) -> bool:
        def op(now: int) -> bool:
            if not self._set_exists(queue, group, set_id):
                return False
            row = self.conn.execute(
                "SELECT set_id FROM tasks WHERE queue = ? AND id = ?", (queue, message.id)
            ).fetchone()
            if row is not None and row[0] != set_id:
                raise _id_taken(message.id, queue)
            self._drop_set(queue, set_id)
            self._store(message, 0, 0, now, pending=True)
            return True

        return self._write(op)

    def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        def op(now: int) -> None:
            if self._set_exists(queue, group, set_id):
                self._drop_set(queue, set_id)

        self._write(op)

    def reclaim_stale_aggregation_sets(self, queue: str, older_than: int) -> int:
        def op(now: int) -> int:
            stale = self.conn.execute(
                "SELECT set_id FROM aggregation_sets WHERE queue = ? AND created_at < ?",
                (queue, now - older_than),
            ).fetchall()
            moved = 0
            for (set_id,) in stale:
                moved += self.conn.execute(
                    "UPDATE tasks SET set_id = NULL WHERE queue = ? AND set_id = ?",
                    (queue, set_id),
                ).rowcount
                self.conn.execute(
                    "DELETE FROM aggregation_sets WHERE queue = ? AND set_id = ?", (queue, set_id)
                )
            return moved

        return self._write(op)

    # ------------------------------------------------------------ cancellation

    def request_cancel(self, task_id: str, queue: str | None) -> TaskState | None:
        def op(now: int) -> TaskState | None:
            if queue is not None:
                names = [queue]
            else:
                names = [r[0] for r in self.conn.execute("SELECT name FROM queues ORDER BY name")]
            for name in names:
                row = self.conn.execute(
                    "SELECT seq, state, msg FROM tasks WHERE queue = ? AND id = ?", (name, task_id)
                ).fetchone()
                if row is None:
                    continue
                seq, state, raw = row
                if state == _ACTIVE:
                    self.conn.execute("UPDATE tasks SET cancel = 1 WHERE seq = ?", (seq,))
                    self.conn.execute(
                        "DELETE FROM cancellations WHERE requested_at < ?",
                        (now - _CANCELLATION_KEEP_MS,),
                    )
                    self.conn.execute(
                        "INSERT INTO cancellations (queue, task_id, requested_at) VALUES (?, ?, ?)",
                        (name, task_id, now),
                    )
                    self.cancel_woken = True
                elif state in (_PENDING, _SCHEDULED, _RETRY, _AGGREGATING):
                    msg = attrs.evolve(
                        _load(raw, name, task_id), last_error=_CANCELED, last_failed_at=now
                    )
                    self._release_lock_of(seq, name, task_id)
                    self._set_state(seq, _ARCHIVED, now, msg)
                return TaskState(state)
            return None

        return self._write(op)

    def cancel_requested(self, queue: str, task_ids: Sequence[str]) -> set[str]:
        def op(now: int) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(list(task_ids)):
                rows = self.conn.execute(
                    f"SELECT id FROM tasks WHERE queue = ? AND cancel = 1"
                    f" AND id IN ({_placeholders(len(chunk))})",
                    (queue, *chunk),
                )
                found.update(r[0] for r in rows)
            return found

        return self._read(op)

    def last_cancellation(self) -> int:
        row = self._retrying(
            lambda: self.conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'cancellations'"
            ).fetchone()
        )
        return int(row[0]) if row else 0

    def cancellations_after(self, last: int) -> list[tuple[int, str]]:
        return self._retrying(
            lambda: self.conn.execute(
                "SELECT id, task_id FROM cancellations WHERE id > ? ORDER BY id LIMIT 1000",
                (last,),
            ).fetchall()
        )

    # ------------------------------------------------------------ fleet

    def write_server_state(self, info: ServerInfo, ttl: int) -> None:
        def op(now: int) -> None:
            self.conn.execute("DELETE FROM servers WHERE expires_at <= ?", (now,))
            self.conn.execute(
                "INSERT OR REPLACE INTO servers (id, info, expires_at) VALUES (?, ?, ?)",
                (info.id, json.dumps(server_to_doc(info), separators=_COMPACT), now + ttl),
            )

        self._write(op)

    def clear_server_state(self, server_id: str) -> None:
        self._write(lambda now: self.conn.execute("DELETE FROM servers WHERE id = ?", (server_id,)))

    def servers(self) -> list[ServerInfo]:
        def op(now: int) -> list[ServerInfo]:
            rows = self.conn.execute(
                "SELECT info FROM servers WHERE expires_at > ? ORDER BY id", (now,)
            )
            return [server_from_doc(json.loads(r[0])) for r in rows]

        return self._read(op)

    def write_scheduler_entries(
        self, scheduler_id: str, entries: Sequence[SchedulerEntryInfo], ttl: int
    ) -> None:
        def op(now: int) -> None:
            self.conn.execute("DELETE FROM scheduler_entries WHERE expires_at <= ?", (now,))
            self.conn.execute(
                "DELETE FROM scheduler_entries WHERE scheduler_id = ?", (scheduler_id,)
            )
            self.conn.executemany(
                "INSERT INTO scheduler_entries (scheduler_id, position, info, expires_at)"
                " VALUES (?, ?, ?, ?)",
                [
                    (scheduler_id, i, json.dumps(entry_to_doc(e), separators=_COMPACT), now + ttl)
                    for i, e in enumerate(entries)
                ],
            )

        self._write(op)

    def clear_scheduler_entries(self, scheduler_id: str) -> None:
        self._write(
            lambda now: self.conn.execute(
                "DELETE FROM scheduler_entries WHERE scheduler_id = ?", (scheduler_id,)
            )
        )

    def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        def op(now: int) -> list[SchedulerEntryInfo]:
            rows = self.conn.execute(
                "SELECT info FROM scheduler_entries WHERE expires_at > ?"
                " ORDER BY scheduler_id, position",
                (now,),
            )
            return [entry_from_doc(json.loads(r[0])) for r in rows]

        return self._read(op)

    def record_scheduler_event(self, entry_id: str, event: SchedulerEvent, keep: int) -> None:
        def op(now: int) -> None:
            self.conn.execute(
                "INSERT INTO scheduler_events (entry_id, task_id, enqueued_at) VALUES (?, ?, ?)",
                (entry_id, event.task_id, event.enqueued_at),
            )
            cutoff = self.conn.execute(
                "SELECT enqueued_at, seq FROM scheduler_events WHERE entry_id = ?"
                " ORDER BY enqueued_at DESC, seq DESC LIMIT 1 OFFSET ?",
                (entry_id, max(keep, 0)),
            ).fetchone()
            if cutoff is not None:
                self.conn.execute(
                    "DELETE FROM scheduler_events WHERE entry_id = ? AND"
                    " (enqueued_at < ? OR (enqueued_at = ? AND seq <= ?))",
                    (entry_id, cutoff[0], cutoff[0], cutoff[1]),
                )

        self._write(op)

    def scheduler_events(self, entry_id: str, limit: int) -> list[SchedulerEvent]:
        rows = self._retrying(
            lambda: self.conn.execute(
                "SELECT task_id, enqueued_at FROM scheduler_events WHERE entry_id = ?"
                " ORDER BY enqueued_at DESC, seq DESC LIMIT ?",
                (entry_id, max(limit, 0)),
            ).fetchall()
        )
        return [SchedulerEvent(task_id, at) for task_id, at in rows]

    def claim_scheduler_tick(self, entry_id: str, tick: int, ttl: int) -> bool:
        def op(now: int) -> bool:
            self.conn.execute("DELETE FROM scheduler_claims WHERE expires_at <= ?", (now,))
            cursor = self.conn.execute(
                "INSERT OR IGNORE INTO scheduler_claims (entry_id, tick, expires_at)"
                " VALUES (?, ?, ?)",
                (entry_id, tick, now + ttl),
            )
            return cursor.rowcount == 1

        return self._write(op)

    def history(self, queue: str, days: int) -> list[DailyStats]:
        def op(now: int) -> list[DailyStats]:
            today = now // _DAY_MS
            rows = self.conn.execute(
                "SELECT day, processed, failed FROM daily_stats WHERE queue = ? AND day > ?",
                (queue, today - days),
            )
            counts = {day: (p, f) for day, p, f in rows}
            epoch = date(1970, 1, 1)
            return [
                DailyStats(queue, epoch + timedelta(days=day), *counts.get(day, (0, 0)))
                for day in range(today, today - max(days, 0), -1)
            ]

        return self._read(op)

    # ------------------------------------------------------------ admin

    def queues(self) -> list[str]:
        rows = self._retrying(
            lambda: self.conn.execute("SELECT name FROM queues ORDER BY name").fetchall()
        )
        return [r[0] for r in rows]

    def queue_stats(self, queue: str) -> QueueStats:
        def op(now: int) -> QueueStats:
            paused, processed_total, failed_total = self._queue_row(queue)
            counts = dict.fromkeys(s.value for s in TaskState)
            for state, n in self.conn.execute(
                "SELECT state, count(*) FROM tasks WHERE queue = ? GROUP BY state", (queue,)
            ):
                counts[state] = n
            groups = self.conn.execute(
                "SELECT count(DISTINCT grp) FROM tasks WHERE queue = ? AND state = 'aggregating'"
                " AND set_id IS NULL",
                (queue,),
            ).fetchone()[0]
            head = self.conn.execute(
                "SELECT pending_since FROM tasks WHERE queue = ? AND state = 'pending'"
                " ORDER BY pos LIMIT 1",
                (queue,),
            ).fetchone()
            today = self.conn.execute(
                "SELECT processed, failed FROM daily_stats WHERE queue = ? AND day = ?",
                (queue, now // _DAY_MS),
            ).fetchone() or (0, 0)
            n = {state: value or 0 for state, value in counts.items()}
            return QueueStats(
                queue=queue,
                size=sum(n.values()),
                pending=n[_PENDING],
                active=n[_ACTIVE],
                scheduled=n[_SCHEDULED],
                retry=n[_RETRY],
                archived=n[_ARCHIVED],
                completed=n[_COMPLETED],
                aggregating=n[_AGGREGATING],
                groups=groups,
                paused=bool(paused),
                latency=max(0, now - head[0]) if head else 0,
                processed=today[0],
                failed=today[1],
                processed_total=processed_total,
                failed_total=failed_total,
                timestamp=now,
            )

        return self._read(op)

    def _info(self, row: Any, now: int) -> TaskInfo:
        _, task_id, state, pos, raw, _, lease_until, result, queue = row
        next_at = now if state == _PENDING else pos if state in (_SCHEDULED, _RETRY) else 0
        orphaned = state == _ACTIVE and (lease_until is None or lease_until <= now)
        return TaskInfo.from_message(
            _load(raw, queue, task_id),
            TaskState(state),
            next_process_at=next_at,
            result=result,
            is_orphaned=orphaned,
        )

    def _rows_in(
        self, queue: str, state: str, group: str | None, offset: int, limit: int
    ) -> list[Any]:
        if state == _AGGREGATING and group is not None:
            return self.conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue = ? AND state = 'aggregating'"
                " AND grp = ? ORDER BY pos, seq LIMIT ? OFFSET ?",
                (queue, group, limit, offset),
            ).fetchall()
        return self.conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE queue = ? AND state = ?"
            " ORDER BY pos, seq LIMIT ? OFFSET ?",
            (queue, state, limit, offset),
        ).fetchall()

    def list_tasks(
        self, queue: str, state: TaskState, offset: int, limit: int, group: str | None
    ) -> list[TaskInfo]:
        def op(now: int) -> list[TaskInfo]:
            self._queue_row(queue)
            rows = self._rows_in(queue, state.value, group, offset, limit)
            return [self._info(row, now) for row in rows]

        return self._read(op)

    def get_task(self, queue: str, task_id: str) -> TaskInfo:
        def op(now: int) -> TaskInfo:
            self._queue_row(queue)
            return self._info(self._task_row(queue, task_id), now)

        return self._read(op)

    def _delete_row(self, row: Any) -> None:
        seq, task_id, state, *_, queue = row
        if state == _ACTIVE:
            raise TaskStateError(f"task {task_id!r} is active; it cannot be deleted")
        self._release_lock_of(seq, queue, task_id)
        self.conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))

    def _run_row(self, row: Any, now: int) -> None:
        seq, task_id, state, _, raw, *_, queue = row
        if state in (_PENDING, _ACTIVE):
            raise TaskStateError(f"task {task_id!r} is {state}; it cannot be run")
        msg: TaskMessage | None = None
        if state in (_ARCHIVED, _COMPLETED):
            try:
                msg = TaskMessage.decode(raw)
            except (MessageDecodeError, SchemaVersionError):
                msg = None  # kept byte for byte; a newer taskq may read it
            else:
                if state == _ARCHIVED:
                    msg = attrs.evolve(msg, retried=0, last_error="")
                else:
                    msg = attrs.evolve(msg, completed_at=0)
        if msg is not None:
            self.conn.execute("UPDATE tasks SET msg = ? WHERE seq = ?", (msg.encode(), seq))
        self._make_pending(seq, queue, now)

    def _archive_row(self, row: Any, now: int) -> None:
        seq, task_id, state, *_, queue = row
        if state in (_ACTIVE, _ARCHIVED, _COMPLETED):
            raise TaskStateError(f"task {task_id!r} is {state}; it cannot be archived")
        self._release_lock_of(seq, queue, task_id)
        self._set_state(seq, _ARCHIVED, now)

    def delete_task(self, queue: str, task_id: str) -> None:
        def op(now: int) -> None:
            self._queue_row(queue)
            self._delete_row(self._task_row(queue, task_id))

        self._write(op)

    def run_task(self, queue: str, task_id: str) -> None:
        def op(now: int) -> None:
            self._queue_row(queue)
            self._run_row(self._task_row(queue, task_id), now)

        self._write(op)

    def archive_task(self, queue: str, task_id: str) -> None:
        def op(now: int) -> None:
            self._queue_row(queue)
            self._archive_row(self._task_row(queue, task_id), now)

        self._write(op)

    def bulk(
        self,
        queue: str,
        state: TaskState,
        group: str | None,
        limit: int,
        action: str,
    ) -> int:
        allowed = {
            "delete": (_PENDING, _SCHEDULED, _RETRY, _ARCHIVED, _COMPLETED, _AGGREGATING),
            "run": (_SCHEDULED, _RETRY, _ARCHIVED, _COMPLETED, _AGGREGATING),
            "archive": (_PENDING, _SCHEDULED, _RETRY, _AGGREGATING),
        }[action]

        def op(now: int) -> int:
            self._queue_row(queue)
            if state.value not in allowed:
                raise TaskStateError(f"cannot {action} {state.value} tasks")
            rows = self._rows_in(queue, state.value, group, 0, max(limit, 0))
            for row in rows:
                if action == "delete":
                    self._delete_row(row)
                elif action == "run":
                    self._run_row(row, now)
                else:
                    self._archive_row(row, now)
            return len(rows)

        return self._write(op)

    def set_paused(self, queue: str, paused: bool) -> None:
        def op(now: int) -> None:
            self._queue_row(queue)
            self.conn.execute("UPDATE queues SET paused = ? WHERE name = ?", (int(paused), queue))
            if not paused:
                self.woken_queues.add(queue)

        self._write(op)

    def remove_queue(self, queue: str, force: bool) -> None:
        def op(now: int) -> None:
            self._queue_row(queue)
            total, active = self.conn.execute(
                "SELECT count(*), coalesce(sum(state = 'active'), 0) FROM tasks WHERE queue = ?",
                (queue,),
            ).fetchone()
            if active:
                raise QueueNotEmptyError(f"queue {queue!r} has {active} active tasks")
            if total and not force:
                raise QueueNotEmptyError(f"queue {queue!r} holds {total} tasks (use force=True)")
            for table in ("tasks", "unique_locks", "aggregation_sets", "daily_stats"):
                self.conn.execute(f"DELETE FROM {table} WHERE queue = ?", (queue,))
            self.conn.execute("DELETE FROM queues WHERE name = ?", (queue,))

        self._write(op)

    def ping(self) -> None:
        self._retrying(lambda: self.conn.execute("SELECT 1").fetchone())


# --------------------------------------------------------------------------- the thread


class _Waiter:
    """A coroutine on some event loop waiting for tasks or cancellations to arrive."""

    __slots__ = ("future", "loop", "queues")

    def __init__(self, queues: frozenset[str] | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()
        # None: wants cancellation news rather than tasks.
        self.queues = queues

    def wake(self) -> None:
        """Resolve the future from any thread (nothing if its loop is gone)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_INHERITED: list[Any] = []
"""Broker threads' objects inherited through ``fork()``: never closed by the child."""

_PEERS: weakref.WeakValueDictionary[int, _Worker] = weakref.WeakValueDictionary()
"""Live broker threads of this process, to wake waiters of other brokers on the same file."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_PEERS.clear)

_Job = tuple["concurrent.futures.Future[Any]", "Callable[[_Store], Any] | None"]
_Outcome = tuple[bool, Any]
_GROUP_MAX = 64


_WATCH_FLOOR = 0.002
"""Seconds between change checks for a while after another process committed."""


class _WatchPace:
    """How long the broker thread waits between checks for other processes' commits.

    For ``ceiling`` seconds after a check found a commit, 2 ms (or
    ``ceiling`` if smaller); then each check that finds none doubles the
    wait, up to ``ceiling`` (the broker's ``watch_interval``). While other
    processes write, a waiting worker hears of it within about 2 ms; on a
    quiet file the checks slow to one per ``ceiling`` within a few more.
    """

    __slots__ = ("ceiling", "interval", "last_change")

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.interval = ceiling
        self.last_change = -ceiling

    def checked(self, changed: bool, now: float) -> None:
        """Set the next wait after a check at ``now`` that found a commit (``changed``) or none."""
        if changed:
            self.last_change = now
        if now - self.last_change < self.ceiling:
            self.interval = min(_WATCH_FLOOR, self.ceiling)
        else:
            self.interval = min(self.interval * 2, self.ceiling)


class _Worker:
    """The one thread that owns the connection: runs jobs in order and watches for changes.

    A job whose function is None is the last one: it closes the connection
    and ends the thread. Nothing can be submitted after it.
    """

    def __init__(self, path: str, open_store: Callable[[], _Store], watch_interval: float) -> None:
        self._path = path
        self._open_store = open_store
        self._watch_interval = watch_interval
        self._jobs: queue_module.SimpleQueue[_Job] = queue_module.SimpleQueue()
        self._lock = threading.Lock()
        self._waiters: set[_Waiter] = set()
        self._store: _Store | None = None
        self.closed = False
        # The same file opened by two broker objects of one process (a Client
        # and a Server, say) wakes at once instead of at the next change check.
        self._file = os.path.realpath(path) if path != ":memory:" else None
        _PEERS[id(self)] = self
        self._thread = threading.Thread(target=self._main, name="taskq-sqlite", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[_Store], _T]) -> concurrent.futures.Future[_T]:
        """Queue ``fn(store)`` for the thread.

        Raises:
            ServerClosedError: the worker was stopped.
        """
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:
            if self.closed:
                raise ServerClosedError("the SQLite broker connection was closed")
            self._jobs.put((future, fn))
        return future

    def stop(self) -> concurrent.futures.Future[None]:
        """Finish the queued jobs, close the connection and end the thread."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self.closed = True
            self._jobs.put((future, None))
        return future

    def add_waiter(self, queues: frozenset[str] | None) -> _Waiter:
        """Register a waiter for tasks in ``queues`` (None: for cancellations)."""
        waiter = _Waiter(queues)
        with self._lock:
            self._waiters.add(waiter)
        return waiter

    def remove_waiter(self, waiter: _Waiter) -> None:
        """Forget a waiter (woken or not)."""
        with self._lock:
            self._waiters.discard(waiter)

    def _wake(self, select: Callable[[_Waiter], bool]) -> None:
        with self._lock:
            waiters = [w for w in self._waiters if select(w)]
        for waiter in waiters:
            waiter.wake()

    def _wake_local(self, store: _Store) -> None:
        queues, cancelled = store.woken_queues, store.cancel_woken
        if not queues and not cancelled:
            return
        store.woken_queues = set()
        store.cancel_woken = False

        def wanted(waiter: _Waiter) -> bool:
            return cancelled if waiter.queues is None else not waiter.queues.isdisjoint(queues)

        self._wake(wanted)
        if self._file is not None:
            for peer in list(_PEERS.values()):
                if peer is not self and peer._file == self._file:
                    peer._wake(wanted)

    def _main(self) -> None:
        last_check = 0.0
        pace = _WatchPace(self._watch_interval)
        while True:
            timeout = None
            if self._waiters:
                timeout = max(0.0, last_check + pace.interval - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue_module.Empty:
                pass
            else:
                batch = [job]
                while len(batch) < _GROUP_MAX and batch[-1][1] is not None:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except queue_module.Empty:
                        break
                stop = batch.pop() if batch[-1][1] is None else None
                self._run(batch)
                if stop is not None:
                    self._close()
                    stop[0].set_result(None)
                    return
            store = self._store
            now = time.monotonic()
            if store is not None and self._waiters and now - last_check >= pace.interval:
                last_check = now
                try:
                    changed = store.changed_elsewhere()
                except sqlite3.Error as exc:
                    _log.debug("SQLite broker change check failed: %s", exc)
                    changed = False
                pace.checked(changed, now)
                if changed:
                    self._wake(lambda w: True)

    def _outcome(self, store: _Store, fn: Callable[[_Store], Any]) -> _Outcome:
        try:
            return True, fn(store)
        except sqlite3.Error as exc:
            return False, _translate(exc, self._path)
        except BaseException as exc:
            return False, exc

    def _run(self, batch: list[_Job]) -> None:
        """Run queued jobs; several at once share one transaction (group commit).

        Each job is atomic on its own (a savepoint), and its caller learns the
        outcome only once the shared transaction committed.
        """
        jobs = [(f, fn) for f, fn in batch if fn is not None and f.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            if self._store is None:
                self._store = self._open_store()
            store = self._store
            if len(jobs) > 1:
                store.begin_group()
        except sqlite3.Error as exc:
            for future, _ in jobs:
                future.set_exception(_translate(exc, self._path))
            return
        except BaseException as exc:
            for future, _ in jobs:
                future.set_exception(exc)
            return
        if len(jobs) == 1:
            outcomes = [self._outcome(store, jobs[0][1])]
        else:
            outcomes = self._run_group(store, jobs)
        for (future, _), (ok, value) in zip(jobs, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._wake_local(store)

    def _run_group(self, store: _Store, jobs: list[tuple[Any, Any]]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for index, (_, fn) in enumerate(jobs):
            outcomes.append(self._outcome(store, fn))
            if not store.in_transaction:
                # SQLite aborted the whole transaction (e.g. disk full): the
                # jobs before lost their effect; the rest run one by one.
                store.end_group(commit=False)
                lost = BrokerError(f"SQLite broker {self._path!r}: transaction rolled back")
                outcomes = [(False, lost) if ok else (ok, v) for ok, v in outcomes]
                outcomes += [self._outcome(store, fn) for _, fn in jobs[index + 1 :]]
                return outcomes
        try:
            store.end_group(commit=True)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                store.end_group(commit=False)
            error = _translate(exc, self._path)
            outcomes = [(False, error) if ok else (ok, v) for ok, v in outcomes]
        return outcomes

    def _close(self) -> None:
        if self._store is not None:
            with contextlib.suppress(sqlite3.Error):
                self._store.close()
            self._store = None
        self._wake(lambda w: True)


# --------------------------------------------------------------------------- the broker


class _CancelSubscription:
    """Cancellation requests (task ids) from any process, read from the ``cancellations`` table."""

    def __init__(self, broker: SQLiteBroker, last_id: int) -> None:
        self._broker = broker
        self._last = last_id
        self._closed = False
        self._waiter: _Waiter | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        """Yield task ids as cancellations are requested, until :meth:`aclose`
        (or until the broker is closed)."""
        while not self._closed:
            worker = self._broker._worker_for_call()
            waiter = self._waiter = worker.add_waiter(None)
            try:
                try:
                    rows = await asyncio.wrap_future(
                        worker.submit(
                            functools.partial(_Store.cancellations_after, last=self._last)
                        )
                    )
                except ServerClosedError:
                    return
                if not rows and not self._closed:
                    await waiter.future
                    if worker.closed:
                        return
            finally:
                worker.remove_waiter(waiter)
                self._waiter = None
            for row_id, task_id in rows:
                if self._closed:
                    return
                self._last = row_id
                yield task_id

    async def aclose(self) -> None:
        """Stop listening; a running iteration ends."""
        self._closed = True
        if self._waiter is not None:
            self._waiter.wake()


class SQLiteBroker:
    """A complete :class:`~taskq.brokers.base.Broker` stored in one SQLite file.

    Durable, needs no server, and safe for several worker processes and
    clients on the same file at once (one machine; see ``docs/sqlite.md`` for
    its limits). Each method is one transaction; each broker object uses one
    connection on its own thread, so it never blocks an event loop.

    Args:
        path: the database file (created if missing), or ``":memory:"`` for a
            private in-memory database (tests).
        clock: the source of "now" for every stored time (default: the
            system clock). Waiting in :meth:`dequeue` always uses real time.
        busy_timeout: ms a transaction waits for another process's write
            lock before :class:`~taskq.errors.BrokerTimeoutError`.
        synchronous: ``"NORMAL"`` (survives process crashes) or ``"FULL"``
            (also power loss, at a cost per commit).
        watch_interval: the longest wait, in ms, between checks for commits
            by other processes while a dequeue or cancellation subscriber
            waits (every 2 ms for this long after a check that saw one,
            then doubling up to this).

    Raises:
        InvalidArgumentError: an invalid option.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Clock | None = None,
        busy_timeout: int = 5000,
        synchronous: str = "NORMAL",
        watch_interval: int = 10,
    ) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidArgumentError("SQLiteBroker needs a file path or ':memory:'")
        synchronous = str(synchronous).upper()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise InvalidArgumentError(
                f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}"
            )
        if busy_timeout < 0 or watch_interval <= 0:
            raise InvalidArgumentError("busy_timeout must be >= 0 and watch_interval > 0")
        self._path = path
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._watch_interval = watch_interval / 1000
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str) -> SQLiteBroker:
        """Build a broker from ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or
        ``sqlite://:memory:``.

        Query parameters ``busy_timeout`` (ms), ``synchronous`` and
        ``watch_interval`` (ms) set the options of the same name.

        Raises:
            InvalidArgumentError: the URL is not a valid sqlite URL.
        """
        if not isinstance(url, str) or not url.lower().startswith("sqlite://"):
            raise InvalidArgumentError("SQLite broker URLs look like sqlite:///path/to/file.db")
        rest = url[len("sqlite://") :]
        rest, _, query = rest.partition("?")
        if rest in (":memory:", "/:memory:"):
            path = ":memory:"
        elif rest.startswith("/") and len(rest) > 1:
            path = unquote(rest[1:])
        else:
            raise InvalidArgumentError(
                f"SQLite URL {url!r} has no path: use sqlite:///relative.db, "
                "sqlite:////absolute/path.db or sqlite://:memory:"
            )
        options: dict[str, Any] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key in ("busy_timeout", "watch_interval"):
                try:
                    options[key] = int(value)
                except ValueError:
                    raise InvalidArgumentError(
                        f"{key} in a SQLite URL must be an integer (ms), got {value!r}"
                    ) from None
            elif key == "synchronous":
                options[key] = value
            else:
                raise InvalidArgumentError(f"unknown SQLite URL option {key!r}")
        return cls(path, **options)

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteBroker({self._path!r})"

    # ------------------------------------------------------------ plumbing

    def _worker_for_call(self) -> _Worker:
        """The broker thread, started on first use (again after close or in a forked child)."""
        worker = self._worker
        if worker is not None and self._pid == os.getpid():
            return worker
        with self._lock:
            if self._worker is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    # A forked child must never close the parent's connection:
                    # keep the inherited objects alive and start afresh.
                    _INHERITED.append(self._worker)
                    self._pid = os.getpid()
                open_store = functools.partial(
                    _Store,
                    self._path,
                    self._clock,
                    busy_timeout=self._busy_timeout,
                    synchronous=self._synchronous,
                )
                worker = self._worker = _Worker(self._path, open_store, self._watch_interval)
                # A broker dropped without close() still stops its thread.
                self._finalizer = weakref.finalize(self, worker.stop)
            return self._worker

    def _submit(self, fn: Callable[[_Store], _T]) -> concurrent.futures.Future[_T]:
        try:
            return self._worker_for_call().submit(fn)
        except ServerClosedError:  # close() ran in another thread just now
            return self._worker_for_call().submit(fn)

    async def _call(self, fn: Callable[[_Store], _T]) -> _T:
        return await asyncio.wrap_future(self._submit(fn))

    # ------------------------------------------------------------ producing

    async def enqueue(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as pending (aggregating if it has a group).

        Raises:
            TaskIDConflictError: the id exists in the queue.
            DuplicateTaskError: the unique lock is held by another task.
        """
        return await self._call(lambda s: s.store(message, 0, unique_ttl))

    async def schedule(
        self, message: TaskMessage, process_at: int, *, unique_ttl: int = 0
    ) -> TaskState:
        """Store a new task as scheduled until ``process_at`` (as enqueue if not in the future).

        Raises:
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        return await self._call(lambda s: s.store(message, process_at, unique_ttl))

    async def add_to_group(self, message: TaskMessage, *, unique_ttl: int = 0) -> TaskState:
        """Store a new task as aggregating in ``message.group``.

        Raises:
            InvalidArgumentError: ``message.group`` is empty.
            TaskIDConflictError, DuplicateTaskError: as :meth:`enqueue`.
        """
        if not message.group:
            raise InvalidArgumentError("add_to_group needs a message with a group")
        return await self._call(lambda s: s.store(message, 0, unique_ttl))

    async def enqueue_many(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """Store many tasks in one transaction; per item the state or the refusal."""
        items = list(requests)
        if not items:
            return []
        return await self._call(lambda s: s.store_many(items))

    def enqueue_blocking(self, requests: Sequence[EnqueueRequest]) -> list[TaskState | Exception]:
        """:meth:`enqueue_many` from any thread, without an event loop (never None).

        The job goes straight to the broker thread and the caller waits for
        its future: one thread switch each way instead of two through an
        event loop.
        """
        items = list(requests)
        if not items:
            return []
        return self._submit(lambda s: s.store_many(items)).result()

    # ------------------------------------------------------------ consuming

    async def dequeue(
        self, queues: Sequence[str], *, count: int, lease: int, wait: int = 0
    ) -> list[Delivery]:
        """Lease up to ``count`` pending tasks, trying ``queues`` in order (one transaction).

        Waits up to ``wait`` ms of real time; an enqueue through this broker
        wakes it at once, one from another process within ``watch_interval``.
        """
        names = list(queues)
        if count <= 0 or not names:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait / 1000
        wanted = frozenset(names)
        while True:
            worker = self._worker_for_call()
            # Registered before looking, so an arrival during the look is not missed.
            waiter = worker.add_waiter(wanted) if wait > 0 else None
            try:
                try:
                    got = await self._dequeue_once(worker, names, count, lease)
                except ServerClosedError:
                    return []  # closed by another thread between our steps
                remaining = deadline - loop.time()
                if got or waiter is None or remaining <= 0:
                    return got
                try:
                    await asyncio.wait_for(waiter.future, remaining)
                except asyncio.TimeoutError:
                    return []
                if worker.closed:
                    return []  # the broker was closed while we waited
            finally:
                if waiter is not None:
                    worker.remove_waiter(waiter)

    async def _dequeue_once(
        self, worker: _Worker, names: list[str], count: int, lease: int
    ) -> list[Delivery]:
        future = worker.submit(lambda s: s.dequeue(names, count, lease))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The transaction may already have run: hand its tasks back rather
            # than leave them active until their lease expires.
            def give_back(done: concurrent.futures.Future[list[Delivery]]) -> None:
                if done.cancelled() or done.exception() is not None or not done.result():
                    return
                lost = done.result()
                with contextlib.suppress(ServerClosedError):  # then the leases expire instead
                    worker.submit(lambda s: s.requeue_lost(lost))

            future.add_done_callback(give_back)
            raise

    async def extend_leases(self, refs: Sequence[LeaseRef], *, lease: int) -> list[bool]:
        """Extend each still-held lease to ``lease`` ms from now; per ref whether it was held."""
        items = list(refs)
        if not items:
            return []
        return await self._call(lambda s: s.extend_leases(items, lease))

    async def done(self, ref: LeaseRef) -> None:
        """active -> deleted; releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._call(lambda s: s.done(ref, 0, False))

    async def complete(self, ref: LeaseRef, *, retention: int) -> None:
        """active -> completed for ``retention`` ms; releases the unique lock; counts processed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._call(lambda s: s.done(ref, retention, True))

    async def done_many(self, acks: Sequence[Ack]) -> list[Exception | None]:
        """Apply many done/complete outcomes in one transaction; per ack None or the error."""
        items = list(acks)
        if not items:
            return []
        return await self._call(lambda s: s.done_many(items))

    async def retry(
        self, ref: LeaseRef, *, delay: int, error: str, is_failure: bool = True
    ) -> None:
        """active -> retry, due ``delay`` ms from now (broker time); records the error.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._call(lambda s: s.retry(ref, delay, error, is_failure))

    async def archive(self, ref: LeaseRef, *, error: str, release_unique: bool = True) -> None:
        """active -> archived with ``error``; counts processed + failed.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._call(lambda s: s.archive(ref, error, release_unique))

    async def requeue(self, ref: LeaseRef) -> None:
        """active -> pending at the head, no retry spent.

        Raises:
            LeaseLostError: stale or expired token.
        """
        await self._call(lambda s: s.requeue(ref))

    async def write_result(self, ref: LeaseRef, data: bytes) -> None:
        """Store ``data`` as the task's result.

        Raises:
            LeaseLostError: stale or expired token.
            PayloadTooLargeError: ``data`` is over the payload size limit.
        """
        data = bytes(data)
        check_payload_size(data)
        await self._call(lambda s: s.write_result(ref, data))

    # ------------------------------------------------------------ time

    async def now(self) -> int:
        """The broker's clock, in epoch ms."""
        return self._clock.now_ms()

    async def forward(self, queue: str, *, limit: int = 1000) -> int:
        """Move up to ``limit`` due scheduled and retry tasks to pending (or their group)."""
        return await self._call(lambda s: s.forward(queue, limit))

    async def expired_leases(self, queue: str, *, limit: int = 100) -> list[str]:
        """Ids of active tasks whose lease expired (or that have none)."""
        return await self._call(lambda s: s.expired_leases(queue, limit))

    async def reclaim_expired(self, queue: str, *, lease: int, limit: int = 100) -> list[Delivery]:
        """Take over active tasks whose lease expired (or is missing) with fresh tokens."""
        return await self._call(lambda s: s.reclaim_expired(queue, lease, limit))

    async def delete_expired_completed(self, queue: str, *, limit: int = 100) -> int:
        """Delete up to ``limit`` completed tasks whose retention has ended."""
        return await self._call(lambda s: s.delete_expired_completed(queue, limit))

    async def trim_archived(
        self,
        queue: str,
        *,
        max_size: int | None,
        max_age: int | None,
        limit: int = 1000,
    ) -> int:
        """Delete the oldest archived tasks beyond ``max_size`` or ``max_age`` ms; how many.

        At most ``limit`` per call, in one transaction; each trimmed task goes
        with its row (message, result, group) and its unique lock if it still
        holds it.

        Raises:
            InvalidArgumentError: ``max_size`` or ``max_age`` is negative.
        """
        if not trim_wanted(max_size, max_age, limit):
            return 0
        return await self._call(lambda s: s.trim_archived(queue, max_size, max_age, limit))

    # ------------------------------------------------------------ groups

    async def groups(self, queue: str) -> list[GroupInfo]:
        """Groups of ``queue`` holding aggregating tasks (not yet in a set), sorted by name."""
        return await self._call(lambda s: s.groups(queue))

    async def aggregation_check(
        self,
        queue: str,
        group: str,
        *,
        grace_period: int,
        max_delay: int = 0,
        max_size: int = 0,
    ) -> str | None:
        """Move a ready group's oldest members (up to ``max_size``) into a new set; its id."""
        return await self._call(
            lambda s: s.aggregation_check(queue, group, grace_period, max_delay, max_size)
        )

    async def read_aggregation_set(self, queue: str, group: str, set_id: str) -> list[TaskMessage]:
        """Messages of an aggregation set, oldest first (empty when it is gone)."""
        return await self._call(lambda s: s.read_aggregation_set(queue, group, set_id))

    async def finish_aggregation(
        self, queue: str, group: str, set_id: str, message: TaskMessage
    ) -> bool:
        """Enqueue ``message`` as pending and delete the set with its members; False if gone.

        Raises:
            TaskIDConflictError: ``message.id`` exists in the queue.
        """
        return await self._call(lambda s: s.finish_aggregation(queue, group, set_id, message))

    async def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """Delete an aggregation set and its member tasks (no-op when it is gone)."""
        await self._call(lambda s: s.delete_aggregation_set(queue, group, set_id))

    async def reclaim_stale_aggregation_sets(self, queue: str, *, older_than: int) -> int:
        """Return members of sets older than ``older_than`` ms to their group; how many tasks."""
        return await self._call(lambda s: s.reclaim_stale_aggregation_sets(queue, older_than))

    # ------------------------------------------------------------ cancellation

    async def request_cancel(self, task_id: str, queue: str | None = None) -> TaskState | None:
        """Mark an active task cancelled (and notify), or archive one not yet started.

        Archiving releases the task's unique lock (if it still owns it).
        """
        return await self._call(lambda s: s.request_cancel(task_id, queue))

    async def cancel_requested(self, queue: str, task_ids: Sequence[str]) -> set[str]:
        """The ids among ``task_ids`` whose cancellation was requested while active."""
        items = list(task_ids)
        if not items:
            return set()
        return await self._call(lambda s: s.cancel_requested(queue, items))

    async def subscribe_cancellations(self) -> _CancelSubscription:
        """Subscribe to cancellation requests made from now on, by any process."""
        last = await self._call(lambda s: s.last_cancellation())
        return _CancelSubscription(self, last)

    # ------------------------------------------------------------ fleet

    async def write_server_state(self, info: ServerInfo, *, ttl: int) -> None:
        """Publish a server for ``ttl`` ms."""
        await self._call(lambda s: s.write_server_state(info, ttl))

    async def clear_server_state(self, server_id: str) -> None:
        """Remove a server's published state."""
        await self._call(lambda s: s.clear_server_state(server_id))

    async def servers(self) -> list[ServerInfo]:
        """Live servers, sorted by id."""
        return await self._call(lambda s: s.servers())

    async def write_scheduler_entries(
        self, scheduler_id: str, entries: Sequence[SchedulerEntryInfo], *, ttl: int
    ) -> None:
        """Publish a scheduler's entries for ``ttl`` ms (replacing its previous ones)."""
        items = list(entries)
        await self._call(lambda s: s.write_scheduler_entries(scheduler_id, items, ttl))

    async def clear_scheduler_entries(self, scheduler_id: str) -> None:
        """Remove a scheduler's published entries."""
        await self._call(lambda s: s.clear_scheduler_entries(scheduler_id))

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """Entries of every live scheduler (by scheduler id, then in published order)."""
        return await self._call(lambda s: s.scheduler_entries())

    async def record_scheduler_event(
        self, entry_id: str, event: SchedulerEvent, *, keep: int = 1000
    ) -> None:
        """Append to an entry's history, keeping the newest ``keep`` events."""
        await self._call(lambda s: s.record_scheduler_event(entry_id, event, keep))

    async def scheduler_events(self, entry_id: str, *, limit: int = 100) -> list[SchedulerEvent]:
        """An entry's history, newest first."""
        return await self._call(lambda s: s.scheduler_events(entry_id, limit))

    async def claim_scheduler_tick(self, entry_id: str, tick: int, *, ttl: int) -> bool:
        """True for exactly one caller (of any process) per (entry, tick) while the claim lives."""
        return await self._call(lambda s: s.claim_scheduler_tick(entry_id, tick, ttl))

    async def history(self, queue: str, days: int) -> list[DailyStats]:
        """Processed/failed counts of the last ``days`` UTC days (today first)."""
        return await self._call(lambda s: s.history(queue, days))

    # ------------------------------------------------------------ admin

    async def queues(self) -> list[str]:
        """Every known queue, sorted."""
        return await self._call(lambda s: s.queues())

    async def queue_stats(self, queue: str) -> QueueStats:
        """A snapshot of one queue.

        Raises:
            QueueNotFoundError: the queue is unknown.
        """
        return await self._call(lambda s: s.queue_stats(queue))

    async def list_tasks(
        self,
        queue: str,
        state: TaskState,
        *,
        offset: int = 0,
        limit: int = 30,
        group: str | None = None,
    ) -> list[TaskInfo]:
        """A page of tasks in ``state``, in the state's natural order.

        Raises:
            QueueNotFoundError: the queue is unknown.
            InvalidArgumentError: a negative offset or limit.
        """
        if offset < 0 or limit < 0:
            raise InvalidArgumentError("offset and limit must not be negative")
        state = TaskState(state)
        return await self._call(lambda s: s.list_tasks(queue, state, offset, limit, group))

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task in whatever state it is.

        Raises:
            QueueNotFoundError, TaskNotFoundError.
        """
        return await self._call(lambda s: s.get_task(queue, task_id))

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is not active; releases its unique lock.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active).
        """
        await self._call(lambda s: s.delete_task(queue, task_id))

    async def run_task(self, queue: str, task_id: str) -> None:
        """Move a scheduled, retry, archived, completed or aggregating task to pending.

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (pending or active).
        """
        await self._call(lambda s: s.run_task(queue, task_id))

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Move a pending, scheduled, retry or aggregating task to archived.

        Releases its unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError, TaskNotFoundError, TaskStateError (active, archived, completed).
        """
        await self._call(lambda s: s.archive_task(queue, task_id))

    async def delete_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Delete up to ``limit`` tasks in ``state``; how many.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active.
        """
        state = TaskState(state)
        return await self._call(lambda s: s.bulk(queue, state, group, limit, "delete"))

    async def run_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Run up to ``limit`` tasks in ``state`` as :meth:`run_task`; how many.

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is pending or active.
        """
        state = TaskState(state)
        return await self._call(lambda s: s.bulk(queue, state, group, limit, "run"))

    async def archive_all(
        self, queue: str, state: TaskState, *, group: str | None = None, limit: int = 1000
    ) -> int:
        """Archive up to ``limit`` tasks in ``state`` as :meth:`archive_task`; how many.

        Releases each task's unique lock (if the task still owns it).

        Raises:
            QueueNotFoundError; TaskStateError: ``state`` is active, archived or completed.
        """
        state = TaskState(state)
        return await self._call(lambda s: s.bulk(queue, state, group, limit, "archive"))

    async def pause_queue(self, queue: str) -> None:
        """Stop dequeuing from ``queue`` (in every process using the file).

        Raises:
            QueueNotFoundError.
        """
        await self._call(lambda s: s.set_paused(queue, True))

    async def unpause_queue(self, queue: str) -> None:
        """Resume dequeuing from ``queue``.

        Raises:
            QueueNotFoundError.
        """
        await self._call(lambda s: s.set_paused(queue, False))

    async def remove_queue(self, queue: str, *, force: bool = False) -> None:
        """Remove a queue with everything in it.

        Raises:
            QueueNotFoundError: unknown queue.
            QueueNotEmptyError: it holds tasks (without ``force``) or active tasks.
        """
        await self._call(lambda s: s.remove_queue(queue, force))

    # ------------------------------------------------------------ lifecycle

    async def ping(self) -> None:
        """Open the file (creating the schema) and run a trivial query.

        Raises:
            BrokerConnectionError: the file cannot be opened or is not a database.
            SchemaVersionError: the file was written by a newer taskq.
        """
        await self._call(lambda s: s.ping())

    async def close(self) -> None:
        """Close the connection and stop the thread; waiting dequeues return. Idempotent.

        The data stays in the file, and a later call opens a new connection,
        so a broker shared by a client and a worker survives either closing it.
        """
        with self._lock:
            worker, self._worker = self._worker, None
            finalizer, self._finalizer = self._finalizer, None
            if worker is not None and self._pid != os.getpid():
                _INHERITED.append(worker)
                worker = None
        if finalizer is not None:
            finalizer.detach()
        if worker is not None:
            await asyncio.wrap_future(worker.stop())
