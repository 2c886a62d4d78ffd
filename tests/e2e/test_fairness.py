"""One tenant's huge job does not starve another tenant's small one (issue 7, windowed dispatch)."""

from __future__ import annotations

import time

import pytest


@pytest.mark.slow
def test_a_small_job_finishes_while_another_tenants_huge_job_is_still_early(make_tenant) -> None:  # type: ignore[no-untyped-def]
    big_tenant, small_tenant = make_tenant(), make_tenant()
    n = 8_000  # 40 chunks; a job keeps at most chunk_window (8) of them queued at a time
    big = big_tenant.create_job("BULK_IMPORT", [{"title": f"Big {i}", "sku": f"B-{i}"} for i in range(n)])
    deadline = time.monotonic() + 60
    while big_tenant.get(f"/api/v1/pim/bulk-jobs/{big['id']}", params={"include_payload": "false"}).json()["status"] == "PENDING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    small = small_tenant.create_job("BULK_IMPORT", [{"title": f"Small {i}", "sku": f"S-{i}"} for i in range(5)])
    done = small_tenant.wait_job(small["id"], timeout=120)
    big_now = big_tenant.get(f"/api/v1/pim/bulk-jobs/{big['id']}", params={"include_payload": "false"}).json()
    applied = (big_now["processed_items"] or 0) + (big_now["failed_items"] or 0)
    big_tenant.post(f"/api/v1/pim/bulk-jobs/{big['id']}/cancel")  # the rest of it is not this test's business
    assert done["status"] == "COMPLETED"
    # Queued behind the whole big job, the small one would have waited for most of its 40 chunks.
    assert applied < n * 0.6, f"the small job waited until {applied} of {n} items of the big one were applied"
