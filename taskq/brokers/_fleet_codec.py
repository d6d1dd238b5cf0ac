"""The JSON documents in which brokers store fleet state (servers and scheduler entries).

The SQLite and Redis brokers both keep a server's published state and a
scheduler's entries as JSON text; this module is the one definition of those
documents, so both write the same fields in the same order and read them back
the same way. Only the document (a dict) is defined here: each broker
serializes it itself (SQLite with ``json.dumps``' ASCII escapes, Redis as
UTF-8) so that what they already stored keeps reading, byte for byte.

Reading is lenient where older documents may lack a field (a worker without
``payload``, a server without ``active_workers``) and coerces numbers and
mapping items to their declared types.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from taskq.brokers.base import SchedulerEntryInfo, ServerInfo, WorkerInfo

__all__ = ["entry_from_doc", "entry_to_doc", "server_from_doc", "server_to_doc"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def server_to_doc(info: ServerInfo) -> dict[str, Any]:
    """The JSON document of a server's state, its active workers included."""
    return {
        "id": info.id,
        "host": info.host,
        "pid": info.pid,
        "concurrency": info.concurrency,
        "queues": dict(info.queues),
        "strict_priority": info.strict_priority,
        "started_at": info.started_at,
        "status": info.status,
        "active_workers": [_worker_to_doc(w) for w in info.active_workers],
    }


def _worker_to_doc(w: WorkerInfo) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "task_id": w.task_id,
        "task_type": w.task_type,
        "queue": w.queue,
        "started_at": w.started_at,
        "deadline": w.deadline,
        "payload": _b64(w.payload),
    }
    if w.cut_off:
        doc["cut_off"] = w.cut_off
    return doc


def server_from_doc(doc: Mapping[str, Any]) -> ServerInfo:
    """The server state a :func:`server_to_doc` document describes.

    Raises:
        KeyError, TypeError, ValueError: the document is not one of ours.
    """
    workers = tuple(
        WorkerInfo(
            task_id=w["task_id"],
            task_type=w["task_type"],
            queue=w["queue"],
            started_at=int(w["started_at"]),
            deadline=int(w["deadline"]),
            payload=base64.b64decode(w.get("payload", "")),
            cut_off=str(w.get("cut_off", "")),
        )
        for w in doc.get("active_workers", [])
    )
    return ServerInfo(
        id=doc["id"],
        host=doc["host"],
        pid=int(doc["pid"]),
        concurrency=int(doc["concurrency"]),
        queues={str(k): int(v) for k, v in doc["queues"].items()},
        strict_priority=bool(doc["strict_priority"]),
        started_at=int(doc["started_at"]),
        status=doc["status"],
        active_workers=workers,
    )


def entry_to_doc(entry: SchedulerEntryInfo) -> dict[str, Any]:
    """The JSON document of one scheduler entry."""
    return {
        "id": entry.id,
        "spec": entry.spec,
        "task_type": entry.task_type,
        "payload": _b64(entry.payload),
        "options": dict(entry.options),
        "next_enqueue_at": entry.next_enqueue_at,
        "prev_enqueue_at": entry.prev_enqueue_at,
        "scheduler_id": entry.scheduler_id,
    }


def entry_from_doc(doc: Mapping[str, Any]) -> SchedulerEntryInfo:
    """The scheduler entry an :func:`entry_to_doc` document describes.

    Raises:
        KeyError, TypeError, ValueError: the document is not one of ours.
    """
    return SchedulerEntryInfo(
        id=doc["id"],
        spec=doc["spec"],
        task_type=doc["task_type"],
        payload=base64.b64decode(doc["payload"]),
        options={str(k): str(v) for k, v in doc["options"].items()},
        next_enqueue_at=int(doc["next_enqueue_at"]),
        prev_enqueue_at=int(doc["prev_enqueue_at"]),
        scheduler_id=doc["scheduler_id"],
    )
