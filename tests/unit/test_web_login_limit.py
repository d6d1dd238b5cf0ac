"""Failed logins are limited per client address (taskq.web's LoginLimiter), on a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from taskq.brokers.memory import InMemoryBroker
from taskq.errors import InvalidArgumentError
from taskq.testing import FakeClock
from taskq.web import PasswordAuth, create_app
from taskq.web._security import MAX_TRACKED_ADDRESSES, LoginLimiter
from tests.unit.test_web import PASSWORD, login as form_login

WRONG = "Wrong-Canary-93b1e2"
ALICE = ("203.0.113.1", 40001)
BOB = ("203.0.113.2", 40002)


def limited_app(clock: FakeClock, **options: Any) -> Starlette:
    """A dashboard with a login whose limiter reads ``clock``."""
    app = create_app(InMemoryBroker(), auth=PasswordAuth("admin", PASSWORD), **options)
    app.state.dashboard.login_limiter.clock = lambda: clock.now_ms() / 1000
    return app


@pytest.fixture
def app(clock: FakeClock) -> Starlette:
    return limited_app(clock)


@pytest.fixture
def alice(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, client=ALICE) as c:
        yield c


def login(client: TestClient, password: str = PASSWORD, username: str = "admin") -> Any:
    """POST the login form as a browser does, from a fresh session (no cookies)."""
    client.cookies.clear()
    return form_login(client, username, password)


def fail(client: TestClient, times: int, clock: FakeClock, every: float = 1.0) -> None:
    """``times`` wrong passwords, ``every`` seconds apart, each refused with a 401."""
    for _ in range(times):
        assert login(client, WRONG).status_code == 401
        clock.advance(timedelta(seconds=every))


def bearer(client: TestClient, token: str) -> Any:
    return client.get("/api/queues", headers={"Authorization": f"Bearer {token}"})


def test_the_sixth_failed_login_within_the_window_gets_429_with_retry_after(
    alice: TestClient, clock: FakeClock
) -> None:
    fail(alice, 5, clock)  # at t = 0..4 s; now t = 5 s
    response = login(alice, WRONG)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "55"  # the failure at t = 0 leaves at 60 s
    assert "too many failed logins; try again in 55 seconds" in response.text
    assert WRONG not in response.text


def test_a_correct_password_during_the_lockout_is_refused(
    alice: TestClient, clock: FakeClock
) -> None:
    fail(alice, 5, clock)
    response = login(alice, PASSWORD)
    assert response.status_code == 429 and "retry-after" in response.headers
    assert alice.get("/", follow_redirects=False).headers["location"] == "/login"


def test_login_works_again_once_the_oldest_failure_leaves_the_window(
    alice: TestClient, clock: FakeClock
) -> None:
    fail(alice, 5, clock)  # at t = 0..4 s
    clock.advance(timedelta(seconds=54))  # t = 59 s: all five still count
    assert login(alice).headers["retry-after"] == "1"
    clock.advance(timedelta(seconds=1))  # t = 60 s: the first one has left
    assert login(alice, WRONG).status_code == 401  # a fifth failure again (t = 1..4, 60)
    assert login(alice).headers["retry-after"] == "1"  # until the one at t = 1 leaves
    clock.advance(timedelta(seconds=1))
    response = login(alice)
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert alice.get("/").status_code == 200


def test_a_successful_login_clears_the_failures(alice: TestClient, clock: FakeClock) -> None:
    fail(alice, 4, clock)
    assert login(alice).status_code == 303
    fail(alice, 5, clock)  # five more are allowed, not one
    assert login(alice).status_code == 429


def test_two_addresses_are_counted_separately(
    app: Starlette, alice: TestClient, clock: FakeClock
) -> None:
    with TestClient(app, client=BOB) as bob:
        fail(alice, 5, clock)
        assert login(alice).status_code == 429
        fail(bob, 4, clock)
        assert login(bob).status_code == 303
        assert login(alice).status_code == 429


def test_failures_spread_wider_than_the_window_never_lock_out(
    alice: TestClient, clock: FakeClock
) -> None:
    fail(alice, 20, clock, every=15)  # at most four within any 60 s
    assert login(alice).status_code == 303


def test_failed_bearer_tokens_count_toward_the_same_lockout(
    app: Starlette, alice: TestClient, clock: FakeClock
) -> None:
    for _ in range(5):
        assert bearer(alice, WRONG).status_code == 401
    refused = bearer(alice, PASSWORD)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert refused.json() == {"error": "too many failed logins; try again in 60 seconds"}
    assert login(alice).status_code == 429  # the login form too, from that address
    with TestClient(app, client=BOB) as bob:
        assert bearer(bob, PASSWORD).status_code == 200
    clock.advance(timedelta(seconds=60))
    assert bearer(alice, PASSWORD).status_code == 200


def test_a_successful_bearer_token_clears_the_failures(alice: TestClient, clock: FakeClock) -> None:
    fail(alice, 4, clock)
    assert bearer(alice, PASSWORD).status_code == 200
    fail(alice, 5, clock)
    assert bearer(alice, PASSWORD).status_code == 429


def test_failed_and_refused_logins_are_audited_without_the_password(
    alice: TestClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fail(alice, 4, clock)
    bearer(alice, WRONG)
    login(alice, PASSWORD, username="root")
    bearer(alice, PASSWORD)
    lines = [r.getMessage() for r in caplog.records if r.name == "taskq.web"]
    assert lines == [
        *["failed login by -: 'admin'"] * 4,
        "failed bearer token login by - from '203.0.113.1'",
        "refused login (too many failures) by - from '203.0.113.1': 'root'",
        "refused bearer token login (too many failures) by - from '203.0.113.1'",
    ]
    assert WRONG not in caplog.text and PASSWORD not in caplog.text


def test_the_limit_and_window_come_from_create_app(clock: FakeClock) -> None:
    app = limited_app(clock, max_login_failures=2, login_failure_window=timedelta(seconds=10))
    with TestClient(app, client=ALICE) as c:
        fail(c, 2, clock, every=0)
        assert login(c).headers["retry-after"] == "10"
        clock.advance(timedelta(seconds=10))
        assert login(c).status_code == 303


@pytest.mark.parametrize(
    "options",
    [
        {"max_login_failures": 0},
        {"max_login_failures": 101},
        {"max_login_failures": True},
        {"login_failure_window": timedelta(0)},
        {"login_failure_window": timedelta(days=2)},
        {"login_failure_window": 60},
    ],
)
def test_create_app_rejects_bad_login_limits(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        create_app(InMemoryBroker(), **options)


def test_the_tracked_address_cap_holds(clock: FakeClock) -> None:
    limiter = LoginLimiter(2, 60, max_addresses=3, clock=lambda: clock.now_ms() / 1000)
    for address in "abcde":  # at t = 0..4 s
        limiter.failed(address)
        limiter.failed(address)
        assert limiter.retry_after(address) == 60
        clock.advance(timedelta(seconds=1))
    assert len(limiter) == 3  # "a" and "b", whose failures are oldest, were dropped
    assert [limiter.retry_after(a) for a in "abcde"] == [None, None, 57, 58, 59]


def test_the_dashboard_remembers_at_most_ten_thousand_addresses(
    app: Starlette, alice: TestClient, clock: FakeClock
) -> None:
    limiter = app.state.dashboard.login_limiter
    assert limiter.max_addresses == MAX_TRACKED_ADDRESSES == 10_000
    fail(alice, 5, clock, every=0)
    for n in range(MAX_TRACKED_ADDRESSES):
        limiter.failed(f"198.18.{n // 256}.{n % 256}")
    assert len(limiter) == MAX_TRACKED_ADDRESSES
    assert login(alice).status_code == 303  # the oldest address was dropped


def test_addresses_whose_failures_left_the_window_are_forgotten(clock: FakeClock) -> None:
    limiter = LoginLimiter(5, 60, clock=lambda: clock.now_ms() / 1000)
    limiter.failed("a")
    limiter.failed("b")
    clock.advance(timedelta(seconds=60))
    limiter.failed("c")
    assert len(limiter) == 1
