"""Firestore adapter for exports, tenant notification settings and notification deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from google.cloud import firestore

from common.clients import firestore_client
from common.models.base import utcnow
from common.models.export import ExportStatus
from common.store import pages
from common.store.paths import Scope, coll, data, existing, read, rows, tenant_ref


def create_export(scope: Scope, export: dict[str, Any], audit: dict[str, Any]) -> None:
    batch = firestore_client().batch()
    batch.create(coll(scope, "exports").document(export["id"]), export)
    batch.create(coll(scope, "audit_events").document(audit["id"]), audit)
    batch.commit()


def get_export(scope: Scope, export_id: str) -> dict[str, Any] | None:
    snap = read(coll(scope, "exports").document(export_id))
    return existing(snap)


def claim_export(scope: Scope, export_id: str, lease_seconds: float) -> dict[str, Any] | None:
    """QUEUED (or RUNNING with a lapsed lease, its worker died) → RUNNING; None when not ours to run.
    The export's `checkpoint`, if any, comes with it: the new claim resumes from there."""
    db = firestore_client()
    ref = coll(scope, "exports").document(export_id)

    @firestore.transactional
    def claim(tx: firestore.Transaction) -> dict[str, Any] | None:
        snap = read(ref, transaction=tx)
        if not snap.exists:
            return None
        export = data(snap)
        now = utcnow()
        lapsed = export["status"] == ExportStatus.RUNNING and export.get("lease_until") and export["lease_until"] < now
        if export["status"] != ExportStatus.QUEUED and not lapsed:
            return None
        changes = {
            "status": ExportStatus.RUNNING.value,
            # Numbers the claims, so each names a file and segments of its own
            # (`services.exports.object_name`, `segment_name`), and counts the claims since the
            # checkpoint last moved (`domain.export_file.claims_without_progress`).
            "claims": int(export.get("claims") or 0) + 1,
            "started_at": now,
            "updated_at": now,
            "lease_until": now + timedelta(seconds=lease_seconds),
            # Who holds the claim: only that worker may finish the export.
            "lease_owner": str(uuid.uuid4()),
        }
        tx.update(ref, changes)
        return {**export, **changes}

    return claim(db.transaction())  # type: ignore[no-any-return]


def renew_lease(scope: Scope, export_id: str, owner: str, lease_seconds: float, checkpoint: dict[str, Any] | None = None) -> bool:
    """Extend the claim while `owner` still holds it, recording `checkpoint` (how far the file is
    written, `models.export.ExportCheckpoint`) if given; False when another worker took it over,
    whose segments the checkpoint must not name."""
    db = firestore_client()
    ref = coll(scope, "exports").document(export_id)

    @firestore.transactional
    def renew(tx: firestore.Transaction) -> bool:
        export = data(read(ref, transaction=tx))
        if export.get("lease_owner") != owner or export.get("status") != ExportStatus.RUNNING:
            return False
        now = utcnow()
        changes: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now}
        if checkpoint is not None:
            changes["checkpoint"] = checkpoint
        tx.update(ref, changes)
        return True

    return bool(renew(db.transaction()))


def checkpoint_export(scope: Scope, export_id: str, owner: str, checkpoint: dict[str, Any], lease_seconds: float) -> bool:
    """Record how far the file is written and extend the lease, while `owner` holds the claim."""
    return renew_lease(scope, export_id, owner, lease_seconds, checkpoint)


def release_export(scope: Scope, export_id: str, owner: str) -> bool:
    """RUNNING → QUEUED, lease cleared, while `owner` still holds the claim: a worker that met a
    storage fault gives the export back, so the message's redelivery claims it at once instead of
    finding it under a live lease. False when the claim is no longer this worker's."""
    db = firestore_client()
    ref = coll(scope, "exports").document(export_id)

    @firestore.transactional
    def release(tx: firestore.Transaction) -> bool:
        export = data(read(ref, transaction=tx))
        if export.get("lease_owner") != owner or export.get("status") != ExportStatus.RUNNING:
            return False
        tx.update(ref, {"status": ExportStatus.QUEUED.value, "lease_until": None, "lease_owner": None, "updated_at": utcnow()})
        return True

    return bool(release(db.transaction()))


def finish_export(scope: Scope, export_id: str, owner: str, changes: dict[str, Any], delivery: dict[str, Any] | None, audit: dict[str, Any]) -> bool:
    """The export's final state, its delivery record and its audit event, in one transaction, only
    while `owner` still holds the claim: a worker that outlived its lease finishes nothing.

    The `checkpoint` goes in the same write: it names segments that are deleted once the export is
    finished, and its counts are the record's own from then on."""
    db = firestore_client()
    ref = coll(scope, "exports").document(export_id)

    @firestore.transactional
    def finish(tx: firestore.Transaction) -> bool:
        export = data(read(ref, transaction=tx))
        if export.get("lease_owner") != owner:
            return False
        if export.get("status") != ExportStatus.RUNNING:
            # Finished by this very claim: a commit whose answer was lost, run again by the client.
            # Refusing it would have the worker delete the file the record now names.
            return export.get("status") in (ExportStatus.COMPLETED, ExportStatus.FAILED)
        tx.update(ref, {**changes, "checkpoint": firestore.DELETE_FIELD})
        if delivery is not None:
            tx.create(coll(scope, "notification_deliveries", db).document(delivery["id"]), delivery)
        tx.set(coll(scope, "audit_events", db).document(audit["id"]), audit)
        return True

    return bool(finish(db.transaction()))


def stale_exports(cutoff: Any, limit: int = 100) -> list[dict[str, Any]]:
    query = (
        firestore_client()
        .collection_group("exports")
        .where(filter=firestore.FieldFilter("status", "in", [ExportStatus.QUEUED.value, ExportStatus.RUNNING.value]))
        .where(filter=firestore.FieldFilter("updated_at", "<", cutoff))
        .limit(limit)
    )
    return [fields for _, fields in rows(query)]


def touch_export(scope: Scope, export_id: str) -> None:
    coll(scope, "exports").document(export_id).update({"updated_at": utcnow()})


def iter_products(scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every product of the tenant in document-id order, after the document `start_after` if given,
    as (document id, fields): one query streamed a document at a time.

    One stream rather than pages: `paths.rows` resumes a stream broken by a retryable error after
    the last document it yielded, and gRPC flow control bounds what is buffered. Pages would also
    cost a query each, which on the emulator scans the collection from its start: 500-document
    pages made a 20,000-product read 2.3x slower. An export's claim resumes the catalog where the
    checkpoint left it with `start_after`; `paths.rows` replaces that cursor with its own on a restart.

    An export that stops early (its lease taken over, handed over, a failure) drops the stream,
    which keeps about 20 KB until the process ends (`paths.read`, measured over 2,000 dropped
    queries): rare enough not to read the rest of the catalog for."""
    query = coll(scope, "products").order_by("__name__")
    if start_after is not None:
        query = query.start_after({"__name__": start_after})  # the client makes the id a reference
    yield from rows(query)


# -- notification settings -------------------------------------------------------------------


def get_settings_doc(scope: Scope) -> dict[str, Any]:
    snap = read(tenant_ref(scope))
    return data(snap).get("notifications", {})


def put_settings_doc(scope: Scope, settings: dict[str, Any], audit: dict[str, Any]) -> None:
    batch = firestore_client().batch()
    batch.set(tenant_ref(scope), {"notifications": settings}, merge=True)
    batch.set(coll(scope, "audit_events").document(audit["id"]), audit)
    batch.commit()


# -- deliveries ---------------------------------------------------------------------------------


def get_delivery(scope: Scope, delivery_id: str) -> dict[str, Any] | None:
    snap = read(coll(scope, "notification_deliveries").document(delivery_id))
    return existing(snap)


def update_delivery(scope: Scope, delivery_id: str, changes: dict[str, Any]) -> None:
    coll(scope, "notification_deliveries").document(delivery_id).update(changes)


def unqueued_deliveries(cutoff: Any, limit: int = 100) -> list[dict[str, Any]]:
    """Deliveries recorded before `cutoff` whose task was never queued (the worker died first)."""
    query = (
        firestore_client()
        .collection_group("notification_deliveries")
        .where(filter=firestore.FieldFilter("awaiting_queue", "==", True))
        .where(filter=firestore.FieldFilter("created_at", "<", cutoff))
        .limit(limit)
    )
    return [fields for _, fields in rows(query)]


def list_deliveries(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    deliveries = coll(scope, "notification_deliveries")
    query = deliveries.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
    return pages.page(query, deliveries, limit=limit, cursor=cursor)
