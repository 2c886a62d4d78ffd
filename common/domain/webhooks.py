"""Notifications as pure functions: event bodies, Standard Webhooks signatures, secrets, URL safety,
and the signed links that let a webhook receiver download an export without an API token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def event_body(event_type: str, data: dict[str, Any]) -> str:
    """The exact bytes every attempt sends (stable key order), so a signature covers the same body."""
    return json.dumps({"type": event_type, "data": data}, separators=(",", ":"), ensure_ascii=False)


def signed_headers(event_id: str, timestamp: datetime, body: str, signing_secrets: Iterable[str]) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (one `v1,…` per live secret).

    During a rotation both the new and the previous secret sign, so a receiver verifying with
    either one accepts the message.
    """
    timestamp = timestamp.astimezone(UTC)  # the library signs the UTC reading of the time
    signatures = [Webhook(secret).sign(event_id, timestamp, body) for secret in signing_secrets]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
    }


Resolver = Callable[[str], list[str]]


def webhook_url_problem(url: str, *, allow_private: bool, resolve: Resolver) -> str | None:
    """Why `url` may not receive webhooks, or None. Private, loopback and link-local targets are
    refused (server-side request forgery) unless the deployment allows them."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        # The local stack allows plain http (its receivers are on localhost): say so there.
        return "must be an absolute http or https URL" if allow_private else "must be an absolute https URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private:
        return None
    if parts.scheme != "https":
        return "must use https"
    try:
        addresses = resolve(parts.hostname)
    except (OSError, UnicodeError, ValueError):
        return "has a host name that does not resolve"
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        # Only globally routable addresses: this also refuses carrier-grade NAT (100.64/10) and the like.
        if not ip.is_global or ip.is_multicast:
            return "points at a private, loopback or link-local address"
    return None


def download_signature(key: str, org_id: str, tenant_id: str, export_id: str, expires: int) -> str:
    message = f"{org_id}\n{tenant_id}\n{export_id}\n{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def download_signature_ok(key: str, org_id: str, tenant_id: str, export_id: str, expires: int, signature: str, now: float) -> bool:
    if expires < now or not signature.isascii():
        return False
    return hmac.compare_digest(download_signature(key, org_id, tenant_id, export_id, expires), signature)
