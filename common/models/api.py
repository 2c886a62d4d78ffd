"""Shapes every route shares: the error body (see `common.errors`) and the health answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    # Present for some codes: the offending field, the allowed methods, retry_after (seconds), ...
    details: Any = None


class ErrorBody(BaseModel):
    """`{"error": {"code", "message", "details"?}}`: what `SynqError.body()` returns for every 4xx/5xx."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Health(BaseModel):
    status: str


class OpenAPIDocument(BaseModel):
    """GET /openapi.json: an OpenAPI 3.1 document (only its required top-level fields are named)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
