"""Profile taskq under the benchmark's workloads with py-spy.

Usage::

    python -m benchmarks.profile [--phases enqueue,batch,drain1,latency] [--n 20000]

Starts its own ``redis-server`` on a free loopback port (as ``benchmarks.run``
does) and runs taskq's benchmark script (the same adapter and workloads as the
comparison, see ``_workload.py``) once per phase under ``py-spy record
--subprocesses``, so that the worker processes a phase starts are sampled
too. Each profile is written in py-spy's raw (collapsed stack) format under
``benchmarks/results/profile-<time>/<phase>.txt`` (open it in
https://www.speedscope.app or feed it to ``flamegraph.pl``), and a summary per
phase and per process role (the producer, the workers) is printed and
written beside them as ``summary.md``: the functions with the most samples
of their own, and taskq's functions with the most samples including what
they call. Samples are of running (not idle) threads, 500 per second.

py-spy is in taskq's ``dev`` extra (``make setup`` installs it).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from benchmarks.run import RedisServer

HERE = Path(__file__).resolve().parent
# What each profiled phase runs: the phases before it leave the queue as it needs.
PHASES: dict[str, str] = {
    "enqueue": "enqueue",
    "batch": "batch",
    "drain1": "enqueue,drain1",
    "latency": "latency",
}
_PROCESS = re.compile(r'^process \d+:".*"$')
_LINE = re.compile(r":\d+\)$")
TOP = 12


class Profile:
    """Samples of one phase from py-spy's raw output, split by process role."""

    def __init__(self, lines: Iterable[str]) -> None:
        # role -> list of (frames, count); the first process is the producer,
        # any process it started is a worker.
        self.stacks: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
        for line in lines:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            depth = 0
            while depth < len(frames) and _PROCESS.match(frames[depth]):
                depth += 1
            role = "producer" if depth <= 1 else "worker"
            code = [_LINE.sub(")", frame) for frame in frames[depth:]]
            self.stacks[role].append((code, int(count)))

    def total(self, role: str) -> int:
        """All samples of ``role``."""
        return sum(count for _, count in self.stacks[role])

    def own(self, role: str) -> list[tuple[str, int]]:
        """Functions by the samples in which they were the innermost frame."""
        counts: collections.Counter[str] = collections.Counter()
        for frames, count in self.stacks[role]:
            counts[frames[-1] if frames else "(no Python frame)"] += count
        return counts.most_common(TOP)

    def inclusive(self, role: str, needle: str = "taskq/") -> list[tuple[str, int]]:
        """Functions of files whose path holds ``needle``, by samples with them on the stack."""
        counts: collections.Counter[str] = collections.Counter()
        for frames, count in self.stacks[role]:
            for frame in set(frames):
                if needle in frame and "benchmarks/" not in frame:
                    counts[frame] += count
        return counts.most_common(TOP)


def summary(phase: str, profile: Profile) -> list[str]:
    """Markdown tables of one phase's profile."""
    out = [f"## {phase}", ""]
    for role in ("producer", "worker"):
        total = profile.total(role)
        if not total:
            continue
        out += [f"### {role}: {total:,} samples", ""]
        out += ["| own samples | % | function |", "|---|---|---|"]
        out += [f"| {n:,} | {100 * n / total:.1f} | `{f}` |" for f, n in profile.own(role)]
        out += ["", "| with callees | % | taskq function |", "|---|---|---|"]
        out += [f"| {n:,} | {100 * n / total:.1f} | `{f}` |" for f, n in profile.inclusive(role)]
        out.append("")
    return out


def py_spy() -> str:
    """The py-spy executable (next to this Python first)."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy (taskq's dev extra has it)")
    return found


def record(
    spy: str, url: str, phase: str, args: argparse.Namespace, out: Path, timeout: float
) -> Path:
    """Run one phase of taskq's benchmark script under py-spy; return the raw profile's path."""
    target = out / f"{phase}.txt"
    argv = [
        spy,
        "record",
        "--format",
        "raw",
        "--rate",
        str(args.rate),
        "--subprocesses",
        "--output",
        str(target),
        "--",
        sys.executable,
        str(HERE / "taskq_bench.py"),
        "bench",
        "--url",
        url,
        "--n",
        str(args.n),
        "--latency-n",
        str(args.latency_n),
        "--phases",
        PHASES[phase],
    ]
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout, check=False
        )
        if done.returncode != 0 or not target.exists():
            err.seek(0)
            tail = err.read().decode("utf-8", "replace")[-1500:]
            raise SystemExit(f"py-spy run of {phase} failed ({done.returncode}):\n{tail}")
    return target


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of: {', '.join(PHASES)}",
    )
    parser.add_argument("--n", type=int, default=20_000, help="tasks per phase")
    parser.add_argument("--latency-n", type=int, default=500, help="latency samples")
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--timeout", type=float, default=600, help="per phase, seconds")
    args = parser.parse_args(argv)
    unknown = [p for p in args.phases.split(",") if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Profile each phase, print and write the summaries."""
    args = parse_args(argv)
    spy = py_spy()
    out = HERE / "results" / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    redis = RedisServer(out)
    lines: list[str] = []
    try:
        for phase in args.phases.split(","):
            redis.flush()
            print(f"[{time.strftime('%H:%M:%S')}] profiling {phase} ...", file=sys.stderr)
            raw = record(spy, redis.url, phase, args, out, args.timeout)
            with raw.open(encoding="utf-8", errors="replace") as f:
                lines += summary(phase, Profile(f))
    finally:
        redis.stop()
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"\nraw profiles and summary.md in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
