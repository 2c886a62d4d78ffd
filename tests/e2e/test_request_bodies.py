"""Request bodies over HTTP on the running stack: content-coded bodies."""

from __future__ import annotations

import gzip
import json

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
