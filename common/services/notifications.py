"""Telling a tenant an export is ready or a bulk job ended: settings, signed webhooks, email, delivery records."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import smtplib
import socket
import ssl
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from google.api_core import exceptions as gexc
from pydantic import ValidationError
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from common import errors
from common.auth import Principal, audit_by
from common.config import get_settings
from common.domain import webhooks
from common.domain.engine import derived_id
from common.http import is_uuid
from common.logging import get_logger
from common.models.base import rfc3339, utcnow
from common.models.export import DEFAULT_EVENTS, EVENT_TYPES, DeliveryPublic, DeliveryTask, NotificationSettingsIn, NotificationSettingsPublic
from common.store import exports as store
from common.store import tasks
from common.store.paths import Scope

log = get_logger("synq.notifications")

ROTATION_OVERLAP = timedelta(hours=24)


def _resolve(host: str) -> list[str]:
    """The host's addresses, each once (getaddrinfo answers one per socket type unless asked for one)."""
    return list(dict.fromkeys(str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)))


def _check_url(url: str, resolve: webhooks.Resolver = _resolve) -> None:
    problem = webhooks.webhook_url_problem(url, allow_private=get_settings().allow_private_webhooks, resolve=resolve)
    if problem:
        raise errors.Unprocessable(f"webhook_url {problem}.", code="invalid_webhook_url", details={"field": "webhook_url"})


def _checked_addresses(url: str) -> list[str]:
    """Check the URL again at send time (DNS may have changed since it was set) and return the
    addresses that check approved, for the connection to use: resolved once, so a name server
    answering differently a moment later (DNS rebinding) cannot move the request elsewhere."""
    resolved: list[str] = []

    def resolve(host: str) -> list[str]:
        resolved[:] = _resolve(host)
        return resolved

    _check_url(url, resolve)
    if not resolved:  # allowed without a look-up (allow_private_webhooks, the local stack)
        with contextlib.suppress(OSError, UnicodeError, ValueError):
            resolved[:] = _resolve(urlsplit(url).hostname or "")
    if not resolved:
        raise errors.Unprocessable("webhook_url has a host name that does not resolve.", code="invalid_webhook_url", details={"field": "webhook_url"})
    return resolved


class _PinnedAdapter(HTTPAdapter):
    """Connects to the given addresses, in turn while a connection cannot be opened, whatever the
    URL's host resolves to by then. The URL's host name is kept where it counts: the Host header,
    TLS's SNI and the certificate's host name check (urllib3's `server_hostname`)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.hostname = ""
        super().__init__()

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        self.hostname = parts.hostname or ""
        for n, address in enumerate(self.addresses):
            ip = ipaddress.ip_address(address.split("%")[0])
            host = f"[{address.replace('%', '%25')}]" if ip.version == 6 else address
            pinned = request.copy()
            pinned.url = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
            pinned.headers["Host"] = parts.netloc
            try:
                return super().send(pinned, *args, **kwargs)
            except requests.ConnectionError as exc:
                # Only a connection refused at once moves on to the next address (nothing was sent),
                # as urllib3 itself tries each address a name resolves to. A connection that timed
                # out has spent the attempt's time: trying more could outlast the function's timeout.
                reason = getattr(exc.args[0], "reason", None) if exc.args else None
                refused = isinstance(reason, NewConnectionError) and not isinstance(exc, requests.ConnectTimeout)
                if not refused or n == len(self.addresses) - 1:
                    raise
        raise AssertionError("no address")  # unreachable: _checked_addresses never returns an empty list

    def build_connection_pool_key_attributes(self, request: PreparedRequest, verify: Any, cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = self.hostname
        return host_params, pool_kwargs


def get_notification_settings(scope: Scope) -> dict[str, Any]:
    doc = store.get_settings_doc(scope)
    return NotificationSettingsPublic.model_validate({**doc, "has_signing_secret": bool(doc.get("secret"))}).dump()


def put_notification_settings(principal: Principal, body: Any) -> dict[str, Any]:
    """Set the channel. A new webhook URL gets a new signing secret, returned this once."""
    principal.require("admin")
    if not isinstance(body, dict):
        raise errors.BadRequest("The body must be a JSON object.", code="invalid_body")
    try:
        wanted = NotificationSettingsIn.model_validate(body)
    except ValidationError as exc:
        raise errors.invalid_body(exc.errors()[0]) from None
    if wanted.channel == "webhook" and not wanted.webhook_url:
        raise errors.BadRequest("channel webhook needs webhook_url.", code="missing_field", details={"field": "webhook_url"})
    if wanted.channel == "email" and not wanted.email:
        raise errors.BadRequest("channel email needs email.", code="missing_field", details={"field": "email"})
    if wanted.webhook_url:
        _check_url(wanted.webhook_url)
    current = store.get_settings_doc(principal.scope)
    now = utcnow()
    doc = {**current, **wanted.model_dump(), "updated_at": now}
    doc["events"] = sorted(set(wanted.events), key=EVENT_TYPES.index)  # each once, in one order
    issued = None
    if wanted.channel != "webhook":
        # A secret signs webhooks only: kept past a switch to email, it would show as
        # `has_signing_secret` and could be rotated while nothing uses it. A webhook set again later
        # gets a new one, shown once.
        doc.update(secret=None, previous_secret=None, previous_expires_at=None)
    elif wanted.webhook_url != current.get("webhook_url") or not current.get("secret"):
        issued = webhooks.new_secret()
        doc.update(secret=issued, previous_secret=None, previous_expires_at=None)
    store.put_settings_doc(
        principal.scope,
        doc,
        audit_by(
            principal,
            "notification_settings.updated",
            "notification_settings",
            principal.scope.tenant_id,
            {"channel": wanted.channel, "events": doc["events"]},
        ),
    )
    out = get_notification_settings(principal.scope)
    if issued:
        out["signing_secret"] = issued
    return out


def rotate_secret(principal: Principal) -> dict[str, Any]:
    """A new signing secret; the old one keeps signing alongside it for 24 h."""
    principal.require("admin")
    current = store.get_settings_doc(principal.scope)
    if not current.get("secret"):
        raise errors.Conflict("No webhook is configured; set one with PUT /notification-settings.", code="no_webhook")
    issued = webhooks.new_secret()
    now = utcnow()
    doc = {**current, "secret": issued, "previous_secret": current["secret"], "previous_expires_at": now + ROTATION_OVERLAP, "updated_at": now}
    store.put_settings_doc(
        principal.scope, doc, audit_by(principal, "notification_settings.secret_rotated", "notification_settings", principal.scope.tenant_id)
    )
    return {"signing_secret": issued, "previous_secret_expires_at": rfc3339(doc["previous_expires_at"])}


def live_secrets(doc: dict[str, Any]) -> list[str]:
    live = [doc["secret"]] if doc.get("secret") else []
    if doc.get("previous_secret") and doc.get("previous_expires_at") and doc["previous_expires_at"] > utcnow():
        live.append(doc["previous_secret"])
    return live


def subscribed(settings_doc: dict[str, Any], event_type: str) -> bool:
    """Whether the tenant's settings ask for this event (settings that name no events: the defaults)."""
    events = settings_doc.get("events")
    return event_type in (DEFAULT_EVENTS if events is None else events)


def new_delivery(
    scope: Scope, delivery_id: str, event_type: str, data: dict[str, Any], *, export_id: str | None = None, job_id: str | None = None
) -> dict[str, Any] | None:
    """The delivery record for one event, or None when the tenant does not ask for this type. Its
    body is fixed here, so every attempt sends the same bytes."""
    settings_doc = store.get_settings_doc(scope)
    if not subscribed(settings_doc, event_type):
        return None
    channel = settings_doc.get("channel") or "none"
    now = utcnow()
    return {
        "id": delivery_id,
        "org_id": scope.org_id,
        "tenant_id": scope.tenant_id,
        "event_id": f"msg_{derived_id(delivery_id, 'event').replace('-', '')}",
        "type": event_type,
        "channel": channel,
        "export_id": export_id,
        "job_id": job_id,
        "body": webhooks.event_body(event_type, data),
        "attempts": 0,
        "redeliveries": 0,
        "last_status_code": None,
        "last_error": None if channel != "none" else "No notification channel is configured for this tenant.",
        "delivered_at": None,
        "next_retry_at": None,
        # Until its task is queued: a record whose worker died before it queued one is found by this.
        "awaiting_queue": channel != "none",
        "created_at": now,
        "updated_at": now,
    }


def enqueue(scope: Scope, delivery_id: str) -> None:
    """Queue the delivery's current series of attempts (a redelivery starts a new one)."""
    delivery = store.get_delivery(scope, delivery_id)
    if delivery is None or delivery["channel"] == "none":
        return
    name = f"{delivery['event_id']}-{int(delivery.get('redeliveries', 0))}"
    tasks.enqueue_delivery(DeliveryTask(org_id=scope.org_id, tenant_id=scope.tenant_id, event_id=delivery_id), name)
    if delivery.get("awaiting_queue"):
        store.update_delivery(scope, delivery_id, {"awaiting_queue": False})


def requeue(cutoff: datetime) -> int:
    """Queue the deliveries recorded before `cutoff` and never queued: the record is written with the
    end it tells of (a job's, an export's), the task only after, by a worker that may die between.
    Each is queued under its own series' task name, so one queued meanwhile is not queued twice in
    the cloud; and `deliver` skips a delivery already delivered."""
    queued = 0
    for delivery in store.unqueued_deliveries(cutoff):
        try:
            enqueue(Scope(delivery["org_id"], delivery["tenant_id"]), delivery["id"])
            queued += 1
        except (gexc.GoogleAPICallError, errors.Transient) as exc:
            log.warning("requeue: delivery skipped until the next tick", extra={"delivery_id": delivery["id"], "error": str(exc)[:200]})
    return queued


def deliver(task: DeliveryTask) -> bool:
    """One attempt. True when delivered (or nothing is left to do); False makes the queue retry."""
    scope = Scope(task.org_id, task.tenant_id)
    delivery = store.get_delivery(scope, task.event_id)
    if delivery is None:
        log.warning("delivery not found; task dropped", extra={"delivery_id": task.event_id})
        return True
    if delivery.get("delivered_at") is not None:
        return True
    settings_doc = store.get_settings_doc(scope)
    channel = settings_doc.get("channel") or delivery["channel"]
    status_code: int | None = None
    try:
        if channel == "webhook":
            status_code = _post_webhook(settings_doc, delivery)
            ok, error = 200 <= status_code < 300, None if 200 <= status_code < 300 else f"receiver answered {status_code}"
        elif channel == "email":
            _send_email(settings_doc, delivery)
            ok, error = True, None
        else:
            ok, error = False, "No notification channel is configured for this tenant."
    except (requests.RequestException, OSError, smtplib.SMTPException, errors.SynqError) as exc:
        ok, error = False, _describe(exc)
    attempts = int(delivery.get("attempts", 0)) + 1
    now = utcnow()
    settings = get_settings()
    backoff = min(settings.tasks_min_backoff_seconds * 2 ** (attempts - 1), settings.tasks_max_backoff_seconds)
    store.update_delivery(
        scope,
        delivery["id"],
        {
            "attempts": attempts,
            "channel": channel,
            "last_status_code": status_code,
            "last_error": error,
            "delivered_at": now if ok else None,
            "next_retry_at": None if ok else now + timedelta(seconds=backoff),
            "updated_at": now,
        },
    )
    log.log(
        logging.INFO if ok else logging.WARNING,
        "notification attempt",
        extra={"delivery_id": delivery["id"], "channel": channel, "ok": ok, "attempt": attempts, "status_code": status_code, "error": error},
    )
    return ok


def _describe(exc: Exception) -> str:
    if isinstance(exc, requests.Timeout):
        return "the receiver did not answer in time"
    if isinstance(exc, errors.SynqError):
        return exc.message
    return f"{type(exc).__name__}: delivery failed"


def _post_webhook(settings_doc: dict[str, Any], delivery: dict[str, Any]) -> int:
    url = settings_doc.get("webhook_url") or ""
    addresses = _checked_addresses(url)
    headers = webhooks.signed_headers(delivery["event_id"], utcnow(), delivery["body"], live_secrets(settings_doc))
    with requests.Session() as session:
        session.mount("http://", _PinnedAdapter(addresses))
        session.mount("https://", _PinnedAdapter(addresses))
        # Only the status counts. The body is never read (stream=True, closed unread): a receiver may
        # answer with any amount, and a 400 MiB answer once took this function past its memory.
        with session.post(
            url, data=delivery["body"].encode(), headers=headers, timeout=get_settings().webhook_timeout_seconds, allow_redirects=False, stream=True
        ) as response:
            return int(response.status_code)


def _send_email(settings_doc: dict[str, Any], delivery: dict[str, Any]) -> None:
    import json

    settings = get_settings()
    event = json.loads(delivery["body"])
    data = event["data"]
    message = EmailMessage()
    message["From"] = settings.smtp_sender
    message["To"] = settings_doc["email"]
    message["Message-ID"] = f"<{delivery['event_id']}@synq>"
    if event["type"].startswith("bulk_job."):
        message["Subject"], text = _job_email(data)
    elif event["type"] == "export.completed":
        message["Subject"] = f"Synq export {data['export_id']} is ready: {data['product_count']} products"
        text = (
            f"Your catalog export {data['export_id']} is ready.\n\n"
            f"Products exported: {data['product_count']}\n"
            f"Products left out because of unresolved ERROR issues: {data['excluded_count']}\n"
            f"File: {data['object']}\n"
            f"Download: {data['download_url']}\n"
        )
    else:
        message["Subject"] = f"Synq export {data['export_id']} failed"
        text = f"Your catalog export {data['export_id']} failed. Request a new one with POST /api/v1/pim/export.\n"
    if text.isascii() and all(len(line) <= 998 for line in text.splitlines()):
        # As written: quoted-printable would fold the download link at 76 characters with "=" and
        # encode its own "=" as "=3D", so a raw copy of it (a log, the local sink's .eml) is broken.
        message.set_content(text, cte="7bit")
    else:
        message.set_content(text)
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.webhook_timeout_seconds) as smtp:
        if settings.smtp_tls:
            # A verifying context: starttls() without one accepts any certificate, and the login
            # below would hand the password to whoever answers. (The local sink runs without TLS,
            # with smtp_tls off.)
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password)
        smtp.send_message(message)


def _job_email(data: dict[str, Any]) -> tuple[str, str]:
    job, status = data["job_id"], data["status"]
    processed, failed, total = data.get("processed_items") or 0, data.get("failed_items") or 0, data.get("total_items")
    if total is None:
        total = data.get("item_count")
    dry = bool(data.get("what_if"))
    subject = f"Synq bulk job {job} {status}: {processed} of {total} items {'would apply (dry run)' if dry else 'applied'}"
    lines = [
        f"Your {data['job_type']} job {job} ended {status} at {data['completed_at']}.",
        *(["It was a dry run (whatIf): nothing was committed."] if dry else []),
        "",
        f"Items: {total}",
        f"{'Would apply' if dry else 'Applied'}: {processed}",
        f"Failed: {failed}",
    ]
    if data.get("error") == "payload_expired":
        # No item ran, so there are no results to read, and a retry has no payload to run.
        lines += ["", "Its payload passed its retention before the job ran, so no item ran. Submit the items again as a new job."]
    else:
        if failed:
            lines += ["", f"Why each failed: GET /api/v1/pim/bulk-jobs/{job}/results?status=failed"]
        if status in ("FAILED", "CANCELLED"):
            lines += [f"Run what it did not apply: POST /api/v1/pim/bulk-jobs/{job}/retry"]
    return subject, "\n".join(lines) + "\n"


def list_deliveries(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    docs, next_cursor = store.list_deliveries(scope, limit=limit, cursor=cursor)
    return [DeliveryPublic.model_validate(d).dump() for d in docs], next_cursor


def redeliver(principal: Principal, delivery_id: str) -> dict[str, Any]:
    """Send an event again (same webhook-id, so a receiver that already has it can tell)."""
    scope = principal.scope
    # Delivery ids are UUIDs (derived_id); any other string is not one, and some (`__x__`) are ids
    # Firestore refuses outright.
    delivery = store.get_delivery(scope, delivery_id) if is_uuid(delivery_id) else None
    if delivery is None:
        raise errors.NotFound("No notification delivery with that id in this tenant.")
    channel = store.get_settings_doc(scope).get("channel")
    if not channel:
        raise errors.Conflict("No notification channel is configured for this tenant.", code="no_channel")
    series = int(delivery.get("redeliveries", 0)) + 1
    changes = {"delivered_at": None, "redeliveries": series, "channel": channel, "updated_at": utcnow()}
    # The new series is recorded before its task is queued: `awaiting_queue` has the reconciler
    # queue it if that fails, instead of leaving the record undelivered with no task behind it.
    store.update_delivery(scope, delivery_id, {**changes, "awaiting_queue": True})
    try:
        enqueue(scope, delivery_id)
    except (gexc.GoogleAPICallError, errors.Transient) as exc:
        # An error here would have the caller redeliver again: two series, sent twice.
        log.warning("redelivery recorded; its queueing is left to the reconciler", extra={"delivery_id": delivery_id, "error": str(exc)[:200]})
    return DeliveryPublic.model_validate({**delivery, **changes}).dump()
