"""The web dashboard (taskq.web) on the in-memory broker, through Starlette's TestClient."""

from __future__ import annotations

import ast
import asyncio
import importlib
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import taskq
from taskq.brokers import registry
from taskq.brokers.base import (
    Broker,
    SchedulerEntryInfo,
    SchedulerEvent,
    ServerInfo,
    WorkerInfo,
)
from taskq.brokers.memory import InMemoryBroker
from taskq.errors import BrokerConnectionError, InvalidArgumentError
from taskq.task import TaskMessage, TaskState
from taskq.web import PasswordAuth, create_app
from taskq.web._security import SECURITY_HEADERS, SESSION_COOKIE
from tests.unit.test_inspector import HOUR_MS, msg, populate

T = TypeVar("T")
XSS = "<script>alert(1)</script>"
PASSWORD = "correct horse battery staple"
STATES = [s.value for s in TaskState]


def run(broker: Broker, work: Callable[[Broker], Awaitable[T]]) -> T:
    return asyncio.run(work(broker))


def counts(broker: Broker, queue: str = "q") -> dict[str, int]:
    async def read(b: Broker) -> dict[str, int]:
        stats = await b.queue_stats(queue)
        return {s: getattr(stats, s) for s in STATES} | {"paused": int(stats.paused)}

    return run(broker, read)


def state_of(broker: Broker, task_id: str, queue: str = "q") -> TaskState:
    async def read(b: Broker) -> TaskState:
        return (await b.get_task(queue, task_id)).state

    return run(broker, read)


@pytest.fixture
def broker() -> InMemoryBroker:
    b = InMemoryBroker()
    run(b, populate)
    return b


@pytest.fixture
def client(broker: InMemoryBroker) -> Iterator[TestClient]:
    with TestClient(create_app(broker)) as c:
        yield c


def csrf(client: TestClient, prefix: str = "") -> str:
    token = client.get(f"{prefix}/api/session").json()["csrf_token"]
    assert isinstance(token, str) and token
    return token


def post(client: TestClient, path: str, prefix: str = "", **fields: Any) -> Any:
    """POST a form as the dashboard's own pages do (with the session's CSRF token)."""
    data = {"csrf_token": csrf(client, prefix), **fields}
    path = prefix + path
    return client.post(path, data=data, follow_redirects=False)


def api_post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers={"X-CSRF-Token": csrf(client)})


# --------------------------------------------------------------------------- pages


def test_dashboard_lists_every_queue_with_its_size_by_state(
    broker: InMemoryBroker, client: TestClient
) -> None:
    run(broker, lambda b: b.enqueue(msg("o1", "other")))
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    for name in ("q", "other"):
        assert f'href="/queue?queue={name}"' in page.text
    row = page.text.split('href="/queue?queue=q"', 1)[1].split("</tr>", 1)[0]
    numbers = re.findall(r">(\d+)</a>", row)
    assert numbers == ["2", "1", "1", "1", "1", "1", "2"]  # pending ... aggregating
    assert "processed today" in page.text and "Latency" in page.text and "Memory" in page.text


def test_queue_page_has_one_tab_per_state_listing_that_states_tasks(client: TestClient) -> None:
    expected = {
        "pending": ["p1", "p2"],
        "active": ["a1"],
        "scheduled": ["s1"],
        "retry": ["r1"],
        "archived": ["x1"],
        "completed": ["c1"],
        "aggregating": ["g1", "g2"],
    }
    for state, ids in expected.items():
        page = client.get("/queue", params={"queue": "q", "state": state})
        assert page.status_code == 200, page.text
        for s in STATES:
            assert f"state={s}" in page.text
        listed = re.findall(r'href="/task\?queue=q&amp;id=([^"]+)"', page.text)
        assert listed == ids, state
    retry = client.get("/queue", params={"queue": "q", "state": "retry"}).text
    assert "boom" in retry and "1/3" in retry


def test_queue_page_pages_through_tasks(broker: InMemoryBroker, client: TestClient) -> None:
    async def many(b: Broker) -> None:
        for i in range(5):
            await b.enqueue(msg(f"m{i}", "big"))

    run(broker, many)
    first = client.get("/queue", params={"queue": "big", "size": 2}).text
    assert re.findall(r"id=(m\d)", first) == ["m0", "m1"]
    assert "page=2" in first and "Next →" in first
    last = client.get("/queue", params={"queue": "big", "size": 2, "page": 3}).text
    assert re.findall(r"id=(m\d)", last) == ["m4"]
    assert "Next →" not in last and "← Previous" in last


def test_aggregating_tab_has_a_group_selector_that_filters(
    broker: InMemoryBroker, client: TestClient
) -> None:
    run(broker, lambda b: b.add_to_group(msg("h1", group="other")))
    page = client.get("/queue", params={"queue": "q", "state": "aggregating"}).text
    assert '<select name="group">' in page
    assert '<option value="grp">grp (2)</option>' in page
    assert '<option value="other">other (1)</option>' in page
    only = client.get("/queue", params={"queue": "q", "state": "aggregating", "group": "other"})
    assert re.findall(r"id=(\w\d)\"", only.text) == ["h1"]


def test_task_page_shows_every_field_of_the_task(client: TestClient) -> None:
    page = client.get("/task", params={"queue": "q", "id": "r1"})
    assert page.status_code == 200
    for label in (
        "ID",
        "Queue",
        "Type",
        "State",
        "Group",
        "Retried",
        "Last error",
        "Last failed at",
        "Timeout",
        "Deadline",
        "Next process at",
        "Enqueued at",
        "Completed at",
        "Retention",
        "Headers",
        "Payload",
        "Result",
    ):
        assert f">{label}<" in page.text, label
    assert "email:send" in page.text and "boom" in page.text
    assert "&#34;n&#34;: &#34;r1&#34;" in page.text  # the JSON payload, pretty-printed, escaped


def test_payload_and_result_are_cut_to_max_payload_length(broker: InMemoryBroker) -> None:
    async def big(b: Broker) -> None:
        await b.enqueue(TaskMessage(id="big", type="t", payload=b"A" * 500 + b"Z", queue="q"))

    run(broker, big)
    with TestClient(create_app(broker, max_payload_length=100)) as c:
        page = c.get("/task", params={"queue": "q", "id": "big"}).text
    shown = re.search(r'<pre class="payload">([^<]*)</pre>', page)
    assert shown is not None and shown.group(1) == "A" * 100
    assert "501 bytes" in page and "truncated" in page


def test_binary_payload_is_shown_as_hex(broker: InMemoryBroker, client: TestClient) -> None:
    payload = b"\xff\xfe<script>\x00"
    run(broker, lambda b: b.enqueue(TaskMessage(id="bin", type="t", payload=payload, queue="q")))
    page = client.get("/task", params={"queue": "q", "id": "bin"}).text
    assert "ff fe 3c 73 63 72 69 70 74 3e 00" in page
    assert "not UTF-8" in page
    cell = client.get("/queue", params={"queue": "q"}).text
    assert f"&lt;{len(payload)} bytes&gt;" in cell


async def _fleet(b: Broker) -> None:
    now = await b.now()
    await b.write_server_state(
        ServerInfo(
            id="srv-1",
            host="worker-box",
            pid=4242,
            concurrency=8,
            queues={"q": 3},
            strict_priority=False,
            started_at=now - 60_000,
            status="active",
            active_workers=(
                WorkerInfo("a1", "email:send", "q", now - 1000, now + 60_000),
                WorkerInfo("a0", "pdf:render", "q", now - 9000, now - 4000, cut_off="canceled"),
            ),
        ),
        ttl=60_000,
    )
    await b.write_scheduler_entries(
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
        await b.record_scheduler_event("entry-1", SchedulerEvent(f"ev{i}", now - 1000 * i))


def test_servers_page_lists_servers_and_their_active_tasks(
    broker: InMemoryBroker, client: TestClient
) -> None:
    assert "No servers are running." in client.get("/servers").text
    run(broker, _fleet)
    page = client.get("/servers").text
    assert "worker-box" in page and "4242" in page and "2/8" in page
    assert 'href="/task?queue=q&amp;id=a1"' in page
    assert page.count("cut off:") == 1 and "cut off: canceled, still running" in page


def test_schedulers_page_lists_entries_and_their_enqueue_history(
    broker: InMemoryBroker, client: TestClient
) -> None:
    run(broker, _fleet)
    page = client.get("/schedulers").text
    assert "entry-1" in page and "*/5 * * * *" in page and "report:daily" in page
    history = client.get("/scheduler", params={"entry": "entry-1", "size": 2})
    assert re.findall(r"id=(ev\d)", history.text) == ["ev0", "ev1"]
    assert "page=2" in history.text


# --------------------------------------------------------------------------- JSON API


def test_api_mirrors_the_pages(broker: InMemoryBroker, client: TestClient) -> None:
    run(broker, _fleet)
    (queue,) = client.get("/api/queues").json()
    assert (queue["queue"], queue["pending"], queue["aggregating"]) == ("q", 2, 2)
    assert client.get("/api/queue", params={"queue": "q"}).json()["size"] == 9
    page = client.get("/api/tasks", params={"queue": "q", "state": "pending"}).json()
    assert [t["id"] for t in page["tasks"]] == ["p1", "p2"]
    task = client.get("/api/task", params={"queue": "q", "id": "r1"}).json()
    assert (task["state"], task["last_error"], task["payload"]) == ("retry", "boom", '{"n": "r1"}')
    assert task["payload_base64"]
    assert client.get("/api/groups", params={"queue": "q"}).json() == [{"group": "grp", "size": 2}]
    assert len(client.get("/api/history", params={"queue": "q", "days": 3}).json()) == 3
    stats = client.get("/api/stats").json()
    assert stats["states"]["pending"] == 2 and stats["servers"] == 1
    assert client.get("/api/servers").json()[0]["host"] == "worker-box"
    assert client.get("/api/schedulers").json()[0]["id"] == "entry-1"
    events = client.get("/api/scheduler/history", params={"entry": "entry-1"}).json()
    assert [e["task_id"] for e in events] == ["ev0", "ev1", "ev2"]


def test_api_errors_are_json_with_a_status(client: TestClient) -> None:
    missing = client.get("/api/queue", params={"queue": "nope"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    gone = client.get("/api/task", params={"queue": "q", "id": "nope"})
    assert gone.status_code == 404
    bad = client.get("/api/tasks", params={"queue": "q", "state": "sleeping"})
    assert bad.status_code == 400 and "state must be one of" in bad.json()["error"]
    no_queue = client.get("/api/queue")
    assert no_queue.status_code == 400


def test_api_changes_queues_and_tasks(broker: InMemoryBroker, client: TestClient) -> None:
    assert api_post(client, "/api/queue/pause", {"queue": "q"}).status_code == 200
    assert counts(broker)["paused"] == 1
    api_post(client, "/api/queue/unpause", {"queue": "q"})
    assert counts(broker)["paused"] == 0
    done = api_post(client, "/api/tasks/run", {"queue": "q", "ids": ["s1", "r1", "p1"]}).json()
    assert done["done"] == 2 and [f["id"] for f in done["failed"]] == ["p1"]
    assert state_of(broker, "s1") is TaskState.PENDING
    one = api_post(client, "/api/tasks/delete", {"queue": "q", "ids": ["a1"]})
    assert one.status_code == 409  # a single task's error is the answer
    cancel = api_post(client, "/api/tasks/cancel", {"queue": "q", "ids": ["x1"]})
    assert cancel.status_code == 200
    unconfirmed = api_post(client, "/api/bulk/delete", {"queue": "q", "state": "pending"})
    assert unconfirmed.status_code == 400 and counts(broker)["pending"] == 4
    bulk = api_post(
        client, "/api/bulk/delete", {"queue": "q", "state": "pending", "confirm": True}
    ).json()
    assert bulk["count"] == 4 and counts(broker)["pending"] == 0
    assert api_post(client, "/api/queue/explode", {"queue": "q"}).status_code == 404


# --------------------------------------------------------------------------- actions


def test_pause_and_unpause_buttons_post_and_redirect_back(
    broker: InMemoryBroker, client: TestClient
) -> None:
    response = post(client, "/actions/queue", queue="q", action="pause")
    assert response.status_code == 303
    assert response.headers["location"] == "/?notice=paused"
    assert counts(broker)["paused"] == 1
    assert "paused" in client.get("/").text
    response = post(client, "/actions/queue", queue="q", action="unpause", return_to="queue")
    assert response.headers["location"] == "/queue?queue=q&notice=unpaused"
    assert counts(broker)["paused"] == 0
    assert "Unpaused the queue." in client.get(response.headers["location"]).text


@pytest.mark.parametrize(
    ("task_id", "action", "after"),
    [
        ("s1", "run", TaskState.PENDING),
        ("x1", "run", TaskState.PENDING),
        ("p1", "archive", TaskState.ARCHIVED),
        ("r1", "archive", TaskState.ARCHIVED),
        ("g1", "run", TaskState.PENDING),
        ("p1", "cancel", TaskState.ARCHIVED),
    ],
)
def test_row_buttons_change_one_task(
    broker: InMemoryBroker, client: TestClient, task_id: str, action: str, after: TaskState
) -> None:
    state = state_of(broker, task_id).value
    response = post(
        client, "/actions/tasks", queue="q", state=state, row=f"{action}:{task_id}", page="1"
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith(f"/queue?queue=q&state={state}&page=1")
    assert f"notice={action}&n=1" in response.headers["location"]
    assert state_of(broker, task_id) is after


def test_row_delete_removes_the_task_and_cancel_reaches_an_active_one(
    broker: InMemoryBroker, client: TestClient
) -> None:
    post(client, "/actions/tasks", queue="q", state="completed", row="delete:c1")
    assert counts(broker)["completed"] == 0
    response = post(client, "/actions/tasks", queue="q", state="active", row="cancel:a1")
    assert response.status_code == 303

    async def requested(b: Broker) -> set[str]:
        return await b.cancel_requested("q", ["a1"])

    assert run(broker, requested) == {"a1"}


def test_a_forbidden_row_action_shows_the_error(client: TestClient) -> None:
    response = post(client, "/actions/tasks", queue="q", row="delete:a1")
    assert response.status_code == 409
    assert "Error 409" in response.text


def test_selected_tasks_change_together(broker: InMemoryBroker, client: TestClient) -> None:
    token = csrf(client)
    response = client.post(
        "/actions/tasks",
        data={"csrf_token": token, "queue": "q", "state": "pending", "action": "archive",
              "id": ["p1", "p2"]},
        follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303
    assert "notice=archive&n=2" in response.headers["location"]
    assert counts(broker)["pending"] == 0 and counts(broker)["archived"] == 3


def test_task_page_buttons_return_to_the_task(broker: InMemoryBroker, client: TestClient) -> None:
    page = client.get("/task", params={"queue": "q", "id": "x1"}).text
    assert 'value="run:x1"' in page and 'value="delete:x1"' in page
    assert 'value="archive:x1"' not in page
    response = post(client, "/actions/tasks", queue="q", row="run:x1", return_to="task")
    assert response.headers["location"].startswith("/task?queue=q&id=x1&notice=run")
    response = post(
        client, "/actions/tasks", queue="q", state="pending", row="delete:x1", return_to="task"
    )
    assert response.headers["location"].startswith("/queue?queue=q&state=pending")


def test_all_in_a_state_needs_a_confirmation_step(
    broker: InMemoryBroker, client: TestClient
) -> None:
    queue_page = client.get("/queue", params={"queue": "q", "state": "aggregating"}).text
    assert "/confirm?queue=q&amp;action=run_all&amp;state=aggregating" in queue_page
    before = counts(broker)
    confirm = client.get(
        "/confirm", params={"queue": "q", "action": "run_all", "state": "aggregating"}
    )
    assert confirm.status_code == 200 and "2 tasks" in confirm.text
    assert counts(broker) == before  # asking changes nothing
    refused = post(client, "/actions/bulk", queue="q", state="aggregating", action="run")
    assert refused.status_code == 400 and counts(broker) == before
    done = post(
        client, "/actions/bulk", queue="q", state="aggregating", action="run", confirm="true"
    )
    assert done.status_code == 303
    assert "notice=run&n=2" in done.headers["location"]
    assert counts(broker)["aggregating"] == 0 and counts(broker)["pending"] == 4


def test_bulk_actions_are_limited_to_what_the_state_allows(client: TestClient) -> None:
    wrong = client.get("/confirm", params={"queue": "q", "action": "run_all", "state": "pending"})
    assert wrong.status_code == 400
    response = post(
        client, "/actions/bulk", queue="q", state="active", action="delete", confirm="true"
    )
    assert response.status_code == 400


def test_bulk_action_on_one_group(broker: InMemoryBroker, client: TestClient) -> None:
    run(broker, lambda b: b.add_to_group(msg("h1", group="other")))
    confirm = client.get(
        "/confirm",
        params={"queue": "q", "action": "delete_all", "state": "aggregating", "group": "other"},
    )
    assert "1 task now" in confirm.text
    post(
        client,
        "/actions/bulk",
        queue="q",
        state="aggregating",
        group="other",
        action="delete",
        confirm="true",
    )
    assert counts(broker)["aggregating"] == 2


def test_deleting_a_queue_needs_confirmation(broker: InMemoryBroker, client: TestClient) -> None:
    run(broker, lambda b: b.enqueue(msg("e1", "empty-me")))
    confirm = client.get("/confirm", params={"queue": "empty-me", "action": "delete_queue"})
    assert confirm.status_code == 200 and 'name="force"' in confirm.text
    refused = post(client, "/actions/queue", queue="empty-me", action="delete")
    assert refused.status_code == 400
    not_empty = post(client, "/actions/queue", queue="empty-me", action="delete", confirm="true")
    assert not_empty.status_code == 409
    done = post(
        client, "/actions/queue", queue="empty-me", action="delete", confirm="true", force="true"
    )
    assert done.status_code == 303 and done.headers["location"] == "/?notice=deleted_queue"
    assert run(broker, lambda b: b.queues()) == ["q"]


# --------------------------------------------------------------------------- security


MUTATIONS = [
    ("/actions/queue", {"queue": "q", "action": "pause"}),
    ("/actions/tasks", {"queue": "q", "row": "delete:p1"}),
    ("/actions/bulk", {"queue": "q", "state": "pending", "action": "delete", "confirm": "true"}),
    ("/api/queue/pause", {"queue": "q"}),
    ("/api/tasks/delete", {"queue": "q", "ids": "p1"}),
    ("/api/bulk/delete", {"queue": "q", "state": "pending", "confirm": "true"}),
]


@pytest.mark.parametrize(("path", "fields"), MUTATIONS)
def test_mutations_without_the_csrf_token_are_refused(
    broker: InMemoryBroker, client: TestClient, path: str, fields: dict[str, str]
) -> None:
    before = counts(broker)
    client.get("/")  # a session exists, but the token is not sent
    assert client.post(path, data=fields, follow_redirects=False).status_code == 403
    forged = {**fields, "csrf_token": "x" * 43}
    assert client.post(path, data=forged, follow_redirects=False).status_code == 403
    with TestClient(create_app(broker)) as other:  # another session's token
        stolen = {**fields, "csrf_token": csrf(other)}
        assert client.post(path, data=stolen, follow_redirects=False).status_code == 403
    assert counts(broker) == before


@pytest.mark.parametrize(("path", "fields"), MUTATIONS)
def test_read_only_refuses_every_mutation_on_the_server(
    broker: InMemoryBroker, path: str, fields: dict[str, str]
) -> None:
    before = counts(broker)
    with TestClient(create_app(broker, read_only=True)) as c:
        response = c.post(path, data={**fields, "csrf_token": csrf(c)}, follow_redirects=False)
        assert response.status_code == 403
        assert "read-only" in response.text
    assert counts(broker) == before


def test_read_only_hides_the_buttons_and_the_confirmation_page(broker: InMemoryBroker) -> None:
    with TestClient(create_app(broker, read_only=True)) as c:
        pages = [
            c.get("/").text,
            c.get("/queue", params={"queue": "q", "state": "retry"}).text,
            c.get("/task", params={"queue": "q", "id": "r1"}).text,
        ]
        assert all("<button" not in p for p in pages)
        assert all("read-only" in p for p in pages)
        confirm = c.get("/confirm", params={"queue": "q", "action": "delete_queue"})
        assert confirm.status_code == 403


def test_get_never_changes_anything(broker: InMemoryBroker, client: TestClient) -> None:
    before = counts(broker)
    for path, fields in MUTATIONS:
        assert client.get(path, params=fields).status_code == 405
    for path in ("/", "/queue?queue=q", "/task?queue=q&id=p1", "/servers", "/schedulers"):
        assert client.get(path).status_code == 200
    client.get("/confirm", params={"queue": "q", "action": "delete_all", "state": "pending"})
    assert counts(broker) == before


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    responses = [
        client.get("/"),
        client.get("/queue", params={"queue": "nope"}),
        client.get("/api/queues"),
        client.get("/static/taskq.css"),
        client.get("/no-such-page"),
        client.post("/actions/queue", data={}),
    ]
    for response in responses:
        for name, value in SECURITY_HEADERS:
            assert response.headers.get(name) == value, (response.url, name)
    csp = dict(SECURITY_HEADERS)["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp


def test_pages_have_no_inline_script_style_or_event_handler(
    broker: InMemoryBroker, client: TestClient
) -> None:
    run(broker, _fleet)
    templates = Path(create_app.__code__.co_filename).parent / "templates"
    for template in templates.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", text), template.name
    pages = ["/", "/servers", "/schedulers", "/scheduler?entry=entry-1", "/task?queue=q&id=r1"]
    pages += [f"/queue?queue=q&state={s}" for s in STATES]
    for page in pages:
        html = client.get(page).text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/taskq.js" defer>']
    js = client.get("/static/taskq.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]


async def _hostile(b: Broker) -> None:
    queue = XSS
    common = {"type": f"t:{XSS}", "payload": XSS.encode(), "queue": queue, "headers": {XSS: XSS}}
    await b.enqueue(TaskMessage(id=f"p-{XSS}", **common))
    await b.add_to_group(TaskMessage(id="g-x", group=XSS, **common))
    for state, how in (("r", "retry"), ("x", "archive"), ("c", "complete")):
        await b.enqueue(TaskMessage(id=f"{state}-x", **common))
        (delivery,) = await b.dequeue([queue], count=1, lease=60_000)
        if how == "retry":
            await b.retry(delivery.ref, delay=HOUR_MS, error=XSS)
        elif how == "archive":
            await b.archive(delivery.ref, error=XSS)
        else:
            await b.write_result(delivery.ref, XSS.encode())
            await b.complete(delivery.ref, retention=HOUR_MS)
    await b.enqueue(TaskMessage(id="a-x", **common))
    await b.dequeue([queue], count=1, lease=60_000)


def test_hostile_names_payloads_errors_and_results_are_escaped_everywhere() -> None:
    broker = InMemoryBroker()
    run(broker, _hostile)
    ids = [f"p-{XSS}", "g-x", "r-x", "x-x", "c-x", "a-x"]
    with TestClient(create_app(broker)) as c:
        token = csrf(c)
        responses = [c.get("/"), c.get("/api/queues"), c.get("/api/stats")]
        for state in STATES:
            responses.append(c.get("/queue", params={"queue": XSS, "state": state}))
            responses.append(c.get("/api/tasks", params={"queue": XSS, "state": state}))
        responses.append(
            c.get("/queue", params={"queue": XSS, "state": "aggregating", "group": XSS})
        )
        for task_id in ids:
            responses.append(c.get("/task", params={"queue": XSS, "id": task_id}))
            responses.append(c.get("/api/task", params={"queue": XSS, "id": task_id}))
        responses += [
            c.get("/confirm", params={"queue": XSS, "action": "delete_queue"}),
            c.get("/queue", params={"queue": XSS, "state": XSS}),
            c.get("/task", params={"queue": XSS, "id": XSS}),
            c.get("/api/task", params={"queue": XSS, "id": XSS}),
            c.get("/queue", params={"queue": XSS + "{"}),  # an invalid name, echoed in the error
            c.post(
                "/actions/tasks",
                data={"csrf_token": token, "queue": XSS, "row": "archive:a-x"},
                follow_redirects=False,
            ),
            c.post(
                "/actions/queue",
                data={"csrf_token": token, "queue": XSS, "action": "pause"},
                follow_redirects=False,
            ),
        ]
    assert [r.status_code for r in responses[1:3]] == [200, 200]
    assert sum(r.status_code == 200 for r in responses) >= 30
    for response in responses:
        assert XSS not in response.text, response.url
        assert "<script>" not in response.text, response.url
        assert XSS not in str(response.headers), response.url
    page = responses[3].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/queue", {"queue": "q", "page": "0"}),
        ("/queue", {"queue": "q", "page": "-1"}),
        ("/queue", {"queue": "q", "page": "1e3"}),
        ("/queue", {"queue": "q", "page": "999999999999"}),
        ("/queue", {"queue": "q", "size": "0"}),
        ("/queue", {"queue": "q", "size": "101"}),
        ("/queue", {"queue": "q", "size": "ten"}),
        ("/queue", {"queue": "q", "refresh": "100000"}),
        ("/queue", {"queue": "q", "state": "sleeping"}),
        ("/", {"refresh": "-5"}),
        ("/", {"notice": "paused", "n": "many"}),
        ("/scheduler", {"entry": "e", "page": "0"}),
        ("/api/tasks", {"queue": "q", "state": "pending", "size": "1001"}),
        ("/api/tasks", {"queue": "q", "state": "pending", "page": "x"}),
        ("/api/history", {"queue": "q", "days": "0"}),
        ("/api/history", {"queue": "q", "days": "91"}),
        ("/api/scheduler/history", {"entry": "e", "size": "5000"}),
    ],
)
def test_bad_numbers_and_states_get_a_400(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text


def test_page_size_bounds_come_from_the_app(broker: InMemoryBroker) -> None:
    with TestClient(create_app(broker, default_page_size=1, max_page_size=5)) as c:
        assert len(re.findall(r"id=p\d", c.get("/queue?queue=q").text)) == 1
        assert c.get("/queue", params={"queue": "q", "size": "5"}).status_code == 200
        assert c.get("/queue", params={"queue": "q", "size": "6"}).status_code == 400


def test_oversized_request_bodies_are_refused(client: TestClient) -> None:
    token = csrf(client)
    body = {"csrf_token": token, "queue": "q", "action": "archive", "id": ["p"] * 200_000}
    assert client.post("/actions/tasks", data=body).status_code == 413


def test_a_batch_larger_than_a_page_is_refused(client: TestClient) -> None:
    ids = [f"t{i}" for i in range(101)]
    response = api_post(client, "/api/tasks/delete", {"queue": "q", "ids": ids})
    assert response.status_code == 400


def test_unknown_host_headers_are_refused_when_hosts_are_restricted(
    broker: InMemoryBroker,
) -> None:
    app = create_app(broker, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    with TestClient(app, base_url="http://127.0.0.1:8080") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"host": "localhost:8080"}).status_code == 200
        assert c.get("/", headers={"host": "[::1]:8080"}).status_code == 200
        rebound = c.get("/", headers={"host": "attacker.example:8080"})
        assert rebound.status_code == 400
        assert rebound.headers["x-frame-options"] == "DENY"


def test_session_cookie_is_httponly_samesite_strict_and_signed(
    broker: InMemoryBroker, client: TestClient
) -> None:
    cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    with TestClient(create_app(broker), base_url="https://testserver") as tls:
        assert "Secure" in tls.get("/").headers["set-cookie"]


# --------------------------------------------------------------------------- broker secrets


CANARY = "Canary-7f3a9c1e5b"


class _UnreachableBroker(InMemoryBroker):
    """A broker whose every read fails with an error quoting its URL (as drivers do)."""

    def __init__(self, url: str, detail: str = f" (password {CANARY})") -> None:
        super().__init__()
        self.url = url
        self.detail = detail

    def __repr__(self) -> str:
        return "UnreachableBroker()"

    async def queues(self) -> list[str]:
        raise BrokerConnectionError(f"cannot connect to {self.url}{self.detail}")


@pytest.fixture
def canary_url() -> Iterator[str]:
    url = f"taskqtest+canary://admin:{CANARY}@db.example:6379/0"
    registry.register_scheme("taskqtest+canary", _UnreachableBroker)
    try:
        yield url
    finally:
        registry._REGISTERED.pop("taskqtest+canary", None)


def test_broker_password_never_appears_in_pages_errors_headers_or_logs(
    canary_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(canary_url)) as c:
        responses = [c.get("/"), c.get("/api/queues"), c.get("/api/stats"), c.get("/servers")]
    assert [r.status_code for r in responses] == [503, 503, 503, 200]
    assert "admin:***@db.example" in responses[3].text  # the broker, shown redacted
    assert "cannot connect to" in responses[0].text
    for response in responses:
        assert CANARY not in response.text
        assert CANARY not in str(response.headers)
    assert CANARY not in caplog.text


def test_a_password_in_a_url_inside_an_error_of_a_broker_object_is_masked() -> None:
    broker = _UnreachableBroker(f"redis://:{CANARY}@db.example:6379/0", detail="")
    with TestClient(create_app(broker)) as c:
        responses = [c.get("/"), c.get("/api/queues")]
    assert [r.status_code for r in responses] == [503, 503]
    assert "redis://:***@db.example:6379/0" in responses[1].json()["error"]
    assert all(CANARY not in r.text for r in responses)


# --------------------------------------------------------------------------- login


@pytest.fixture
def guarded(broker: InMemoryBroker) -> Iterator[TestClient]:
    app = create_app(broker, auth=PasswordAuth("admin", PASSWORD))
    with TestClient(app) as c:
        yield c


def login(client: TestClient, username: str = "admin", password: str = PASSWORD) -> Any:
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    return client.post(
        "/login",
        data={"csrf_token": token.group(1), "username": username, "password": password},
        follow_redirects=False,
    )


def test_without_a_login_pages_redirect_to_it_and_the_api_answers_401(
    guarded: TestClient,
) -> None:
    for path in ("/", "/queue?queue=q", "/task?queue=q&id=p1", "/servers", "/schedulers"):
        response = guarded.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/login"
    api = guarded.get("/api/queues")
    assert api.status_code == 401 and api.json() == {"error": "authentication required"}
    assert api.headers["www-authenticate"].startswith("Bearer")
    assert "Log in" in guarded.get("/login").text
    assert guarded.get("/static/taskq.css").status_code == 200


def test_wrong_credentials_are_refused(guarded: TestClient) -> None:
    for username, password in (("admin", "wrong"), ("root", PASSWORD), ("", "")):
        response = login(guarded, username, password)
        assert response.status_code == 401
        assert "Wrong username or password." in response.text
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_login_opens_the_dashboard_until_logout(
    broker: InMemoryBroker, guarded: TestClient
) -> None:
    anonymous = guarded.cookies.get(SESSION_COOKIE)
    response = login(guarded)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert guarded.cookies.get(SESSION_COOKIE) != anonymous  # a new session at login
    page = guarded.get("/")
    assert page.status_code == 200 and "admin" in page.text and "Log out" in page.text
    assert post(guarded, "/actions/queue", queue="q", action="pause").status_code == 303
    assert counts(broker)["paused"] == 1
    out = post(guarded, "/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login?notice=logged_out"
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_login_needs_the_csrf_token(guarded: TestClient) -> None:
    guarded.get("/login")
    response = guarded.post(
        "/login", data={"username": "admin", "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_a_forged_or_foreign_session_cookie_is_ignored(broker: InMemoryBroker) -> None:
    app = create_app(broker, auth=PasswordAuth("admin", PASSWORD), secret_key="k" * 32)
    with TestClient(app) as c:
        login(c)
        cookie = c.cookies[SESSION_COOKIE]
    payload, signature = cookie.split(".")
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    other_key = create_app(broker, auth=PasswordAuth("admin", PASSWORD), secret_key="z" * 32)
    for app_, value in ((app, tampered), (app, "garbage"), (other_key, cookie)):
        with TestClient(app_, cookies={SESSION_COOKIE: value}) as c:
            assert c.get("/", follow_redirects=False).status_code == 303
    with TestClient(app, cookies={SESSION_COOKIE: cookie}) as c:  # same key: still logged in
        assert c.get("/", follow_redirects=False).status_code == 200


def test_bearer_token_opens_the_api_without_a_session(
    broker: InMemoryBroker, guarded: TestClient
) -> None:
    headers = {"Authorization": f"Bearer {PASSWORD}"}
    assert guarded.get("/api/queues", headers=headers).status_code == 200
    response = guarded.post("/api/queue/pause", json={"queue": "q"}, headers=headers)
    assert response.status_code == 200 and counts(broker)["paused"] == 1
    wrong = guarded.get("/api/queues", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert guarded.get("/", headers=headers, follow_redirects=False).status_code == 303


def test_password_auth_keeps_the_password_out_of_its_repr() -> None:
    auth = PasswordAuth("admin", CANARY)
    assert CANARY not in repr(auth) and "admin" in repr(auth)
    assert auth.check("admin", CANARY) and not auth.check("admin", CANARY + "x")
    with pytest.raises(InvalidArgumentError):
        PasswordAuth("admin", "")


def test_password_auth_reads_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKQ_WEB_PASSWORD", raising=False)
    monkeypatch.delenv("TASKQ_WEB_USERNAME", raising=False)
    assert PasswordAuth.from_env() is None
    monkeypatch.setenv("TASKQ_WEB_PASSWORD", "from-env")
    monkeypatch.setenv("TASKQ_WEB_USERNAME", "ops")
    assert PasswordAuth.from_env() == PasswordAuth("ops", "from-env")
    secret = tmp_path / "password"
    secret.write_text("from-file\nignored\n")
    assert PasswordAuth.from_env(password_file=secret, username="me") == PasswordAuth(
        "me", "from-file"
    )
    secret.write_text("\n")
    with pytest.raises(InvalidArgumentError, match="empty"):
        PasswordAuth.from_env(password_file=secret)
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        PasswordAuth.from_env(password_file=tmp_path / "missing")


# --------------------------------------------------------------------------- mounting


def test_mounted_in_a_starlette_app_links_carry_the_mount_path(broker: InMemoryBroker) -> None:
    outer = Starlette(routes=[Mount("/ops/taskq", create_app(broker))])
    with TestClient(outer) as c:
        page = c.get("/ops/taskq/")
        assert page.status_code == 200
        assert 'href="/ops/taskq/queue?queue=q"' in page.text
        assert 'href="/ops/taskq/static/taskq.css"' in page.text
        assert "Path=/ops/taskq" in page.headers["set-cookie"]
        assert c.get("/ops/taskq/queue", params={"queue": "q"}).status_code == 200
        response = post(c, "/actions/queue", "/ops/taskq", queue="q", action="pause")
        assert response.headers["location"] == "/ops/taskq/?notice=paused"
    assert counts(broker)["paused"] == 1


def test_root_path_prefixes_links_behind_a_stripping_proxy(broker: InMemoryBroker) -> None:
    with TestClient(create_app(broker, root_path="/taskq")) as c:
        page = c.get("/")
        assert 'href="/taskq/queue?queue=q"' in page.text
        assert "Path=/taskq" in page.headers["set-cookie"]
        assert c.get("/queue", params={"queue": "q"}).status_code == 200


def test_a_servers_root_path_prefixes_links_as_with_uvicorn_root_path(
    broker: InMemoryBroker,
) -> None:
    with TestClient(create_app(broker), root_path="/taskq") as c:
        page = c.get("/")
        assert page.status_code == 200
        assert 'href="/taskq/queue?queue=q"' in page.text
        response = post(c, "/actions/queue", "/taskq", queue="q", action="pause")
        assert response.headers["location"] == "/taskq/?notice=paused"


@pytest.mark.parametrize(
    "options",
    [
        {"max_page_size": 0},
        {"max_page_size": 1001},
        {"default_page_size": 50, "max_page_size": 10},
        {"max_payload_length": 0},
        {"root_path": "taskq"},
        {"root_path": "/taskq/"},
        {"secret_key": "short"},
        {"auth": "admin:password"},
    ],
)
def test_create_app_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        create_app(InMemoryBroker(), **options)


def test_a_broker_url_is_opened_lazily_and_closed_at_shutdown(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    app = create_app(url)
    assert app.state.dashboard._inspector is None
    with TestClient(app) as c:
        assert c.get("/").status_code == 200
        assert app.state.dashboard._inspector is not None
    assert app.state.dashboard._inspector is None


# --------------------------------------------------------------------------- packaging


def test_importing_taskq_web_without_the_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m == "taskq.web" or m.startswith("taskq.web.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "starlette", None)
    with pytest.raises(ImportError, match=r"pip install 'taskq\[web\]'"):
        importlib.import_module("taskq.web")


def test_taskq_web_imports_only_the_public_layers() -> None:
    root = Path(taskq.__file__).parent
    allowed = (
        "taskq",
        "taskq.brokers.base",
        "taskq.brokers.registry",
        "taskq.task",
        "taskq.inspector",
        "taskq.errors",
        "taskq.cli._output",
        "taskq.cli.stats",
        "taskq.cli._common",
        "taskq.web",
    )
    offenders = []
    for path in (root / "web").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] != "taskq":
                    continue
                if not any(name == a or name.startswith(a + ".") for a in allowed[1:]) and (
                    name != "taskq"
                ):
                    offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_changes_are_logged_with_who_and_what_but_no_payload(
    broker: InMemoryBroker, guarded: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskq.web")
    login(guarded)
    post(guarded, "/actions/tasks", queue="q", state="pending", action="archive", id=["p1"])
    post(guarded, "/actions/queue", queue="q", action="pause")
    lines = [r.getMessage() for r in caplog.records if r.name == "taskq.web"]
    assert lines == [
        "task archive by admin in queue 'q': 'p1'",
        "queue pause by admin in queue 'q'",
    ]
    assert '{"n"' not in caplog.text
