"""The workloads every benchmark script runs, whatever library it drives.

Each library's script (``benchmarks/peers/<lib>_bench.py``, ``benchmarks/taskq_bench.py``)
defines an *adapter* (how to enqueue one task, how to run one worker process)
and calls :func:`main`. This module owns everything that must be identical
across libraries: the phases, the timing, the Redis counters, the worker
processes and their bounded waits, and the one JSON line of results.

It runs in each library's own virtualenv, so it imports only the standard
library and ``redis`` (every peer depends on redis-py).

How the handler side is measured: every handler calls :func:`record`, which
counts the task and (for latency) keeps ``time.time() - sent``. A daemon
thread in each worker process writes those figures to ``<stats_dir>/<pid>.json``
every 20 ms, so the producer can tell when a drain is complete and read
first/last handler times without adding any Redis traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

WRITE_INTERVAL = 0.02
WARMUP_TASKS = 20
# Callers of the concurrent single-enqueue phase: asyncio tasks for a library
# whose enqueue is a coroutine, threads for one whose enqueue blocks.
CALLERS = 16

# --------------------------------------------------------------------------- handler side

_lock = threading.Lock()
_state: dict[str, Any] = {"pid": 0, "gen": 0, "count": 0, "first": 0.0, "last": 0.0, "lat": []}


def record(sent: float = 0.0) -> None:
    """Count one handled task; ``sent`` (producer's time.time()) > 0 adds a latency sample."""
    now = time.time()
    with _lock:
        if _state["pid"] != os.getpid():
            _restart_writer(os.environ.get("BENCH_STATS_DIR"))
        if _state["count"] == 0:
            _state["first"] = now
            _state["cpu0"] = time.process_time()
        _state["count"] += 1
        _state["last"] = now
        if sent > 0:
            _state["lat"].append(now - sent)


def reset_recorder(stats_dir: Path) -> None:
    """Start counting afresh into ``stats_dir`` (for workers that run in the producer's process)."""
    with _lock:
        _restart_writer(str(stats_dir))


def _restart_writer(stats_dir: str | None) -> None:
    # Runs on the first task of each process (also after a fork, where the
    # parent's writer thread does not exist) and on reset_recorder; the lock is held.
    gen = _state["gen"] + 1
    _state.update(pid=os.getpid(), gen=gen, count=0, first=0.0, last=0.0, cpu0=0.0, lat=[])
    if stats_dir:
        args = (Path(stats_dir), gen)
        threading.Thread(target=_writer, args=args, daemon=True).start()


def _writer(stats_dir: Path, gen: int) -> None:
    path = stats_dir / f"{os.getpid()}.json"
    tmp = stats_dir / f".{os.getpid()}.tmp"
    written = -1
    while True:
        with _lock:
            if _state["gen"] != gen:
                return
            snapshot = dict(_state, lat=list(_state["lat"]))
        if snapshot["count"] != written:
            snapshot["cpu"] = time.process_time() - snapshot["cpu0"] if snapshot["count"] else 0.0
            tmp.write_text(json.dumps(snapshot))
            os.replace(tmp, path)
            written = snapshot["count"]
        time.sleep(WRITE_INTERVAL)


def read_stats(stats_dir: Path) -> list[dict[str, Any]]:
    """Return the latest figures written by every worker process in ``stats_dir``."""
    out = []
    for path in stats_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()))
    return out


# --------------------------------------------------------------------------- adapters


class Adapter(Protocol):
    """What one library's script provides.

    ``open``, ``close`` and ``enqueue`` may be plain functions or coroutines;
    all coroutines run on one event loop for the whole benchmark. Optional
    members, looked up with ``getattr``:

    * ``enqueue_batch(n)``: enqueue ``n`` tasks with the library's batch API;
    * ``latency_env``: environment for the latency phase's worker (a polling
      library may state a shorter poll interval there);
    * ``storage_bytes()``: bytes stored, for brokers that are not Redis (NaN
      when unknown);
    * ``in_process`` and ``start_local_worker()``: the broker lives in the
      producer's process, so its worker runs there too (returns a stop function).
    """

    name: str
    version: str
    worker_config: str
    """The worker's configuration, as stated in the report (concurrency, prefetch, ...)."""

    def open(self, url: str) -> Awaitable[None] | None:
        """Connect the producer."""
        ...

    def close(self) -> Awaitable[None] | None:
        """Disconnect the producer."""
        ...

    def enqueue(self, sent: float) -> Awaitable[None] | None:
        """Enqueue one no-op task carrying the float ``sent`` for its handler."""
        ...

    def run_worker(self, url: str) -> None:
        """Run one worker process until SIGTERM; its handler calls :func:`record`."""
        ...


BatchFn = Callable[[int], Awaitable[None] | None]


async def _call(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


# --------------------------------------------------------------------------- Redis counters


class RedisCounters:
    """Reads INFO from the benchmark's Redis: command calls, memory, CPU."""

    def __init__(self, url: str | None) -> None:
        self._r: Any = None
        if url and url.startswith("redis"):
            import redis

            self._r = redis.Redis.from_url(url)

    def snapshot(self) -> dict[str, float] | None:
        """Total command calls (INFO itself excluded), used_memory and CPU seconds."""
        if self._r is None:
            return None
        stats = self._r.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
        mem = self._r.info("memory")["used_memory"]
        cpu = self._r.info("cpu")
        return {
            "calls": float(calls),
            "memory": float(mem),
            "cpu": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        }


def _delta(before: dict[str, float] | None, after: dict[str, float] | None, key: str) -> float:
    if before is None or after is None:
        return float("nan")
    return after[key] - before[key]


# --------------------------------------------------------------------------- workers


class Workers:
    """Worker processes of one phase, each stopped by its pid."""

    def __init__(
        self, script: str, url: str, count: int, stats_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        env = dict(os.environ, **(env or {}), BENCH_STATS_DIR=str(stats_dir), PYTHONUNBUFFERED="1")
        argv = [sys.executable, script, "worker", "--url", url]
        self.procs: list[subprocess.Popen[bytes]] = []
        log = open(stats_dir / "worker.log", "ab")  # noqa: SIM115 (kept for the processes' life)
        self._log = log
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(
                    argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    def check_alive(self) -> None:
        """Raise RuntimeError if a worker already exited."""
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker pid {p.pid} exited with {p.returncode}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM each worker's process group, then SIGKILL after ``timeout`` seconds."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
            # Children a worker forked share its process group; make sure none outlive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self._log.close()


class LocalWorker:
    """A worker the adapter runs inside the producer's process (the in-memory broker)."""

    def __init__(self, adapter: Any, stats_dir: Path) -> None:
        reset_recorder(stats_dir)
        self._stop: Callable[[], None] = adapter.start_local_worker()

    def check_alive(self) -> None:
        """Nothing to check: it lives in this process."""

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the worker down."""
        self._stop()


# --------------------------------------------------------------------------- phases


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


class Bench:
    """Runs the phases for one adapter and collects one dict of results."""

    def __init__(self, adapter: Adapter, args: argparse.Namespace, script: str) -> None:
        self.a = adapter
        self.args = args
        self.script = script
        self.loop = asyncio.new_event_loop()
        self.redis = RedisCounters(args.url)
        self.out: dict[str, Any] = {
            "lib": adapter.name,
            "version": adapter.version,
            "worker_config": adapter.worker_config,
            "errors": [],
        }
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{adapter.name}-"))

    def run(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on the benchmark's one event loop."""
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def enqueue_n(self, n: int) -> float:
        """Enqueue ``n`` tasks one call at a time; return the seconds it took."""
        fn = self.a.enqueue
        if asyncio.iscoroutinefunction(fn):

            async def go() -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    await fn(0.0)
                return time.perf_counter() - t0

            return float(self.run(go()))
        t0 = time.perf_counter()
        for _ in range(n):
            fn(0.0)
        return time.perf_counter() - t0

    def enqueue_concurrently(self, n: int, callers: int) -> float:
        """Enqueue ``n`` tasks one call at a time from ``callers`` concurrent callers.

        Each caller makes ``n // callers`` calls, one after another, as ``callers``
        request handlers of one web server process would. A library with a
        coroutine enqueue (``enqueue_async`` when it has one besides a blocking
        ``enqueue``) runs them as asyncio tasks on one loop, any other as threads
        sharing the library's client. Returns the seconds until the last call
        returned.
        """
        per = n // callers
        fn = getattr(self.a, "enqueue_async", None) or self.a.enqueue
        if asyncio.iscoroutinefunction(fn):
            call = fn

            async def caller() -> None:
                for _ in range(per):
                    await call(0.0)

            async def go() -> float:
                t0 = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(callers)))
                return time.perf_counter() - t0

            return float(self.run(go()))
        start = threading.Barrier(callers + 1)
        errors: list[BaseException] = []

        def thread_caller() -> None:
            start.wait()
            try:
                for _ in range(per):
                    fn(0.0)
            except BaseException as exc:  # reported by the phase, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=thread_caller, daemon=True) for _ in range(callers)]
        for thread in threads:
            thread.start()
        start.wait()
        t0 = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return seconds

    def batch_n(self, n: int) -> float | None:
        """Enqueue ``n`` tasks with the library's batch API; None when it has none."""
        fn: BatchFn | None = getattr(self.a, "enqueue_batch", None)
        if fn is None:
            return None
        t0 = time.perf_counter()
        if asyncio.iscoroutinefunction(fn):
            self.run(fn(n))
        else:
            fn(n)
        return time.perf_counter() - t0

    def phase_enqueue(self) -> None:
        """Time ``n`` single enqueues; count Redis commands and memory per queued task."""
        n = self.args.n
        # Brokers that are not Redis may tell their own storage size (SQLite: file bytes).
        storage: Callable[[], float] | None = getattr(self.a, "storage_bytes", None)
        stored = storage() if storage else 0.0
        before = self.redis.snapshot()
        seconds = self.enqueue_n(n)
        after = self.redis.snapshot()
        self.out["enqueue_rate"] = n / seconds
        self.out["enqueue_cmds_per_task"] = _delta(before, after, "calls") / n
        self.out["mem_bytes_per_task"] = _delta(before, after, "memory") / n
        if storage is not None and stored == stored:  # NaN: this broker cannot tell
            self.out["mem_bytes_per_task"] = (storage() - stored) / n

    def phase_concurrent(self) -> None:
        """Time ``n`` single enqueues from :data:`CALLERS` concurrent callers in this process."""
        per = self.args.n // CALLERS
        seconds = self.enqueue_concurrently(per * CALLERS, CALLERS)
        self.out["enqueue_concurrent_rate"] = per * CALLERS / seconds

    def phase_batch(self) -> None:
        """Batch enqueue (timed) when the library has one; else refill one by one, untimed.

        The refill only replaces what the previous drain took: a drain stopped
        by the time cap left the rest pending, and the N-process drain also
        stops at ``n`` tasks or at the cap.
        """
        seconds = self.batch_n(self.args.n)
        if seconds is None:
            self.out["batch_rate"] = None
            self.enqueue_n(self.out.get("drain1_handled") or self.args.n)
        else:
            self.out["batch_rate"] = self.args.n / seconds

    def phase_drain(self, procs: int, key: str) -> None:
        """Start ``procs`` workers on the pre-enqueued tasks; time first to last handler start.

        The drain ends when all tasks were handled or ``--drain-cap`` seconds
        after the first one (slow libraries); the rate is over what was handled.
        """
        n = self.args.n
        stats_dir = self.tmp / key
        stats_dir.mkdir()
        before = self.redis.snapshot()
        workers = self._workers(procs, stats_dir)
        try:
            stats = self._wait(workers, stats_dir, n, timeout=120, cap=self.args.drain_cap)
            after = self.redis.snapshot()
        finally:
            workers.stop()
        handled = sum(s["count"] for s in stats)
        first = min(s["first"] for s in stats if s["count"])
        last = max(s["last"] for s in stats if s["count"])
        self.out[f"{key}_rate"] = handled / max(last - first, 1e-9)
        self.out[f"{key}_handled"] = handled
        self.out[f"{key}_cmds_per_task"] = _delta(before, after, "calls") / handled
        self.out[f"{key}_worker_cpu_ms"] = 1000 * sum(s["cpu"] for s in stats) / handled
        self.out[f"{key}_redis_cpu_us"] = 1e6 * _delta(before, after, "cpu") / handled

    def _workers(
        self, procs: int, stats_dir: Path, env: dict[str, str] | None = None
    ) -> Workers | LocalWorker:
        if getattr(self.a, "in_process", False):
            if procs != 1:
                raise NotImplementedError("this broker only serves workers in its own process")
            return LocalWorker(self.a, stats_dir)
        return Workers(self.script, self.args.url, procs, stats_dir, env)

    def _wait(
        self,
        workers: Workers | LocalWorker,
        stats_dir: Path,
        target: int,
        timeout: float,
        cap: float | None = None,
    ) -> list[dict[str, Any]]:
        """Wait for ``target`` handled tasks, or ``cap`` seconds after the first one.

        Raises:
            TimeoutError: no cap was reached and ``target`` was not met in ``timeout`` s.
            RuntimeError: a worker process exited.
        """
        deadline = time.monotonic() + timeout
        while True:
            workers.check_alive()
            stats = read_stats(stats_dir)
            if sum(s["count"] for s in stats) >= target:
                return stats
            started = [s["first"] for s in stats if s["count"]]
            if cap is not None and started and time.time() - min(started) >= cap:
                time.sleep(2 * WRITE_INTERVAL)  # let every writer publish its last figures
                return read_stats(stats_dir)
            if time.monotonic() > deadline:
                done = sum(s["count"] for s in stats)
                raise TimeoutError(f"only {done} of {target} tasks handled in {timeout:.0f} s")
            time.sleep(0.01)

    def phase_latency(self) -> None:
        """One idle worker; enqueue-to-handler-start of tasks sent ``spacing`` s apart."""
        count, spacing = self.args.latency_n, self.args.latency_spacing
        stats_dir = self.tmp / "latency"
        stats_dir.mkdir()
        # A library whose idle worker polls may state a separate latency setting.
        workers = self._workers(1, stats_dir, getattr(self.a, "latency_env", None))
        try:
            # Warm up: the worker is up, connected and idle before the timed tasks.
            self.spaced(WARMUP_TASKS, spacing, stamp=False)
            self._wait(workers, stats_dir, WARMUP_TASKS, timeout=60)
            time.sleep(0.2)
            self.spaced(count, spacing, stamp=True)
            stats = self._wait(workers, stats_dir, WARMUP_TASKS + count, timeout=60)
        finally:
            workers.stop()
        samples = [x * 1000 for s in stats for x in s["lat"]]
        self.out["lat_p50_ms"] = percentile(samples, 0.50)
        self.out["lat_p99_ms"] = percentile(samples, 0.99)
        self.out["lat_max_ms"] = max(samples)

    def spaced(self, count: int, spacing: float, *, stamp: bool) -> None:
        """Enqueue ``count`` tasks ``spacing`` seconds apart (absolute schedule)."""
        fn = self.a.enqueue

        async def go() -> None:
            start = time.time()
            for i in range(count):
                delay = start + i * spacing - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _call(fn(time.time() if stamp else 0.0))

        self.run(go())

    def measure(self) -> dict[str, Any]:
        """Run the phases named in ``--phases``; return the results dict."""
        self.run(_call(self.a.open(self.args.url)))
        phases: dict[str, Callable[[], None]] = {
            "enqueue": self.phase_enqueue,
            "drain1": lambda: self.phase_drain(1, "drain1"),
            "batch": self.phase_batch,
            "drainN": lambda: self.phase_drain(self.args.procs, "drainN"),
            "latency": self.phase_latency,
            "concurrent": self.phase_concurrent,
        }
        try:
            for name in self.args.phases.split(","):
                if name == "drainN" and getattr(self.a, "in_process", False):
                    continue  # its broker lives in this process: no second worker process
                try:
                    phases[name]()
                except Exception as exc:  # one failed phase must not hide the others
                    log = self.tmp / name / "worker.log"
                    tail = log.read_text(errors="replace")[-300:] if log.exists() else ""
                    self.out["errors"].append(f"{name}: {type(exc).__name__}: {exc} {tail}".strip())
        finally:
            self.run(_call(self.a.close()))
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.out.update(procs=self.args.procs, n=self.args.n, drain_cap=self.args.drain_cap)
        return self.out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line shared by every benchmark script."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["bench", "worker"])
    parser.add_argument("--url", required=True, help="broker URL (redis://, sqlite://, memory://)")
    parser.add_argument("--n", type=int, default=20_000, help="tasks per enqueue/drain phase")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--latency-n", type=int, default=500)
    parser.add_argument("--latency-spacing", type=float, default=0.005)
    # Latency first, while the queue is empty (a capped drain leaves tasks behind);
    # the concurrent enqueue last, after every drain (its tasks are not drained).
    parser.add_argument("--phases", default="latency,enqueue,drain1,batch,drainN,concurrent")
    parser.add_argument("--drain-cap", type=float, default=10.0, help="seconds, see phase_drain")
    return parser.parse_args(argv)


def main(adapter: Adapter, script: str, argv: Sequence[str] | None = None) -> None:
    """Entry point of every library script: ``bench`` prints one JSON line, ``worker`` serves."""
    args = parse_args(argv)
    if args.mode == "worker":
        adapter.run_worker(args.url)
        return
    # A SIGTERM from the harness (timeout) must still run the finally blocks that stop workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(adapter, args, script)
    result = bench.measure()
    clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in result.items()}
    print(json.dumps(clean), flush=True)


def wait_for_sigterm() -> None:
    """Block the calling (main) thread until SIGTERM or SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        stop.wait(0.5)
