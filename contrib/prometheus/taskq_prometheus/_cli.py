"""``python -m taskq_prometheus``: serve taskq's metrics on /metrics until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from prometheus_client import ProcessCollector, start_http_server
from prometheus_client.registry import CollectorRegistry

import taskq
from taskq_prometheus._collector import TaskqCollector
from taskq_prometheus._redact import scrub

__all__ = ["DEFAULT_PORT", "build_parser", "main"]

DEFAULT_PORT = 9808

log = logging.getLogger("taskq_prometheus")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of the exporter."""
    parser = argparse.ArgumentParser(
        prog="python -m taskq_prometheus",
        description="Serve taskq's queue and fleet metrics for Prometheus on /metrics.",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="broker URL (default: $TASKQ_BROKER, else sqlite:///taskq.db); "
        "prefer $TASKQ_BROKER for URLs with a password, which other users can read "
        "in the process list",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default: {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--cache-ttl",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="reuse one broker read for this long (default: 5; 0 reads on every scrape)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cache_ttl < 0:
        parser.error("--cache-ttl must be >= 0")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")
    # None lets taskq pick its default (the SQLite file taskq.db), as its CLI does.
    url: str | None = args.broker or os.environ.get("TASKQ_BROKER") or None

    try:
        collector = TaskqCollector(url, cache_ttl=args.cache_ttl)
    except Exception as exc:  # a bad URL: say why, without its password
        print(f"error: {scrub(str(exc), url)}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    try:
        start_http_server(args.port, addr=args.host, registry=registry)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        collector.close()
        return 1
    log.info(
        "taskq_prometheus: serving %r on http://%s:%d/metrics (taskq %s)",
        collector,
        args.host,
        args.port,
        taskq.__version__,
    )
    stop.wait()
    log.info("taskq_prometheus: stopping")
    collector.close()
    return 0
