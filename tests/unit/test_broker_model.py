"""The brokers against each other: random operation sequences, the same observations.

A hypothesis state machine drives the in-memory broker (the reference), the
Redis broker (on fakeredis) and the SQLite broker with the same operations
on one fake clock, and after every step compares what a user can observe:
each operation's result or error, the queue's counts and latency, every
known task's state, and the ids listed per state in order. The conformance
suite checks each transition on its own; this finds the sequences where the
brokers' stored layouts (Redis keeps some pending tasks without a state
entry, SQLite keeps rows) would make them drift apart.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import fakeredis
import fakeredis.aioredis
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from taskq.brokers.base import Broker, Delivery, EnqueueRequest, LeaseRef
from taskq.brokers.memory import InMemoryBroker
from taskq.brokers.redis import RedisBroker
from taskq.brokers.sqlite import SQLiteBroker
from taskq.task import TaskInfo, TaskMessage, TaskState
from taskq.testing import FakeClock

QUEUE = "q"
LEASE = 30_000
_STATES = list(TaskState)


def _outcome(result: Any) -> Any:
    """What a call gave, comparable across brokers: the value, or the error's type."""
    if isinstance(result, BaseException):
        return ("error", type(result).__name__)
    if isinstance(result, list):
        return [_outcome(r) for r in result]
    return result


async def _write_and_complete(broker: Broker, ref: LeaseRef) -> None:
    await broker.write_result(ref, b"result of " + ref.task_id.encode())
    await broker.complete(ref, retention=60_000)


def _seen(info: TaskInfo) -> tuple[Any, ...]:
    """What get_task shows of a task, beyond its id."""
    return (
        info.state,
        info.retried,
        info.last_error,
        info.last_failed_at,
        info.next_process_at,
        info.result,
        info.is_orphaned,
        info.group,
        info.completed_at,
    )


class BrokersAgree(RuleBasedStateMachine):
    """Same operations on every broker; the same observations from each."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = TemporaryDirectory()
        self.clock = FakeClock()
        self.redis = self.redis_client()
        self.brokers: dict[str, Broker] = {
            "memory": InMemoryBroker(clock=self.clock),
            "redis": RedisBroker(self.redis, clock=self.clock),
            "sqlite": SQLiteBroker(str(Path(self.tmp.name) / "model.db"), clock=self.clock),
        }
        self.ids = itertools.count()
        self.known: list[str] = []
        # task id -> broker name -> the lease of its current attempt
        self.leases: dict[str, dict[str, LeaseRef]] = {}
        # aggregation set ids, per broker, of sets not finished yet
        self.sets: list[dict[str, str]] = []

    def redis_client(self) -> Any:
        """The Redis client under the Redis broker: an empty server of its own."""
        return fakeredis.aioredis.FakeRedis(server=fakeredis.FakeServer())

    def teardown(self) -> None:
        for broker in self.brokers.values():
            self.loop.run_until_complete(broker.close())
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()
        self.tmp.cleanup()

    def each(self, call: Callable[[Broker], Awaitable[Any]]) -> dict[str, Any]:
        """Run ``call`` on every broker; return each one's result or error."""
        out: dict[str, Any] = {}
        for name, broker in self.brokers.items():
            try:
                out[name] = self.loop.run_until_complete(call(broker))
            except Exception as exc:
                out[name] = exc
        return out

    def agree(self, results: dict[str, Any], what: str) -> Any:
        seen = {name: _outcome(r) for name, r in results.items()}
        assert len({repr(v) for v in seen.values()}) == 1, f"{what}: {seen}"
        return results["memory"]

    def tick(self) -> None:
        """Each step in a millisecond of its own.

        Tasks that enter a state in the same millisecond may be ordered
        differently by the brokers (SQLite breaks such ties by creation, the
        others by entry); the contract orders by time, to the millisecond.
        """
        self.clock.advance(1)

    def message(self, enqueued: bool = True, **fields: Any) -> TaskMessage:
        task_id = f"t{next(self.ids)}"
        self.known.append(task_id)
        return TaskMessage(
            id=task_id,
            type="model:task",
            payload=b"x",
            queue=QUEUE,
            enqueued_at=self.clock.now_ms() if enqueued else 0,
            **fields,
        )

    @initialize()
    def queue_exists(self) -> None:
        message = self.message()
        self.agree(self.each(lambda b: b.enqueue(message)), "first enqueue")

    # -- producing

    @rule(enqueued=st.booleans())
    def enqueue(self, enqueued: bool) -> None:
        self.tick()
        message = self.message(enqueued)
        self.agree(self.each(lambda b: b.enqueue(message)), "enqueue")

    @rule(
        count=st.integers(1, 4),
        enqueued=st.booleans(),
        repeat=st.booleans(),
        delay=st.sampled_from([0, 0, 1_000]),
    )
    def enqueue_many(self, count: int, enqueued: bool, repeat: bool, delay: int) -> None:
        self.tick()
        requests = [
            EnqueueRequest(self.message(enqueued), self.clock.now_ms() + delay if delay else 0)
            for _ in range(count)
        ]
        if repeat:  # an id already stored, or repeated within the call
            again = TaskMessage(id=self.known[0], type="model:task", payload=b"y", queue=QUEUE)
            requests.append(EnqueueRequest(again))
        self.agree(self.each(lambda b: b.enqueue_many(requests)), "enqueue_many")

    @rule(delay=st.sampled_from([1, 500, 5_000]), group=st.sampled_from(["", "", "g1"]))
    def schedule(self, delay: int, group: str) -> None:
        self.tick()
        message = self.message(group=group)
        due = self.clock.now_ms() + delay
        self.agree(self.each(lambda b: b.schedule(message, process_at=due)), "schedule")

    @rule(key=st.sampled_from(["k1", "k2"]), ttl=st.sampled_from([1_000, 60_000]))
    def enqueue_unique(self, key: str, ttl: int) -> None:
        self.tick()
        message = self.message(unique_key=key)
        self.agree(self.each(lambda b: b.enqueue(message, unique_ttl=ttl)), "unique enqueue")

    # -- consuming

    @rule(count=st.integers(1, 3))
    def dequeue(self, count: int) -> None:
        self.tick()
        got = self.each(lambda b: b.dequeue([QUEUE], count=count, lease=LEASE))
        for name, deliveries in got.items():
            assert not isinstance(deliveries, BaseException), f"{name}: {deliveries!r}"
        ids = {name: [d.message.id for d in ds] for name, ds in got.items()}
        assert len({tuple(v) for v in ids.values()}) == 1, f"dequeue: {ids}"
        self.hold(got)

    def hold(self, got: dict[str, list[Delivery]]) -> None:
        """Keep each broker's lease of every task it handed out."""
        for name, deliveries in got.items():
            for d in deliveries:
                self.leases.setdefault(d.message.id, {})[name] = d.ref

    def held(self, data: st.DataObject) -> tuple[str, dict[str, LeaseRef]] | None:
        if not self.leases:
            return None
        task_id = data.draw(st.sampled_from(sorted(self.leases)))
        return task_id, self.leases.pop(task_id)

    @rule(data=st.data(), how=st.sampled_from(["done", "complete", "retry", "skip", "archive"]))
    def settle(self, data: st.DataObject, how: str) -> None:
        self.tick()
        held = self.held(data)
        if held is None:
            return
        task_id, refs = held
        calls: dict[str, Callable[[Broker, LeaseRef], Awaitable[Any]]] = {
            "done": lambda b, r: b.done(r),
            "complete": lambda b, r: _write_and_complete(b, r),
            "retry": lambda b, r: b.retry(r, delay=1_000, error="boom"),
            "skip": lambda b, r: b.retry(r, delay=0, error="later", is_failure=False),
            "archive": lambda b, r: b.archive(r, error="dead"),
        }
        call = calls[how]
        self.agree(self.each(lambda b: call(b, refs[self.name_of(b)])), f"{how} {task_id}")

    @rule(lease=st.sampled_from([1_000, 60_000]))
    def extend(self, lease: int) -> None:
        self.tick()
        held = sorted(self.leases)

        def extend(b: Broker) -> Awaitable[list[bool]]:
            name = self.name_of(b)
            return b.extend_leases([self.leases[i][name] for i in held], lease=lease)

        self.agree(self.each(extend), "extend_leases")

    @rule()
    def cancel_requested(self) -> None:
        self.tick()
        held = sorted(self.leases)
        got = self.each(lambda b: b.cancel_requested(QUEUE, held))
        self.agree({name: sorted(r) for name, r in got.items()}, "cancel_requested")

    @rule(max_size=st.sampled_from([None, 0, 1]), max_age=st.sampled_from([None, 5_000]))
    def trim_archived(self, max_size: int | None, max_age: int | None) -> None:
        self.tick()
        self.agree(
            self.each(
                lambda b: b.trim_archived(QUEUE, max_size=max_size, max_age=max_age)  # type: ignore[attr-defined]
            ),
            "trim_archived",
        )

    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        self.tick()
        held = self.held(data)
        if held is None:
            return
        _, refs = held
        self.agree(self.each(lambda b: b.requeue(refs[self.name_of(b)])), "requeue")

    # -- time

    @rule(ms=st.sampled_from([1, 600, 6_000, 40_000]))
    def advance(self, ms: int) -> None:
        self.tick()
        self.clock.advance(ms)
        self.agree(self.each(lambda b: b.forward(QUEUE)), "forward")
        got = self.each(lambda b: b.reclaim_expired(QUEUE, lease=LEASE))
        ids = {name: sorted(d.message.id for d in ds) for name, ds in got.items()}
        assert len({tuple(v) for v in ids.values()}) == 1, f"reclaim: {ids}"
        self.hold(got)
        self.agree(self.each(lambda b: b.delete_expired_completed(QUEUE)), "retention")

    # -- by hand

    @rule(data=st.data(), op=st.sampled_from(["cancel", "delete", "archive", "run"]))
    def by_hand(self, data: st.DataObject, op: str) -> None:
        self.tick()
        task_id = data.draw(st.sampled_from(self.known))
        calls: dict[str, Callable[[Broker], Awaitable[Any]]] = {
            "cancel": lambda b: b.request_cancel(task_id, QUEUE),
            "delete": lambda b: b.delete_task(QUEUE, task_id),
            "archive": lambda b: b.archive_task(QUEUE, task_id),
            "run": lambda b: b.run_task(QUEUE, task_id),
        }
        self.agree(self.each(calls[op]), f"{op} {task_id}")

    @rule(state=st.sampled_from([TaskState.PENDING, TaskState.SCHEDULED, TaskState.ARCHIVED]))
    def run_all(self, state: TaskState) -> None:
        self.tick()
        self.agree(self.each(lambda b: b.run_all(QUEUE, state, limit=2)), f"run_all {state}")

    @rule(state=st.sampled_from([TaskState.PENDING, TaskState.RETRY, TaskState.ARCHIVED]))
    def archive_or_delete_all(self, state: TaskState) -> None:
        self.tick()
        if state is TaskState.ARCHIVED:
            self.agree(self.each(lambda b: b.delete_all(QUEUE, state, limit=2)), "delete_all")
        else:
            # one at a time: two tasks archived in one millisecond tie (see tick)
            self.agree(self.each(lambda b: b.archive_all(QUEUE, state, limit=1)), "archive_all")

    @rule(pause=st.booleans())
    def pause(self, pause: bool) -> None:
        self.tick()
        if pause:
            self.agree(self.each(lambda b: b.pause_queue(QUEUE)), "pause")
        else:
            self.agree(self.each(lambda b: b.unpause_queue(QUEUE)), "unpause")

    # -- groups

    @rule(group=st.sampled_from(["g1", "g2"]))
    def add_to_group(self, group: str) -> None:
        self.tick()
        message = self.message(group=group)
        self.agree(self.each(lambda b: b.add_to_group(message)), "add_to_group")

    @rule(group=st.sampled_from(["g1", "g2"]), max_size=st.sampled_from([0, 2]))
    def aggregation_check(self, group: str, max_size: int) -> None:
        self.tick()
        got = self.each(
            lambda b: b.aggregation_check(QUEUE, group, grace_period=0, max_size=max_size)
        )
        made = {name: r is not None for name, r in got.items()}
        assert len(set(made.values())) == 1, f"aggregation_check {group}: {got}"
        if made["memory"]:
            members = {
                name: [
                    m.id
                    for m in self.loop.run_until_complete(
                        self.brokers[name].read_aggregation_set(QUEUE, group, set_id)
                    )
                ]
                for name, set_id in got.items()
            }
            # as a set: members that joined in one millisecond may be in another order
            assert len({tuple(sorted(v)) for v in members.values()}) == 1, f"set: {members}"
            self.sets.append({"group": group, **got})

    @rule(data=st.data(), finish=st.booleans())
    def end_aggregation(self, data: st.DataObject, finish: bool) -> None:
        self.tick()
        if not self.sets:
            return
        entry = self.sets.pop(data.draw(st.integers(0, len(self.sets) - 1)))
        group = entry.pop("group")
        if finish:
            message = self.message()
            results = self.each(
                lambda b: b.finish_aggregation(QUEUE, group, entry[self.name_of(b)], message)
            )
            self.agree(results, "finish_aggregation")
        else:
            results = self.each(
                lambda b: b.delete_aggregation_set(QUEUE, group, entry[self.name_of(b)])
            )
            self.agree(results, "delete_aggregation_set")

    def name_of(self, broker: Broker) -> str:
        return next(name for name, b in self.brokers.items() if b is broker)

    # -- what a user sees

    @invariant()
    def same_counts(self) -> None:
        stats = self.each(lambda b: b.queue_stats(QUEUE))
        # every state's count (QueueStats names them as the states), and the rest
        fields = ("size", *(state.value for state in TaskState), "groups", "paused")
        seen = {name: (*(getattr(s, f) for f in fields), s.latency) for name, s in stats.items()}
        assert len(set(seen.values())) == 1, f"queue_stats {fields} + latency: {seen}"

    @invariant()
    def same_tasks(self) -> None:
        for state in _STATES:
            listed = self.each(lambda b, s=state: b.list_tasks(QUEUE, s, limit=1000))
            ids = {name: [t.id for t in infos] for name, infos in listed.items()}
            if state in (TaskState.ACTIVE, TaskState.AGGREGATING):
                # The tasks of one dequeue became active, and the due tasks of one
                # forward joined their group, in the same millisecond (see tick):
                # SQLite lists them by creation, the others by dequeue or due order.
                ids = {name: sorted(v) for name, v in ids.items()}
            assert len({tuple(v) for v in ids.values()}) == 1, f"list {state}: {ids}"
        for task_id in self.known:
            got = self.each(lambda b, i=task_id: b.get_task(QUEUE, i))
            seen = {
                name: _outcome(r) if isinstance(r, BaseException) else _seen(r)
                for name, r in got.items()
            }
            assert len({repr(v) for v in seen.values()}) == 1, f"get_task {task_id}: {seen}"


BrokersAgree.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_brokers_agree = pytest.mark.filterwarnings("ignore::ResourceWarning")(BrokersAgree.TestCase)
