"""The OpenAPI 3.1 document, built from the router's routes and the pydantic models they name.

Nothing here is written by hand per endpoint: each route's metadata (`@router.route(..., summary=,
request_model=, response_model=, query=, ...)`) says what it takes and returns, and the schemas are
the models' own JSON Schemas. A route registered without metadata is still listed, as accepting and
returning any JSON, and `undocumented()` names it (a unit test fails on it).
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from common.http import BODY_METHODS, Route, Router
from common.idempotency import HEADER as IDEMPOTENCY_HEADER
from common.idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER
from common.models.api import ErrorBody

TITLE = "Synq PIM bulk operations"
VERSION = "1.0.0"
REF = "#/components/schemas/{model}"

# What each error status means wherever it is listed; every error body is ErrorBody.
ERRORS = {
    400: "Malformed request: JSON, query parameter, X-Org-ID / X-Tenant-ID or Idempotency-Key header.",
    401: "Missing, unknown, revoked or expired bearer token.",
    403: "The token is not allowed for this org and tenant, or its role is too low.",
    404: "Nothing with that id in this tenant.",
    409: "Conflict with the current state (or the Idempotency-Key's first request is still running).",
    410: "Gone: past its retention.",
    413: "The body is too large.",
    415: "The body is not application/json in UTF-8, or is content-coded (Content-Encoding): send it uncompressed.",
    422: "The body is well-formed but not acceptable (or the Idempotency-Key was used for another request).",
    429: "Over the token's request budget; retry after Retry-After seconds.",
    503: "A storage service was unavailable; retry.",
}
NO_BODY = (
    "Takes no request body: send none (or `{}`). Any other is refused: malformed JSON 400 `malformed_json`, "
    "a value that is not an object 400 `invalid_body`, an object with members 422 `unknown_field`."
)
# Ids the API issues and tenant ids (`common.http.is_safe_id`); other strings are never found (404).
_SAFE_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"}
# No leading or trailing space: HTTP strips it, so such a key would not arrive as sent.
_KEY_PATTERN = "^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$"

_cache: dict[tuple[int, int], dict[str, Any]] = {}
_lock = threading.Lock()


def document(router: Router) -> dict[str, Any]:
    """The document for `router`, built once per instance (and again if routes were added)."""
    key = (id(router), len(router.routes))
    with _lock:
        if key not in _cache:
            _cache[key] = build(router)
        return _cache[key]


def undocumented(router: Router) -> list[str]:
    """One line per route whose metadata is missing, saying what to add."""
    problems = []
    for route in router.routes:
        missing = []
        if not route.doc.summary:
            missing.append("summary=")
        if route.doc.response_model is None:
            missing.append("response_model=")
        if missing:
            problems.append(f"{route.method} {route.template} (handler {route.handler.__name__}): no {' and no '.join(missing)}")
    return problems


HOW_TO_DESCRIBE = (
    "Describe each in its @router.route(...): summary=, response_model= (list_response=True for a bare array), "
    "request_model= if it reads a body, query=(QueryParam(...), ...) for its query parameters, response_status= if "
    "not 200, error_statuses=(...) for statuses beyond those every route of its kind answers (see error_statuses())."
)


def build(router: Router) -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for route in router.routes:
        if route.doc.request_model is not None:
            wanted.append((route.doc.request_model, "validation"))
        if route.doc.response_model is not None:
            wanted.append((route.doc.response_model, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in router.routes:
        operation = _operation(route, refs)
        if operation["operationId"] in operation_ids:
            operation["operationId"] += f"_{route.method.lower()}"
        operation_ids.add(operation["operationId"])
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Bulk product jobs, exports and validation issues. See docs/api.md for idempotency and rate limits.",
        },
        # Relative to this document's own URL: the API's origin.
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (synq_...)."}},
            "parameters": _header_parameters(),
            "responses": {str(status): _error_response(text) for status, text in ERRORS.items()},
            "headers": _headers(),
        },
    }


def _header_parameters() -> dict[str, Any]:
    return {
        "OrgId": {"name": "X-Org-ID", "in": "header", "required": True, "description": "The org the token acts in.", "schema": _SAFE_ID},
        "TenantId": {"name": "X-Tenant-ID", "in": "header", "required": True, "description": "The tenant the token acts in.", "schema": _SAFE_ID},
        "IdempotencyKey": {
            "name": IDEMPOTENCY_HEADER,
            "in": "header",
            "required": False,
            "description": "Makes the POST safe to retry: a repeat within 24 h gets the first answer (see docs/api.md).",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": _KEY_PATTERN},
        },
    }


def _headers() -> dict[str, Any]:
    def integer(text: str) -> dict[str, Any]:
        return {"description": text, "schema": {"type": "integer"}}

    return {
        "RateLimit-Limit": integer("Requests this token may make per minute."),
        "RateLimit-Remaining": integer("Requests left in the current minute."),
        "RateLimit-Reset": integer("Seconds until the current minute's budget renews."),
        "Retry-After": integer("Seconds to wait before retrying."),
        "X-Next-Cursor": {"description": "The cursor of the next page; absent on the last page.", "schema": {"type": "string"}},
        "Link": {
            "description": 'The next page, as `<?query>; rel="next"`: a reference relative to the URL requested, which is that URL '
            "with the same query and the next `cursor`.",
            "schema": {"type": "string"},
        },
        REPLAYED_HEADER: {
            "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }


def _error_response(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}}


def _header_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def error_statuses(route: Route) -> list[int]:
    """The error statuses a route can answer: its own, and those every route of its kind can."""
    doc = route.doc
    codes = set(doc.error_statuses)
    if not doc.public:
        codes |= {400, 401, 403, 429}
    if route.path_params:
        codes.add(404)
    if doc.query:
        codes.add(400)
    if route.method in BODY_METHODS:
        codes |= {400, 413, 415, 422}  # the body it reads, or one it refuses (`Route.refuses_body`)
    if route.method == "POST" and not doc.public:
        codes |= {400, 409, 413, 422}  # the Idempotency-Key hook reads the body and answers these
    return sorted(codes)


def _operation(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    doc = route.doc
    documented = bool(doc.summary)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "description": "An id this API issued.", "schema": _SAFE_ID} for name in route.path_params
    ]
    parameters += [{"name": q.name, "in": "query", "required": q.required, "description": q.description, "schema": dict(q.schema)} for q in doc.query]
    if not doc.public:
        parameters += [{"$ref": "#/components/parameters/OrgId"}, {"$ref": "#/components/parameters/TenantId"}]
        if route.method == "POST":
            parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": doc.summary or f"{route.method} {route.template} (not yet described)",
        "parameters": parameters,
        "responses": {str(doc.response_status) if documented else "2XX": _success(route, refs)},
        "security": [] if doc.public else [{"bearerAuth": []}],
    }
    description = doc.description
    if route.refuses_body:
        description = " ".join(filter(None, (description, NO_BODY)))
    if description:
        operation["description"] = description
    if doc.tags:
        operation["tags"] = list(doc.tags)
    if not documented:
        operation["x-undocumented"] = True
    if doc.request_model is not None:
        schema = refs[(doc.request_model, "validation")]
        operation["requestBody"] = {"required": doc.body_required, "content": {"application/json": {"schema": schema}}}
    elif route.method in BODY_METHODS and not documented:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": {}}}}
    for status in error_statuses(route):
        response: dict[str, Any] = {"$ref": f"#/components/responses/{status}"}
        if status == 429:
            response = {**_error_response(ERRORS[429]), "headers": {"Retry-After": _header_ref("Retry-After")}}
        operation["responses"][str(status)] = response
    return operation


def _success(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    doc = route.doc
    if doc.response_model is None:
        return {"description": "Not yet described.", "content": {"application/json": {"schema": {}}}}
    schema: dict[str, Any] = refs[(doc.response_model, "serialization")]
    if doc.media_type != "application/json":
        # A stream of JSON documents, one per line: OpenAPI 3.1 can only say it is text.
        name = doc.response_model.__name__
        schema = {"type": "string", "description": f"One {name} (#/components/schemas/{name}) per line."}
    elif doc.list_response:
        schema = {"type": "array", "items": schema}
    headers: dict[str, Any] = {}
    if not doc.public:
        headers |= {name: _header_ref(name) for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")}
    if doc.list_response:
        headers |= {name: _header_ref(name) for name in ("X-Next-Cursor", "Link")}
    if route.method == "POST" and not doc.public:
        headers[REPLAYED_HEADER] = _header_ref(REPLAYED_HEADER)
    headers |= {name: {"description": text, "schema": {"type": "string"}} for name, text in doc.response_headers}
    response: dict[str, Any] = {"description": doc.summary, "content": {doc.media_type: {"schema": schema}}}
    if 300 <= doc.response_status < 400:
        # A redirect has no body of its own: the model describes what its Location serves.
        location = f"A short-lived URL that serves the content: {schema.get('description') or doc.response_model.__name__}"
        headers |= {"Location": {"description": location, "schema": {"type": "string", "format": "uri"}}}
        headers |= {"Cache-Control": {"description": "`no-store`: the URL expires.", "schema": {"type": "string"}}}
        response = {"description": doc.summary}
    if headers:
        response["headers"] = headers
    return response
