"""Processes and ports for the test-server fixtures.

A :class:`Launcher` starts ``redis-server`` processes and runs one-shot
``redis-cli`` commands, either from the binaries on ``PATH``
(:class:`LocalLauncher`) or in Docker containers on the host network through
testcontainers (:class:`DockerLauncher`, best effort). Both give back a
:class:`ProcessHandle` that stops the process it started, and only that one.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DockerLauncher",
    "Launcher",
    "LocalLauncher",
    "LocalProcess",
    "ProcessHandle",
    "free_port",
]

# Default ports of services that share the machine (Redis, Sentinel, the
# conventional Cluster ports): never handed out, so no test can disturb them.
_RESERVED_PORTS = frozenset({6379, 6380, 6381, 6382, 26379, 26380, 26381, *range(7000, 7006)})
_PORT_RANGE = (15000, 29999)
_handed_out: set[int] = set()
_lock = threading.Lock()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, bus_offset: int | None = None) -> int:
    """Return a loopback TCP port that is free now and was not handed out before.

    Args:
        bus_offset: also require ``port + bus_offset`` to be free (a Cluster
            node listens on its port + 10000 for the cluster bus).

    Raises:
        RuntimeError: no free port was found after many tries.
    """
    rng = random.Random()
    with _lock:
        for _ in range(500):
            port = rng.randint(*_PORT_RANGE)
            wanted = [port] if bus_offset is None else [port, port + bus_offset]
            if any(p in _RESERVED_PORTS or p in _handed_out for p in wanted):
                continue
            if all(_bindable(p) for p in wanted):
                _handed_out.update(wanted)
                return port
    raise RuntimeError("no free loopback port found")


class ProcessHandle(Protocol):
    """A started server process (or container) that can be stopped."""

    @property
    def pid(self) -> int | None:
        """The OS process id (None for a container)."""
        ...

    @property
    def ident(self) -> str:
        """A short description for messages: ``pid 1234`` or ``container 3f2a``."""
        ...

    def running(self) -> bool:
        """Whether the process is still alive."""
        ...

    def terminate(self, timeout: float = 5.0) -> None:
        """Send SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        ...

    def kill(self) -> None:
        """SIGKILL the process and reap it. Idempotent."""
        ...


class Launcher(Protocol):
    """Starts ``redis-server`` processes and runs ``redis-cli``."""

    name: str

    def spawn(self, args: Sequence[str], workdir: Path) -> ProcessHandle:
        """Start ``redis-server *args`` with ``workdir`` as its working directory."""
        ...

    def run_cli(self, args: Sequence[str], *, timeout: float) -> tuple[int, str]:
        """Run ``redis-cli *args`` to completion; return (exit code, output)."""
        ...


_live: set[ProcessHandle] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Fixtures stop what they start; this only covers an interrupted session.
    for handle in list(_live):
        with contextlib.suppress(Exception):
            handle.kill()


class LocalProcess:
    """A child process started by this test session, stopped by its pid."""

    def __init__(self, argv: Sequence[str], workdir: Path) -> None:
        with open(workdir / "stdout.log", "ab") as out:
            # A new session: Ctrl-C in the terminal reaches pytest only, whose
            # teardown then stops the server in order.
            self._proc = subprocess.Popen(
                list(argv),
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live.add(self)

    @property
    def pid(self) -> int:
        """The OS process id."""
        return self._proc.pid

    @property
    def ident(self) -> str:
        """``pid N``."""
        return f"pid {self._proc.pid}"

    def running(self) -> bool:
        """Whether the process has not exited."""
        return self._proc.poll() is None

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
        if self.running():
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout)
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.running():
            self._proc.kill()
            self._proc.wait(5.0)
        _live.discard(self)

    def __repr__(self) -> str:
        return f"LocalProcess({self.ident})"


class LocalLauncher:
    """Runs the ``redis-server`` and ``redis-cli`` binaries found on ``PATH``."""

    name = "local"

    def __init__(self, server_binary: str, cli_binary: str | None) -> None:
        self.server_binary = server_binary
        self.cli_binary = cli_binary

    @classmethod
    def find(cls) -> LocalLauncher | None:
        """Return a launcher if ``redis-server`` is on ``PATH``, else None."""
        server = shutil.which("redis-server")
        return cls(server, shutil.which("redis-cli")) if server else None

    def spawn(self, args: Sequence[str], workdir: Path) -> LocalProcess:
        """Start ``redis-server *args`` in ``workdir``."""
        return LocalProcess([self.server_binary, *args], workdir)

    def run_cli(self, args: Sequence[str], *, timeout: float) -> tuple[int, str]:
        """Run ``redis-cli *args``; return (exit code, combined output).

        Raises:
            RuntimeError: ``redis-cli`` is not installed.
            subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
        """
        if self.cli_binary is None:
            raise RuntimeError("redis-cli is not on PATH")
        done = subprocess.run(
            [self.cli_binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr


class DockerProcess:
    """A ``redis-server`` running in a container on the host network."""

    def __init__(self, container: Any) -> None:
        self._container = container
        _live.add(self)

    @property
    def pid(self) -> None:
        """Containers have no pid of ours."""
        return None

    @property
    def ident(self) -> str:
        """``container <short id>``."""
        return f"container {self._container.get_wrapped_container().short_id}"

    def running(self) -> bool:
        """Whether the container is still running."""
        wrapped = self._container.get_wrapped_container()
        with contextlib.suppress(Exception):
            wrapped.reload()
        return bool(wrapped.status == "running")

    def terminate(self, timeout: float = 5.0) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout``) and remove the container."""
        with contextlib.suppress(Exception):
            self._container.get_wrapped_container().stop(timeout=max(1, round(timeout)))
        with contextlib.suppress(Exception):
            self._container.stop()
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL and remove the container."""
        with contextlib.suppress(Exception):
            self._container.get_wrapped_container().kill()
        with contextlib.suppress(Exception):
            self._container.stop()
        _live.discard(self)


class DockerLauncher:
    """Runs Redis in containers through testcontainers (best effort).

    Containers use the host network and mount each server's working
    directory at the same path, so ports, config files and certificates are
    exactly those of a local process. Needs Linux (host networking), the
    ``testcontainers`` package and a reachable Docker daemon.
    """

    name = "docker"

    def __init__(self, image: str) -> None:
        self.image = image
        self._tc: Any = importlib.import_module("testcontainers.core.container")

    @classmethod
    def find(cls) -> DockerLauncher | None:
        """Return a launcher if testcontainers is installed and Docker answers, else None."""
        try:
            docker: Any = importlib.import_module("docker")
            importlib.import_module("testcontainers.core.container")
            docker.from_env(timeout=3).ping()
        except Exception:
            return None
        return cls(os.environ.get("TASKQ_TEST_REDIS_IMAGE", "redis:7.2"))

    def _container(self, command: list[str], workdir: Path | None) -> Any:
        container = self._tc.DockerContainer(self.image).with_command(command)
        container = container.with_kwargs(
            network_mode="host",
            user=f"{os.getuid()}:{os.getgid()}",
            working_dir=str(workdir or "/"),
        )
        if workdir is not None:
            container = container.with_volume_mapping(str(workdir), str(workdir), "rw")
        return container

    def spawn(self, args: Sequence[str], workdir: Path) -> DockerProcess:
        """Start ``redis-server *args`` in a container."""
        container = self._container(["redis-server", *args], workdir)
        container.start()
        return DockerProcess(container)

    def run_cli(self, args: Sequence[str], *, timeout: float) -> tuple[int, str]:
        """Run ``redis-cli *args`` in a throw-away container; return (exit code, output)."""
        container = self._container(["redis-cli", *args], None)
        container.start()
        try:
            wrapped = container.get_wrapped_container()
            status = wrapped.wait(timeout=timeout)
            logs = wrapped.logs().decode("utf-8", "replace")
            return int(status.get("StatusCode", 1)), logs
        finally:
            container.stop()
