"""Request bodies over HTTP on the running stack: content-coded bodies, a retry's body shaped as a create's, filter lengths as the OpenAPI document
states them."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import requests

from tests.conftest import Tenant
from tests.e2e.test_reliability_input import assert_nothing_written, json_error

PIM = "/api/v1/pim"
JOBS = f"{PIM}/bulk-jobs"
J = "application/json"


def _post(tenant: Tenant, path: str, body: bytes | None, content_type: str | None = J, **headers: str) -> requests.Response:
    sent = tenant.headers(**headers) | ({"Content-Type": content_type} if content_type else {})
    return tenant.post(path, data=body, headers=sent)


# -- content codings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_a_content_coded_body_is_415_saying_to_send_it_uncompressed(tenant: Tenant, coding: str) -> None:
    body = gzip.compress(json.dumps({"job_type": "BULK_IMPORT", "payload": [{"title": "Zipped"}]}).encode())
    response = _post(tenant, JOBS, body, **{"Content-Encoding": coding})
    assert response.status_code == 415, response.text
    error = json_error(response)
    assert error["code"] == "unsupported_content_encoding" and "uncompressed" in error["message"]
    assert response.headers["Accept-Encoding"] == "identity"
    assert_nothing_written(tenant)


# -- a retry's body, shaped as a create's ---------------------------------------------------------------


@pytest.fixture
def failed_job(tenant: Tenant) -> dict[str, Any]:
    job = tenant.wait_job(tenant.create_job("BULK_IMPORT", [{"sku": "NO-TITLE"}])["id"])
    assert job["status"] == "FAILED"
    return job


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"42", b"true", b'[{"corrections": {}}]'])
def test_a_retry_body_that_is_not_an_object_is_400_invalid_body_as_for_a_create(tenant: Tenant, failed_job: dict[str, Any], body: bytes) -> None:
    created = _post(tenant, JOBS, body)
    retried = _post(tenant, f"{JOBS}/{failed_job['id']}/retry", body)
    assert (retried.status_code, json_error(retried)["code"]) == (created.status_code, json_error(created)["code"]) == (400, "invalid_body")
    assert tenant.get(f"{JOBS}/{failed_job['id']}").json().get("retried_by") is None


def test_a_retry_body_with_an_unknown_member_is_422_unknown_field_naming_it(tenant: Tenant, failed_job: dict[str, Any]) -> None:
    retried = _post(tenant, f"{JOBS}/{failed_job['id']}/retry", json.dumps({"corrections": {}, "payload": []}).encode())
    assert retried.status_code == 422
    assert json_error(retried)["code"] == "unknown_field" and json_error(retried)["details"] == {"field": "payload"}
    bad = _post(tenant, f"{JOBS}/{failed_job['id']}/retry", b'{"corrections": []}')
    assert bad.status_code == 422 and json_error(bad)["details"] == {"field": "corrections"}
    assert tenant.get(f"{JOBS}/{failed_job['id']}").json().get("retried_by") is None


# -- filter lengths, as the OpenAPI document declares them ------------------------------------------------------


def test_the_validation_id_filters_take_what_the_document_allows_and_refuse_past_it(tenant: Tenant) -> None:
    declared = {
        p["name"]: p["schema"]["maxLength"]
        for p in tenant.get(f"{PIM}/openapi.json").json()["paths"][f"{PIM}/validation"]["get"]["parameters"]
        if p.get("in") == "query" and p["name"] in ("product_id", "job_id")
    }
    for name, length in declared.items():
        for character in ("x", "€", "😀"):
            at_most = tenant.get(f"{PIM}/validation", params={name: character * length})
            assert at_most.status_code == 200 and at_most.json() == [], (name, character, at_most.text[:200])
            past = tenant.get(f"{PIM}/validation", params={name: character * (length + 1)})
            assert past.status_code == 400 and json_error(past)["code"] == "invalid_query", (name, character, past.text[:200])
