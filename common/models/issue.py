"""Validation issues and audit events as the API shows them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from common.models.base import PublicModel, Timestamp


class IssuePublic(PublicModel):
    id: str
    org_id: str
    tenant_id: str
    product_id: str | None
    issue_type: str
    severity: str
    message: str
    resolved: bool
    job_id: str | None = None
    item_index: int | None = None
    identifier: str | None = None
    created_at: Timestamp
    updated_at: Timestamp


class AuditEventPublic(PublicModel):
    id: str
    org_id: str
    tenant_id: str
    actor_email: str
    action: str
    entity_type: str
    entity_id: str
    details: dict[str, Any] = Field(default_factory=dict)
    ip_address: str
    created_at: Timestamp
