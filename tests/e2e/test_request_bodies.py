"""Request bodies over HTTP on the running stack: content-coded bodies, a retry's body shaped as a
create's, filter lengths as the OpenAPI document states them, and a body sent to a route that reads none."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from common.store.paths import Scope, coll, read
from tests.conftest import Tenant
from tests.e2e.test_reliability_input import assert_nothing_written, json_error

PIM = "/api/v1/pim"
JOBS = f"{PIM}/bulk-jobs"
J = "application/json"
# Every route that reads no body, with ids that name nothing: the body is refused before any lookup.
NO_BODY_ROUTES = [
    f"{PIM}/export",
    f"{JOBS}/{uuid.uuid4()}/cancel",
    f"{PIM}/validation/{uuid.uuid4()}/resolve",
    f"{PIM}/notification-settings/rotate-secret",
    f"{PIM}/notification-deliveries/{uuid.uuid4()}/redeliver",
]
REFUSED = [
    (b'{"format": "csv"}', J, 422, "unknown_field"),
    (b'{"status": "x", "format": "csv"}', J, 422, "unknown_field"),
    (b"{{{", J, 400, "malformed_json"),
    (b"[]", J, 400, "invalid_body"),
    (b'"csv"', J, 400, "invalid_body"),
    (b"true", J, 400, "invalid_body"),
    (b'{"format": "csv"}', "text/plain", 415, "unsupported_media_type"),
]


def _scope(tenant: Tenant) -> Scope:
    return Scope(tenant.org_id, tenant.tenant_id)


def _exports(tenant: Tenant) -> list[dict[str, Any]]:
    return [d.to_dict() or {} for d in coll(_scope(tenant), "exports").stream()]


def _key_record(tenant: Tenant, key: str) -> dict[str, Any] | None:
    snap = read(coll(_scope(tenant), "idempotency_keys").document(hashlib.sha256(f"{tenant.user_id}\n{key}".encode()).hexdigest()))
    return snap.to_dict() if snap.exists else None


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


# -- a body sent to a route that reads none ------------------------------------------------------------


@pytest.mark.parametrize("path", NO_BODY_ROUTES, ids=lambda p: p.split("/")[-1])
def test_a_body_sent_to_a_route_that_reads_none_is_refused_and_writes_nothing(tenant: Tenant, path: str) -> None:
    for body, content_type, status, code in REFUSED:
        key = str(uuid.uuid4())
        response = _post(tenant, path, body, content_type, **{"Idempotency-Key": key})
        assert response.status_code == status, (path, body, response.text)
        error = json_error(response)
        assert error["code"] == code, (path, body, error)
        if code == "unknown_field":
            assert error["details"] == {"field": "format"} and "takes no request body" in error["message"], error
        if code == "invalid_body":
            assert "takes no request body" in error["message"], error
        assert _key_record(tenant, key) is None  # refused before the key is claimed: nothing kept
    assert _exports(tenant) == []
    assert_nothing_written(tenant)


def test_export_with_a_format_is_refused_and_the_same_key_then_exports_once(tenant: Tenant) -> None:
    """The reviewer's case: `{"format": "csv"}` used to answer 202 and export the catalog as JSON Lines."""
    key = str(uuid.uuid4())
    refused = _post(tenant, f"{PIM}/export", b'{"format": "csv"}', **{"Idempotency-Key": key})
    assert refused.status_code == 422 and json_error(refused)["details"] == {"field": "format"}
    assert _exports(tenant) == [] and tenant.get(f"{PIM}/audit").json() == []
    # The key was not spent on the refused request: the corrected one runs, and is then replayed
    # whether the retry sends no body, an empty one or {}.
    first = _post(tenant, f"{PIM}/export", None, None, **{"Idempotency-Key": key})
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers, first.text
    for body in (b"", b"{}", b" null "):
        again = _post(tenant, f"{PIM}/export", body, **{"Idempotency-Key": key})
        assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true", (body, again.text)
        assert again.json() == first.json()
    assert [e["id"] for e in _exports(tenant)] == [first.json()["export_id"]]
    # A body the route refuses is still refused under a key that holds a success, never replayed as it.
    assert _post(tenant, f"{PIM}/export", b'{"format": "csv"}', **{"Idempotency-Key": key}).status_code == 422


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(None, None), (b"", J), (b" \r\n", J), (b"{}", J), (b"null", J), (b"", "text/plain")],
    ids=["none", "empty-json", "whitespace", "empty-object", "null", "empty-text"],
)
def test_no_body_an_empty_one_or_an_empty_object_still_exports(tenant: Tenant, body: bytes | None, content_type: str | None) -> None:
    response = _post(tenant, f"{PIM}/export", body, content_type)
    assert response.status_code == 202, response.text
    assert [e["id"] for e in _exports(tenant)] == [response.json()["export_id"]]


def test_cancel_and_rotate_secret_still_run_with_an_empty_object(tenant: Tenant) -> None:
    job = tenant.create_job("BULK_DELETE", [str(uuid.uuid4()) for _ in range(3)])
    cancelled = _post(tenant, f"{JOBS}/{job['id']}/cancel", b"{}")
    assert cancelled.status_code in (200, 409), cancelled.text  # 409 if it already ended
    settings = tenant.request("PUT", f"{PIM}/notification-settings", json={"channel": "webhook", "webhook_url": "http://127.0.0.1:9/hook"})
    assert settings.status_code == 200, settings.text
    rotated = _post(tenant, f"{PIM}/notification-settings/rotate-secret", b"{}")
    assert rotated.status_code == 200, rotated.text


def test_an_editor_sending_a_body_to_an_admin_route_that_reads_none_is_403_first(make_tenant: Callable[..., Tenant]) -> None:
    """The refusal comes once the token is checked, 401/403 first as on every route: an editor is
    told the route is not theirs, not how to shape a body it could never send there (the body-reading
    admin route, PUT /notification-settings, answers 403 to any body too)."""
    editor = make_tenant(role="editor")
    for body in (b'{"format": "csv"}', b"[]"):
        refused = _post(editor, f"{PIM}/notification-settings/rotate-secret", body)
        assert refused.status_code == 403, refused.text
        assert json_error(refused)["code"] == "forbidden"
        put = editor.request("PUT", f"{PIM}/notification-settings", data=body, headers=editor.headers() | {"Content-Type": J})
        assert put.status_code == 403, put.text
