"""``taskq web``: serve the web dashboard with uvicorn (needs the ``web`` extra).

It listens on 127.0.0.1:8080 by default. Serving on any other address needs
a login: the password comes from ``$TASKQ_WEB_PASSWORD`` or the first line
of ``--password-file`` (never from the command line, where ``ps`` shows it),
the username from ``--username``, ``$TASKQ_WEB_USERNAME`` or ``admin``.
Without a login, only requests addressed to a loopback name (127.0.0.1,
localhost, ::1) are answered, which defeats DNS rebinding.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING

from taskq.cli._common import EXIT_USAGE, CliError, broker_url, common_options
from taskq.cli._parse import parse_positive_int
from taskq.cli.dash import _check_broker

if TYPE_CHECKING:
    import uvicorn

__all__ = ["LOOPBACK_NAMES", "add_parser", "is_loopback", "run_web"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_EXTRA = ("starlette", "jinja2", "uvicorn")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STARTUP_FAILURE = 3  # uvicorn's exit status when the server never started


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``web`` subcommand."""
    parser = subparsers.add_parser(
        "web",
        parents=[common_options()],
        help="serve the web dashboard (pip install 'taskq[web]')",
        description=__doc__.split("\n\n", 1)[1].replace("``", "") if __doc__ else None,
        allow_abbrev=False,  # "--password SECRET" must not pass for --password-file
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    parser.add_argument(
        "--read-only", action="store_true", help="refuse every change (enforced by the server)"
    )
    parser.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="path prefix a reverse proxy strips, e.g. /taskq",
    )
    parser.add_argument("--username", help="login name (default $TASKQ_WEB_USERNAME or admin)")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose first line is the password (default: $TASKQ_WEB_PASSWORD)",
    )
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        help="file holding the session signing key, so logins survive restarts "
        "(default: $TASKQ_WEB_SECRET, else a random key)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name browsers use to reach the dashboard (repeatable)",
    )
    parser.add_argument(
        "--max-payload-length",
        type=parse_positive_int,
        default=4096,
        metavar="N",
        help="cut payloads and results to N characters (default 4096)",
    )
    parser.add_argument(
        "--page-size",
        type=parse_positive_int,
        default=30,
        metavar="N",
        help="tasks per page (default 30)",
    )
    parser.add_argument(
        "--max-page-size",
        type=parse_positive_int,
        default=100,
        metavar="N",
        help="largest ?size= accepted, at most 1000 (default 100)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log level (default info)",
    )
    parser.set_defaults(func=run_web)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return int(text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (no name is resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _require_extra() -> None:
    missing = [name for name in _EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise CliError(
            f"taskq web needs the 'web' extra ({', '.join(missing)} not installed): "
            "pip install 'taskq[web]'"
        )


def run_web(args: argparse.Namespace) -> int:
    """Check the options and the broker, then serve until SIGINT / SIGTERM."""
    _require_extra()
    import logging

    import uvicorn

    from taskq.brokers.registry import redact_url
    from taskq.errors import InvalidArgumentError
    from taskq.web import PasswordAuth, create_app
    from taskq.web._security import SECRET_ENV, read_secret_file

    try:
        auth = PasswordAuth.from_env(password_file=args.password_file, username=args.username)
        secret = (
            read_secret_file(args.secret_file, "secret")
            if args.secret_file
            else os.environ.get(SECRET_ENV) or None
        )
    except InvalidArgumentError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if auth is None and not is_loopback(args.host):
        raise CliError(
            f"refusing to serve the dashboard on {args.host} without a login: set "
            "TASKQ_WEB_PASSWORD or --password-file, or listen on 127.0.0.1",
            EXIT_USAGE,
        )
    allowed: list[str] | None = list(args.allowed_host) or None
    if auth is None:
        allowed = [*LOOPBACK_NAMES, args.host, *args.allowed_host]
    if args.root_path and (not args.root_path.startswith("/") or args.root_path.endswith("/")):
        raise CliError("--root-path must start with '/' and not end with one", EXIT_USAGE)
    url = broker_url(args)
    asyncio.run(_check_broker(args))
    try:
        app = create_app(
            url,
            read_only=args.read_only,
            auth=auth,
            max_payload_length=args.max_payload_length,
            default_page_size=min(args.page_size, args.max_page_size),
            max_page_size=args.max_page_size,
            allowed_hosts=allowed,
            secret_key=secret,
        )
    except InvalidArgumentError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    mode = ", read-only" if args.read_only else ""
    login = f", login as {auth.username!r}" if auth else ", no login"
    proxied = f" (links under {args.root_path}/ for the proxy)" if args.root_path else ""
    print(
        f"taskq web: {redact_url(url)} at http://{shown_host}:{args.port}/{proxied}{mode}{login}",
        flush=True,
    )
    logging.getLogger("taskq.web").setLevel(args.log_level.upper())  # changes are audited
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        log_level=args.log_level,
        server_header=False,
    )
    return _serve(uvicorn.Server(config))


def _serve(server: uvicorn.Server) -> int:
    """Run ``server`` until SIGINT / SIGTERM; 0 after a graceful shutdown.

    While serving, uvicorn handles both signals itself (shut down gracefully;
    a second SIGINT forces it). Afterwards it re-raises the signal to the
    handler it found, which by default kills the process (SIGTERM, exit
    status -15) or raises KeyboardInterrupt (SIGINT). The handler installed
    here instead tells the server to exit, so the re-raised signal is a no-op
    and a signal arriving before uvicorn installs its own still stops it.
    The application's lifespan (which closes the broker) has run by then.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else _STARTUP_FAILURE
