"""Conformance: a seeded random walk over the protocol, checked against a model at every step.

After every operation the broker must agree with a small model of what it
stores: per-state counts from ``queue_stats`` add up to ``size``, equal the
``list_tasks`` totals and the model's counts; deliveries come only from
pending tasks; fenced calls succeed exactly when the model says the lease is
held. The walk is bounded and reproducible (the seed is in the test id).
"""

from __future__ import annotations

import random
from collections import Counter

import attrs
import pytest

from taskq.brokers.base import Broker, Delivery
from taskq.errors import LeaseLostError, TaskStateError
from taskq.task import TaskState
from taskq.testing.clock import FakeClock
from taskq.testing.conformance._support import (
    QUEUE,
    A,
    C,
    ConformanceBase,
    G,
    P,
    R,
    S,
    X,
    make_message,
)

__all__ = ["InvariantConformance"]

STEPS = 150
_GRACE = 1_000
_LEASE = 2_000


@attrs.define
class _Task:
    state: TaskState
    group: str = ""
    due: int = 0  # scheduled/retry: due time; completed: expiry; aggregating: time added
    delivery: Delivery | None = None


class _Walk:
    """One random walk: the broker, the clock, the model and the random source."""

    def __init__(self, broker: Broker, clock: FakeClock, seed: int) -> None:
        self.broker = broker
        self.clock = clock
        self.rng = random.Random(seed)
        self.model: dict[str, _Task] = {}
        self.paused = False
        self.started = False

    def ids_in(self, *states: TaskState) -> list[str]:
        return sorted(i for i, t in self.model.items() if t.state in states)

    def pick(self, *states: TaskState) -> str | None:
        ids = self.ids_in(*states)
        return self.rng.choice(ids) if ids else None

    def now(self) -> int:
        return self.clock.now_ms()

    def held(self, task_id: str) -> bool:
        delivery = self.model[task_id].delivery
        return delivery is not None and delivery.lease_expires_at > self.now()

    # ---------------------------------------------------------------- operations

    async def op_enqueue(self) -> None:
        group = self.rng.choice(["", "", "", "g1", "g2"])
        message = make_message(group=group)
        state = await self.broker.enqueue(message)
        self.started = True
        assert state is (G if group else P)
        self.model[message.id] = _Task(state, group, self.now() if group else 0)

    async def op_schedule(self) -> None:
        group = self.rng.choice(["", "", "g1"])
        message = make_message(group=group)
        due = self.now() + self.rng.randrange(1, 3_000)
        assert await self.broker.schedule(message, due) is S
        self.started = True
        self.model[message.id] = _Task(S, group, due)

    async def op_dequeue(self) -> None:
        count = self.rng.randrange(1, 4)
        got = await self.broker.dequeue([QUEUE], count=count, lease=_LEASE)
        pending = self.ids_in(P)
        assert len(got) == (0 if self.paused else min(count, len(pending)))
        for delivery in got:
            task = self.model[delivery.message.id]
            assert task.state is P, f"delivered a {task.state} task"
            task.state, task.delivery = A, delivery

    async def _fenced(self, apply: str) -> None:
        task_id = self.pick(A)
        if task_id is None:
            return
        task = self.model[task_id]
        assert task.delivery is not None
        ref = task.delivery.ref
        held = self.held(task_id)
        millis = self.rng.randrange(1, 2_000)
        try:
            if apply == "done":
                await self.broker.done(ref)
            elif apply == "complete":
                await self.broker.complete(ref, retention=millis)
            elif apply == "retry":
                await self.broker.retry(ref, delay=millis, error="e")
            elif apply == "archive":
                await self.broker.archive(ref, error="e")
            else:
                await self.broker.requeue(ref)
        except LeaseLostError:
            assert not held, f"{apply} refused a held lease"
            return
        assert held, f"{apply} accepted an expired lease"
        if apply == "done":
            del self.model[task_id]
            return
        task.delivery = None
        task.state = {"complete": C, "retry": R, "archive": X, "requeue": P}[apply]
        task.due = self.now() + millis if task.state in (R, C) else 0

    async def op_done(self) -> None:
        await self._fenced("done")

    async def op_complete(self) -> None:
        await self._fenced("complete")

    async def op_retry(self) -> None:
        await self._fenced("retry")

    async def op_archive(self) -> None:
        await self._fenced("archive")

    async def op_requeue(self) -> None:
        await self._fenced("requeue")

    async def op_advance(self) -> None:
        self.clock.advance(self.rng.randrange(0, 1_500))

    async def op_forward(self) -> None:
        now = self.now()
        due = [i for i in self.ids_in(S, R) if self.model[i].due <= now]
        assert await self.broker.forward(QUEUE) == len(due)
        for task_id in due:
            task = self.model[task_id]
            task.state = G if task.group else P
            task.due = now if task.group else 0

    async def op_reclaim(self) -> None:
        now = self.now()
        expired = {i for i in self.ids_in(A) if not self.held(i)}
        got = await self.broker.reclaim_expired(QUEUE, lease=_LEASE, limit=1_000)
        assert {d.message.id for d in got} == expired
        for delivery in got:
            self.model[delivery.message.id].delivery = delivery
            assert delivery.lease_expires_at == now + _LEASE

    async def op_janitor(self) -> None:
        expired = [i for i in self.ids_in(C) if self.model[i].due <= self.now()]
        assert await self.broker.delete_expired_completed(QUEUE, limit=1_000) == len(expired)
        for task_id in expired:
            del self.model[task_id]

    async def op_aggregate(self) -> None:
        group = self.rng.choice(["g1", "g2"])
        members = [i for i in self.ids_in(G) if self.model[i].group == group]
        ready = bool(members) and self.now() - max(self.model[i].due for i in members) >= _GRACE
        set_id = await self.broker.aggregation_check(QUEUE, group, grace_period=_GRACE)
        assert (set_id is not None) == ready
        if set_id is None:
            return
        got = await self.broker.read_aggregation_set(QUEUE, group, set_id)
        assert sorted(m.id for m in got) == sorted(members)
        combined = make_message()
        assert await self.broker.finish_aggregation(QUEUE, group, set_id, combined)
        for task_id in members:
            del self.model[task_id]
        self.model[combined.id] = _Task(P)

    async def op_admin(self) -> None:
        action = self.rng.choice(["delete_task", "run_task", "archive_task", "request_cancel"])
        task_id = self.pick(*TaskState)
        if task_id is None:
            return
        task = self.model[task_id]
        allowed = {
            "delete_task": (P, S, R, X, C, G),
            "run_task": (S, R, X, C, G),
            "archive_task": (P, S, R, G),
            "request_cancel": tuple(TaskState),
        }[action]
        try:
            if action == "request_cancel":
                assert await self.broker.request_cancel(task_id, QUEUE) is task.state
            else:
                await getattr(self.broker, action)(QUEUE, task_id)
        except TaskStateError:
            assert task.state not in allowed, f"{action} refused a {task.state} task"
            return
        assert task.state in allowed, f"{action} accepted a {task.state} task"
        if action == "delete_task":
            del self.model[task_id]
        elif action == "run_task":
            task.state, task.due = P, 0
        elif action == "archive_task" or task.state in (P, S, R, G):
            task.state = X

    async def op_pause(self) -> None:
        if self.started:
            self.paused = not self.paused
            await (self.broker.pause_queue if self.paused else self.broker.unpause_queue)(QUEUE)

    # ---------------------------------------------------------------- checks

    async def check(self, step: str) -> None:
        if not self.started:
            return
        stats = await self.broker.queue_stats(QUEUE)
        counts = {state: stats.count(state) for state in TaskState}
        assert sum(counts.values()) == stats.size, f"after {step}: {counts} vs size {stats.size}"
        expected = Counter(t.state for t in self.model.values())
        assert counts == {s: expected.get(s, 0) for s in TaskState}, f"after {step}"
        assert stats.size == len(self.model), f"after {step}"
        for state in TaskState:
            listed = await self.broker.list_tasks(QUEUE, state, limit=10_000)
            assert sorted(i.id for i in listed) == self.ids_in(state), f"{state} after {step}"
            assert all(i.state is state for i in listed)


_OPS = {
    "op_enqueue": 6,
    "op_schedule": 3,
    "op_dequeue": 5,
    "op_done": 2,
    "op_complete": 2,
    "op_retry": 2,
    "op_archive": 1,
    "op_requeue": 1,
    "op_advance": 3,
    "op_forward": 2,
    "op_reclaim": 1,
    "op_janitor": 1,
    "op_aggregate": 2,
    "op_admin": 2,
    "op_pause": 1,
}


class InvariantConformance(ConformanceBase):
    """A random walk over the protocol keeps every count consistent with a model."""

    @pytest.mark.parametrize("seed", [1, 2, 3, 4])
    async def test_random_walk_keeps_counts_consistent_with_a_model(
        self, broker: Broker, clock: FakeClock, seed: int
    ) -> None:
        walk = _Walk(broker, clock, seed)
        names = list(_OPS)
        weights = list(_OPS.values())
        for step in range(STEPS):
            name = walk.rng.choices(names, weights)[0]
            await getattr(walk, name)()
            await walk.check(f"step {step} ({name}, seed {seed})")
