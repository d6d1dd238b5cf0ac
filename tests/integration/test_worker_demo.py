"""The README demo (``make demo`` = ``python -m examples.demo``) runs and exits by itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_task_and_exits_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TASKQ_BROKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "every task completed" in out
    assert "report:generate -> attempt 3 succeeds" in out
    assert "retry -> completed after 2 retries" in out or "completed after 2 retries" in out
    assert "reminding user 7" in out  # the delayed task ran
    assert (tmp_path / "taskq-demo.db").exists()
