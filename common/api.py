"""The HTTP API: each route authenticates, parses, calls one service function and shapes the answer."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlencode

import flask

from common import errors, openapi
from common.auth import SCOPE_ENVIRON_KEY, authenticate
from common.config import get_settings
from common.domain.engine import ISSUE_TYPES
from common.http import QueryParam, RefuseUnreadBody, Request, Response, Router, query_bool, query_int
from common.idempotency import Idempotency
from common.logging import get_logger
from common.models.api import Health, OpenAPIDocument
from common.models.export import (
    DeliveryPublic,
    ExportPublic,
    ExportQueued,
    NotificationSettingsIn,
    NotificationSettingsPublic,
    NotificationSettingsUpdated,
    SigningSecretRotated,
)
from common.models.issue import AuditEventPublic, IssuePublic
from common.models.job import ItemResult, JobCreate, JobPublic, JobStatus, JobSummary, JobType
from common.models.product import ProductPublic
from common.ratelimit import RateLimiter
from common.services import catalog, exports, jobs, notifications

PREFIX = "/api/v1/pim"
log = get_logger("synq.api")


def log_request(request: flask.Request, response: flask.Response, seconds: float) -> None:
    """One line per request: WARNING for a 4xx, ERROR for a 5xx. The route's template, not the path
    (a caller may paste anything into a path), and the org and tenant only once a token was accepted
    for them: nothing a caller sends is written as sent, so a token sent in the wrong place is not."""
    status = response.status_code
    try:
        route = router.match(request.method, request.path)[0].template
    except errors.SynqError:
        route = None
    scope = request.environ.get(SCOPE_ENVIRON_KEY)
    log.log(
        logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO,
        "request",
        extra={
            "method": request.method if request.method in KNOWN_METHODS else "other",
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 1),
            "org_id": scope.org_id if scope else None,
            "tenant_id": scope.tenant_id if scope else None,
        },
    )


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
router = Router()
# Outermost first: a request over its token's budget is refused before any idempotency work, and a
# body sent to a route that reads none (POST /export, …/cancel…) before its key is claimed.
router.use(RateLimiter())
router.use(RefuseUnreadBody(authenticate, lambda: get_settings().max_body_bytes))
router.use(Idempotency())

CURSOR = QueryParam("cursor", "The `X-Next-Cursor` of the previous page.", {"type": "string"})


def limit_param(default: int = 50, high: int = 200) -> QueryParam:
    return QueryParam("limit", "Items per page.", {"type": "integer", "minimum": 1, "maximum": high, "default": default})


def paged(request: Request, items: list[dict[str, Any]], next_cursor: str | None, **params: Any) -> Response:
    """The seed's bare array, with the next page's cursor in `Link` and `X-Next-Cursor`.

    The link is a query-only reference (`<?…&cursor=…>`): a client resolves it against the URL it
    requested (RFC 8288 §3.1, RFC 3986 §5.2.2), which keeps that URL's whole path. The path this
    function sees is not always the path the client sent: on the api function's cloudfunctions.net
    URL the function's name (`/api`) is taken off the front, so a link naming the path it sees
    (`</api/v1/pim/…>`) sent that client to `…cloudfunctions.net/api/v1/pim/…`, outside the API; and
    a load balancer or gateway may mount the API under a prefix of its own."""
    response = Response(items)
    if next_cursor is not None:
        query = {k: v for k, v in request.args.items() if k != "cursor"} | {k: str(v) for k, v in params.items()}
        query["cursor"] = next_cursor
        response.headers["X-Next-Cursor"] = next_cursor
        response.headers["Link"] = f'<?{urlencode(query)}>; rel="next"'
    return response


def page_limit(request: Request) -> int:
    return query_int(request, "limit", 50, low=1, high=200)


@router.route("GET", "/healthz", summary="Liveness check", response_model=Health, public=True, tags=("meta",))
def health(request: Request) -> Response:
    return Response({"status": "ok"})


@router.route(
    "POST",
    f"{PREFIX}/bulk-jobs",
    summary="Create a bulk job",
    description="Stores the job as PENDING and returns it at once; the job runs asynchronously.",
    request_model=JobCreate,
    response_model=JobPublic,
    tags=("bulk jobs",),
)
def create_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    body = request.json(max_bytes=get_settings().max_body_bytes, parse=jobs.read_request)
    return Response(jobs.create_job(principal, body))


@router.route(
    "GET",
    f"{PREFIX}/bulk-jobs",
    summary="List bulk jobs of one type, newest first",
    response_model=JobSummary,
    list_response=True,
    query=(
        QueryParam(
            "type",
            "The job type (BULK_UPDATE when omitted).",
            {"type": "string", "enum": [t.value for t in JobType], "default": JobType.BULK_UPDATE.value},
        ),
        QueryParam("status", "Only jobs in this status (every status when omitted).", {"type": "string", "enum": [s.value for s in JobStatus]}),
        limit_param(),
        CURSOR,
    ),
    tags=("bulk jobs",),
)
def list_bulk_jobs(request: Request) -> Response:
    principal = authenticate(request)
    job_type = request.query("type") or "BULK_UPDATE"
    status = request.query("status") or None
    items, next_cursor = jobs.list_jobs(principal.scope, job_type, status=status, limit=page_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route(
    "GET",
    f"{PREFIX}/bulk-jobs/{{job_id}}",
    summary="Get a bulk job",
    response_model=JobPublic,
    query=(QueryParam("include_payload", "false: leave payload_json out (null), for cheap polling.", {"type": "boolean", "default": True}),),
    tags=("bulk jobs",),
)
def get_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    # `include_payload=false` makes status polling cheap: a payload may be 32 MB.
    include = query_bool(request, "include_payload", True)
    return Response(jobs.public(jobs.get_job(principal.scope, request.params["job_id"]), include_payload=include))


@router.route(
    "GET",
    f"{PREFIX}/bulk-jobs/{{job_id}}/results",
    summary="Per-item results of a bulk job, in payload order",
    response_model=ItemResult,
    list_response=True,
    query=(
        QueryParam("status", "`failed`: only the items that failed.", {"type": "string", "enum": ["failed"]}),
        QueryParam(
            "include",
            "`item`: each result also carries `item`, the item as submitted, to build a retry's `corrections` from. Such a page"
            " also ends after about 4 MB of items (follow `X-Next-Cursor`). 410 `payload_expired` when the job's items are no"
            " longer kept (its payload passed its retention before it ran).",
            {"type": "string", "enum": ["item"]},
        ),
        limit_param(100, 1000),
        QueryParam("cursor", "The `X-Next-Cursor` of the previous page.", {"type": "string", "pattern": "^[0-9]{1,9}$"}),
    ),
    error_statuses=(410,),
    tags=("bulk jobs",),
)
def get_bulk_job_results(request: Request) -> Response:
    principal = authenticate(request)
    status = request.query("status")
    if status not in (None, "", "failed"):
        raise errors.BadRequest("status may only be 'failed'.", code="invalid_query")
    include = request.query("include")
    if include not in (None, "", "item"):
        raise errors.BadRequest("include may only be 'item'.", code="invalid_query")
    cursor = request.query("cursor")
    start = 0
    if cursor:
        if not re.fullmatch(r"[0-9]{1,9}", cursor):
            raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor")
        start = int(cursor)
    items, next_start = jobs.results(
        principal.scope,
        request.params["job_id"],
        start=start,
        limit=query_int(request, "limit", 100, low=1, high=1000),
        failed_only=status == "failed",
        with_items=include == "item",
    )
    return paged(request, items, None if next_start is None else str(next_start))


@router.route(
    "GET",
    f"{PREFIX}/products",
    summary="List products",
    response_model=ProductPublic,
    list_response=True,
    query=(QueryParam("sku", "Only the product with this SKU.", {"type": "string", "maxLength": catalog.FILTER_MAX_LENGTH}), limit_param(), CURSOR),
    tags=("products",),
)
def list_products(request: Request) -> Response:
    principal = authenticate(request)
    items, next_cursor = catalog.list_products(principal.scope, sku=request.query("sku"), limit=page_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("GET", f"{PREFIX}/products/{{product_id}}", summary="Get a product", response_model=ProductPublic, tags=("products",))
def get_product(request: Request) -> Response:
    principal = authenticate(request)
    return Response(catalog.get_product(principal.scope, request.params["product_id"]))


@router.route(
    "GET",
    f"{PREFIX}/validation",
    summary="List unresolved validation issues",
    response_model=IssuePublic,
    list_response=True,
    query=(
        QueryParam("severity", "Only issues of this severity.", {"type": "string", "enum": ["ERROR", "WARNING"]}),
        QueryParam("issue_type", "Only issues of this type.", {"type": "string", "enum": list(ISSUE_TYPES)}),
        *(
            QueryParam(name, f"Only issues with this {name}.", {"type": "string", "maxLength": catalog.FILTER_MAX_LENGTH})
            for name in ("product_id", "job_id")
        ),
        limit_param(),
        CURSOR,
    ),
    tags=("validation",),
)
def list_validation_issues(request: Request) -> Response:
    principal = authenticate(request)
    filters = {name: value for name in catalog.ISSUE_FILTERS if (value := request.query(name))}
    items, next_cursor = catalog.list_issues(principal.scope, filters, limit=page_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route(
    "GET",
    f"{PREFIX}/validation/{{issue_id}}",
    summary="Get a validation issue",
    description="Resolved issues too (`resolved: true`): the issue a resolve answered, or one a later failure superseded.",
    response_model=IssuePublic,
    tags=("validation",),
)
def get_validation_issue(request: Request) -> Response:
    principal = authenticate(request)
    return Response(catalog.get_issue(principal.scope, request.params["issue_id"]))


@router.route(
    "POST",
    f"{PREFIX}/validation/{{issue_id}}/resolve",
    summary="Resolve a failed item's issue by hand",
    description=(
        "For an issue a job item's failure opened (it has a job_id) that no later item will resolve. "
        "An issue about a product's data resolves itself once the product is fixed: 409. "
        "Resolving a resolved issue answers it as it is."
    ),
    response_model=IssuePublic,
    error_statuses=(409,),
    tags=("validation",),
)
def resolve_validation_issue(request: Request) -> Response:
    principal = authenticate(request)
    return Response(catalog.resolve_issue(principal, request.params["issue_id"]))


@router.route(
    "GET",
    f"{PREFIX}/audit",
    summary="List audit events, newest first",
    response_model=AuditEventPublic,
    list_response=True,
    query=(limit_param(100), CURSOR),
    tags=("audit",),
)
def list_audit_events(request: Request) -> Response:
    principal = authenticate(request)
    limit = query_int(request, "limit", 100, low=1, high=200)
    items, next_cursor = catalog.list_audit(principal.scope, limit=limit, cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route(
    "POST",
    f"{PREFIX}/export",
    summary="Queue a catalog export to Cloud Storage",
    response_model=ExportQueued,
    response_status=202,
    tags=("exports",),
)
def request_export(request: Request) -> Response:
    principal = authenticate(request)
    return Response(exports.request_export(principal), status=202)


@router.route("GET", f"{PREFIX}/exports/{{export_id}}", summary="Get an export", response_model=ExportPublic, tags=("exports",))
def get_export(request: Request) -> Response:
    principal = authenticate(request)
    return Response(exports.get_export(principal.scope, request.params["export_id"]))


@router.route(
    "GET",
    f"{PREFIX}/exports/{{export_id}}/download",
    summary="Download a completed export",
    description=(
        "302 to a signed Cloud Storage URL of the file (JSON Lines, one product per line), valid for a few minutes: "
        "follow the redirect without this API's headers. A notification's signed link (the four query parameters) "
        "needs no token. 409 `export_not_ready` while the export is not COMPLETED; 410 `export_file_gone` once the "
        "bucket's retention rule has deleted the file (request a new export)."
    ),
    response_model=ProductPublic,
    response_status=302,
    media_type="application/x-ndjson",
    query=tuple(QueryParam(name, "Part of a signed download link.", {"type": "string"}) for name in ("org_id", "tenant_id", "expires", "signature")),
    error_statuses=(409, 410),
    tags=("exports",),
)
def download_export(request: Request) -> Response:
    """With a token as usual, or with the signed link a notification carries (no token needed)."""
    export_id = request.params["export_id"]
    scope = exports.signed_scope(dict(request.args), export_id)
    if scope is None and "signature" in request.args and "Authorization" not in request.headers:
        raise errors.Unauthorized(
            "This download link has expired or is not valid. Download with a token instead (GET this path"
            " with 'Authorization: Bearer <token>' and the tenant headers), or export again for a new link.",
            code="invalid_download_link",
        )
    if scope is None:
        scope = authenticate(request).scope
    location = exports.download_location(scope, export_id)
    # no-store: a cached redirect would outlive the URL it points at.
    return Response(None, status=302, headers={"Location": location, "Cache-Control": "no-store"})


@router.route(
    "GET",
    f"{PREFIX}/notification-settings",
    summary="Get how the tenant is notified of exports and bulk jobs (admin)",
    response_model=NotificationSettingsPublic,
    tags=("notifications",),
)
def get_notification_settings(request: Request) -> Response:
    principal = authenticate(request)
    principal.require("admin")  # a webhook URL is often a credential of its own (a chat service's hook)
    return Response(notifications.get_notification_settings(principal.scope))


@router.route(
    "PUT",
    f"{PREFIX}/notification-settings",
    summary="Set how the tenant is notified of exports and bulk jobs (admin)",
    description=(
        "A new webhook URL gets a new signing secret, returned in this answer only. `events` names the ends the tenant hears of; "
        "without it, an export's (`export.completed`, `export.failed`): the `bulk_job.*` events are opt-in."
    ),
    request_model=NotificationSettingsIn,
    response_model=NotificationSettingsUpdated,
    tags=("notifications",),
)
def put_notification_settings(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.put_notification_settings(principal, request.json(max_bytes=64 * 1024)))


@router.route(
    "POST",
    f"{PREFIX}/notification-settings/rotate-secret",
    summary="Rotate the webhook signing secret (admin)",
    response_model=SigningSecretRotated,
    role="admin",
    error_statuses=(409,),
    tags=("notifications",),
)
def rotate_signing_secret(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.rotate_secret(principal))


@router.route(
    "GET",
    f"{PREFIX}/notification-deliveries",
    summary="List notification deliveries",
    response_model=DeliveryPublic,
    list_response=True,
    query=(limit_param(), CURSOR),
    tags=("notifications",),
)
def list_notification_deliveries(request: Request) -> Response:
    principal = authenticate(request)
    items, next_cursor = notifications.list_deliveries(principal.scope, limit=page_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route(
    "POST",
    f"{PREFIX}/notification-deliveries/{{delivery_id}}/redeliver",
    summary="Send a notification again",
    response_model=DeliveryPublic,
    error_statuses=(409,),
    tags=("notifications",),
)
def redeliver_notification(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.redeliver(principal, request.params["delivery_id"]))


@router.route("GET", f"{PREFIX}/openapi.json", summary="This API's OpenAPI 3.1 document", response_model=OpenAPIDocument, public=True, tags=("meta",))
def get_openapi(request: Request) -> Response:
    return Response(openapi.document(router))


# Routes defined in other modules register on the same router when this module is imported.
from common import api_import as _api_import  # noqa: E402,F401
from common import api_lifecycle as _api_lifecycle  # noqa: E402,F401
