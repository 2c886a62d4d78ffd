"""One error family: a stable code, an HTTP status, and whether a retry can succeed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SynqError(Exception):
    code = "internal"
    status = 500
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class BadRequest(SynqError):
    code, status = "bad_request", 400


class Unauthorized(SynqError):
    code, status = "unauthorized", 401


class Forbidden(SynqError):
    code, status = "forbidden", 403


class NotFound(SynqError):
    code, status = "not_found", 404


class MethodNotAllowed(SynqError):
    code, status = "method_not_allowed", 405


class Conflict(SynqError):
    code, status = "conflict", 409


class Gone(SynqError):
    code, status = "gone", 410


class PayloadTooLarge(SynqError):
    code, status = "payload_too_large", 413


class UnsupportedMediaType(SynqError):
    code, status = "unsupported_media_type", 415


class Unprocessable(SynqError):
    code, status = "invalid_value", 422


class TooManyRequests(SynqError):
    code, status = "rate_limited", 429


class Transient(SynqError):
    """A storage or network fault that a retry (Pub/Sub redelivery) can get past."""

    code, status, retryable = "unavailable", 503, True


def invalid_body(first: Mapping[str, Any], at: tuple[str, ...] = ()) -> SynqError:
    """A request body's first validation error (pydantic's `errors()[0]`): a missing field is 400
    `missing_field`, as for every route; an unknown one 422 `unknown_field`; any other 422
    `invalid_value`. Each names the field, from the body's top (`at`: where the validated value sits)."""
    where = ".".join(str(p) for p in (*at, *first["loc"]))
    message = f"Field '{where}': {first['msg']}."
    if first["type"] == "missing":
        return BadRequest(message, code="missing_field", details={"field": where})
    return Unprocessable(message, code="unknown_field" if first["type"] == "extra_forbidden" else "invalid_value", details={"field": where})


def unexpected(exc: Exception) -> SynqError:
    """What an exception no code path turned into a SynqError means to a caller. A storage or
    network fault a retry can get past is 503 `unavailable`; anything else is a bug, 500 `internal`.
    Neither says more: the exception's text may name documents, buckets or hosts."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    transient = (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.BadGateway,
        gexc.GatewayTimeout,
        gexc.Aborted,
        gexc.TooManyRequests,
        gexc.RetryError,
        auth_exc.TransportError,
        requests.ConnectionError,
        requests.Timeout,
        ConnectionError,
        TimeoutError,
    )
    if isinstance(exc, transient):
        return Transient("A storage service was unavailable; retry.")
    return SynqError("The request failed on our side; it has been logged.")
