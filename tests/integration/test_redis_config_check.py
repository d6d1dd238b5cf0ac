"""The start-up check of Redis's ``maxmemory-policy`` against real servers.

A worker on a server with an evicting policy logs one warning that names the
policy; ``noeviction`` gives none; strict mode refuses to start. A user that
may not run ``CONFIG`` falls back to ``INFO memory``, and one that may run
neither starts anyway. On a Cluster every master is checked.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskq
from taskq.brokers.redis import LEAST_PRIVILEGE_ACL, RedisBroker
from taskq.errors import BrokerConfigError
from taskq.runtime.config import Config
from taskq.runtime.server import Server
from taskq.testing.servers import RedisCluster, RedisSentinel, RedisServerFactory, RedisUser

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration._worker_app:mux"
WARNING_TEXT = "silently lost"


def _policy_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "maxmemory-policy" in r.getMessage()
    ]


def _start_and_stop(url: str, **config: Any) -> None:
    server = Server(url, Config(concurrency=1, fetch_wait=0.1, **config))
    server.start(taskq.ServeMux())
    server.shutdown()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "allkeys-random"])
def test_a_worker_on_an_evicting_server_warns_once_naming_the_policy(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    server = redis_server_factory(config=[f"maxmemory-policy {policy}"])
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(server.url)
    (warning,) = _policy_warnings(caplog)
    assert f"maxmemory-policy {policy}" in warning
    assert WARNING_TEXT in warning and "noeviction" in warning and "docs/redis.md" in warning
    assert str(server.port) in warning


def test_a_worker_on_a_noeviction_server_does_not_warn(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory(config=["maxmemory-policy noeviction"])
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(server.url)
    assert _policy_warnings(caplog) == []
    assert not [r for r in caplog.records if "maxmemory" in r.getMessage()]


def test_strict_broker_checks_refuse_to_start_on_an_evicting_server(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(config=["maxmemory-policy allkeys-lru"])
    worker = Server(server.url, Config(concurrency=1, strict_broker_checks=True))
    try:
        with pytest.raises(BrokerConfigError, match="maxmemory-policy allkeys-lru"):
            worker.start(taskq.ServeMux())
        assert worker.state == "stopped"
    finally:
        worker.shutdown()


def test_strict_broker_checks_start_on_a_noeviction_server(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(config=["maxmemory-policy noeviction"])
    _start_and_stop(server.url, strict_broker_checks=True)


# --------------------------------------------------------------------------- permissions


def _acl_server(
    factory: RedisServerFactory, rules: str, policy: str = "allkeys-lru"
) -> tuple[str, str]:
    """A server with ``policy`` and an ACL user with ``rules``; returns (url, password)."""
    password = os.urandom(12).hex()
    server = factory(
        password=os.urandom(12).hex(),
        users=[RedisUser("taskq", password, rules)],
        config=[f"maxmemory-policy {policy}"],
    )
    return server.url_for("taskq", password), password


def test_without_config_permission_the_policy_is_read_from_info(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    url, password = _acl_server(redis_server_factory, LEAST_PRIVILEGE_ACL)
    caplog.set_level(logging.DEBUG)
    _start_and_stop(url)
    (warning,) = _policy_warnings(caplog)
    assert "maxmemory-policy allkeys-lru" in warning
    assert password not in caplog.text


def test_without_config_or_info_permission_the_worker_starts_and_says_it_could_not_check(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rules = LEAST_PRIVILEGE_ACL.replace(" +info", "")
    assert rules != LEAST_PRIVILEGE_ACL
    url, password = _acl_server(redis_server_factory, rules)
    caplog.set_level(logging.DEBUG)
    _start_and_stop(url, strict_broker_checks=True)
    assert _policy_warnings(caplog) == []
    (note,) = [r for r in caplog.records if "could not read the maxmemory-policy" in r.message]
    assert note.levelno == logging.INFO
    assert password not in caplog.text


# --------------------------------------------------------------------------- cluster


@pytest.fixture
def one_evicting_master(redis_cluster: RedisCluster) -> Iterator[str]:
    """Set ``allkeys-lru`` on one master of the shared cluster (restored afterwards)."""
    master = redis_cluster.masters()[-1]
    before = master.info("memory")["maxmemory_policy"]
    master.call("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        yield f"{master.host}:{master.port}"
    finally:
        master.call("CONFIG", "SET", "maxmemory-policy", before)


async def test_on_a_cluster_every_master_is_checked(
    redis_cluster: RedisCluster, one_evicting_master: str
) -> None:
    broker = RedisBroker.from_url(redis_cluster.url)
    try:
        (finding,) = [f for f in await broker.check_config() if f.unsafe]
    finally:
        await broker.close()
    assert finding.unsafe
    assert one_evicting_master in finding.message
    assert "maxmemory-policy allkeys-lru" in finding.message
    others = [f"{m.host}:{m.port}" for m in redis_cluster.masters()]
    assert [a for a in others if a in finding.message] == [one_evicting_master]


async def test_a_cluster_of_noeviction_masters_has_no_findings(
    redis_cluster: RedisCluster,
) -> None:
    broker = RedisBroker.from_url(redis_cluster.url)
    try:
        findings = await broker.check_config()
    finally:
        await broker.close()
    assert [f for f in findings if f.unsafe] == []
    (persistence,) = findings  # one report for every master: they persist alike
    masters = [f"{m.host}:{m.port}" for m in redis_cluster.masters()]
    assert all(address in persistence.message for address in masters)


@pytest.mark.parametrize("aof", [True, False])
def test_a_worker_reports_how_the_server_persists(
    redis_server_factory: RedisServerFactory, caplog: pytest.LogCaptureFixture, aof: bool
) -> None:
    server = redis_server_factory(aof=aof)
    caplog.set_level(logging.INFO, logger="taskq.worker")
    _start_and_stop(server.url, strict_broker_checks=True)  # never refused for it
    (record,) = [r for r in caplog.records if "Production settings" in r.getMessage()]
    if aof:
        assert record.levelno == logging.INFO
        assert "persists with AOF (appendfsync always)" in record.getMessage()
    else:
        assert record.levelno == logging.WARNING
        assert "keeps nothing on disk" in record.getMessage()
        assert "appendonly yes" in record.getMessage()


async def test_a_sentinel_master_without_min_replicas_gets_the_recommendation(
    redis_sentinel: RedisSentinel,
) -> None:
    def recommendations(findings: list[Any]) -> list[str]:
        return [f.message for f in findings if "min-replicas-to-write" in f.message]

    broker = RedisBroker.from_url(redis_sentinel.url)
    master = redis_sentinel.master
    before = master.call("CONFIG", "GET", "min-replicas-to-write")[1]
    try:
        master.call("CONFIG", "SET", "min-replicas-to-write", "0")
        (advice,) = recommendations(await broker.check_config())
        assert "min-replicas-max-lag 10" in advice
        master.call("CONFIG", "SET", "min-replicas-to-write", "1")
        assert recommendations(await broker.check_config()) == []
    finally:
        master.call("CONFIG", "SET", "min-replicas-to-write", before)
        await broker.close()


async def test_a_standalone_server_gets_no_sentinel_advice(
    redis_server_factory: RedisServerFactory,
) -> None:
    broker = RedisBroker.from_url(redis_server_factory().url)
    try:
        findings = await broker.check_config()
    finally:
        await broker.close()
    assert not [f for f in findings if "min-replicas" in f.message]


# --------------------------------------------------------------------------- command line


def _worker_command(url: str, tmp_path: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TASKQ_BROKER=url)
    return [sys.executable, "-m", "taskq.cli.worker", APP, *args], env


def test_taskq_worker_prints_the_warning_before_its_start_up_line(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    server = redis_server_factory(config=["maxmemory-policy allkeys-lru"])
    argv, env = _worker_command(server.url, tmp_path)
    stderr = tmp_path / "worker.err"
    with stderr.open("wb") as err:
        worker = subprocess.Popen(argv, env=env, stderr=err, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while "started" not in stderr.read_text() and worker.poll() is None:
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    lines = stderr.read_text().splitlines()
    (warning,) = [i for i, line in enumerate(lines) if "maxmemory-policy allkeys-lru" in line]
    started = next(i for i, line in enumerate(lines) if "started" in line)
    assert warning < started
    assert "WARNING taskq.worker" in lines[warning] and WARNING_TEXT in lines[warning]


def test_taskq_worker_refuses_to_start_with_strict_broker_checks(
    redis_server_factory: RedisServerFactory, tmp_path: Path
) -> None:
    server = redis_server_factory(config=["maxmemory-policy allkeys-lru"])
    argv, env = _worker_command(server.url, tmp_path, "--strict-broker-checks")
    result = subprocess.run(argv, env=env, capture_output=True, timeout=60, cwd=tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "maxmemory-policy allkeys-lru" in err and "strict_broker_checks" in err
    assert "started" not in err
