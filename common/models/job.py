"""Bulk jobs: the request, the stored record, the public shapes, and the Pub/Sub messages."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictStr

from common.models.base import OptionalTimestamp, PublicModel, Record, Timestamp
from common.models.product import ProductIn, ProductPatch
from common.models.syndigo import ImportRequest


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


class _JobCreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_count: int | None = Field(default=None, ge=0, description="How many items the payload holds; a mismatch is 422.")
    payload_sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-fA-F]{64}$",
        description=(
            "SHA-256 (hex) of the UTF-8 payload_json the API returns: the payload re-encoded by Python's"
            ' json.dumps(payload, separators=(",", ":"), ensure_ascii=False). JSON.stringify(payload) matches it'
            " only for strings, booleans, null, integers within 2^53, numbers with a non-zero fractional part of at"
            " least 0.0001 in magnitude, and no integer-like object keys (Python writes 1e-05, 100.0, 1e+16). A mismatch is 422."
        ),
    )


class ImportJobCreate(_JobCreateBase):
    """Create or update (by `sku`) one product per item."""

    job_type: Literal[JobType.BULK_IMPORT]
    payload: list[ProductIn] | ImportRequest = Field(description="Product objects, or the ProductImportData envelope.")


class UpdateJobCreate(_JobCreateBase):
    """Change the given fields of the product each item names by `id` or `sku`."""

    job_type: Literal[JobType.BULK_UPDATE]
    payload: list[ProductPatch] | ImportRequest = Field(description="Partial products named by id or sku, or the ProductImportData envelope.")


class DeleteJobCreate(_JobCreateBase):
    """Delete the products whose ids the payload lists."""

    job_type: Literal[JobType.BULK_DELETE]
    payload: list[StrictStr] = Field(min_length=1)


class JobCreate(RootModel[Annotated[ImportJobCreate | UpdateJobCreate | DeleteJobCreate, Field(discriminator="job_type")]]):
    """POST /bulk-jobs. The API stores any object (delete: string) items; each item is checked
    against its model when the job runs, and one that fails is reported in the job's results."""


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
    # The payload's item count, known from the start (total_items is null until the job starts, as the seed has it).
    item_count: int | None = None
    created_by: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    started_at: OptionalTimestamp = None
    completed_at: OptionalTimestamp = None
    # The job this one retries the failed items of, and the job that retried this one.
    retry_of: str | None = None
    retried_by: str | None = None
    # A ProductImportData dry run (whatIf): its results say what the import would do; nothing was committed.
    what_if: bool = False
    # Why the job failed as a whole, where no item's result can say: `payload_expired`, its payload
    # passed its retention before the job ran, so no item ran (submit them again as a new job).
    error: str | None = None


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
    retry_of_index: int | None = Field(
        default=None,
        description=(
            "For a job that retries another (its `retry_of`): the `index` this item had in that job, the key its"
            " `corrections` used. Null for a job that retries none."
        ),
    )
    item: Any = Field(
        default=None,
        description=(
            "Only with `include=item` (absent otherwise): the item as it was submitted, any JSON value (a ProductImportData"
            " payload's entry of ProductsToImport; a retry job's item as the retry ran it, corrected or not). The value a"
            " retry's `corrections` replaces."
        ),
    )
