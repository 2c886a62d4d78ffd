"""Helpers every model shares: time in RFC 3339 UTC and the stored-record base class."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    """`2024-11-15T14:00:00.123Z`: UTC, millisecond precision, `Z` suffix."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str)]
OptionalTimestamp = Annotated[datetime | None, PlainSerializer(rfc3339, return_type=str | None)]


class Record(BaseModel):
    """What the project itself produces and consumes: unknown fields are a bug, so they are refused."""

    model_config = ConfigDict(extra="forbid")


class PublicModel(BaseModel):
    """A response body: built from stored documents, which may carry internal fields it leaves out."""

    model_config = ConfigDict(extra="ignore")

    def dump(self, **kwargs: Any) -> dict[str, Any]:
        return self.model_dump(mode="json", **kwargs)
