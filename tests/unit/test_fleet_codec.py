"""The JSON documents SQLite and Redis brokers store fleet state in (brokers._fleet_codec).

The documents below are what taskq already wrote to existing databases: they
must keep reading, and new writes must keep producing them field for field.
"""

from __future__ import annotations

import json

import attrs

from taskq.brokers._fleet_codec import (
    entry_from_doc,
    entry_to_doc,
    server_from_doc,
    server_to_doc,
)
from taskq.brokers.base import SchedulerEntryInfo, ServerInfo, WorkerInfo

STORED_SERVER = (
    '{"id":"srv-1","host":"h\\u00f4st","pid":12,"concurrency":3,'
    '"queues":{"default":2,"low":1},"strict_priority":true,"started_at":1700000000000,'
    '"status":"active","active_workers":[{"task_id":"t1","task_type":"email","queue":"default",'
    '"started_at":1,"deadline":2,"payload":"AP9wYXk="}]}'
)
SERVER = ServerInfo(
    id="srv-1",
    host="hôst",
    pid=12,
    concurrency=3,
    queues={"default": 2, "low": 1},
    strict_priority=True,
    started_at=1700000000000,
    status="active",
    active_workers=(WorkerInfo("t1", "email", "default", 1, 2, b"\x00\xffpay"),),
)
STORED_ENTRY = (
    '{"id":"e1","spec":"@every 1s","task_type":"report","payload":"AQ==",'
    '"options":{"queue":"default"},"next_enqueue_at":5,"prev_enqueue_at":4,"scheduler_id":"sch-1"}'
)
ENTRY = SchedulerEntryInfo(
    "e1", "@every 1s", "report", b"\x01", {"queue": "default"}, 5, 4, "sch-1"
)


def compact(doc: object) -> str:
    return json.dumps(doc, separators=(",", ":"))


def test_a_server_is_written_as_the_stored_document() -> None:
    assert compact(server_to_doc(SERVER)) == STORED_SERVER


def test_a_stored_server_document_reads_back_as_the_server() -> None:
    assert server_from_doc(json.loads(STORED_SERVER)) == SERVER


def test_a_server_document_without_workers_or_worker_payload_still_reads() -> None:
    doc = json.loads(STORED_SERVER)
    del doc["active_workers"][0]["payload"]
    assert server_from_doc(doc).active_workers[0].payload == b""
    del doc["active_workers"]
    assert server_from_doc(doc).active_workers == ()


def test_a_scheduler_entry_is_written_as_the_stored_document() -> None:
    assert compact(entry_to_doc(ENTRY)) == STORED_ENTRY


def test_a_stored_scheduler_entry_document_reads_back_as_the_entry() -> None:
    assert entry_from_doc(json.loads(STORED_ENTRY)) == ENTRY


def test_a_cut_off_worker_keeps_its_reason_and_others_are_written_as_before() -> None:
    cut = WorkerInfo("t2", "email", "default", 1, 2, b"", cut_off="timeout")
    server = attrs.evolve(SERVER, active_workers=(*SERVER.active_workers, cut))
    doc = server_to_doc(server)
    assert doc["active_workers"][1]["cut_off"] == "timeout"
    assert "cut_off" not in doc["active_workers"][0]  # unchanged for a running attempt
    assert server_from_doc(json.loads(compact(doc))) == server
