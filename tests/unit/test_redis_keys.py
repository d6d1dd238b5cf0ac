"""The Redis key schema: one hash tag per queue, no collisions, names validated."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from taskq.brokers.redis.keys import QUEUE_KEY_NAMES, FleetKeys, QueueKeys, validate_prefix
from taskq.errors import InvalidArgumentError, InvalidQueueNameError

QUEUE_NAMES = [
    "default",
    "critical",
    "mid:queue",
    "with space",
    "ünïcödé-队列",
    "a*b?[c]",
    "x" * 200,
]


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("queue", QUEUE_NAMES)
def test_every_key_of_a_queue_carries_its_hash_tag(queue: str) -> None:
    keys = QueueKeys.for_queue(queue)
    assert keys.hash_tag == "{" + queue + "}"
    for key in keys.all():
        assert key.startswith("taskq:{" + queue + "}:")


@pytest.mark.parametrize("queue", QUEUE_NAMES)
def test_every_key_of_a_queue_maps_to_one_cluster_slot(queue: str) -> None:
    keys = QueueKeys.for_queue(queue)
    slots = {_slot(key) for key in keys.all()}
    assert slots == {_slot(keys.hash_tag)}


def test_queues_spread_over_different_slots() -> None:
    slots = {_slot(QueueKeys.for_queue(f"queue-{i}").pending) for i in range(64)}
    assert len(slots) > 32


def test_the_slot_depends_only_on_the_queue_name_not_the_prefix() -> None:
    assert _slot(QueueKeys.for_queue("q", "app1").pending) == _slot(
        QueueKeys.for_queue("q", "app2").pending
    )


def test_every_key_name_is_distinct_and_listed_in_order() -> None:
    keys = QueueKeys.for_queue("q")
    assert len(set(QUEUE_KEY_NAMES)) == len(QUEUE_KEY_NAMES)
    assert keys.all() == tuple(f"taskq:{{q}}:{name}" for name in QUEUE_KEY_NAMES)
    assert keys.named(("pending", "meta")) == (keys.pending, keys.meta)


@pytest.mark.parametrize("other", ["a:b", "a:", "a:pending", "ab"])
def test_queues_whose_names_share_a_prefix_never_share_a_key(other: str) -> None:
    assert not set(QueueKeys.for_queue("a").all()) & set(QueueKeys.for_queue(other).all())


def test_global_keys_can_never_collide_with_a_queue_key() -> None:
    fleet = FleetKeys.for_prefix()
    for key in (
        fleet.queues,
        fleet.servers,
        fleet.claims,
        fleet.history("e"),
        fleet.cancel_channel,
    ):
        assert not key.startswith("taskq:{")


def test_fleet_keys_share_one_slot_so_their_scripts_never_cross_slots() -> None:
    fleet = FleetKeys.for_prefix()
    keys = [fleet.servers, fleet.server_data, fleet.schedulers, fleet.scheduler_data, fleet.claims]
    assert len({_slot(k) for k in [*keys, fleet.history("entry-1")]}) == 1


@pytest.mark.parametrize("queue", ["", " ", "a{b", "a}b", "{x}", "tab\there", "nul\x00", " lead"])
def test_a_queue_name_that_would_break_the_tag_is_refused(queue: str) -> None:
    with pytest.raises(InvalidQueueNameError):
        QueueKeys.for_queue(queue)


@pytest.mark.parametrize("prefix", ["", "a{b", "b}", "has space", "ctl\x01", 5])
def test_an_invalid_prefix_is_refused(prefix: object) -> None:
    with pytest.raises(InvalidArgumentError):
        validate_prefix(prefix)
    with pytest.raises(InvalidArgumentError):
        FleetKeys.for_prefix(prefix)  # type: ignore[arg-type]


def test_a_custom_prefix_starts_every_key() -> None:
    keys = QueueKeys.for_queue("q", "myapp")
    assert all(k.startswith("myapp:{q}:") for k in keys.all())
    assert FleetKeys.for_prefix("myapp").queues == "myapp:queues"
