"""The HTTP API function: every route of /api/v1/pim."""

from __future__ import annotations

import time

import flask
import functions_framework

from common.api import log_request, router


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    response = router.handle(request)
    log_request(request, response, time.perf_counter() - started)
    return response
