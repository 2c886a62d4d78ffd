"""Document reads leave no stream open: the Firestore channel reads streams on the calling thread,
and a stream dropped before its end stays in memory for the life of the process. Query rows are
the fields `Query.stream` would give, without its snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from google.cloud import firestore

from common.clients import firestore_client
from common.store.catalog import FirestoreLoader
from common.store.paths import Scope, coll, data, read, rows
from tests.helpers import left_open, sent_requests, tracked_streams

BATCH_GET = "/google.firestore.v1.Firestore/BatchGetDocuments"


@pytest.mark.streams_left_open
def test_read_ends_its_stream_where_document_get_drops_it() -> None:
    products = coll(Scope(str(uuid.uuid4()), str(uuid.uuid4())), "products")
    products.document("p1").set({"title": "One", "sku": "S-1"})

    with tracked_streams() as opened:
        assert read(products.document("p1")).to_dict() == {"title": "One", "sku": "S-1"}
        assert read(products.document("p1"), ["sku"]).to_dict() == {"sku": "S-1"}
        assert not read(products.document("missing")).exists
    assert len(opened) == 3 and left_open(opened) == []

    # What `read` is there for, and what the suite's guard (tests/conftest.py) catches.
    with tracked_streams() as opened:
        assert products.document("p1").get().exists
    assert left_open(opened) == [BATCH_GET]


EVERY_KIND = {
    "null": None,
    "flag": True,
    "count": 3,
    "share": 0.25,
    "at": datetime(2026, 11, 23, 1, 2, 3, 456789, tzinfo=UTC),
    "title": "Ünïcode",
    "raw": b"\x00\xff",
    "tags": ["a", 1, None, {"deep": [datetime(2026, 1, 1, tzinfo=UTC)]}],
    "counts": {"ok": 2, "nested": {"failed": 0}},
    "empty_list": [],
    "empty_map": {},
}


def test_rows_are_the_fields_a_query_stream_gives_in_its_order() -> None:
    jobs = coll(Scope(str(uuid.uuid4()), str(uuid.uuid4())), "bulk_jobs")
    for n in range(7):
        jobs.document(f"job-{n}").set({**EVERY_KIND, "n": n, "kind": "odd" if n % 2 else "even"})
    query = jobs.where(filter=firestore.FieldFilter("kind", "==", "odd")).order_by("n", direction=firestore.Query.DESCENDING)

    with tracked_streams() as opened:
        got = list(rows(query))
        projected = list(rows(query.select(["n", "at"]).limit(2)))
    assert left_open(opened) == []

    assert got == [(s.id, data(s)) for s in query.stream()]
    assert [doc_id for doc_id, _ in got] == ["job-5", "job-3", "job-1"]
    assert got[0][1] == {**EVERY_KIND, "n": 5, "kind": "odd"}
    assert projected == [("job-5", {"n": 5, "at": EVERY_KIND["at"]}), ("job-3", {"n": 3, "at": EVERY_KIND["at"]})]
    assert list(rows(query.where(filter=firestore.FieldFilter("n", ">", 100)))) == []


def test_a_steps_open_issue_queries_run_outside_its_transaction() -> None:
    """`FirestoreLoader.open_issues` reads outside the step's transaction on purpose (its docstring
    says why: in the emulator, transactional queries lock their ranges and a large delete's steps
    time out on each other). What reaches Firestore is the evidence: RunQuery requests with no
    transaction in them, while the step's transaction is open."""
    scope = Scope(str(uuid.uuid4()), str(uuid.uuid4()))
    products = [f"p{i:02}" for i in range(35)]  # two queries: an `in` filter takes 30
    coll(scope, "validation_issues").document("i1").set({"product_id": "p33", "identifier": "S-33", "resolved": False})
    coll(scope, "validation_issues").document("i2").set({"product_id": "p34", "identifier": "S-34", "resolved": True})
    transaction = firestore_client().transaction()
    transaction._begin()
    try:
        with sent_requests("/google.firestore.v1.Firestore/RunQuery") as queries:
            found = FirestoreLoader(scope, transaction).open_issues(products)
    finally:
        transaction._rollback()
    assert found["p33"] == [{"id": "i1", "identifier": "S-33"}] and found["p34"] == [] and len(found) == 35
    assert len(queries) == 2
    assert all(not q.transaction and "new_transaction" not in q and "read_time" not in q for q in queries)
