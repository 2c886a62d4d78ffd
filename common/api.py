"""The HTTP API: each route authenticates, parses, calls one service function and shapes the answer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from common import errors
from common.auth import authenticate
from common.config import get_settings
from common.http import Request, Response, Router, query_int
from common.services import catalog, jobs

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
    return Response(jobs.public(jobs.get_job(principal.scope, request.params["job_id"])))


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
