"""Cancel and retry of a CANCELLED job racing the job's own workers, on the real emulators.

Each interleaving is made deterministic: a worker is held at a hook (events, monkeypatched store
functions) while the cancel and the retry happen, then let go. The promise checked: between the
cancelled job and its retry every item is applied exactly once, and the retry knows which.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from common.services import catalog, jobs, product_import
from common.store import jobs as job_store
from tests.integration.conftest import Pipeline
from tests.integration.test_product_import_jobs import VOCABULARY, envelope, product

WAIT = 30  # seconds an event may take before the test gives up (never reached when it passes)


@pytest.fixture
def with_vocabulary(pipeline: Pipeline) -> Pipeline:
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    return pipeline


def items(n: int, prefix: str, failing: int = 0) -> list[dict[str, Any]]:
    """n plain products; with `failing`, every `failing`-th item (from index failing - 1) has no title and fails."""
    out: list[dict[str, Any]] = [
        {"title": f"{prefix} {i}", "sku": f"{prefix}-{i}", "description": "A long enough description of this product."} for i in range(n)
    ]
    if failing:
        for i in range(failing - 1, n, failing):
            out[i] = {"sku": f"{prefix}-{i}"}
    return out


def validate_then_hold_the_commit_round(pipeline: Pipeline, job_id: str) -> list[jobs.ChunkMessage]:
    """Run an ErrorMode Fail job's validation round; return the commit round's messages, undelivered."""
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)
    assert job_store.get(pipeline.scope, job_id, ["phase", "status"]) == {"phase": "commit", "status": "PROCESSING"}
    return [jobs.ChunkMessage.model_validate_json(data) for data in pipeline.pull("chunks")]


def test_a_fail_job_cancelled_once_its_commit_round_began_is_retried_with_every_uncommitted_item(with_vocabulary: Pipeline) -> None:
    """Validation passed and `finish` opened the commit round; the cancel lands before chunks 1 and 2
    committed. Their validation-round progress says every item ran, but none of them was committed:
    the retry must run them, and the cancelled job's rows must not say they were created."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    commit_round = validate_then_hold_the_commit_round(pipeline, job["id"])
    jobs.process_chunk(next(m for m in commit_round if m.chunk == 0))  # chunk 0 commits its 200 items
    jobs.cancel_job(pipeline.principal, job["id"])
    for message in commit_round:
        jobs.process_chunk(message)  # the rest of the round finds the job cancelled
    assert len(pipeline.products()) == 200
    rows = pipeline.results(job["id"])
    assert [r["result"] for r in rows[:200]] == ["created"] * 200
    assert all(r["result"] == "failed" and r["product_id"] is None for r in rows[200:]), "uncommitted rows read as applied"
    assert [r["index"] for r in pipeline.results(job["id"], failed_only=True)] == list(range(200, 450))
    retry = jobs.retry_job(pipeline.principal, job["id"], None)
    assert retry["item_count"] == 250
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 250) and len(pipeline.products()) == 450
    assert [r["retry_of_index"] for r in pipeline.results(retry["id"])] == list(range(200, 450))


def test_a_fail_job_cancelled_before_any_chunk_committed_is_retried_whole(with_vocabulary: Pipeline) -> None:
    """The cancel lands right after `finish` returned "commit" (the round's messages are on their way)."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(250)], "Fail"))
    commit_round = validate_then_hold_the_commit_round(pipeline, job["id"])
    jobs.cancel_job(pipeline.principal, job["id"])
    for message in commit_round:
        jobs.process_chunk(message)
    assert pipeline.products() == []
    retry = jobs.retry_job(pipeline.principal, job["id"], None)  # was: 409 nothing_to_retry, 250 items lost
    assert retry["item_count"] == 250
    assert pipeline.drive(retry["id"])["processed_items"] == 250 and len(pipeline.products()) == 250


def test_a_commit_round_delivery_in_flight_during_the_seal_never_commits_its_chunk(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of the commit round read the job (PROCESSING, committing) and is about to reset its
    chunk, done in the validation round, for the commit pass. The cancel and the retry (which seals
    the job) land right then. The reset must not reopen the sealed chunk: the retry runs its items."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(250)], "Fail"))
    commit_round = validate_then_hold_the_commit_round(pipeline, job["id"])
    made: list[dict[str, Any]] = []
    real_reset = job_store.reset_chunk

    def cancel_and_retry_first(scope: Any, job_id: str, n: int, phase: str) -> dict[str, Any]:
        if not made:
            jobs.cancel_job(pipeline.principal, job_id)
            made.append(jobs.retry_job(pipeline.principal, job_id, None))
        return real_reset(scope, job_id, n, phase)

    monkeypatch.setattr(jobs.store, "reset_chunk", cancel_and_retry_first)
    jobs.process_chunk(next(m for m in commit_round if m.chunk == 0))
    monkeypatch.undo()
    [retry] = made
    applied_by_cancelled = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert applied_by_cancelled is not None
    # Whatever the cancelled job committed, the retry does not run again.
    committed = applied_by_cancelled["applied"] if applied_by_cancelled.get("phase") == "commit" else 0
    assert retry["item_count"] == 250 - committed
    pipeline.drive(retry["id"])
    rows = pipeline.results(retry["id"])
    assert {r["result"] for r in rows} == {"created"}, "an item the retry runs was committed by the cancelled job too"
    assert len(pipeline.products()) == 250


def test_failures_committed_by_a_step_in_flight_while_the_retry_reads_them_are_retried(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker read the job's status just before the cancel and takes its next step while the
    retry is being made: after the retry read the job's failures, before it sealed the chunks. That
    step's failed items ran (the seal counts them) yet are not among the failures read: lost."""
    job = pipeline.create("BULK_IMPORT", items(200, "FS", failing=4))
    [message] = pipeline.dispatch_all()
    at_check, go, stepped = threading.Event(), threading.Event(), threading.Event()
    real_status, real_step, real_page = job_store.status, jobs.catalog.apply_chunk_step, job_store.results_by_chunk

    def status_held(scope: Any, job_id: str) -> str | None:
        if not at_check.is_set():
            at_check.set()
            assert go.wait(WAIT)
            return "PROCESSING"  # as read before the cancel
        return real_status(scope, job_id)

    def step(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = real_step(*args, **kwargs)
        if go.is_set():
            stepped.set()
        return out

    monkeypatch.setattr(jobs.store, "status", status_held)
    monkeypatch.setattr(jobs.catalog, "apply_chunk_step", step)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            jobs.process_chunk(message)
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        assert at_check.wait(WAIT)
        jobs.cancel_job(pipeline.principal, job["id"])

        def page_then_step(*args: Any, **kwargs: Any) -> Any:
            out = real_page(*args, **kwargs)
            if not go.is_set():
                go.set()
                assert stepped.wait(WAIT)
            return out

        monkeypatch.setattr(jobs.store, "results_by_chunk", page_then_step)
        retry = jobs.retry_job(pipeline.principal, job["id"], None)
        assert stepped.is_set(), "the step did not run between the retry's read of the failures and its end"
        monkeypatch.setattr(jobs.store, "results_by_chunk", real_page)
    finally:
        go.set()
        worker.join(WAIT)
    assert not worker.is_alive() and not failed, failed
    monkeypatch.undo()
    chunk = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert chunk is not None and chunk["done"]
    rows = pipeline.results(job["id"])
    ran_ok = {r["index"] for r in rows if r["result"] != "failed"}
    assert len(rows) == chunk["applied"] and chunk["failed"] > 0
    # The retry runs every item the cancelled job did not apply: its failures and those it never reached.
    assert retry["item_count"] == 200 - len(ran_ok)
    pipeline.drive(retry["id"])
    assert sorted(r["retry_of_index"] for r in pipeline.results(retry["id"])) == sorted(set(range(200)) - ran_ok)


def test_a_validation_step_in_flight_when_its_cancelled_job_is_retried_writes_no_failure(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ErrorMode Fail, cancelled during validation: the retry runs every item. A validation worker
    that read the job before the cancel and takes its step once the retry has run (and fixed the
    item) must not open a failure issue for the cancelled job's item: the retry seals the job first."""
    pipeline = with_vocabulary
    entries = [product(f"{i:014d}") for i in range(5)]
    entries[3] = product(f"{3:014d}", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])  # fails validation
    job = pipeline.create("BULK_IMPORT", envelope(entries, "Fail"))
    [message] = pipeline.dispatch_all()
    real_items = job_store.chunk_items
    done: list[dict[str, Any]] = []

    def retried_first(scope: Any, job_id: str, n: int) -> dict[str, Any] | None:
        if not done:
            jobs.cancel_job(pipeline.principal, job_id)
            retry = jobs.retry_job(pipeline.principal, job_id, {"corrections": {"3": product(f"{3:014d}")}})
            monkeypatch.setattr(jobs.store, "chunk_items", real_items)
            done.append(pipeline.drive(retry["id"]))
        return real_items(scope, job_id, n)

    monkeypatch.setattr(jobs.store, "chunk_items", retried_first)
    jobs.process_chunk(message)
    monkeypatch.undo()
    assert (done[0]["status"], done[0]["processed_items"]) == ("COMPLETED", 5) and len(pipeline.products()) == 5
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": job["id"]}, limit=100, cursor=None)
    assert [i["item_index"] for i in issues] == [], "the failure of an item the retry applied is open"


def test_an_item_a_cancelled_retry_never_reached_resolves_the_original_failure_when_retried_again(pipeline: Pipeline) -> None:
    """J's item 1 has no identifier, so only a retry can resolve its failure. J's retry R1 corrects
    it but is cancelled before it runs; R2 retries R1 and applies it. J's failure must not stay open."""
    payload = items(2, "CH")
    payload[1] = {"title": ""}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert failed["status"] == "FAILED"
    r1 = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"1": {"title": "Fixed", "sku": "CH-1"}}})
    jobs.cancel_job(pipeline.principal, r1["id"])  # while PENDING
    r2 = jobs.retry_job(pipeline.principal, r1["id"], None)
    done = pipeline.drive(r2["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 1) and len(pipeline.products()) == 2
    assert [r["retry_of_index"] for r in pipeline.results(r2["id"])] == [0]
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": failed["id"]}, limit=100, cursor=None)
    assert [i["item_index"] for i in issues] == [], "the original failure of an applied item is open"


def test_a_retry_at_the_end_of_two_cancelled_retries_resolves_the_first_jobs_failure(pipeline: Pipeline) -> None:
    """J ← R1 (cancelled) ← R2 (cancelled) ← R3: R3 applies J's item, which neither cancelled retry
    reached; J's failure resolves, and R3's results name the index in R2, the job it retries."""
    payload = items(3, "CC")
    payload[2] = {"title": ""}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert failed["status"] == "FAILED"
    r1 = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"2": {"title": "Fixed", "sku": "CC-2"}}})
    jobs.cancel_job(pipeline.principal, r1["id"])
    r2 = jobs.retry_job(pipeline.principal, r1["id"], None)
    jobs.cancel_job(pipeline.principal, r2["id"])
    r3 = jobs.retry_job(pipeline.principal, r2["id"], None)
    done = pipeline.drive(r3["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 1) and len(pipeline.products()) == 3
    assert [r["retry_of_index"] for r in pipeline.results(r3["id"])] == [0]
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": failed["id"]}, limit=100, cursor=None)
    assert issues == [], "the original failure of an applied item is open"
