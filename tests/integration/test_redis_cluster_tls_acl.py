"""RedisBroker on a Redis Cluster served over TLS only, as the least-privilege ACL user.

One cluster (3 masters, 3 replicas; TLS on the client ports, the cluster bus
and replication) serves the module. Tasks reach queues on every master and
come back exactly once over ``rediss+cluster://``; a wrong password fails fast
with an auth error that never shows it; the nodes' certificates are verified
unless the URL says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest

import taskq
from taskq.brokers.base import Broker, EnqueueRequest
from taskq.brokers.redis import LEAST_PRIVILEGE_ACL, RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.errors import BrokerAuthError, BrokerConnectionError
from taskq.task import TaskMessage, TaskState
from taskq.testing.servers import RedisCluster, RedisUser, TLSFiles, require_launcher
from tests.integration.test_redis_auth_tls import FAIL_FAST, LEASE, _canary, acl_url, refused_login

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def tls_acl_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_tls_files: TLSFiles
) -> Iterator[RedisCluster]:
    """A TLS-only cluster whose nodes all know the ``taskq`` least-privilege user."""
    cluster = RedisCluster(
        require_launcher("tls_acl_cluster"),
        tmp_path_factory.mktemp("cluster-tls-acl"),
        tls=redis_tls_files,
        users=[RedisUser("taskq", _canary(), LEAST_PRIVILEGE_ACL)],
    )
    # start() stops every node it started when it fails.
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def queue_per_master(tls_acl_cluster: RedisCluster) -> list[str]:
    """One queue name per master, each served by a different master."""
    by_port: dict[int, str] = {}
    for i in range(200):
        name = f"q{i}"
        slot = tls_acl_cluster.key_slot(QueueKeys.for_queue(name).pending)
        by_port.setdefault(tls_acl_cluster.master_of_slot(slot).port, name)
        if len(by_port) == 3:
            return list(by_port.values())
    raise AssertionError(f"no queue names spread over three masters: {by_port}")


@pytest.fixture
async def broker(tls_acl_cluster: RedisCluster) -> AsyncIterator[Broker]:
    tls_acl_cluster.flushall()
    broker = RedisBroker.from_url(acl_url(tls_acl_cluster))
    try:
        yield broker
    finally:
        await broker.close()


def _message(task_id: str, queue: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="cluster:task", payload=b"x", queue=queue)


async def _drain(broker: Broker, queues: list[str]) -> list[str]:
    """Dequeue and ack everything pending in ``queues``; return the task ids."""
    deliveries = await broker.dequeue(queues, count=100, lease=LEASE)
    for delivery in deliveries:
        await broker.done(delivery.ref)
    return [d.message.id for d in deliveries]


async def test_the_url_is_rediss_cluster_with_the_acl_user(tls_acl_cluster: RedisCluster) -> None:
    url = acl_url(tls_acl_cluster)
    assert url.startswith("rediss+cluster://taskq:")
    assert "ssl_ca_certs=" in url


async def test_tasks_on_every_master_come_back_exactly_once_over_tls(
    broker: Broker, queue_per_master: list[str]
) -> None:
    enqueued = {f"{queue}-{n}" for queue in queue_per_master for n in range(3)}
    for task_id in sorted(enqueued):
        queue = task_id.rsplit("-", 1)[0]
        assert await broker.enqueue(_message(task_id, queue)) is TaskState.PENDING

    delivered = await _drain(broker, queue_per_master)

    assert sorted(delivered) == sorted(enqueued)
    assert await broker.dequeue(queue_per_master, count=100, lease=LEASE) == []


async def test_enqueue_many_stores_tasks_across_queues_on_every_master(
    broker: Broker, queue_per_master: list[str]
) -> None:
    messages = [_message(f"{queue}-{n}", queue) for n in range(4) for queue in queue_per_master]

    results = await broker.enqueue_many([EnqueueRequest(m) for m in messages])

    assert results == [TaskState.PENDING] * len(messages)
    for queue in queue_per_master:
        assert sorted(await _drain(broker, [queue])) == sorted(
            m.id for m in messages if m.queue == queue
        )


async def test_a_wrong_password_fails_fast_with_an_auth_error_that_never_shows_it(
    tls_acl_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    (user,) = tls_acl_cluster.users
    wrong = _canary()
    elapsed, shown = await refused_login(acl_url(tls_acl_cluster, password=wrong), caplog)
    assert elapsed < FAIL_FAST, f"refused login took {elapsed:.2f} s"
    assert wrong not in shown and user.password not in shown


async def test_rediss_cluster_verifies_the_node_certificates_by_default(
    tls_acl_cluster: RedisCluster,
) -> None:
    broker = taskq.connect(acl_url(tls_acl_cluster, with_ca=False))
    try:
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError, match=r"(?i)certificate|verif") as caught:
            await broker.ping()
        elapsed = time.monotonic() - started
    finally:
        await broker.close()
    assert elapsed < FAIL_FAST, f"an untrusted certificate took {elapsed:.2f} s to refuse"
    assert not isinstance(caught.value, BrokerAuthError)
