"""A small HTTP client for the Synq PIM API on the standard library alone.

It adds the three auth headers, speaks JSON, turns `{"error": {"code", "message"}}` answers into
`ApiError`, retries 429/503 after the server's Retry-After (a bounded number of times), and follows
`X-Next-Cursor` through list endpoints.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import platform
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import IO, Any

from synqctl import __version__

PREFIX = "/api/v1/pim"
ENV_VARS = {"api_url": "SYNQ_API_URL", "token": "SYNQ_TOKEN", "tenant_id": "SYNQ_TENANT_ID", "org_id": "SYNQ_ORG_ID"}
RETRY_STATUSES = frozenset({429, 503})
MAX_PAGE = 200  # the list endpoints' largest `limit`
MAX_RESULTS_PAGE = 1000  # the results endpoint's largest `limit`
Params = Mapping[str, str | int | None]
HEADER_SAFE = re.compile(r"[!-~]+")  # visible ASCII: what a header value can carry whole, nothing to split or inject


class ConfigError(Exception):
    """The connection settings are missing or unusable."""


class ApiError(Exception):
    """An error answer from the API (or no answer at all: status 0), with its stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Config:
    """Where the API is and who is calling; the token never appears in repr()."""

    api_url: str
    token: str = field(repr=False)
    tenant_id: str
    org_id: str

    @classmethod
    def load(cls, overrides: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> Config:
        """Flags first, then SYNQ_* environment variables; raises ConfigError naming what is missing."""
        env = os.environ if environ is None else environ
        values = {name: (overrides.get(name) or env.get(var) or "").strip() for name, var in ENV_VARS.items()}
        missing = [ENV_VARS[name] for name, value in values.items() if not value]
        if missing:
            raise ConfigError(
                f"missing configuration: {', '.join(missing)}. Set the environment variable(s) "
                "(for the local stack: set -a; . .dev/stack.env; set +a) or pass --api-url/--token/--tenant-id/--org-id."
            )
        for name in ("token", "tenant_id", "org_id"):  # each is a header: http.client's refusal would print it whole
            if not HEADER_SAFE.fullmatch(values[name]):
                raise ConfigError(
                    f"{ENV_VARS[name]} holds a space, a line break, a control or a non-ASCII character, which no header"
                    " can carry (its value is not shown)."
                )
        url = values["api_url"].rstrip("/")
        if "@" in urllib.parse.urlsplit(url).netloc or "@" in url.split("/", 1)[0]:
            raise ConfigError("SYNQ_API_URL must not hold a user or password (user:password@…; not shown): the token goes in SYNQ_TOKEN.")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"SYNQ_API_URL must be an http(s) URL, not {url[:100]!r}.")
        return cls(api_url=url, token=values["token"], tenant_id=values["tenant_id"], org_id=values["org_id"])


@dataclass
class Response:
    """A successful answer: status, headers, and the decoded JSON body (None when empty)."""

    status: int
    headers: Message
    body: Any


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would resend the Authorization header to wherever a redirect points; refuse instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def retry_delay(retry_after: str | None, attempt: int, cap: float) -> float:
    """Seconds to wait before the next attempt: Retry-After (seconds or an HTTP date), else 1, 2, 4 … s."""
    if retry_after:
        value = retry_after.strip()
        if value.isdigit():
            return min(float(value), cap)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
        else:
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), cap)
    return min(2.0 ** (attempt - 1), cap)


def error_from(status: int, raw: bytes, reason: str, secret: str = "") -> ApiError:
    """The API's `{"error": {"code", "message"}}`, or a generic `http_<status>` for anything else;
    `secret` (the token: a proxy's page may echo the request's headers) is `***` wherever it stands,
    taken out before the page is cut short, so no cut leaves part of it."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code"):
        return ApiError(status, hide(str(error["code"]), secret), hide(str(error.get("message") or ""), secret))
    text = " ".join(hide(raw.decode("utf-8", "replace"), secret).split())[:200]  # one line, even of an HTML error page
    return ApiError(status, f"http_{status}", text or reason or "the request failed")


def hide(text: str, secret: str) -> str:
    """`text` with `secret` as `***`."""
    return text.replace(secret, "***") if secret else text


class Client:
    """One API, one tenant: JSON requests with retries, and cursor paging."""

    def __init__(
        self,
        config: Config,
        *,
        timeout: float = 60.0,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self._sleep: Callable[[float], None] = sleep or (lambda seconds: time.sleep(seconds))
        self.deadline: float | None = None  # a time.monotonic() no retry waits past (`until`)
        self._opener = urllib.request.build_opener(_NoRedirects)

    @contextlib.contextmanager
    def until(self, deadline: float | None) -> Iterator[None]:
        """Within it, a 429 or 503 is not retried after a wait that would pass `deadline` (a
        time.monotonic(); None: no deadline), and no answer is waited for past it (a second at
        least): a `--wait --timeout` ends at its time, not minutes after it in the client's own
        retries (up to 60 s of Retry-After each) or in one `--http-timeout`."""
        previous, self.deadline = self.deadline, deadline
        try:
            yield
        finally:
            self.deadline = previous

    def _left(self) -> float | None:
        """Seconds to the deadline (`until`), None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    # -- transport ------------------------------------------------------------------------------

    def _headers(self, *, auth: bool = True, json_body: bool = False, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": f"synqctl/{__version__} Python/{platform.python_version()}"}
        if auth:
            headers |= {
                "Authorization": f"Bearer {self.config.token}",
                "X-Tenant-ID": self.config.tenant_id,
                "X-Org-ID": self.config.org_id,
            }
        if json_body:
            headers["Content-Type"] = "application/json"
        return headers

    def url(self, path: str, params: Params | None = None) -> str:
        """The absolute URL of an API path (under /api/v1/pim) with its non-empty query parameters."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None and v != ""}
        return f"{self.config.api_url}{PREFIX}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def _open(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Message, IO[bytes]]:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            left = self._left()
            response = self._opener.open(request, timeout=self.timeout if left is None else min(self.timeout, max(left, 1.0)))
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "connection_failed", f"cannot reach {_origin(url)}: {reason}") from None
        return response.status, response.headers, response

    @staticmethod
    def _read(stream: IO[bytes], url: str, size: int | None = None) -> bytes:
        """Up to `size` bytes of an answer's body (all without); a timeout or a connection lost midway is
        ApiError `connection_failed`, as when no answer came at all."""
        try:
            return stream.read() if size is None else stream.read(size)
        except (OSError, http.client.HTTPException) as exc:
            reason = f"{type(exc).__name__} {exc}" if isinstance(exc, http.client.HTTPException) else exc
            raise ApiError(0, "connection_failed", f"the answer from {_origin(url)} was cut short: {reason}") from None

    def _exchange(self, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Message, IO[bytes]]:
        """Send, retrying 429/503 up to `max_attempts` times; the caller reads and closes the body."""
        attempt = 1
        while True:
            status, response_headers, body = self._open(method, url, data, headers)
            if status not in RETRY_STATUSES or attempt >= self.max_attempts:
                return status, response_headers, body
            delay = retry_delay(response_headers.get("Retry-After"), attempt, self.max_wait)
            left = self._left()
            if left is not None and delay > left:  # the caller's time runs out first: it has the answer
                return status, response_headers, body
            body.close()
            self._sleep(delay)
            attempt += 1

    def request(self, method: str, path: str, *, params: Params | None = None, body: Any = None, idempotency_key: str | None = None) -> Response:
        """One JSON call; raises ApiError for any status of 300 or more. A POST carries an Idempotency-Key
        (`idempotency_key`, else a fresh one) with every attempt, so a resend after 429/503 gets the first
        attempt's answer if that one ran, not a second job or export. The body is compact: the API takes
        at most 32 MB, and a file near that must not grow past it with spaces."""
        data = None if body is None else json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        if method == "POST" and not idempotency_key:
            idempotency_key = str(uuid.uuid4())
        sent = self._headers(json_body=data is not None) | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})
        url = self.url(path, params)
        status, headers, stream = self._exchange(method, url, data, sent)
        try:
            raw = self._read(stream, url)
        finally:
            stream.close()
        if 300 <= status < 400:
            target = hide(headers.get("Location") or "elsewhere", self.config.token)
            raise ApiError(status, "unexpected_redirect", f"the API redirected to {target[:200]}; not followed with the token (check SYNQ_API_URL).")
        if status >= 400:
            raise error_from(status, raw, str(getattr(stream, "reason", "")), self.config.token)
        try:
            decoded = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise ApiError(status, "invalid_response", f"{method} {path} answered {status} with a body that is not JSON.") from None
        return Response(status, headers, decoded)

    def pages(self, path: str, params: Params | None = None, *, limit: int | None = None, page_size: int = MAX_PAGE) -> Iterator[Any]:
        """Every item of a list endpoint, following X-Next-Cursor, stopping after `limit` items."""
        cursor: str | None = None
        seen = 0
        while limit is None or seen < limit:
            size = page_size if limit is None else min(page_size, limit - seen)
            response = self.request("GET", path, params={**(params or {}), "limit": size, "cursor": cursor})
            if not isinstance(response.body, list):
                raise ApiError(response.status, "invalid_response", f"GET {path} did not answer with a JSON array.")
            for item in response.body[: None if limit is None else limit - seen]:
                yield item
                seen += 1
            next_cursor = response.headers.get("X-Next-Cursor")
            if not next_cursor or not response.body or next_cursor == cursor:
                return
            cursor = next_cursor

    # -- endpoints ------------------------------------------------------------------------------

    def create_job(self, job_type: str, payload: Any) -> dict[str, Any]:
        """POST /bulk-jobs: the new PENDING job."""
        return dict(self.request("POST", "/bulk-jobs", body={"job_type": job_type, "payload": payload}).body)

    def get_job(self, job_id: str) -> dict[str, Any]:
        """GET /bulk-jobs/{id} without its payload (which may be 32 MB): cheap enough to poll."""
        return dict(self.request("GET", f"/bulk-jobs/{_segment(job_id)}", params={"include_payload": "false"}).body)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """POST /bulk-jobs/{id}/cancel: the CANCELLED job, without its payload."""
        return dict(self.request("POST", f"/bulk-jobs/{_segment(job_id)}/cancel").body)

    def retry_job(self, job_id: str, corrections: Mapping[str, Any] | None, *, idempotency_key: str) -> dict[str, Any]:
        """POST /bulk-jobs/{id}/retry: a new job of the items a FAILED or CANCELLED job did not apply,
        those named in `corrections` replaced; without corrections no body, and each runs as it was."""
        body = None if corrections is None else {"corrections": dict(corrections)}
        return dict(self.request("POST", f"/bulk-jobs/{_segment(job_id)}/retry", body=body, idempotency_key=idempotency_key).body)

    def list_jobs(self, job_type: str, *, status: str | None = None, limit: int | None, page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """GET /bulk-jobs?type=…[&status=…], newest first."""
        return list(self.pages("/bulk-jobs", {"type": job_type, "status": status}, limit=limit, page_size=page_size))

    def failed_results(self, job_id: str, *, with_items: bool = False) -> Iterator[dict[str, Any]]:
        """Every failed item's result (GET /bulk-jobs/{id}/results?status=failed), in payload order;
        `with_items`: each with `item`, the item as submitted (include=item)."""
        params = {"status": "failed", "include": "item" if with_items else None}
        return self.pages(f"/bulk-jobs/{_segment(job_id)}/results", params, page_size=MAX_RESULTS_PAGE)

    def list_products(self, *, sku: str | None, limit: int | None, page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """GET /products[?sku=…]."""
        return list(self.pages("/products", {"sku": sku}, limit=limit, page_size=page_size))

    def list_issues(self, filters: Params, *, limit: int | None, page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """GET /validation with any of job_id, severity, issue_type, product_id."""
        return list(self.pages("/validation", filters, limit=limit, page_size=page_size))

    def get_issue(self, issue_id: str) -> dict[str, Any]:
        """GET /validation/{id}: one issue, resolved ones too."""
        return dict(self.request("GET", f"/validation/{_segment(issue_id)}").body)

    def resolve_issue(self, issue_id: str) -> dict[str, Any]:
        """POST /validation/{id}/resolve: the issue, resolved (or as it was, if it already was)."""
        return dict(self.request("POST", f"/validation/{_segment(issue_id)}/resolve").body)

    def list_audit(self, *, limit: int | None, page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """GET /audit, newest first."""
        return list(self.pages("/audit", limit=limit, page_size=page_size))

    def create_export(self) -> dict[str, Any]:
        """POST /export: `{"status", "message", "export_id"}`."""
        body = self.request("POST", "/export").body
        return dict(body) if isinstance(body, dict) else {}

    def get_export(self, export_id: str) -> dict[str, Any]:
        """GET /exports/{id}."""
        return dict(self.request("GET", f"/exports/{_segment(export_id)}").body)

    def download_export(self, export_id: str, out: IO[bytes]) -> int:
        """Stream GET /exports/{id}/download into `out`; a redirect (a signed URL) is followed without our
        headers. Returns the size; an answer shorter than its Content-Length is `connection_failed`."""
        url = self.url(f"/exports/{_segment(export_id)}/download")
        status, headers, stream = self._exchange("GET", url, None, self._headers(accept="*/*"))
        location = headers.get("Location")
        if status in (301, 302, 303, 307, 308) and location:
            stream.close()
            url = urllib.parse.urljoin(url, location)
            status, headers, stream = self._exchange("GET", url, None, self._headers(auth=False, accept="*/*"))
        try:
            if status >= 300:
                raise error_from(status, self._read(stream, url), "", self.config.token)
            size = 0
            while chunk := self._read(stream, url, 1 << 16):
                out.write(chunk)
                size += len(chunk)
            declared = (headers.get("Content-Length") or "").strip()
            if declared.isdigit() and size != int(declared):
                raise ApiError(0, "connection_failed", f"the download from {_origin(url)} was cut short: {size} of {declared} bytes.")
            return size
        finally:
            stream.close()

    def get_notification_settings(self) -> dict[str, Any]:
        """GET /notification-settings (admin): channel, webhook_url, email, events, has_signing_secret."""
        return dict(self.request("GET", "/notification-settings").body)

    def put_notification_settings(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """PUT /notification-settings (admin): the settings as stored, with `signing_secret` once when
        the webhook URL is new (the API shows it only in this answer)."""
        return dict(self.request("PUT", "/notification-settings", body=dict(settings)).body)

    def rotate_signing_secret(self) -> dict[str, Any]:
        """POST /notification-settings/rotate-secret (admin): `{"signing_secret", "previous_secret_expires_at"}`."""
        return dict(self.request("POST", "/notification-settings/rotate-secret").body)

    def list_deliveries(self, *, limit: int | None, page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """GET /notification-deliveries, newest first."""
        return list(self.pages("/notification-deliveries", limit=limit, page_size=page_size))

    def redeliver(self, delivery_id: str) -> dict[str, Any]:
        """POST /notification-deliveries/{id}/redeliver: the delivery, its new series queued."""
        return dict(self.request("POST", f"/notification-deliveries/{_segment(delivery_id)}/redeliver").body)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: where a request went, without a signed URL's query or a user:password@."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], path="", query="", fragment="").geturl()


def _segment(value: str) -> str:
    """An id as one path segment, so `../x` or `a/b` cannot reach another route."""
    return urllib.parse.quote(value, safe="")
