"""Shared test configuration.

Fixture plug-ins live in ``taskq.testing`` so users can reuse them; each is
listed here once.
"""

import importlib

import taskq

pytest_plugins: list[str] = ["taskq.testing.servers"]

# pytest rewrites the asserts of every module of taskq (an installed pytest
# plugin), so a module imported lazily in a test is parsed by ``ast`` then.
# CPython 3.11.7's AST constructor keeps its recursion depth in shared state,
# and two threads parsing at once can fail an import with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905,
# pytest-dev/pytest#10763); a sync Client's loop thread and a test's main
# thread did so once here. Importing the core modules now, before any test
# starts a thread, leaves nothing to parse later.
for _name in taskq.__all__:
    getattr(taskq, _name)
for _module in ("taskq.brokers.memory", "taskq.brokers.sqlite", "taskq.brokers.redis"):
    importlib.import_module(_module)
