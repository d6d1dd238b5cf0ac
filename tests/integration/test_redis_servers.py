"""The real-server fixtures themselves (taskq.testing.servers): sources, ports, lifecycle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskq.testing import _proc, servers
from taskq.testing._resp import RespError, text
from taskq.testing.servers import (
    ExternalRedis,
    RedisCluster,
    RedisSentinel,
    RedisServer,
    RedisServerFactory,
    RedisUser,
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_a_missing_server_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(servers, "find_launcher", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="redis-server"):
        servers.require_launcher("this test")


def test_free_ports_are_never_the_default_ones_nor_handed_out_twice() -> None:
    ports = [_proc.free_port(bus_offset=10000) for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not {6379, 26379, 7000} & set(ports)
    assert all(p + 10000 <= 65535 for p in ports)


def test_urls_carry_quoted_credentials_and_the_ca(tmp_path: Path) -> None:
    launcher = _proc.LocalLauncher("redis-server", None)
    server = RedisServer(launcher, tmp_path, port=12345, password="p@ss/word")
    assert server.url == "redis://:p%40ss%2Fword@127.0.0.1:12345/0"
    assert server.url_for("user", "pw", db=2) == "redis://user:pw@127.0.0.1:12345/2"
    assert "p@ss" not in repr(server) and "p@ss" not in repr(RedisUser("u", "p@ss", "~*"))


@pytest.mark.redis
def test_a_server_stops_by_pid_and_restarts_on_the_same_port_with_its_data(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(aof=True)
    server.call("SET", "key", "kept")
    pid, port = server.pid, server.port
    assert pid is not None and _pid_alive(pid)
    server.restart()
    assert server.port == port and server.pid != pid and not _pid_alive(pid)
    assert server.call("GET", "key") == b"kept"
    new_pid = server.pid
    assert new_pid is not None
    server.stop()
    assert not _pid_alive(new_pid) and server.pids == ()


@pytest.mark.redis
def test_a_password_server_refuses_anonymous_commands(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory(password="secret", users=[RedisUser("reader", "pw", "~* +get")])
    assert server.call("PING") == b"PONG"
    anonymous = RedisServer(server.launcher, server.workdir, port=server.port)
    with pytest.raises(RespError, match="NOAUTH"):
        anonymous.call("GET", "x")


@pytest.mark.redis
def test_an_external_server_is_flushed_only_in_its_own_database(
    redis_server_factory: RedisServerFactory,
) -> None:
    server = redis_server_factory()
    external = ExternalRedis(server.url_for(None, None, db=3))
    external.call("SET", "mine", "1")
    server.call("SET", "other-db", "1")
    external.flushall()
    assert external.call("DBSIZE") == 0
    assert server.call("GET", "other-db") == b"1"
    with pytest.raises(pytest.skip.Exception):
        external.restart()


@pytest.mark.redis
def test_the_cluster_serves_every_slot_with_a_replica_per_master(
    redis_cluster: RedisCluster,
) -> None:
    assert len(redis_cluster.masters()) == 3
    assert len(redis_cluster.pids) == 6
    for node in redis_cluster.nodes:
        assert text(node.call("CLUSTER", "INFO")).startswith("cluster_state:ok")
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")


@pytest.mark.redis
def test_the_sentinels_agree_on_the_master_and_the_replica_follows_it(
    redis_sentinel: RedisSentinel,
) -> None:
    master = redis_sentinel.master
    (replica,) = redis_sentinel.replicas
    assert master.info()["role"] == "master"
    assert replica.info()["master_port"] == str(master.port)
    assert len(redis_sentinel.sentinels) == 3
    assert redis_sentinel.url.endswith("/mymaster/0")
