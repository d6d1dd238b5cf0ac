"""RedisBroker against password, ACL and TLS servers.

Wrong credentials and plaintext-to-TLS fail fast with taskq's own errors; a
password (a random canary) appears in no error, repr or log line; the
documented least-privilege ACL user runs the whole conformance suite;
``rediss://`` verifies the server certificate unless told otherwise.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import taskq
from taskq.brokers.base import Broker
from taskq.brokers.redis import LEAST_PRIVILEGE_ACL, RedisBroker
from taskq.brokers.redis.keys import QueueKeys
from taskq.errors import BrokerAuthError, BrokerConnectionError
from taskq.task import TaskMessage
from taskq.testing import BrokerConformance, FakeClock
from taskq.testing._resp import RespConnection, RespError
from taskq.testing.conformance import CorruptDropLease
from taskq.testing.servers import (
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServerFactory,
    RedisUser,
    TLSFiles,
    require_launcher,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

FAIL_FAST = 2.0  # seconds: a refused login or handshake must not hang or retry for long
LEASE = 30_000


def _canary() -> str:
    return f"canary-{secrets.token_hex(12)}"


def _message(task_id: str) -> TaskMessage:
    return TaskMessage(id=task_id, type="auth:task", payload=b"x", queue="secure")


async def _round_trip(broker: Broker) -> None:
    await broker.ping()
    await broker.enqueue(_message("t1"))
    (delivery,) = await broker.dequeue(["secure"], count=1, lease=LEASE)
    await broker.done(delivery.ref)


def _texts_of(error: BaseException) -> str:
    """Everything an error can show: str, repr, and the formatted chain with causes."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


async def refused_login(url: str, caplog: pytest.LogCaptureFixture) -> tuple[float, str]:
    """Ping a broker at ``url`` expecting BrokerAuthError.

    Returns:
        how long the refusal took (s), and everything it showed: the error's
        texts and chain, the broker's repr and str, and the captured logs.
    """
    caplog.set_level(logging.DEBUG)
    broker = taskq.connect(url)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerAuthError) as caught:
            await broker.ping()
        elapsed = time.monotonic() - started
        shown = "\n".join([_texts_of(caught.value), repr(broker), str(broker), caplog.text])
    finally:
        await broker.close()
    return elapsed, shown


def acl_url(
    servers: RedisCluster | RedisSentinel, *, password: str | None = None, with_ca: bool = True
) -> str:
    """The URL of ``servers`` as their one ACL user (``password`` instead of the right one)."""
    (user,) = servers.users
    return servers.url_for(user.name, password or user.password, with_ca=with_ca)


def _server_cmdline(server: RedisServer) -> str:
    assert server.pid is not None
    return Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize("username", [None, "taskq"], ids=["requirepass", "acl-user"])
async def test_a_wrong_password_fails_fast_with_an_auth_error_that_never_shows_it(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture, username: str | None
) -> None:
    right, wrong = _canary(), _canary()
    server = redis_server_factory(password=right, users=[RedisUser("taskq", right, "~* &* +@all")])
    elapsed, shown = await refused_login(server.url_for(username, wrong), caplog)
    assert elapsed < FAIL_FAST, f"refused login took {elapsed:.2f} s"
    assert wrong not in shown and right not in shown
    assert right not in _server_cmdline(server), "the password must not be on a command line"


async def test_the_right_password_works_and_stays_out_of_reprs_and_logs(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    password = _canary()
    server = redis_server_factory(password=password)
    caplog.set_level(logging.DEBUG)
    broker = taskq.connect(server.url)
    try:
        await _round_trip(broker)
        shown = "\n".join([repr(broker), str(broker), caplog.text])
    finally:
        await broker.close()
    assert password not in shown


# --------------------------------------------------------------------------- least privilege


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server whose default user is locked behind an admin password, plus the taskq ACL user."""
    server = RedisServer(
        require_launcher("acl_server"),
        tmp_path_factory.mktemp("redis-acl"),
        password=_canary(),
        users=[RedisUser("taskq", _canary(), LEAST_PRIVILEGE_ACL)],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _acl_url(server: RedisServer) -> str:
    (user,) = server.users
    return server.url_for(user.name, user.password)


async def test_the_least_privilege_user_cannot_run_dangerous_commands(
    acl_server: RedisServer,
) -> None:
    (user,) = acl_server.users
    with RespConnection(
        "127.0.0.1", acl_server.port, username=user.name, password=user.password
    ) as conn:
        for command in (
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("CONFIG", "GET", "*"),
            ("SET", "other", "1"),
        ):
            with pytest.raises(RespError, match="NOPERM"):
                conn.call(*command)


class TestConformanceUnderTheLeastPrivilegeACL(BrokerConformance):
    """The whole conformance suite, run as the documented least-privilege ACL user."""

    @pytest.fixture
    async def broker(self, clock: FakeClock, acl_server: RedisServer) -> AsyncIterator[Broker]:
        acl_server.flushall()
        broker = RedisBroker.from_url(_acl_url(acl_server), clock=clock)
        try:
            yield broker
        finally:
            await broker.close()

    @pytest.fixture
    def corrupt_drop_lease(self, acl_server: RedisServer) -> CorruptDropLease:
        async def drop(queue: str, task_id: str) -> None:
            acl_server.call("ZREM", QueueKeys.for_queue(queue).leases, task_id)

        return drop


# --------------------------------------------------------------------------- TLS


async def test_rediss_with_the_test_ca_round_trips_a_task(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files)
    assert server.url.startswith("rediss://")
    broker = taskq.connect(server.url)
    try:
        await _round_trip(broker)
    finally:
        await broker.close()


async def test_rediss_verifies_the_certificate_by_default(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files)
    broker = taskq.connect(server.url_for(None, None, with_ca=False))
    try:
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError, match=r"(?i)certificate|verif") as caught:
            await broker.ping()
        assert time.monotonic() - started < FAIL_FAST
        assert not isinstance(caught.value, BrokerAuthError)
    finally:
        await broker.close()


async def test_a_plaintext_client_against_the_tls_port_fails_fast_with_a_connection_error(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files)
    broker = taskq.connect(f"redis://127.0.0.1:{server.port}/0")
    try:
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError) as caught:
            await broker.ping()
        elapsed = time.monotonic() - started
    finally:
        await broker.close()
    assert elapsed < FAIL_FAST, f"plaintext against TLS took {elapsed:.2f} s to fail"
    assert str(server.port) in str(caught.value), "the error should name the address"


async def test_mutual_tls_needs_the_client_certificate(
    redis_server_factory: RedisServerFactory, redis_tls_files: TLSFiles
) -> None:
    server = redis_server_factory(tls=redis_tls_files, config=["tls-auth-clients yes"])
    tls = redis_tls_files
    with_cert = f"{server.url}&ssl_certfile={tls.client_cert}&ssl_keyfile={tls.client_key}"
    broker = taskq.connect(with_cert)
    try:
        await _round_trip(broker)
    finally:
        await broker.close()

    anonymous = taskq.connect(server.url)
    try:
        with pytest.raises(BrokerConnectionError):
            await anonymous.ping()
    finally:
        await anonymous.close()
