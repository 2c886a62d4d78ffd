"""Firestore adapter for bulk jobs and their chunks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from common.clients import firestore_client
from common.models.base import utcnow
from common.models.job import JobStatus
from common.store import pages
from common.store.paths import Scope, chunk_id, coll, data, existing, job_ref, read, rows

# Builds the notification record of a job's end from the job as it ended (None: no one asked for it).
Notice = Callable[[dict[str, Any]], dict[str, Any] | None]


def _record_notice(tx: firestore.Transaction, scope: Scope, notice: Notice | None, job: dict[str, Any]) -> None:
    """In the transaction that ends the job: its end is never recorded without its notification."""
    delivery = notice(job) if notice is not None else None
    if delivery is not None:
        tx.create(coll(scope, "notification_deliveries").document(delivery["id"]), delivery)


def _snapshot(scope: Scope, job_id: str, name: str) -> firestore.DocumentReference:
    """A document of the job's own copy of what it runs under (`bulk_jobs/{id}/snapshots/{name}`):
    beside the job, not in it, so neither a worker's read of the job nor the job list carries it."""
    return job_ref(scope, job_id).collection("snapshots").document(name)


def create(scope: Scope, job: dict[str, Any], audit: dict[str, Any], retry_of: str | None = None, vocabulary: dict[str, Any] | None = None) -> None:
    """Store a new job and its audit event in one commit, with the snapshot of its `vocabulary` (a
    ProductImportData job's) and the link from the job it retries (`retried_by`) in the same commit.
    Raises AlreadyExists when the job id is taken (a retry already stored)."""
    batch = firestore_client().batch()
    batch.create(job_ref(scope, job["id"]), job)
    if vocabulary is not None:
        batch.create(_snapshot(scope, job["id"], "vocabulary"), vocabulary)
    batch.create(coll(scope, "audit_events").document(audit["id"]), audit)
    if retry_of is not None:
        batch.update(job_ref(scope, retry_of), {"retried_by": job["id"]})
    batch.commit()


def vocabulary_snapshot(scope: Scope, job_id: str) -> dict[str, Any] | None:
    """The vocabulary a ProductImportData job runs under, as `create` stored it with the job."""
    return existing(read(_snapshot(scope, job_id, "vocabulary")))


def cancel(scope: Scope, job_id: str, audit: dict[str, Any], notice: Notice | None = None) -> dict[str, Any] | None:
    """PENDING or PROCESSING → CANCELLED; returns the job as cancelled, or None if it had ended."""
    db = firestore_client()
    ref = job_ref(scope, job_id)

    @firestore.transactional
    def stop(tx: firestore.Transaction) -> dict[str, Any] | None:
        job = data(read(ref, transaction=tx))
        if job["status"] not in (JobStatus.PENDING, JobStatus.PROCESSING):
            return None
        now = utcnow()
        changes = {"status": JobStatus.CANCELLED.value, "completed_at": now, "updated_at": now, "touched_at": now}
        if job.get("phase") == "validate":
            # ErrorMode Fail stopped before its commit pass: nothing was committed, whatever the
            # validation results say (phases only move forward, and this transaction holds the job).
            changes["committed"] = False
        tx.update(ref, changes)
        tx.set(coll(scope, "audit_events").document(audit["id"]), {**audit, "created_at": now})
        _record_notice(tx, scope, notice, {**job, **changes})
        return {**job, **changes}

    return stop(db.transaction())  # type: ignore[no-any-return]


def fail_pending(scope: Scope, job_id: str, error: str, audit: dict[str, Any], notice: Notice | None = None) -> bool:
    """PENDING → FAILED for a job that can never run (its payload is gone: `error` says so), every
    item counted as failed, with its audit event; False if the job had already left PENDING."""
    db = firestore_client()
    ref = job_ref(scope, job_id)

    @firestore.transactional
    def end(tx: firestore.Transaction) -> bool:
        job = data(read(ref, transaction=tx))
        if job.get("status") != JobStatus.PENDING:
            return False
        now = utcnow()
        items = job.get("item_count", 0)
        changes = {
            "status": JobStatus.FAILED.value,
            "total_items": items,
            "processed_items": 0,
            "failed_items": items,
            "error": error,
            "completed_at": now,
            "updated_at": now,
            "touched_at": now,
        }
        tx.update(ref, changes)
        tx.set(coll(scope, "audit_events").document(audit["id"]), {**audit, "created_at": now})
        _record_notice(tx, scope, notice, {**job, **changes})
        return True

    return end(db.transaction())  # type: ignore[no-any-return]


def seal(scope: Scope, job_id: str, chunk_count: int) -> list[tuple[int, int, int, int]]:
    """Mark every chunk of a cancelled job that could still run skipped (done), so that no step of
    the job can commit any more: a step's transaction reads its chunk's progress, so a step in flight
    either committed before this or finds its chunk done. That is every chunk not done yet, and every
    chunk still in ErrorMode Fail's validation phase: done there, it would be reset for the commit
    round (`reset_chunk` leaves a skipped chunk alone). Counts what a published chunk's worker
    applied and did not count before it died.

    Returns each chunk's number, first index, item count and how many of its items were committed,
    so the items the job never applied are known for good (a retry runs them, read from the chunk):
    a chunk's `applied` in the commit phase, none in the validation phase (it committed nothing). A
    job never started (no `chunk_count`) ran none."""
    db = firestore_client()
    chunks = job_ref(scope, job_id).collection("chunks")
    not_done = chunks.where(filter=firestore.FieldFilter("done", "==", False)).select(["n", "published"])
    validating = chunks.where(filter=firestore.FieldFilter("phase", "==", "validate")).select(["n", "published"])
    open_chunks = {int(fields["n"]): fields for query in (not_done, validating) for _, fields in rows(query)}
    now = utcnow()
    listed = sorted(open_chunks)
    for start in range(0, len(listed), 400):
        batch = db.batch()
        for n in listed[start : start + 400]:
            batch.update(chunks.document(chunk_id(n)), {"done": True, "skipped": True, "updated_at": now})
        batch.commit()
    for n in listed:
        if open_chunks[n].get("published"):
            count_progress(scope, job_id, n)
    refs = [chunks.document(chunk_id(n)) for n in range(chunk_count)]
    # Read by id, each whole stream (see paths.read): `applied` is not indexed, so no query projects it.
    snaps = [
        snap
        for start in range(0, len(refs), 500)
        for snap in list(db.get_all(refs[start : start + 500], field_paths=["n", "first_index", "count", "applied", "phase"]))
    ]
    return [(int(snap.get("n")), int(snap.get("first_index")), int(snap.get("count")), _committed(data(snap))) for snap in snaps if snap.exists]


def _committed(progress: dict[str, Any]) -> int:
    """How many of a chunk's items were committed: a validation pass commits none."""
    return int(progress["applied"]) if progress.get("phase", "commit") == "commit" else 0


def skip_chunk(scope: Scope, job_id: str, n: int) -> None:
    """Mark a chunk of an ended (cancelled) job done, so the reconciler stops republishing it."""
    job_ref(scope, job_id).collection("chunks").document(chunk_id(n)).update({"done": True, "skipped": True, "updated_at": utcnow()})


def get(scope: Scope, job_id: str, fields: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The job document, or only `fields` of it (those it has)."""
    snap = read(job_ref(scope, job_id), fields)
    return existing(snap)


def status(scope: Scope, job_id: str) -> str | None:
    """Only the job's status (a worker's check between steps reads no payload or counters)."""
    job = get(scope, job_id, ["status"])
    return job.get("status") if job else None


def list_page(
    scope: Scope, job_type: str, *, status: str | None = None, limit: int, cursor: str | None, fields: Sequence[str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the jobs of one type (and in one status, if given), newest first."""
    jobs = coll(scope, "bulk_jobs")
    query = jobs.where(filter=firestore.FieldFilter("job_type", "==", job_type))
    if status is not None:
        query = query.where(filter=firestore.FieldFilter("status", "==", status))
    query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
    return pages.page(query, jobs, limit=limit, cursor=cursor, fields=fields)


# What one commit of chunk documents may carry: Firestore takes 10 MiB per request, but the emulator's
# gRPC server refuses any message over 4 MiB, and a job must dispatch the same on both.
COMMIT_BYTES = 3_000_000


# (number, first item index, items as a JSON array, item count[, named_before[, origins[, ancestors]]]): see create_chunks.
ChunkRow = (
    tuple[int, int, str, int]
    | tuple[int, int, str, int, list[int]]
    | tuple[int, int, str, int, list[int], list[int]]
    | tuple[int, int, str, int, list[int], list[int], list[dict[str, Any]]]
)


def create_chunks(
    scope: Scope,
    job_id: str,
    chunks: Iterable[ChunkRow],
    phase: str = "commit",
    window: int | None = None,
) -> int:
    """Store each chunk's items and an empty progress record, unless a previous attempt already did.

    `chunks`: (number, first item index, items as a JSON array, item count[, the chunk's items that
    name a product an earlier chunk names, by position in the chunk[, and for a retry job the index
    each item had in the job it retries, which its results show (`chunk_results`)[, and the same
    for each job further up a chain of cancelled retries]]]). Create-only, so a
    duplicate dispatch can never reset a chunk a worker has already advanced. The first `window`
    chunks (all when None) are created published, in `phase`'s round (`mark_published`): the
    dispatcher publishes them next, and should it die first, the reconciler finds them published and
    stale. Consumes `chunks` as it goes (a few megabytes of them at a time); returns how many there
    were.
    """
    db = firestore_client()
    job = job_ref(scope, job_id)
    now = utcnow()

    def docs(
        n: int,
        first: int,
        items_json: str,
        count: int,
        named_before: list[int] | None = None,
        origins: list[int] | None = None,
        ancestors: list[dict[str, Any]] | None = None,
    ) -> list[tuple[firestore.DocumentReference, dict[str, Any]]]:
        items = {"n": n, "first_index": first, "count": count, "items_json": items_json, "named_before": named_before or []}
        # A retry's origins twice: the worker reads them with the items, the results with the progress.
        retried = {} if origins is None else {"origins": origins}
        # Further up a chain of cancelled retries, for the worker only (see services.jobs.retried_lineage).
        lineage = {"ancestors": ancestors} if ancestors else {}
        published = window is None or n < window
        return [
            (job.collection("chunk_items").document(chunk_id(n)), {**items, **retried, **lineage}),
            (
                job.collection("chunks").document(chunk_id(n)),
                {
                    **retried,
                    "n": n,
                    "first_index": first,
                    "count": count,
                    "applied": 0,
                    "results": [],
                    "ok": 0,
                    "failed": 0,
                    "has_failures": False,
                    "done": False,
                    "phase": phase,
                    "published": published,
                    "published_in": phase if published else None,
                    "counted_ok": 0,
                    "counted_failed": 0,
                    "counted_done": False,
                    "job_id": job_id,
                    "org_id": scope.org_id,
                    "tenant_id": scope.tenant_id,
                    "updated_at": now,
                },
            ),
        ]

    group: list[tuple[firestore.DocumentReference, dict[str, Any]]] = []
    size = count = 0
    for chunk in chunks:
        count += 1
        pair = docs(*chunk)
        ancestors: list[dict[str, Any]] = chunk[6] if len(chunk) == 7 else []
        indexes = sum(len(part) for part in chunk[4:6]) + sum(len(a["origins"]) for a in ancestors)  # named_before, origins, the lineage
        pair_size = len(chunk[2].encode("utf-8")) + 1024 + 20 * indexes
        if group and (len(group) + 2 > 400 or size + pair_size > COMMIT_BYTES):
            _create_all(db, group)
            group, size = [], 0
        group.extend(pair)
        size += pair_size
    if group:
        _create_all(db, group)
    return count


def _create_all(db: firestore.Client, docs: list[tuple[firestore.DocumentReference, dict[str, Any]]]) -> None:
    batch = db.batch()
    for ref, fields in docs:
        batch.create(ref, fields)
    try:
        batch.commit()
    except gexc.AlreadyExists:
        for ref, fields in docs:
            with contextlib.suppress(gexc.AlreadyExists):
                ref.create(fields)


def unpublish(scope: Scope, job_id: str, chunks: Iterable[int]) -> None:
    """Take chunks back out of the window they were created in (a job that must run in order)."""
    db = firestore_client()
    batch = db.batch()
    for n in chunks:
        batch.update(job_ref(scope, job_id).collection("chunks").document(chunk_id(n)), {"published": False, "published_in": None})
    batch.commit()


def start_processing(scope: Scope, job_id: str, *, total_items: int, chunk_count: int, phase: str = "commit", window: int | None = None) -> bool:
    """PENDING → PROCESSING, once: False when the job was not PENDING (a redelivered message)."""
    db = firestore_client()
    ref = job_ref(scope, job_id)

    @firestore.transactional
    def move(tx: firestore.Transaction) -> bool:
        snap = read(ref, transaction=tx)
        if not snap.exists or snap.get("status") != JobStatus.PENDING:
            return False
        now = utcnow()
        tx.update(
            ref,
            {
                "status": JobStatus.PROCESSING.value,
                "total_items": total_items,
                "processed_items": 0,
                "failed_items": 0,
                "chunk_count": chunk_count,
                "chunks_done": 0,
                "started_at": now,
                "updated_at": now,
                "touched_at": now,
                "phase": phase,
                **({"window": window} if window is not None else {}),
            },
        )
        return True

    return bool(move(db.transaction()))


def claim_chunk(scope: Scope, job_id: str, n: int, owner: str, lease_seconds: float) -> str:
    """Take the chunk for `owner` for a while: "run", "done", or "busy" (another live worker has it).

    The lease makes a duplicate delivery go instead of running the chunk beside the first worker: at
    once between the first worker's steps, and after waiting on its lock (5 attempts) during one.
    Exactly-once comes from the step transaction, so an expired lease taken over early is still safe.
    """
    db = firestore_client()
    ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))

    @firestore.transactional
    def claim(tx: firestore.Transaction) -> str:
        snap = read(ref, transaction=tx)
        if not snap.exists or snap.get("done"):
            return "done"
        progress = data(snap)
        now = utcnow()
        lease_until = progress.get("lease_until")
        if progress.get("lease_owner") not in (None, owner) and lease_until is not None and lease_until > now:
            return "busy"
        tx.update(ref, {"lease_owner": owner, "lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now})
        return "run"

    try:
        return str(claim(db.transaction()))
    except (ValueError, gexc.Aborted):
        # Another delivery kept the chunk's lock: it is being worked on; this one can go.
        return "busy"


def release_chunk(scope: Scope, job_id: str, n: int, owner: str) -> bool:
    """Clear the chunk's lease while `owner` still holds it: a worker that raises for Pub/Sub to
    redeliver gives the chunk back, so the redelivery claims it at once instead of finding it under a
    live lease. False when the claim is no longer this worker's (its lease lapsed and another
    delivery took it: that one's claim stays) or the chunk is finished."""
    db = firestore_client()
    ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))

    @firestore.transactional
    def release(tx: firestore.Transaction) -> bool:
        progress = existing(read(ref, ("lease_owner", "done"), transaction=tx))
        if progress is None or progress.get("done") or progress.get("lease_owner") != owner:
            return False
        tx.update(ref, {"lease_owner": None, "lease_until": None, "updated_at": utcnow()})
        return True

    return bool(release(db.transaction()))


def chunk_items(scope: Scope, job_id: str, n: int) -> dict[str, Any] | None:
    snap = read(job_ref(scope, job_id).collection("chunk_items").document(chunk_id(n)))
    return existing(snap)


def chunk_progress(scope: Scope, job_id: str, n: int) -> dict[str, Any] | None:
    snap = read(job_ref(scope, job_id).collection("chunks").document(chunk_id(n)))
    return existing(snap)


def chunk_finished(scope: Scope, job_id: str, n: int, phase: str) -> bool:
    """Whether the chunk is done in `phase` (its results not read)."""
    snap = read(job_ref(scope, job_id).collection("chunks").document(chunk_id(n)), ("done", "phase"))
    progress = existing(snap) or {}
    return bool(progress.get("done")) and progress.get("phase", "commit") == phase


def reset_chunk(scope: Scope, job_id: str, n: int, phase: str) -> dict[str, Any]:
    """Start a chunk over in the commit phase, once: a concurrent reset finds it already there.
    Phases only move forward (validate → commit): a chunk already committing is never reset."""
    db = firestore_client()
    ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))

    @firestore.transactional
    def reset(tx: firestore.Transaction) -> dict[str, Any]:
        progress = data(read(ref, transaction=tx))
        if progress.get("phase", "commit") == phase or phase != "commit" or progress.get("skipped"):
            # Already there; or sealed (`seal`): the job was cancelled and its retry runs these items.
            return progress
        fresh = {
            "phase": phase,
            "applied": 0,
            "results": [],
            "ok": 0,
            "failed": 0,
            "has_failures": False,
            "done": False,
            "counted_ok": 0,
            "counted_failed": 0,
            "counted_done": False,
            "lease_owner": None,
            "updated_at": utcnow(),
        }
        tx.update(ref, fresh)
        return {**progress, **fresh}

    return reset(db.transaction())  # type: ignore[no-any-return]


# What counting reads of a chunk's progress (not its per-item results).
COUNT_FIELDS = ("ok", "failed", "done", "counted_ok", "counted_failed", "counted_done", "phase")


def count_progress(scope: Scope, job_id: str, n: int) -> dict[str, Any] | None:
    """Add what the chunk applied since it was last counted to the job's counters, exactly once.

    The chunk's `counted_*` fields and the job's `Increment`s commit in one batch, guarded by the
    chunk document's update time: of two workers counting the same progress, one wins, the other
    re-reads and finds nothing left to count. A crash between a chunk step and its count leaves a
    gap the next delivery (or the reconciler) counts.
    """
    db = firestore_client()
    progress_ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))
    while True:
        snap = read(progress_ref, COUNT_FIELDS)
        if not snap.exists:
            return None
        p = data(snap)
        ok, failed = p["ok"] - p["counted_ok"], p["failed"] - p["counted_failed"]
        done = p["done"] and not p["counted_done"]
        if not (ok or failed or done):
            return p
        now = utcnow()
        batch = db.batch()
        batch.update(
            progress_ref,
            {"counted_ok": p["ok"], "counted_failed": p["failed"], "counted_done": p["done"]},
            option=db.write_option(last_update_time=snap.update_time),
        )
        changes: dict[str, Any] = {"updated_at": now, "touched_at": now}
        # An item that passed ErrorMode Fail's validation is not processed yet: the commit pass counts it.
        if ok and p.get("phase") != "validate":
            changes["processed_items"] = firestore.Increment(ok)
        if failed:
            changes["failed_items"] = firestore.Increment(failed)
        if done:
            changes["chunks_done"] = firestore.Increment(1)
        batch.update(job_ref(scope, job_id), changes)
        try:
            batch.commit()
        except (gexc.FailedPrecondition, gexc.Aborted):
            continue
        return {**p, "counted_ok": p["ok"], "counted_failed": p["failed"], "counted_done": p["done"]}


def chunks_in_phase(scope: Scope, job_id: str, phase: str) -> list[int]:
    query = job_ref(scope, job_id).collection("chunks").where(filter=firestore.FieldFilter("phase", "==", phase))
    return [int(fields["n"]) for _, fields in rows(query)]


def uncounted_chunks(scope: Scope, job_id: str) -> list[int]:
    """Chunks finished but not yet counted into the job (a worker died in between)."""
    query = (
        job_ref(scope, job_id)
        .collection("chunks")
        .where(filter=firestore.FieldFilter("done", "==", True))
        .where(filter=firestore.FieldFilter("counted_done", "==", False))
    )
    return [int(fields["n"]) for _, fields in rows(query)]


FINISH_FIELDS = ("status", "chunks_done", "chunk_count")


def _finishable(job: dict[str, Any]) -> bool:
    return bool(job["status"] == JobStatus.PROCESSING and job.get("chunks_done", 0) >= job.get("chunk_count", 0))


def finish(scope: Scope, job_id: str, audit: dict[str, Any] | None, notice: Notice | None = None) -> str | None:
    """Set COMPLETED or FAILED once every chunk is done; returns the new status, or None.

    Every finishing chunk asks; until the last one, a read of three fields answers without a
    transaction (which would lock the job document against the other chunks' counts). A chunk's own
    count is in what it reads, so the chunk that counts last always goes on to the transaction."""
    db = firestore_client()
    ref = job_ref(scope, job_id)
    first = read(ref, FINISH_FIELDS)
    if not first.exists or not _finishable(data(first)):
        return None

    @firestore.transactional
    def close(tx: firestore.Transaction) -> str | None:
        snap = read(ref, transaction=tx)
        if not snap.exists:
            return None
        job = data(snap)
        if not _finishable(job):
            return None
        now = utcnow()
        options = job.get("import_options") or {}
        counts = {"processed_items": job.get("processed_items"), "failed_items": job.get("failed_items")}
        validated = job.get("phase") == "validate"
        if validated and not job.get("failed_items"):
            # All validated: start the commit pass (chunks reset themselves when they see it).
            tx.update(ref, {"phase": "commit", "processed_items": 0, "failed_items": 0, "chunks_done": 0, "updated_at": now, "touched_at": now})
            return "commit"
        if job.get("failed_items") and (validated or (options.get("what_if") and options.get("error_mode") == "Fail")):
            # ErrorMode Fail: one failure and nothing is committed; every item is reported as failed
            # (whatIf reports what the import would).
            counts = {"processed_items": 0, "failed_items": job.get("total_items")}
            changes = {"status": JobStatus.FAILED.value, "committed": False, **counts, "completed_at": now, "updated_at": now, "touched_at": now}
            status = JobStatus.FAILED
        else:
            status = JobStatus.FAILED if job.get("failed_items") else JobStatus.COMPLETED
            changes = {"status": status.value, "completed_at": now, "updated_at": now, "touched_at": now}
        tx.update(ref, changes)
        _record_notice(tx, scope, notice, {**job, **changes})
        if audit is not None:
            event = {**audit, "action": f"bulk_job.{status.value.lower()}", "created_at": now}
            event["details"] = {**audit.get("details", {}), **counts}  # as the job record says
            tx.set(coll(scope, "audit_events").document(event["id"]), event)
        return status.value

    return close(db.transaction())  # type: ignore[no-any-return]


Uncommitted = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def results_by_chunk(
    scope: Scope, job_id: str, *, start: int, limit: int, failed_only: bool, chunk_size: int, uncommitted: Uncommitted | None = None
) -> tuple[list[tuple[int, list[dict[str, Any]]]], int | None]:
    """Per-item results from index `start`, in payload order, grouped by the chunk that holds each:
    ([(chunk number, its results on the page)], next start), so that the chunks' items can be read
    with them.

    `uncommitted`: how the results of a chunk still in ErrorMode Fail's validation phase read, for
    a job whose commit round began and which was cancelled before that chunk committed (each item
    failed, not committed); `failed_only` then reads every chunk, since those had no failure.

    A chunk holds at most `chunk_size` items, so the chunk holding `start` begins after
    `start - chunk_size`; with `failed_only`, chunks without failures are not even read. Chunks
    are read a few at a time, each query to its end (a stream left open stays in memory, see
    `paths.read`): as many as a page and the next page's first result can span, so one query
    when every item is listed, and at least four when chunks may hold a single failure each.
    """
    chunks = job_ref(scope, job_id).collection("chunks")
    batch = max(limit // chunk_size + 2, 4)
    out: list[tuple[int, list[dict[str, Any]]]] = []
    taken = 0
    after = start - chunk_size
    while True:
        query = chunks.where(filter=firestore.FieldFilter("first_index", ">", after))
        if failed_only and uncommitted is None:
            query = query.where(filter=firestore.FieldFilter("has_failures", "==", True))
        found = [fields for _, fields in rows(query.order_by("first_index").limit(batch))]
        for chunk in found:
            if chunk["first_index"] + chunk["count"] <= start:
                continue
            results = chunk_results(chunk)
            if uncommitted is not None and chunk.get("phase", "commit") != "commit":
                results = uncommitted(results)
            for item in results:
                if item["index"] < start or (failed_only and item["result"] != "failed"):
                    continue
                if taken == limit:
                    return out, item["index"]
                if not out or out[-1][0] != chunk["n"]:
                    out.append((chunk["n"], []))
                out[-1][1].append(item)
                taken += 1
        if len(found) < batch:
            return out, None
        after = found[-1]["first_index"]


# Chunk item documents read at once: each holds up to `Settings.chunk_max_bytes` of items (600 KB).
ITEM_DOCS_PER_READ = 8


def stored_items(scope: Scope, job_id: str, numbers: Sequence[int]) -> Iterator[dict[str, Any] | None]:
    """The stored items of each chunk in `numbers`, in that order: its `first_index` and
    `items_json` (None for a chunk whose items are not stored). Read by id, a few documents a
    request, each request's stream to its end, and only as far as the caller iterates: a page
    that stops early reads no further chunk."""
    db = firestore_client()
    items = job_ref(scope, job_id).collection("chunk_items")
    for at in range(0, len(numbers), ITEM_DOCS_PER_READ):
        group = numbers[at : at + ITEM_DOCS_PER_READ]
        refs = [items.document(chunk_id(n)) for n in group]
        found = {snap.id: existing(snap) for snap in list(db.get_all(refs, field_paths=["first_index", "items_json"]))}
        for n in group:
            yield found.get(chunk_id(n))


def chunk_results(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    """A chunk's per-item results; a retry job's each with `retry_of_index`, the index its item had
    in the job retried (dispatch stored them by position in the chunk, `create_chunks`)."""
    results: list[dict[str, Any]] = chunk.get("results", [])
    origins = chunk.get("origins")
    if not origins:
        return results
    first = chunk["first_index"]
    return [{**item, "retry_of_index": origins[item["index"] - first]} for item in results]


def stale_pending(cutoff: datetime, limit: int = 200) -> list[dict[str, Any]]:
    query = (
        firestore_client()
        .collection_group("bulk_jobs")
        .where(filter=firestore.FieldFilter("status", "==", JobStatus.PENDING.value))
        .where(filter=firestore.FieldFilter("touched_at", "<", cutoff))
        .limit(limit)
    )
    return [fields for _, fields in rows(query)]


def stale_processing(cutoff: datetime, limit: int = 200) -> list[dict[str, Any]]:
    query = (
        firestore_client()
        .collection_group("bulk_jobs")
        .where(filter=firestore.FieldFilter("status", "==", JobStatus.PROCESSING.value))
        .where(filter=firestore.FieldFilter("touched_at", "<", cutoff))
        .limit(limit)
    )
    return [fields for _, fields in rows(query)]


def stale_chunks(cutoff: datetime, limit: int = 500) -> list[dict[str, Any]]:
    query = (
        firestore_client()
        .collection_group("chunks")
        .where(filter=firestore.FieldFilter("done", "==", False))
        .where(filter=firestore.FieldFilter("published", "==", True))
        .where(filter=firestore.FieldFilter("updated_at", "<", cutoff))
        .limit(limit)
    )
    return [fields for _, fields in rows(query)]


# The rounds a job's chunks run in, in order: ErrorMode Fail validates every chunk, then commits
# every chunk; any other job has the commit round only. Rounds only move forward.
ROUNDS = ("validate", "commit")
# What marking a chunk published reads of it, and of the chunk before it in the window.
PUBLISH_FIELDS = ("published", "published_in", "phase", "done", "skipped")


def _published_round(progress: dict[str, Any]) -> int:
    """The round the chunk was last published in (an index of ROUNDS), -1 when it never was. A
    chunk created published (`create_chunks`) was published in the round it was created in; so was
    one marked before chunks recorded `published_in`."""
    if not progress.get("published"):
        return -1
    return ROUNDS.index(progress.get("published_in") or progress.get("phase", "commit"))


def _mark_once(db: firestore.Client, snap: firestore.DocumentSnapshot, phase: str) -> bool | None:
    """Mark the chunk read as `snap` published in `phase`'s round unless it is already (in that
    round or a later one) or sealed: True once this call marked it, False when it needs no mark,
    None when the chunk changed since it was read (read it again). The write is guarded by the
    chunk's update time, as `count_progress`'s counts are: of two callers marking one chunk, one
    wins, the other finds it marked. No transaction, so no lock that would make the chunk's own
    claim, which reads contention as another worker holding the chunk, answer "busy"."""
    progress = existing(snap)
    if progress is None or progress.get("skipped") or _published_round(progress) >= ROUNDS.index(phase):
        return False
    try:
        snap.reference.update(
            {"published": True, "published_in": phase, "updated_at": utcnow()}, option=db.write_option(last_update_time=snap.update_time)
        )
    except (gexc.FailedPrecondition, gexc.Aborted):
        return None
    return True


def mark_published(scope: Scope, job_id: str, n: int, phase: str) -> bool:
    """Mark chunk `n` published in `phase`'s round, once however many callers ask: True for the one
    caller that marked it, which then publishes it; False when it already was, in this round or a
    later one, or was sealed (`seal`). A chunk is marked before its message is sent, so a message
    lost after the mark is a stale published chunk, which the reconciler republishes."""
    db = firestore_client()
    ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))
    while True:
        marked = _mark_once(db, read(ref, PUBLISH_FIELDS), phase)
        if marked is not None:
            return marked


def release_after(scope: Scope, job_id: str, n: int, successor: int) -> bool:
    """Chunk `n` leaves its job's window and `successor` enters it: `mark_published(successor)` in
    the round chunk `n` is finished in, both read in one round trip. Every delivery that sees chunk
    `n` finished may ask; only the one that marks the successor is answered True. False too when
    chunk `n` is not finished (a later round has reset it since) or was sealed."""
    db = firestore_client()
    chunks = job_ref(scope, job_id).collection("chunks")
    refs = [chunks.document(chunk_id(n)), chunks.document(chunk_id(successor))]
    while True:
        found = {snap.id: snap for snap in list(db.get_all(refs, field_paths=list(PUBLISH_FIELDS)))}
        finished = existing(found[chunk_id(n)]) or {}
        if not finished.get("done") or finished.get("skipped"):
            return False
        marked = _mark_once(db, found[chunk_id(successor)], finished.get("phase", "commit"))
        if marked is not None:
            return marked


def unpublished_chunks(scope: Scope, job_id: str, count: int) -> list[int]:
    """The job's lowest `count` chunks not published yet (the reconciler's restart of an empty window)."""
    query = (
        job_ref(scope, job_id)
        .collection("chunks")
        .where(filter=firestore.FieldFilter("published", "==", False))
        .order_by("n")
        .limit(count)
        .select(["n"])
    )
    return [int(fields["n"]) for _, fields in rows(query)]


def chunks_in_flight(scope: Scope, job_id: str) -> int:
    """Published chunks not done yet: the job's current window."""
    query = (
        job_ref(scope, job_id)
        .collection("chunks")
        .where(filter=firestore.FieldFilter("published", "==", True))
        .where(filter=firestore.FieldFilter("done", "==", False))
    )
    return sum(1 for _ in rows(query.select(["n"])))


def touch_job(scope: Scope, job_id: str) -> None:
    job_ref(scope, job_id).update({"touched_at": utcnow()})


def touch_chunk(scope: Scope, job_id: str, n: int) -> None:
    job_ref(scope, job_id).collection("chunks").document(chunk_id(n)).update({"updated_at": utcnow()})
