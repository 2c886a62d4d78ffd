"""Cancel and retry-failures on the real emulators, with delivery under the test's control."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.domain import engine
from common.models.audit import audit_event
from common.models.job import ChunkMessage, JobMessage
from common.services import catalog, jobs
from common.store import blobs
from common.store import jobs as job_store
from common.store.paths import coll, index_key, read
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
    pipeline.cancel_after_first_chunk(job["id"])
    done = pipeline.job(job["id"])
    assert done["status"] == "CANCELLED"
    assert done["processed_items"] == 200 == len(pipeline.products())
    # The reconciler has nothing left to republish for a cancelled job.
    assert all(job_chunk["done"] for job_chunk in (jobs.store.chunk_progress(pipeline.scope, job["id"], n) or {} for n in range(3)))


def test_a_step_a_dead_worker_left_uncounted_is_counted_when_the_job_was_cancelled_meanwhile(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = pipeline.create("BULK_IMPORT", products(200, "CD"))
    [message] = pipeline.dispatch_all()

    def died(*args: Any) -> None:
        raise SystemExit("the worker died after its step committed, before counting it")

    monkeypatch.setattr(jobs.store, "count_progress", died)
    with pytest.raises(SystemExit):
        jobs.process_chunk(message)
    monkeypatch.undo()
    jobs.cancel_job(pipeline.principal, job["id"])
    jobs.process_chunk(message)  # the redelivery finds the job ended
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"]) == ("CANCELLED", 200) and len(pipeline.products()) == 200


def test_retry_failed_items_with_a_correction_links_both_jobs(pipeline: Pipeline) -> None:
    payload = products(5, "RT")
    payload[1] = {"sku": "RT-1", "colour": "red"}
    payload[3] = {"title": "", "sku": "RT-3"}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert failed["status"] == "FAILED"
    for key in ("0", "03", "³", "٣", " 3"):  # not a failed item, or not an index as JSON writes it
        with pytest.raises(errors.Unprocessable) as refused:
            jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {key: {"title": "Fixed", "sku": "RT-3"}}})
        assert refused.value.code == "invalid_correction"
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"3": {"title": "Fixed", "sku": "RT-3"}}})
    assert retry["retry_of"] == failed["id"] and pipeline.job(failed["id"])["retried_by"] == retry["id"]
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


def open_failures(pipeline: Pipeline, job_id: str) -> list[tuple[int, str | None]]:
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": job_id}, limit=100, cursor=None)
    return sorted((i["item_index"], i["identifier"]) for i in issues)


def test_a_retry_resolves_the_failures_of_the_items_it_runs_again(pipeline: Pipeline) -> None:
    """Whatever identifier the item had, or none: the retry's own outcome is what stays open."""
    payload = products(6, "RS")
    payload[1] = {"title": ""}  # no identifier: nothing but a retry can ever resolve its failure
    payload[3] = {"title": "", "sku": "RS 3"}  # the retry corrects the identifier itself
    payload[4] = {"sku": "RS-4"}  # fails again in the retry
    failed = pipeline.run("BULK_IMPORT", payload)
    assert open_failures(pipeline, failed["id"]) == [(1, None), (3, "RS 3"), (4, "RS-4")]
    corrections = {"1": {"title": "Named", "sku": "RS-1"}, "3": {"title": "Named", "sku": "RS-3"}}
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": corrections})
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 2, 1)
    assert open_failures(pipeline, failed["id"]) == []
    assert open_failures(pipeline, retry["id"]) == [(2, "RS-4")]
    # The corrected identifier's index entry went with its issue: a later "RS 3" fails on its own.
    assert pipeline.run("BULK_IMPORT", [{"title": "Again", "sku": "RS 3", "description": "x" * 40}])["status"] == "COMPLETED"


def test_jobs_failing_one_sku_again_and_again_leave_one_open_issue(pipeline: Pipeline) -> None:
    """Each failure supersedes the one before, whichever job type failed it; an item without an
    identifier supersedes nothing."""
    first = pipeline.run("BULK_IMPORT", [{"sku": "NF-1"}, {"title": ""}])
    second = pipeline.run("BULK_UPDATE", [{"sku": "NF-1", "brand": "B"}])  # no such product
    third = pipeline.run("BULK_IMPORT", [{"title": ""}, {"sku": "NF-1", "colour": "red"}])
    assert [j["status"] for j in (first, second, third)] == ["FAILED"] * 3
    issues, _ = catalog.list_issues(pipeline.scope, {}, limit=100, cursor=None)
    assert sorted((i["job_id"], i["item_index"], i["identifier"]) for i in issues) == sorted(
        [(first["id"], 1, None), (third["id"], 0, None), (third["id"], 1, "NF-1")]
    )


def test_a_retrys_results_name_the_index_each_item_had_in_the_job_retried(pipeline: Pipeline) -> None:
    """Items without an identifier can be told apart only by where they came from: over the
    retry's two chunks, each result says its index in the job retried, the key of `corrections`."""
    payload = products(450, "RI")
    for i in range(1, 450, 2):
        payload[i] = {"title": ""}  # no identifier, and fails
    failed = pipeline.run("BULK_IMPORT", payload)
    assert all(r.get("retry_of_index") is None for r in pipeline.results(failed["id"]))
    corrections = {str(i): {"title": f"Fixed {i}"} for i in range(1, 450, 4)}  # every other failed item
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": corrections})
    assert pipeline.drive(retry["id"])["failed_items"] == 112
    rows = pipeline.results(retry["id"])
    assert [(r["index"], r["retry_of_index"]) for r in rows] == [(n, 2 * n + 1) for n in range(225)]
    assert all((r["result"] == "created") == (str(r["retry_of_index"]) in corrections) for r in rows)
    again = pipeline.results(retry["id"], failed_only=True)
    assert [r["retry_of_index"] for r in again] == list(range(3, 450, 4))


def test_racing_retries_of_one_job_store_one(pipeline: Pipeline) -> None:
    """Each racing retry creates the same job id; the one stored also links the original, in one
    commit, so the others get 409 already_retried and nothing of theirs is left behind."""
    failed = pipeline.run("BULK_IMPORT", [*products(2, "RR"), {"sku": "RR-2"}])
    assert failed["status"] == "FAILED"
    barrier = threading.Barrier(6)

    def retry(n: int) -> str:
        barrier.wait()
        try:
            return str(jobs.retry_job(pipeline.principal, failed["id"], None if n % 2 else {"corrections": {"2": {"title": f"Fix {n}", "sku": "RR-2"}}})["id"])
        except errors.Conflict as exc:
            return exc.code

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(retry, range(6)))
    [stored] = [o for o in outcomes if o != "already_retried"]
    assert outcomes.count("already_retried") == 5
    assert pipeline.job(failed["id"])["retried_by"] == stored
    created = [e for e in pipeline.audit_events() if e["action"] == "bulk_job.created"]
    assert sorted(e["entity_id"] for e in created) == sorted([failed["id"], stored])


def test_a_retry_whose_commit_answer_was_lost_is_still_the_retry(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client re-sends a commit whose answer it lost and gets AlreadyExists for the job this very
    request stored: that is the retry going through, not a retry that lost a race (whose payload
    object would be deleted, leaving the stored job unable to run)."""
    payload = big_payload("LOST")
    payload[5] = {"sku": "LOST-5", "colour": "red", "description": "d" * 2000}
    failed = pipeline.run("BULK_IMPORT", payload)
    stored_then_lost = job_store.create

    def create(*args: Any, **kwargs: Any) -> None:
        stored_then_lost(*args, **kwargs)
        raise gexc.AlreadyExists("the re-sent commit")

    monkeypatch.setattr(job_store, "create", create)
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"5": {"title": "Fixed", "sku": "LOST-5"}}})
    monkeypatch.undo()
    assert pipeline.job(failed["id"])["retried_by"] == retry["id"]
    assert pipeline.drive(retry["id"])["status"] == "COMPLETED"


def test_a_retry_without_a_body_retries_every_failed_item(pipeline: Pipeline) -> None:
    failed = pipeline.run("BULK_IMPORT", [*products(2, "RN"), {"sku": "RN-2", "colour": "red"}])
    retry = jobs.retry_job(pipeline.principal, failed["id"], None)
    assert json.loads(retry["payload_json"]) == [{"sku": "RN-2", "colour": "red"}]


def test_a_cancelled_job_is_retried_with_its_failures_and_the_items_it_never_reached(pipeline: Pipeline) -> None:
    payload = products(600, "RC")
    payload[5] = {"sku": "RC-5"}  # no title: fails before the cancel
    job = pipeline.create("BULK_IMPORT", payload)
    pipeline.cancel_after_first_chunk(job["id"])
    assert open_failures(pipeline, job["id"]) == [(5, "RC-5")]
    with pytest.raises(errors.Unprocessable) as refused:  # applied before the cancel: not the retry's
        jobs.retry_job(pipeline.principal, job["id"], {"corrections": {"4": {"title": "Again", "sku": "RC-4"}}})
    assert refused.value.code == "invalid_correction"
    retry = jobs.retry_job(pipeline.principal, job["id"], {"corrections": {"5": {"title": "Fixed", "sku": "RC-5"}}})
    assert retry["item_count"] == 401 and json.loads(retry["payload_json"])[:2] == [{"title": "Fixed", "sku": "RC-5"}, payload[200]]
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 401, 0)
    rows = pipeline.results(retry["id"])
    assert [r["retry_of_index"] for r in rows] == [5, *range(200, 600)] and {r["result"] for r in rows} == {"created"}
    assert len(pipeline.products()) == 600 and open_failures(pipeline, job["id"]) == []
    assert pipeline.job(job["id"])["retried_by"] == retry["id"]


def test_a_step_in_flight_when_a_cancelled_job_is_retried_applies_nothing_more(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker read the job's status just before the cancel, so it goes on to its next step while
    the retry is made: the retry seals the job's chunks first, so that step finds its chunk done
    rather than applying items the retry runs too."""
    job = pipeline.create("BULK_IMPORT", products(200, "SF"))
    [message] = pipeline.dispatch_all()
    made: list[dict[str, Any]] = []

    def status_read_before_the_cancel(scope: Any, job_id: str) -> str:
        if not made:
            jobs.cancel_job(pipeline.principal, job_id)
            made.append(jobs.retry_job(pipeline.principal, job_id, None))
        return "PROCESSING"

    monkeypatch.setattr(jobs.store, "status", status_read_before_the_cancel)
    jobs.process_chunk(message)
    monkeypatch.undo()
    [retry] = made
    chunk = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert chunk is not None and chunk["done"] and chunk.get("skipped") and 0 < chunk["applied"] < 200
    cancelled = pipeline.job(job["id"])
    assert (cancelled["status"], cancelled["processed_items"]) == ("CANCELLED", chunk["applied"])
    assert retry["item_count"] == 200 - chunk["applied"]
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 200 - chunk["applied"])
    assert {r["result"] for r in pipeline.results(retry["id"])} == {"created"} and len(pipeline.products()) == 200


def test_only_a_failed_or_cancelled_job_with_items_left_can_be_retried(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    completed = pipeline.run("BULK_IMPORT", products(2, "NR"))
    with pytest.raises(errors.Conflict) as refused:
        jobs.retry_job(pipeline.principal, completed["id"], None)
    assert refused.value.code == "job_not_failed"
    # Cancelled after its last item was applied, before the job was finished.
    job = pipeline.create("BULK_IMPORT", products(2, "NA"))
    monkeypatch.setattr(jobs, "finish_if_done", lambda scope, job: None)
    [jobs.process_chunk(m) for m in pipeline.dispatch_all()]
    jobs.cancel_job(pipeline.principal, job["id"])
    with pytest.raises(errors.Conflict) as nothing:
        jobs.retry_job(pipeline.principal, job["id"], None)
    assert nothing.value.code == "nothing_to_retry" and "retried_by" not in job_store.get(pipeline.scope, job["id"], ["retried_by"])  # type: ignore[operator]


def big_payload(prefix: str) -> list[dict[str, Any]]:
    """Over the inline limit (700,000 bytes), so the payload is stored in the bucket."""
    items = products(400, prefix)
    for item in items:
        item["description"] = "d" * 2000
    return items


def test_a_job_whose_payload_expired_before_it_ran_ends_failed_once(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", big_payload("EXP"))
    stored = job_store.get(pipeline.scope, job["id"])
    assert stored is not None and "payload_json" not in stored
    blobs.bucket().blob(stored["payload_object"]).delete()  # what the bucket's retention rule does
    message = JobMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id)
    jobs.dispatch(message)  # acknowledged: no exception, so Pub/Sub does not redeliver it for ever
    jobs.dispatch(message)  # a redelivery changes nothing
    failed = pipeline.job(job["id"])
    assert failed["status"] == "FAILED" and failed["completed_at"]
    assert (failed["total_items"], failed["processed_items"], failed["failed_items"]) == (400, 0, 400)
    assert failed["payload_json"] is None and failed["error"] == "payload_expired"  # its record says why
    events = [e for e in pipeline.audit_events() if e["entity_id"] == job["id"] and e["action"] == "bulk_job.failed"]
    assert [e["details"]["reason"] for e in events] == ["payload_expired"]
    assert pipeline.products() == [] and pipeline.pull("chunks") == []
    with pytest.raises(errors.Gone) as gone:
        jobs.retry_job(pipeline.principal, job["id"], {})
    assert gone.value.code == "payload_expired"


def test_a_chunk_of_a_job_that_ended_before_it_ran_is_marked_done(pipeline: Pipeline) -> None:
    # A dispatch that stored (published) chunks and then met the payload gone: the job is FAILED,
    # and a chunk message that still arrives must leave nothing for the reconciler to republish.
    job = pipeline.create("BULK_IMPORT", products(3, "END"))
    job_store.create_chunks(pipeline.scope, job["id"], [(0, 0, "[]", 3)], "commit", 8)
    audit = audit_event(
        org_id=pipeline.scope.org_id,
        tenant_id=pipeline.scope.tenant_id,
        actor_email="pipeline@example.com",
        ip_address="203.0.113.42",
        action="bulk_job.failed",
        entity_type="bulk_job",
        entity_id=job["id"],
        details={},
    )
    assert job_store.fail_pending(pipeline.scope, job["id"], "payload_expired", audit)
    jobs.process_chunk(ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=0))
    chunk = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert chunk is not None and chunk["done"] and chunk["skipped"]
    assert pipeline.job(job["id"])["status"] == "FAILED" and pipeline.products() == []


def test_an_issue_resolved_by_hand_leaves_the_identifier_index(pipeline: Pipeline) -> None:
    """Otherwise a later success under that identifier would resolve it a second time."""
    failed = pipeline.run("BULK_IMPORT", [{"sku": "HR-1"}])
    assert open_failures(pipeline, failed["id"]) == [(0, "HR-1")]
    issue_id = engine.derived_id(failed["id"], 0, "failure")
    entry = coll(pipeline.scope, "identifier_index").document(index_key("HR-1"))
    assert read(entry).exists
    catalog.resolve_issue(pipeline.principal, issue_id)
    assert open_failures(pipeline, failed["id"]) == [] and not read(entry).exists
