"""A snapshot's fields are taken once, without the second deep copy `to_dict` makes; query rows
resume after the last row when a stream breaks, as `Query.stream` does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.cloud.firestore_v1.types import Document, RunQueryResponse, Value

from common.store.paths import RESTARTS_WITHOUT_PROGRESS, data, existing, rows

CLIENT = firestore.Client(project="p", credentials=AnonymousCredentials())  # built, never connected
REF = CLIENT.collection("jobs").document("j-1")
FIELDS = {"status": "COMPLETED", "created_at": datetime(2026, 11, 22, tzinfo=UTC), "counts": {"ok": 2}}


def snapshot(fields: dict[str, object] | None) -> DocumentSnapshot:
    return DocumentSnapshot(REF, fields, exists=fields is not None, read_time=None, create_time=None, update_time=None)


def test_the_fields_of_a_document_are_handed_over_as_the_snapshot_holds_them() -> None:
    snap = snapshot(FIELDS)
    assert data(snap) == FIELDS == existing(snap)
    assert data(snap) is snap._data and existing(snap) is snap._data  # not copied a second time
    assert snap.to_dict() is not snap._data  # what the client would have done


def test_a_missing_document_has_no_fields() -> None:
    missing = snapshot(None)
    assert existing(missing) is None
    assert data(missing) == {}


def response(doc_id: str | None, n: int = 0) -> RunQueryResponse:
    if doc_id is None:
        return RunQueryResponse(skipped_results=1)  # a message without a document
    name = f"projects/p/databases/(default)/documents/jobs/{doc_id}"
    return RunQueryResponse(document=Document(name=name, fields={"n": Value(integer_value=n)}))


def broken(*responses: RunQueryResponse, error: Exception) -> Iterator[RunQueryResponse]:
    yield from responses
    raise error


Run = tuple[firestore.Query, firestore.Transaction | None]


def scripted(monkeypatch: pytest.MonkeyPatch, *streams: Iterator[RunQueryResponse]) -> list[Run]:
    """Each run of a query gets the next stream; returns the queries that ran, in order, each with
    the transaction it ran in."""
    ran: list[Run] = []
    left = list(streams)

    def run(query: firestore.Query, transaction: firestore.Transaction | None, *args: Any) -> tuple[Iterator[RunQueryResponse], str]:
        ran.append((query, transaction))
        return left.pop(0), ""

    monkeypatch.setattr(firestore.Query, "_get_stream_iterator", run)
    return ran


def test_a_stream_broken_by_a_retryable_error_resumes_after_its_last_row(monkeypatch: pytest.MonkeyPatch) -> None:
    query = CLIENT.collection("jobs").order_by("n").limit(5)
    ran = scripted(
        monkeypatch,
        broken(response("a", 1), response(None), response("b", 2), error=gexc.ServiceUnavailable("restarting")),
        iter([response("c", 3)]),
    )
    assert list(rows(query)) == [("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]
    resumed, _ = ran[1]
    assert resumed._start_at is not None and resumed._start_at[1] is False  # start *after*
    assert resumed._start_at[0].reference.path == "jobs/b" and resumed._start_at[0].get("n") == 2
    assert resumed._limit == 3  # what is left of the five


def test_a_stream_broken_before_its_first_row_runs_the_query_again(monkeypatch: pytest.MonkeyPatch) -> None:
    query = CLIENT.collection("jobs").order_by("n")
    ran = scripted(monkeypatch, broken(error=gexc.ServiceUnavailable("restarting")), iter([response("a", 1)]))
    assert list(rows(query)) == [("a", {"n": 1})]
    assert ran == [(query, None), (query, None)]


def test_an_error_the_client_does_not_retry_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted(monkeypatch, broken(response("a", 1), error=gexc.PermissionDenied("no")))
    got = rows(CLIENT.collection("jobs").order_by("n"))
    assert next(got) == ("a", {"n": 1})
    with pytest.raises(gexc.PermissionDenied):
        next(got)


def test_a_stream_that_keeps_breaking_without_a_new_row_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    unavailable = gexc.ServiceUnavailable("down")
    ran = scripted(
        monkeypatch,
        broken(response("a", 1), error=unavailable),
        *(broken(error=unavailable) for _ in range(RESTARTS_WITHOUT_PROGRESS)),
    )
    got = rows(CLIENT.collection("jobs").order_by("n"))
    assert next(got) == ("a", {"n": 1})
    with pytest.raises(gexc.ServiceUnavailable):
        next(got)
    assert len(ran) == 1 + RESTARTS_WITHOUT_PROGRESS


def test_a_stream_broken_inside_a_transaction_is_not_resumed(monkeypatch: pytest.MonkeyPatch) -> None:
    tx = CLIENT.transaction()
    ran = scripted(monkeypatch, broken(response("a", 1), error=gexc.ServiceUnavailable("restarting")), iter([response("b", 2)]))
    got = rows(CLIENT.collection("jobs").order_by("n"), tx)
    assert next(got) == ("a", {"n": 1})
    with pytest.raises(gexc.ServiceUnavailable):  # the transaction is retried whole, not this read
        next(got)
    assert len(ran) == 1 and ran[0][1] is tx
