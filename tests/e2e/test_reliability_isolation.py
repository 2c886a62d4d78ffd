"""Issue 9, isolation and secrets: no token reaches another tenant's data, and no token is ever echoed.

The table is built from `common.api.router.routes`, so a route added later is covered without
touching this file: every `{param}` gets the id of one of tenant B's real resources (a random id
where this file does not know how to make one), and every credential that must not reach B's data
is tried against it. Only the routes in `PUBLIC_ROUTES` may answer without credentials, and even
they must not carry anything of B's.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import requests

from tests.conftest import Tenant, mint
from tests.e2e.test_reliability_input import GOOD, JOBS, PIM, PUBLIC_ROUTES, json_error, raw_request

# Every token and every error body this module produced, for the secrets test at the end.
TOKENS: set[str] = set()
ERROR_BODIES: list[str] = []


@dataclass
class Row:
    method: str
    template: str
    case: str
    status: int
    expected: str
    leaked: list[str]

    @property
    def ok(self) -> bool:
        return not self.leaked and self.status < 500 and _status_ok(self.expected, self.status)


def _status_ok(expected: str, status: int) -> bool:
    if expected == "own-scope":
        return True  # A acting on its own tenant: any non-5xx answer; the leak check is what matters
    if expected == "public":
        return status == 200
    return status in {"401": (401,), "403": (403,), "404": (404,), "4xx": tuple(range(400, 500))}[expected]


def _request_body(method: str, template: str, b_ids: dict[str, str]) -> dict[str, Any] | None:
    if method in ("GET", "HEAD", "DELETE"):
        return None
    if template.endswith("/bulk-jobs"):
        return {"job_type": "BULK_DELETE", "payload": [b_ids["payload_product_id"]]}
    return {}


def _b_resources(b: Tenant) -> tuple[dict[str, str], set[str]]:
    """B's real resources: ids to put in paths, and strings whose appearance in A's answer is a leak."""
    secret = f"B-SECRET-{uuid.uuid4().hex[:8]}"
    job = b.wait_job(
        b.create_job(
            "BULK_IMPORT",
            [{"title": f"{secret} one", "sku": f"{secret}-1", **GOOD}, {"title": f"{secret} two", "sku": f"{secret}-2"}],
        )["id"]
    )
    assert job["status"] == "COMPLETED"
    products = b.get(f"{PIM}/products").json()
    issues = b.get(f"{PIM}/validation").json()
    assert len(products) == 2 and issues, "B needs products and open issues"
    ids = {"job_id": job["id"], "product_id": products[0]["id"], "issue_id": issues[0]["id"]}
    # The id A puts in its own BULK_DELETE payload comes back in A's own failure issue: not a marker.
    payload_product_id = products[1]["id"]
    export = b.post(f"{PIM}/export")
    if export.status_code == 202 and "export_id" in export.json():
        ids["export_id"] = export.json()["export_id"]
        deadline = time.monotonic() + 60  # let it settle, so B's snapshot is stable
        while b.get(f"{PIM}/exports/{ids['export_id']}").json().get("status") in ("QUEUED", "RUNNING"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    deliveries = b.get(f"{PIM}/notification-deliveries")
    if deliveries.ok and deliveries.json():
        ids["delivery_id"] = deliveries.json()[0]["id"]
    markers = {secret, b.org_id, b.tenant_id, b.email, b.user_id, *ids.values(), products[0]["id"]}
    markers |= {e["id"] for e in b.get(f"{PIM}/audit").json() if e["entity_id"] != payload_product_id}
    return ids | {"payload_product_id": payload_product_id}, markers


def _snapshot(b: Tenant) -> dict[str, Any]:
    """Everything B can read without ids, to prove nothing of B's changed."""
    snap: dict[str, Any] = {t: b.get(JOBS, params={"type": t}).json() for t in ("BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE")}
    for path in ("/products", "/validation", "/audit", "/notification-settings", "/notification-deliveries"):
        response = b.get(f"{PIM}{path}")
        snap[path] = response.json() if response.ok else response.status_code
    return snap


def test_every_route_refuses_every_foreign_credential(make_tenant: Callable[..., Tenant]) -> None:
    from common.api import router
    from common.store.tokens import revoke_token

    a, b = make_tenant(), make_tenant()
    org_mate = make_tenant(org_id=b.org_id)  # same org as B, another tenant
    b_ids, markers = _b_resources(b)
    before = _snapshot(b)

    revoked, _, _ = mint(b.org_id, [b.tenant_id])
    assert b.get(JOBS, headers=b.headers(Authorization=f"Bearer {revoked}")).status_code == 200
    revoke_token(revoked)
    expired, _, _ = mint(b.org_id, [b.tenant_id], expires_in=-1)
    viewer, _, _ = mint(b.org_id, [b.tenant_id], role="viewer")
    forged = "synq_" + uuid.uuid4().hex
    TOKENS.update({a.token, b.token, org_mate.token, revoked, expired, viewer, forged})

    def headers(token: str | None, org_id: str, tenant_id: str) -> dict[str, str]:
        h = {"X-Org-ID": org_id, "X-Tenant-ID": tenant_id}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return h

    # (case, headers, expected status for an authenticated route, applies to non-GET only)
    cases: list[tuple[str, dict[str, str], str, bool]] = [
        ("A token, A headers, B ids", headers(a.token, a.org_id, a.tenant_id), "404", False),
        ("A token, B headers", headers(a.token, b.org_id, b.tenant_id), "403", False),
        ("A token, A org + B tenant", headers(a.token, a.org_id, b.tenant_id), "403", False),
        ("A token, B org + A tenant", headers(a.token, b.org_id, a.tenant_id), "403", False),
        ("org-mate token, B headers", headers(org_mate.token, b.org_id, b.tenant_id), "403", False),
        ("B revoked token", headers(revoked, b.org_id, b.tenant_id), "401", False),
        ("B expired token", headers(expired, b.org_id, b.tenant_id), "401", False),
        ("forged token, B headers", headers(forged, b.org_id, b.tenant_id), "401", False),
        ("no token, B headers", headers(None, b.org_id, b.tenant_id), "401", False),
        ("B viewer, non-GET", headers(viewer, b.org_id, b.tenant_id), "403", True),
    ]
    rows: list[Row] = []
    a_jobs: list[str] = []
    for route in router.routes:
        params = re.findall(r"\{(\w+)\}", route.template)
        path = re.sub(r"\{(\w+)\}", lambda m: b_ids.get(m.group(1), str(uuid.uuid4())), route.template)
        body = _request_body(route.method, route.template, b_ids)
        for case, case_headers, expected, non_get_only in cases:
            if non_get_only and route.method == "GET":
                continue
            if (route.method, route.template) in PUBLIC_ROUTES:
                expected = "public"
            elif expected == "404" and not params:
                expected = "own-scope"  # no id to be foreign: A reads or writes its own tenant
            response = requests.request(route.method, f"{a.api_url}{path}", headers=case_headers, json=body, timeout=60)
            sent = path + json.dumps(case_headers) + json.dumps(body)
            leaked = sorted(m for m in markers if m in response.text and m not in sent)
            rows.append(Row(route.method, route.template, case, response.status_code, expected, leaked))
            if response.status_code >= 400:
                json_error(response)
                ERROR_BODIES.append(response.text)
            elif route.template.endswith("/bulk-jobs") and route.method == "POST":
                a_jobs.append(response.json()["id"])

    width = max(len(r.template) for r in rows) + 8
    print(f"\n{'route':{width}} {'case':28} status expected  result")
    for r in rows:
        print(f"{r.method + ' ' + r.template:{width}} {r.case:28} {r.status:>6} {r.expected:9} {'ok' if r.ok else 'FAIL ' + str(r.leaked)}")
    bad = [r for r in rows if not r.ok]
    leaks = [r for r in rows if r.leaked]
    print(f"{len(rows)} requests over {len(router.routes)} routes: {len(leaks)} leaks, {len(bad)} failures")
    assert not leaks, leaks
    assert not bad, bad
    # Each route was tried with every credential that applies to it.
    assert len(rows) == sum(len(cases) - (r.method == "GET") for r in router.routes)

    # What A created in its own tenant with B's product id in the payload touched nothing of B's.
    for job_id in a_jobs:
        done = a.wait_job(job_id)
        assert (done["status"], done["failed_items"]) == ("FAILED", 1)
    assert _snapshot(b) == before


def test_a_cursor_or_a_link_of_another_tenant_reads_nothing(make_tenant: Callable[..., Tenant]) -> None:
    a, b = make_tenant(), make_tenant()
    a.wait_job(a.create_job("BULK_IMPORT", [{"title": f"A {i}", "sku": f"A-{i}"} for i in range(3)])["id"])
    b.wait_job(b.create_job("BULK_IMPORT", [{"title": f"B {i}", "sku": f"B-{i}"} for i in range(3)])["id"])
    for path in ("/products", "/validation", "/audit"):
        page = b.get(f"{PIM}{path}", params={"limit": 1})
        cursor, link = page.headers["X-Next-Cursor"], page.headers["Link"]
        foreign = a.get(f"{PIM}{path}", params={"limit": 1, "cursor": cursor})
        assert foreign.status_code == 400 and json_error(foreign)["code"] == "invalid_cursor"
        # The link is relative to the URL B called; A follows it from there, with A's own token.
        next_url = urljoin(page.url, link.split(">")[0].lstrip("<"))
        followed = a.get(next_url.removeprefix(a.api_url))
        assert followed.status_code == 400, followed.text[:200]
        assert b.tenant_id not in followed.text


# -- secrets ------------------------------------------------------------------------------------


def test_no_token_in_any_log_or_error_body(make_tenant: Callable[..., Tenant], stack) -> None:  # type: ignore[no-untyped-def]
    """Runs last in this module: covers its own failed attempts and every token the table used."""
    from common.store.tokens import revoke_token

    a, b = make_tenant(), make_tenant()
    revoked, _, _ = mint(a.org_id, [a.tenant_id])
    revoke_token(revoked)
    expired, _, _ = mint(a.org_id, [a.tenant_id], expires_in=-1)
    viewer, _, _ = mint(a.org_id, [a.tenant_id], role="viewer")
    tokens = {a.token, b.token, revoked, expired, viewer}
    TOKENS.update(tokens)
    bad_authorizations = [
        f"Bearer {a.token}x",
        f"Bearer x{a.token}",
        f"Bearer {a.token[:-1]}",
        f"Bearer {revoked}",
        f"Bearer {expired}",
        f"bearer  {a.token}  extra",
        f"Basic {a.token}",
        f"Token {a.token}",
        a.token,
        f"Bearer {a.token.upper()}",
    ]
    answers: list[str] = []
    for authorization in bad_authorizations:
        for method, path in (("GET", JOBS), ("POST", JOBS), ("GET", f"{PIM}/products/{uuid.uuid4()}"), ("GET", f"{PIM}/audit")):
            response = requests.request(method, f"{a.api_url}{path}", headers=a.headers(Authorization=authorization), timeout=60)
            assert response.status_code == 401, (authorization, response.text)
            answers.append(response.text)
    # Right token, wrong place: as a tenant id, in the query string, for another tenant, as a viewer writing.
    attempts = [
        a.get(JOBS, headers=a.headers(**{"X-Tenant-ID": a.token})),
        a.get(JOBS, headers=a.headers(**{"X-Org-ID": a.token})),
        a.get(JOBS, headers=b.headers(Authorization=f"Bearer {a.token}")),
        a.get(JOBS, params={"access_token": a.token, "token": a.token}, headers={"X-Org-ID": a.org_id, "X-Tenant-ID": a.tenant_id}),
        a.post(JOBS, json={"job_type": "BULK_IMPORT", "payload": [{"title": "x"}]}, headers=a.headers(Authorization=f"Bearer {viewer}")),
        a.post(JOBS, data=b"{not json", headers={**a.headers(), "Content-Type": "application/json"}),
    ]
    assert [r.status_code for r in attempts][2:] == [403, 400, 403, 400]
    # A token in the query string is refused as a parameter the route does not take (naming it, not its value).
    assert attempts[3].json()["error"]["code"] == "unknown_parameter"
    assert all(r.status_code in (400, 403) for r in attempts[:2])  # a token is shaped like a valid id
    answers += [r.text for r in attempts]
    # Header bytes no client library sends, over a socket.
    head = f"GET {JOBS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {a.token}\r\n"
    head += f"X-Org-ID: {a.org_id}\r\nX-Tenant-ID: {a.tenant_id}\n\r\n"
    answers.append(raw_request(a.api_url, head).text)
    # A request that makes the api log a traceback (while the 1,500-byte filter bug stands): the log
    # line must carry the path, not the credentials.
    answers.append(a.get(f"{PIM}/products", params={"sku": "s" * 2000}).text)
    # And a real job through the whole pipeline, so every function has logged something.
    done = a.wait_job(a.create_job("BULK_IMPORT", [{"title": "Logged", "sku": "LOG-1"}])["id"])
    assert done["status"] == "COMPLETED"
    time.sleep(1.5)  # the reconcile function runs on a one-second tick

    answers += ERROR_BODIES
    for token in TOKENS:
        secret = token.removeprefix("synq_")
        for text in answers:
            assert token not in text and secret not in text, text[:300]
    logs = sorted(stack.log_path("api").parent.glob("*.log"))
    names = {p.stem for p in logs}
    assert {"api", "dispatch_job", "process_chunk", "reconcile"} <= names, names
    # The api logs only server errors, so it may be empty; the pipeline functions log every job.
    assert stack.log_path("dispatch_job").stat().st_size > 0 and stack.log_path("process_chunk").stat().st_size > 0
    scanned = 0
    for log in logs:
        text = log.read_text(errors="replace")
        scanned += len(text)
        for token in TOKENS:
            assert token not in text and token.removeprefix("synq_") not in text, f"token found in {log.name}"
    print(f"{len(TOKENS)} tokens checked against {len(answers)} error bodies and {len(logs)} logs ({scanned} characters)")
