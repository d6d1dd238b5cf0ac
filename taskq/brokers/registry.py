"""Broker URLs: ``taskq.connect(url) -> Broker``.

Built-in schemes:

==========================  ===========================================
``memory://``               :class:`~taskq.brokers.memory.InMemoryBroker`
``sqlite:///path/file.db``  :class:`~taskq.brokers.sqlite.SQLiteBroker`
``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
``redis+cluster://``        :class:`~taskq.brokers.redis.RedisBroker`
==========================  ===========================================

Third-party brokers register a factory ``(url: str) -> Broker`` under the
entry-point group ``taskq.brokers`` with the scheme as the entry-point name::

    [project.entry-points."taskq.brokers"]
    mydb = "mypackage.broker:from_url"

Passwords in URLs are never shown: :func:`redact_url` masks them in every
repr, log line and error message taskq produces.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from taskq.errors import InvalidArgumentError, UnknownBrokerError

if TYPE_CHECKING:
    from taskq.brokers.base import Broker

__all__ = ["DEFAULT_BROKER_URL", "connect", "known_schemes", "redact_url", "register_scheme"]

DEFAULT_BROKER_URL = "sqlite:///taskq.db"
ENTRY_POINT_GROUP = "taskq.brokers"

BrokerFactory = Callable[[str], "Broker"]

_BUILTIN: dict[str, str] = {
    "memory": "taskq.brokers.memory:InMemoryBroker.from_url",
    "sqlite": "taskq.brokers.sqlite:SQLiteBroker.from_url",
    "redis": "taskq.brokers.redis:RedisBroker.from_url",
    "rediss": "taskq.brokers.redis:RedisBroker.from_url",
    "unix": "taskq.brokers.redis:RedisBroker.from_url",
    "redis+sentinel": "taskq.brokers.redis:RedisBroker.from_url",
    "rediss+sentinel": "taskq.brokers.redis:RedisBroker.from_url",
    "redis+cluster": "taskq.brokers.redis:RedisBroker.from_url",
    "rediss+cluster": "taskq.brokers.redis:RedisBroker.from_url",
}
_REGISTERED: dict[str, BrokerFactory] = {}

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^@/]*)@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pass|secret|token)=)[^&#]*")


def redact_url(url: str) -> str:
    """Return ``url`` with any password (userinfo or query parameter) replaced by ``***``."""
    text = str(url)
    match = _USERINFO.match(text)
    if match:
        userinfo = match.group("userinfo")
        user, sep, _ = userinfo.partition(":")
        # Without a ":" the userinfo may be a bare password (as some clients
        # read it), so it is masked whole.
        masked = f"{user}:***" if sep else "***"
        text = match.group("scheme") + masked + "@" + text[match.end() :]
    return _QUERY_SECRET.sub(r"\1***", text)


def scheme_of(url: str) -> str:
    """Return the lower-cased scheme of a broker URL.

    Raises:
        InvalidArgumentError: the value has no ``scheme://``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise InvalidArgumentError(
            f"broker URL must look like scheme://..., got {redact_url(str(url))!r}"
        )
    return url.split("://", 1)[0].lower()


def register_scheme(scheme: str, factory: BrokerFactory) -> None:
    """Register ``factory(url) -> Broker`` for ``scheme`` at run time (tests, plug-ins)."""
    _REGISTERED[scheme.lower()] = factory


def _entry_point_factories() -> dict[str, BrokerFactory]:
    found: dict[str, BrokerFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name.lower()] = ep.load()
    return found


def known_schemes() -> list[str]:
    """Every scheme :func:`connect` accepts: built-in, registered and plug-ins."""
    names = set(_BUILTIN) | set(_REGISTERED)
    names.update(ep.name.lower() for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _load_builtin(target: str) -> BrokerFactory:
    module_name, _, attr_path = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def connect(url: str) -> Broker:
    """Return a broker for ``url``.

    Raises:
        UnknownBrokerError: no broker handles the URL's scheme; the message
            lists the known schemes.
        InvalidArgumentError: the URL is malformed.
    """
    scheme = scheme_of(url)
    factory = _REGISTERED.get(scheme)
    if factory is None and scheme in _BUILTIN:
        factory = _load_builtin(_BUILTIN[scheme])
    if factory is None:
        factory = _entry_point_factories().get(scheme)
    if factory is None:
        raise UnknownBrokerError(
            f"no broker for scheme {scheme!r} in {redact_url(url)!r}; "
            f"known schemes: {', '.join(known_schemes())}"
        )
    return factory(url)
