"""The HTTP API: each route authenticates, parses, calls one service function and shapes the answer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from common import errors
from common.auth import authenticate
from common.config import get_settings
from common.http import Request, Response, Router, query_bool, query_int
from common.services import catalog, exports, jobs, notifications

PREFIX = "/api/v1/pim"
router = Router()


def paged(request: Request, items: list[dict[str, Any]], next_cursor: str | None, **params: Any) -> Response:
    """The seed's bare array, with the next page's cursor in `Link` and `X-Next-Cursor`."""
    response = Response(items)
    if next_cursor is not None:
        query = {k: v for k, v in request.args.items() if k != "cursor"} | {k: str(v) for k, v in params.items()}
        query["cursor"] = next_cursor
        response.headers["X-Next-Cursor"] = next_cursor
        response.headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return response


def _limit(request: Request) -> int:
    return query_int(request, "limit", 50, low=1, high=200)


@router.route("GET", "/healthz")
def health(request: Request) -> Response:
    return Response({"status": "ok"})


@router.route("POST", f"{PREFIX}/bulk-jobs")
def create_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    body = request.json(max_bytes=get_settings().max_body_bytes)
    return Response(jobs.create_job(principal, body))


@router.route("GET", f"{PREFIX}/bulk-jobs")
def list_bulk_jobs(request: Request) -> Response:
    principal = authenticate(request)
    job_type = request.query("type") or "BULK_UPDATE"
    items, next_cursor = jobs.list_jobs(principal.scope, job_type, limit=_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("GET", f"{PREFIX}/bulk-jobs/{{job_id}}")
def get_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    # `include_payload=false` makes status polling cheap: a payload may be 32 MB.
    include = query_bool(request, "include_payload", True)
    return Response(jobs.public(jobs.get_job(principal.scope, request.params["job_id"]), include_payload=include))


@router.route("GET", f"{PREFIX}/bulk-jobs/{{job_id}}/results")
def get_bulk_job_results(request: Request) -> Response:
    principal = authenticate(request)
    status = request.query("status")
    if status not in (None, "", "failed"):
        raise errors.BadRequest("status may only be 'failed'.", code="invalid_query")
    cursor = request.query("cursor")
    start = 0
    if cursor:
        if not cursor.isdigit() or len(cursor) > 9:
            raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor")
        start = int(cursor)
    items, next_start = jobs.results(
        principal.scope,
        request.params["job_id"],
        start=start,
        limit=query_int(request, "limit", 100, low=1, high=1000),
        failed_only=status == "failed",
    )
    return paged(request, items, None if next_start is None else str(next_start))


@router.route("GET", f"{PREFIX}/products")
def list_products(request: Request) -> Response:
    principal = authenticate(request)
    items, next_cursor = catalog.list_products(principal.scope, sku=request.query("sku"), limit=_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("GET", f"{PREFIX}/products/{{product_id}}")
def get_product(request: Request) -> Response:
    principal = authenticate(request)
    return Response(catalog.get_product(principal.scope, request.params["product_id"]))


@router.route("GET", f"{PREFIX}/validation")
def list_validation_issues(request: Request) -> Response:
    principal = authenticate(request)
    filters = {name: value for name in catalog.ISSUE_FILTERS if (value := request.query(name))}
    items, next_cursor = catalog.list_issues(principal.scope, filters, limit=_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("GET", f"{PREFIX}/audit")
def list_audit_events(request: Request) -> Response:
    principal = authenticate(request)
    limit = query_int(request, "limit", 100, low=1, high=200)
    items, next_cursor = catalog.list_audit(principal.scope, limit=limit, cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("POST", f"{PREFIX}/export")
def request_export(request: Request) -> Response:
    principal = authenticate(request)
    return Response(exports.request_export(principal), status=202)


@router.route("GET", f"{PREFIX}/exports/{{export_id}}")
def get_export(request: Request) -> Response:
    principal = authenticate(request)
    return Response(exports.get_export(principal.scope, request.params["export_id"]))


@router.route("GET", f"{PREFIX}/exports/{{export_id}}/download")
def download_export(request: Request) -> Response:
    """With a token as usual, or with the signed link a notification carries (no token needed)."""
    export_id = request.params["export_id"]
    scope = exports.signed_scope(dict(request.args), export_id)
    if scope is None:
        scope = authenticate(request).scope
    return Response(None, stream=exports.download(scope, export_id), content_type="application/x-ndjson")


@router.route("GET", f"{PREFIX}/notification-settings")
def get_notification_settings(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.get_notification_settings(principal.scope))


@router.route("PUT", f"{PREFIX}/notification-settings")
def put_notification_settings(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.put_notification_settings(principal, request.json(max_bytes=64 * 1024)))


@router.route("POST", f"{PREFIX}/notification-settings/rotate-secret")
def rotate_signing_secret(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.rotate_secret(principal))


@router.route("GET", f"{PREFIX}/notification-deliveries")
def list_notification_deliveries(request: Request) -> Response:
    principal = authenticate(request)
    items, next_cursor = notifications.list_deliveries(principal.scope, limit=_limit(request), cursor=request.query("cursor"))
    return paged(request, items, next_cursor)


@router.route("POST", f"{PREFIX}/notification-deliveries/{{delivery_id}}/redeliver")
def redeliver_notification(request: Request) -> Response:
    principal = authenticate(request)
    return Response(notifications.redeliver(principal, request.params["delivery_id"]))


# Routes defined in other modules register on the same router when this module is imported.
from common import api_import as _api_import  # noqa: E402,F401
from common import api_lifecycle as _api_lifecycle  # noqa: E402,F401
