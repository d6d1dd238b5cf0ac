"""QueueSelector: weighted fair share and strict priority, without a broker."""

from __future__ import annotations

from collections import Counter

from taskq.brokers.base import Delivery
from taskq.runtime.queues import QueueSelector
from taskq.task import TaskMessage


def _deliveries(queue: str, count: int) -> list[Delivery]:
    msg = TaskMessage(id="x", type="t", payload=b"", queue=queue)
    return [Delivery(msg, "tok", 0, 0) for _ in range(count)]


def _simulate(
    selector: QueueSelector, backlog: dict[str, int], fetches: int, batch: int
) -> Counter[str]:
    """Fetch ``batch`` tasks ``fetches`` times as a broker draining queues in order would."""
    served: Counter[str] = Counter()
    for _ in range(fetches):
        order = selector.order()
        got: list[Delivery] = []
        for name in order:
            take = min(backlog[name], batch - len(got))
            backlog[name] -= take
            got += _deliveries(name, take)
            if len(got) == batch:
                break
        selector.record(order, got, batch)
        served.update(d.message.queue for d in got)
    return served


def test_busy_queues_are_served_in_proportion_to_their_weights() -> None:
    selector = QueueSelector({"high": 6, "mid": 3, "low": 1}, strict=False)
    served = _simulate(selector, {"high": 10**6, "mid": 10**6, "low": 10**6}, 1000, 1)
    assert served == Counter(high=600, mid=300, low=100)


def test_shares_hold_with_batched_fetches() -> None:
    selector = QueueSelector({"high": 6, "mid": 3, "low": 1}, strict=False)
    served = _simulate(selector, {"high": 10**6, "mid": 10**6, "low": 10**6}, 100, 10)
    for name, weight in (("high", 6), ("mid", 3), ("low", 1)):
        assert abs(served[name] - weight * 100) <= 20, served


def test_an_idle_queue_does_not_bank_credit_while_empty() -> None:
    selector = QueueSelector({"a": 1, "b": 1}, strict=False)
    backlog = {"a": 10**6, "b": 0}
    _simulate(selector, backlog, 500, 1)  # only "a" has work for a long time
    backlog["b"] = 10**6
    served = _simulate(selector, backlog, 100, 1)
    assert abs(served["a"] - served["b"]) <= 2, served


def test_strict_priority_always_tries_the_heaviest_queue_first() -> None:
    selector = QueueSelector({"low": 1, "high": 6, "mid": 3}, strict=True)
    assert selector.order() == ["high", "mid", "low"]
    selector.record(["high", "mid", "low"], _deliveries("high", 5), 5)
    assert selector.order() == ["high", "mid", "low"]


def test_equal_weights_break_ties_by_name() -> None:
    assert QueueSelector({"b": 2, "a": 2}, strict=False).order() == ["a", "b"]
