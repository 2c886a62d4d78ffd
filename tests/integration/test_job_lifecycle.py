"""Cancel and retry-failures on the real emulators, with delivery under the test's control."""

from __future__ import annotations

from typing import Any

import pytest

from common import errors
from common.services import jobs
from tests.integration.conftest import Pipeline


def products(n: int, prefix: str) -> list[dict[str, Any]]:
    return [{"title": f"{prefix} {i}", "sku": f"{prefix}-{i}", "description": "A long enough description of this product."} for i in range(n)]


def test_cancel_pending_job_never_runs(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", products(3, "CP"))
    cancelled = jobs.cancel_job(pipeline.principal, job["id"])
    assert cancelled["status"] == "CANCELLED" and cancelled["completed_at"]
    assert pipeline.dispatch_all() == []
    assert pipeline.job(job["id"])["status"] == "CANCELLED" and len(pipeline.products()) == 0
    with pytest.raises(errors.Conflict):
        jobs.cancel_job(pipeline.principal, job["id"])


def test_cancel_in_flight_skips_chunks_not_started_and_counts_what_was_applied(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", products(600, "CF"))
    first, *rest = pipeline.dispatch_all()
    jobs.process_chunk(first)
    jobs.cancel_job(pipeline.principal, job["id"])
    for message in rest:
        jobs.process_chunk(message)
    done = pipeline.job(job["id"])
    assert done["status"] == "CANCELLED"
    assert done["processed_items"] == 200 == len(pipeline.products())
    # The reconciler has nothing left to republish for a cancelled job.
    assert all(job_chunk["done"] for job_chunk in (jobs.store.chunk_progress(pipeline.scope, job["id"], n) or {} for n in range(3)))


def test_retry_failed_items_with_a_correction_links_both_jobs(pipeline: Pipeline) -> None:
    payload = products(5, "RT")
    payload[1] = {"sku": "RT-1", "colour": "red"}
    payload[3] = {"title": "", "sku": "RT-3"}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert failed["status"] == "FAILED"
    with pytest.raises(errors.Unprocessable):
        jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"0": {"title": "not a failed item"}}})
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"3": {"title": "Fixed", "sku": "RT-3"}}})
    assert retry["retry_of"] == failed["id"] and pipeline.job(failed["id"])["retried_by"] == retry["id"]
    import json

    assert json.loads(retry["payload_json"]) == [{"sku": "RT-1", "colour": "red"}, {"title": "Fixed", "sku": "RT-3"}]
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)
    done = pipeline.job(retry["id"])
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("FAILED", 2, 1, 1)
    with pytest.raises(errors.Conflict):
        jobs.retry_job(pipeline.principal, failed["id"], None)
    completed = pipeline.run("BULK_IMPORT", products(1, "RC"))
    with pytest.raises(errors.Conflict):
        jobs.retry_job(pipeline.principal, completed["id"], None)
