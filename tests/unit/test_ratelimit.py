"""The per-token rate limiter as a Router hook, over an in-memory counter and a fake clock."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import flask
import pytest

from common.http import Request, Response, Router
from common.ratelimit import RateLimiter
from common.store.tokens import hash_token

app = flask.Flask(__name__)


class MemoryCounter:
    def __init__(self) -> None:
        self.counts: Tally[tuple[str, int]] = Tally()
        self.writes = 0

    def hit(self, token_hash: str, window: int, expires_at: datetime) -> int:
        assert expires_at.timestamp() > (window + 1) * 60
        self.writes += 1
        self.counts[(token_hash, window)] += 1
        return self.counts[(token_hash, window)]


class Clock:
    def __init__(self, now: float = 60 * 16_667 + 20.0) -> None:  # 20 s into a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


TOKENS: dict[str, dict[str, Any]] = {
    "plain": {"user_id": "u"},
    "three": {"user_id": "u", "rate_limit_per_minute": 3},
    "unlimited": {"user_id": "u", "rate_limit_per_minute": 0},
    "bogus-override": {"user_id": "u", "rate_limit_per_minute": "lots"},
}


@dataclass
class Setup:
    """A router with the limiter (default budget 5) and one GET route."""

    router: Router = field(default_factory=Router)
    counter: MemoryCounter = field(default_factory=MemoryCounter)
    clock: Clock = field(default_factory=Clock)
    lookups: list[str] = field(default_factory=list)

    def lookup(self, token: str) -> dict[str, Any] | None:
        self.lookups.append(token)
        return TOKENS.get(token)


@pytest.fixture
def setup(settings_env: Callable[..., Any]) -> Setup:
    settings_env(rate_limit_per_minute=5)
    env = Setup()
    env.router.use(RateLimiter(env.counter, env.lookup, env.clock))

    @env.router.route("GET", "/x")
    def handler(request: Request) -> Response:
        return Response({"ok": True})

    return env


def call(router: Router, token: str | None) -> flask.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with app.test_request_context("/x", headers=headers):
        return router.handle(flask.request)


def test_the_default_budget_applies_per_token_with_headers(setup: Setup) -> None:
    router = setup.router
    answers = [call(router, "plain") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    assert answers[0].headers["RateLimit-Limit"] == "5"
    assert answers[0].headers["RateLimit-Reset"] == "40"
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "40"
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert refused.get_json()["error"]["details"] == {"retry_after": 40, "limit": 5}
    assert call(router, "three").status_code == 200  # another token has its own budget


def test_refusals_in_the_same_window_cost_no_write_and_the_next_window_is_fresh(setup: Setup) -> None:
    router, counter, clock = setup.router, setup.counter, setup.clock
    for _ in range(6):
        call(router, "plain")
    writes = counter.writes
    assert [call(router, "plain").status_code for _ in range(5)] == [429] * 5
    assert counter.writes == writes
    clock.now += 40
    assert call(router, "plain").status_code == 200


def test_the_token_document_overrides_the_budget(setup: Setup) -> None:
    router = setup.router
    assert [call(router, "three").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert all(call(router, "unlimited").status_code == 200 for _ in range(20))
    assert "RateLimit-Limit" not in call(router, "unlimited").headers
    assert [call(router, "bogus-override").status_code for _ in range(6)][-1] == 429  # not an int: the default
    assert setup.lookups.count("three") == 1  # cached per instance


def test_requests_without_a_known_token_are_not_counted(setup: Setup) -> None:
    router, counter = setup.router, setup.counter
    for token in (None, "unknown", "unknown"):
        for _ in range(10):
            assert call(router, token).status_code == 200  # the handler would answer 401 itself
    assert counter.writes == 0


def test_zero_disables_the_default(setup: Setup, settings_env: Callable[..., Any]) -> None:
    router, counter = setup.router, setup.counter
    settings_env(rate_limit_per_minute=0)
    limiter = RateLimiter(counter, lambda token: TOKENS.get(token), Clock())
    router.hooks[:] = [limiter]
    assert all(call(router, "plain").status_code == 200 for _ in range(10))
    assert counter.writes == 0
    assert [call(router, "three").status_code for _ in range(4)][-1] == 429


def test_token_hashes_key_the_counters(setup: Setup) -> None:
    call(setup.router, "plain")
    assert setup.counter.counts[(hash_token("plain"), int(setup.clock.now // 60))] == 1


def test_public_routes_are_not_counted(setup: Setup) -> None:
    @setup.router.route("GET", "/open", summary="Open", public=True)
    def open_route(request: Request) -> Response:
        return Response({"ok": True})

    with app.test_request_context("/open", headers={"Authorization": "Bearer three"}):
        assert all(setup.router.handle(flask.request).status_code == 200 for _ in range(10))
    assert setup.counter.writes == 0
