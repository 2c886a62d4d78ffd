"""Issue 9, bad input: whatever a caller sends is answered with a clear 4xx and writes nothing.

Everything here goes over HTTP to the running stack, exactly as a caller would; raw sockets where
`requests` refuses to send the bytes (truncated bodies, CR/LF in headers). `test_bulk_jobs_api.py`
already covers one example of each error status; this file is the exhaustive sweep.

The plain helpers at the top are imported by the other `test_reliability_*` files.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from google.api_core import exceptions as gexc

from tests.conftest import Tenant

PIM = "/api/v1/pim"
JOBS = f"{PIM}/bulk-jobs"
JOB_TYPES = ("BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE")
GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
TERMINAL = ("COMPLETED", "FAILED")
# Routes that answer without credentials, on purpose. Any other route must authenticate; a route
# added later that answers an anonymous caller fails the isolation table until it is listed here.
PUBLIC_ROUTES = {("GET", "/healthz"), ("GET", f"{PIM}/openapi.json")}


# -- helpers shared by the reliability files -------------------------------------------------------


def json_error(response: requests.Response | RawResponse) -> dict[str, Any]:
    """The `{"error": {"code", "message"}}` body of an error answer (asserting that shape)."""
    content_type = response.headers.get("Content-Type", "")
    assert content_type.startswith("application/json"), f"{response.status_code} {content_type}: {response.text[:300]}"
    body = json.loads(response.text)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    return dict(error)


def assert_nothing_written(tenant: Tenant) -> None:
    """No job of any type, no audit event, no product, no issue: the tenant is as new."""
    for job_type in JOB_TYPES:
        listed = tenant.get(JOBS, params={"type": job_type})
        assert listed.status_code == 200 and listed.json() == [], (job_type, listed.text[:300])
    for path in ("/audit", "/products", "/validation"):
        listed = tenant.get(f"{PIM}{path}")
        assert listed.status_code == 200 and listed.json() == [], (path, listed.text[:300])


@dataclass
class RawResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def raw_request(api_url: str, head: str, body: bytes = b"", *, half_close: bool = True, timeout: float = 20) -> RawResponse:
    """Send exactly these bytes (request line and headers in `head`, CRLF-separated) over a socket."""
    url = urlsplit(api_url)
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().title()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, content)


def neutralize_job(org_id: str, tenant_id: str, job_id: str) -> int:
    """Test cleanup: close a job that must not keep running (one a known bug leaves PROCESSING for
    ever, or one too big to wait for), and its chunks, so workers skip its messages and the reconciler
    (and other tests' in-process `reconcile()`) never republish them. Returns how many chunks it has;
    changes nothing once the job is terminal."""
    from common.clients import firestore_client
    from common.store.paths import Scope, job_ref, read

    db = firestore_client()
    ref = job_ref(Scope(org_id, tenant_id), job_id)
    snap = read(ref)
    if snap.exists and snap.get("status") not in TERMINAL:
        ref.update({"status": "FAILED"})  # from here on every chunk message is acknowledged unread
    chunks = [c.reference for c in ref.collection("chunks").select(["done"]).stream() if not c.get("done")]
    for start in range(0, len(chunks), 400):
        for attempt in range(10):
            batch = db.batch()
            for chunk in chunks[start : start + 400]:
                batch.update(chunk, {"done": True, "counted_done": True})
            try:
                batch.commit()
                break
            except gexc.Aborted:
                # Workers still hold some of these chunks in their step transactions (eight chunks
                # run at once on the stack): the emulator gives up waiting for their locks.
                if attempt == 9:
                    raise
                time.sleep(0.5)
    return len(list(ref.collection("chunks").select([]).stream()))


def wait_job(tenant: Tenant, job_id: str, timeout: float) -> dict[str, Any]:
    """The job once terminal, or its last state when `timeout` runs out (never raises)."""
    deadline = time.monotonic() + timeout
    while True:
        job = dict(tenant.get(f"{JOBS}/{job_id}").json())
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# -- 1. 100,000 tiny items are accepted -----------------------------------------------------------


def test_100_000_tiny_items_are_accepted_and_dispatched(tenant: Tenant) -> None:
    """Accepted in one request and split by dispatch; not awaited (the 5,000-item delivery test proves
    the application at scale). The job is closed once dispatched so its 500 chunks do not queue ahead
    of every later test's jobs."""
    n = 100_000
    started = time.monotonic()
    response = tenant.post(JOBS, json={"job_type": "BULK_DELETE", "payload": [f"p{i}" for i in range(n)]})
    accept_seconds = time.monotonic() - started
    assert response.status_code == 200, response.text[:300]
    created = response.json()
    assert created["status"] == "PENDING" and created["total_items"] is None
    assert json.loads(created["payload_json"]) == [f"p{i}" for i in range(n)]
    try:
        # The record says so once dispatched: total_items is the item count.
        deadline = time.monotonic() + 60
        while (job := tenant.get(f"{JOBS}/{created['id']}").json())["total_items"] is None:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["total_items"] == n and job["status"] in ("PROCESSING", "COMPLETED", "FAILED")
        listed = tenant.get(JOBS, params={"type": "BULK_DELETE"}).json()
        assert [(j["id"], j["total_items"]) for j in listed] == [(created["id"], n)]
    finally:
        closed = neutralize_job(tenant.org_id, tenant.tenant_id, created["id"])
    print(f"100k items: accepted in {accept_seconds:.2f}s, dispatched into {closed} chunks in {time.monotonic() - started:.1f}s")


# -- 2. malformed, mistyped, oversized and ill-shaped create requests -----------------------------


_DEFAULT: Any = object()


def _create(job_type: Any = "BULK_IMPORT", payload: Any = _DEFAULT, **extra: Any) -> bytes:
    body = {"job_type": job_type, "payload": [{"title": "x"}] if payload is _DEFAULT else payload, **extra}
    return json.dumps(body).encode()


def _with_item(item_json: bytes) -> bytes:
    return b'{"job_type": "BULK_IMPORT", "payload": [' + item_json + b"]}"


def _deep_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_objects(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


BadCase = tuple[str, Callable[[], bytes], str | None, int | tuple[int, ...], str | None]
J = "application/json"
ANY_4XX = tuple(range(400, 500))  # the status and code are the envelope parser's to choose

MALFORMED: list[BadCase] = [
    ("unterminated", lambda: b'{"job_type": "BULK_IMPORT", "payload": [{"title": "x"}]', J, 400, "malformed_json"),
    ("trailing-garbage", lambda: _create() + b"xyz", J, 400, "malformed_json"),
    ("two-documents", lambda: _create() + _create(), J, 400, "malformed_json"),
    ("single-quotes", lambda: b"{'job_type': 'BULK_IMPORT', 'payload': [{'title': 'x'}]}", J, 400, "malformed_json"),
    ("trailing-comma", lambda: b'{"job_type": "BULK_IMPORT", "payload": [{"title": "x"},]}', J, 400, "malformed_json"),
    ("comment", lambda: b'{"job_type": "BULK_IMPORT", /* c */ "payload": [{"title": "x"}]}', J, 400, "malformed_json"),
    ("unquoted-key", lambda: b'{job_type: "BULK_IMPORT", "payload": [{"title": "x"}]}', J, 400, "malformed_json"),
    ("control-char", lambda: _with_item(b'{"title": "a\x00b"}'), J, 400, "malformed_json"),
    ("utf8-bom", lambda: b"\xef\xbb\xbf" + _create(), J, 400, "malformed_json"),
    ("empty-body", lambda: b"", J, 400, "missing_body"),
    ("whitespace-body", lambda: b" \r\n\t ", J, 400, "missing_body"),
    ("body-null", lambda: b"null", J, 400, "invalid_body"),
    ("body-array", lambda: b"[]", J, 400, "invalid_body"),
    ("body-string", lambda: b'"BULK_IMPORT"', J, 400, "invalid_body"),
    ("body-number", lambda: b"42", J, 400, "invalid_body"),
    ("body-true", lambda: b"true", J, 400, "invalid_body"),
    ("body-empty-object", lambda: b"{}", J, 400, "missing_field"),
    # Invalid UTF-8 and lone surrogates, inside an item.
    ("utf8-invalid-byte", lambda: _with_item(b'{"title": "\xc3\x28"}'), J, 400, "malformed_json"),
    ("utf8-overlong-slash", lambda: _with_item(b'{"title": "\xc0\xaf"}'), J, 400, "malformed_json"),
    ("utf8-encoded-surrogate", lambda: _with_item(b'{"title": "\xed\xa0\x80"}'), J, 400, "malformed_json"),
    ("latin1-byte", lambda: _with_item(b'{"title": "caf\xe9"}'), J, 400, "malformed_json"),
    ("utf16-body", lambda: _create().decode().encode("utf-16"), J, 400, "malformed_json"),
    ("lone-high-surrogate", lambda: _with_item(b'{"title": "\\ud800"}'), J, 400, "malformed_json"),
    ("lone-low-surrogate", lambda: _with_item(b'{"title": "\\udc00x"}'), J, 400, "malformed_json"),
    ("reversed-surrogates", lambda: _with_item(b'{"title": "\\udc00\\ud800"}'), J, 400, "malformed_json"),
    # Numbers JSON does not have, or a float cannot hold.
    ("nan", lambda: _with_item(b'{"title": "x", "attributes": {"n": NaN}}'), J, 400, "malformed_json"),
    ("infinity", lambda: _with_item(b'{"title": "x", "attributes": {"n": Infinity}}'), J, 400, "malformed_json"),
    ("minus-infinity", lambda: _with_item(b'{"title": "x", "attributes": {"n": -Infinity}}'), J, 400, "malformed_json"),
    ("1e999", lambda: _with_item(b'{"title": "x", "attributes": {"n": 1e999}}'), J, 400, "malformed_json"),
    ("minus-1e999", lambda: _with_item(b'{"title": "x", "attributes": {"n": -1e999}}'), J, 400, "malformed_json"),
    ("1E400-in-array", lambda: _with_item(b'{"title": "x", "attributes": {"n": [1, 1E400]}}'), J, 400, "malformed_json"),
    ("5000-digit-integer", lambda: _with_item(b'{"title": "x", "attributes": {"n": ' + b"9" * 5000 + b"}}"), J, 400, "malformed_json"),
    # Duplicate keys, at every level.
    (
        "duplicate-payload-key",
        lambda: b'{"job_type": "BULK_IMPORT", "payload": [{"title": "a"}], "payload": [{"title": "b"}]}',
        J,
        400,
        "malformed_json",
    ),
    ("duplicate-item-key", lambda: _with_item(b'{"title": "a", "title": "b"}'), J, 400, "malformed_json"),
    ("duplicate-nested-key", lambda: _with_item(b'{"title": "a", "attributes": {"x": {"k": 1, "k": 2}}}'), J, 400, "malformed_json"),
    # 10,000 levels of nesting, inside the payload items and elsewhere.
    ("deep-arrays-in-item", lambda: _with_item(b'{"title": "x", "attributes": {"deep": ' + _deep_arrays(10_000) + b"}}"), J, 400, "malformed_json"),
    ("deep-objects-in-item", lambda: _with_item(b'{"title": "x", "attributes": ' + _deep_objects(10_000) + b"}"), J, 400, "malformed_json"),
    ("deep-item", lambda: _with_item(_deep_arrays(10_000)), J, 400, "malformed_json"),
    ("deep-job-type", lambda: b'{"job_type": ' + _deep_objects(10_000) + b', "payload": [{"title": "x"}]}', J, 400, "malformed_json"),
    ("deep-100k", lambda: _with_item(_deep_arrays(100_000)), J, 400, "malformed_json"),
]

CONTENT_TYPES: list[BadCase] = [
    ("no-content-type", _create, None, 415, "unsupported_media_type"),
    ("form-urlencoded", _create, "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("multipart", _create, "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
    ("xml", _create, "application/xml", 415, "unsupported_media_type"),
    ("text-json", _create, "text/json", 415, "unsupported_media_type"),
    ("jsonx", _create, "application/jsonx", 415, "unsupported_media_type"),
    ("charset-latin1", _create, "application/json; charset=latin-1", 415, "unsupported_media_type"),
    ("charset-utf16", _create, "application/json; charset=utf-16", 415, "unsupported_media_type"),
]

TOO_LARGE: list[BadCase] = [
    ("5mb-title", lambda: _create(payload=[{"title": "t" * 5_000_000}]), J, 413, "payload_too_large"),
    ("item-just-over-256kb", lambda: _create(payload=[{"title": "ok"}, {"title": "x", "description": "d" * 262_144}]), J, 413, "payload_too_large"),
    ("delete-id-over-256kb", lambda: _create("BULK_DELETE", ["i" * 262_200]), J, 413, "payload_too_large"),
    ("200001-items", lambda: _create("BULK_DELETE", ["a"] * 200_001), J, 413, "payload_too_large"),
]

WRONG_TYPES: list[BadCase] = [
    *(
        (f"job_type-{name}", (lambda v=value: _create(job_type=v)), J, 422, "invalid_job_type")
        for name, value in [
            ("int", 1),
            ("float", 1.5),
            ("null", None),
            ("bool", True),
            ("list", ["BULK_IMPORT"]),
            ("empty-list", []),
            ("object", {"$gt": ""}),
        ]
    ),
    *(
        (f"job_type-{name}", (lambda v=value: _create(job_type=v)), J, 422, "invalid_job_type")
        for name, value in [
            ("lowercase", "bulk_import"),
            ("trailing-space", "BULK_IMPORT "),
            ("leading-space", " BULK_IMPORT"),
            ("empty", ""),
            ("export", "BULK_EXPORT"),
            ("proto", "__proto__"),
            ("nul-suffix", "BULK_IMPORT\u0000"),
            ("fullwidth", "ＢＵＬＫ_ＩＭＰＯＲＴ"),
            ("sql", "BULK_IMPORT' OR 1=1 --"),
            ("enum-value-path", "JobType.BULK_IMPORT"),
        ]
    ),
    *(
        (f"payload-{name}", (lambda v=value: _create(payload=v)), J, 422, "invalid_payload")
        for name, value in [
            ("null", None),
            ("int", 1),
            ("float", 2.5),
            ("bool", True),
            ("string", "x"),
            ("json-in-string", '[{"title": "x"}]'),
        ]
    ),
    # An object payload is the ProductImportData envelope: anything else shaped as an object is refused.
    ("payload-object", lambda: _create(payload={"title": "x"}), J, ANY_4XX, None),
    ("payload-empty-object", lambda: _create(payload={}), J, ANY_4XX, None),
    ("envelope-string", lambda: _create(payload={"ProductImportData": "x"}), J, ANY_4XX, None),
    ("envelope-products-string", lambda: _create(payload={"ProductImportData": {"ProductsToImport": "x"}}), J, ANY_4XX, None),
    ("envelope-products-null", lambda: _create(payload={"ProductImportData": {"ProductsToImport": None}}), J, ANY_4XX, None),
    ("delete-object-payload", lambda: _create("BULK_DELETE", {"ids": ["x"]}), J, 422, "invalid_payload"),
    ("payload-empty", lambda: _create(payload=[]), J, 422, "empty_payload"),
    ("missing-job_type", lambda: json.dumps({"payload": [{"title": "x"}]}).encode(), J, 400, "missing_field"),
    ("missing-payload", lambda: json.dumps({"job_type": "BULK_IMPORT"}).encode(), J, 400, "missing_field"),
    ("null-payload-key-only", lambda: b'{"job_type": null}', J, 400, "missing_field"),
    ("extra-field-id", lambda: _create(id=str(uuid.uuid4())), J, 422, "unknown_field"),
    ("extra-field-tenant", lambda: _create(tenant_id="other"), J, 422, "unknown_field"),
    ("extra-field-status", lambda: _create(status="COMPLETED"), J, 422, "unknown_field"),
]

WRONG_SHAPE: list[BadCase] = [
    *(
        (f"{job_type}-{name}", (lambda t=job_type, v=value: _create(t, v)), J, 422, "invalid_payload")
        for job_type, cases in {
            "BULK_IMPORT": [
                ("int", [1]),
                ("null", [None]),
                ("list", [[]]),
                ("string", ["Merino"]),
                ("bool", [True]),
                ("late-int", [{"title": "x"}, 5]),
            ],
            "BULK_UPDATE": [("string", ["some-id"]), ("null", [None]), ("nested-list", [[{"id": "x"}]]), ("float", [1.5])],
            "BULK_DELETE": [
                ("object", [{"id": "x"}]),
                ("null", [None]),
                ("int", [1]),
                ("list", [["x"]]),
                ("bool", [True]),
                ("late-object", ["ok", {"id": "x"}]),
            ],
        }.items()
        for name, value in cases
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        pytest.param(body, ct, status, code, id=name)
        for name, body, ct, status, code in MALFORMED + CONTENT_TYPES + TOO_LARGE + WRONG_TYPES + WRONG_SHAPE
    ],
)
def test_bad_create_request_is_a_json_4xx_and_writes_nothing(
    tenant: Tenant, body: Callable[[], bytes], content_type: str | None, status: int | tuple[int, ...], code: str | None
) -> None:
    headers = tenant.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = requests.post(f"{tenant.api_url}{JOBS}", data=body(), headers=headers, timeout=60)
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), response.text[:300]
    error = json_error(response)
    assert code is None or error["code"] == code, error
    assert_nothing_written(tenant)


def test_nesting_within_the_parser_limit_is_accepted_then_refused_per_item(tenant: Tenant) -> None:
    """900 levels parse; the item is then refused by the storable-attributes rule, never a crash."""
    payload = [{"title": "ok", "sku": "NEST-OK", **GOOD}]
    body = _with_item(b'{"title": "deep", "attributes": {"a": ' + _deep_objects(900) + b"}}")
    response = requests.post(f"{tenant.api_url}{JOBS}", data=body, headers={**tenant.headers(), "Content-Type": J}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    deep = tenant.wait_job(response.json()["id"])
    assert (deep["status"], deep["processed_items"], deep["failed_items"]) == ("FAILED", 0, 1)
    [result] = tenant.get(f"{JOBS}/{deep['id']}/results").json()
    assert result["result"] == "failed" and result["errors"][0]["code"] == "invalid_value", result
    ok = tenant.wait_job(tenant.create_job("BULK_IMPORT", payload)["id"])
    assert ok["status"] == "COMPLETED"
    assert [p["sku"] for p in tenant.get(f"{PIM}/products").json()] == ["NEST-OK"]


# -- 3. bytes requests will not send: truncated bodies, CR/LF in headers --------------------------


def _head(tenant: Tenant, method: str, path: str, extra: str = "", *, tenant_header: str | None = None) -> str:
    tenant_value = tenant.tenant_id if tenant_header is None else tenant_header
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {tenant.token}\r\nX-Org-ID: {tenant.org_id}\r\nX-Tenant-ID: {tenant_value}\r\n{extra}"
    )


def test_truncated_body_is_400_and_writes_nothing(tenant: Tenant) -> None:
    body = _create()
    # Content-Length promises more than arrives; the client then closes its side.
    long_claim = raw_request(tenant.api_url, _head(tenant, "POST", JOBS, f"Content-Type: {J}\r\nContent-Length: {len(body) + 100}\r\n"), body)
    assert long_claim.status_code == 400 and json_error(long_claim)["code"] == "truncated_body"
    # Content-Length shorter than the body: the server reads what was declared, which is not JSON.
    short_claim = raw_request(tenant.api_url, _head(tenant, "POST", JOBS, f"Content-Type: {J}\r\nContent-Length: 20\r\n"), body)
    assert short_claim.status_code == 400 and json_error(short_claim)["code"] == "malformed_json"
    # A Content-Length no server would accept is refused before any read.
    huge_claim = raw_request(tenant.api_url, _head(tenant, "POST", JOBS, f"Content-Type: {J}\r\nContent-Length: 99999999999999999999\r\n"), body)
    assert huge_claim.status_code == 413 and json_error(huge_claim)["code"] == "payload_too_large"
    assert_nothing_written(tenant)


def test_truncated_chunked_body_is_400_not_500(tenant: Tenant) -> None:
    body = _create()
    head = _head(tenant, "POST", JOBS, f"Content-Type: {J}\r\nTransfer-Encoding: chunked\r\n")
    truncated = raw_request(tenant.api_url, head, b"400\r\n" + body)  # declares 1024 bytes, sends ~50, closes
    bad_size = raw_request(tenant.api_url, head, b"zz\r\n" + body + b"\r\n0\r\n\r\n")
    assert_nothing_written(tenant)
    for response in (truncated, bad_size):
        assert response.status_code == 400, response.text[:200]
        assert json_error(response)["code"] in ("truncated_body", "malformed_body", "bad_request")


def test_cr_lf_and_other_control_bytes_in_tenant_headers_are_refused(make_tenant: Callable[..., Tenant]) -> None:
    """`requests` and `http.client` refuse to send these, so they go over a raw socket."""
    a, b = make_tenant(), make_tenant()
    b.create_job("BULK_DELETE", [str(uuid.uuid4())])  # B has data a successful injection would show
    listing = f"{JOBS}?type=BULK_DELETE"
    attempts = {
        "crlf-second-tenant": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\r\nX-Tenant-ID: {b.tenant_id}"),
        "crlf-second-org": _head(a, "GET", listing, tenant_header=f"{b.tenant_id}\r\nX-Org-ID: {b.org_id}"),
        "crlf-header-smuggled-auth": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\r\nAuthorization: Bearer {b.token}"),
        "duplicate-tenant-a-first": _head(a, "GET", listing, f"X-Tenant-ID: {b.tenant_id}\r\n"),
        "duplicate-tenant-b-first": _head(a, "GET", listing, tenant_header=b.tenant_id) + f"X-Tenant-ID: {a.tenant_id}\r\n",
        "bare-lf": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\nX-Tenant-ID: {b.tenant_id}"),
        "bare-cr": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\rX-Tenant-ID: {b.tenant_id}"),
        "nul": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\x00{b.tenant_id}"),
        "obs-fold": _head(a, "GET", listing, tenant_header=f"{a.tenant_id}\r\n {b.tenant_id}"),
    }
    table = []
    for name, head in attempts.items():
        response = raw_request(a.api_url, head)
        table.append((name, response.status_code, response.headers.get("Content-Type", "")))
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
        for secret in (b.tenant_id, b.org_id, b.token):
            assert secret not in response.text, (name, response.text[:300])
        if response.headers.get("Content-Type", "").startswith("application/json"):
            json_error(response)
        # Anything else is gunicorn refusing the request line/headers before the app sees them.
    print("\n".join(f"{n:28} {s} {c}" for n, s, c in table))
    assert_nothing_written(a)


# -- 4. ids from another tenant inside a payload ------------------------------------------------


def test_other_tenants_product_ids_in_delete_and_update_are_product_not_found(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant(), make_tenant()
    created = b.wait_job(b.create_job("BULK_IMPORT", [{"title": "B secret", "sku": "B-SKU-1", **GOOD}])["id"])
    assert created["status"] == "COMPLETED"
    [b_result] = b.get(f"{JOBS}/{created['id']}/results").json()
    b_id = b_result["product_id"]
    b_before = b.get(f"{PIM}/products/{b_id}").json()
    b_audit_before = b.all_pages(f"{PIM}/audit")

    delete = a.wait_job(a.create_job("BULK_DELETE", [b_id])["id"])
    update = a.wait_job(a.create_job("BULK_UPDATE", [{"id": b_id, "title": "pwned"}, {"sku": "B-SKU-1", "title": "pwned"}])["id"])
    for job, n in ((delete, 1), (update, 2)):
        assert (job["status"], job["total_items"], job["processed_items"], job["failed_items"]) == ("FAILED", n, 0, n)
        results = a.get(f"{JOBS}/{job['id']}/results").json()
        assert [r["result"] for r in results] == ["failed"] * n
        assert all(r["product_id"] is None and r["errors"][0]["code"] == "product_not_found" for r in results)
    issues = a.all_pages(f"{PIM}/validation")
    # The update's failure of b_id supersedes the delete's: one open issue per identifier, the latest.
    assert sorted((i["identifier"], i["job_id"]) for i in issues) == sorted([(b_id, update["id"]), ("B-SKU-1", update["id"])])
    assert [i["issue_type"] for i in issues] == ["PRODUCT_NOT_FOUND"] * 2
    assert all(i["product_id"] is None and i["tenant_id"] == a.tenant_id for i in issues)
    assert a.get(f"{PIM}/products").json() == []
    # A's SKU index is A's own: B's SKU imported into A is a new product, not a duplicate of B's.
    imported = a.wait_job(a.create_job("BULK_IMPORT", [{"title": "A's own", "sku": "B-SKU-1", **GOOD}])["id"])
    [a_result] = a.get(f"{JOBS}/{imported['id']}/results").json()
    assert a_result["result"] == "created" and a_result["product_id"] != b_id
    assert not [i for i in a.all_pages(f"{PIM}/validation") if i["issue_type"] == "DUPLICATE_SKU"]
    # B's product, issues and audit trail are exactly as they were.
    assert b.get(f"{PIM}/products/{b_id}").json() == b_before
    assert b.all_pages(f"{PIM}/audit") == b_audit_before
    assert b.get(f"{PIM}/validation").json() == []


def test_wrong_types_in_every_item_field_fail_that_item_only(tenant: Tenant) -> None:
    """Item fields are checked by the pipeline (the seed's 47-of-50 example): each bad item is a
    failed result with its reason; the good item is applied; nothing half-written."""
    bad_imports: list[dict[str, Any]] = [
        {"title": 1},
        {"title": None},
        {"title": ["x"]},
        {"title": {"en": "x"}},
        {"title": True},
        {"title": ""},
        {"title": "   "},
        {"title": "t" * 501},
        {"title": "x", "sku": 12},
        {"title": "x", "sku": ""},
        {"title": "x", "sku": "s" * 129},
        {"title": "x", "description": ["d"]},
        {"title": "x", "category": {"a": 1}},
        {"title": "x", "brand": 1.5},
        {"title": "x", "gtin": 4006381333931},
        {"title": "x", "attributes": "colour=red"},
        {"title": "x", "attributes": ["red"]},
        {"title": "x", "attributes": {"n": 2**64}},
        {"title": "x", "attributes": {"__name__": 1}},
        {"title": "x", "attributes": {"": 1}},
        {"title": "x", "attributes": {"k" * 257: 1}},
        {"title": "x", "attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
        {"title": "x", "variants": {"sku": "v"}},
        {"title": "x", "variants": [1]},
        {"title": "x", "variants": [{"sku": 1}]},
        {"title": "x", "variants": [{"sku": "v", "colour": "red"}]},
        {"title": "x", "variants": [{"sku": f"v{i}"} for i in range(51)]},
        {"title": "x", "colour": "red"},
        {"title": "x", "id": "chosen-id"},
    ]
    payload = [{"title": "Good one", "sku": "GOOD-1", **GOOD}, *bad_imports]
    job = tenant.wait_job(tenant.create_job("BULK_IMPORT", payload)["id"])
    n_bad = len(bad_imports)
    assert (job["status"], job["total_items"], job["processed_items"], job["failed_items"]) == ("FAILED", n_bad + 1, 1, n_bad)
    results = tenant.get(f"{JOBS}/{job['id']}/results", params={"limit": 1000}).json()
    assert [r["index"] for r in results] == list(range(n_bad + 1))
    assert results[0]["result"] == "created"
    for result in results[1:]:
        assert result["result"] == "failed" and result["errors"], result
        assert {e["code"] for e in result["errors"]} <= {"invalid_value", "missing_field", "unknown_field", "invalid_item"}, result
    assert [p["sku"] for p in tenant.get(f"{PIM}/products").json()] == ["GOOD-1"]
    failures = [i for i in tenant.all_pages(f"{PIM}/validation") if i["issue_type"] == "IMPORT_REJECTED"]
    assert sorted(i["item_index"] for i in failures) == list(range(1, n_bad + 1))

    [good] = tenant.get(f"{PIM}/products").json()
    bad_updates: list[Any] = [
        {"id": 1},
        {"id": None},
        {"id": ["x"]},
        {"id": good["id"], "title": None},
        {"id": good["id"], "title": 5},
        {"id": good["id"], "sku": 5},
        {"id": good["id"], "attributes": "x"},
        {"id": good["id"], "variants": "x"},
        {"id": good["id"], "unknown": 1},
        {"title": "no id nor sku"},
        {"id": "../" + good["id"]},
        {"id": "__name__"},
        {"id": "a/b"},
        {"sku": ""},
    ]
    update = tenant.wait_job(tenant.create_job("BULK_UPDATE", bad_updates)["id"])
    assert (update["status"], update["processed_items"], update["failed_items"]) == ("FAILED", 0, len(bad_updates))
    delete = tenant.wait_job(tenant.create_job("BULK_DELETE", ["", "../" + good["id"], "__name__", "a/b", ".", "..", good["id"] + "/"])["id"])
    assert (delete["status"], delete["processed_items"], delete["failed_items"]) == ("FAILED", 0, 7)
    assert tenant.get(f"{PIM}/products/{good['id']}").json() == good


# -- 5. items the pipeline cannot store must fail alone, not wedge their chunk ---------------------


@pytest.fixture
def poison_cleanup() -> Iterator[list[tuple[str, str, str]]]:
    jobs: list[tuple[str, str, str]] = []
    yield jobs
    for org_id, tenant_id, job_id in jobs:
        neutralize_job(org_id, tenant_id, job_id)


def _poison_job(tenant: Tenant, cleanup: list[tuple[str, str, str]], bad_item: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    payload = [{"title": "Before", "sku": "P-1", **GOOD}, bad_item, {"title": "After", "sku": "P-2", **GOOD}]
    job = tenant.create_job("BULK_IMPORT", payload)
    cleanup.append((tenant.org_id, tenant.tenant_id, job["id"]))
    control = tenant.create_job("BULK_IMPORT", [{"title": "Control", "sku": "P-3", **GOOD}])
    assert tenant.wait_job(control["id"])["status"] == "COMPLETED"  # the pipeline is running
    done = wait_job(tenant, job["id"], timeout=5)
    return done, tenant.get(f"{JOBS}/{job['id']}/results").json()


def test_nested_arrays_in_attributes_fail_the_item_not_the_chunk(tenant: Tenant, poison_cleanup: list[tuple[str, str, str]]) -> None:
    done, results = _poison_job(tenant, poison_cleanup, {"title": "Matrix", "attributes": {"sizes": [[1, 2], [3, 4]]}})
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 2, 1), done
    assert [r["result"] for r in results] == ["created", "failed", "created"]


def test_item_with_thousands_of_unknown_fields_fails_alone(tenant: Tenant, poison_cleanup: list[tuple[str, str, str]]) -> None:
    item = {"title": "Wide", **{f"k{i}": 0 for i in range(20_000)}}  # ~250 KB, under the 256 KiB item limit
    done, results = _poison_job(tenant, poison_cleanup, item)
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 2, 1), done
    assert [r["result"] for r in results] == ["created", "failed", "created"]


# -- 6. injection strings in ids, headers and filters on every GET route --------------------------

INJECTIONS = [
    "../",
    "..",
    ".",
    "/",
    "a/b",
    "%2e%2e%2f",
    "__name__",
    "__key__",
    "' OR 1=1 --",
    '" OR ""="',
    '{"$gt": ""}',
    '{"$ne": null}',
    "*",
    "\\",
    "\u0000",
    "\u202e",
    "null",
    "-1",
]
# Which query parameters each route honours as a filter (anything else must be ignored).
FILTERS = {
    f"{JOBS}": ("type",),
    f"{JOBS}/{{job_id}}/results": ("status",),
    f"{PIM}/products": ("sku",),
    f"{PIM}/validation": ("severity", "issue_type", "product_id", "job_id"),
}
PROBE_PARAMS = ("type", "status", "sku", "severity", "issue_type", "product_id", "job_id", "org_id", "tenant_id", "id")
LIST_PARAMS = ("cursor", "limit")


def _get_routes() -> list[str]:
    from common.api import router

    return [r.template for r in router.routes if r.method == "GET" and (r.method, r.template) not in PUBLIC_ROUTES]


def _fill(template: str, ids: dict[str, str], default: str) -> str:
    """The template with its `{param}`s percent-encoded; dots too, or the client would resolve `.`/`..`."""
    return re.sub(r"\{(\w+)\}", lambda m: quote(ids.get(m.group(1), default), safe="").replace(".", "%2E"), template)


def test_injection_strings_in_ids_filters_and_headers_never_5xx_nor_other_tenants_data(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant(), make_tenant()
    b_job = b.wait_job(b.create_job("BULK_IMPORT", [{"title": "B only", "sku": "INJ-1"}, {"title": "B two", "sku": "INJ-2"}])["id"])
    a_job = a.wait_job(a.create_job("BULK_IMPORT", [{"title": "A only", "sku": "A-1"}, {"title": "A two", "sku": "A-2", **GOOD}])["id"])
    a_ids = {"job_id": a_job["id"], "product_id": a.get(f"{JOBS}/{a_job['id']}/results").json()[0]["product_id"]}
    b_products = sorted(p["id"] for p in b.get(f"{PIM}/products").json())
    b_markers = {b.org_id, b.tenant_id, b_job["id"], "B only", "B two", *b_products}
    b_page = b.get(f"{PIM}/products", params={"limit": 1})
    b_cursor = b_page.headers["X-Next-Cursor"]
    assert a.get(f"{PIM}/validation").json() and a.get(f"{PIM}/products").json(), "A needs data a widened filter would show"

    routes = _get_routes()
    baseline = {t: a.get(_fill(t, a_ids, "x")) for t in routes}
    probes: list[tuple[str, str, dict[str, str], dict[str, str], str]] = []  # (template, path, params, headers, kind)
    for template in routes:
        path = _fill(template, a_ids, "x")
        for name in re.findall(r"\{(\w+)\}", template):
            for value in [*INJECTIONS, b_job["id"], *b_products]:
                probes.append((template, _fill(template, {**a_ids, name: value}, "x"), {}, a.headers(), "path"))
        honoured = FILTERS.get(template, ())
        for param in PROBE_PARAMS:
            values = INJECTIONS if param in honoured else [*INJECTIONS[:4], b.org_id, b.tenant_id]
            probes += [(template, path, {param: v}, a.headers(), "filter" if param in honoured else "ignored") for v in values]
        for param in LIST_PARAMS:
            for value in [*INJECTIONS, b_cursor, b64("../x"), b64("__name__"), b64(b_job["id"]), "9" * 12, "1e3", "0x10"]:
                probes.append((template, path, {param: value}, a.headers(), "list"))
        for header in ("X-Tenant-ID", "X-Org-ID"):
            for value in [*INJECTIONS[:14], f"{a.tenant_id}/../{b.tenant_id}", f"{a.tenant_id},{b.tenant_id}"]:
                if "\u0000" in value or "\u202e" in value:
                    continue  # not sendable as a header value; covered by the raw-socket test
                probes.append((template, path, {}, a.headers(**{header: value}), "header"))

    Probe = tuple[str, str, dict[str, str], dict[str, str], str]

    def run(probe: Probe) -> tuple[Probe, requests.Response]:
        _, path, params, headers, _ = probe
        return probe, requests.get(f"{a.api_url}{path}", params=params, headers=headers, timeout=60)

    failures = []
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(run, probes))
    for (template, path, params, headers, kind), response in answers:
        where = f"{kind} {path} {params} {[(k, v) for k, v in headers.items() if k.startswith('X-')]}"
        sent = path + json.dumps(params) + json.dumps(headers)
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {where}: {response.text[:120]}")
            continue
        leaked = [m for m in b_markers if m in response.text and m not in sent]
        if leaked:
            failures.append(f"LEAK {leaked} {where}")
        if response.status_code >= 400:
            json_error(response)
            continue
        if kind == "header":
            failures.append(f"{response.status_code} with a forged header {where}")
        elif kind == "path":
            failures.append(f"{response.status_code} for an injected id {where}: {response.text[:120]}")
        elif kind == "filter" and response.json() != []:
            failures.append(f"non-empty result for an injected filter {where}: {response.text[:120]}")
        elif kind == "ignored" and response.content != baseline[template].content:
            failures.append(f"an unknown parameter changed the answer {where}")
    print(f"{len(probes)} injection probes over {len(routes)} GET routes, {len(failures)} failures")
    assert not failures, "\n".join(failures[:40])


def test_filter_values_too_long_for_a_query_are_400_not_500(tenant: Tenant) -> None:
    tenant.wait_job(tenant.create_job("BULK_IMPORT", [{"title": "x", "sku": "LONG"}])["id"])
    probes = [(f"{PIM}/products", {"sku": "s" * 1500}), (f"{PIM}/products", {"sku": "s" * 20_000})]
    probes += [(f"{PIM}/validation", {name: "😀" * 500}) for name in ("issue_type", "product_id", "job_id")]
    statuses = []
    for path, params in probes:
        response = tenant.get(path, params=params)
        statuses.append(response.status_code)
        if response.status_code < 500:
            assert response.status_code == 400 and json_error(response)["code"] == "invalid_query"
    assert all(s < 500 for s in statuses), statuses
