"""Bulk jobs: create, read, and the pipeline steps that move them (dispatch, chunk, finish)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc

from common import errors, jsonstream
from common.auth import Principal, audit_by
from common.config import get_settings
from common.domain import engine, syndigo
from common.http import ItemArray, compact_json, is_uuid, loads_strict, loads_strict_itemised, utf8_pieces, utf8_size
from common.logging import get_logger
from common.models.audit import audit_event
from common.models.base import utcnow
from common.models.job import ChunkMessage, ItemResult, JobMessage, JobPublic, JobStatus, JobSummary, JobType
from common.services import notifications, product_import
from common.store import blobs, catalog, queue
from common.store import jobs as store
from common.store.paths import Scope

log = get_logger("synq.jobs")

_REQUEST_FIELDS = {"job_type", "payload", "item_count", "payload_sha256"}


# Where a create request's items are: its payload array, or the products of its ProductImportData envelope.
_ITEM_PATHS = (("payload",), ("payload", *product_import.ENVELOPE_ITEMS))


def read_request(text: str) -> Any:
    """A create request's body, its items read one at a time (`loads_strict_itemised`)."""
    return loads_strict_itemised(text, _ITEM_PATHS, keep=get_settings().max_items_per_job)


@dataclass(frozen=True)
class JobInput:
    """A create request once checked: the payload as it is stored and returned, and its item count."""

    job_type: JobType
    payload_json: str
    item_count: int
    # A ProductImportData payload's options, as a job stores them (`vocabulary_id` as the envelope
    # names it, None for the tenant's default); None for a plain array.
    import_options: dict[str, Any] | None
    # A ProductImportData payload's envelope as sent, its products written as null: what a retry
    # wraps its products in (`envelope_around`). None for a plain array.
    envelope_json: str | None = None


def payload_item(index: int) -> str:
    return f"payload[{index}]"


def validate_request(body: Any, item_name: Callable[[int], str] = payload_item) -> JobInput:
    """Check a create request's shape. Its `payload` is an array (parsed, or an `ItemArray` from
    `read_request`) or a ProductImportData envelope. `item_name` is how an error names an item: a
    retry's caller sent corrections, not the payload it builds from them."""
    settings = get_settings()
    if not isinstance(body, dict):
        raise errors.BadRequest("The request body must be a JSON object with job_type and payload.", code="invalid_body")
    for name in ("job_type", "payload"):
        if name not in body:
            raise errors.BadRequest(f"Field '{name}' is required.", code="missing_field", details={"field": name})
    unknown = sorted(set(body) - _REQUEST_FIELDS)
    if unknown:
        raise errors.Unprocessable(f"Unknown field '{unknown[0][:100]}'.", code="unknown_field", details={"field": unknown[0][:100]})
    job_type = body["job_type"]
    if not isinstance(job_type, str) or job_type not in JobType.__members__:
        raise errors.Unprocessable(
            "job_type must be one of BULK_IMPORT, BULK_UPDATE, BULK_DELETE.",
            code="invalid_job_type",
            details={"field": "job_type"},
        )
    payload = body["payload"]
    import_options = None
    keep = settings.max_items_per_job
    if isinstance(payload, ItemArray):
        items = payload
    elif isinstance(payload, dict):
        if job_type == "BULK_DELETE":
            raise errors.Unprocessable("BULK_DELETE takes an array of product ids.", code="invalid_payload", details={"field": "payload"})
        import_options, items = _envelope(payload, keep)
    elif isinstance(payload, list):
        items = ItemArray.of(payload, keep)
    else:
        raise errors.Unprocessable("payload must be a JSON array of items.", code="invalid_payload", details={"field": "payload"})
    if not items.count:
        raise errors.Unprocessable("payload must hold at least one item.", code="empty_payload", details={"field": "payload"})
    if items.count > settings.max_items_per_job:
        raise errors.PayloadTooLarge(f"A job holds at most {settings.max_items_per_job} items; split the payload.")
    # An item's compact text starts with `{` when it is an object and `"` when it is a string.
    want, what = ('"', "a product id string") if job_type == "BULK_DELETE" else ("{", "a product object")
    for index in range(items.count):
        if import_options is None and items.kinds[index] != want:
            name = item_name(index)
            raise errors.Unprocessable(f"{name} must be {what} for {job_type}.", code="invalid_payload", details={"field": name})
        if items.sizes[index] > settings.max_item_bytes:
            raise errors.PayloadTooLarge(f"{item_name(index)} is larger than {settings.max_item_bytes} bytes.")
    if import_options is None:
        return JobInput(JobType(job_type), items.json, items.count, None)
    payload_json = _compact_around(payload, product_import.ENVELOPE_ITEMS, items.json)
    return JobInput(JobType(job_type), payload_json, items.count, import_options, _compact_around(payload, product_import.ENVELOPE_ITEMS, "null"))


def _envelope(payload: dict[str, Any], keep: int) -> tuple[dict[str, Any], ItemArray]:
    """A ProductImportData payload checked: its options, and its products as items. The envelope's
    model checks only that ProductsToImport is a non-empty array (each product is checked as an
    item), so when the reader has already turned them into an `ItemArray` the model is shown a
    stand-in of the same emptiness."""
    data = payload.get("ProductImportData")
    products = data.get("ProductsToImport") if isinstance(data, dict) else None
    if isinstance(data, dict) and isinstance(products, ItemArray):
        stand_in: list[Any] = [{}] if products.count else []
        envelope = _parse_envelope({**payload, "ProductImportData": {**data, "ProductsToImport": stand_in}})
        items = products
    else:
        envelope = _parse_envelope(payload)
        items = ItemArray.of(envelope.ProductImportData.ProductsToImport, keep)
    options = {
        "vocabulary_id": envelope.vocabularyId,
        "identifier_property": envelope.ProductImportData.ProductIdentifierProperty,
        "error_mode": envelope.ErrorMode.value,
        "what_if": envelope.whatIf,
        "include_missing": envelope.shouldIncludeMissingVocabularyAttributes,
        "archived": envelope.ProductImportData.Archived,
    }
    return options, items


def _parse_envelope(payload: dict[str, Any]) -> Any:
    try:
        return product_import.parse_request(payload, at=("payload",))
    except errors.BadRequest as exc:
        # A field missing inside the payload makes the payload invalid: 422, as every payload check.
        raise errors.Unprocessable(exc.message, code=exc.code, details=exc.details) from None


def _compact_around(value: dict[str, Any], path: tuple[str, ...], text: str) -> str:
    """`compact_json(value)`, with the member down `path` written as `text` (its compact JSON)."""
    if not path:
        return text
    members = (
        compact_json(key) + ":" + (_compact_around(member, path[1:], text) if key == path[0] else compact_json(member))
        for key, member in value.items()
    )
    return "{" + ",".join(members) + "}"


def check_integrity(body: dict[str, Any], item_count: int, payload_json: str) -> None:
    """Optional `item_count` and `payload_sha256` catch a truncated or altered upload before it runs.

    The digest is the SHA-256 (hex) of the payload as compact JSON, keys in the order sent and
    non-ASCII characters unescaped, as Python writes it:
    `json.dumps(payload, separators=(",", ":"), ensure_ascii=False)`, exactly the `payload_json` the
    API returns. `JSON.stringify(payload)` gives the same text only when the payload's numbers are
    integers within ±2^53 or have a non-zero fractional part of at least 0.0001 in magnitude and no
    object key is a non-negative integer: Python writes 0.00001 as `1e-05`, 1e-7 as `1e-07`, 1E2 and
    100.0 as `100.0` and 1e16 as `1e+16`, where JavaScript writes `0.00001`, `1e-7`, `100` and
    `10000000000000000`.
    """
    expected_count = body.get("item_count")
    if expected_count is not None:
        if not isinstance(expected_count, int) or isinstance(expected_count, bool) or expected_count < 0:
            raise errors.Unprocessable("item_count must be a non-negative integer.", code="invalid_value", details={"field": "item_count"})
        if expected_count != item_count:
            raise errors.Unprocessable(
                f"item_count is {expected_count} but the payload holds {item_count} items: the upload may be truncated.",
                code="item_count_mismatch",
                details={"field": "item_count"},
            )
    digest = body.get("payload_sha256")
    if digest is not None:
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise errors.Unprocessable("payload_sha256 must be 64 hex digits.", code="invalid_value", details={"field": "payload_sha256"})
        sha = hashlib.sha256()
        for piece in utf8_pieces(payload_json):
            sha.update(piece)
        actual = sha.hexdigest()
        if actual != digest.lower():
            raise errors.Unprocessable(
                f"payload_sha256 does not match the payload received (its SHA-256 is {actual}).",
                code="payload_sha256_mismatch",
                details={"field": "payload_sha256"},
            )


def create_job(principal: Principal, body: Any, *, retry_of: str | None = None, item_name: Callable[[int], str] = payload_item) -> dict[str, Any]:
    """Store a PENDING job with its audit event, publish it, and return the public record."""
    settings = get_settings()
    checked = validate_request(body, item_name)
    job_type, payload_json, import_options = checked.job_type, checked.payload_json, checked.import_options
    check_integrity(body, checked.item_count, payload_json)
    # A job has one retry: its id derives from the original's, so of two racing retries one is stored.
    job_id = engine.derived_id(retry_of, "retry") if retry_of is not None else str(uuid.uuid4())
    scope = principal.scope
    vocabulary = None
    if import_options is not None:
        # The job runs under the vocabulary as it is now, whatever PUT follows: it keeps a snapshot,
        # stored with it (`store.create`); `vocabulary_snapshot` tells its workers to read that.
        vocabulary = product_import.load_vocabulary(scope, import_options["vocabulary_id"])
        import_options = {**import_options, "vocabulary_id": vocabulary["id"], "vocabulary_snapshot": True}
    now = utcnow()
    job: dict[str, Any] = {
        "id": job_id,
        "org_id": scope.org_id,
        "tenant_id": scope.tenant_id,
        "job_type": job_type.value,
        "status": JobStatus.PENDING.value,
        "total_items": None,
        "processed_items": None,
        "failed_items": None,
        "created_by": principal.user_id,
        "actor_email": principal.email,
        "ip_address": principal.ip_address,
        "item_count": checked.item_count,
        "payload_bytes": utf8_size(payload_json),
        "created_at": now,
        "updated_at": now,
        "touched_at": now,
        "started_at": None,
        "completed_at": None,
    }
    if retry_of is not None:
        job["retry_of"] = retry_of
    if import_options is not None:
        job["payload_kind"] = "ProductImportData"
        job["import_options"] = import_options
        job["what_if"] = import_options["what_if"]
        if checked.envelope_json is not None and utf8_size(checked.envelope_json) <= ENVELOPE_KEPT_MAX:
            job["import_envelope"] = checked.envelope_json  # a few hundred bytes; a freak one stays in the payload only
    # Which request stored the job: a retry's id is the same for every request retrying one job.
    job["request_id"] = uuid.uuid4().hex
    if job["payload_bytes"] <= settings.inline_payload_max_bytes:
        job["payload_json"] = payload_json
    else:
        # Named for this request too: a racing retry that loses must not overwrite the winner's payload.
        job["payload_object"] = f"payloads/{scope.org_id}/{scope.tenant_id}/{job_id}-{job['request_id'][:12]}.json"
        blobs.put_text(job["payload_object"], payload_json)
    audit = audit_by(principal, "bulk_job.created", "bulk_job", job_id, {"job_type": job_type.value, "items": checked.item_count})
    try:
        store.create(scope, job, audit, retry_of=retry_of, vocabulary=product_import.snapshot(vocabulary) if vocabulary else None)
    except gexc.AlreadyExists:
        # The client re-sends a commit whose answer it lost (ServiceUnavailable): the job that exists
        # is then this request's own, and it goes on. Otherwise another retry was stored first.
        if (store.get(scope, job_id, ["request_id"]) or {}).get("request_id") != job["request_id"]:
            if retry_of is None:
                raise
            if "payload_object" in job:
                with contextlib.suppress(gexc.GoogleAPICallError):  # left to the bucket's retention rule
                    blobs.delete(job["payload_object"])
            raise errors.Conflict("The job was already retried.", code="already_retried", details={"retried_by": job_id}) from None
    try:
        queue.publish(settings.jobs_topic, [JobMessage(job_id=job_id, org_id=scope.org_id, tenant_id=scope.tenant_id)])
    except errors.Transient:
        # The job is stored; the reconciler republishes PENDING jobs whose message was lost.
        log.warning("job publish failed; the reconciler will retry", extra={"job_id": job_id})
    return public(job, payload_json)


def payload_text(job: dict[str, Any]) -> str:
    if "payload_json" in job:
        return str(job["payload_json"])
    try:
        return blobs.get_text(job["payload_object"])
    except gexc.NotFound as exc:
        raise _payload_expired() from exc


def _payload_expired() -> errors.Gone:
    return errors.Gone("The payload of this job is past its retention and was deleted.", code="payload_expired")


def public(job: dict[str, Any], payload_json: str | None = None, *, include_payload: bool = True) -> dict[str, Any]:
    """The job as create and get return it; a payload past its retention reads as null, the job stays readable."""
    if payload_json is None and include_payload:
        try:
            payload_json = payload_text(job)
        except errors.Gone:
            payload_json = None
    return JobPublic.model_validate({**job, "what_if": _what_if(job), "payload_json": payload_json}).dump()


def summary(job: dict[str, Any]) -> dict[str, Any]:
    return JobSummary.model_validate({**job, "what_if": _what_if(job)}).dump()


def _what_if(job: dict[str, Any]) -> bool:
    # Jobs stored before `what_if` was a field of its own say it in their import options only.
    return bool(job.get("what_if", (job.get("import_options") or {}).get("what_if", False)))


# What the list reads of each job: its summary, and the options an older job's `what_if` is read from.
SUMMARY_FIELDS = [*JobSummary.model_fields, "import_options"]


def get_job(scope: Scope, job_id: str) -> dict[str, Any]:
    job = store.get(scope, job_id) if is_uuid(job_id) else None
    if job is None:
        raise errors.NotFound("No bulk job with that id in this tenant.")
    return job


def list_jobs(scope: Scope, job_type: str, *, status: str | None = None, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of one type's jobs, newest first; only those in `status`, when given."""
    if job_type not in JobType.__members__:
        raise errors.BadRequest("type must be one of BULK_IMPORT, BULK_UPDATE, BULK_DELETE.", code="invalid_query")
    if status is not None and status not in JobStatus.__members__:
        # A typo would otherwise read as "no such jobs".
        raise errors.BadRequest(f"status must be one of {', '.join(JobStatus)}.", code="invalid_query")
    # Only what the summary shows: a job document can carry a 700 KB inline payload.
    docs, next_cursor = store.list_page(scope, job_type, status=status, limit=limit, cursor=cursor, fields=SUMMARY_FIELDS)
    return [summary(d) for d in docs], next_cursor


# How much of the submitted items a page of results with `include=item` holds, beyond its last
# item: a page is `limit` rows (1,000 at most), and an item may be 256 KB.
ITEMS_PAGE_BYTES = 4 * 1024 * 1024


def results(
    scope: Scope, job_id: str, *, start: int, limit: int, failed_only: bool, with_items: bool = False
) -> tuple[list[dict[str, Any]], int | None]:
    """A page of the job's per-item results; with `with_items`, each with `item`, the item as
    submitted (see `attach_items`)."""
    job = get_job(scope, job_id)
    committed = job.get("committed", True)
    groups, next_start = store.results_by_chunk(
        scope,
        job_id,
        start=start,
        limit=limit,
        failed_only=failed_only and committed,
        chunk_size=get_settings().chunk_size,
        uncommitted=_held_back_chunks() if committed and _cancelled_in_commit_round(job) else None,
    )
    if with_items:
        if job["status"] == JobStatus.FAILED and job.get("chunk_count") is None:
            # Its payload was gone before it ran (`dispatch`): none of its items was ever stored by chunk.
            raise _items_gone(" Its payload passed its retention before the job ran.")
        stored = store.stored_items(scope, job_id, [n for n, _ in groups])
        items, next_start = attach_items(groups, stored, next_start, ITEMS_PAGE_BYTES)
    else:
        items = [item for _, rows in groups for item in rows]
    if not committed:
        # ErrorMode Fail: nothing was committed (an item failed validation, or the job was cancelled
        # before its commit pass), so every item failed; the good ones say why, and none names a
        # product this page's items would have created.
        created = product_import.created_by(items)
        why = product_import.CANCELLED_UNCOMMITTED if job["status"] == JobStatus.CANCELLED else product_import.NOT_COMMITTED
        items = [product_import.held_back(i, created, why) for i in items]
    if job.get("payload_kind") == "ProductImportData":
        items = [{**i, **product_import.vendor_result(i)} for i in items]
    # `item` goes in as it was parsed, not through the model: an item may be large, and is any JSON.
    return [
        ItemResult.model_validate(i).dump(exclude={"item"})
        | {k: v for k, v in i.items() if k[0].isupper()}
        | ({"item": i["item"]} if with_items else {})
        for i in items
    ], next_start


def attach_items(
    groups: Iterable[tuple[int, list[dict[str, Any]]]], stored: Iterable[dict[str, Any] | None], next_start: int | None, budget: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The results of `groups` (a page, by chunk: `store.results_by_chunk`), each with `item`
    parsed from `stored` (each group's chunk items, in the same order: `store.stored_items`).

    The page ends early, at the first result once its items hold `budget` characters or more, which
    then starts the next page: the page's items come to at most `budget` plus one item, whatever
    `limit` was (beside them, one chunk's item texts and one read of `store.ITEM_DOCS_PER_READ`
    chunks). So a page always holds at least one result, and the chunks after its end are not read.
    A chunk whose items are not stored is 410: its results are readable, its items no longer."""
    out: list[dict[str, Any]] = []
    size = 0
    for (_, rows), chunk in zip(groups, stored, strict=False):
        if chunk is None:
            raise _items_gone("")
        texts = list(jsonstream.array_items(io.StringIO(chunk["items_json"])))
        for row in rows:
            if size >= budget:
                return out, row["index"]
            text = texts[row["index"] - chunk["first_index"]]
            size += len(text)
            out.append({**row, "item": loads_strict(text)})
    return out, next_start


def _items_gone(why: str) -> errors.Gone:
    return errors.Gone(
        f"The submitted items of this job are no longer kept.{why} Its results are still readable without include=item.",
        code="payload_expired",
    )


def _cancelled_in_commit_round(job: dict[str, Any]) -> bool:
    """An ErrorMode Fail job cancelled once its commit round began: its chunks still in the
    validation phase committed nothing."""
    options = job.get("import_options") or {}
    return (
        job["status"] == JobStatus.CANCELLED and job.get("phase") == "commit" and options.get("error_mode") == "Fail" and not options.get("what_if")
    )


def _held_back_chunks() -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """How the validation-phase results of a job cancelled in its commit round read: each item
    failed, not committed, and none names a product only its validation created (on this page)."""
    created: set[str] = set()

    def held(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        created.update(product_import.created_by(rows))
        return [product_import.held_back(row, created, product_import.CANCELLED_UNCOMMITTED) for row in rows]

    return held


def cancel_job(principal: Principal, job_id: str) -> dict[str, Any]:
    """Stop a PENDING or PROCESSING job: chunks not started are skipped, a chunk in flight finishes
    the step it is in. `processed_items` then says how many items were applied before the stop."""
    job = get_job(principal.scope, job_id)
    audit = audit_by(principal, "bulk_job.cancelled", "bulk_job", job_id, {"status_before": job["status"]})
    cancelled = store.cancel(principal.scope, job_id, audit, end_notice(principal.scope))
    if cancelled is None:
        raise errors.Conflict(
            f"The job is {get_job(principal.scope, job_id)['status']}; only PENDING or PROCESSING jobs can be cancelled.", code="job_not_active"
        )
    log.info("job cancelled", extra={"job_id": job_id})
    try:
        notify_end(principal.scope, job_id)
    except (gexc.GoogleAPICallError, errors.Transient) as exc:
        # The job is cancelled and its notification recorded with it: the reconciler queues it.
        log.warning("job cancelled; its notification is left to the reconciler", extra={"job_id": job_id, "error": str(exc)[:200]})
    return public(cancelled, include_payload=False)


_INDEX = re.compile(r"0|[1-9][0-9]{0,9}")  # a payload index as JSON writes it, ASCII digits only


def retry_job(principal: Principal, job_id: str, body: Any) -> dict[str, Any]:
    """A new job of the same type from the items a FAILED or CANCELLED job did not apply: those that
    failed, and those a cancel stopped before they ran (`rerun_of`), optionally corrected.

    Body (optional): `{"corrections": {"<index>": <item>}}` replaces those items by payload index.

    The items are read from the chunks that hold them, as dispatch stored them (`rerun_texts`), so
    a payload past its retention does not stop a retry, and a large one is not read for a few
    failures. A ProductImportData job's retry wraps them in the envelope's other members as they
    were sent (`envelope_around`)."""
    scope = principal.scope
    corrections = retry_corrections(body)
    job = get_job(scope, job_id)
    if job["status"] not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise errors.Conflict(f"The job is {job['status']}; only FAILED or CANCELLED jobs can be retried.", code="job_not_failed")
    if job.get("retried_by"):
        raise errors.Conflict(
            f"The job was already retried by {job['retried_by']}.", code="already_retried", details={"retried_by": job["retried_by"]}
        )
    around = envelope_around(job) if job.get("payload_kind") == "ProductImportData" else None  # 410 first when it is gone
    rerun = rerun_of(scope, job)
    texts = rerun_texts(scope, job, rerun)  # 410 when neither a chunk nor the payload holds them
    indexes = rerun.indexes
    if not indexes:
        raise errors.Conflict("Every item of the job was applied before it was cancelled: there is nothing to retry.", code="nothing_to_retry")
    wanted = set(indexes)
    for key in corrections:
        if not _INDEX.fullmatch(key) or int(key) not in wanted:
            raise errors.Unprocessable(f"corrections['{key[:20]}'] names no item the retry runs (failed, or not run).", code="invalid_correction")
    # The items as the job ran them, their texts never parsed; each correction as a create stores it.
    retried = ItemArray.of_texts(
        (compact_json(corrections[str(i)]) if str(i) in corrections else text for i, text in zip(indexes, texts, strict=True)),
        get_settings().max_items_per_job,
    )
    payload: Any = retried
    if around is not None:
        payload = {**around, "ProductImportData": {**around["ProductImportData"], "ProductsToImport": retried}}

    def item_name(index: int) -> str:
        key = str(indexes[index])
        return f"corrections['{key}']" if key in corrections else f"item {key} of the job retried"

    return create_job(principal, {"job_type": job["job_type"], "payload": payload}, retry_of=job_id, item_name=item_name)


def retry_corrections(body: Any) -> dict[str, Any]:
    """A retry's body (none, or `{"corrections": {"<index>": item}}`) checked as a create's is, before
    anything is read: not an object 400 `invalid_body`, an unknown member 422 `unknown_field` naming
    the first by name, `corrections` that is not an object 422 `invalid_value`."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise errors.BadRequest('The request body must be a JSON object: {"corrections": {"<index>": item}}, or none.', code="invalid_body")
    unknown = sorted(set(body) - {"corrections"})
    if unknown:
        raise errors.Unprocessable(
            f"Unknown field '{unknown[0][:100]}': the body may only hold corrections.", code="unknown_field", details={"field": unknown[0][:100]}
        )
    corrections = body.get("corrections", {})
    if not isinstance(corrections, dict):
        raise errors.Unprocessable(
            "Field 'corrections' must be an object of items by index: {\"<index>\": item}.", code="invalid_value", details={"field": "corrections"}
        )
    return corrections


@dataclass(frozen=True)
class Rerun:
    """What a retry of a job runs: the payload indexes, in order, and the chunks that hold them (in
    order; none for a job never dispatched, whose items no chunk stored)."""

    indexes: list[int]
    chunks: list[int]


def rerun_indexes(scope: Scope, job: dict[str, Any]) -> list[int]:
    """The payload indexes a retry of the job runs, in order (`rerun_of`)."""
    return rerun_of(scope, job).indexes


def rerun_of(scope: Scope, job: dict[str, Any]) -> Rerun:
    """The items a retry of the job runs: those that failed, and those a cancel stopped before they
    ran; every item when the job committed nothing (ErrorMode Fail).

    A CANCELLED job's chunks are sealed first (`store.seal`), before its failures are read: a step
    of it still in flight then either committed before (its failures are read, its other items
    count as run) or finds its chunk done. Otherwise it could apply an item after it was counted as
    not run (the retry would apply it a second time), or commit a failure after the failures were
    read (its item, counted as run, would never be retried)."""
    chunk_count = job.get("chunk_count") or 0
    ran: bytearray | None = None
    holding: set[int] = set()  # the chunks holding an item the retry runs
    if job["status"] == JobStatus.CANCELLED:
        ran = bytearray(job["item_count"])
        for n, first, count, committed in store.seal(scope, job["id"], chunk_count):
            ran[first : first + committed] = b"\x01" * committed
            if committed < count:
                holding.add(n)
    if not job.get("committed", True):
        return Rerun(list(range(job["item_count"])), list(range(chunk_count)))
    failed: list[int] = []
    start: int | None = 0
    while start is not None:
        groups, start = store.results_by_chunk(scope, job["id"], start=start, limit=2_000, failed_only=True, chunk_size=get_settings().chunk_size)
        for n, rows in groups:
            holding.add(n)
            failed += (r["index"] for r in rows)
    if ran is None:
        return Rerun(failed, sorted(holding))
    return Rerun(sorted({*failed, *(i for i, r in enumerate(ran) if not r)}), sorted(holding))


def rerun_texts(scope: Scope, job: dict[str, Any], rerun: Rerun) -> list[str]:
    """The text of each item `rerun` names, as the job ran it: read from the chunks that hold them
    (`store.stored_items`, a few documents a request; each kept as long as the job), or, for a job
    no chunk stored the items of (cancelled before it was dispatched, or whose payload was gone
    before it ran), from its payload: 410 `payload_expired` when that is gone too."""
    if job.get("chunk_count") is not None:
        texts = _chunk_texts(scope, job["id"], rerun)
        if texts is not None:
            return texts
        log.warning("retry: a chunk's items are not stored; reading the payload", extra={"job_id": job["id"]})
    wanted = set(rerun.indexes)
    with payload_items(job) as items:  # read to its end, so that a payload gone is 410 even with nothing to run
        return [text for index, text in enumerate(items) if index in wanted]


def _chunk_texts(scope: Scope, job_id: str, rerun: Rerun) -> list[str] | None:
    """`rerun_texts` from the chunks' stored items: None when one of `rerun.chunks` has none, or
    they do not hold every index."""
    indexes, out = rerun.indexes, list[str]()
    for stored in store.stored_items(scope, job_id, rerun.chunks):
        if stored is None:
            return None
        first = stored["first_index"]
        for at, text in enumerate(jsonstream.array_items(io.StringIO(stored["items_json"]))):
            if len(out) < len(indexes) and indexes[len(out)] == first + at:
                out.append(text)
    return out if len(out) == len(indexes) else None


# -- pipeline ---------------------------------------------------------------------------------


def split_chunks(texts: Iterable[str], size: int, max_bytes: int) -> Iterator[tuple[int, int, str, int]]:
    """Group item texts into chunks of at most `size` items and about `max_bytes` bytes."""
    n, first, group_bytes = 0, 0, 0
    group: list[str] = []
    for index, text in enumerate(texts):
        text_bytes = len(text.encode("utf-8"))
        if group and (len(group) >= size or group_bytes + text_bytes > max_bytes):
            yield n, first, "[" + ",".join(group) + "]", len(group)
            n, first, group, group_bytes = n + 1, index, [], 0
        group.append(text)
        group_bytes += text_bytes + 1
    if group:
        yield n, first, "[" + ",".join(group) + "]", len(group)


def item_namer(job: dict[str, Any], options: syndigo.ImportOptions | None) -> Callable[[Any], tuple[str, str] | None]:
    """How the job's items name their products, as the engine matches them (see engine.plain_name,
    syndigo.name_of); `options` are a ProductImportData job's."""
    if options is None:
        return functools.partial(engine.plain_name, job["job_type"])
    return functools.partial(syndigo.name_of, options=options)


class Repeats:
    """Notes, chunk by chunk, the items that name a product an earlier chunk names too, and the ways
    the items name products.

    `identifier_of`: the identifier an item's failure issue carries, where an item can have one and
    name no product (a ProductImportData entry whose identifier property the vocabulary lacks). Its
    issue still supersedes, or is resolved by, every other item's of that identifier, compared as
    text (engine.record_failure): an earlier chunk holding the same text makes the job run in order."""

    def __init__(self, name_of: Callable[[Any], tuple[str, str] | None], identifier_of: Callable[[Any], str | None] | None = None) -> None:
        self.name_of = name_of
        self.identifier_of = identifier_of
        self.marked = False
        # Each value's latest chunk, by way of naming (no tuple per item: a 100k-item job holds them all).
        self._chunk_of: dict[str, dict[str, int]] = {}
        # The same for the identifiers of items that name no product, and whether one met its text in an earlier chunk.
        self._unnamed: dict[str, int] = {}
        self._crossed = False
        self._chunks = 0

    def named_before(self, n: int, items: list[Any]) -> list[int]:
        marked = []
        for at, raw in enumerate(items):
            name = self.name_of(raw)
            if name is None:
                if self.identifier_of is not None and (ident := self.identifier_of(raw)) is not None:
                    earlier = [self._unnamed, *self._chunk_of.values()]
                    self._crossed = self._crossed or any(chunk_of.get(ident, n) < n for chunk_of in earlier)
                    self._unnamed[ident] = n
                continue
            way, value = name
            self._crossed = self._crossed or self._unnamed.get(value, n) < n
            chunk_of = self._chunk_of.get(way)
            if chunk_of is None:
                chunk_of = self._chunk_of[way] = {}
            if chunk_of.get(value, n) < n:
                marked.append(at)
            chunk_of[value] = n
        self.marked = self.marked or bool(marked)
        self._chunks = max(self._chunks, n + 1)
        return marked

    @property
    def serial(self) -> bool:
        """Whether the chunks must run one at a time: two of them name one product, or the items name
        products in more than one way (by id and by sku, by SKU and by GTIN), when two chunks may
        name one product without a dispatch that reads no product being able to tell, or two of
        them hold one identifier that an item names no product by."""
        return self.marked or self._crossed or (len(self._chunk_of) > 1 and self._chunks > 1)

    def mark(self, chunks: Iterable[tuple[int, int, str, int]]) -> Iterator[tuple[int, int, str, int, list[int]]]:
        for n, first, text, count in chunks:
            yield n, first, text, count, self.named_before(n, json.loads(text))


def window_of(job: dict[str, Any]) -> int:
    """How many of the job's chunks run at once: 1 when two of them name one product."""
    return int(job.get("window") or get_settings().chunk_window)


def dispatch(message: JobMessage) -> None:
    """PENDING → PROCESSING: store the chunks, then publish one pointer message per chunk."""
    settings = get_settings()
    scope = Scope(message.org_id, message.tenant_id)
    job = store.get(scope, message.job_id)
    if job is None:
        log.warning("dispatch: job not found; message acknowledged", extra={"job_id": message.job_id})
        return
    if job["status"] != JobStatus.PENDING:
        log.info("dispatch: job already dispatched", extra={"job_id": message.job_id, "status": job["status"]})
        return
    options = job.get("import_options") or {}
    # ErrorMode Fail is all or nothing across chunks: every chunk validates first, then all commit.
    phase = "validate" if options.get("error_mode") == "Fail" and not options.get("what_if") else "commit"
    repeats = Repeats(item_namer(job, _import_options(scope, job) if options else None), syndigo.identifier_of if options else None)
    lineage = retried_lineage(scope, job)
    try:
        with payload_items(job) as texts:
            chunks: Iterator[store.ChunkRow] = repeats.mark(split_chunks(texts, settings.chunk_size, settings.chunk_max_bytes))
            if lineage:
                origins = lineage[0][1]
                chunks = ((*chunk, origins[chunk[1] : chunk[1] + chunk[3]], _ancestors(lineage, chunk[1], chunk[3])) for chunk in chunks)
            count = store.create_chunks(scope, message.job_id, chunks, phase, settings.chunk_window)
    except errors.Gone:
        # The payload outlived its retention before the job ran, so no item of it can ever run. The
        # job ends FAILED here; raising instead would fail every delivery until the message was
        # dead-lettered, and the reconciler would republish the still-PENDING job, for ever.
        audit = _job_audit(job, "bulk_job.failed", {"reason": "payload_expired"}, "failed")
        if store.fail_pending(scope, message.job_id, "payload_expired", audit, end_notice(scope)):
            log.error("dispatch: the job's payload is gone; job failed", extra={"job_id": message.job_id})
            notify_end(scope, message.job_id)
        return
    window = settings.chunk_window
    if repeats.serial:
        # Chunks run side by side; when two may name one product, they run one after the other
        # instead, so that the product's items apply in payload order.
        window = 1
        store.unpublish(scope, message.job_id, range(1, min(count, settings.chunk_window)))
    if not store.start_processing(scope, message.job_id, total_items=job["item_count"], chunk_count=count, phase=phase, window=window):
        return
    publish_chunks(scope, message.job_id, range(min(count, window)))
    log.info("dispatched", extra={"job_id": message.job_id, "chunks": count, "items": job["item_count"]})


def retried_indexes(scope: Scope, job: dict[str, Any]) -> tuple[dict[str, Any], list[int]] | None:
    """The job a retry job retries, and the retry's items as the items of it that `rerun_indexes`
    names, in payload order: the index each had there. None for any other job, or when the two no
    longer line up."""
    retried = job.get("retry_of")
    original = store.get(scope, retried, ("id", "status", "committed", "item_count", "chunk_count", "retry_of")) if retried else None
    if retried is None or original is None:
        return None
    indexes = rerun_indexes(scope, original)
    if len(indexes) != job["item_count"]:
        log.warning("dispatch: the retried job's failed items do not match the retry's", extra={"job_id": job["id"], "retry_of": retried})
        return None
    return original, indexes


# How far up a chain of cancelled retries a retry resolves failures (each link is one retry job).
MAX_LINEAGE = 100


def retried_lineage(scope: Scope, job: dict[str, Any]) -> list[tuple[str, list[int]]]:
    """For a retry job: the job it retries and the index each of its items had there
    (`retried_indexes`); then, while that job was CANCELLED, the job that one retries and each item's
    index there, and so on. A cancelled retry never ran the items it did not reach, so their failures
    in the job before it are still open, and only this retry can resolve them (an item without an
    identifier has nothing else that would). Empty for any other job, or from a link that no longer
    lines up."""
    chain: list[tuple[str, list[int]]] = []
    current, mapping = job, None
    while len(chain) < MAX_LINEAGE:
        link = retried_indexes(scope, current)
        if link is None:
            break
        parent, indexes = link
        mapping = indexes if mapping is None else [indexes[i] for i in mapping]
        chain.append((parent["id"], mapping))
        if parent["status"] != JobStatus.CANCELLED:
            break
        current = parent
    return chain


def _ancestors(lineage: list[tuple[str, list[int]]], first: int, count: int) -> list[dict[str, Any]]:
    """A chunk's share of the lineage beyond the job it retries, as stored with its items."""
    return [{"job_id": job_id, "origins": origins[first : first + count]} for job_id, origins in lineage[1:]]


def superseding(apply_item: catalog.ItemFn, lineage: list[tuple[str, list[int]]], first_index: int) -> catalog.ItemFn:
    """`apply_item` for a chunk of a retry job: each item also resolves the failure it had in the
    job retried, and in each job before it up a chain of cancelled retries (`lineage`: each job and
    the item's index there, by position in the chunk; engine.supersede_failure)."""
    count = len(lineage[0][1])

    def failures_of(index: int) -> list[str]:
        return [engine.derived_id(job_id, origins[index - first_index], "failure") for job_id, origins in lineage]

    def apply(view: engine.CatalogView, index: int, raw: Any) -> dict[str, Any]:
        if any(failure not in view.issues for failure in failures_of(index)):
            # The next items' failures in one read, not one read per item.
            view.prefetch_issues(f for i in range(index, min(index + catalog.PREFETCH_MAX, first_index + count)) for f in failures_of(i))
        out = apply_item(view, index, raw)
        for failure in failures_of(index):
            engine.supersede_failure(view, failure)
        return out

    return apply


@contextlib.contextmanager
def payload_stream(job: dict[str, Any]) -> Iterator[jsonstream.TextStream]:
    """The job's stored payload as a text stream, read a piece at a time: 410 `payload_expired`
    once it is past its retention."""
    if "payload_json" in job:
        yield io.StringIO(job["payload_json"])
        return
    try:
        with blobs.open_text(job["payload_object"]) as stream:
            yield stream
    except gexc.NotFound as exc:  # the object is first fetched when the stream is read
        raise _payload_expired() from exc


@contextlib.contextmanager
def payload_items(job: dict[str, Any]) -> Iterator[Iterator[str]]:
    """The text of each item of the job's payload, read from the stored array (or the stored
    envelope's ProductsToImport) a piece at a time: a 32 MB payload is never whole in memory (see
    common/jsonstream.py)."""
    path = product_import.ENVELOPE_ITEMS if job.get("payload_kind") == "ProductImportData" else ()
    with payload_stream(job) as stream:
        yield jsonstream.array_items(stream, path=path)


# The largest envelope (a ProductImportData payload but its products), in UTF-8 bytes, a job keeps beside its payload.
ENVELOPE_KEPT_MAX = 16_384


def envelope_around(job: dict[str, Any]) -> dict[str, Any]:
    """A ProductImportData job's envelope as it was stored, its products left out (None holds their
    place). The job's options (`import_options`) are not the members as they were sent (a
    `vocabularyId` left out, a `whatIf: false` sent, `ProductReferenceProperty`, their order): a job
    keeps those as `import_envelope` and they are read from there, so its retry outlives the payload.
    A job stored before that field (or with a freak envelope over ENVELOPE_KEPT_MAX) has them only
    in its payload, read a product at a time: 410 `payload_expired` once that is gone."""
    if job.get("import_envelope") is not None:
        return loads_strict(job["import_envelope"])  # type: ignore[no-any-return]
    with payload_stream(job) as stream:
        return jsonstream.object_around(stream, product_import.ENVELOPE_ITEMS)


def _context(job: dict[str, Any]) -> engine.JobContext:
    return engine.JobContext(
        job_id=job["id"],
        job_type=job["job_type"],
        org_id=job["org_id"],
        tenant_id=job["tenant_id"],
        actor_email=job.get("actor_email", ""),
        user_id=job.get("created_by") or "",
        ip_address=job.get("ip_address", ""),
        now=utcnow(),
        quality_threshold=get_settings().quality_threshold,
    )


def _item_functions(
    job: dict[str, Any], named_before: Iterable[int], import_options: syndigo.ImportOptions | None
) -> tuple[catalog.ItemFn, catalog.PrefetchFn, str]:
    """How this job's items are applied, and what a step commits (see catalog.ALL/FAILURES/NOTHING).
    `named_before`: the payload indexes of the chunk's items whose product an earlier chunk names too;
    `import_options`: a ProductImportData job's (`_import_options`), None for any other job."""
    options = job.get("import_options")
    if options is None:
        job_type = job["job_type"]
        return (
            engine.apply_plain_item,
            lambda view, batch: engine.plain_prefetch(view, job_type, batch),
            catalog.ALL,
        )
    assert import_options is not None, "a ProductImportData job's options, read once a delivery by the caller"
    mode = catalog.NOTHING if options["what_if"] else catalog.FAILURES if job.get("phase") == "validate" else catalog.ALL
    # In a pass that commits nothing, the earlier chunk's products are not in the store (see apply_named_before).
    marked = set(named_before) if mode != catalog.ALL else set()

    def apply(view: engine.CatalogView, index: int, raw: Any) -> dict[str, Any]:
        if index in marked:
            return syndigo.apply_named_before(view, index, raw, import_options)
        return syndigo.apply_syndigo_item(view, index, raw, import_options)

    # A pass that commits no product stores results naming none it would create: ErrorMode Fail's
    # validation results are the job's answer when it fails, read a page at a time.
    return catalog.naming_no_unborn_product(apply) if mode != catalog.ALL else apply, product_import.prefetcher(import_options), mode


def _chunk_functions(
    job: dict[str, Any], stored: dict[str, Any], import_options: syndigo.ImportOptions | None
) -> tuple[catalog.ItemFn, catalog.PrefetchFn, str]:
    """`_item_functions` for a chunk's stored items (`store.chunk_items`); a retry job's items also
    resolve their failures up its lineage (`superseding`) when they commit."""
    named_before = [stored["first_index"] + at for at in stored.get("named_before", [])]
    apply_item, prefetch, mode = _item_functions(job, named_before, import_options)
    if stored.get("origins") and mode == catalog.ALL:
        lineage = [(job["retry_of"], stored["origins"]), *((a["job_id"], a["origins"]) for a in stored.get("ancestors", []))]
        apply_item = superseding(apply_item, lineage, stored["first_index"])
    return apply_item, prefetch, mode


def _import_options(scope: Scope, job: dict[str, Any]) -> syndigo.ImportOptions:
    """A ProductImportData job's import options, from the ones stored on the job, under the vocabulary
    as it was when the job was created: its snapshot, one read (as the live vocabulary was read, once
    a call). A job stored before jobs kept one reads the tenant's vocabulary as it is now."""
    options = job["import_options"]
    if options.get("vocabulary_snapshot"):
        vocabulary = store.vocabulary_snapshot(scope, job["id"])
        if vocabulary is None:  # stored in the job's own commit: never, short of a hand-made deletion
            raise errors.Transient("the job's vocabulary snapshot is not readable")
    else:
        vocabulary = product_import.load_vocabulary(scope, options["vocabulary_id"])
    request = product_import.parse_request(
        {
            "ProductImportData": {
                "ProductsToImport": [{}],
                "ProductIdentifierProperty": options["identifier_property"],
                "Archived": options["archived"],
            }
        },
        include_missing=options["include_missing"],
    )
    return product_import.options_for(request, vocabulary)


# What a chunk worker reads of its job: not the payload (inline up to 700 KB), which dispatch split.
WORKER_FIELDS = (
    "id",
    "org_id",
    "tenant_id",
    "job_type",
    "status",
    "phase",
    "chunk_count",
    "window",
    "import_options",
    "actor_email",
    "created_by",
    "ip_address",
    "retry_of",
)


def process_chunk(message: ChunkMessage) -> None:
    """Apply one chunk, step by step, then finish the job if this was the last chunk."""
    settings = get_settings()
    scope = Scope(message.org_id, message.tenant_id)
    job = store.get(scope, message.job_id, WORKER_FIELDS)
    if job is None:
        log.warning("chunk: job not found; message acknowledged", extra={"job_id": message.job_id})
        return
    if job["status"] != JobStatus.PROCESSING:
        log.info("chunk: job not processing; skipped", extra={"job_id": message.job_id, "status": job["status"]})
        if job["status"] != JobStatus.PENDING:
            # The job ended (cancelled, or failed before it ran): this chunk never will, and marking it
            # done stops the reconciler republishing it. What it applied before a worker died uncounted
            # is counted first: the reconciler settles only PROCESSING jobs.
            store.count_progress(scope, message.job_id, message.chunk)
            store.skip_chunk(scope, message.job_id, message.chunk)
        return
    progress = store.chunk_progress(scope, message.job_id, message.chunk)
    if progress is None:
        log.warning("chunk: no such chunk; message acknowledged", extra={"job_id": message.job_id, "chunk": message.chunk})
        return
    phase = job.get("phase", "commit")
    if phase == "validate" and progress.get("phase", "commit") == "commit":
        # This delivery read the job before its commit round began, and the chunk is already in it
        # (phases only move forward): it runs as what the job is now.
        job, phase = {**job, "phase": "commit"}, "commit"
    if window_of(job) == 1 and message.chunk and not store.chunk_finished(scope, message.job_id, message.chunk - 1, phase):
        # A job whose chunks must run in order: only the chunk before this one releases it. This is
        # an early message (a duplicate from an earlier round, or a dispatch that died before it
        # narrowed the window); the release will send another.
        log.info("chunk: the chunk before it has not finished; acknowledged", extra={"job_id": message.job_id, "chunk": message.chunk})
        return
    if progress.get("phase", "commit") != phase:
        # The job moved from validating to committing (ErrorMode Fail): this chunk starts over, once.
        progress = store.reset_chunk(scope, message.job_id, message.chunk, phase)
    if not progress["done"]:
        owner = str(uuid.uuid4())
        claim = store.claim_chunk(scope, message.job_id, message.chunk, owner, settings.stale_after_seconds)
        if claim == "busy":
            log.info("chunk: another worker holds it; acknowledged", extra={"job_id": message.job_id, "chunk": message.chunk})
            return
        if claim == "done":
            # Another delivery finished it since this one read it: this one goes on as a redelivery
            # that read it finished does.
            log.info("chunk: finished by another delivery", extra={"job_id": message.job_id, "chunk": message.chunk})
            outcome = "finished"
        else:
            try:
                outcome = _apply_claimed(scope, message, job, phase, progress)
            except Exception:
                # Pub/Sub redelivers the message about a second later: under this delivery's live
                # lease it would be acknowledged having done nothing, and the chunk would wait for
                # the lease to lapse and the reconciler (the export worker's bug L, docs/reliability.md).
                _release_claim(scope, message, owner)
                raise
        if outcome == "cancelled":
            return
    store.count_progress(scope, message.job_id, message.chunk)
    # The chunk is finished, by this delivery or another: every delivery that sees it so releases
    # its successor, and the store lets one of them publish it. So a redelivery after a finisher
    # died before its release publishes the successor at once, and a duplicate never publishes it
    # again (docs/api.md, "Fairness between tenants").
    release_next(scope, job, message.chunk)
    finish_if_done(scope, job)


def _apply_claimed(scope: Scope, message: ChunkMessage, job: dict[str, Any], phase: str, progress: dict[str, Any]) -> str:
    """Apply a chunk this delivery claimed, step by step: "finished" once it is finished (by this
    delivery's step, or by another delivery's: one that took the chunk over after this one's lease
    lapsed, or whose lease lapsed under this one), or "cancelled" when the job was cancelled between
    two steps (what ran is counted, the chunk skipped)."""
    settings = get_settings()
    stored = store.chunk_items(scope, message.job_id, message.chunk)
    if stored is None:
        raise errors.Transient("chunk items are not readable yet")
    items = loads_strict(stored["items_json"])
    # Read once a delivery, even when its phase moves under it: the job's vocabulary never changes.
    import_options = _import_options(scope, job) if job.get("import_options") else None
    apply_item, prefetch, mode = _chunk_functions(job, stored, import_options)
    isolate = 0  # steps left to take one item at a time, after the store refused a whole step
    while not progress["done"]:
        try:
            progress = catalog.apply_chunk_step(
                scope,
                message.job_id,
                message.chunk,
                items,
                stored["first_index"],
                lambda: _context(job),
                apply_item,
                prefetch,
                settings.stale_after_seconds,
                mode,
                1 if isolate else None,
                phase,
            )
        except catalog.PhaseMoved as moved:
            # The commit round reset the chunk after this delivery read it validating: it commits
            # the chunk, as a delivery of the round would (which found it claimed, and went).
            log.info("chunk: its commit round began under this delivery", extra={"job_id": message.job_id, "chunk": message.chunk})
            phase = moved.phase
            apply_item, prefetch, mode = _chunk_functions({**job, "phase": phase}, stored, import_options)
            continue
        except catalog.StepRefused as refused:
            log.warning("chunk step refused by the store; isolating its items", extra={"job_id": message.job_id, "error": str(refused)})
            isolate = catalog.STEP_WRITES  # at least as many items as the refused step held
            continue
        isolate = max(isolate - 1, 0)
        if not progress["done"] and store.status(scope, message.job_id) == JobStatus.CANCELLED:
            log.info("chunk: job cancelled; stopped between steps", extra={"job_id": message.job_id, "chunk": message.chunk})
            store.count_progress(scope, message.job_id, message.chunk)
            store.skip_chunk(scope, message.job_id, message.chunk)
            return "cancelled"
    return "finished"


def _release_claim(scope: Scope, message: ChunkMessage, owner: str) -> None:
    """Give the chunk back before raising for a redelivery, as `exports._release` gives an export
    back. Safe whatever the error: exactly-once lives in the step transaction, not in the lease (the
    redelivery's step reads the progress this delivery committed, or not), and only this delivery's
    own claim is cleared, in a transaction. If the release fails too, the lease lapses and the
    reconciler republishes the chunk, as before."""
    try:
        store.release_chunk(scope, message.job_id, message.chunk, owner)
    except (gexc.GoogleAPICallError, ValueError) as exc:  # ValueError: a transaction out of attempts
        log.warning(
            "chunk claim not released; the reconciler will", extra={"job_id": message.job_id, "chunk": message.chunk, "error": str(exc)[:200]}
        )


def publish_chunks(scope: Scope, job_id: str, chunks: Iterable[int]) -> int:
    return publish_chunk_messages([ChunkMessage(job_id=job_id, org_id=scope.org_id, tenant_id=scope.tenant_id, chunk=n) for n in chunks])


def publish_chunk_messages(messages: Iterable[ChunkMessage]) -> int:
    """Publish each chunk message to its chunk's lane (Settings.chunk_lanes); returns how many."""
    settings = get_settings()
    by_topic: dict[str, list[ChunkMessage]] = {}
    for message in messages:
        by_topic.setdefault(settings.chunk_topic(message.chunk), []).append(message)
    return sum(queue.publish(topic, batch) for topic, batch in by_topic.items())


def release_next(scope: Scope, job: dict[str, Any], n: int) -> int:
    """Publish the chunk that enters the job's window as chunk `n`, finished, leaves it (see
    Settings.chunk_window): chunk n + window, so a job never has more than `window` chunk messages
    queued, without a query. Every delivery that sees chunk `n` finished calls this; the store marks
    the successor published once in the round chunk `n` finished in (`store.release_after`: one
    read, and one conditional write the first time), and only the caller that marked it publishes
    it. Returns how many it published.

    A mark that fails raises, for Pub/Sub to redeliver chunk `n`, whose redelivery marks it. A
    publish that fails after the mark is left to the reconciler (`_publish_marked`)."""
    successor = n + window_of(job)
    if successor >= job.get("chunk_count", 0) or not store.release_after(scope, job["id"], n, successor):
        return 0
    return _publish_marked(scope, job["id"], [successor])


def release(scope: Scope, job_id: str, chunks: list[int], phase: str) -> int:
    """Publish chunks that enter the job's window in `phase`'s round, each only if this caller is
    the one that marks it published (`store.mark_published`): the reconciler's restart of a window
    that ran empty never publishes a chunk a worker has just released."""
    return _publish_marked(scope, job_id, [n for n in chunks if store.mark_published(scope, job_id, n, phase)])


def _publish_marked(scope: Scope, job_id: str, chunks: list[int]) -> int:
    """Publish chunks just marked published. Best effort: a message that cannot be sent now (the
    queue is down) leaves a published chunk that goes stale, which the reconciler republishes (in
    ErrorMode Fail's commit round, a chunk still in the validation phase, which it publishes)."""
    try:
        return publish_chunks(scope, job_id, chunks)
    except (errors.Transient, gexc.GoogleAPICallError) as exc:
        log.warning("could not release the next chunk now", extra={"job_id": job_id, "error": str(exc)[:200]})
        return 0


def _job_audit(job: dict[str, Any], action: str, details: dict[str, Any], key: str) -> dict[str, Any]:
    """An audit event of a worker's change to a job, on behalf of who created it; its id derives
    from `key`, so a redelivery writes the same event again, not a second one."""
    return audit_event(
        org_id=job["org_id"],
        tenant_id=job["tenant_id"],
        actor_email=job.get("actor_email", ""),
        ip_address=job.get("ip_address", ""),
        action=action,
        entity_type="bulk_job",
        entity_id=job["id"],
        details={"job_type": job["job_type"], **details},
        event_id=engine.derived_id(job["id"], key),
    )


def finish_if_done(scope: Scope, job: dict[str, Any]) -> str | None:
    # store.finish names the event after the final status.
    status = store.finish(scope, job["id"], _job_audit(job, "bulk_job.finished", {}, "finished"), end_notice(scope))
    if status == "commit":
        # Every chunk validated without a failure: now every chunk commits.
        chunks = job.get("chunk_count") or store.get(scope, job["id"], ["chunk_count"]).get("chunk_count", 0)  # type: ignore[union-attr]
        # The commit round keeps the window too: these open it, each finishing chunk releases the next.
        publish_chunks(scope, job["id"], range(min(chunks, window_of(job))))
        log.info("job validated; committing", extra={"job_id": job["id"]})
        return None
    if status:
        log.info("job finished", extra={"job_id": job["id"], "status": status})
        notify_end(scope, job["id"])
    return status


# What a job's end event says: its summary as the list shows it, less what changes after the end
# (`updated_at`, `retried_by`), so that every attempt and every redelivery sends the same bytes.
END_EVENT_FIELDS = (
    *("job_type", "status", "total_items", "processed_items", "failed_items", "item_count"),
    *("what_if", "retry_of", "error", "created_at", "completed_at"),
)


def end_notice(scope: Scope) -> store.Notice:
    """The `bulk_job.{completed,failed,cancelled}` delivery record of a job as it ends, or None when
    the tenant does not ask for that event. The store writes it in the transaction that ends the job."""

    def build(job: dict[str, Any]) -> dict[str, Any] | None:
        data = {"job_id": job["id"], **{k: v for k, v in summary(job).items() if k in END_EVENT_FIELDS}}
        event_type = f"bulk_job.{job['status'].lower()}"
        return notifications.new_delivery(scope, engine.derived_id(job["id"], "notification"), event_type, data, job_id=job["id"])

    return build


def notify_end(scope: Scope, job_id: str) -> None:
    """Queue the ended job's notification, if one was recorded. A worker that dies first leaves the
    record waiting: the reconciler queues it (`notifications.requeue`)."""
    notifications.enqueue(scope, engine.derived_id(job_id, "notification"))


def reconcile() -> dict[str, int]:
    """Republish what a lost message or a killed worker left behind; finish jobs whose last step was lost.

    Each job, chunk and export is reconciled on its own: one that cannot be touched now (a dead
    worker's transaction still holds its lock) is skipped until the next tick, never the whole tick.
    """
    settings = get_settings()
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_seconds)
    counts = {"jobs_republished": 0, "chunks_republished": 0, "jobs_finished": 0, "skipped": 0}

    def attempt(what: str, work: Callable[[], None]) -> None:
        try:
            work()
        except (gexc.GoogleAPICallError, errors.Transient, ValueError) as exc:
            counts["skipped"] += 1
            log.warning("reconcile: skipped until the next tick", extra={"what": what, "error": str(exc)[:200]})

    def republish_job(job: dict[str, Any]) -> None:
        store.touch_job(Scope(job["org_id"], job["tenant_id"]), job["id"])
        message = JobMessage(job_id=job["id"], org_id=job["org_id"], tenant_id=job["tenant_id"])
        counts["jobs_republished"] += queue.publish(settings.jobs_topic, [message])

    chunk_messages: list[ChunkMessage] = []

    def republish_chunk(chunk: dict[str, Any]) -> None:
        store.touch_chunk(Scope(chunk["org_id"], chunk["tenant_id"]), chunk["job_id"], chunk["n"])
        chunk_messages.append(ChunkMessage(job_id=chunk["job_id"], org_id=chunk["org_id"], tenant_id=chunk["tenant_id"], chunk=chunk["n"]))

    def settle(job: dict[str, Any]) -> None:
        scope = Scope(job["org_id"], job["tenant_id"])
        store.touch_job(scope, job["id"])
        for n in store.uncounted_chunks(scope, job["id"]):
            store.count_progress(scope, job["id"], n)
        if job.get("phase") == "commit" and (job.get("import_options") or {}).get("error_mode") == "Fail":
            # The commit round's messages may have been lost: chunks still in the validate phase wait for one.
            # (The lowest of them, as many as the window holds: each releases the next.)
            chunk_messages.extend(
                ChunkMessage(job_id=job["id"], org_id=scope.org_id, tenant_id=scope.tenant_id, chunk=n)
                for n in sorted(store.chunks_in_phase(scope, job["id"], "validate"))[: window_of(job)]
            )
        if store.chunks_in_flight(scope, job["id"]) == 0:
            # No release is coming (the message of the chunk that should have released the next
            # ones was given up on, or its delivery could not mark them): restart the window.
            unpublished = store.unpublished_chunks(scope, job["id"], window_of(job))
            counts["chunks_republished"] += release(scope, job["id"], unpublished, job.get("phase", "commit"))
        if finish_if_done(scope, job):
            counts["jobs_finished"] += 1

    for job in store.stale_pending(cutoff):
        attempt(f"job {job['id']}", functools.partial(republish_job, job))
    for chunk in store.stale_chunks(cutoff):
        attempt(f"chunk {chunk['job_id']}/{chunk['n']}", functools.partial(republish_chunk, chunk))
    for job in store.stale_processing(cutoff):
        attempt(f"job {job['id']}", functools.partial(settle, job))
    if chunk_messages:
        counts["chunks_republished"] += publish_chunk_messages(chunk_messages)
    from common.services import exports  # exports imports this module's siblings; import late

    counts["exports_republished"] = exports.reconcile(cutoff)
    counts["notifications_queued"] = notifications.requeue(cutoff)
    if any(counts.values()):
        log.info("reconciled", extra=counts)
    return counts
