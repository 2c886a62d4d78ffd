"""Catalog exports: queue, stream the tenant's exportable products into one object (written in
checkpointed segments that a new claim resumes, then composed), notify."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import google.auth.exceptions
from google.api_core import exceptions as gexc

from common import errors
from common.auth import Principal
from common.config import get_settings
from common.domain import export_file, webhooks
from common.domain.engine import derived_id
from common.http import is_uuid
from common.logging import get_logger
from common.models.audit import audit_event
from common.models.base import rfc3339, utcnow
from common.models.export import ExportCheckpoint, ExportMessage, ExportPublic, ExportStatus
from common.models.product import ProductPublic
from common.services import notifications
from common.store import blobs, queue
from common.store import exports as store
from common.store.paths import Scope

log = get_logger("synq.exports")

CONTENT_TYPE = "application/x-ndjson"
QUEUED_MESSAGE = "Export job queued. You will be notified when the file is ready in Cloud Storage."
# The failure of an export whose last claims all ended without moving it on (Settings.export_max_claims).
TOO_MANY_ATTEMPTS = "too_many_attempts"
RETRYABLE = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.DeadlineExceeded, gexc.BadGateway)


def _stem(scope: Scope, export_id: str) -> str:
    """What every object of the export is named after: its file, each claim's, and its segments."""
    return f"exports/{scope.org_id}/{scope.tenant_id}/{export_id}"


def object_name(scope: Scope, export_id: str, claim: int = 1) -> str:
    """The file claim number `claim` writes: `{id}.jsonl` for the first, `{id}.{n}.jsonl` after.

    A name per claim, because a worker that outlived its lease still writes its file after another
    claim finished the export: under a shared name its older file would replace the finished one.
    The export's record names the file of the claim that finished it."""
    suffix = f".{claim}" if claim > 1 else ""
    return f"{_stem(scope, export_id)}{suffix}.jsonl"


def segment_prefix(scope: Scope, export_id: str) -> str:
    """Where the export's segments and compose scratch objects live until it finishes: under
    `exports/`, so the bucket's lifecycle rule deletes whatever the cleanup missed (docs/deploy.md)."""
    return f"{_stem(scope, export_id)}.parts/"


def segment_name(scope: Scope, export_id: str, claim: int, index: int) -> str:
    """Segment `index` of the file (its place in the checkpoint's list) as claim `claim` writes it.

    A name per claim, as for the file: a worker that outlived its lease may still finish the segment
    it was writing, and only then be refused its checkpoint. Under a shared name it would replace
    the segment the claim that took over committed in that place."""
    return f"{segment_prefix(scope, export_id)}{claim}-{index:05d}.jsonl"


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
    """Write the rest of the file from the export's checkpoint, then record it and queue its
    notification; safe to redeliver."""
    settings = get_settings()
    scope = Scope(message.org_id, message.tenant_id)
    export = store.claim_export(scope, message.export_id, settings.stale_after_seconds)
    if export is None:
        current = store.get_export(scope, message.export_id)
        if current is None:
            log.warning("export not found; message acknowledged", extra={"export_id": message.export_id})
        elif current["status"] in (ExportStatus.COMPLETED, ExportStatus.FAILED):
            # Its notification may have been lost between the commit and the enqueue, and its
            # leftovers with it: this copy is a redelivery of the message that worker never acknowledged.
            notifications.enqueue(scope, derived_id(message.export_id, "notification"))
            _delete_leftovers(scope, current)
        return
    idle = export_file.claims_without_progress(export["claims"], checkpoint_of(export))
    if idle >= settings.export_max_claims:
        # The last claims all ended without committing a segment (a worker killed, timed out, or
        # given a storage fault): running it once more would most likely end the same way.
        log.error("export claimed too many times without progress; it fails", extra={"export_id": export["id"], "claims": idle})
        _finish(scope, export, {"status": ExportStatus.FAILED.value, "error": TOO_MANY_ATTEMPTS}, "export.failed")
        return
    try:
        counts = write_file(scope, export)
    except LostClaim:
        log.warning("export taken over by another worker; this one stops", extra={"export_id": export["id"]})
        return
    except HandOver:
        _hand_over(scope, export)
        return
    except RETRYABLE as exc:
        _release(scope, export)
        raise errors.Transient("export storage was unavailable") from exc
    except Exception as exc:
        log.exception("export failed", extra={"export_id": export["id"]})
        _finish(scope, export, {"status": ExportStatus.FAILED.value, "error": type(exc).__name__}, "export.failed")
        return
    _finish(scope, export, {"status": ExportStatus.COMPLETED.value, **counts}, "export.completed")


def checkpoint_of(export: dict[str, Any]) -> ExportCheckpoint:
    """How far the export's file is written: an empty checkpoint before its first segment."""
    return ExportCheckpoint.model_validate(export.get("checkpoint") or {})


def write_file(scope: Scope, export: dict[str, Any]) -> dict[str, Any]:
    """Write the rest of the file in segments, after the export's checkpoint: every exportable
    product, one JSON line each; products with an open ERROR issue are left out and counted. Each
    whole segment is committed in a checkpoint, then the segments are composed into this claim's
    object. Memory holds one product and one upload chunk.

    Raises LostClaim once another worker holds the claim, HandOver once this claim has written for
    `export_claim_seconds` (its checkpoint committed)."""
    settings = get_settings()
    checkpoint = checkpoint_of(export)
    lease = _Lease(scope, export)
    started = time.monotonic()
    products = store.iter_products(scope, start_after=checkpoint.last_product_id)
    while True:
        segment = segment_name(scope, export["id"], export["claims"], len(checkpoint.segments))
        tally = _write_segment(segment, products, lease)
        if tally.read:
            checkpoint = _commit(scope, export, checkpoint, tally, segment if tally.written else None, lease)
        if tally.ended:
            break
        if time.monotonic() - started >= settings.export_claim_seconds:
            raise HandOver(export["id"])
    name = object_name(scope, export["id"], export["claims"])
    try:
        _assemble(scope, export, checkpoint.segments, name)
    except gexc.NotFound:
        # A segment gone: a later claim finished the export and deleted them while this one was
        # overtaken (LostClaim); while this worker still holds the claim, a failure.
        lease.confirm()
        raise
    return {
        "object": name,
        "product_count": checkpoint.product_count,
        "excluded_count": checkpoint.excluded_count,
        "excluded_product_ids": checkpoint.excluded_product_ids,
    }


def _write_segment(name: str, products: Iterator[tuple[str, dict[str, Any]]], lease: _Lease) -> export_file.SegmentTally:
    """Write products into the segment object `name` until the segment's bound or the stream's end.

    The object is whole only once this returns: an exception unwinding the writer cancels the upload,
    and a killed worker's is never finalized, so no object is left under a segment's name. It is
    opened at the segment's first line: a segment of excluded products only makes no object."""
    settings = get_settings()
    tally = export_file.SegmentTally(listed=settings.excluded_ids_listed)
    ends = time.monotonic() + settings.export_segment_seconds
    with contextlib.ExitStack() as opened:
        out = None
        for product_id, product in products:
            excluded = bool((product.get("issue_counts") or {}).get("ERROR"))
            if not excluded:
                if out is None:
                    upload = blobs.bucket().blob(name).open("wb", content_type=CONTENT_TYPE, chunk_size=settings.export_upload_chunk_bytes)
                    out = opened.enter_context(upload)
                out.write(ProductPublic.model_validate(product).model_dump_json().encode() + b"\n")
            tally.add(product_id, excluded=excluded)
            lease.keep()
            if tally.read >= settings.export_segment_products or time.monotonic() >= ends:
                return tally
        tally.ended = True
    return tally


def _commit(
    scope: Scope, export: dict[str, Any], checkpoint: ExportCheckpoint, tally: export_file.SegmentTally, segment: str | None, lease: _Lease
) -> ExportCheckpoint:
    """The checkpoint after a whole segment, committed while this worker holds the claim."""
    settings = get_settings()
    advanced = export_file.advance(checkpoint, tally, segment, export["claims"], settings.excluded_ids_listed)
    if not store.checkpoint_export(scope, export["id"], export["lease_owner"], advanced.model_dump(), settings.stale_after_seconds):
        if segment is not None:
            _delete_quietly(segment)  # this claim's own name: no checkpoint will ever list it
        raise LostClaim(export["id"])
    lease.renewed()
    return advanced


def _assemble(scope: Scope, export: dict[str, Any], segments: list[str], name: str) -> None:
    """Compose the segments, in order, into the object `name`: in rounds through scratch objects
    when there are more than a compose takes. No segment (no exportable product): an empty file."""
    if not segments:
        blobs.put_text(name, "", content_type=CONTENT_TYPE)
        return
    prefix = segment_prefix(scope, export["id"])
    plan = export_file.compose_plan(segments, name, lambda round_, n: f"{prefix}{export['claims']}-compose-{round_}-{n:05d}.jsonl")
    try:
        for steps in plan:
            for target, sources in steps:
                blobs.compose(target, sources, CONTENT_TYPE)
    finally:
        for scratch in export_file.scratch_objects(plan):
            _delete_quietly(scratch)


def _delete_quietly(name: str) -> None:
    """Best effort: what is left behind, the bucket's lifecycle rule deletes (docs/deploy.md)."""
    with contextlib.suppress(*RETRYABLE):
        blobs.delete(name)  # which already takes a missing object as deleted


def _delete_leftovers(scope: Scope, export: dict[str, Any]) -> None:
    """Best effort, once the export is finished: every object its claims made but the file its
    record names (none for a FAILED export). That is its segments and any a lost claim left behind,
    and the file of a claim killed between its compose and its finish, a whole copy of the catalog
    that the next claim, finishing under its own name, would otherwise leave to the lifecycle rule.

    Every such object shares the prefix `{id}.`: `{id}.jsonl`, `{id}.{n}.jsonl`, `{id}.parts/…`."""
    keep = export["object"] if export["status"] == ExportStatus.COMPLETED else None
    try:
        names = blobs.names(f"{_stem(scope, export['id'])}.")
    except RETRYABLE as exc:
        log.warning("export leftovers not deleted; the lifecycle rule will", extra={"export_id": export["id"], "error": str(exc)[:200]})
        return
    with contextlib.suppress(*RETRYABLE):
        blobs.delete_many([name for name in names if name != keep])  # 40 segments: one request


def _release(scope: Scope, export: dict[str, Any]) -> bool:
    """Give the claim back before asking for a redelivery: left RUNNING under a live lease, the
    redelivered message would be acknowledged as a no-op, and the export would wait for the lease
    to lapse and the reconciler. If the release fails too, that is still how it recovers.
    True when released; False when the claim was no longer this worker's, or the release failed."""
    try:
        return store.release_export(scope, export["id"], export["lease_owner"])
    except (gexc.GoogleAPICallError, ValueError) as exc:  # ValueError: a transaction out of attempts
        log.warning("export claim not released; the reconciler will retry", extra={"export_id": export["id"], "error": str(exc)[:200]})
        return False


def _hand_over(scope: Scope, export: dict[str, Any]) -> None:
    """Give the claim back and publish the export again, for a new claim to resume it from the
    checkpoint at once. Left to run into run_export's timeout, the worker would be killed with its
    segment, and the export would wait for its lease to lapse and the reconciler."""
    if not _release(scope, export):
        return  # taken over meanwhile, or still claimed until its lease lapses: the reconciler's
    message = ExportMessage(export_id=export["id"], org_id=scope.org_id, tenant_id=scope.tenant_id)
    try:
        queue.publish(get_settings().exports_topic, [message])
    except errors.Transient:
        log.warning("export handed over but not republished; the reconciler will", extra={"export_id": export["id"]})
        return
    log.info("export handed over to a new claim", extra={"export_id": export["id"], "claims": export["claims"]})


class LostClaim(Exception):
    """Another worker took the export over (this one was too slow to renew its lease): stop quietly."""


class HandOver(Exception):
    """This claim has written for `export_claim_seconds`, its checkpoint committed: a new one goes on."""


class _Lease:
    """The claim's lease, renewed a third of the way through while the worker writes (a checkpoint
    renews it too); LostClaim once another worker holds the claim."""

    def __init__(self, scope: Scope, export: dict[str, Any]) -> None:
        self.scope, self.export_id, self.owner = scope, export["id"], export["lease_owner"]
        self.seconds = get_settings().stale_after_seconds
        self.every = max(self.seconds / 3, 1.0)
        self.at = time.monotonic()

    def keep(self) -> None:
        if time.monotonic() - self.at <= self.every:
            return
        self.confirm()

    def confirm(self) -> None:
        """Renew the lease now; LostClaim if another worker holds the claim."""
        if not store.renew_lease(self.scope, self.export_id, self.owner, self.seconds):
            raise LostClaim(self.export_id)
        self.renewed()

    def renewed(self) -> None:
        self.at = time.monotonic()


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
    delivery = notifications.new_delivery(scope, derived_id(export["id"], "notification"), event_type, data, export_id=export["id"])
    details = {k: data[k] for k in ("product_count", "excluded_count")}
    if changes.get("error"):
        details["error"] = changes["error"]  # why it failed, in the audit trail as on the record
    audit = _audit(scope, export, event_type, details, derived_id(export["id"], "finished"))
    if not store.finish_export(scope, export["id"], export["lease_owner"], changes, delivery, audit):
        log.warning("export finished by another worker; this one leaves it", extra={"export_id": export["id"]})
        if changes.get("object"):
            _delete_quietly(changes["object"])  # this claim's file, which no record names
        return
    if delivery is not None:
        notifications.enqueue(scope, delivery["id"])
    log.info("export finished", extra={"export_id": export["id"], "status": final["status"], "products": final.get("product_count")})
    _delete_leftovers(scope, final)  # finished: no claim composes its segments any more


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
