"""Benchmark taskq against the Python task queues a user would pick instead.

Usage::

    python -m benchmarks.run [--quick] [--only celery,huey,taskq,...] [--rounds N] [--n N]

Starts its own ``redis-server`` on a free loopback port (no persistence),
installs each peer into its own virtualenv under ``benchmarks/.venvs/`` (pinned
versions, reused when present), then runs the same workloads for every
library in subprocesses, rotating the order each round, and prints medians
with min-max and the ratios taskq/peer. Results are also written to
``benchmarks/results/`` as JSON and Markdown. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"
RESULTS = HERE / "results"

PEERS: dict[str, list[str]] = {
    "celery": ["celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0", "hiredis==3.5.0"],
    "dramatiq": ["dramatiq[redis]==2.2.1", "redis==8.1.0", "hiredis==3.5.0"],
    "huey": ["huey==3.5.4", "redis==8.1.0", "hiredis==3.5.0"],
    "taskiq": ["taskiq==0.13.0", "taskiq-redis==1.2.4", "redis==8.1.0", "hiredis==3.5.0"],
    "arq": ["arq==0.28.0", "redis==5.3.1", "hiredis==3.5.0"],
    "rq": ["rq==3.0.0", "redis==8.1.0", "hiredis==3.5.0"],
    # saq 0.26.4 imports typing_extensions without declaring it.
    "saq": ["saq==0.26.4", "redis==8.1.0", "hiredis==3.5.0", "typing_extensions"],
}
TASKQ = ("taskq", "taskq-sqlite", "taskq-memory")
REFERENCE = "redis-benchmark"
ALL = (*TASKQ, *PEERS, REFERENCE)

# The columns of the report: (key, heading, format, higher is better).
METRICS: list[tuple[str, str, str, bool]] = [
    ("enqueue_rate", "enqueue/s", "{:,.0f}", True),
    ("enqueue_concurrent_rate", "enqueue/s, 16 callers", "{:,.0f}", True),
    ("batch_rate", "batch enqueue/s", "{:,.0f}", True),
    ("drain1_rate", "drain 1 proc/s", "{:,.0f}", True),
    ("drainN_rate", "drain N procs/s", "{:,.0f}", True),
    ("lat_p50_ms", "latency p50 ms", "{:.2f}", False),
    ("lat_p99_ms", "latency p99 ms", "{:.2f}", False),
    ("enqueue_cmds_per_task", "cmds/task enqueue", "{:.2f}", False),
    ("drain1_cmds_per_task", "cmds/task drain", "{:.2f}", False),
    ("mem_bytes_per_task", "bytes/queued task", "{:,.0f}", False),
    ("drain1_worker_cpu_ms", "worker CPU ms/task", "{:.3f}", False),
    ("drain1_redis_cpu_us", "Redis CPU us/task", "{:.1f}", False),
]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A loopback port that is free now; never a well-known service port."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in (6379, 6380, 26379) and not 7000 <= port <= 7005:
            return port
    raise RuntimeError("no free loopback port")


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port, stopped by its pid."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        log = open(workdir / "redis.log", "wb")  # noqa: SIM115 (closed in stop())
        self._log = log
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while self.cli("PING")[1].strip() != "PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise SystemExit(f"redis-server did not start (see {workdir / 'redis.log'})")
            time.sleep(0.05)
        self.version = self.cli("INFO", "server")[1].split("redis_version:")[1].split()[0]

    def cli(self, *args: str, timeout: float = 30) -> tuple[int, str]:
        """Run ``redis-cli -p <port> *args``; return (exit code, output)."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def flush(self) -> None:
        """FLUSHALL (between libraries, so each starts from an empty server)."""
        self.cli("FLUSHALL")

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a benchmark script (it then stops its workers), SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=5)


def run_bounded(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run a benchmark script; on timeout SIGTERM it (so it stops its workers), then SIGKILL.

    Raises:
        RuntimeError: it failed or timed out (the message holds its stderr tail).
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise RuntimeError(f"timed out after {timeout:.0f} s") from None
        except BaseException:  # Ctrl-C or SIGTERM: the script must still stop its workers
            _stop(proc)
            raise
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-1500:]
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {tail}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result: {tail}")
    return lines[-1]


# --------------------------------------------------------------------------- virtualenvs


def ensure_venv(peer: str, log: Callable[[str], None]) -> Path:
    """Return the python of ``.venvs/<peer>``, creating it with the pinned requirements."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(PEERS[peer]) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"installing {peer} into {venv.relative_to(ROOT)} ...")
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS[peer]],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"pip install for {peer} failed:\n{done.stdout}{done.stderr}")
    marker.write_text(wanted)
    return python


def taskq_snapshot(ref: str | None, workdir: Path) -> tuple[Path, str]:
    """Copy the taskq package once, so every round measures the same code.

    Others may commit while a run goes on; the copy is of the work tree at
    start, or of commit ``ref``. Returns (the directory to put on
    PYTHONPATH, the version to report).
    """
    dest = workdir / "taskq-src"
    dest.mkdir()

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=60)
        if done.returncode != 0:
            raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.decode()}")
        return done.stdout.decode().strip()

    if ref is None:
        shutil.copytree(
            ROOT / "taskq", dest / "taskq", ignore=shutil.ignore_patterns("__pycache__")
        )
        return dest, git("describe", "--always", "--dirty")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "taskq"], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        raise SystemExit(f"git archive {ref} failed: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return dest, git("rev-parse", "--short", ref)


# --------------------------------------------------------------------------- runs


@dataclass
class Results:
    """Every run's figures, per library."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, lib: str, result: dict[str, Any]) -> None:
        """Keep one run's result dict."""
        self.runs.setdefault(lib, []).append(result)

    def values(self, lib: str, key: str) -> list[float]:
        """The non-missing values of ``key`` across ``lib``'s runs."""
        return [r[key] for r in self.runs.get(lib, []) if isinstance(r.get(key), (int, float))]

    def median(self, lib: str, key: str) -> float | None:
        """The median of ``key`` for ``lib``, or None."""
        values = self.values(lib, key)
        return statistics.median(values) if values else None


def lib_argv(lib: str, python: Path, url: str, args: argparse.Namespace) -> list[str]:
    """The command line of one library's benchmark run."""
    common = [
        "--n",
        str(args.n),
        "--latency-n",
        str(args.latency_n),
        "--procs",
        str(args.procs),
        "--drain-cap",
        str(args.drain_cap),
    ]
    if lib in TASKQ:
        return [sys.executable, str(HERE / "taskq_bench.py"), "bench", "--url", url, *common]
    return [str(python), str(HERE / "peers" / f"{lib}_bench.py"), "bench", "--url", url, *common]


def url_for(lib: str, redis: RedisServer, workdir: Path, round_no: int) -> str:
    """The broker URL a library's run uses."""
    if lib == "taskq-memory":
        return "memory://"
    if lib == "taskq-sqlite":
        return f"sqlite:///{workdir / f'bench-{round_no}.db'}"
    return redis.url


def reference_run(redis: RedisServer, quick: bool) -> dict[str, Any]:
    """``redis-benchmark`` on the same server: the physical reference."""
    n = "20000" if quick else "100000"
    _, sha = redis.cli("SCRIPT", "LOAD", "return 1")
    sha = sha.strip()
    cases = {
        "ping_1client_rate": ["-c", "1", "-n", str(int(n) // 5), "ping"],
        "set_rate": ["-n", n, "set", "key:__rand_int__", "x"],
        "set_p16_rate": ["-n", n, "-P", "16", "set", "key:__rand_int__", "x"],
        "evalsha_rate": ["-n", n, "evalsha", sha, "0"],
        "evalsha_p16_rate": ["-n", n, "-P", "16", "evalsha", sha, "0"],
    }
    out: dict[str, Any] = {"lib": REFERENCE, "version": redis.version, "errors": []}
    for key, extra in cases.items():
        done = subprocess.run(
            [
                "redis-benchmark",
                "-h",
                "127.0.0.1",
                "-p",
                str(redis.port),
                "-q",
                "-r",
                "100000",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        match = re.search(r"([\d.]+) requests per second", done.stdout.replace("\r", "\n"))
        if match:
            out[key] = float(match.group(1))
        else:
            out["errors"].append(f"{key}: {done.stdout[-200:]} {done.stderr[-200:]}")
    redis.flush()
    return out


# --------------------------------------------------------------------------- report


def cell(results: Results, lib: str, key: str, fmt: str) -> str:
    """``median (min-max)`` of one metric, or an em dash."""
    values = results.values(lib, key)
    if not values:
        return "—"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def best_peer(results: Results, key: str, higher: bool) -> tuple[str, float] | None:
    """The peer with the best median of ``key``."""
    found = [(lib, m) for lib in PEERS if (m := results.median(lib, key)) is not None]
    if not found:
        return None
    return (max if higher else min)(found, key=lambda item: item[1])


def report(results: Results, meta: dict[str, Any]) -> str:
    """The Markdown report: machine, tables, ratios and targets."""
    libs = [lib for lib in (*TASKQ, *PEERS) if lib in results.runs]
    lines = [
        "## Machine and run",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
    ]
    groups = [METRICS[:6], METRICS[6:]]
    for group in groups:
        lines.append("| library | " + " | ".join(h for _, h, _, _ in group) + " |")
        lines.append("|---" * (len(group) + 1) + "|")
        for lib in libs:
            cells = [cell(results, lib, k, f) for k, _, f, _ in group]
            lines.append(f"| {lib} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Worker configuration (one process; N-process drains run N of these):", ""]
    for lib in libs:
        runs = results.runs[lib]
        versions = list(dict.fromkeys(str(r.get("version", "")) for r in runs if "version" in r))
        config = next((r["worker_config"] for r in runs if "worker_config" in r), "")
        lines.append(f"- **{lib}** {' / '.join(versions)}: {config}")
        if len(versions) > 1:
            lines.append(f"  - WARNING: {lib} changed between rounds; its medians mix versions")
    errors = [
        f"- {lib}: {e}" for lib in libs for run in results.runs[lib] for e in run.get("errors", [])
    ]
    capped = [
        f"- {lib} {key}: {run[key + '_handled']:,} of {run['n']:,} tasks in {run['drain_cap']:g} s"
        for lib in libs
        for run in results.runs[lib]
        for key in ("drain1", "drainN")
        if run.get(key + "_handled") not in (None, run.get("n"))
    ]
    if capped:
        lines += ["", "Drains stopped by the time cap (rate over the tasks handled):", "", *capped]
    if errors:
        lines += ["", "Errors:", "", *errors]
    lines += ["", *ratios(results), "", *targets(results), ""]
    ref = results.runs.get(REFERENCE)
    if ref:
        lines += ["## redis-benchmark on the same server (requests/s, 50 clients unless noted)", ""]
        for key, label in [
            ("ping_1client_rate", "PING, 1 client, no pipeline (one round trip)"),
            ("set_rate", "SET"),
            ("set_p16_rate", "SET, pipeline 16"),
            ("evalsha_rate", "EVALSHA `return 1`"),
            ("evalsha_p16_rate", "EVALSHA `return 1`, pipeline 16"),
        ]:
            lines.append(f"- {label}: {cell(results, REFERENCE, key, '{:,.0f}')}")
    return "\n".join(lines) + "\n"


def ratios(results: Results) -> list[str]:
    """taskq (Redis) / peer for every metric, from the medians."""
    if "taskq" not in results.runs:
        return ["(no taskq Redis run: no ratios)"]
    peers = [p for p in PEERS if p in results.runs]
    out = [
        "## Ratios taskq (Redis) / peer, from the medians",
        "",
        "Rates: above 1 means taskq is faster. Latency, commands, bytes, CPU: below 1 means "
        "taskq uses less.",
        "",
        "| metric | " + " | ".join(peers) + " |",
        "|---" * (len(peers) + 1) + "|",
    ]
    for key, heading, _, _ in METRICS:
        mine = results.median("taskq", key)
        row = []
        for peer in peers:
            theirs = results.median(peer, key)
            row.append("—" if not mine or not theirs else f"{mine / theirs:.2f}")
        out.append(f"| {heading} | " + " | ".join(row) + " |")
    return out


def targets(results: Results) -> list[str]:
    """The targets of the benchmark issue, checked on the medians."""

    def check(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**holds**" if ok else "**does not hold**")

    def get(key: str) -> float | None:
        return results.median("taskq", key)

    out = ["## Targets (taskq on Redis, medians)", ""]
    rows: list[tuple[str, str, bool | None]] = []
    for key, factor, label in [
        ("enqueue_rate", 1.5, "single enqueue >= 1.5x the best peer"),
        ("drain1_rate", 3.0, "one-process drain >= 3x the best peer"),
    ]:
        best, mine = best_peer(results, key, True), get(key)
        if best and mine:
            rows.append(
                (
                    label,
                    f"{mine:,.0f} vs {best[0]} {best[1]:,.0f} = {mine / best[1]:.2f}x",
                    mine >= factor * best[1],
                )
            )
        else:
            rows.append((label, "not measured", None))
    batch = get("batch_rate")
    rows.append(
        (
            "batch enqueue >= 100,000/s",
            f"{batch:,.0f}" if batch else "not measured",
            None if batch is None else batch >= 100_000,
        )
    )
    p50, p99 = get("lat_p50_ms"), get("lat_p99_ms")
    rows.append(
        (
            "latency p50 <= 1 ms",
            f"{p50:.2f} ms" if p50 else "not measured",
            None if p50 is None else p50 <= 1.0,
        )
    )
    rows.append(
        (
            "latency p99 <= 3 ms",
            f"{p99:.2f} ms" if p99 else "not measured",
            None if p99 is None else p99 <= 3.0,
        )
    )
    best, mem = best_peer(results, "mem_bytes_per_task", False), get("mem_bytes_per_task")
    rows.append(
        (
            "bytes per queued task <= best peer",
            f"{mem:,.0f} vs {best[0]} {best[1]:,.0f}" if best and mem else "not measured",
            None if not (best and mem) else mem <= best[1],
        )
    )
    out += ["| target | measured | |", "|---|---|---|"]
    out += [f"| {label} | {measured} | {check(ok)} |" for label, measured, ok in rows]
    return out


# --------------------------------------------------------------------------- main


def machine(redis: RedisServer) -> dict[str, Any]:
    """What the report says about the machine."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores (nproc)": os.cpu_count(),
        "CPU": model,
        "Python": platform.python_version(),
        "redis-server": redis.version,
        "load average at start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The harness's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 tasks, 1 round")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ALL)}")
    parser.add_argument("--rounds", type=int, help="rounds, order rotated (default 3; quick 1)")
    parser.add_argument("--n", type=int, help="tasks per phase (default 20,000; quick 2,000)")
    parser.add_argument("--latency-n", type=int, help="latency samples (default 500; quick 100)")
    parser.add_argument(
        "--procs",
        type=int,
        default=os.cpu_count() or 2,
        help="worker processes of the N-process drain (default: cores)",
    )
    parser.add_argument(
        "--drain-cap",
        type=float,
        default=10.0,
        help="stop a drain after this many seconds of handling (default 10)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per library run, seconds")
    parser.add_argument(
        "--taskq-ref",
        help="benchmark taskq as of this git commit (default: the work tree as the run starts)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.n = args.n or (2_000 if args.quick else 20_000)
    args.latency_n = args.latency_n or (100 if args.quick else 500)
    names = [x.strip() for x in args.only.split(",") if x.strip()] or list(ALL)
    unknown = set(names) - set(ALL)
    if unknown:
        parser.error(f"unknown names in --only: {', '.join(sorted(unknown))}")
    args.libs = [lib for lib in ALL if lib in names]
    return args


def log(message: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_all(
    args: argparse.Namespace,
    pythons: dict[str, Path],
    workdir: Path,
    source: Path,
    version: str,
) -> tuple[Results, dict[str, Any]]:
    """Start redis-server, run every round, stop it; return the results and the run's facts."""
    redis = RedisServer(workdir)
    results = Results()
    started = time.monotonic()
    try:
        meta = machine(redis)
        meta["command"] = args.command
        meta["settings"] = (
            f"{args.n:,} tasks per phase, {args.latency_n} latency samples "
            f"{5} ms apart, {args.procs} processes for the N-process drain, "
            f"{args.rounds} round(s), drain cap {args.drain_cap:.0f} s"
        )
        meta["taskq"] = version
        log(f"redis-server {redis.version} on port {redis.port}, pid {redis.proc.pid}")
        runnable = [lib for lib in args.libs if lib != REFERENCE]
        for round_no in range(args.rounds):
            shift = round_no % max(1, len(runnable))
            order = runnable[shift:] + runnable[:shift]
            for lib in order:
                redis.flush()
                url = url_for(lib, redis, workdir, round_no)
                log(f"round {round_no + 1}/{args.rounds}: {lib}")
                argv_ = lib_argv(lib, pythons.get(lib, Path(sys.executable)), url, args)
                env = dict(os.environ)
                if lib in TASKQ:
                    env.update(PYTHONPATH=str(source), BENCH_TASKQ_VERSION=version)
                try:
                    result = json.loads(run_bounded(argv_, args.timeout, env))
                except RuntimeError as exc:
                    result = {"lib": lib, "errors": [f"run failed: {exc}"]}
                results.add(lib, result)
            if REFERENCE in args.libs:
                results.add(REFERENCE, reference_run(redis, args.quick))
        meta["load average at end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        meta["wall time"] = f"{time.monotonic() - started:.0f} s"
    finally:
        redis.stop()
    return results, meta


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the report; return the exit code."""
    args = parse_args(argv)
    args.command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    pythons = {p: ensure_venv(p, log) for p in args.libs if p in PEERS}
    workdir = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    # A SIGTERM must still reach the finally blocks, which stop redis-server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        source, version = taskq_snapshot(args.taskq_ref, workdir)
        results, meta = run_all(args, pythons, workdir, source, version)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, meta)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps({"meta": meta, "runs": results.runs}))
    (RESULTS / f"{stamp}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
