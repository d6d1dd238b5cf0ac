"""The public surface: everything DESIGN.md promises is exported, documented and importable."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import taskq

DESIGN_NAMES = {
    "AsyncClient",
    "AsyncInspector",
    "Broker",
    "Client",
    "Config",
    "Context",
    "DuplicateTaskError",
    "Handler",
    "InMemoryBroker",
    "Inspector",
    "PeriodicTaskConfig",
    "PeriodicTaskManager",
    "RevokeTask",
    "Scheduler",
    "ServeMux",
    "Server",
    "SkipRetry",
    "Task",
    "TaskIDConflictError",
    "TaskInfo",
    "TaskState",
    "TaskqError",
    "connect",
    "run",
}


def test_all_is_sorted_and_contains_every_design_name() -> None:
    assert list(taskq.__all__) == sorted(taskq.__all__)
    assert set(taskq.__all__) >= DESIGN_NAMES


@pytest.mark.parametrize("name", sorted(taskq.__all__))
def test_every_public_name_resolves_and_has_a_docstring(name: str) -> None:
    obj = getattr(taskq, name)
    doc = inspect.getdoc(obj)
    assert doc, f"taskq.{name} has no docstring"


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = taskq.no_such_thing  # type: ignore[attr-defined]


def test_import_taskq_does_not_import_drivers_the_runtime_or_the_web_extra() -> None:
    code = (
        "import sys, taskq\n"
        "heavy = [m for m in ('redis', 'sqlite3', 'taskq.runtime.server', 'croniter', "
        "'starlette', 'jinja2', 'uvicorn', 'taskq.web') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_drivers_are_imported_only_by_their_brokers() -> None:
    import ast
    from pathlib import Path

    root = Path(taskq.__file__).parent
    allowed = {"redis": "brokers/redis/", "sqlite3": "brokers/sqlite.py"}
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in allowed and not rel.startswith(allowed[top]):
                    offenders.append(f"{rel} imports {name}")
    assert offenders == []
