"""Exports, notification settings and notification deliveries."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints

from common.models.base import OptionalTimestamp, PublicModel, Record, Timestamp


class ExportStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ExportMessage(Record):
    export_id: str
    org_id: str
    tenant_id: str


class ExportCheckpoint(Record):
    """How far an export's file is written: stored on its record (`checkpoint`) each time a segment
    is whole, in a transaction that checks the claim's lease owner, and removed by the write that
    finishes the export (`store.exports.finish_export`). A new claim resumes after
    `last_product_id` and composes `segments`, in order, into the file (`services.exports`).

    The counts are running totals over every product read up to `last_product_id`; the record's own
    `product_count`, `excluded_count` and `excluded_product_ids` stay null (empty) until COMPLETED."""

    # The claim that committed this checkpoint: claims after it that commit none made no progress.
    claim: int = 0
    # Segment objects in file order. A segment is named by its claim, so no other claim writes it.
    segments: list[str] = Field(default_factory=list)
    # The document id of the last product the segments cover, written or excluded (stream order).
    last_product_id: str | None = None
    product_count: int = 0
    excluded_count: int = 0
    excluded_product_ids: list[str] = Field(default_factory=list)


class ExportPublic(PublicModel):
    id: str
    org_id: str
    tenant_id: str
    status: ExportStatus
    object: str | None = None
    format: str = "jsonl"
    product_count: int | None = None
    excluded_count: int | None = None
    excluded_product_ids: list[str] = Field(default_factory=list)
    error: str | None = None
    created_by: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: OptionalTimestamp = None
    completed_at: OptionalTimestamp = None


Email = Annotated[StrictStr, StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Url = Annotated[StrictStr, StringConstraints(max_length=2048)]


EventType = Literal["export.completed", "export.failed", "bulk_job.completed", "bulk_job.failed", "bulk_job.cancelled"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
# What a tenant hears of when its settings name no `events`: the seed's promise, an export's end.
# Bulk-job events are opt-in, so a receiver written for exports never meets a type it did not ask for.
DEFAULT_EVENTS: tuple[EventType, ...] = ("export.completed", "export.failed")


class NotificationSettingsIn(BaseModel):
    """PUT /notification-settings: how this tenant hears that an export is ready, or a bulk job ended."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["webhook", "email"]
    webhook_url: Url | None = None
    email: Email | None = None
    events: list[EventType] = Field(default_factory=lambda: list(DEFAULT_EVENTS), max_length=len(EVENT_TYPES) * 2)


class NotificationSettingsPublic(PublicModel):
    channel: str | None = None
    webhook_url: str | None = None
    email: str | None = None
    events: list[EventType] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    has_signing_secret: bool = False
    updated_at: OptionalTimestamp = None


class NotificationSettingsUpdated(NotificationSettingsPublic):
    """PUT /notification-settings: the settings, and a new webhook URL's signing secret, shown once."""

    signing_secret: str | None = None


class SigningSecretRotated(PublicModel):
    """POST /notification-settings/rotate-secret: the new secret, and when the old one stops signing."""

    signing_secret: str
    previous_secret_expires_at: str


class ExportQueued(PublicModel):
    """POST /export: the seed's 202 body, plus the id to follow the export by."""

    status: Literal["success"]
    message: str
    export_id: str


class DeliveryTask(Record):
    """The Cloud Tasks body for deliver_notification: a pointer to the delivery record."""

    org_id: str
    tenant_id: str
    event_id: str


class DeliveryPublic(PublicModel):
    id: str
    event_id: str
    type: str
    channel: str
    export_id: str | None = None
    job_id: str | None = None
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: OptionalTimestamp = None
    next_retry_at: OptionalTimestamp = None
    created_at: Timestamp
    updated_at: Timestamp
