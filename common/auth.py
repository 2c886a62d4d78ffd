"""Who is calling, for which org and tenant, and what they may do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import errors
from common.config import get_settings
from common.http import Request, is_safe_id
from common.models.base import utcnow
from common.store import tokens
from common.store.paths import Scope

ROLES = ("viewer", "editor", "admin")
SCOPE_ENVIRON_KEY = "synq.scope"
# The request's principal, once its token was accepted: the hooks before the handler (the
# body check, Idempotency-Key) and the handler each ask, and the token is read once.
PRINCIPAL_ENVIRON_KEY = "synq.principal"


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str
    role: str
    scope: Scope
    ip_address: str

    def require(self, role: str) -> None:
        if ROLES.index(self.role) < ROLES.index(role):
            raise errors.Forbidden(f"This action needs the {role} role; the token has {self.role}.")


def _bearer(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthorized("Send 'Authorization: Bearer <token>'.")
    return token.strip()


def _scope_header(request: Request, name: str) -> str:
    value = request.headers.get(name)
    if not value:
        raise errors.BadRequest(f"Header {name} is required.", code="missing_header")
    if not is_safe_id(value):
        raise errors.BadRequest(f"Header {name} is not a valid id.", code="invalid_header")
    return value


def authenticate(request: Request) -> Principal:
    """Check the token, then the tenant headers against what the token allows; once per request."""
    known = request.raw.environ.get(PRINCIPAL_ENVIRON_KEY)
    if isinstance(known, Principal):
        return known
    record: dict[str, Any] | None = tokens.get_token(_bearer(request))
    if record is None or record.get("revoked"):
        raise errors.Unauthorized("The token is unknown or revoked.")
    expires_at = record.get("expires_at")
    if expires_at is not None and expires_at <= utcnow():
        raise errors.Unauthorized("The token has expired.")
    org_id = _scope_header(request, "X-Org-ID")
    tenant_id = _scope_header(request, "X-Tenant-ID")
    tenants = record.get("tenant_ids") or []
    if record.get("org_id") != org_id or ("*" not in tenants and tenant_id not in tenants):
        raise errors.Forbidden("The token is not allowed for this org and tenant.")
    principal = Principal(
        user_id=record["user_id"],
        email=record["email"],
        role=record.get("role", "viewer"),
        scope=Scope(org_id, tenant_id),
        ip_address=request.client_ip(get_settings().trusted_proxies),
    )
    # For the request's log line (common.api.log_request): only ids a token was accepted for.
    request.raw.environ[SCOPE_ENVIRON_KEY] = principal.scope
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        principal.require("editor")
    request.raw.environ[PRINCIPAL_ENVIRON_KEY] = principal
    return principal


def audit_by(principal: Principal, action: str, entity_type: str, entity_id: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """An audit event for something the caller did."""
    from common.models.audit import audit_event

    return audit_event(
        org_id=principal.scope.org_id,
        tenant_id=principal.scope.tenant_id,
        actor_email=principal.email,
        ip_address=principal.ip_address,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=details,
    )
