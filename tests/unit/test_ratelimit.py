"""The per-token rate limiter as a Router hook, over an in-memory counter and a fake clock."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import flask
import pytest
from google.api_core import exceptions as gexc

from common.http import Request, Response, Router
from common.ratelimit import RateLimiter
from common.store.tokens import hash_token

app = flask.Flask(__name__)


class MemoryCounter:
    def __init__(self) -> None:
        self.counts: Tally[tuple[str, int]] = Tally()
        self.writes = 0

    def add(self, token_hash: str, window: int, hits: int, expires_at: datetime) -> int:
        assert expires_at.timestamp() > (window + 1) * 60 and hits >= 1
        self.writes += 1
        self.counts[(token_hash, window)] += hits
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


def instance(counter: MemoryCounter, lookup: Callable[[str], dict[str, Any] | None], clock: Clock) -> Router:
    """One API instance: a router with a limiter of its own and one GET route; instances made
    with the same counter share its documents."""
    router = Router()
    router.use(RateLimiter(counter, lookup, clock))

    @router.route("GET", "/x")
    def handler(request: Request) -> Response:
        return Response({"ok": True})

    return router


@pytest.fixture
def setup(settings_env: Callable[..., Any]) -> Setup:
    settings_env(rate_limit_per_minute=5)
    env = Setup()
    env.router = instance(env.counter, env.lookup, env.clock)
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


def test_far_from_its_budget_an_instance_sends_its_hits_once_a_second(setup: Setup, settings_env: Callable[..., Any]) -> None:
    settings_env(rate_limit_per_minute=1000)
    router, counter, clock = setup.router, setup.counter, setup.clock
    key = (hash_token("plain"), int(clock.now // 60))
    answers = [call(router, "plain") for _ in range(30)]
    assert counter.writes == 1 and counter.counts[key] == 1  # the first hit of the window is sent
    assert [a.headers["RateLimit-Remaining"] for a in answers[-2:]] == ["971", "970"]  # yet every hit counts
    clock.now += 0.5
    call(router, "plain")
    assert counter.writes == 1
    clock.now += 0.5
    assert call(router, "plain").headers["RateLimit-Remaining"] == "968"
    assert counter.writes == 2 and counter.counts[key] == 32
    # Within a second, an instance holds back at most a twentieth of the budget.
    for _ in range(50):
        call(router, "plain")
    assert counter.writes == 3 and counter.counts[key] == 82


def test_near_its_budget_every_request_is_sent_and_the_budget_holds(setup: Setup, settings_env: Callable[..., Any]) -> None:
    settings_env(rate_limit_per_minute=100)
    router, counter = setup.router, setup.counter
    answers = [call(router, "plain") for _ in range(105)]
    assert [a.status_code for a in answers] == [200] * 100 + [429] * 5
    # Sent: the 1st hit, then every fifth (a twentieth of the budget) up to the 86th, then each
    # request from the 90th (the budget's last tenth) to the first refusal; the refused cost nothing.
    assert counter.writes == 18 + 12
    assert counter.counts[(hash_token("plain"), int(setup.clock.now // 60))] == 101


def test_instances_learn_each_others_hits_from_the_counts_firestore_returns(setup: Setup, settings_env: Callable[..., Any]) -> None:
    settings_env(rate_limit_per_minute=100)
    counter, clock = setup.counter, setup.clock
    key = (hash_token("plain"), int(clock.now // 60))
    other = instance(counter, setup.lookup, clock)
    for _ in range(4):
        call(setup.router, "plain")
    clock.now += 1
    call(setup.router, "plain")  # sends its 4 unsent hits: 5 in Firestore
    assert call(other, "plain").headers["RateLimit-Remaining"] == "94"  # its first write answers 6
    answers = [(call(setup.router, "plain"), call(other, "plain")) for _ in range(60)]
    statuses = [a.status_code for pair in answers for a in pair]
    admitted = statuses.count(200)
    # 6 before; of the rest, 94 fit the budget, and each instance can be blind to the other's
    # unsent hits (under a twentieth of the budget: at most 4).
    assert 94 <= admitted <= 94 + 4 and 429 not in statuses[:94] and statuses[admitted:] == [429] * (120 - admitted)
    assert counter.counts[key] >= 100


def test_hits_whose_write_failed_go_with_the_next_write(setup: Setup, settings_env: Callable[..., Any]) -> None:
    settings_env(rate_limit_per_minute=1000)
    router, counter, clock = setup.router, setup.counter, setup.clock
    add = counter.add

    def failing(*args: Any) -> int:
        raise gexc.ServiceUnavailable("firestore")

    counter.add = failing  # type: ignore[method-assign]
    assert call(router, "plain").status_code == 503
    counter.add = add  # type: ignore[method-assign]
    assert call(router, "plain").headers["RateLimit-Remaining"] == "998"
    assert counter.counts[(hash_token("plain"), int(clock.now // 60))] == 2
