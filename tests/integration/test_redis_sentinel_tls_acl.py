"""RedisBroker over Sentinel with TLS everywhere, as the least-privilege ACL user.

One group (1 master, 1 replica, 3 sentinels; TLS on every port, for
replication and for the sentinels' links) serves the module. Tasks round-trip
over ``rediss+sentinel://``; a wrong password fails fast with an auth error
that never shows it; certificates are verified unless the URL says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

import taskq
from taskq.brokers.base import Broker, EnqueueRequest
from taskq.brokers.redis import LEAST_PRIVILEGE_ACL, RedisBroker
from taskq.errors import BrokerAuthError, BrokerConnectionError
from taskq.task import TaskMessage, TaskState
from taskq.testing.servers import RedisSentinel, RedisUser, TLSFiles, require_launcher
from tests.integration.test_redis_auth_tls import FAIL_FAST, LEASE, _canary, acl_url, refused_login

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def tls_acl_sentinel(
    tmp_path_factory: pytest.TempPathFactory, redis_tls_files: TLSFiles
) -> Iterator[RedisSentinel]:
    """A TLS-only Sentinel group whose data nodes know the ``taskq`` least-privilege user."""
    group = RedisSentinel(
        require_launcher("tls_acl_sentinel"),
        tmp_path_factory.mktemp("sentinel-tls-acl"),
        tls=redis_tls_files,
        users=[RedisUser("taskq", _canary(), LEAST_PRIVILEGE_ACL)],
    )
    # start() stops every process it started when it fails.
    group.start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def broker(tls_acl_sentinel: RedisSentinel) -> AsyncIterator[Broker]:
    tls_acl_sentinel.flushall()
    broker = RedisBroker.from_url(acl_url(tls_acl_sentinel))
    try:
        yield broker
    finally:
        await broker.close()


def _message(task_id: str, queue: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="sentinel:task", payload=b"x", queue=queue)


async def test_tasks_round_trip_over_rediss_sentinel_as_the_acl_user(
    tls_acl_sentinel: RedisSentinel, broker: Broker
) -> None:
    assert acl_url(tls_acl_sentinel).startswith("rediss+sentinel://taskq:")
    messages = [_message(f"{queue}-{n}", queue) for n in range(3) for queue in ("a", "b")]
    assert await broker.enqueue(messages[0]) is TaskState.PENDING
    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages[1:]])
    assert results == [TaskState.PENDING] * (len(messages) - 1)

    deliveries = await broker.dequeue(["a", "b"], count=100, lease=LEASE)
    for delivery in deliveries:
        await broker.done(delivery.ref)

    assert sorted(d.message.id for d in deliveries) == sorted(m.id for m in messages)
    assert await broker.dequeue(["a", "b"], count=100, lease=LEASE) == []


async def test_a_wrong_password_fails_fast_with_an_auth_error_that_never_shows_it(
    tls_acl_sentinel: RedisSentinel, caplog: pytest.LogCaptureFixture
) -> None:
    (user,) = tls_acl_sentinel.users
    wrong = _canary()
    elapsed, shown = await refused_login(acl_url(tls_acl_sentinel, password=wrong), caplog)
    assert elapsed < FAIL_FAST, f"refused login took {elapsed:.2f} s"
    assert wrong not in shown and user.password not in shown


async def test_rediss_sentinel_verifies_the_certificates_by_default(
    tls_acl_sentinel: RedisSentinel,
) -> None:
    # Fast and clear: each sentinel is asked once (no per-sentinel retries,
    # which took 11-13 s), and the error names the failed certificate check of
    # each sentinel (redis-py 8 alone says only "network:ConnectionError").
    broker = taskq.connect(acl_url(tls_acl_sentinel, with_ca=False))
    started = time.monotonic()
    try:
        with pytest.raises(BrokerConnectionError) as caught:
            await broker.ping()
    finally:
        await broker.close()
    elapsed = time.monotonic() - started
    assert not isinstance(caught.value, BrokerAuthError)
    assert elapsed < FAIL_FAST, f"refused handshake took {elapsed:.2f} s"
    text = str(caught.value)
    assert "no sentinel named a master for 'mymaster'" in text
    ports = [sentinel.port for sentinel in tls_acl_sentinel.sentinels]
    for port in ports:
        assert f"127.0.0.1:{port}: " in text
    assert text.count("CERTIFICATE_VERIFY_FAILED") == len(ports)
    (user,) = tls_acl_sentinel.users
    assert user.password not in text


def test_the_sync_client_fails_as_fast_and_as_clearly_without_the_ca(
    tls_acl_sentinel: RedisSentinel,
) -> None:
    started = time.monotonic()
    client = taskq.Client(acl_url(tls_acl_sentinel, with_ca=False))
    try:
        with pytest.raises(BrokerConnectionError) as caught:
            client.enqueue(taskq.Task("t", b""))
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert elapsed < FAIL_FAST, f"refused handshake took {elapsed:.2f} s"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
