"""Idempotency-Key over HTTP on the running stack: replays, reuse, races, tenants, large answers, expiry."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import requests

from common.models.base import utcnow
from common.store.paths import Scope, coll, read
from tests.conftest import Tenant

JOBS = "/api/v1/pim/bulk-jobs"
PAYLOAD = [{"title": "Idempotent Sweater", "category": "Knitwear"}]


def keyed(tenant: Tenant, key: str, **overrides: str) -> dict[str, str]:
    return tenant.headers(**{"Idempotency-Key": key, **overrides})


def post_job(tenant: Tenant, key: str, payload: Any = PAYLOAD, **headers: str) -> requests.Response:
    return tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": payload}, headers=keyed(tenant, key, **headers))


def error_code(response: requests.Response) -> str:
    return str(response.json()["error"]["code"])


def stored(tenant: Tenant, key: str) -> dict[str, Any] | None:
    ref = coll(Scope(tenant.org_id, tenant.tenant_id), "idempotency_keys").document(hashlib.sha256(f"{tenant.user_id}\n{key}".encode()).hexdigest())
    snap = read(ref)
    return snap.to_dict() if snap.exists else None


def test_a_retried_create_returns_the_first_job_and_creates_no_other(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    first = post_job(tenant, key)
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    again = post_job(tenant, key)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    listed = tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json()
    assert [job["id"] for job in listed] == [first.json()["id"]]
    created = [e for e in tenant.get("/api/v1/pim/audit").json() if e["action"] == "bulk_job.created"]
    assert len(created) == 1
    record = stored(tenant, key)
    assert record is not None and record["state"] == "done" and record["status"] == 200
    assert timedelta(hours=23) < record["expires_at"] - utcnow() <= timedelta(hours=24)


def test_the_same_key_with_another_body_is_422_reused(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    assert post_job(tenant, key).status_code == 200
    reused = post_job(tenant, key, payload=[{"title": "Something else"}])
    assert reused.status_code == 422 and error_code(reused) == "idempotency_key_reused"
    on_another_route = tenant.post("/api/v1/pim/export", headers=keyed(tenant, key))
    assert on_another_route.status_code == 422 and error_code(on_another_route) == "idempotency_key_reused"
    assert len(tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json()) == 1


def test_concurrent_requests_with_one_key_create_exactly_one_job(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: post_job(tenant, key), range(12)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 409}, statuses
    ok = [a for a in answers if a.status_code == 200]
    assert len({a.json()["id"] for a in ok}) == 1
    assert len([a for a in ok if "Idempotent-Replayed" not in a.headers]) == 1
    assert all(error_code(a) == "idempotency_key_in_progress" for a in answers if a.status_code == 409)
    assert len(tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json()) == 1
    assert post_job(tenant, key).headers["Idempotent-Replayed"] == "true"


def test_keys_belong_to_a_tenant(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant(), make_tenant()
    key = str(uuid.uuid4())
    job_a = post_job(a, key).json()
    job_b = post_job(b, key).json()
    assert job_a["id"] != job_b["id"] and job_b["tenant_id"] == b.tenant_id


def test_client_errors_are_kept_and_replayed(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    body = {"job_type": "BULK_EXPLODE", "payload": PAYLOAD}
    first = tenant.post(JOBS, json=body, headers=keyed(tenant, key))
    assert first.status_code == 422 and error_code(first) == "invalid_job_type"
    again = tenant.post(JOBS, json=body, headers=keyed(tenant, key))
    assert again.status_code == 422 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_bad_keys_are_400_and_a_bad_token_is_401_first(tenant: Tenant) -> None:
    for bad in ("x" * 256, "ключ".encode(), "tab\tinside"):
        headers: dict[str, Any] = {**tenant.headers(), "Idempotency-Key": bad}
        response = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": PAYLOAD}, headers=headers)
        assert response.status_code == 400 and error_code(response) == "invalid_idempotency_key"
    unauthorized = post_job(tenant, "x" * 256, Authorization="Bearer synq_nope")
    assert unauthorized.status_code == 401
    assert tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json() == []


def test_other_post_routes_have_it_too(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    first = tenant.post("/api/v1/pim/export", headers=keyed(tenant, key))
    again = tenant.post("/api/v1/pim/export", headers=keyed(tenant, key))
    assert first.status_code == again.status_code == 202
    assert again.json()["export_id"] == first.json()["export_id"] and again.headers["Idempotent-Replayed"] == "true"
    conflict_key = str(uuid.uuid4())
    refused = tenant.post("/api/v1/pim/notification-settings/rotate-secret", headers=keyed(tenant, conflict_key))
    assert refused.status_code == 409 and error_code(refused) == "no_webhook"
    assert (
        tenant.post("/api/v1/pim/notification-settings/rotate-secret", headers=keyed(tenant, conflict_key)).headers["Idempotent-Replayed"] == "true"
    )


def test_an_answer_too_large_for_a_document_is_replayed_from_storage(tenant: Tenant) -> None:
    payload = [{"title": f"Large answer {n}", "description": "d" * 400} for n in range(2500)]  # ~1.1 MB echoed back
    key = str(uuid.uuid4())
    first = post_job(tenant, key, payload=payload)
    assert first.status_code == 200
    record = stored(tenant, key)
    assert record is not None and record["body_json"] is None and record["body_object"].startswith("idempotency/")
    again = post_job(tenant, key, payload=payload)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content


def test_an_expired_key_runs_the_request_again(tenant: Tenant) -> None:
    key = str(uuid.uuid4())
    first = post_job(tenant, key).json()
    ref = coll(Scope(tenant.org_id, tenant.tenant_id), "idempotency_keys").document(hashlib.sha256(f"{tenant.user_id}\n{key}".encode()).hexdigest())
    ref.update({"expires_at": utcnow() - timedelta(seconds=1)})
    again = post_job(tenant, key, payload=[{"title": "After expiry"}])
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first["id"]
    assert post_job(tenant, key, payload=[{"title": "After expiry"}]).json()["id"] == again.json()["id"]
