"""Which queues a fetch tries first: weighted fair share or strict priority."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from taskq.brokers.base import Delivery

__all__ = ["QueueSelector"]


class QueueSelector:
    """Orders the queues for each fetch.

    Strict priority: always heaviest first. Weighted (the default): a fair
    share by served count, as in stride scheduling. Each queue has a virtual
    time that grows by ``1 / weight`` per task taken from it, and a fetch tries
    the queue with the smallest virtual time first. With every queue busy, the
    shares converge to the weights (6/3/1 gives 60/30/10 % within a batch or
    two, not only on average as asynq's shuffled order does). A queue found
    empty is moved up to the smallest virtual time of the queues that served,
    so an idle queue does not bank credit and then starve the others.

    Args:
        weights: queue name -> weight (>= 1).
        strict: use strict priority.
    """

    def __init__(self, weights: Mapping[str, int], *, strict: bool) -> None:
        self._weights = dict(weights)
        self._strict_order = sorted(self._weights, key=lambda q: (-self._weights[q], q))
        self._strict = strict or len(self._weights) == 1
        self._vtime = dict.fromkeys(self._weights, 0.0)

    @property
    def queues(self) -> list[str]:
        """Every queue, heaviest first."""
        return list(self._strict_order)

    def order(self) -> list[str]:
        """The order in which the next fetch should try the queues."""
        if self._strict:
            return self._strict_order
        vtime = self._vtime
        return sorted(self._strict_order, key=vtime.__getitem__)  # stable: ties heaviest first

    def record(self, order: Sequence[str], deliveries: Sequence[Delivery], requested: int) -> None:
        """Account for a fetch that tried ``order``, asked for ``requested``, got ``deliveries``."""
        if self._strict:
            return
        served: dict[str, int] = {}
        for delivery in deliveries:
            name = delivery.message.queue
            served[name] = served.get(name, 0) + 1
        if not served:
            return
        vtime, weights = self._vtime, self._weights
        for name, count in served.items():
            if name in vtime:
                vtime[name] += count / weights[name]
        # The broker drains queues in order: every queue before the last one that
        # served (all of them, if the fetch came back short) had nothing more.
        if len(deliveries) < requested:
            exhausted = list(order)
        else:
            last = max(i for i, name in enumerate(order) if name in served)
            exhausted = list(order[:last])
        floor = min(vtime[name] for name in served if name in vtime)
        for name in exhausted:
            if name not in served and vtime[name] < floor:
                vtime[name] = floor
