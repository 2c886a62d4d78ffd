"""Every paged list keeps its order across pages, and a walk goes on when the document a page ended
on is deleted before the next page is asked for: the cursor carries that document's order-by values,
not a name to read back."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from common import errors
from common.store import catalog, exports, jobs, vocab
from common.store.paths import Scope, coll, rows

Page = tuple[list[dict[str, Any]], str | None]


@dataclass(frozen=True)
class Listing:
    collection: str
    newest_first: bool
    fetch: Callable[[Scope, int, str | None], Page]
    fields: dict[str, Any]  # what a document needs to be in the list


LISTINGS = {
    "products": Listing("products", True, lambda s, n, c: catalog.list_products(s, sku=None, limit=n, cursor=c), {}),
    "issues": Listing("validation_issues", True, lambda s, n, c: catalog.list_issues(s, filters={}, limit=n, cursor=c), {"resolved": False}),
    "audit": Listing("audit_events", True, lambda s, n, c: catalog.list_audit(s, limit=n, cursor=c), {}),
    "deliveries": Listing("notification_deliveries", True, lambda s, n, c: exports.list_deliveries(s, limit=n, cursor=c), {}),
    # A projection without created_at: the cursor still needs it, the page does not show it.
    "jobs": Listing(
        "bulk_jobs", True, lambda s, n, c: jobs.list_page(s, "BULK_DELETE", limit=n, cursor=c, fields=["job_type"]), {"job_type": "BULK_DELETE"}
    ),
    "taxonomy nodes": Listing("taxonomy_nodes", False, lambda s, n, c: vocab.list_taxonomy_nodes(s, limit=n, cursor=c), {}),
}
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def seed(scope: Scope, listing: Listing) -> list[str]:
    """Nine documents, ties on created_at among them (ordered by id), and their ids in list order."""
    docs = coll(scope, listing.collection)
    batch = docs._client.batch()
    for n in range(9):
        doc_id = f"{n % 3}-{uuid.uuid4().hex[:6]}"
        batch.set(docs.document(doc_id), {"created_at": T0 + timedelta(microseconds=n // 3), **listing.fields})
    batch.commit()
    # What the list showed before its cursors carried values: one query, Firestore's own tie order.
    direction = firestore.Query.DESCENDING if listing.newest_first else firestore.Query.ASCENDING
    return [doc_id for doc_id, _ in rows(docs.order_by("created_at", direction=direction))]


def walk(scope: Scope, listing: Listing, *, on_page: Callable[[list[dict[str, Any]]], None] = lambda page: None) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = listing.fetch(scope, 2, cursor)
        seen += [d["id"] for d in page]
        if cursor is None:
            return seen
        on_page(page)


@pytest.fixture
def scope() -> Scope:
    return Scope(str(uuid.uuid4()), str(uuid.uuid4()))


@pytest.mark.parametrize("name", LISTINGS)
def test_a_walk_a_page_at_a_time_is_the_whole_list_in_its_order(scope: Scope, name: str) -> None:
    listing = LISTINGS[name]
    in_order = seed(scope, listing)
    assert walk(scope, listing) == in_order
    first, _ = listing.fetch(scope, 2, None)
    assert set(first[0]) == {"id", *listing.fields} | ({"created_at"} if name != "jobs" else set())


@pytest.mark.parametrize("name", LISTINGS)
def test_deleting_the_document_a_page_ended_on_does_not_stop_the_walk(scope: Scope, name: str) -> None:
    listing = LISTINGS[name]
    in_order = seed(scope, listing)
    deleted: list[str] = []

    def delete_the_boundary(page: list[dict[str, Any]]) -> None:
        deleted.append(page[-1]["id"])
        coll(scope, listing.collection).document(page[-1]["id"]).delete()

    seen = walk(scope, listing, on_page=delete_the_boundary)
    assert len(deleted) == 4  # pages ended on 2, 4, 6 and 8 of the 9
    assert seen == in_order  # each boundary was shown before it was deleted: nothing skipped or repeated
    assert walk(scope, listing) == [i for i in in_order if i not in deleted]


def test_a_cursor_issued_before_values_were_carried_still_reads_its_document(scope: Scope) -> None:
    listing = LISTINGS["products"]
    in_order = seed(scope, listing)
    legacy = base64.urlsafe_b64encode(in_order[3].encode()).decode().rstrip("=")
    page, _ = listing.fetch(scope, 2, legacy)
    assert [d["id"] for d in page] == in_order[4:6]
    coll(scope, listing.collection).document(in_order[3]).delete()
    with pytest.raises(errors.BadRequest) as refused:  # it has only the name to go by
        listing.fetch(scope, 2, legacy)
    assert refused.value.code == "invalid_cursor"


def test_a_cursor_of_one_list_is_refused_by_another(scope: Scope) -> None:
    seed(scope, LISTINGS["products"])
    seed(scope, LISTINGS["audit"])
    _, cursor = LISTINGS["products"].fetch(scope, 2, None)
    with pytest.raises(errors.BadRequest) as refused:
        LISTINGS["audit"].fetch(scope, 2, cursor)
    assert refused.value.code == "invalid_cursor"


# A list under one filter and the same list under another: (collection, documents' fields, fetch).
FILTERED = {
    "jobs by type": (
        "bulk_jobs",
        [{"job_type": "BULK_IMPORT", "status": "FAILED"}, {"job_type": "BULK_UPDATE", "status": "FAILED"}],
        lambda s, i, c: jobs.list_page(s, ("BULK_IMPORT", "BULK_UPDATE")[i], limit=2, cursor=c),
    ),
    "jobs by status": (
        "bulk_jobs",
        [{"job_type": "BULK_IMPORT", "status": "FAILED"}, {"job_type": "BULK_IMPORT", "status": "COMPLETED"}],
        lambda s, i, c: jobs.list_page(s, "BULK_IMPORT", status=(None, "COMPLETED")[i], limit=2, cursor=c),
    ),
    "products by sku": (
        "products",
        [{"sku": "A"}, {"sku": "B"}],
        lambda s, i, c: catalog.list_products(s, sku=("A", "B")[i], limit=2, cursor=c),
    ),
    "issues by filter": (
        "validation_issues",
        [{"resolved": False, "severity": "ERROR", "job_id": "j-1"}, {"resolved": False, "severity": "ERROR", "job_id": "j-2"}],
        lambda s, i, c: catalog.list_issues(s, filters=({"severity": "ERROR"}, {"severity": "ERROR", "job_id": "j-2"})[i], limit=2, cursor=c),
    ),
}


@pytest.mark.parametrize("name", FILTERED)
def test_a_cursor_is_refused_by_the_same_list_under_another_filter(scope: Scope, name: str) -> None:
    collection, fields, fetch = FILTERED[name]
    docs = coll(scope, collection)
    for n in range(6):
        docs.document(f"{n}-{uuid.uuid4().hex[:6]}").set({"created_at": T0 + timedelta(microseconds=n), **fields[n % 2]})
    _, cursor = fetch(scope, 0, None)
    assert cursor is not None
    fetch(scope, 0, cursor)  # its own list takes it
    with pytest.raises(errors.BadRequest) as refused:
        fetch(scope, 1, cursor)
    assert refused.value.code == "invalid_cursor"


def test_a_cursor_issued_before_values_were_carried_must_name_a_document_of_the_list(scope: Scope) -> None:
    """It carries no list key, only a document: one another list shows is refused too."""
    docs = coll(scope, "bulk_jobs")
    for n, job_type in enumerate(["BULK_IMPORT", "BULK_UPDATE", "BULK_IMPORT", "BULK_IMPORT"]):
        docs.document(f"j-{n}").set({"created_at": T0 + timedelta(microseconds=n), "job_type": job_type, "status": "FAILED"})
    legacy = base64.urlsafe_b64encode(b"j-3").decode().rstrip("=")
    page, _ = jobs.list_page(scope, "BULK_IMPORT", limit=1, cursor=legacy)
    assert [d["id"] for d in page] == ["j-2"]
    for job_type, status in (("BULK_UPDATE", None), ("BULK_IMPORT", "COMPLETED")):
        with pytest.raises(errors.BadRequest) as refused:
            jobs.list_page(scope, job_type, status=status, limit=1, cursor=legacy)
        assert refused.value.code == "invalid_cursor"
