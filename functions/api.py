"""The HTTP API function: every route of /api/v1/pim."""

from __future__ import annotations

import flask
import functions_framework

from common.api import router


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    return router.handle(request)
