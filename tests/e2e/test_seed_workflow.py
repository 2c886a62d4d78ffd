"""The seed's five-step import workflow, literally, and a 10,000-product import, over HTTP."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Tenant

JOBS = "/api/v1/pim/bulk-jobs"


def test_seed_five_steps_failed_records_are_validation_issues_until_fixed(tenant: Tenant) -> None:
    # 1. Prepare the payload: two good products, two bad records.
    payload = [
        {
            "title": "Merino Wool Crew Neck Sweater",
            "description": "100% Grade-A merino wool.",
            "category": "Knitwear",
            "brand": "NordicThread",
            "sku": "MWS-1",
        },
        {"sku": "BAD-1", "category": "Shirts"},
        {
            "title": "Classic Oxford Button-Down",
            "description": "Egyptian cotton, slim fit.",
            "category": "Shirts",
            "brand": "HarbourLine",
            "sku": "COB-1",
        },
        {"title": "Linen Shirt", "sku": "BAD-2", "colour": "white"},
    ]
    # 2. Create the bulk job. 3. Store the job id.
    created = tenant.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": payload})
    assert created.status_code == 200 and created.json()["status"] == "PENDING"
    job_id = created.json()["id"]
    # 4. Poll the list filtered by type until the job is done.
    deadline = time.monotonic() + 60
    while True:
        [listed] = [j for j in tenant.get(JOBS, params={"type": "BULK_IMPORT"}).json() if j["id"] == job_id]
        if listed["status"] in ("COMPLETED", "FAILED"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert (listed["status"], listed["total_items"], listed["processed_items"]) == ("FAILED", 4, 2)
    # 5. FAILED: the records that caused it are in GET /validation.
    issues = tenant.get("/api/v1/pim/validation", params={"job_id": job_id}).json()
    assert sorted((i["identifier"], i["item_index"], i["severity"]) for i in issues) == [("BAD-1", 1, "ERROR"), ("BAD-2", 3, "ERROR")]
    everything = tenant.get("/api/v1/pim/validation").json()
    assert {i["id"] for i in issues} <= {i["id"] for i in everything}
    rejected = tenant.get("/api/v1/pim/validation", params={"issue_type": "IMPORT_REJECTED"}).json()
    assert {i["id"] for i in issues} <= {i["id"] for i in rejected}
    misspelt = tenant.get("/api/v1/pim/validation", params={"issue_type": "INVALID_BARCODES"})
    assert misspelt.status_code == 400 and misspelt.json()["error"]["code"] == "invalid_query"  # not an empty list
    by_identifier = {i["identifier"]: i for i in issues}
    assert "title" in by_identifier["BAD-1"]["message"] and "colour" in by_identifier["BAD-2"]["message"]

    # Fix the records and import them again: the issues disappear.
    fixed = [
        {"title": "Linen Trousers", "sku": "BAD-1", "category": "Trousers", "description": "Breathable linen for warm days.", "brand": "HarbourLine"},
        {"title": "Linen Shirt", "sku": "BAD-2", "category": "Shirts", "description": "White linen shirt, relaxed fit.", "brand": "HarbourLine"},
    ]
    retry = tenant.create_job("BULK_IMPORT", fixed)
    assert tenant.wait_job(retry["id"])["status"] == "COMPLETED"
    assert tenant.get("/api/v1/pim/validation", params={"job_id": job_id}).json() == []


@pytest.mark.slow
def test_ten_thousand_products_reach_completed(tenant: Tenant) -> None:
    n = 10_000
    payload = [
        {
            "title": f"Product {i}",
            "sku": f"TK-{i:05d}",
            "description": "A long enough description of this product.",
            "category": "Shirts",
            "brand": "HarbourLine",
        }
        for i in range(n)
    ]
    job = tenant.create_job("BULK_IMPORT", payload)
    done = tenant.wait_job(job["id"], timeout=300)
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("COMPLETED", n, n, 0)
    first_page = tenant.get(f"{JOBS}/{job['id']}/results", params={"limit": 1000})
    assert [r["index"] for r in first_page.json()] == list(range(1000))
    assert first_page.headers["X-Next-Cursor"] == "1000"
    assert tenant.get(f"{JOBS}/{job['id']}/results", params={"status": "failed"}).json() == []
