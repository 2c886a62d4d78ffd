"""Bulk jobs: the request, the stored record, the public shapes, and the Pub/Sub messages."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from common.models.base import OptionalTimestamp, PublicModel, Record, Timestamp


class JobType(StrEnum):
    BULK_IMPORT = "BULK_IMPORT"
    BULK_UPDATE = "BULK_UPDATE"
    BULK_DELETE = "BULK_DELETE"


class JobStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}


class JobSummary(PublicModel):
    """One job as the list endpoint shows it (the seed's list example: no payload_json)."""

    id: str
    org_id: str
    tenant_id: str
    job_type: JobType
    status: JobStatus
    total_items: int | None = None
    processed_items: int | None = None
    failed_items: int | None = None
    created_by: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: OptionalTimestamp = None
    completed_at: OptionalTimestamp = None
    # The job this one retries the failed items of, and the job that retried this one.
    retry_of: str | None = None
    retried_by: str | None = None


class JobPublic(JobSummary):
    """One job with its payload, as create and get return it (`payload_json` is null only when a
    deployment's retention deleted a large payload, or the caller asked for the job without it)."""

    payload_json: str | None


class JobMessage(Record):
    """Published to the jobs topic: a pointer, never the payload."""

    job_id: str
    org_id: str
    tenant_id: str


class ChunkMessage(Record):
    """Published to the chunks topic: which chunk of which job to apply."""

    job_id: str
    org_id: str
    tenant_id: str
    chunk: int = Field(ge=0)


class ItemError(Record):
    code: str
    field: str | None = None
    message: str


class ItemResult(PublicModel):
    index: int
    identifier: str | None = None
    product_id: str | None = None
    result: str
    errors: list[ItemError] = Field(default_factory=list)

