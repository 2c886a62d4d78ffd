"""The bulk-job pipeline against the real emulators: lifecycle, counts, results, audit, redelivery, crashes."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.config import get_settings
from common.models.base import utcnow
from common.services import catalog, jobs
from common.store import jobs as job_store
from common.store.paths import chunk_id, coll, index_key, job_ref, read
from tests.integration.conftest import Killed, Pipeline, die_after_counting


def products(n: int, prefix: str = "P") -> list[dict[str, Any]]:
    return [
        {
            "title": f"{prefix} product {i}",
            "sku": f"{prefix}-{i}",
            "description": "A long enough description of this product.",
            "category": "Shirts",
            "brand": "HarbourLine",
        }
        for i in range(n)
    ]


def test_import_lifecycle_counts_results_and_audit(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", products(3))
    assert pipeline.job(job["id"])["status"] == "PENDING"
    chunks = pipeline.dispatch_all()
    started = pipeline.job(job["id"])
    assert started["status"] == "PROCESSING" and started["total_items"] == 3 and started["processed_items"] == 0
    for message in chunks:
        jobs.process_chunk(message)
    done = pipeline.job(job["id"])
    assert done["status"] == "COMPLETED" and done["processed_items"] == 3 and done["failed_items"] == 0
    assert done["updated_at"] >= started["updated_at"]
    results = pipeline.results(job["id"])
    assert [(r["index"], r["result"], r["identifier"]) for r in results] == [(i, "created", f"P-{i}") for i in range(3)]
    events = pipeline.audit_events()
    created = [e for e in events if e["action"] == "product.created"]
    assert len(created) == 3
    assert {e["entity_id"] for e in created} == {r["product_id"] for r in results}
    assert all(e["actor_email"] == "pipeline@example.com" and e["details"]["job_id"] == job["id"] for e in created)
    assert all(e["ip_address"] == "203.0.113.42" for e in created)
    assert {"bulk_job.created", "bulk_job.completed"} <= {e["action"] for e in events}


def test_seed_example_50_items_47_processed_is_failed(pipeline: Pipeline) -> None:
    payload = products(50)
    for bad in (7, 23, 41):
        payload[bad] = {"title": "", "sku": f"P-{bad}"} if bad != 41 else {"sku": "no-title", "colour": "red"}
    job = pipeline.run("BULK_IMPORT", payload)
    assert (job["status"], job["total_items"], job["processed_items"], job["failed_items"]) == ("FAILED", 50, 47, 3)
    failed = pipeline.results(job["id"], failed_only=True)
    assert [r["index"] for r in failed] == [7, 23, 41]
    assert {e["code"] for e in failed[2]["errors"]} == {"missing_field", "unknown_field"}
    assert any(e["field"] == "colour" for e in failed[2]["errors"])


def test_results_pages_follow_their_cursor_across_chunks(pipeline: Pipeline) -> None:
    # Seven chunks with one failure each: a failed-only page reads chunks a few at a time, so
    # small pages of failures take several reads, and pages of every item cross chunk boundaries.
    size = get_settings().chunk_size
    payload = products(7 * size)
    bad = [n * size + 7 for n in range(7)]
    for i in bad:
        payload[i] = {"sku": f"P-{i}"}
    job = pipeline.run("BULK_IMPORT", payload)
    assert (job["processed_items"], job["failed_items"]) == (7 * size - 7, 7)

    def paged(limit: int, failed_only: bool) -> list[int]:
        seen: list[int] = []
        start: int | None = 0
        while start is not None:
            items, start = jobs.results(pipeline.scope, job["id"], start=start, limit=limit, failed_only=failed_only)
            assert len(items) <= limit and (start is None or len(items) == limit)
            seen += [r["index"] for r in items]
        return seen

    assert paged(1, failed_only=True) == paged(2, failed_only=True) == paged(5, failed_only=True) == bad
    assert paged(size + 50, failed_only=False) == paged(3 * size, failed_only=False) == list(range(7 * size))


def test_update_by_id_and_sku_partial_and_clearing(pipeline: Pipeline) -> None:
    created = pipeline.run("BULK_IMPORT", products(2))
    ids = [r["product_id"] for r in pipeline.results(created["id"])]
    job = pipeline.run(
        "BULK_UPDATE",
        [
            {"id": ids[0], "title": "Renamed", "brand": None},
            {"sku": "P-1", "category": "Knitwear"},
            {"id": str(uuid.uuid4()), "title": "ghost"},
            {"sku": "missing-sku", "title": "ghost"},
        ],
    )
    assert (job["status"], job["processed_items"], job["failed_items"]) == ("FAILED", 2, 2)
    first = catalog.get_product(pipeline.scope, ids[0])
    assert first["title"] == "Renamed" and first["brand"] is None and first["category"] == "Shirts"
    second = catalog.get_product(pipeline.scope, ids[1])
    assert second["category"] == "Knitwear" and second["title"] == "P product 1"
    results = pipeline.results(job["id"])
    assert [r["result"] for r in results] == ["updated", "updated", "failed", "failed"]
    assert results[2]["errors"][0]["code"] == "product_not_found"
    updated = [e for e in pipeline.audit_events() if e["action"] == "product.updated"]
    assert len(updated) == 2
    assert updated[0]["details"]["changes"]


def test_delete_removes_products_and_their_open_issues(pipeline: Pipeline) -> None:
    created = pipeline.run("BULK_IMPORT", [{"title": "No description", "sku": "D-1"}, {"title": "Keep", "sku": "D-2"}])
    ids = [r["product_id"] for r in pipeline.results(created["id"])]
    issues, _ = catalog.list_issues(pipeline.scope, {"product_id": ids[0]}, limit=50, cursor=None)
    assert issues, "the undescribed product should have open issues"
    job = pipeline.run("BULK_DELETE", [ids[0], str(uuid.uuid4()), "../etc"])
    assert (job["status"], job["processed_items"], job["failed_items"]) == ("FAILED", 1, 2)
    assert [p["id"] for p in pipeline.products()] == [ids[1]]
    issues, _ = catalog.list_issues(pipeline.scope, {"product_id": ids[0]}, limit=50, cursor=None)
    assert issues == []
    # The SKU is free again: importing it creates a new product, not an update of the deleted one.
    again = pipeline.run("BULK_IMPORT", [{"title": "Reborn", "sku": "D-1"}])
    assert pipeline.results(again["id"])[0]["result"] == "created"
    assert any(e["action"] == "product.deleted" and e["entity_id"] == ids[0] for e in pipeline.audit_events())


def test_every_chunk_delivered_twice_out_of_order_applies_each_item_once(pipeline: Pipeline) -> None:
    n = 1000
    job = pipeline.create("BULK_IMPORT", products(n, "T"))
    chunks = pipeline.dispatch_all()
    assert len(chunks) == n // get_settings().chunk_size
    deliveries = chunks * 2 + random.sample(chunks, 2)
    random.shuffle(deliveries)
    threads = [threading.Thread(target=jobs.process_chunk, args=(m,)) for m in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A redelivered dispatch changes nothing either.
    jobs.dispatch(jobs.JobMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id))
    assert pipeline.pull("chunks") == []
    done = pipeline.job(job["id"])
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("COMPLETED", n, n, 0)
    results = pipeline.results(job["id"])
    assert [r["index"] for r in results] == list(range(n))
    assert len(pipeline.products()) == n
    events = pipeline.audit_events()
    assert sum(e["action"] == "product.created" for e in events) == n
    assert sum(e["action"] == "bulk_job.completed" for e in events) == 1


def test_message_for_a_missing_job_is_acknowledged(pipeline: Pipeline) -> None:
    ghost = str(uuid.uuid4())
    jobs.dispatch(jobs.JobMessage(job_id=ghost, org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id))
    jobs.process_chunk(jobs.ChunkMessage(job_id=ghost, org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=0))


CRASHING_WORKER = """
import os, signal, sys
from common.models.job import ChunkMessage
from common.services import jobs
from common.store import catalog
real = catalog.apply_chunk_step
def step_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the process dies right after its first commit
catalog.apply_chunk_step = step_then_die
jobs.process_chunk(ChunkMessage.model_validate_json(sys.argv[1]))
"""


def test_worker_killed_mid_chunk_finishes_once_after_the_reconciler(pipeline: Pipeline, stack) -> None:  # type: ignore[no-untyped-def]
    n = 200
    job = pipeline.create("BULK_IMPORT", products(n, "K"))
    [chunk] = pipeline.dispatch_all()
    settings = get_settings()
    env = stack.function_env() | {
        "SYNQ_CHUNKS_TOPIC": settings.chunks_topic,
        "SYNQ_JOBS_TOPIC": settings.jobs_topic,
        "SYNQ_STALE_AFTER_SECONDS": str(settings.stale_after_seconds),  # its lease lapses as fast as we reconcile
    }
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_WORKER, chunk.model_dump_json()], env=env, cwd=stack.function_env()["PYTHONPATH"], timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    assert pipeline.job(job["id"])["status"] == "PROCESSING"
    # It died after committing its first step and before counting it into the job.
    progress = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert progress is not None and not progress["done"] and 0 < progress["applied"] < n
    assert progress["counted_ok"] == 0
    # The reconciler republishes the chunk once it is stale; whoever delivers it finishes the job.
    deadline = time.monotonic() + 60
    while pipeline.job(job["id"])["status"] == "PROCESSING":
        assert time.monotonic() < deadline, "the reconciler never finished the job"
        jobs.reconcile()
        for message in pipeline.pull("chunks"):
            jobs.process_chunk(jobs.ChunkMessage.model_validate_json(message))
        time.sleep(0.5)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", n, 0)
    assert len(pipeline.products()) == n
    assert sum(e["action"] == "product.created" for e in pipeline.audit_events()) == n
    assert [r["index"] for r in pipeline.results(job["id"])] == list(range(n))


def test_reconciler_republishes_a_job_whose_message_was_lost(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", products(2, "L"))
    assert pipeline.pull("jobs")  # the message is lost: nobody dispatches it
    deadline = time.monotonic() + 30
    ours: list[jobs.JobMessage] = []
    while not ours:  # other tests' jobs left PENDING are republished too, and maybe first
        assert time.monotonic() < deadline
        jobs.reconcile()
        ours = [m for m in map(jobs.JobMessage.model_validate_json, pipeline.pull("jobs")) if m.job_id == job["id"]]
        time.sleep(0.5)
    for message in ours:
        jobs.dispatch(message)
    for data in pipeline.pull("chunks"):
        jobs.process_chunk(jobs.ChunkMessage.model_validate_json(data))
    assert pipeline.job(job["id"])["status"] == "COMPLETED"


def test_chunks_naming_one_product_run_one_after_the_other(pipeline: Pipeline) -> None:
    """A job's chunks run side by side, except when two of them name one product: then one at a
    time, so that product's items apply in payload order however the messages are delivered."""
    items = products(450, "ORD")
    items[420] = {**items[10], "title": "The later title"}
    job = pipeline.create("BULK_IMPORT", items)
    messages = pipeline.dispatch_all()
    assert [m.chunk for m in messages] == [0]
    assert job_store.get(pipeline.scope, job["id"], ["window"]) == {"window": 1}
    while messages:
        for message in reversed(messages):
            jobs.process_chunk(message)
        messages = [jobs.ChunkMessage.model_validate_json(d) for d in pipeline.pull("chunks")]
        assert len(messages) <= 1
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    [product] = [p for p in pipeline.products() if p["sku"] == "ORD-10"]
    assert product["title"] == "The later title"
    results = pipeline.results(job["id"])
    assert (results[10]["result"], results[420]["result"]) == ("created", "updated")
    assert results[420]["product_id"] == results[10]["product_id"] == product["id"]


def test_an_early_message_of_a_job_that_runs_in_order_is_acknowledged_untouched(pipeline: Pipeline) -> None:
    """A message for chunk 2 before chunk 1 finished (from a dispatch that died before it narrowed
    the window, which the reconciler republishes) does not run it: chunk 1's end releases it."""
    items = products(450, "EARLY")
    items[420] = {**items[10], "title": "The later title"}
    job = pipeline.create("BULK_IMPORT", items)
    [first] = pipeline.dispatch_all()
    for n in (2, 1):
        jobs.process_chunk(jobs.ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=n))
        assert job_store.chunk_progress(pipeline.scope, job["id"], n)["applied"] == 0  # type: ignore[index]
    jobs.process_chunk(first)
    done = pipeline.drive(job["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 450)
    [product] = [p for p in pipeline.products() if p["sku"] == "EARLY-10"]
    assert product["title"] == "The later title"


def test_an_update_naming_products_by_id_and_by_sku_runs_its_chunks_in_order(pipeline: Pipeline) -> None:
    """Whether an id and a SKU name one product, dispatch cannot tell without reading the catalog:
    such a job runs one chunk at a time, so the later item wins however the messages arrive."""
    pipeline.run("BULK_IMPORT", products(450, "WAY"))
    id_of = {p["sku"]: p["id"] for p in pipeline.products() if p["sku"].startswith("WAY-")}
    items: list[dict[str, Any]] = [{"id": id_of[f"WAY-{i}"], "title": f"Renamed {i}"} for i in range(450)]
    items[420] = {"sku": "WAY-10", "title": "Renamed by SKU, later"}
    job = pipeline.create("BULK_UPDATE", items)
    messages = pipeline.dispatch_all()
    assert job_store.get(pipeline.scope, job["id"], ["window"]) == {"window": 1}
    while messages:
        for message in reversed(messages):
            jobs.process_chunk(message)
        messages = [jobs.ChunkMessage.model_validate_json(d) for d in pipeline.pull("chunks")]
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    [product] = [p for p in pipeline.products() if p["sku"] == "WAY-10"]
    assert product["title"] == "Renamed by SKU, later"


def test_chunks_naming_different_products_run_side_by_side(pipeline: Pipeline) -> None:
    job = pipeline.create("BULK_IMPORT", products(450, "SIDE"))
    assert sorted(m.chunk for m in pipeline.dispatch_all()) == [0, 1, 2]
    assert job_store.get(pipeline.scope, job["id"], ["window"]) == {"window": get_settings().chunk_window}


def test_small_updates_to_big_products_commit_in_steps_the_store_takes(pipeline: Pipeline) -> None:
    """25 one-field updates of 200 KB products would be one 5 MB commit: more than the emulator takes
    in a request (4 MiB; Firestore 10 MiB). Such a step is refused before it is sent and its items
    go one per step, instead of the chunk failing every delivery."""
    big = {"blob": "y" * 200_000}
    pipeline.run("BULK_IMPORT", [{"title": f"Big {i}", "sku": f"BIG-STEP-{i}", "attributes": big} for i in range(25)])
    ids = [p["id"] for p in pipeline.products()]
    assert len(ids) == 25
    done = pipeline.run("BULK_UPDATE", [{"id": i, "title": "Renamed"} for i in ids])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 25, 0)
    assert {p["title"] for p in pipeline.products()} == {"Renamed"}


def test_a_payload_bigger_than_one_commit_dispatches_every_chunk(pipeline: Pipeline) -> None:
    # ~8 MB of items: their chunks take several commits (the emulator refuses a message over 4 MiB).
    items = products(4000, "BIG")
    for item in items:
        item["description"] = "d" * 2000
    job = pipeline.create("BULK_IMPORT", items)
    pipeline.dispatch_all()
    stored = pipeline.job(job["id"])
    assert stored["status"] == "PROCESSING"
    count = stored["total_items"]
    chunks = [job_store.chunk_items(pipeline.scope, job["id"], n) for n in range(-(-count // get_settings().chunk_size))]
    assert all(chunks)
    assert sum(c["count"] for c in chunks) == 4000 == count


def test_the_gtin_value_index_follows_products_across_jobs(pipeline: Pipeline) -> None:
    # Two jobs add their products to one GTIN's entry; it loses a holder when its product is deleted
    # or changes GTIN, and goes once nobody holds the GTIN.
    def holders() -> dict[str, bool] | None:
        snap = read(coll(pipeline.scope, "value_index").document(index_key("gtin\n4006381333931")))
        return snap.to_dict()["holders"] if snap.exists else None

    first = pipeline.run("BULK_IMPORT", [{"title": "One", "sku": "G-1", "gtin": "4006381333931"}])
    second = pipeline.run("BULK_IMPORT", [{"title": "Two", "sku": "G-2", "gtin": "4006381333931"}])
    [one] = [r["product_id"] for r in pipeline.results(first["id"])]
    [two] = [r["product_id"] for r in pipeline.results(second["id"])]
    assert holders() == {one: True, two: True}
    pipeline.run("BULK_DELETE", [one])
    assert holders() == {two: True}
    pipeline.run("BULK_UPDATE", [{"id": two, "gtin": "5012345678900"}])
    assert holders() is None


# A delivery that fails after claiming its chunk, and deliveries that find their chunk finished.


def lapse_lease(pipeline: Pipeline, job_id: str, n: int) -> None:
    """What time does to a worker's lease on chunk n: the claim is still its, but anyone may take it."""
    chunk = job_ref(pipeline.scope, job_id).collection("chunks").document(chunk_id(n))
    chunk.update({"lease_until": utcnow() - timedelta(seconds=1)})


@pytest.mark.parametrize("fault", ["step kept conflicting", "step unavailable", "items not readable yet"])
def test_a_delivery_that_fails_after_its_claim_releases_it_so_the_redelivery_runs_the_chunk(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """The worker raises for Pub/Sub to redeliver (about a second later). Had it kept its claim, the
    redelivery would find the chunk under a live lease, be acknowledged having done nothing, and the
    chunk would wait for the lease to lapse and the reconciler (120 s in production)."""
    n = 200
    job = pipeline.create("BULK_IMPORT", products(n, "REL"))
    [message] = pipeline.dispatch_all()
    real_step = jobs.catalog.apply_chunk_step
    steps: list[int] = []

    def failing_second_step(*args: Any, **kwargs: Any) -> dict[str, Any]:
        steps.append(1)
        if len(steps) == 2:  # one step committed: the redelivery resumes after it
            if fault == "step kept conflicting":
                raise errors.Transient("chunk step kept conflicting; retry later")  # apply_chunk_step's own
            raise gexc.ServiceUnavailable("the store went away")
        return real_step(*args, **kwargs)

    if fault == "items not readable yet":
        monkeypatch.setattr(jobs.store, "chunk_items", lambda *args: None)
    else:
        monkeypatch.setattr(jobs.catalog, "apply_chunk_step", failing_second_step)
    with pytest.raises((errors.Transient, gexc.ServiceUnavailable)):
        jobs.process_chunk(message)
    monkeypatch.undo()
    left = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert left is not None and not left["done"]
    assert left["applied"] == 0 if fault == "items not readable yet" else 0 < left["applied"] < n

    jobs.process_chunk(message)  # Pub/Sub's redelivery, at once: no lease to wait out
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", n, 0), "the redelivery did nothing"
    assert left["lease_owner"] is None and left["lease_until"] is None, "the failed delivery kept its claim"
    assert [r["index"] for r in pipeline.results(job["id"])] == list(range(n))
    assert len(pipeline.products()) == n
    assert sum(e["action"] == "product.created" for e in pipeline.audit_events()) == n


def test_a_failing_delivery_releases_only_its_own_claim(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Delivery A's lease lapsed mid-chunk and delivery B claimed the chunk; then A's step gives up.
    A must not release B's claim: B is working on the chunk, and a third delivery must still find
    it busy rather than run it beside B."""
    job = pipeline.create("BULK_IMPORT", products(200, "OWN"))
    [message] = pipeline.dispatch_all()
    real_step = jobs.catalog.apply_chunk_step
    steps: list[int] = []

    def overtaken_then_failing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        steps.append(1)
        if len(steps) == 2:
            lapse_lease(pipeline, job["id"], 0)
            assert job_store.claim_chunk(pipeline.scope, job["id"], 0, "delivery B", 60) == "run"
            raise errors.Transient("chunk step kept conflicting; retry later")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(jobs.catalog, "apply_chunk_step", overtaken_then_failing)
    with pytest.raises(errors.Transient):
        jobs.process_chunk(message)
    monkeypatch.undo()
    progress = job_store.chunk_progress(pipeline.scope, job["id"], 0)
    assert progress is not None and progress["lease_owner"] == "delivery B" and progress["lease_until"] > utcnow()
    jobs.process_chunk(message)  # finds B's live claim: acknowledged, nothing applied
    assert job_store.chunk_progress(pipeline.scope, job["id"], 0)["applied"] == progress["applied"]  # type: ignore[index]

    assert not job_store.release_chunk(pipeline.scope, job["id"], 0, "delivery A")
    assert job_store.chunk_progress(pipeline.scope, job["id"], 0)["lease_owner"] == "delivery B"  # type: ignore[index]
    assert job_store.release_chunk(pipeline.scope, job["id"], 0, "delivery B")
    assert not job_store.release_chunk(pipeline.scope, job["id"], 0, "delivery B")  # released once
    jobs.process_chunk(message)
    assert pipeline.job(job["id"])["status"] == "COMPLETED"


def serial_job(pipeline: Pipeline, prefix: str) -> tuple[dict[str, Any], jobs.ChunkMessage]:
    """A two-chunk job whose chunks run one after the other (window 1), dispatched: the job, and
    chunk 0's message; chunk 1 waits for chunk 0's end to release it."""
    items = products(250, prefix)
    items[220] = {**items[10], "title": "The later title"}  # chunks 0 and 1 name one product: window 1
    job = pipeline.create("BULK_IMPORT", items)
    [message] = pipeline.dispatch_all()
    assert job_store.get(pipeline.scope, job["id"], ["window"]) == {"window": 1}
    return job, message


def released(pipeline: Pipeline, job_id: str) -> list[int]:
    """The chunk messages published for the job since the last pull (other tests' leftovers aside)."""
    return [m.chunk for m in map(jobs.ChunkMessage.model_validate_json, pipeline.pull("chunks")) if m.job_id == job_id]


@pytest.mark.parametrize("found_at", ["claim", "step"])
def test_a_delivery_that_finds_its_chunk_finished_by_another_never_publishes_the_next_twice(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, found_at: str
) -> None:
    """Two deliveries of chunk 0 of a job that runs one chunk at a time. The second read the chunk
    unfinished; the first then ran it to its end and released chunk 1. The second finds the chunk
    finished at its claim (or, having taken over a lapsed lease, at its next step) and releases
    chunk 1 too, which the store has marked published already: publishing it again would be a
    duplicate, one more message in the window (docs/api.md)."""
    job, message = serial_job(pipeline, "TWICE")
    real_claim, real_step = job_store.claim_chunk, jobs.catalog.apply_chunk_step

    def first_delivery_runs_meanwhile() -> None:
        monkeypatch.undo()
        if found_at == "step":
            lapse_lease(pipeline, job["id"], 0)  # the second delivery's lease lapses before its step
        jobs.process_chunk(message)
        assert job_store.chunk_finished(pipeline.scope, job["id"], 0, "commit")

    def claim(*args: Any) -> str:
        first_delivery_runs_meanwhile()
        return real_claim(*args)

    def step(*args: Any, **kwargs: Any) -> dict[str, Any]:
        first_delivery_runs_meanwhile()
        return real_step(*args, **kwargs)

    if found_at == "claim":
        monkeypatch.setattr(jobs.store, "claim_chunk", claim)
    else:
        monkeypatch.setattr(jobs.catalog, "apply_chunk_step", step)
    jobs.process_chunk(message)
    assert released(pipeline, job["id"]) == [1], "chunk 1 was released twice"

    jobs.process_chunk(message)  # a late redelivery, once chunk 0 is finished: nothing either
    assert released(pipeline, job["id"]) == []
    jobs.process_chunk(jobs.ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=1))
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 250, 0)


@pytest.mark.parametrize("died", ["after its step", "after counting", "at the mark, the store unavailable"])
def test_the_redelivery_of_a_chunk_whose_finisher_died_before_releasing_the_next_releases_it(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, died: str
) -> None:
    """The worker that finished chunk 0 died before it released chunk 1 (right after the step that
    finished the chunk, or once it had counted it), or raised for a redelivery when it could not
    mark chunk 1 published. Pub/Sub redelivers chunk 0's message, and the redelivery, finding the
    chunk finished, releases chunk 1 at once: before, it released nothing, and chunk 1 waited for
    the reconciler's stale period (120 s in the cloud). Later redeliveries publish it no more."""
    job, message = serial_job(pipeline, "LOST")

    def store_unavailable(*args: Any) -> bool:
        raise gexc.ServiceUnavailable("the store went away")

    def step_then_die(*args: Any, **kwargs: Any) -> dict[str, Any]:
        progress = real_step(*args, **kwargs)
        if progress["done"]:
            raise Killed
        return progress

    real_step = jobs.catalog.apply_chunk_step
    if died == "after its step":
        monkeypatch.setattr(jobs.catalog, "apply_chunk_step", step_then_die)
    elif died == "after counting":
        die_after_counting(monkeypatch)
    else:
        monkeypatch.setattr(jobs.store, "release_after", store_unavailable)
    with pytest.raises((Killed, gexc.ServiceUnavailable)):
        jobs.process_chunk(message)
    monkeypatch.undo()
    assert job_store.chunk_finished(pipeline.scope, job["id"], 0, "commit")
    assert released(pipeline, job["id"]) == []
    jobs.process_chunk(message)  # Pub/Sub's redelivery of the dead worker's message
    assert released(pipeline, job["id"]) == [1]
    jobs.process_chunk(message)  # and once more
    assert released(pipeline, job["id"]) == []
    jobs.process_chunk(jobs.ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=1))
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 250, 0)


@pytest.mark.parametrize("lost", ["the queue refused it", "the worker died"])
def test_a_release_whose_message_was_lost_is_republished_by_the_reconciler(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, lost: str) -> None:
    """Chunk 0's worker marked chunk 1 published, and its message never reached Pub/Sub. Chunk 0's
    redelivery publishes nothing (the mark is made: it cannot tell a message lost from one sent), and
    chunk 1, published and not done, goes stale: the reconciler republishes it, once."""
    job, message = serial_job(pipeline, "UNSENT")

    def publish_lost(messages: Any) -> int:
        raise errors.Transient("Publishing failed.") if lost == "the queue refused it" else Killed

    monkeypatch.setattr(jobs, "publish_chunk_messages", publish_lost)
    if lost == "the queue refused it":
        jobs.process_chunk(message)  # logged, and acknowledged: the reconciler has it
    else:
        with pytest.raises(Killed):
            jobs.process_chunk(message)
        monkeypatch.undo()
        jobs.process_chunk(message)  # Pub/Sub's redelivery of the dead worker's message
    monkeypatch.undo()
    assert job_store.chunk_progress(pipeline.scope, job["id"], 1)["published"]  # type: ignore[index]
    jobs.process_chunk(message)
    assert released(pipeline, job["id"]) == []
    deadline = time.monotonic() + 30
    ours: list[int] = []
    while not ours:  # once chunk 1 is stale (3 s here)
        assert time.monotonic() < deadline, "the reconciler never republished chunk 1"
        time.sleep(0.5)
        jobs.reconcile()
        ours = released(pipeline, job["id"])
    assert ours == [1]
    jobs.process_chunk(jobs.ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=1))
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 250, 0)


def test_a_finished_chunk_of_a_cancelled_job_releases_nothing(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk 0's worker died before releasing chunk 1, and the job was cancelled: the redelivery of
    chunk 0 finds the job ended and releases nothing, nor does the reconciler (it settles only jobs
    still processing)."""
    job, message = serial_job(pipeline, "CANCELLED")
    die_after_counting(monkeypatch)
    with pytest.raises(Killed):
        jobs.process_chunk(message)
    monkeypatch.undo()
    jobs.cancel_job(pipeline.principal, job["id"])
    jobs.process_chunk(message)
    jobs.reconcile()
    assert released(pipeline, job["id"]) == []
    assert not job_store.chunk_progress(pipeline.scope, job["id"], 1)["published"]  # type: ignore[index]
    assert pipeline.job(job["id"])["status"] == "CANCELLED"


def test_a_chunk_is_marked_published_once_per_round(pipeline: Pipeline) -> None:
    """`store.release_after` and `store.mark_published`: of every caller asking, one marks a chunk
    published (and is the one to publish it), in a round (ErrorMode Fail's validation, then its
    commit) that only moves forward; a sealed chunk is never marked, and a chunk is released only
    after one that is finished."""
    items = products(4 * get_settings().chunk_size, "MARK")
    items[-1] = {**items[0], "title": "The later title"}  # chunks 0 and 3 name one product: window 1
    job = pipeline.create("BULK_IMPORT", items)
    pipeline.dispatch_all()
    scope, job_id = pipeline.scope, job["id"]
    chunks = job_ref(scope, job_id).collection("chunks")

    def release_concurrently(n: int, successor: int) -> list[bool]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda _: job_store.release_after(scope, job_id, n, successor), range(4)))

    assert job_store.unpublished_chunks(scope, job_id, 10) == [1, 2, 3]
    assert not job_store.release_after(scope, job_id, 0, 1)  # chunk 0 is not finished
    chunks.document(chunk_id(0)).update({"done": True, "phase": "validate"})  # as a validation round leaves it
    assert sorted(release_concurrently(0, 1)) == [False, False, False, True]
    assert not job_store.mark_published(scope, job_id, 1, "validate")
    assert job_store.unpublished_chunks(scope, job_id, 10) == [2, 3]
    chunks.document(chunk_id(0)).update({"phase": "commit"})  # chunk 0 committed: chunk 1 enters the commit round's window
    assert sorted(release_concurrently(0, 1)) == [False, False, False, True]
    assert not job_store.mark_published(scope, job_id, 1, "validate")  # never back to an earlier round
    assert not job_store.mark_published(scope, job_id, 1, "commit")
    chunks.document(chunk_id(0)).update({"done": False})
    assert not job_store.release_after(scope, job_id, 0, 2)  # chunk 0 is no longer finished

    assert [job_store.mark_published(scope, job_id, 2, "commit") for _ in range(2)] == [True, False]  # the reconciler's restart
    chunks.document(chunk_id(3)).update({"done": True, "skipped": True})  # sealed (a cancelled job's retry)
    assert not job_store.mark_published(scope, job_id, 3, "commit")
    assert not job_store.release_after(scope, job_id, 3, 2)
    progress = {n: job_store.chunk_progress(scope, job_id, n) or {} for n in range(4)}
    assert [(progress[n]["published"], progress[n].get("published_in")) for n in range(4)] == [
        (True, "commit"),  # created published, in the round the job started in
        (True, "commit"),
        (True, "commit"),
        (False, None),
    ]
