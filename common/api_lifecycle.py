"""Routes that act on a bulk job after it was created: cancel it, retry its failed items."""

from __future__ import annotations

from common.api import PREFIX, router
from common.auth import authenticate
from common.http import Request, Response
from common.services import jobs


@router.route("POST", f"{PREFIX}/bulk-jobs/{{job_id}}/cancel")
def cancel_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    return Response(jobs.cancel_job(principal, request.params["job_id"]))


@router.route("POST", f"{PREFIX}/bulk-jobs/{{job_id}}/retry")
def retry_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    body = request.json(max_bytes=32 * 1024 * 1024, required=False)
    return Response(jobs.retry_job(principal, request.params["job_id"], body))
