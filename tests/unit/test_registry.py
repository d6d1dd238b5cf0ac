"""taskq.connect and secret redaction."""

from __future__ import annotations

import pytest

from taskq.brokers import registry
from taskq.brokers.registry import connect, known_schemes, redact_url, register_scheme
from taskq.errors import InvalidArgumentError, UnknownBrokerError

CANARY = "s3cr3t-canary-9f8e"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"redis://:{CANARY}@localhost:6379/0", "redis://:***@localhost:6379/0"),
        (f"redis://alice:{CANARY}@h:1/0", "redis://alice:***@h:1/0"),
        (f"rediss://{CANARY}@h:1", "rediss://***@h:1"),
        (
            f"redis+sentinel://u:{CANARY}@h1:26379,h2:26379/mymaster/0",
            "redis+sentinel://u:***@h1:26379,h2:26379/mymaster/0",
        ),
        (f"redis://h:1/0?password={CANARY}&db=1", "redis://h:1/0?password=***&db=1"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("sqlite:///taskq.db", "sqlite:///taskq.db"),
    ],
)
def test_redact_url_masks_passwords(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert CANARY not in redact_url(url)


def test_unknown_scheme_lists_known_schemes_without_the_password() -> None:
    with pytest.raises(UnknownBrokerError) as exc:
        connect(f"nosuch://user:{CANARY}@host/x")
    text = str(exc.value)
    assert CANARY not in text and CANARY not in repr(exc.value)
    assert "nosuch" in text
    for scheme in ("memory", "redis", "sqlite"):
        assert scheme in text


def test_url_without_scheme_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="scheme://"):
        connect("localhost:6379")


def test_registered_scheme_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTERED", {})
    sentinel = object()
    seen: list[str] = []

    def factory(url: str) -> object:
        seen.append(url)
        return sentinel

    register_scheme("Custom", factory)  # type: ignore[arg-type]
    assert connect("custom://x") is sentinel
    assert seen == ["custom://x"]
    assert "custom" in known_schemes()


def test_entry_point_plugins_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        name = "plug"

        def load(self) -> object:
            return lambda url: ("plugged", url)

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == "taskq.brokers"
        return [FakeEntryPoint()]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert connect("plug://db") == ("plugged", "plug://db")  # type: ignore[comparison-overlap]
    assert "plug" in known_schemes()
