"""A page cursor carries the order-by values of the page's last document and its id, round-trips
them exactly, and refuses anything it did not issue as `invalid_cursor` without echoing it."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import Document, RunQueryResponse
from google.protobuf.timestamp_pb2 import Timestamp

from common import errors
from common.store import pages
from common.store.pages import MAX_CURSOR, Position, decode_cursor, encode_cursor, list_key, order_of

CLIENT = firestore.Client(project="p", credentials=AnonymousCredentials())  # built, never connected
PRODUCTS = CLIENT.collection("orgs").document("o").collection("tenants").document("t").collection("products")
NEWEST_FIRST = PRODUCTS.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
KEY = list_key(PRODUCTS, order_of(NEWEST_FIRST))
ID = "6f1c2a9e-5b1d-4c2e-9a57-0d3c8e1f2b44"
AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forged(payload: Any) -> str:
    return b64(json.dumps(payload).encode())


def refused(cursor: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        decode_cursor(cursor, KEY, 1)
    assert caught.value.code == "invalid_cursor" and caught.value.message == "The cursor is not valid."  # nothing echoed


@pytest.mark.parametrize(
    "value",
    [
        AT,
        DatetimeWithNanoseconds(2026, 3, 1, 12, 30, 5, nanosecond=123456789, tzinfo=UTC),  # finer than Firestore keeps
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2106, 2, 7, 6, 28, 15, 999999, tzinfo=UTC),  # the last instant accepted
        "SKU-ü-1",
        -(2**63),
        None,
    ],
)
def test_a_cursor_gives_back_the_values_it_was_made_of_exactly(value: Any) -> None:
    cursor = encode_cursor(KEY, Position((value,), ID))
    assert "=" not in cursor and cursor.isascii() and len(cursor) <= 200
    position = decode_cursor(cursor, KEY, 1)
    assert position == Position((value,), ID)
    # What Firestore is sent is the same value to the nanosecond: no page skips or repeats a document.
    assert _helpers.encode_value(position.values[0]) == _helpers.encode_value(value)  # type: ignore[index]


def test_a_timestamp_is_sent_to_the_nanosecond_firestore_returned() -> None:
    returned = DatetimeWithNanoseconds.from_timestamp_pb(Timestamp(seconds=1_772_368_205, nanos=123_456_000))
    [value] = decode_cursor(encode_cursor(KEY, Position((returned,), ID)), KEY, 1).values  # type: ignore[misc]
    assert value.timestamp_pb() == Timestamp(seconds=1_772_368_205, nanos=123_456_000)


def test_the_longest_cursor_a_list_issues_fits_the_bound() -> None:
    assert len(encode_cursor(KEY, Position((AT,), "x" * 128))) < MAX_CURSOR


def test_a_bare_id_is_a_cursor_issued_before_the_values_were_carried() -> None:
    assert decode_cursor(b64(ID.encode()), KEY, 1) == Position(None, ID)


def test_a_cursor_of_another_list_or_tenant_is_refused() -> None:
    other_tenant = PRODUCTS.parent.parent.document("t2").collection("products")
    audit = PRODUCTS.parent.collection("audit_events")
    oldest_first = PRODUCTS.order_by("created_at").order_by("__name__")
    for key in (list_key(other_tenant, order_of(NEWEST_FIRST)), list_key(audit, order_of(NEWEST_FIRST)), list_key(PRODUCTS, order_of(oldest_first))):
        assert key != KEY
        refused(encode_cursor(key, Position((AT,), ID)))


def test_a_cursor_of_the_same_list_under_other_filters_is_refused() -> None:
    def by(**equal: Any) -> firestore.Query:
        query: Any = PRODUCTS
        for name, value in equal.items():
            query = query.where(filter=firestore.FieldFilter(name, "==", value))
        return query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)

    def key(query: firestore.Query) -> str:
        return list_key(PRODUCTS, order_of(query), pages.filters_of(query))

    sku_a = key(by(sku="A"))
    assert sku_a == key(by(sku="A"))
    others = [KEY, key(by(sku="B")), key(by(sku="A", status="FAILED")), key(by(sku=None)), key(by(resolved=False)), key(by(resolved=0))]
    assert len({sku_a, *others}) == 1 + len(others)
    for other in others:
        with pytest.raises(errors.BadRequest) as caught:
            decode_cursor(encode_cursor(sku_a, Position((AT,), ID)), other, 1)
        assert caught.value.code == "invalid_cursor"
    # The filters are a conjunction: the order they were added in is no other list.
    assert key(by(sku="A", status="FAILED")) == key(by(status="FAILED", sku="A"))


def test_an_unfiltered_lists_key_is_the_one_its_cursors_were_issued_with_before_filters_counted() -> None:
    path = "orgs/o/tenants/t/products"
    before = json.dumps([path, [["created_at", "DESCENDING"], ["__name__", "DESCENDING"]]])
    assert b64(hashlib.sha256(before.encode()).digest()[:8]) == KEY
    assert pages.filters_of(NEWEST_FIRST) == []


GOOD = [KEY, [["t", 1_772_368_205_123_456_000]], ID]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!!",
        b64(b"[]") + "==",  # padded
        b64(ID.encode()).replace("-", "+") + "+/",  # the other base64 alphabet
        "a",  # no whole byte
        "A" * (MAX_CURSOR + 4),
        b64(b"\xff\xfe"),  # not UTF-8
        b64(b"../etc"),
        b64(b"__name__"),
        b64(b"[" * 900),
        forged({"k": KEY}),
        forged([KEY, [["t", 1]]]),
        forged([*GOOD, "extra"]),
        forged(["other", GOOD[1], ID]),
        forged([KEY, [], ID]),  # too few values for the order
        forged([KEY, [["t", 1], ["t", 2]], ID]),  # too many
        forged([KEY, GOOD[1], "../x"]),
        forged([KEY, GOOD[1], "__name__"]),
        forged([KEY, GOOD[1], "x" * 129]),
        forged([KEY, GOOD[1], 7]),
        forged([KEY, ["t"], ID]),
        forged([KEY, [["t"]], ID]),
        forged([KEY, [["x", 1]], ID]),
        forged([KEY, [["t", -1]], ID]),  # before 1970
        forged([KEY, [["t", 2**32 * 10**9]], ID]),  # past what the client encodes exactly
        forged([KEY, [["t", 1.5]], ID]),
        forged([KEY, [["t", True]], ID]),
        forged([KEY, [["t", "2026-03-01T12:30:05Z"]], ID]),
        forged([KEY, [["i", 2**63]], ID]),
        forged([KEY, [["i", 1.0]], ID]),
        forged([KEY, [["i", False]], ID]),
        forged([KEY, [["s", 1]], ID]),
        forged([KEY, [["n", 0]], ID]),
        b64(f'["{KEY}",[["s","\\ud800"]],"{ID}"]'.encode()),  # a lone surrogate no request can carry
        b64(f'["{KEY}",[["i",NaN]],"{ID}"]'.encode()),
        b64(f'["{KEY}",[["i",1{"0" * 600}]],"{ID}"]'.encode()),
    ],
)
def test_anything_not_issued_is_invalid_cursor_and_not_echoed(cursor: str) -> None:
    refused(cursor)


def test_every_cursor_decode_accepts_makes_a_query_the_client_can_send() -> None:
    for value in (AT, "a", 0, None, datetime(1970, 1, 1, tzinfo=UTC)):
        position = decode_cursor(encode_cursor(KEY, Position((value,), ID)), KEY, 1)
        cursor = NEWEST_FIRST.start_after([*position.values, PRODUCTS.document(position.doc_id)])._to_protobuf().start_at  # type: ignore[misc]
        assert cursor.values[1].reference_value.endswith(f"/tenants/t/products/{ID}")


# -- `page` against a scripted stream ---------------------------------------------------------------


def response(doc_id: str, created_at: datetime, **fields: Any) -> RunQueryResponse:
    name = f"projects/p/databases/(default)/documents/orgs/o/tenants/t/products/{doc_id}"
    encoded = {k: _helpers.encode_value(v) for k, v in {"created_at": created_at, **fields}.items()}
    return RunQueryResponse(document=Document(name=name, fields=encoded))


def scripted(monkeypatch: pytest.MonkeyPatch, *docs: RunQueryResponse) -> list[firestore.Query]:
    ran: list[firestore.Query] = []

    def run(query: firestore.Query, transaction: Any, *args: Any) -> tuple[Iterator[RunQueryResponse], str]:
        ran.append(query)
        return iter(docs), ""

    monkeypatch.setattr(firestore.Query, "_get_stream_iterator", run)
    return ran


def test_the_next_page_starts_after_the_last_documents_values_without_reading_it(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = scripted(monkeypatch, response("c", AT, title="C"), response("b", AT, title="B"), response("a", AT, title="A"))
    docs, cursor = pages.page(NEWEST_FIRST, PRODUCTS, limit=2, cursor=None)
    assert [d["id"] for d in docs] == ["c", "b"] and cursor is not None
    first = ran[0]._to_protobuf()
    assert [(o.field.field_path, o.direction.name) for o in first.order_by] == [("created_at", "DESCENDING"), ("__name__", "DESCENDING")]
    assert first.limit == 3 and not first.start_at.values

    ran = scripted(monkeypatch, response("a", AT, title="A"))
    monkeypatch.setattr(pages, "read", lambda *a, **k: pytest.fail("a new cursor reads no document"))
    docs, cursor = pages.page(NEWEST_FIRST, PRODUCTS, limit=2, cursor=cursor)
    assert [d["id"] for d in docs] == ["a"] and cursor is None
    after = ran[0]._to_protobuf().start_at
    assert not after.before and _helpers.decode_value(after.values[0], CLIENT) == AT
    assert after.values[1].reference_value == "projects/p/databases/(default)/documents/orgs/o/tenants/t/products/b"


def test_a_projection_reads_the_order_fields_but_returns_only_the_fields_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = scripted(monkeypatch, response("b", AT, title="B"), response("a", AT, title="A"))
    docs, cursor = pages.page(NEWEST_FIRST, PRODUCTS, limit=1, cursor=None, fields=["title"])
    assert docs == [{"title": "B", "id": "b"}] and cursor is not None
    assert {f.field_path for f in ran[0]._to_protobuf().select.fields} == {"title", "created_at"}
    assert decode_cursor(cursor, KEY, 1) == Position((AT,), "b")


def test_a_page_cursor_is_read_only_by_a_query_with_the_same_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    def by_sku(sku: str) -> firestore.Query:
        return NEWEST_FIRST.where(filter=firestore.FieldFilter("sku", "==", sku))

    scripted(monkeypatch, response("b", AT, sku="A"), response("a", AT, sku="A"))
    _, cursor = pages.page(by_sku("A"), PRODUCTS, limit=1, cursor=None)
    assert cursor is not None
    assert [d["id"] for d in pages.page(by_sku("A"), PRODUCTS, limit=1, cursor=cursor)[0]] == ["b"]  # the script again
    for other in (by_sku("B"), NEWEST_FIRST):
        with pytest.raises(errors.BadRequest) as caught:
            pages.page(other, PRODUCTS, limit=1, cursor=cursor)
        assert caught.value.code == "invalid_cursor"


@pytest.mark.parametrize(
    "query",
    [
        PRODUCTS.order_by("created_at"),  # ties would have no place to start after
        PRODUCTS.order_by("__name__").order_by("created_at"),
        PRODUCTS.where(filter=firestore.FieldFilter("sku", "==", "x")),
    ],
)
def test_a_paged_query_orders_by_name_last(query: firestore.Query) -> None:
    with pytest.raises(ValueError, match="__name__ last"):
        pages.page(query, PRODUCTS, limit=2, cursor=None)
