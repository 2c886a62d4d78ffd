"""Payload integrity, cancel and retry over HTTP."""

from __future__ import annotations

import hashlib
import json

from tests.conftest import Tenant

JOBS = "/api/v1/pim/bulk-jobs"
PAYLOAD = [{"title": "Merino Wool Sweater", "category": "Knitwear"}, {"title": "Linen Shirt é", "category": "Shirts"}]


def digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_item_count_and_digest_catch_a_truncated_upload(tenant: Tenant) -> None:
    good = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": PAYLOAD, "item_count": 2, "payload_sha256": digest(PAYLOAD)})
    assert good.status_code == 200
    assert hashlib.sha256(good.json()["payload_json"].encode()).hexdigest() == digest(PAYLOAD)
    short = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": PAYLOAD[:1], "item_count": 2})
    assert short.status_code == 422 and short.json()["error"]["code"] == "item_count_mismatch"
    altered = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": PAYLOAD[:1], "payload_sha256": digest(PAYLOAD)})
    assert altered.status_code == 422 and altered.json()["error"]["code"] == "payload_sha256_mismatch"
    assert tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": PAYLOAD, "payload_sha256": "xyz"}).status_code == 422
    assert [j["id"] for j in tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json()] == [good.json()["id"]]


def test_cancel_and_retry_routes(tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    job = tenant.create_job("BULK_IMPORT", [*PAYLOAD, {"sku": "no-title"}])
    done = tenant.wait_job(job["id"])
    assert done["status"] == "FAILED"
    assert tenant.post(f"{JOBS}/{job['id']}/cancel").status_code == 409
    retry = tenant.post(f"{JOBS}/{job['id']}/retry", json={"corrections": {"2": {"title": "Named now", "sku": "no-title"}}})
    assert retry.status_code == 200, retry.text
    assert retry.json()["retry_of"] == job["id"]
    assert tenant.wait_job(retry.json()["id"])["status"] == "COMPLETED"
    assert tenant.get(f"{JOBS}/{job['id']}").json()["retried_by"] == retry.json()["id"]
    assert tenant.get("/api/v1/pim/validation", params={"job_id": job["id"]}).json() == []
    viewer = make_tenant(role="viewer")
    assert viewer.post(f"{JOBS}/{job['id']}/cancel").status_code == 403


def test_a_retry_needs_no_body(tenant: Tenant) -> None:
    job = tenant.create_job("BULK_IMPORT", [*PAYLOAD, {"sku": "no-title"}])
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    retry = tenant.post(f"{JOBS}/{job['id']}/retry")
    assert retry.status_code == 200, retry.text
    assert json.loads(retry.json()["payload_json"]) == [{"sku": "no-title"}]
    again = tenant.post(f"{JOBS}/{job['id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_retried"
