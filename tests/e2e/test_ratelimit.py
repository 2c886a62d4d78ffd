"""The per-token request budget over HTTP: a dedicated token with a budget of 3 a minute."""

from __future__ import annotations

import time
from collections.abc import Callable

from common.clients import firestore_client
from common.store.paths import read
from common.store.tokens import hash_token
from tests.conftest import Tenant

JOBS = "/api/v1/pim/bulk-jobs"


def limited(make_tenant: Callable[..., Tenant], budget: int) -> Tenant:
    tenant = make_tenant()
    firestore_client().collection("api_tokens").document(hash_token(tenant.token)).update({"rate_limit_per_minute": budget})
    return tenant


def start_of_a_fresh_minute(margin: float = 10.0) -> None:
    """Wait if the current minute ends within `margin` s: the counts would restart mid-test."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.1)


def test_over_budget_is_429_with_retry_after_and_other_tokens_are_untouched(make_tenant: Callable[..., Tenant]) -> None:
    tenant = limited(make_tenant, 3)
    other = make_tenant()
    start_of_a_fresh_minute()
    answers = [tenant.get(JOBS) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert all(a.headers["RateLimit-Limit"] == "3" for a in answers)
    refused = tenant.get(JOBS)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    # POSTs share the budget and are refused before any work (no job is created).
    posted = tenant.post(
        JOBS, json={"job_type": "BULK_IMPORT", "payload": [{"title": "Refused"}]}, headers=tenant.headers(**{"Idempotency-Key": "k"})
    )
    assert posted.status_code == 429
    assert other.get(JOBS).status_code == 200
    assert other.get(JOBS, params={"type": "BULK_IMPORT"}).json() == []
    window = int(time.time() // 60)
    counter = read(firestore_client().collection("rate_limits").document(f"{hash_token(tenant.token)}-{window}"))
    assert counter.exists and counter.to_dict()["count"] >= 4 and counter.to_dict()["expires_at"]


def test_an_unknown_token_is_401_not_429(make_tenant: Callable[..., Tenant]) -> None:
    tenant = limited(make_tenant, 1)
    bad = tenant.headers(Authorization="Bearer synq_not-a-token")
    assert all(tenant.get(JOBS, headers=bad).status_code == 401 for _ in range(5))


def test_a_zero_override_means_unlimited(make_tenant: Callable[..., Tenant]) -> None:
    tenant = limited(make_tenant, 0)
    answers = [tenant.get(JOBS) for _ in range(5)]
    assert all(a.status_code == 200 and "RateLimit-Limit" not in a.headers for a in answers)
