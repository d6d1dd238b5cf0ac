"""Keeping the broker's password out of every log line and error message."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from taskq.brokers.registry import redact_url

__all__ = ["redact_url", "scrub"]

_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "secret", "token"})


def _secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found = {password or "", unquote(password or "")}
    found.update(v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS)
    # A secret shorter than 3 characters would mask ordinary words, and is
    # guessed in no time anyway.
    return {s for s in found if len(s) >= 3}


def scrub(text: str, url: str | None) -> str:
    """Return ``text`` with ``url`` redacted and its password masked wherever it appears.

    taskq already redacts its own messages; this is the second line of
    defence for text that reaches the exporter's logs and error output.
    """
    if not url:
        return text
    text = text.replace(url, redact_url(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
