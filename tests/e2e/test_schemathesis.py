"""schemathesis against the running stack: every operation of the served OpenAPI document, fuzzed.

Fails on any 5xx, any status or content type the document does not list for the operation, and any
body that does not match its schema. Schemathesis generates every part of each request from the
document except the tenant headers, fixed to a real tenant so requests reach the handlers: reads run
in one tenant seeded with a finished job and export (so lists return real objects), each writing
operation in a fresh tenant of its own (so what one generates cannot break another's run).
"""

from __future__ import annotations

import importlib
import time
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from infra.stack import Stack
from tests.conftest import Tenant, mint

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MAX_EXAMPLES = 15
SEED_ITEMS = [
    {"title": "Fuzz Seed Sweater", "sku": "FZ-1", "description": "A long enough description for the seeded product.", "category": "Knitwear"},
    {"title": "Fuzz Seed Shirt", "sku": "FZ-2", "attributes": {"size": "M"}, "variants": [{"sku": "FZ-2-M", "attributes": {"size": "M"}}]},
    {"sku": "FZ-3"},  # no title: a failed item, with its validation issue
]

# "METHOD /path" of operations with a known server bug -> the reason (reported; fixed by the route's owner).
KNOWN_FAILING: dict[str, str] = {}


def served_operations() -> list[tuple[str, str]]:
    """(method, path) of every route the api function serves, known at collection time."""
    importlib.import_module("main")
    from common.api import router

    return [(route.method, route.template) for route in router.routes]


def _param(method: str, path: str) -> Any:
    label = f"{method} {path}"
    marks = [pytest.mark.xfail(reason=KNOWN_FAILING[label], strict=True)] if label in KNOWN_FAILING else []
    return pytest.param(method, path, id=label, marks=marks)


def new_tenant(stack: Stack) -> Tenant:
    org_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    token, email, user_id = mint(org_id, [tenant_id], role="admin")
    return Tenant(org_id, tenant_id, token, email, user_id, stack.api_url)


@pytest.fixture(scope="module")
def api_schema(stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.api_url}/api/v1/pim/openapi.json")


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Tenant:
    """A tenant with products, a failed item's issue, audit events and a completed export."""
    tenant = new_tenant(stack)
    tenant.wait_job(tenant.create_job("BULK_IMPORT", SEED_ITEMS)["id"])
    export_id = tenant.post("/api/v1/pim/export").json()["export_id"]
    deadline = time.monotonic() + 60
    while tenant.get(f"/api/v1/pim/exports/{export_id}").json()["status"] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, "the seed export did not finish"
        time.sleep(0.2)
    return tenant


@pytest.mark.parametrize(("method", "path"), [_param(m, p) for m, p in served_operations()])
def test_operation_conforms(api_schema: schemathesis.BaseSchema, seeded: Tenant, stack: Stack, method: str, path: str) -> None:
    tenant = seeded if method == "GET" else new_tenant(stack)
    strategy = api_schema[path][method].as_strategy(headers=tenant.headers())

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=60)

    conforms()


def test_a_product_imported_with_null_attributes_can_be_read(tenant: Tenant) -> None:
    job = tenant.wait_job(tenant.create_job("BULK_IMPORT", [{"title": "Null attributes", "attributes": None}])["id"])
    assert job["status"] == "COMPLETED", job
    listed = tenant.get("/api/v1/pim/products")
    assert listed.status_code == 200, listed.text
