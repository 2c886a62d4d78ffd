"""The OpenAPI document: every served route described, schemas generated from the models, valid 3.1."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import schemathesis

from common import openapi
from common.http import QueryParam, Request, Response, Router
from common.models.api import ErrorBody
from common.models.job import JobCreate, JobPublic, JobSummary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def router() -> Router:
    """The router the deployed api function serves, with every module's routes registered."""
    importlib.import_module("main")
    from common.api import router

    return router


@pytest.fixture(scope="module")
def doc(router: Router) -> dict[str, Any]:
    return openapi.build(router)


def test_every_served_route_is_described(router: Router) -> None:
    problems = openapi.undocumented(router)
    assert not problems, "\n".join([f"{len(problems)} route(s) lack OpenAPI metadata:", *problems, openapi.HOW_TO_DESCRIBE])


def test_every_served_route_is_in_the_document_with_its_path_parameters(router: Router, doc: dict[str, Any]) -> None:
    for route in router.routes:
        operation = doc["paths"].get(route.template, {}).get(route.method.lower())
        assert operation is not None, f"{route.method} {route.template} is served but not in the document"
        declared = [p["name"] for p in operation["parameters"] if p.get("in") == "path"]
        assert declared == route.path_params, f"{route.method} {route.template}: path parameters {declared}"
    operations = [(path, method) for path, item in doc["paths"].items() for method in item]
    assert len(operations) == len(router.routes) == len(set(operations))


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(doc).validate()


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return own + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    refs = _refs(doc)
    assert refs
    for ref in set(refs):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def test_schemas_are_generated_from_the_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for model, mode in ((JobPublic, "serialization"), (JobSummary, "serialization"), (ErrorBody, "serialization"), (JobCreate, "validation")):
        expected = model.model_json_schema(mode=mode, ref_template=openapi.REF)  # type: ignore[arg-type]
        nested = expected.pop("$defs", {})
        assert schemas[model.__name__] == expected
        for name, schema in nested.items():
            assert schemas[name] == schema


def test_create_bulk_job_takes_job_create_and_answers_the_job(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/api/v1/pim/bulk-jobs"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobPublic"}
    assert {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"]
    assert {"400", "401", "403", "409", "413", "415", "422", "429"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    listed = doc["paths"]["/api/v1/pim/bulk-jobs"]["get"]
    assert listed["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/JobSummary"},
    }
    query = {p["name"]: p for p in listed["parameters"] if p.get("in") == "query"}
    assert set(query) == {"type", "status", "limit", "cursor"}
    assert query["status"]["schema"]["enum"] == ["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"]


def test_authenticated_operations_declare_bearer_and_tenant_headers(router: Router, doc: dict[str, Any]) -> None:
    for route in router.routes:
        operation = doc["paths"][route.template][route.method.lower()]
        label = f"{route.method} {route.template}"
        if route.doc.public:
            assert operation["security"] == [], label
            continue
        assert operation["security"] == [{"bearerAuth": []}], label
        assert {"$ref": "#/components/parameters/OrgId"} in operation["parameters"], label
        assert {"$ref": "#/components/parameters/TenantId"} in operation["parameters"], label
        assert {"401", "403", "429"} <= set(operation["responses"]), label
        has_key = {"$ref": "#/components/parameters/IdempotencyKey"} in operation["parameters"]
        assert has_key == (route.method == "POST"), label
        if route.method == "POST":
            assert {"409", "422"} <= set(operation["responses"]), label
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer", "description": "An API token (synq_...)."}


def test_a_route_without_metadata_is_named_and_still_listed() -> None:
    r = Router()

    @r.route("POST", "/things/{thing_id}")
    def make_thing(request: Request) -> Response:
        return Response({})

    assert openapi.undocumented(r) == ["POST /things/{thing_id} (handler make_thing): no summary= and no response_model="]
    doc = openapi.build(r)
    operation = doc["paths"]["/things/{thing_id}"]["post"]
    assert operation["x-undocumented"] is True
    assert set(operation["responses"]) >= {"2XX", "404", "409", "413", "415", "422"}
    schemathesis.openapi.from_dict(doc).validate()


def test_route_metadata_is_rendered() -> None:
    r = Router()

    @r.route(
        "GET",
        "/jobs",
        summary="List",
        response_model=JobSummary,
        list_response=True,
        response_status=206,
        query=(QueryParam("n", "How many.", {"type": "integer", "minimum": 1}, required=True),),
        error_statuses=(410,),
        tags=("x",),
    )
    def list_jobs(request: Request) -> Response:
        return Response([])

    assert openapi.undocumented(r) == []
    operation = openapi.build(r)["paths"]["/jobs"]["get"]
    assert operation["operationId"] == "list_jobs"
    assert operation["tags"] == ["x"]
    assert operation["parameters"][0] == {
        "name": "n",
        "in": "query",
        "required": True,
        "description": "How many.",
        "schema": {"type": "integer", "minimum": 1},
    }
    assert set(operation["responses"]) == {"206", "400", "401", "403", "410", "429"}
    assert {"X-Next-Cursor", "Link", "RateLimit-Remaining"} <= set(operation["responses"]["206"]["headers"])


def test_the_api_serves_the_document_without_a_token() -> None:
    client = functions_framework.create_app(target="api", source=str(ROOT / "main.py")).test_client()
    response = client.get("/api/v1/pim/openapi.json")
    assert response.status_code == 200
    body = response.get_json()
    assert body["openapi"] == "3.1.0"
    assert "/api/v1/pim/bulk-jobs" in body["paths"]


def test_a_result_row_documents_the_index_its_item_had_in_the_job_retried(doc: dict[str, Any]) -> None:
    field = doc["components"]["schemas"]["ItemResult"]["properties"]["retry_of_index"]
    assert {"type": "integer"} in field["anyOf"] and {"type": "null"} in field["anyOf"]
    assert "retry_of" in field["description"] and "corrections" in field["description"]


def test_the_export_download_declares_not_ready_and_file_gone(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/api/v1/pim/exports/{export_id}/download"]["get"]
    assert {"404", "409", "410"} <= set(operation["responses"])


def test_the_results_document_their_opt_in_items_and_the_410_when_they_are_gone(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/api/v1/pim/bulk-jobs/{job_id}/results"]["get"]
    [include] = [p for p in operation["parameters"] if p.get("name") == "include"]
    assert include["in"] == "query" and include["schema"] == {"type": "string", "enum": ["item"]}
    assert "410" in operation["responses"]
    assert "include=item" in doc["components"]["schemas"]["ItemResult"]["properties"]["item"]["description"]


def test_one_validation_issue_is_read_as_the_lists_item_or_404(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/api/v1/pim/validation/{issue_id}"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/IssuePublic"}
    assert "404" in operation["responses"]
    assert [p["name"] for p in operation["parameters"] if p.get("in") == "path"] == ["issue_id"]


def test_the_job_list_declares_the_seeds_default_type(doc: dict[str, Any]) -> None:
    """The reference: `type` "Defaults to BULK_UPDATE if omitted". The document says so where a
    client reads defaults, as it does for `limit`, not in prose only."""
    operation = doc["paths"]["/api/v1/pim/bulk-jobs"]["get"]
    [job_type] = [p for p in operation["parameters"] if p.get("name") == "type"]
    assert job_type["schema"]["default"] == "BULK_UPDATE"
    assert job_type["schema"]["default"] in job_type["schema"]["enum"]


def test_a_post_that_reads_no_body_says_so_and_declares_what_a_body_sent_to_it_gets(router: Router, doc: dict[str, Any]) -> None:
    refusing = sorted((route.method, route.template) for route in router.routes if route.refuses_body)
    assert refusing == [
        ("POST", "/api/v1/pim/bulk-jobs/{job_id}/cancel"),
        ("POST", "/api/v1/pim/export"),
        ("POST", "/api/v1/pim/notification-deliveries/{delivery_id}/redeliver"),
        ("POST", "/api/v1/pim/notification-settings/rotate-secret"),
        ("POST", "/api/v1/pim/validation/{issue_id}/resolve"),
    ]
    for method, template in refusing:
        operation = doc["paths"][template][method.lower()]
        assert "requestBody" not in operation
        assert {"400", "413", "415", "422"} <= set(operation["responses"]), template
        assert "Takes no request body" in operation["description"], template
    # Every route that takes a body answers 415 to a content-coded one.
    for route in router.routes:
        if route.method in ("POST", "PUT", "PATCH"):
            assert "415" in doc["paths"][route.template][route.method.lower()]["responses"], route.template


def test_the_id_and_sku_filters_declare_the_length_the_server_refuses_past(doc: dict[str, Any]) -> None:
    from common.services import catalog

    def lengths(path: str) -> dict[str, Any]:
        return {p["name"]: p["schema"].get("maxLength") for p in doc["paths"][path]["get"]["parameters"] if p.get("in") == "query"}

    validation = lengths("/api/v1/pim/validation")
    assert validation["product_id"] == validation["job_id"] == lengths("/api/v1/pim/products")["sku"] == catalog.FILTER_MAX_LENGTH
    # Counted in characters, as JSON Schema's maxLength is: the longest allowed is under 1,500 bytes
    # in UTF-8 (4 bytes a character at most), Firestore's limit on an indexed value (its bytes + 1).
    assert catalog.FILTER_MAX_LENGTH * 4 + 1 <= 1500
