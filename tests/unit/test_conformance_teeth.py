"""The conformance suite has teeth: every deliberately broken broker fails it.

Each variant subclasses InMemoryBroker and breaks one rule of the protocol;
the suite (limited with ``-k`` to the tests that guard that rule, to stay
fast) must report failures for it, and none for the real broker.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

_MODULE = """
from __future__ import annotations

import pytest

from taskq.brokers.base import LeaseRef
from taskq.brokers.memory import InMemoryBroker
from taskq.testing import BrokerConformance

{broker}


class TestVariant(BrokerConformance):
    @pytest.fixture
    async def broker(self, clock):
        broker = Variant(clock=clock)
        yield broker
        await broker.close()
"""

_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
markers =
    conformance: the taskq broker conformance suite
"""

# name -> (source of class Variant, -k expression selecting the tests that must catch it)
VARIANTS: dict[str, tuple[str, str]] = {
    "delivers_a_task_twice": (
        """
        class Variant(InMemoryBroker):
            def _take(self, queues, count, lease):
                got = super()._take(queues, count, lease)
                for delivery in got[:1]:
                    # Left in the pending list as well: it is handed out again.
                    self._queues[delivery.message.queue].pending[delivery.message.id] = None
                return got
        """,
        "exactly_once or dequeue_is_fifo",
    ),
    "ignores_pause": (
        """
        class Variant(InMemoryBroker):
            async def pause_queue(self, queue):
                with self._lock:
                    self._known(queue)
        """,
        "paused",
    ),
    "ignores_the_lease_token": (
        """
        class Variant(InMemoryBroker):
            def _fenced(self, ref, now):
                q = self._queues.get(ref.queue)
                entry = q.tasks.get(ref.task_id) if q else None
                if entry is not None and entry.token is not None:
                    ref = LeaseRef(ref.queue, ref.task_id, entry.token)
                return super()._fenced(ref, now)
        """,
        "stale_lease or reclaim_gives",
    ),
    "ignores_lease_expiry": (
        """
        class Variant(InMemoryBroker):
            def _fenced(self, ref, now):
                return super()._fenced(ref, 0)
        """,
        "stale_lease or late_ack",
    ),
    "loses_a_task_on_retry": (
        """
        class Variant(InMemoryBroker):
            async def retry(self, ref, **kwargs):
                await super().retry(ref, **kwargs)
                with self._lock:
                    q = self._queues[ref.queue]
                    self._remove(q, q.tasks[ref.task_id])
        """,
        "retry",
    ),
    "never_releases_a_unique_lock": (
        """
        class Variant(InMemoryBroker):
            def _release_lock(self, q, entry):
                pass
        """,
        "unique_lock",
    ),
    "keeps_the_unique_lock_when_archived_by_hand": (
        """
        class Variant(InMemoryBroker):
            def _archive_by_hand(self, q, entry, reason=""):
                held = q.locks.get(entry.msg.unique_key)
                super()._archive_by_hand(q, entry, reason)
                if held is not None:
                    q.locks[entry.msg.unique_key] = held
        """,
        "archiving_a_waiting_task_by_hand",
    ),
    "archiving_by_hand_frees_a_lock_another_task_owns": (
        """
        class Variant(InMemoryBroker):
            def _archive_by_hand(self, q, entry, reason=""):
                super()._archive_by_hand(q, entry, reason)
                q.locks.pop(entry.msg.unique_key, None)
        """,
        "lock_another_task_took",
    ),
    "ignores_the_unique_lock": (
        """
        class Variant(InMemoryBroker):
            def _store(self, message, process_at, unique_ttl, now):
                return super()._store(message, process_at, 0, now)
        """,
        "unique",
    ),
    "forwards_tasks_before_they_are_due": (
        """
        class Variant(InMemoryBroker):
            async def forward(self, queue, *, limit=1000):
                real_now = self._now
                self._now = lambda: real_now() + 1_000
                try:
                    return await super().forward(queue, limit=limit)
                finally:
                    del self._now
        """,
        "forward",
    ),
    "finishes_an_aggregation_twice": (
        """
        class Variant(InMemoryBroker):
            async def finish_aggregation(self, queue, group, set_id, message):
                if not await super().finish_aggregation(queue, group, set_id, message):
                    try:
                        await self.enqueue(message)
                    except Exception:
                        pass
                return True
        """,
        "aggregation",
    ),
    "requeues_at_the_tail": (
        """
        class Variant(InMemoryBroker):
            def _to_pending(self, q, entry, now, *, head=False):
                super()._to_pending(q, entry, now)
        """,
        "requeue",
    ),
    "runs_a_cancelled_task": (
        """
        class Variant(InMemoryBroker):
            def _archive_by_hand(self, q, entry, reason=""):
                if reason:
                    return
                super()._archive_by_hand(q, entry, reason)
        """,
        "cancel",
    ),
    "counts_an_attempt_that_is_not_a_failure": (
        """
        class Variant(InMemoryBroker):
            async def retry(self, ref, *, delay, error, is_failure=True):
                await super().retry(ref, delay=delay, error=error, is_failure=True)
        """,
        "outcome or not_a_failure",
    ),
    "keeps_expired_server_state": (
        """
        class Variant(InMemoryBroker):
            async def write_server_state(self, info, *, ttl):
                await super().write_server_state(info, ttl=ttl * 1000)
        """,
        "server_state",
    ),
    "loses_a_task_when_a_stale_ack_is_refused": (
        """
        from taskq.errors import LeaseLostError

        class Variant(InMemoryBroker):
            async def done(self, ref):
                try:
                    await super().done(ref)
                except LeaseLostError:
                    with self._lock:
                        q = self._queues.get(ref.queue)
                        if q is not None and ref.task_id in q.tasks:
                            self._remove(q, q.tasks[ref.task_id])
                    raise
        """,
        "stale_lease",
    ),
    "trims_the_newest_archived_tasks": (
        """
        class Variant(InMemoryBroker):
            async def trim_archived(self, queue, *, max_size, max_age, limit=1000):
                with self._lock:
                    q = self._queues.get(queue)
                    if q is None or max_size is None:
                        return 0
                    excess = min(max(len(q.archived) - max_size, 0), limit)
                    newest = list(q.archived)[len(q.archived) - excess :]
                    for task_id in newest:
                        self._delete(q, q.tasks[task_id])
                    return excess
        """,
        "trimming_by_size",
    ),
    "trims_the_archive_but_leaves_the_task_behind": (
        """
        class Variant(InMemoryBroker):
            async def trim_archived(self, queue, **bounds):
                # Out of the archive index, but the task itself stays stored.
                self._delete = lambda q, entry: q.archived.pop(entry.msg.id)
                try:
                    return await super().trim_archived(queue, **bounds)
                finally:
                    del self._delete
        """,
        "trim",
    ),
    "trims_without_releasing_the_unique_lock": (
        """
        class Variant(InMemoryBroker):
            async def trim_archived(self, queue, **bounds):
                self._delete = self._remove
                try:
                    return await super().trim_archived(queue, **bounds)
                finally:
                    del self._delete
        """,
        "trimming_releases",
    ),
    "trims_past_the_limit": (
        """
        class Variant(InMemoryBroker):
            async def trim_archived(self, queue, *, max_size, max_age, limit=1000):
                return await super().trim_archived(
                    queue, max_size=max_size, max_age=max_age, limit=limit + 1
                )
        """,
        "at_most_limit",
    ),
    "trims_by_age_one_ms_early": (
        """
        class Variant(InMemoryBroker):
            async def trim_archived(self, queue, *, max_size, max_age, limit=1000):
                if max_age is not None:
                    max_age = max(max_age - 1, 0)
                return await super().trim_archived(
                    queue, max_size=max_size, max_age=max_age, limit=limit
                )
        """,
        "trimming_by_age",
    ),
}


def _run(pytester: pytest.Pytester, broker_source: str, *args: str) -> pytest.RunResult:
    pytester.makeini(_INI)
    source = _MODULE.format(broker=textwrap.dedent(broker_source).strip())
    pytester.makepyfile(test_variant=source)
    return pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", *args)


def test_the_real_broker_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "class Variant(InMemoryBroker):\n    pass")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] > 80


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_broken_broker_fails_the_suite(pytester: pytest.Pytester, variant: str) -> None:
    source, selection = VARIANTS[variant]
    result = _run(pytester, source, "-x", "-k", selection)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, f"{variant} was not caught:\n{result.stdout.str()}"
