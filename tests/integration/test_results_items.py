"""`GET /bulk-jobs/{id}/results?include=item`: each result with the item as submitted, read from the
stored chunks the page covers, so a caller builds a retry's corrections without its source file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from common.services import jobs, product_import
from common.store import blobs
from common.store import jobs as job_store
from common.store.paths import Scope
from tests.conftest import mint
from tests.helpers import sent_requests
from tests.integration.conftest import Pipeline
from tests.integration.test_job_lifecycle import big_payload, products
from tests.integration.test_product_import_jobs import VOCABULARY, envelope, product

ROOT = Path(__file__).resolve().parents[2]
RESULTS = "/api/v1/pim/bulk-jobs/{}/results"
BATCH_GET = "/google.firestore.v1.Firestore/BatchGetDocuments"


@pytest.fixture(scope="module")
def api() -> FlaskClient:
    """The api function in this process, so the test sees the Firestore reads a request makes."""
    return functions_framework.create_app(target="api", source=str(ROOT / "main.py")).test_client()


def headers(scope: Scope) -> dict[str, str]:
    token, _, _ = mint(scope.org_id, [scope.tenant_id])
    return {"Authorization": f"Bearer {token}", "X-Org-ID": scope.org_id, "X-Tenant-ID": scope.tenant_id}


def every_page(api: FlaskClient, job_id: str, auth: dict[str, str], **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every result, following X-Next-Cursor; and how many pages it took."""
    rows: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = api.get(RESULTS.format(job_id), query_string=params, headers=auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        rows += response.get_json()
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if not cursor:
            return rows, pages
        params = {**params, "cursor": cursor}


def test_failed_results_carry_their_items_read_a_few_chunks_at_once_and_correct_a_retry(pipeline: Pipeline, api: FlaskClient) -> None:
    payload = products(450, "RI")  # three chunks of 200, 200 and 50 items
    for i in (1, 250, 449):
        del payload[i]["title"]
    payload[250]["description"] = "Déjà vu: a long enough description, with \"quotes\" ✓"
    job = pipeline.run("BULK_IMPORT", payload)
    assert (job["status"], job["failed_items"]) == ("FAILED", 3)
    auth = headers(pipeline.scope)

    with sent_requests(BATCH_GET) as sent:
        response = api.get(RESULTS.format(job["id"]), query_string={"status": "failed", "include": "item"}, headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = response.get_json()
    assert [(r["index"], r["result"], r["item"]) for r in rows] == [(i, "failed", payload[i]) for i in (1, 250, 449)]
    # The three chunks' items in one read, and no item read on its own.
    asked = [[d for d in request.documents if "/chunk_items/" in d] for request in sent]
    assert [len(docs) for docs in asked if docs] == [3]

    plain = api.get(RESULTS.format(job["id"]), query_string={"status": "failed"}, headers=auth).get_json()
    assert plain == [{k: v for k, v in r.items() if k != "item"} for r in rows] and "item" not in plain[0]

    # What the items are for: corrections built from them, without the source file.
    corrections = {str(r["index"]): {**r["item"], "title": f"Fixed {r['index']}"} for r in rows}
    retry = jobs.retry_job(pipeline.principal, job["id"], {"corrections": corrections})
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 3)
    assert all("item" not in r for r in pipeline.results(retry["id"]))  # only when asked
    again, _ = jobs.results(pipeline.scope, retry["id"], start=0, limit=10, failed_only=False, with_items=True)
    assert [(r["retry_of_index"], r["item"]) for r in again] == [(int(k), v) for k, v in corrections.items()]


def test_a_product_import_jobs_results_carry_its_entries_of_products_to_import(pipeline: Pipeline, api: FlaskClient) -> None:
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    entries = [product("00000000000017"), product("00000000000024", ImportMode="Update"), product("00000000000031")]
    job = pipeline.run("BULK_IMPORT", envelope(entries, "Ignore"))
    assert job["status"] == "FAILED"
    rows = api.get(RESULTS.format(job["id"]), query_string={"include": "item"}, headers=headers(pipeline.scope)).get_json()
    assert [r["item"] for r in rows] == entries
    assert [r["Result"] for r in rows] == ["Success", "Failure", "Success"]  # the vendor's fields stay beside it


def test_an_unknown_include_is_400_and_a_pending_job_has_no_results_yet(pipeline: Pipeline, api: FlaskClient) -> None:
    job = pipeline.create("BULK_IMPORT", products(2, "RP"))
    auth = headers(pipeline.scope)
    for value in ("items", "item,payload", "ITEM"):
        response = api.get(RESULTS.format(job["id"]), query_string={"include": value}, headers=auth)
        assert response.status_code == 400, value
        assert response.get_json()["error"]["code"] == "invalid_query"
    pending = api.get(RESULTS.format(job["id"]), query_string={"include": "item"}, headers=auth)
    assert (pending.status_code, pending.get_json()) == (200, [])


def test_the_items_of_a_job_whose_payload_expired_before_it_ran_are_gone(pipeline: Pipeline, api: FlaskClient) -> None:
    job = pipeline.create("BULK_IMPORT", big_payload("RX"))
    stored = job_store.get(pipeline.scope, job["id"])
    assert stored is not None
    blobs.bucket().blob(stored["payload_object"]).delete()  # what the bucket's retention rule does
    assert pipeline.drive(job["id"])["status"] == "FAILED"
    auth = headers(pipeline.scope)
    gone = api.get(RESULTS.format(job["id"]), query_string={"include": "item"}, headers=auth)
    assert gone.status_code == 410
    error = gone.get_json()["error"]
    assert error["code"] == "payload_expired" and "without include=item" in error["message"]
    assert api.get(RESULTS.format(job["id"]), headers=auth).get_json() == []


def test_the_items_of_a_job_whose_payload_expired_after_it_ran_are_still_there(pipeline: Pipeline, api: FlaskClient) -> None:
    """The chunks keep their items: only the payload object in the bucket has a retention."""
    payload = big_payload("RY")
    del payload[7]["title"]
    job = pipeline.run("BULK_IMPORT", payload)
    stored = job_store.get(pipeline.scope, job["id"])
    assert stored is not None
    blobs.bucket().blob(stored["payload_object"]).delete()
    response = api.get(RESULTS.format(job["id"]), query_string={"include": "item", "status": "failed"}, headers=headers(pipeline.scope))
    assert [(r["index"], r["item"]) for r in response.get_json()] == [(7, payload[7])]


def test_pages_with_items_end_at_the_byte_budget_and_follow_on(pipeline: Pipeline, api: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = products(450, "RB")
    job = pipeline.run("BULK_IMPORT", payload)
    auth = headers(pipeline.scope)
    plain, plain_pages = every_page(api, job["id"], auth, limit=1000)
    monkeypatch.setattr(jobs, "ITEMS_PAGE_BYTES", 20_000)  # about 200 of these items
    rows, pages = every_page(api, job["id"], auth, limit=1000, include="item")
    assert (plain_pages, pages) == (1, 3)
    assert [{k: v for k, v in r.items() if k != "item"} for r in rows] == plain
    assert [r["item"] for r in rows] == payload
