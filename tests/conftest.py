"""Shared test configuration.

Fixture plug-ins live in ``taskq.testing`` so users can reuse them; each is
listed here once.
"""

pytest_plugins: list[str] = ["taskq.testing.servers"]
