"""Building audit events: one shape for every action on a PIM resource."""

from __future__ import annotations

import uuid
from typing import Any

from common.models.base import utcnow


def audit_event(
    *,
    org_id: str,
    tenant_id: str,
    actor_email: str,
    ip_address: str,
    action: str,
    entity_type: str,
    entity_id: str,
    details: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An immutable audit event; pass `event_id` when a retried step must write the same event."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "org_id": org_id,
        "tenant_id": tenant_id,
        "actor_email": actor_email,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "details": details or {},
        "ip_address": ip_address,
        "created_at": utcnow(),
    }
