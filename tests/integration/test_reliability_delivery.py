"""Issue 9, duplicate delivery at scale: at-least-once Pub/Sub, played out by the test.

The `pipeline` fixture gives this test its own topics with pull subscriptions, so it decides how each
message arrives: a 5,000-item job whose every chunk message is delivered twice and some three times,
shuffled, from several threads, with some workers dying right after a committed step; whatever a
worker does not acknowledge (a crash, or an error under lock contention) is delivered again, as
Pub/Sub does. Then late duplicates and a redelivered dispatch after the job has ended.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.config import get_settings
from common.models.job import ChunkMessage, JobMessage
from common.services import catalog, jobs
from common.store import catalog as catalog_store
from common.store import jobs as job_store
from tests.helpers import all_pages
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.slow

N = 5000
BAD = {250 + 500 * k for k in range(10)}  # items whose title is empty: refused, recorded, counted once
DESCRIPTION = "A long enough description of this product for shoppers."
JOB_EVENTS = {"bulk_job.created", "bulk_job.completed", "bulk_job.failed"}


class SimulatedCrash(Exception):
    """The worker process dying right after a chunk step committed, before anything else ran."""


def _state(pipeline: Pipeline, job_id: str) -> dict[str, Any]:
    """Everything a duplicate could change: the job, its results, the products, issues and audit trail."""
    scope = pipeline.scope
    return {
        "job": pipeline.job(job_id),
        "results": pipeline.results(job_id),
        "products": all_pages(lambda c: catalog.list_products(scope, sku=None, limit=200, cursor=c)),
        "issues": all_pages(lambda c: catalog.list_issues(scope, {}, limit=200, cursor=c)),
        "audit": all_pages(lambda c: catalog.list_audit(scope, limit=200, cursor=c)),
    }


def test_5000_items_delivered_twice_and_thrice_out_of_order_with_crashes_apply_each_item_once(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    payload = [
        {"title": "" if i in BAD else f"Item {i}", "sku": f"D-{i:05d}", "description": DESCRIPTION, "category": "Shirts", "brand": "HarbourLine"}
        for i in range(N)
    ]
    job = pipeline.create("BULK_IMPORT", payload)
    [dispatch_message] = pipeline.pull("jobs")
    jobs.dispatch(JobMessage.model_validate_json(dispatch_message))
    released = [ChunkMessage.model_validate_json(d) for d in pipeline.pull("chunks")]
    n_chunks = -(-N // get_settings().chunk_size)
    # Dispatch publishes a window of chunks; the rest are released as chunks finish. Every chunk's
    # message is delivered here anyway (a redelivery or the reconciler can bring any of them).
    assert sorted(c.chunk for c in released) == list(range(min(n_chunks, get_settings().chunk_window)))
    chunks = [ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=n) for n in range(n_chunks)]

    # A worker that dies right after its first committed step, on the deliveries flagged for it.
    real_step = catalog_store.apply_chunk_step
    flags = threading.local()

    def step_then_maybe_die(*args: Any, **kwargs: Any) -> dict[str, Any]:
        progress = real_step(*args, **kwargs)
        if getattr(flags, "die", False):
            flags.die = False
            raise SimulatedCrash
        return progress

    monkeypatch.setattr(catalog_store, "apply_chunk_step", step_then_maybe_die)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def deliver(message: ChunkMessage, die: bool = False) -> bool:
        """One push to a worker: True when the message is acknowledged. A worker that raises is a
        non-2xx answer, so Pub/Sub will deliver the message again."""
        flags.die = die
        try:
            jobs.process_chunk(message)
            outcome = "acknowledged"
        except SimulatedCrash:
            outcome = "crashed"
        except Exception as exc:  # contention a retry gets past, nothing else
            assert isinstance(exc, errors.Transient | gexc.Aborted) or "transaction" in str(exc).lower(), repr(exc)
            outcome = f"nacked ({type(exc).__name__}: {str(exc)[:50]})"
        finally:
            flags.die = False
        with lock:
            outcomes[outcome] += 1
        return outcome == "acknowledged"

    def push(messages: list[ChunkMessage], threads: int, die: bool = False) -> list[ChunkMessage]:
        """Deliver concurrently; returns the messages not acknowledged (to be delivered again)."""
        with ThreadPoolExecutor(threads) as pool:
            acked = list(pool.map(lambda m: deliver(m, die), messages))
        return [m for m, ok in zip(messages, acked, strict=True) if not ok]

    rng = random.Random(9)
    # 1. Four chunks' first deliveries die mid-chunk: a step is committed, nothing counted, not acked.
    doomed = rng.sample(chunks, 4)
    assert len(push(doomed, 4, die=True)) == 4 and outcomes["crashed"] == 4
    died_at = time.monotonic()
    for message in doomed:
        progress = job_store.chunk_progress(pipeline.scope, job["id"], message.chunk)
        assert progress is not None and 0 < progress["applied"] < progress["count"] and progress["counted_ok"] == 0
    # 2. Every chunk twice, eight a third time, shuffled, from six threads at once.
    deliveries = chunks * 2 + rng.sample(chunks, 8)
    rng.shuffle(deliveries)
    unacked = push(deliveries, 6)
    # 3. Pub/Sub redelivers what was not acknowledged: the four dead workers' messages (twice each,
    # once their leases have lapsed) and anything refused under contention, until all is acked.
    time.sleep(max(0.0, get_settings().stale_after_seconds + 0.5 - (time.monotonic() - died_at)))
    pending, rounds = doomed * 2 + unacked, 0
    while pending:
        rounds += 1
        assert rounds <= 10, outcomes
        pending = push(pending, 8)
        time.sleep(0.5 if pending else 0)

    done = pipeline.job(job["id"])
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("FAILED", N, N - len(BAD), len(BAD))
    for n in range(n_chunks):
        progress = job_store.chunk_progress(pipeline.scope, job["id"], n)
        assert progress is not None and progress["done"] and progress["counted_done"]
        assert (progress["counted_ok"], progress["counted_failed"]) == (progress["ok"], progress["failed"])
        assert len(progress["results"]) == progress["count"]

    # Per-item results: complete, in payload order, one per item.
    results = pipeline.results(job["id"])
    assert [r["index"] for r in results] == list(range(N))
    assert [r["identifier"] for r in results] == [f"D-{i:05d}" for i in range(N)]
    assert [r["result"] for r in results] == ["failed" if i in BAD else "created" for i in range(N)]
    assert [r["index"] for r in pipeline.results(job["id"], failed_only=True)] == sorted(BAD)
    created_ids = [r["product_id"] for r in results if r["result"] == "created"]
    assert len(set(created_ids)) == N - len(BAD)

    state = _state(pipeline, job["id"])
    assert sorted(p["id"] for p in state["products"]) == sorted(created_ids)
    audit = state["audit"]
    created_events = [e for e in audit if e["action"] == "product.created"]
    assert Counter(e["entity_id"] for e in created_events) == Counter(created_ids)  # exactly one each
    assert sorted(e["details"]["item_index"] for e in created_events) == sorted(set(range(N)) - BAD)
    counted = Counter(e["action"] for e in audit if e["action"].startswith("product.") or e["action"] in JOB_EVENTS)
    assert counted == Counter({"product.created": N - len(BAD), "bulk_job.created": 1, "bulk_job.failed": 1}), counted
    issues = state["issues"]
    assert sorted(i["item_index"] for i in issues) == sorted(BAD) and {i["issue_type"] for i in issues} == {"IMPORT_REJECTED"}

    # 4. After the end: every chunk message again, and the dispatch message twice. Nothing changes,
    # and no new chunk message is published.
    pipeline.pull("chunks")  # the releases made while the job ran
    assert push(chunks, 6) == []
    for _ in range(2):
        jobs.dispatch(JobMessage.model_validate_json(dispatch_message))
    assert pipeline.pull("chunks") == []
    assert _state(pipeline, job["id"]) == state

    total = sum(outcomes.values())
    nacked = {k: v for k, v in outcomes.items() if k.startswith("nacked")}
    assert outcomes["crashed"] == len(doomed) and outcomes["acknowledged"] == total - len(doomed) - sum(nacked.values())
    print(
        f"{N} items in {n_chunks} chunks: {total} chunk deliveries ({len(doomed)} crashes, {len(deliveries) - n_chunks} "
        f"duplicates before the end, {len(chunks)} after, refused under contention and redelivered: {nacked or 0}) "
        f"+ 2 late dispatches; 0 double applications; {time.monotonic() - started:.1f}s"
    )
