"""RedisBroker behaviour beyond the conformance suite, on fakeredis (no server needed):
construction, URLs, error translation, scripts, per-loop clients, bad input."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from importlib import resources

import fakeredis
import fakeredis.aioredis
import pytest
import redis
import redis.asyncio
import redis.exceptions

from taskq.brokers.base import Ack, Delivery, EnqueueRequest, LeaseRef
from taskq.brokers.redis import LEAST_PRIVILEGE_ACL, RedisBroker
from taskq.brokers.redis.client import connector_from_url, translate_error
from taskq.brokers.redis.keys import QUEUE_KEY_NAMES, QueueKeys
from taskq.brokers.redis.scripts import load_scripts
from taskq.errors import (
    BrokerAuthError,
    BrokerConnectionError,
    BrokerError,
    BrokerOutOfMemoryError,
    BrokerTimeoutError,
    InvalidArgumentError,
    LeaseLostError,
    TaskIDConflictError,
)
from taskq.task import TaskMessage, TaskState
from taskq.testing import FakeClock
from taskq.testing.clock import DEFAULT_START

SECRET = "hunter2-very-secret"


_START_MS = int(DEFAULT_START.timestamp() * 1000)


def _message(task_id: str = "t1", queue: str = "q", **fields: object) -> TaskMessage:
    # enqueued_at as the clients set it: plain chunks take the lean layout
    fields.setdefault("enqueued_at", _START_MS)
    return TaskMessage(id=task_id, type="test:task", payload=b"{}", queue=queue, **fields)  # type: ignore[arg-type]


@pytest.fixture
def fake() -> fakeredis.aioredis.FakeRedis:
    return fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
async def broker(fake: fakeredis.aioredis.FakeRedis) -> AsyncIterator[RedisBroker]:
    b = RedisBroker(fake, clock=FakeClock())
    yield b
    await b.close()


# --------------------------------------------------------------------------- scripts


def test_every_script_opens_with_a_header_of_keys_argv_and_returns() -> None:
    folder = resources.files("taskq.brokers.redis") / "scripts"
    names = [e.name for e in folder.iterdir() if e.name.endswith(".lua") and e.name[0] != "_"]
    assert len(names) == len(load_scripts())
    for name in names:
        text = (folder / name).read_text(encoding="utf-8")
        header = text.split("\n\n", 1)[0]
        assert header.startswith("#!lua"), name
        for part in ("-- KEYS:", "-- ARGV:", "-- Returns:"):
            assert part in header, f"{name} lacks {part}"


@pytest.mark.parametrize("name", sorted(load_scripts()))
def test_a_script_touches_only_keys_passed_in_keys(name: str) -> None:
    script = load_scripts()[name]
    used = set(re.findall(r"\b[KQ]\.(\w+)", script.plain_source))
    assert used <= set(script.keys)
    assert "..KEYS" not in script.plain_source.replace(" ", "")
    # no key name is ever built from the prefix inside Lua
    assert "taskq:" not in script.plain_source


@pytest.mark.parametrize("name", sorted(load_scripts()))
def test_queue_scripts_take_only_keys_of_one_queue(name: str) -> None:
    script = load_scripts()[name]
    fleet = {"index", "data", "claims", "history"}
    assert set(script.keys) <= set(QUEUE_KEY_NAMES) or set(script.keys) <= fleet


def test_read_only_scripts_are_flagged_no_writes() -> None:
    read_only = {n for n, s in load_scripts().items() if s.read_only}
    assert read_only == {
        "expired_leases",
        "fleet_read",
        "get_task",
        "history",
        "list_tasks",
        "queue_stats",
        "read_aggregation_set",
    }


def test_a_script_includes_only_the_helpers_it_uses() -> None:
    extend = load_scripts()["extend"].plain_source
    assert "local function holds" in extend
    assert "local function patch_message" not in extend
    assert "local function server_now" in extend
    assert "local function server_now" not in load_scripts()["fleet_clear"].plain_source


async def test_scripts_are_reloaded_after_the_server_forgets_them(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    await broker.enqueue(_message("before"))
    await fake.script_flush()
    assert await broker.enqueue(_message("after")) is TaskState.PENDING
    await fake.script_flush()
    results = await broker.done_many([])
    assert results == []
    got = await broker.dequeue(["q"], count=2, lease=1000)
    assert [d.message.id for d in got] == ["before", "after"]


async def test_batches_larger_than_one_script_call_keep_each_result_at_its_index(
    broker: RedisBroker,
) -> None:
    # More than 500 items per queue: the broker splits them over several
    # script calls and must put every per-item result back in its place.
    messages = [_message(f"t{i}", queue="a" if i % 3 else "b") for i in range(1100)]
    messages[700] = _message("t4", queue="a")  # t4 is already in queue a
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
    assert isinstance(results[700], TaskIDConflictError)
    assert results[:700] + results[701:] == [TaskState.PENDING] * 1099
    deliveries: list[Delivery] = []
    while len(deliveries) < 1099:
        got = await broker.dequeue(["a", "b"], count=1099, lease=60_000)
        assert got
        deliveries += got
    refs = [d.ref for d in deliveries]
    refs.insert(650, LeaseRef("a", "t1", "stale-token"))
    held = await broker.extend_leases(refs, lease=60_000)
    assert held == [i != 650 for i in range(1100)]
    outcomes = await broker.done_many([Ack(ref) for ref in refs])
    assert isinstance(outcomes[650], LeaseLostError)
    assert outcomes[:650] + outcomes[651:] == [None] * 1099
    assert [(await broker.queue_stats(q)).size for q in ("a", "b")] == [0, 0]


async def test_one_script_call_stores_more_tasks_than_one_variadic_command_takes(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The enqueue script writes a batch with variadic HSET/LPUSH calls of at
    # most 1000 items each (Lua's unpack() has a stack limit); a batch larger
    # than that must be split without losing, reordering or mispairing items.
    monkeypatch.setattr("taskq.brokers.redis.broker._ENQUEUE_CHUNK", 5000)
    messages = [_message(f"t{i}", max_retry=i) for i in range(2300)]
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
    assert results == [TaskState.PENDING] * 2300
    got: list[Delivery] = []
    while len(got) < 2300:
        batch = await broker.dequeue(["q"], count=1000, lease=60_000)
        assert batch
        got += batch
    assert [d.message for d in got] == messages


async def test_ids_already_stored_are_refused_anywhere_in_a_call_past_one_thousand_ids(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The script reads the stored ids of a whole call with HMGET, 1000 ids per
    # command; a conflict in the second slice must land on the right task.
    monkeypatch.setattr("taskq.brokers.redis.broker._ENQUEUE_CHUNK", 5000)
    await broker.enqueue_many([EnqueueRequest(_message(i)) for i in ("t5", "t1500", "t2299")])
    messages = [_message(f"t{i}") for i in range(2300)]
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])
    refused = {i for i, result in enumerate(results) if isinstance(result, TaskIDConflictError)}
    assert refused == {5, 1500, 2299}
    assert all(results[i] is TaskState.PENDING for i in range(2300) if i not in refused)
    assert (await broker.queue_stats("q")).pending == 2300


def test_a_chunk_of_plain_tasks_is_sent_as_ids_and_messages_only(broker: RedisBroker) -> None:
    # Due now, no group, no unique lock: two values per task instead of six
    # (less to pack, send and parse); any other task makes the chunk full form.
    plain = [EnqueueRequest(_message(f"t{i}")) for i in range(3)]
    name, _, args = broker._enqueue_call(plain, "q", [0, 1, 2], "")
    assert (name, args[1], len(args)) == ("enqueue", b"2", 2 + 2 * 3)
    assert args[2:4] == ["t0", plain[0].message.encode(addressed=False)]
    for odd in [
        EnqueueRequest(_message("s"), 5, 0),
        EnqueueRequest(_message("u", unique_key="k"), 0, 60_000),
        EnqueueRequest(_message("g", group="g"), 0, 0),
        # no enqueued_at to be pending since: stored with a state entry
        EnqueueRequest(_message("e", enqueued_at=0), 0, 0),
    ]:
        _, _, args = broker._enqueue_call([*plain, odd], "q", [0, 1, 2, 3], "")
        assert (args[1], len(args)) == (b"6", 2 + 6 * 4)


async def test_plain_and_other_tasks_in_one_batch_each_reach_their_state(
    broker: RedisBroker,
) -> None:
    requests = [
        EnqueueRequest(_message("p1")),
        EnqueueRequest(_message("s1"), process_at=2**41),
        EnqueueRequest(_message("g1", group="g")),
        EnqueueRequest(_message("u1", unique_key="k"), unique_ttl=60_000),
        EnqueueRequest(_message("p1")),
    ]
    results = await broker.enqueue_many(requests)
    assert results[:4] == [
        TaskState.PENDING,
        TaskState.SCHEDULED,
        TaskState.AGGREGATING,
        TaskState.PENDING,
    ]
    assert isinstance(results[4], TaskIDConflictError)
    again = await broker.enqueue_many([EnqueueRequest(_message(i)) for i in ("p2", "s1", "p3")])
    assert again[0] is TaskState.PENDING and again[2] is TaskState.PENDING
    assert isinstance(again[1], TaskIDConflictError)


async def test_messages_are_stored_without_their_id_and_queue(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    # The hash field is the id and the key names the queue: repeating both in
    # every stored message cost about 60 bytes per task.
    message = _message("t1", queue="q", enqueued_at=5)
    await broker.enqueue(message)
    stored = await fake.hget(QueueKeys.for_queue("q", "taskq").messages, "t1")
    assert stored == message.encode(addressed=False)
    assert (await broker.get_task("q", "t1")).id == "t1"
    [listed] = await broker.list_tasks("q", TaskState.PENDING)
    assert (listed.id, listed.queue) == ("t1", "q")
    [delivery] = await broker.dequeue(["q"], count=1, lease=60_000)
    assert delivery.message == message


async def test_messages_stored_with_their_id_and_queue_are_still_read(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    # Tasks written before messages were stored unaddressed (or by another
    # writer following docs/wire-format.md) keep working.
    await broker.enqueue(_message("t1"))
    legacy = _message("t1", max_retry=3)
    await fake.hset(QueueKeys.for_queue("q", "taskq").messages, "t1", legacy.encode())
    assert (await broker.get_task("q", "t1")).max_retry == 3
    [delivery] = await broker.dequeue(["q"], count=1, lease=60_000)
    assert delivery.message == legacy


async def test_scripts_without_a_shebang_run_where_it_is_unsupported(broker: RedisBroker) -> None:
    await broker.ping()
    await broker.enqueue(_message())
    assert broker._shebang is False  # fakeredis, like Redis 6.2, rejects "#!lua"


# --------------------------------------------------------------------------- construction and URLs


def test_repr_shows_the_url_without_its_password() -> None:
    broker = RedisBroker.from_url(f"redis://user:{SECRET}@localhost:6390/2")
    assert SECRET not in repr(broker)
    assert "user:***@localhost:6390/2" in repr(broker)


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis://localhost:6379/0", False),
        ("rediss://localhost:6380/0?ssl_cert_reqs=required", False),
        ("unix:///tmp/redis.sock?db=1", False),
        ("redis+sentinel://h1:26379,h2:26380/mymaster/0", False),
        (f"redis+sentinel://u:{SECRET}@h1,h2:26380/mymaster", False),
        ("rediss+sentinel://h1:26379/mymaster/1", False),
        ("redis+cluster://h1:7000,h2:7001", True),
        (f"rediss+cluster://u:{SECRET}@h1:7000/", True),
    ],
)
def test_every_url_form_is_accepted_without_connecting(url: str, cluster: bool) -> None:
    connector = connector_from_url(url)
    assert connector.is_cluster is cluster
    assert SECRET not in connector.url


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:26379",  # no service name
        "redis+sentinel://h1:26379/mymaster/notanumber",
        "redis+cluster://h1:7000/3",  # clusters have only db 0
        "redis+cluster://h1:port",
        "http://localhost:6379",
        f"redis://u:{SECRET}@localhost:6379/0?socket_timeout=soon",
    ],
)
def test_a_malformed_url_is_refused_with_a_clear_error(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        RedisBroker.from_url(url)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "rediss://localhost:6380/0",
        "rediss+sentinel://h1:26379/mymaster/0",
        "rediss+cluster://h1:7000",
    ],
)
def test_tls_urls_verify_the_server_certificate_and_host_name(url: str) -> None:
    async def ssl_settings() -> dict[str, object]:
        connector = connector_from_url(url)
        client = connector.client()
        if isinstance(client, redis.asyncio.RedisCluster):
            kwargs = client.get_connection_kwargs()
        else:
            kwargs = client.connection_pool.connection_kwargs
        await connector.aclose()
        return dict(kwargs)

    kwargs = asyncio.run(ssl_settings())
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True


def test_a_tls_url_may_turn_verification_off_explicitly() -> None:
    async def ssl_settings() -> dict[str, object]:
        connector = connector_from_url("rediss://localhost:6380/0?ssl_cert_reqs=none")
        client = connector.client()
        assert isinstance(client, redis.asyncio.Redis)
        kwargs = dict(client.connection_pool.connection_kwargs)
        await connector.aclose()
        return kwargs

    assert asyncio.run(ssl_settings())["ssl_cert_reqs"] == "none"


def test_a_sentinel_object_needs_a_service_name() -> None:
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 26379)])
    with pytest.raises(InvalidArgumentError, match="service_name"):
        RedisBroker(sentinel)
    broker = RedisBroker(sentinel, service_name="mymaster")
    assert "127.0.0.1:26379/mymaster" in repr(broker)


def test_a_client_that_decodes_responses_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="decode_responses"):
        RedisBroker(redis.asyncio.Redis(decode_responses=True))


def test_something_that_is_not_a_client_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        RedisBroker(42)


def test_a_sync_client_is_converted_with_its_settings() -> None:
    client = redis.Redis(host="127.0.0.1", port=6390, db=3, password=SECRET, socket_timeout=7)
    broker = RedisBroker(client)
    assert repr(broker) == "RedisBroker('redis://:***@127.0.0.1:6390/3')"

    async def settings() -> dict[str, object]:
        made = broker._connector.client()
        assert isinstance(made, redis.asyncio.Redis)
        kwargs = dict(made.connection_pool.connection_kwargs)
        await broker.close()
        return kwargs

    kwargs = asyncio.run(settings())
    assert (kwargs["port"], kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (
        6390,
        3,
        SECRET,
        7,
    )


def test_an_invalid_prefix_is_refused(fake: fakeredis.aioredis.FakeRedis) -> None:
    with pytest.raises(InvalidArgumentError):
        RedisBroker(fake, prefix="a{b}")


async def test_a_custom_prefix_keeps_brokers_apart(fake: fakeredis.aioredis.FakeRedis) -> None:
    one, two = RedisBroker(fake, prefix="one"), RedisBroker(fake, prefix="two")
    await one.enqueue(_message())
    assert await two.queues() == []
    assert await one.queues() == ["q"]
    assert all(k.startswith(b"one:") for k in await fake.keys("*"))


# --------------------------------------------------------------------------- event loops


def test_one_broker_serves_two_event_loops_with_a_client_each(
    fake: fakeredis.aioredis.FakeRedis,
) -> None:
    broker = RedisBroker(fake, clock=FakeClock())
    clients: list[object] = []

    def other_thread() -> None:
        async def produce() -> None:
            clients.append(broker._connector.client())
            await broker.enqueue(_message("from-thread"))

        asyncio.run(produce())

    async def consume() -> list[str]:
        clients.append(broker._connector.client())
        thread = threading.Thread(target=other_thread)
        thread.start()
        await asyncio.to_thread(thread.join, 10)
        got = await broker.dequeue(["q"], count=1, lease=1000)
        await broker.close()
        return [d.message.id for d in got]

    assert asyncio.run(consume()) == ["from-thread"]
    assert clients[0] is fake
    assert clients[1] is not fake


def test_a_client_factory_is_called_once_per_event_loop() -> None:
    server = fakeredis.FakeServer()
    made: list[object] = []

    def factory() -> fakeredis.aioredis.FakeRedis:
        made.append(fakeredis.aioredis.FakeRedis(server=server))
        return made[-1]

    broker = RedisBroker(factory, clock=FakeClock())

    async def use() -> None:
        await broker.enqueue(_message(f"t{len(made)}"))
        await broker.ping()
        await broker.close()

    asyncio.run(use())
    asyncio.run(use())
    assert len(made) == 2


# --------------------------------------------------------------------------- errors


def _errors() -> list[tuple[BaseException, type[BrokerError]]]:
    return [
        (redis.exceptions.ConnectionError("Connection refused"), BrokerConnectionError),
        (redis.exceptions.AuthenticationError("invalid password"), BrokerAuthError),
        (
            redis.exceptions.ResponseError("WRONGPASS invalid username-password pair"),
            BrokerAuthError,
        ),
        (redis.exceptions.NoPermissionError("NOPERM no permissions"), BrokerAuthError),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), BrokerTimeoutError),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), BrokerOutOfMemoryError),
        (
            redis.exceptions.ResponseError("OOM command not allowed when used memory"),
            BrokerOutOfMemoryError,
        ),
        (redis.exceptions.ReadOnlyError("READONLY You can't write"), BrokerConnectionError),
        (redis.exceptions.BusyLoadingError("LOADING"), BrokerConnectionError),
        (OSError("Network is unreachable"), BrokerConnectionError),
        (
            redis.exceptions.ResponseError("NOREPLICAS Not enough good replicas to write."),
            BrokerConnectionError,
        ),
        (
            redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"),
            BrokerConnectionError,
        ),
        (redis.exceptions.ResponseError("ERR something else"), BrokerError),
    ]


@pytest.mark.parametrize(("error", "expected"), _errors(), ids=lambda v: type(v).__name__)
def test_driver_errors_become_taskq_errors(
    error: BaseException, expected: type[BrokerError]
) -> None:
    translated = translate_error(error, "redis redis://localhost:6379/0: enqueue")
    assert type(translated) is expected
    assert str(translated).startswith("redis redis://localhost:6379/0: enqueue: ")


def test_a_password_in_a_driver_message_is_masked() -> None:
    error = redis.exceptions.ConnectionError(f"cannot connect with {SECRET}")
    assert SECRET not in str(translate_error(error, "ping", [SECRET]))


async def test_an_unreachable_server_raises_a_connection_error_without_the_password() -> None:
    client = redis.asyncio.Redis(
        host="127.0.0.1",
        port=1,  # nothing listens there
        password=SECRET,
        socket_connect_timeout=0.5,
        retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
    )
    broker = RedisBroker(client)
    with pytest.raises(BrokerConnectionError) as caught:
        await broker.enqueue(_message())
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(broker)
    await client.aclose()


# --------------------------------------------------------------------------- data model


@pytest.mark.parametrize(
    "stored", [b'{"v": 99, "id": "bad", "queue": "q"}', b"\xff not json", b'{"v": 1}']
)
async def test_a_message_that_cannot_be_decoded_is_archived_at_dequeue(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis, stored: bytes
) -> None:
    await broker.enqueue(_message("other", queue="empty"))
    await broker.enqueue(_message("bad"))
    await broker.enqueue(_message("good"))
    keys = QueueKeys.for_queue("q")
    await fake.hset(keys.messages, "bad", stored)
    got = await broker.dequeue(["empty", "q"], count=3, lease=1000)
    assert [d.message.id for d in got] == ["other", "good"]
    assert (await fake.hget(keys.states, "bad") or b"")[:1] == b"x"
    stats = await broker.queue_stats("q")
    assert (stats.archived, stats.active) == (1, 1)


async def test_a_nul_in_a_group_name_or_task_id_is_refused(broker: RedisBroker) -> None:
    with pytest.raises(InvalidArgumentError):
        await broker.enqueue(_message(group="a\x00b"))
    with pytest.raises(InvalidArgumentError):
        await broker.enqueue(_message("id\x00"))
    assert await broker.queues() == []


async def test_the_wake_up_list_stays_bounded_without_consumers(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    for i in range(50):
        await broker.enqueue(_message(f"t{i}"))
    assert await fake.llen(QueueKeys.for_queue("q").notify) <= 8
    await broker.dequeue(["q"], count=50, lease=1000)
    assert await fake.llen(QueueKeys.for_queue("q").notify) == 0


async def test_a_paused_queue_leaves_no_wake_up_tokens(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    await broker.enqueue(_message("t0"))
    await broker.pause_queue("q")
    await broker.enqueue(_message("t1"))
    assert await fake.llen(QueueKeys.for_queue("q").notify) == 0
    await broker.unpause_queue("q")
    assert await fake.llen(QueueKeys.for_queue("q").notify) == 2


async def test_reading_or_sweeping_unknown_queues_writes_nothing(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    assert await broker.dequeue(["nope"], count=5, lease=1000) == []
    assert await broker.forward("nope") == 0
    assert await broker.reclaim_expired("nope", lease=1000) == []
    assert await broker.delete_expired_completed("nope") == 0
    assert await broker.aggregation_check("nope", "g", grace_period=0) is None
    assert await broker.request_cancel("t1", "nope") is None
    assert await fake.keys("*") == []


async def test_a_queue_removal_deletes_every_key_of_the_queue(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    await broker.enqueue(_message("a"), unique_ttl=60_000)
    await broker.enqueue(_message("b", unique_key="k"), unique_ttl=60_000)
    await broker.add_to_group(_message("c", group="g"))
    (delivery,) = await broker.dequeue(["q"], count=1, lease=1000)
    await broker.complete(delivery.ref, retention=60_000)
    await broker.remove_queue("q", force=True)
    assert await fake.keys("taskq:{q}:*") == []
    assert await broker.queues() == []


async def test_stats_have_no_memory_figure_where_the_server_cannot_tell(
    broker: RedisBroker,
) -> None:
    await broker.enqueue(_message())
    assert (await broker.queue_stats("q")).memory_bytes is None


def test_clients_of_ended_event_loops_are_forgotten() -> None:
    server = fakeredis.FakeServer()
    broker = RedisBroker(lambda: fakeredis.aioredis.FakeRedis(server=server))

    async def use() -> int:
        await broker.ping()
        return len(broker._connector._clients)

    assert [asyncio.run(use()) for _ in range(3)] == [1, 1, 1]


def test_the_least_privilege_acl_allows_every_command_the_scripts_call() -> None:
    allowed = {rule[1:] for rule in LEAST_PRIVILEGE_ACL.split() if rule.startswith("+")}
    for name, script in load_scripts().items():
        called = {c.lower() for c in re.findall(r"redis\.call\('(\w+)'", script.plain_source)}
        assert called <= allowed, f"{name} calls {called - allowed}"


async def _entries_naming(fake: fakeredis.aioredis.FakeRedis, queue: str, word: bytes) -> list[str]:
    """Every entry of every key of ``queue`` (field, value or member) that contains ``word``."""
    found = []
    for key in QueueKeys.for_queue(queue).all():
        kind = (await fake.type(key)).decode()
        items: list[bytes] = []
        if kind == "hash":
            for field, value in (await fake.hgetall(key)).items():
                items += [field, value]
        elif kind == "zset":
            items = await fake.zrange(key, 0, -1)
        elif kind == "set":
            items = list(await fake.smembers(key))
        elif kind == "list":
            items = await fake.lrange(key, 0, -1)
        elif kind == "string":
            items = [await fake.get(key)]
        found += [f"{key}: {item!r}" for item in items if word in item]
    return found


async def test_trimming_the_archive_leaves_no_entry_of_a_trimmed_task_in_any_key(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    # A worker-archived task that kept its lock and wrote a result, one that
    # released its lock, one archived from its group and one from scheduled.
    await broker.enqueue(_message("gone-1", unique_key="lock-1"), unique_ttl=60_000)
    (delivery,) = await broker.dequeue(["q"], count=1, lease=1000)
    await broker.write_result(delivery.ref, b"partial")
    await broker.archive(delivery.ref, error="e", release_unique=False)
    await broker.enqueue(_message("gone-2", unique_key="lock-2"), unique_ttl=60_000)
    (delivery,) = await broker.dequeue(["q"], count=1, lease=1000)
    await broker.archive(delivery.ref, error="e")
    await broker.add_to_group(_message("gone-3", group="grp"), unique_ttl=60_000)
    await broker.archive_task("q", "gone-3")
    await broker.schedule(_message("gone-4", unique_key="lock-4"), 10**13, unique_ttl=60_000)
    await broker.archive_task("q", "gone-4")
    await broker.enqueue(_message("kept", unique_key="lock-k"), unique_ttl=60_000)
    assert await _entries_naming(fake, "q", b"gone-")
    assert await broker.trim_archived("q", max_size=0, max_age=None, limit=3) == 3
    assert await broker.trim_archived("q", max_size=0, max_age=None, limit=3) == 1
    assert await _entries_naming(fake, "q", b"gone-") == []
    locks = await _entries_naming(fake, "q", b"lock-")
    assert locks and all("lock-k" in entry for entry in locks)
    assert await _entries_naming(fake, "q", b"kept")
    assert await fake.exists(QueueKeys.for_queue("q").archived) == 0


async def test_trimming_an_unknown_queue_writes_nothing(
    broker: RedisBroker, fake: fakeredis.aioredis.FakeRedis
) -> None:
    assert await broker.trim_archived("nope", max_size=0, max_age=0) == 0
    assert await fake.keys("*") == []
