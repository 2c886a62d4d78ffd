"""One local stack for the whole session: real emulators and functions on free ports.

Each test gets its own org and tenant (`tenant` fixture), so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.stack import Stack
from tests.helpers import left_open, tracked_streams

ROOT = Path(__file__).resolve().parent.parent
NEEDS_STACK = ("integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"/tests/{kind}/" in str(item.fspath) for kind in NEEDS_STACK):
            item.fixturenames.append("stack")


@pytest.fixture(autouse=True)
def _streams_read_to_their_end(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every gRPC stream a test's process opens is read to its end (`common.store.paths.read`)."""
    if request.node.get_closest_marker("streams_left_open"):
        yield
        return
    with tracked_streams() as opened:
        yield
    assert not left_open(opened), f"streams dropped before their end: {left_open(opened)}"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    state = Path(tempfile.mkdtemp(prefix="synq-test-"))
    # Counted, but high: some tests send thousands of requests with one token; the rate-limit test
    # sets a low budget on its own token.
    budget = {"SYNQ_RATE_LIMIT_PER_MINUTE": "1000000"}
    test_stack = Stack(state_dir=state, api_port=0, seed_demo=False, reconcile_every=1.0, stale_after_seconds=60.0, extra_env=budget)
    from infra.stack import free_port

    test_stack.api_port = free_port()
    saved = dict(os.environ)
    test_stack.start()
    os.environ.update(test_stack.client_env())
    # The stack's own reconciler waits 60 s, so it never races a test that drives delivery itself;
    # in-process `reconcile()` calls (this process's settings) treat 3 s as stale.
    os.environ["SYNQ_STALE_AFTER_SECONDS"] = "3"
    _reset_process_caches()
    try:
        yield test_stack
    finally:
        test_stack.stop()
        os.environ.clear()
        os.environ.update(saved)
        _reset_process_caches()
        if os.environ.get("SYNQ_KEEP_TEST_STATE"):
            print(f"test stack state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def _reset_process_caches() -> None:
    from common.clients import reset_clients
    from common.config import get_settings

    get_settings.cache_clear()
    reset_clients()


@dataclass
class Tenant:
    """A fresh org and tenant with an admin token, and an HTTP client bound to them."""

    org_id: str
    tenant_id: str
    token: str
    email: str
    user_id: str
    api_url: str

    def headers(self, **overrides: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}", "X-Org-ID": self.org_id, "X-Tenant-ID": self.tenant_id}
        headers.update(overrides)
        return headers

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.api_url}{path}", headers=headers or self.headers(), timeout=60, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def create_job(self, job_type: str, payload: Any) -> dict[str, Any]:
        response = self.post("/api/v1/pim/bulk-jobs", json={"job_type": job_type, "payload": payload})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """Poll until the job is COMPLETED or FAILED."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(f"/api/v1/pim/bulk-jobs/{job_id}").json()
            if job["status"] in ("COMPLETED", "FAILED"):
                return dict(job)
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.2)

    def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            response = self.get(path, params=query)
            assert response.status_code == 200, response.text
            items += response.json()
            cursor = response.headers.get("X-Next-Cursor")
            if not cursor:
                return items


def mint(
    org_id: str, tenant_ids: list[str], *, role: str = "admin", email: str | None = None, expires_in: float | None = None
) -> tuple[str, str, str]:
    """(token, email, user id) for a new token, minted in-process against the test emulators."""
    from datetime import timedelta

    from common.models.base import utcnow
    from common.store.tokens import mint_token

    user_id = str(uuid.uuid4())
    email = email or f"{role}-{user_id[:8]}@example.com"
    expires = None if expires_in is None else utcnow() + timedelta(seconds=expires_in)
    token = mint_token(user_id=user_id, email=email, org_id=org_id, tenant_ids=tenant_ids, role=role, expires_at=expires)
    return token, email, user_id


@pytest.fixture
def make_tenant(stack: Stack) -> Callable[..., Tenant]:
    def make(role: str = "admin", org_id: str | None = None) -> Tenant:
        org_id = org_id or str(uuid.uuid4())
        tenant_id = str(uuid.uuid4())
        token, email, user_id = mint(org_id, [tenant_id], role=role)
        return Tenant(org_id, tenant_id, token, email, user_id, stack.api_url)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()
