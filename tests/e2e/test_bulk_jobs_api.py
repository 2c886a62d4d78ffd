"""The bulk-jobs API over HTTP on the running stack: the seed's shapes, every error status, isolation."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests

from tests.conftest import Tenant, mint

JOBS = "/api/v1/pim/bulk-jobs"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
SEED_PAYLOAD = [
    {"title": "Merino Wool Sweater", "category": "Knitwear"},
    {"title": "Linen Shirt", "category": "Shirts"},
]


def error_code(response: requests.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


def test_create_returns_the_seed_record(tenant: Tenant) -> None:
    response = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": SEED_PAYLOAD})
    assert response.status_code == 200
    job = response.json()
    assert uuid.UUID(job["id"])
    assert job["org_id"] == tenant.org_id and job["tenant_id"] == tenant.tenant_id
    assert job["job_type"] == "BULK_IMPORT" and job["status"] == "PENDING"
    assert job["total_items"] is None and job["processed_items"] is None
    assert job["item_count"] == len(SEED_PAYLOAD)  # known from the start, for a progress bar
    assert json.loads(job["payload_json"]) == SEED_PAYLOAD
    assert job["created_by"] == tenant.user_id
    assert RFC3339_Z.match(job["created_at"]) and RFC3339_Z.match(job["updated_at"])


def test_job_completes_and_lists_newest_first_without_payload(tenant: Tenant) -> None:
    first = tenant.create_job("BULK_IMPORT", SEED_PAYLOAD)
    second = tenant.create_job("BULK_IMPORT", SEED_PAYLOAD[:1])
    done = tenant.wait_job(second["id"])
    assert done["status"] == "COMPLETED" and done["total_items"] == 1 and done["processed_items"] == 1
    assert done["failed_items"] == 0 and done["started_at"] and done["completed_at"]
    listed = tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json()
    assert [j["id"] for j in listed] == [second["id"], first["id"]]
    assert all("payload_json" not in j for j in listed)
    # type defaults to BULK_UPDATE, as the seed says.
    assert tenant.get(JOBS).json() == []


def test_list_pages_with_cursor_headers(tenant: Tenant) -> None:
    ids = [tenant.create_job("BULK_DELETE", [str(uuid.uuid4())])["id"] for _ in range(5)]
    page = tenant.get(JOBS, params={"type": "BULK_DELETE", "limit": 2})
    assert page.status_code == 200 and len(page.json()) == 2
    assert page.headers["X-Next-Cursor"] and 'rel="next"' in page.headers["Link"]
    seen = tenant.all_pages(JOBS, type="BULK_DELETE", limit=2)
    assert [j["id"] for j in seen] == ids[::-1]


def test_the_list_keeps_only_the_jobs_in_the_status_asked_for(tenant: Tenant) -> None:
    failed = [tenant.create_job("BULK_IMPORT", [{"sku": f"NO-TITLE-{n}"}])["id"] for n in range(2)]
    completed = tenant.create_job("BULK_IMPORT", SEED_PAYLOAD[:1])["id"]
    assert [tenant.wait_job(j)["status"] for j in (*failed, completed)] == ["FAILED", "FAILED", "COMPLETED"]
    listed = tenant.get(JOBS, params={"type": "BULK_IMPORT", "status": "COMPLETED"})
    assert listed.status_code == 200, listed.text
    assert [j["id"] for j in listed.json()] == [completed]
    assert tenant.get(JOBS, params={"type": "BULK_IMPORT", "status": "PENDING"}).json() == []
    assert tenant.get(JOBS, params={"type": "BULK_UPDATE", "status": "FAILED"}).json() == []
    # Paged, newest first, past the completed job between them.
    assert [j["id"] for j in tenant.all_pages(JOBS, type="BULK_IMPORT", status="FAILED", limit=1)] == failed[::-1]
    # An empty status is no filter, as an empty type is the default.
    assert len(tenant.get(JOBS, params={"type": "BULK_IMPORT", "status": ""}).json()) == 3
    for wrong in ("failed", "DONE", "FAILED,COMPLETED"):
        refused = tenant.get(JOBS, params={"type": "BULK_IMPORT", "status": wrong})
        assert refused.status_code == 400 and error_code(refused) == "invalid_query", wrong
        assert refused.json()["error"]["message"] == "status must be one of PENDING, PROCESSING, COMPLETED, FAILED, CANCELLED."
    # Given twice, it is not read as its first value alone (the FAILED jobs as if they were all).
    repeated = tenant.get(JOBS, params=[("type", "BULK_IMPORT"), ("status", "FAILED"), ("status", "COMPLETED")])
    assert repeated.status_code == 400 and error_code(repeated) == "invalid_query", repeated.text


def test_a_list_cursor_works_only_with_the_query_that_issued_it(tenant: Tenant) -> None:
    """A cursor holds a place in one query's order: read in another (another type, status or filter)
    it would start that list at a place that is not its own, a wrong page."""
    imports = [tenant.create_job("BULK_IMPORT", [{"sku": f"NO-TITLE-{n}"}])["id"] for n in range(2)]
    deletes = [tenant.create_job("BULK_DELETE", [str(uuid.uuid4())])["id"] for _ in range(2)]
    assert {tenant.wait_job(j)["status"] for j in (*imports, *deletes)} == {"FAILED"}
    cursor = tenant.get(JOBS, params={"type": "BULK_IMPORT", "limit": 1}).headers["X-Next-Cursor"]
    assert [j["id"] for j in tenant.get(JOBS, params={"type": "BULK_IMPORT", "limit": 1, "cursor": cursor}).json()] == imports[:1]
    for other in ({"type": "BULK_DELETE"}, {"type": "BULK_IMPORT", "status": "FAILED"}, {}):
        refused = tenant.get(JOBS, params={**other, "limit": 1, "cursor": cursor})
        assert refused.status_code == 400 and error_code(refused) == "invalid_cursor", other
    # The validation list's filters too: two IMPORT_REJECTED and two PRODUCT_NOT_FOUND issues.
    issues = "/api/v1/pim/validation"
    cursor = tenant.get(issues, params={"issue_type": "IMPORT_REJECTED", "limit": 1}).headers["X-Next-Cursor"]
    assert tenant.get(issues, params={"issue_type": "IMPORT_REJECTED", "limit": 1, "cursor": cursor}).status_code == 200
    for other in ({"issue_type": "PRODUCT_NOT_FOUND"}, {"issue_type": "IMPORT_REJECTED", "job_id": imports[0]}, {}):
        refused = tenant.get(issues, params={**other, "limit": 1, "cursor": cursor})
        assert refused.status_code == 400 and error_code(refused) == "invalid_cursor", other


def test_a_catalog_walk_goes_on_when_a_bulk_delete_removes_the_product_a_page_ended_on(tenant: Tenant) -> None:
    products = "/api/v1/pim/products"
    # One import stamps its products alike: the pages split ties on created_at, by id.
    tenant.wait_job(tenant.create_job("BULK_IMPORT", [{"title": f"Walk {i}", "sku": f"WALK-{i}"} for i in range(7)])["id"])
    catalog = [p["id"] for p in tenant.all_pages(products)]
    seen, deleted, params = [], [], {"limit": "2"}
    while True:
        page = tenant.get(products, params=params)
        assert page.status_code == 200, page.text
        seen += [p["id"] for p in page.json()]
        if "X-Next-Cursor" not in page.headers:
            break
        boundary = page.json()[-1]["id"]
        done = tenant.wait_job(tenant.create_job("BULK_DELETE", [boundary])["id"])
        assert (done["status"], done["failed_items"]) == ("COMPLETED", 0)
        assert tenant.get(f"{products}/{boundary}").status_code == 404
        deleted.append(boundary)
        params = {"limit": "2", "cursor": page.headers["X-Next-Cursor"]}
    assert len(deleted) == 3 and seen == catalog  # every product once, none skipped
    assert [p["id"] for p in tenant.all_pages(products)] == [i for i in catalog if i not in deleted]


def test_large_payload_is_kept_out_of_the_document_and_still_returned(tenant: Tenant) -> None:
    payload = [{"title": f"Product {i}", "description": "x" * 900} for i in range(1000)]  # ~1 MB
    job = tenant.create_job("BULK_IMPORT", payload)
    fetched = tenant.get(f"{JOBS}/{job['id']}").json()
    assert json.loads(fetched["payload_json"]) == payload
    assert tenant.wait_job(job["id"])["processed_items"] == 1000


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"job_type": "BULK_IMPORT", "payload": [', "application/json", 400, "malformed_json"),
        (b'{"payload": []}', "application/json", 400, "missing_field"),
        (b'{"job_type": "BULK_IMPORT"}', "application/json", 400, "missing_field"),
        (b'{"job_type": "BULK_IMPORT", "payload": [{"title": NaN}]}', "application/json", 400, "malformed_json"),
        (b'{"job_type": "X", "job_type": "BULK_IMPORT", "payload": [{}]}', "application/json", 400, "malformed_json"),
        (b'\xff\xfe{"job_type": 1}', "application/json", 400, "malformed_json"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json", 400, "malformed_json"),
        (b'{"job_type": "BULK_IMPORT", "payload": [{}]}', "text/plain", 415, "unsupported_media_type"),
        (b'{"job_type": "BULK_EXPLODE", "payload": [{}]}', "application/json", 422, "invalid_job_type"),
        (b'{"job_type": "BULK_IMPORT", "payload": "[]"}', "application/json", 422, "invalid_payload"),
        (b'{"job_type": "BULK_IMPORT", "payload": []}', "application/json", 422, "empty_payload"),
        (b'{"job_type": "BULK_DELETE", "payload": [{"id": "x"}]}', "application/json", 422, "invalid_payload"),
        (b'{"job_type": "BULK_IMPORT", "payload": ["not-an-object"]}', "application/json", 422, "invalid_payload"),
        (b'{"job_type": "BULK_IMPORT", "payload": [{}], "extra": 1}', "application/json", 422, "unknown_field"),
    ],
)
def test_bad_create_requests_are_refused_and_write_nothing(tenant: Tenant, body: bytes, content_type: str, status: int, code: str) -> None:
    response = tenant.post(JOBS, data=body, headers={**tenant.headers(), "Content-Type": content_type})
    assert response.status_code == status, response.text
    assert error_code(response) == code
    for job_type in ("BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE"):
        assert tenant.get(JOBS, params={"type": job_type}).json() == []
    assert tenant.get("/api/v1/pim/audit").json() == []


def test_body_over_32_mb_is_413(tenant: Tenant) -> None:
    body = b'{"job_type": "BULK_IMPORT", "payload": [{"title": "' + b"x" * (32 * 1024 * 1024) + b'"}]}'
    response = tenant.post(JOBS, data=body, headers={**tenant.headers(), "Content-Type": "application/json"})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json() == []


def test_auth_statuses(tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    h = tenant.headers
    assert tenant.get(JOBS, headers={k: v for k, v in h().items() if k != "Authorization"}).status_code == 401
    assert tenant.get(JOBS, headers=h(Authorization="Bearer synq_nope")).status_code == 401
    assert tenant.get(JOBS, headers=h(Authorization="Basic abc")).status_code == 401
    missing_tenant = tenant.get(JOBS, headers={k: v for k, v in h().items() if k != "X-Tenant-ID"})
    assert missing_tenant.status_code == 400 and error_code(missing_tenant) == "missing_header"
    assert tenant.get(JOBS, headers={k: v for k, v in h().items() if k != "X-Org-ID"}).status_code == 400
    assert tenant.get(JOBS, headers=h(**{"X-Tenant-ID": "../other"})).status_code == 400
    assert tenant.get(JOBS, headers=h(**{"X-Tenant-ID": "__name__"})).status_code == 400

    expired, _, _ = mint(tenant.org_id, [tenant.tenant_id], expires_in=-1)
    assert tenant.get(JOBS, headers=h(Authorization=f"Bearer {expired}")).status_code == 401
    from common.store.tokens import revoke_token

    revoked, _, _ = mint(tenant.org_id, [tenant.tenant_id])
    assert tenant.get(JOBS, headers=h(Authorization=f"Bearer {revoked}")).status_code == 200
    revoke_token(revoked)
    assert tenant.get(JOBS, headers=h(Authorization=f"Bearer {revoked}")).status_code == 401

    viewer = make_tenant(role="viewer")
    assert viewer.get(JOBS).status_code == 200
    refused = viewer.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": SEED_PAYLOAD})
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert viewer.get(JOBS, params={"type": "BULK_IMPORT"}).json() == []


def test_routing_statuses(tenant: Tenant) -> None:
    assert tenant.get("/api/v1/pim/nope").status_code == 404
    not_allowed = tenant.request("DELETE", JOBS)
    assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "GET, HEAD, POST"
    head = tenant.request("HEAD", JOBS, params={"type": "BULK_IMPORT"})
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Type"] == "application/json"
    misnamed = tenant.post("/api/v1/pim/product-import", params={"whatif": "true"}, json={})
    assert misnamed.status_code == 400 and error_code(misnamed) == "unknown_parameter"
    assert tenant.get(f"{JOBS}/{uuid.uuid4()}").status_code == 404
    assert tenant.get(f"{JOBS}/not-a-uuid").status_code == 404
    assert tenant.get(JOBS, params={"type": "BULK_EXPLODE"}).status_code == 400
    assert tenant.get(JOBS, params={"type": "BULK_IMPORT", "limit": "500"}).status_code == 400
    assert tenant.get(JOBS, params={"type": "BULK_IMPORT", "cursor": "Li4vZXRj"}).status_code == 400


def test_tenant_isolation_by_every_header_combination(make_tenant) -> None:  # type: ignore[no-untyped-def]
    a, b = make_tenant(), make_tenant()
    job_b = b.create_job("BULK_IMPORT", SEED_PAYLOAD)
    combos = [
        (a.org_id, b.tenant_id),
        (b.org_id, b.tenant_id),
        (b.org_id, a.tenant_id),
    ]
    for org_id, tenant_id in combos:
        headers = a.headers(**{"X-Org-ID": org_id, "X-Tenant-ID": tenant_id})
        assert a.get(JOBS, headers=headers, params={"type": "BULK_IMPORT"}).status_code == 403
        assert a.get(f"{JOBS}/{job_b['id']}", headers=headers).status_code == 403
    # With its own headers, A sees nothing of B's.
    assert a.get(f"{JOBS}/{job_b['id']}").status_code == 404
    assert a.get(JOBS, params={"type": "BULK_IMPORT"}).json() == []


def test_errors_and_logs_never_carry_the_token(tenant: Tenant, stack) -> None:  # type: ignore[no-untyped-def]
    tenant.get(JOBS, headers=tenant.headers(Authorization=f"Bearer {tenant.token}x"))
    tenant.create_job("BULK_IMPORT", SEED_PAYLOAD)
    logs = "".join(stack.log_path(name).read_text(errors="replace") for name in ("api", "dispatch_job", "process_chunk"))
    assert tenant.token not in logs
    for line in stack.log_path("api").read_text().splitlines():
        if line.startswith("{"):
            assert "severity" in json.loads(line)
