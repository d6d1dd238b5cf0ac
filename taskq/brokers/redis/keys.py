"""The Redis key schema: every key taskq writes is named here and nowhere else.

Per-queue keys share one Cluster hash tag, ``{<queue>}``, so every key a
script touches lives in one slot::

    <prefix>:{<queue>}:<name>

Queue names are validated by :func:`taskq.task.validate_queue_name`, which
forbids ``{`` and ``}`` (and control characters), so the tag can never be cut
short or widened by the name itself. Keys that span queues or belong to the
fleet live outside any queue tag and are written by their own commands::

    <prefix>:queues                       SET   every known queue
    <prefix>:fleet:{fleet}:<name>         fleet state (servers, schedulers, ...)
    <prefix>:cancel                       pub/sub channel of cancelled task ids

A per-queue key always starts with ``<prefix>:{`` and a global key never
does, so no queue name can collide with a global key. The meaning of each
key is documented in ``docs/redis.md``.
"""

from __future__ import annotations

import attrs

from taskq.errors import InvalidArgumentError
from taskq.task import validate_queue_name

__all__ = [
    "DEFAULT_PREFIX",
    "QUEUE_KEY_NAMES",
    "FleetKeys",
    "QueueKeys",
    "validate_prefix",
]

DEFAULT_PREFIX = "taskq"

QUEUE_KEY_NAMES: tuple[str, ...] = (
    "meta",
    "messages",
    "states",
    "pending",
    "active",
    "leases",
    "tokens",
    "scheduled",
    "retry",
    "archived",
    "completed",
    "completed_expiry",
    "aggregating",
    "groups",
    "task_groups",
    "agg_sets",
    "agg_set_members",
    "agg_set_groups",
    "task_unique",
    "unique_expiry",
    "unique_owner",
    "results",
    "cancelled",
    "paused",
    "stats",
    "notify",
)
"""The name of every per-queue key, in the order of :meth:`QueueKeys.all`.

The Lua scripts refer to keys by these names (``K.pending``); a script whose
header says ``KEYS: all`` receives all of them in this order.
"""


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it can start taskq's key names.

    Raises:
        InvalidArgumentError: it is not a non-empty str, or contains ``{``,
            ``}``, whitespace or control characters (which would break the
            Cluster hash tags or the key layout).
    """
    if not isinstance(prefix, str) or not prefix:
        raise InvalidArgumentError("the Redis key prefix must be a non-empty str")
    if any(c in "{}" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise InvalidArgumentError(
            f"the Redis key prefix {prefix!r} must not contain braces, whitespace "
            "or control characters"
        )
    return prefix


@attrs.frozen(slots=True)
class QueueKeys:
    """Every key of one queue, all under the hash tag ``{<queue>}``.

    Build with :meth:`for_queue`; each attribute named in
    :data:`QUEUE_KEY_NAMES` is one key (see ``docs/redis.md`` for types).
    """

    queue: str
    base: str
    meta: str
    messages: str
    states: str
    pending: str
    active: str
    leases: str
    tokens: str
    scheduled: str
    retry: str
    archived: str
    completed: str
    completed_expiry: str
    aggregating: str
    groups: str
    task_groups: str
    agg_sets: str
    agg_set_members: str
    agg_set_groups: str
    task_unique: str
    unique_expiry: str
    unique_owner: str
    results: str
    cancelled: str
    paused: str
    stats: str
    notify: str

    @classmethod
    def for_queue(cls, queue: str, prefix: str = DEFAULT_PREFIX) -> QueueKeys:
        """The keys of ``queue`` under ``prefix``.

        Raises:
            InvalidQueueNameError: the queue name is invalid.
            InvalidArgumentError: the prefix is invalid.
        """
        validate_queue_name(queue)
        validate_prefix(prefix)
        base = f"{prefix}:{{{queue}}}:"
        return cls(queue, base, *(base + name for name in QUEUE_KEY_NAMES))

    @property
    def hash_tag(self) -> str:
        """The Cluster hash tag shared by every key of the queue: ``{<queue>}``."""
        return "{" + self.queue + "}"

    def all(self) -> tuple[str, ...]:
        """Every key of the queue, in the order of :data:`QUEUE_KEY_NAMES`."""
        return tuple(getattr(self, name) for name in QUEUE_KEY_NAMES)

    def named(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The keys called ``names``, in that order."""
        return tuple(getattr(self, name) for name in names)


@attrs.frozen(slots=True)
class FleetKeys:
    """Keys that belong to no queue (all fleet keys share the tag ``{fleet}``).

    Attributes:
        queues: SET of every known queue name.
        cancel_channel: pub/sub channel carrying cancelled task ids.
        servers: ZSET server id -> expiry (epoch ms).
        server_data: HASH server id -> JSON server state.
        schedulers: ZSET scheduler id -> expiry (epoch ms).
        scheduler_data: HASH scheduler id -> JSON list of entries.
        claims: ZSET ``<entry id>\\0<tick>`` -> claim expiry (epoch ms).
        history_base: prefix of the per-entry history ZSETs (task id -> enqueued_at).
    """

    queues: str
    cancel_channel: str
    servers: str
    server_data: str
    schedulers: str
    scheduler_data: str
    claims: str
    history_base: str

    @classmethod
    def for_prefix(cls, prefix: str = DEFAULT_PREFIX) -> FleetKeys:
        """The global keys under ``prefix``.

        Raises:
            InvalidArgumentError: the prefix is invalid.
        """
        validate_prefix(prefix)
        fleet = f"{prefix}:fleet:{{fleet}}:"
        return cls(
            queues=f"{prefix}:queues",
            cancel_channel=f"{prefix}:cancel",
            servers=fleet + "servers",
            server_data=fleet + "server_data",
            schedulers=fleet + "schedulers",
            scheduler_data=fleet + "scheduler_data",
            claims=fleet + "claims",
            history_base=fleet + "history:",
        )

    def history(self, entry_id: str) -> str:
        """The history ZSET of one scheduler entry."""
        return self.history_base + entry_id
