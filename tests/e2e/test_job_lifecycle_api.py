"""Payload integrity, cancel and retry over HTTP."""

from __future__ import annotations

import hashlib
import json
import time

from tests.conftest import Tenant, mint

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


def test_a_cancelled_job_is_retried_with_the_items_it_did_not_apply(tenant: Tenant) -> None:
    """Wherever the cancel stopped the workers (dispatch, a chunk's step, between chunks), the two
    jobs apply every item once between them."""
    payload = [{"title": f"Cancelled {i}", "sku": f"CR-{i}", "description": "A long enough description."} for i in range(3_000)]
    job = tenant.create_job("BULK_IMPORT", payload)
    while tenant.get(f"{JOBS}/{job['id']}").json()["status"] == "PENDING":  # cancelled while its chunks run
        time.sleep(0.01)
    cancel = tenant.post(f"{JOBS}/{job['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    retry = tenant.post(f"{JOBS}/{job['id']}/retry")
    assert retry.status_code == 200, retry.text
    done = tenant.wait_job(retry.json()["id"])
    cancelled = tenant.get(f"{JOBS}/{job['id']}").json()
    assert (done["status"], done["failed_items"]) == ("COMPLETED", 0)
    assert cancelled["processed_items"] + done["processed_items"] == 3_000 == done["total_items"] + cancelled["processed_items"]
    assert sorted(p["sku"] for p in tenant.all_pages("/api/v1/pim/products", limit=200)) == sorted(p["sku"] for p in payload)


def test_a_retry_needs_no_body(tenant: Tenant) -> None:
    job = tenant.create_job("BULK_IMPORT", [*PAYLOAD, {"sku": "no-title"}])
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    retry = tenant.post(f"{JOBS}/{job['id']}/retry")
    assert retry.status_code == 200, retry.text
    assert json.loads(retry.json()["payload_json"]) == [{"sku": "no-title"}]
    again = tenant.post(f"{JOBS}/{job['id']}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_retried"


def test_a_correction_the_retry_refuses_is_named_by_its_key_in_corrections(tenant: Tenant) -> None:
    """A retry's caller sends corrections, not a payload: an error naming `payload[0]`, the retry
    job's own payload that the caller never saw, points at nothing it sent."""
    job = tenant.create_job("BULK_IMPORT", [PAYLOAD[0], {"sku": "no-title-1"}, {"sku": "no-title-2"}])
    deletes = tenant.create_job("BULK_DELETE", ["00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"])
    assert {tenant.wait_job(j["id"])["status"] for j in (job, deletes)} == {"FAILED"}
    for job_id, corrections, status, name in [
        (job["id"], {"2": "not an object"}, 422, "corrections['2']"),
        (job["id"], {"1": {"title": "Too long", "description": "d" * 300_000}}, 413, "corrections['1']"),
        (deletes["id"], {"1": {"id": "00000000-0000-4000-8000-000000000002"}}, 422, "corrections['1']"),
    ]:
        refused = tenant.post(f"{JOBS}/{job_id}/retry", json={"corrections": corrections})
        assert refused.status_code == status, refused.text
        error = refused.json()["error"]
        assert error["message"].startswith(f"{name} "), error
        assert error.get("details", {}).get("field", name) == name, error
        assert tenant.get(f"{JOBS}/{job_id}").json()["retried_by"] is None
    assert [e["entity_id"] for e in tenant.get("/api/v1/pim/audit").json() if e["action"] == "bulk_job.created"] == [deletes["id"], job["id"]]


def test_a_retrys_results_say_which_item_of_the_job_retried_each_one_is(tenant: Tenant) -> None:
    """Two failed items without an identifier: only `retry_of_index` tells which result is which."""
    job = tenant.create_job("BULK_IMPORT", [PAYLOAD[0], {"title": ""}, PAYLOAD[1], {"title": 7}])
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    original = tenant.get(f"{JOBS}/{job['id']}/results").json()
    assert [(r["index"], r["retry_of_index"]) for r in original] == [(0, None), (1, None), (2, None), (3, None)]
    retry = tenant.post(f"{JOBS}/{job['id']}/retry", json={"corrections": {"3": {"title": "Fixed"}}})
    assert retry.status_code == 200, retry.text
    assert tenant.wait_job(retry.json()["id"])["status"] == "FAILED"
    rows = tenant.get(f"{JOBS}/{retry.json()['id']}/results").json()
    assert [(r["index"], r["retry_of_index"], r["result"]) for r in rows] == [(0, 1, "failed"), (1, 3, "created")]
    [still] = tenant.get(f"{JOBS}/{retry.json()['id']}/results", params={"status": "failed"}).json()
    assert (still["index"], still["retry_of_index"]) == (0, 1)


def test_a_failure_issue_nothing_will_resolve_can_be_resolved_by_hand(tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    """A delete of a product that was never there: no later item can ever succeed with that id."""
    job = tenant.create_job("BULK_DELETE", ["00000000-0000-4000-8000-000000000000"])
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    [issue] = tenant.get("/api/v1/pim/validation", params={"job_id": job["id"]}).json()
    assert make_tenant(role="viewer").post(f"/api/v1/pim/validation/{issue['id']}/resolve").status_code == 403
    resolved = tenant.post(f"/api/v1/pim/validation/{issue['id']}/resolve")
    assert resolved.status_code == 200, resolved.text
    assert (resolved.json()["id"], resolved.json()["resolved"]) == (issue["id"], True)
    assert tenant.get("/api/v1/pim/validation", params={"job_id": job["id"]}).json() == []
    again = tenant.post(f"/api/v1/pim/validation/{issue['id']}/resolve")
    assert again.status_code == 200 and again.json() == resolved.json()
    events = [e for e in tenant.get("/api/v1/pim/audit").json() if e["action"] == "validation_issue.resolved"]
    assert [(e["entity_id"], e["details"]["job_id"], e["details"]["issue_type"]) for e in events] == [(issue["id"], job["id"], "PRODUCT_NOT_FOUND")]
    assert tenant.post("/api/v1/pim/validation/no-such-issue/resolve").status_code == 404


def test_a_finding_about_a_products_data_is_not_resolved_by_hand(tenant: Tenant) -> None:
    job = tenant.create_job("BULK_IMPORT", [{"title": "No description yet", "sku": "ND-1"}])
    assert tenant.wait_job(job["id"])["status"] == "COMPLETED"
    [finding] = tenant.get("/api/v1/pim/validation", params={"issue_type": "MISSING_DESCRIPTION"}).json()
    refused = tenant.post(f"/api/v1/pim/validation/{finding['id']}/resolve")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "issue_not_resolvable"
    assert tenant.get("/api/v1/pim/validation", params={"issue_type": "MISSING_DESCRIPTION"}).json() == [finding]


def test_one_issue_is_read_by_id_resolved_or_not_in_its_tenant_only(tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    issues = "/api/v1/pim/validation"
    missing = "00000000-0000-4000-8000-000000000000"
    first = tenant.create_job("BULK_DELETE", [missing])
    assert tenant.wait_job(first["id"])["status"] == "FAILED"
    [issue] = tenant.get(issues, params={"job_id": first["id"]}).json()
    one = tenant.get(f"{issues}/{issue['id']}")
    assert one.status_code == 200, one.text
    assert one.json() == issue  # the list's item shape
    token, email, user_id = mint(tenant.org_id, [tenant.tenant_id], role="viewer")
    viewer = Tenant(tenant.org_id, tenant.tenant_id, token, email, user_id, tenant.api_url)
    assert viewer.get(f"{issues}/{issue['id']}").json() == issue

    # A later failure of the same identifier supersedes it: out of the list, still read by id.
    second = tenant.create_job("BULK_DELETE", [missing])
    assert tenant.wait_job(second["id"])["status"] == "FAILED"
    superseded = tenant.get(f"{issues}/{issue['id']}").json()
    assert (superseded["resolved"], superseded["job_id"]) == (True, first["id"])
    [newer] = tenant.get(issues).json()
    resolved = tenant.post(f"{issues}/{newer['id']}/resolve").json()
    assert tenant.get(f"{issues}/{newer['id']}").json() == resolved and resolved["resolved"] is True

    for other in (make_tenant(), make_tenant(org_id=tenant.org_id)):
        absent = other.get(f"{issues}/{issue['id']}")
        assert absent.status_code == 404 and absent.json()["error"]["code"] == "not_found"
    for bad in (missing, "__name__", "-a", "a%2Fb", "%2E%2E", "x" * 129, "%C3%A9"):
        absent = tenant.get(f"{issues}/{bad}")
        assert absent.status_code == 404 and absent.json()["error"]["code"] == "not_found", bad
