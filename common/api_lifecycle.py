"""Routes that act on a bulk job after it was created: cancel it, retry the items it did not apply."""

from __future__ import annotations

from common.api import PREFIX, router
from common.auth import authenticate
from common.http import Request, Response
from common.models.job import JobPublic
from common.models.syndigo import RetryRequest
from common.services import jobs


@router.route(
    "POST",
    f"{PREFIX}/bulk-jobs/{{job_id}}/cancel",
    summary="Cancel a PENDING or PROCESSING job (chunks not started are skipped)",
    response_model=JobPublic,
    error_statuses=(409,),
    tags=("bulk jobs",),
)
def cancel_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    return Response(jobs.cancel_job(principal, request.params["job_id"]))


@router.route(
    "POST",
    f"{PREFIX}/bulk-jobs/{{job_id}}/retry",
    summary="Create a job from the items a FAILED or CANCELLED job did not apply, optionally corrected by index",
    description="The failed items, and those a cancel stopped before they ran. Without a body, each runs as it was.",
    request_model=RetryRequest,
    body_required=False,
    response_model=JobPublic,
    error_statuses=(409, 410, 422),
    tags=("bulk jobs",),
)
def retry_bulk_job(request: Request) -> Response:
    principal = authenticate(request)
    body = request.json(max_bytes=32 * 1024 * 1024, required=False)
    return Response(jobs.retry_job(principal, request.params["job_id"], body))
