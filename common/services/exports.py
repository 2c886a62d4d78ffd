"""Catalog exports: queue, stream the tenant's exportable products into one object, notify."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import google.auth.exceptions
from google.api_core import exceptions as gexc

from common import errors
from common.auth import Principal
from common.config import get_settings
from common.domain import webhooks
from common.domain.engine import derived_id
from common.http import is_uuid
from common.logging import get_logger
from common.models.audit import audit_event
from common.models.base import rfc3339, utcnow
from common.models.export import ExportMessage, ExportPublic, ExportStatus
from common.models.product import ProductPublic
from common.services import notifications
from common.store import blobs, queue
from common.store import exports as store
from common.store.paths import Scope

log = get_logger("synq.exports")

CONTENT_TYPE = "application/x-ndjson"
QUEUED_MESSAGE = "Export job queued. You will be notified when the file is ready in Cloud Storage."
# The failure of an export whose claims all ended without finishing it (Settings.export_max_claims).
TOO_MANY_ATTEMPTS = "too_many_attempts"
RETRYABLE = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.DeadlineExceeded, gexc.BadGateway)


def object_name(scope: Scope, export_id: str, claim: int = 1) -> str:
    """The file claim number `claim` writes: `{id}.jsonl` for the first, `{id}.{n}.jsonl` after.

    A name per claim, because a worker that outlived its lease still writes its file after another
    claim finished the export: under a shared name its older file would replace the finished one.
    The export's record names the file of the claim that finished it."""
    suffix = f".{claim}" if claim > 1 else ""
    return f"exports/{scope.org_id}/{scope.tenant_id}/{export_id}{suffix}.jsonl"


def request_export(principal: Principal) -> dict[str, Any]:
    """Record a QUEUED export and publish it; the answer is the seed's 202 body plus `export_id`."""
    scope = principal.scope
    export_id = str(uuid.uuid4())
    now = utcnow()
    export: dict[str, Any] = {
        "id": export_id,
        "org_id": scope.org_id,
        "tenant_id": scope.tenant_id,
        "status": ExportStatus.QUEUED.value,
        "object": object_name(scope, export_id),
        "format": "jsonl",
        "product_count": None,
        "excluded_count": None,
        "excluded_product_ids": [],
        "created_by": principal.user_id,
        "actor_email": principal.email,
        "ip_address": principal.ip_address,
        "created_at": now,
        "updated_at": now,
    }
    audit = _audit(scope, export, "export.created", {}, event_id=str(uuid.uuid4()))
    store.create_export(scope, export, audit)
    try:
        queue.publish(get_settings().exports_topic, [ExportMessage(export_id=export_id, org_id=scope.org_id, tenant_id=scope.tenant_id)])
    except errors.Transient:
        log.warning("export publish failed; the reconciler will retry", extra={"export_id": export_id})
    return {"status": "success", "message": QUEUED_MESSAGE, "export_id": export_id}


def _audit(scope: Scope, export: dict[str, Any], action: str, details: dict[str, Any], event_id: str) -> dict[str, Any]:
    return audit_event(
        org_id=scope.org_id,
        tenant_id=scope.tenant_id,
        actor_email=export.get("actor_email", ""),
        ip_address=export.get("ip_address", ""),
        action=action,
        entity_type="export",
        entity_id=export["id"],
        details=details,
        event_id=event_id,
    )


def get_export(scope: Scope, export_id: str) -> dict[str, Any]:
    export = store.get_export(scope, export_id) if is_uuid(export_id) else None
    if export is None:
        raise errors.NotFound("No export with that id in this tenant.")
    return ExportPublic.model_validate(export).dump()


def download_url(scope: Scope, export_id: str) -> str:
    """A link the webhook receiver can fetch without a token: the download route, HMAC-signed."""
    settings = get_settings()
    path = f"{settings.public_api_url.rstrip('/')}/api/v1/pim/exports/{export_id}/download"
    if not settings.download_signing_key:
        return path
    expires = int(time.time()) + settings.download_url_ttl_seconds
    signature = webhooks.download_signature(settings.download_signing_key, scope.org_id, scope.tenant_id, export_id, expires)
    query = {"org_id": scope.org_id, "tenant_id": scope.tenant_id, "expires": expires, "signature": signature}
    return f"{path}?{urlencode(query)}"


def signed_scope(args: dict[str, str], export_id: str) -> Scope | None:
    """The scope a signed download link grants, or None when the link is absent or not valid."""
    key = get_settings().download_signing_key
    signature = args.get("signature")
    if not key or not signature:
        return None
    try:
        expires = int(args.get("expires", ""))
    except ValueError:
        return None
    org_id, tenant_id = args.get("org_id", ""), args.get("tenant_id", "")
    if not webhooks.download_signature_ok(key, org_id, tenant_id, export_id, expires, signature, time.time()):
        return None
    return Scope(org_id, tenant_id)


def download_location(scope: Scope, export_id: str) -> str:
    """Where the export's file is fetched: a short-lived signed Cloud Storage URL for the download
    route to redirect to. The file never passes through the api function, whose responses Cloud
    Functions caps (32 MB, 10 MB streamed) and whose instance a slow download would hold.

    The object is looked up first, so a file the retention rule deleted is this API's JSON 410, not
    Cloud Storage's XML 404 after the redirect."""
    export = store.get_export(scope, export_id) if is_uuid(export_id) else None
    if export is None:
        raise errors.NotFound("No export with that id in this tenant.")
    if export["status"] != ExportStatus.COMPLETED:
        raise errors.Conflict(f"The export is {export['status']}; its file is not ready.", code="export_not_ready")
    try:
        if not blobs.exists(export["object"]):
            raise errors.Gone(
                "The export's file is no longer kept (export files are deleted after their retention period). "
                "Request a new export with POST /api/v1/pim/export.",
                code="export_file_gone",
            )
        return blobs.signed_url(
            export["object"],
            seconds=get_settings().download_redirect_seconds,
            content_type=CONTENT_TYPE,
            disposition=f'attachment; filename="{export_id}.jsonl"',
        )
    except RETRYABLE as exc:
        raise errors.Transient("A storage service was unavailable; retry.") from exc
    except google.auth.exceptions.TransportError as exc:  # IAM signBlob, or the metadata server, failed
        log.warning("download URL not signed", extra={"export_id": export_id, "error": str(exc)[:200]})
        raise errors.Transient("The download link could not be signed; retry.") from exc


def run_export(message: ExportMessage) -> None:
    """Write the file once, then record it and queue its notification; safe to redeliver."""
    settings = get_settings()
    scope = Scope(message.org_id, message.tenant_id)
    export = store.claim_export(scope, message.export_id, settings.stale_after_seconds)
    if export is None:
        current = store.get_export(scope, message.export_id)
        if current is None:
            log.warning("export not found; message acknowledged", extra={"export_id": message.export_id})
        elif current["status"] in (ExportStatus.COMPLETED, ExportStatus.FAILED):
            # Its notification may have been lost between the commit and the enqueue.
            notifications.enqueue(scope, derived_id(message.export_id, "notification"))
        return
    if export["claims"] > settings.export_max_claims:
        # The claims before it all ended without finishing (a worker killed, timed out, or given a
        # storage fault): running it once more would most likely end the same way.
        log.error("export claimed too many times; it fails", extra={"export_id": export["id"], "claims": export["claims"] - 1})
        _finish(scope, export, {"status": ExportStatus.FAILED.value, "error": TOO_MANY_ATTEMPTS}, "export.failed")
        return
    try:
        counts = write_file(scope, export)
    except LostClaim:
        log.warning("export taken over by another worker; this one stops", extra={"export_id": export["id"]})
        return
    except RETRYABLE as exc:
        _release(scope, export)
        raise errors.Transient("export storage was unavailable") from exc
    except Exception as exc:
        log.exception("export failed", extra={"export_id": export["id"]})
        _finish(scope, export, {"status": ExportStatus.FAILED.value, "error": type(exc).__name__}, "export.failed")
        return
    _finish(scope, export, {"status": ExportStatus.COMPLETED.value, **counts}, "export.completed")


def write_file(scope: Scope, export: dict[str, Any]) -> dict[str, Any]:
    """Stream every exportable product into the object, one JSON line each; products with an open
    ERROR issue are left out and counted. Memory holds one product and one upload chunk."""
    settings = get_settings()
    count, excluded = 0, 0
    excluded_ids: list[str] = []
    bucket = blobs.bucket()
    name = object_name(scope, export["id"], export["claims"])
    # The file is written under a partial name and becomes this claim's object only once it is whole
    # (compose): whatever a failure leaves of an upload (the client cancels it when an exception
    # unwinds the writer; a killed worker's is never finalized) is never under the claim's name.
    partial = bucket.blob(f"{name}.partial")
    renew_every = max(settings.stale_after_seconds / 3, 1.0)
    renewed = time.monotonic()
    with partial.open("wb", content_type=CONTENT_TYPE, chunk_size=settings.export_upload_chunk_bytes) as out:
        for product in store.iter_products(scope):
            if (product.get("issue_counts") or {}).get("ERROR"):
                excluded += 1
                if len(excluded_ids) < settings.excluded_ids_listed:
                    excluded_ids.append(product["id"])
            else:
                out.write(ProductPublic.model_validate(product).model_dump_json().encode() + b"\n")
                count += 1
            if time.monotonic() - renewed > renew_every:
                if not store.renew_lease(scope, export["id"], export["lease_owner"], settings.stale_after_seconds):
                    raise LostClaim(export["id"])
                renewed = time.monotonic()
    final = bucket.blob(name)
    final.content_type = CONTENT_TYPE
    final.compose([partial])
    with contextlib.suppress(gexc.NotFound):
        partial.delete()
    return {"object": name, "product_count": count, "excluded_count": excluded, "excluded_product_ids": excluded_ids}


def _delete_quietly(name: str) -> None:
    """Best effort: what is left behind, the bucket's lifecycle rule deletes (docs/deploy.md)."""
    with contextlib.suppress(gexc.NotFound, *RETRYABLE):
        blobs.bucket().blob(name).delete()


def _release(scope: Scope, export: dict[str, Any]) -> None:
    """Give the claim back before asking for a redelivery: left RUNNING under a live lease, the
    redelivered message would be acknowledged as a no-op, and the export would wait for the lease
    to lapse and the reconciler. If the release fails too, that is still how it recovers."""
    try:
        store.release_export(scope, export["id"], export["lease_owner"])
    except (gexc.GoogleAPICallError, ValueError) as exc:  # ValueError: a transaction out of attempts
        log.warning("export claim not released; the reconciler will retry", extra={"export_id": export["id"], "error": str(exc)[:200]})


class LostClaim(Exception):
    """Another worker took the export over (this one was too slow to renew its lease): stop quietly."""


def _finish(scope: Scope, export: dict[str, Any], changes: dict[str, Any], event_type: str) -> None:
    now = utcnow()
    changes = {**changes, "completed_at": now, "updated_at": now}
    final = {**export, **changes}
    data = {
        "export_id": export["id"],
        "status": final["status"],
        "object": final["object"] if final["status"] == ExportStatus.COMPLETED else None,
        "download_url": download_url(scope, export["id"]) if final["status"] == ExportStatus.COMPLETED else None,
        "product_count": final.get("product_count"),
        "excluded_count": final.get("excluded_count"),
        "created_at": rfc3339(export["created_at"]),
        "completed_at": rfc3339(now),
    }
    delivery = notifications.new_delivery(scope, derived_id(export["id"], "notification"), event_type, data, export["id"])
    details = {k: data[k] for k in ("product_count", "excluded_count")}
    if changes.get("error"):
        details["error"] = changes["error"]  # why it failed, in the audit trail as on the record
    audit = _audit(scope, export, event_type, details, derived_id(export["id"], "finished"))
    if not store.finish_export(scope, export["id"], export["lease_owner"], changes, delivery, audit):
        log.warning("export finished by another worker; this one leaves it", extra={"export_id": export["id"]})
        if changes.get("object"):
            _delete_quietly(changes["object"])  # this claim's file, which no record names
        return
    notifications.enqueue(scope, delivery["id"])
    log.info("export finished", extra={"export_id": export["id"], "status": final["status"], "products": final.get("product_count")})


def reconcile(cutoff: Any) -> int:
    """Republish exports a lost message or a killed worker left QUEUED or RUNNING."""
    republished = 0
    for export in store.stale_exports(cutoff):
        scope = Scope(export["org_id"], export["tenant_id"])
        try:
            store.touch_export(scope, export["id"])
            message = ExportMessage(export_id=export["id"], org_id=scope.org_id, tenant_id=scope.tenant_id)
            republished += queue.publish(get_settings().exports_topic, [message])
        except (gexc.GoogleAPICallError, errors.Transient) as exc:
            log.warning("reconcile: export skipped until the next tick", extra={"export_id": export["id"], "error": str(exc)[:200]})
    return republished
