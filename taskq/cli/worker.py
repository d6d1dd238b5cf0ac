"""``taskq worker APP:MUX``: run a worker server, or a supervisor of several.

``APP:MUX`` names a module and an attribute in it (``myapp.tasks:mux``): a
:class:`taskq.ServeMux`, or a callable returning one. The current directory
is importable, as with ``python -m``.

Examples::

    taskq worker myapp.tasks:mux
    taskq worker myapp.tasks:mux --broker redis://localhost:6379/0 \\
        --queue critical=6 --queue default=3 --queue low=1 --concurrency 20
    taskq worker myapp.tasks:build_mux --processes 4     # a supervisor of 4 workers
    taskq worker myapp.tasks:mux --burst                 # run what is due, then exit 0

Signals: SIGTERM/SIGINT stop gracefully (a second one requeues running
tasks at once), SIGTSTP stops fetching. The supervisor forwards them to its
workers and restarts a worker that dies.

``--burst``: process every task that is pending or due, then exit 0 (see
``Config.burst``). With ``--processes`` each worker bursts on its own; the
supervisor restarts none of them and exits once all have exited: 0 when all
exited 0, else a failing worker's status.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType
from typing import Any

from taskq.cli._common import EXIT_OK, EXIT_RESTART, common_options, load_app_object
from taskq.cli._parse import parse_positive_int

__all__ = ["add_parser", "load_mux", "main", "parse_queue"]

log = logging.getLogger("taskq.worker")

_RESTART_BACKOFF_MAX = 30.0
_HEALTHY_AFTER = 10.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``worker`` subcommand on ``subparsers``."""
    parser = subparsers.add_parser(
        "worker",
        parents=[common_options()],
        help="run a worker server (taskq worker APP:MUX)",
        description="Run a worker server that processes tasks with the handlers of APP:MUX.",
        epilog="Broker: --broker, else $TASKQ_BROKER, else sqlite:///taskq.db.",
    )
    parser.add_argument("app", metavar="APP:MUX", help="module:attribute of a ServeMux")
    parser.add_argument(
        "--concurrency", "-c", type=parse_positive_int, help="tasks at once (default: CPU count)"
    )
    parser.add_argument(
        "--queue",
        "-q",
        action="append",
        type=parse_queue,
        metavar="NAME=WEIGHT",
        help="a queue to serve with its weight (repeatable; default: default=1)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="strict priority: heaviest queue first"
    )
    parser.add_argument(
        "--processes",
        "-p",
        type=parse_positive_int,
        default=1,
        help="run N worker processes under a supervisor that restarts dead ones",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="process every pending or due task, then exit 0 (tasks scheduled or "
        "retried for later do not keep the worker alive)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="how long a graceful stop waits for running tasks (default 8)",
    )
    parser.add_argument(
        "--lease", type=_seconds, metavar="SECONDS", help="task lease length (default 30)"
    )
    parser.add_argument(
        "--retry-delay",
        type=_seconds,
        metavar="SECONDS",
        help="a fixed delay before each retry (default: exponential backoff from ~10 s)",
    )
    parser.add_argument(
        "--strict-broker-checks",
        action="store_true",
        help="refuse to start when the broker runs with a setting that can lose tasks "
        "(Redis maxmemory-policy other than noeviction); default: log a warning",
    )
    parser.add_argument(
        "--no-interrupt",
        action="store_true",
        help="do not raise taskq.Interrupted in a def handler that was cut off (time "
        "limit, cancel, shutdown): it only sees ctx.cancelled and runs on until it returns",
    )
    parser.add_argument(
        "--stuck-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="shut down and exit with status 75 when a handler is still running this "
        "long after its attempt was cut off (blocked where taskq.Interrupted cannot reach "
        "it); --processes then starts a fresh worker (default: never)",
    )
    parser.add_argument(
        "--blocked-loop-warning",
        type=_seconds,
        metavar="SECONDS",
        help="warn, with the blocking line, when an async def handler blocks the event "
        "loop this long (default 1; 0 turns the watchdog off)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    parser.set_defaults(func=run_command)


def parse_queue(text: str) -> tuple[str, int]:
    """Parse ``NAME=WEIGHT`` (or ``NAME``, weight 1).

    Raises:
        argparse.ArgumentTypeError: the weight is not an int >= 1.
    """
    name, sep, weight = text.rpartition("=")
    if not sep:
        name, weight = text, "1"
    try:
        value = int(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"queue weight must be an integer: {text!r}") from None
    if value < 1 or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with WEIGHT >= 1: {text!r}")
    return name, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def load_mux(spec: str) -> Any:
    """Import ``module:attribute`` and return the ServeMux it names (calling a factory).

    Raises:
        CliError: the spec is malformed, the import fails, or it is no ServeMux.
    """
    from taskq.mux import ServeMux

    return load_app_object(spec, (ServeMux,), "APP:MUX", "taskq.ServeMux")


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    logging.getLogger("taskq").setLevel(level)


def _config_from(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if args.concurrency is not None:
        settings["concurrency"] = args.concurrency
    if args.queue:
        settings["queues"] = dict(args.queue)
    if args.strict:
        settings["strict_priority"] = True
    if args.shutdown_timeout is not None:
        settings["shutdown_timeout"] = timedelta(seconds=args.shutdown_timeout)
    if args.lease is not None:
        settings["lease"] = timedelta(seconds=args.lease)
    if args.retry_delay is not None:
        settings["retry_delay"] = _FixedDelay(timedelta(seconds=args.retry_delay))
    if args.strict_broker_checks:
        settings["strict_broker_checks"] = True
    if args.burst:
        settings["burst"] = True
    if args.no_interrupt:
        settings["interrupt_sync_handlers"] = False
    if args.stuck_timeout is not None:
        settings["stuck_handler_timeout"] = timedelta(seconds=args.stuck_timeout)
    if args.blocked_loop_warning is not None:
        settings["blocked_loop_warning"] = (
            timedelta(seconds=args.blocked_loop_warning) if args.blocked_loop_warning else None
        )
    return settings


class _FixedDelay:
    """A ``retry_delay`` giving the same delay every time."""

    def __init__(self, delay: timedelta) -> None:
        self.delay = delay

    def __call__(self, retried: int, error: BaseException, task: Any) -> timedelta:
        return self.delay


def run_command(args: argparse.Namespace) -> int:
    """Run the worker (or the supervisor) described by ``args``; return the exit code."""
    from taskq.runtime.server import default_broker_url

    level = "DEBUG" if getattr(args, "debug", False) else args.log_level
    _configure_logging(level)
    url = getattr(args, "broker", None) or default_broker_url()
    if args.processes > 1:
        return _supervise(args, url)
    return _run_worker(args, url)


def _run_worker(args: argparse.Namespace, url: str) -> int:
    from taskq.runtime.config import Config
    from taskq.runtime.server import Server

    mux = load_mux(args.app)
    config = Config(**_config_from(args))
    server = Server(url, config)
    server.run(mux)
    return EXIT_RESTART if server.restart_requested else EXIT_OK


# What a supervised worker is given as the supervisor was: (option, attribute).
_VALUE_OPTIONS = (
    ("--concurrency", "concurrency"),
    ("--shutdown-timeout", "shutdown_timeout"),
    ("--lease", "lease"),
    ("--retry-delay", "retry_delay"),
    ("--stuck-timeout", "stuck_timeout"),
    ("--blocked-loop-warning", "blocked_loop_warning"),
)
_FLAG_OPTIONS = (
    ("--strict", "strict"),
    ("--strict-broker-checks", "strict_broker_checks"),
    ("--burst", "burst"),
    ("--no-interrupt", "no_interrupt"),
)


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one supervised worker (the broker URL goes by environment)."""
    argv = [sys.executable, "-m", "taskq.cli.worker", args.app, "--log-level", args.log_level]
    for option, name in _VALUE_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            argv += [option, str(value)]
    for name, weight in args.queue or ():
        argv += ["--queue", f"{name}={weight}"]
    argv += [option for option, name in _FLAG_OPTIONS if getattr(args, name)]
    return argv


class _Supervisor:
    """Runs N worker processes; restarts one that dies; forwards stop signals.

    In burst mode a worker that exits is not restarted, and the supervisor
    stops once every worker has exited.
    """

    def __init__(
        self, argv: list[str], env: dict[str, str], count: int, *, burst: bool = False
    ) -> None:
        self._argv = argv
        self._env = env
        self._count = count
        self._burst = burst
        self._children: list[subprocess.Popen[bytes] | None] = [None] * count
        self._started_at = [0.0] * count
        self._backoff = [0.0] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def _spawn(self, slot: int) -> None:
        child = subprocess.Popen(self._argv, env=self._env)
        self._children[slot] = child
        self._started_at[slot] = time.monotonic()
        log.info("supervisor: worker %d started (pid %d)", slot, child.pid)

    def signal_all(self, signum: int) -> None:
        with self._lock:
            for child in self._children:
                if child is not None and child.poll() is None:
                    child.send_signal(signum)

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()
        self.signal_all(signal.SIGTERM)

    def on_tstp(self, signum: int, frame: FrameType | None) -> None:
        self.signal_all(signal.SIGTSTP)

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self.on_stop),
                (signal.SIGINT, self.on_stop),
                (signal.SIGTSTP, self.on_tstp),
            )
        }
        try:
            with self._lock:
                for slot in range(self._count):
                    self._spawn(slot)
            while not self._stopping.is_set():
                if self._burst:
                    if self._all_exited():
                        break
                else:
                    self._restart_dead()
                self._stopping.wait(0.2)
            return self._wait_all()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _all_exited(self) -> bool:
        with self._lock:
            return all(child is None or child.poll() is not None for child in self._children)

    def _restart_dead(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._stopping.is_set():
                return
            for slot, child in enumerate(self._children):
                if child is None or child.poll() is None:
                    continue
                if now - self._started_at[slot] > _HEALTHY_AFTER:
                    self._backoff[slot] = 0.0
                wait = self._backoff[slot]
                if now - self._started_at[slot] < wait:
                    continue
                log.warning(
                    "supervisor: worker %d (pid %d) exited with %s; restarting it",
                    slot,
                    child.pid,
                    child.returncode,
                )
                self._backoff[slot] = min(max(wait * 2, 1.0), _RESTART_BACKOFF_MAX)
                self._spawn(slot)

    def _wait_all(self) -> int:
        code = EXIT_OK
        for child in self._children:
            if child is None:
                continue
            returncode = child.wait()
            if returncode not in (0, -signal.SIGTERM):
                code = returncode if returncode > 0 else 1
        log.info("supervisor: all workers stopped")
        return code


def _supervise(args: argparse.Namespace, url: str) -> int:
    from taskq.brokers.registry import redact_url

    load_mux(args.app)  # fail here, once, rather than in N restarting children
    if url.lower().startswith("memory://"):
        log.warning(
            "supervisor: %s is per process; each worker gets its own empty broker",
            redact_url(url),
        )
    env = dict(os.environ, TASKQ_BROKER=url)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH", "")) if p)
    log.info("supervisor: running %d workers on %s", args.processes, redact_url(url))
    return _Supervisor(_child_argv(args), env, args.processes, burst=args.burst).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``taskq worker`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    from taskq.cli.main import main as taskq_main

    return taskq_main(["worker", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
