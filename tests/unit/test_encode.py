"""The fast write encoder against the client's own: the same bytes, or the client's path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write
from hypothesis import given, settings
from hypothesis import strategies as st

from common.store import encode

PATH = "projects/p/databases/(default)/documents/orgs/o/tenants/t/products/abc"


def client_bytes(data: dict[str, Any]) -> bytes:
    (pb,) = _helpers.pbs_for_set_no_merge(PATH, data)
    return bytes(write.Write.pb(pb).SerializeToString(deterministic=True))


def fast_bytes(data: dict[str, Any]) -> bytes:
    return bytes(encode.set_write(PATH, data).SerializeToString(deterministic=True))


PRODUCT = {
    "id": "abc",
    "title": "Nordhaus Classic Skillet — 28 cm",
    "sku": "SKU-1",
    "gtin": "4006381333931",
    "attributes": {
        "color": "graphite",
        "weight_kg": 1.25,
        "dims": {"l": 28, "w": 28, "h": 5},
        "tags": ["eco", "gift"],
        "empty": {},
        "none": None,
        "flag": False,
        "a.dotted key": "kept whole",
        "nested": [[], [{"x": [1, 2.5, None, True]}], {}],
    },
    "variants": [],
    "open_issues": {},
    "created_at": datetime(2026, 11, 22, 14, 0, 1, 123456, tzinfo=UTC),
    "updated_at": datetime(2026, 11, 22, 15, 0, 1, tzinfo=timezone(timedelta(hours=2))),
    "naive": datetime(2026, 1, 1, 0, 0, 0, 5),
    "read_back": DatetimeWithNanoseconds(2026, 11, 22, 14, 0, 1, nanosecond=123456789, tzinfo=UTC),
    "version": 2**63 - 1,
    "low": -(2**63),
    "unicode ключ": "значение ✓",
}


def test_a_product_encodes_exactly_as_the_client_does() -> None:
    assert fast_bytes(PRODUCT) == client_bytes(PRODUCT)
    assert fast_bytes({}) == client_bytes({})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=8))
def test_any_json_document_encodes_exactly_as_the_client_does(data: dict[str, Any]) -> None:
    assert fast_bytes(data) == client_bytes(data)


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, firestore.Increment(1), firestore.SERVER_TIMESTAMP, ("a", "tuple"), b"bytes", {1: "int key"}, {"": "empty name"}],
)
def test_what_it_does_not_encode_is_left_to_the_client(value: Any) -> None:
    with pytest.raises(encode.Unsupported):
        encode.set_write(PATH, {"field": {"inner": value}})


class Recorder:
    """Stands in for a batch: what reached the client's `set`, and what was added as protobuf."""

    def __init__(self) -> None:
        self.sets: list[dict[str, Any]] = []
        self.pbs: list[Any] = []

    def set(self, ref: Any, data: dict[str, Any]) -> None:
        self.sets.append(data)

    def _add_write_pbs(self, pbs: list[Any]) -> None:
        self.pbs += pbs


def test_add_set_falls_back_to_the_client_for_sentinels() -> None:
    ref = firestore.Client(project="p", credentials=_anonymous()).document("a/b")
    recorder = Recorder()
    encode.add_set(recorder, ref, {"n": 1})  # type: ignore[arg-type]
    encode.add_set(recorder, ref, {"n": firestore.Increment(1)})  # type: ignore[arg-type]
    assert len(recorder.pbs) == 1 and recorder.pbs[0].update.name.endswith("/documents/a/b")
    assert recorder.sets == [{"n": firestore.Increment(1)}]


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def client_update_bytes(fields: dict[str, Any], array_field: str, values: list[Any]) -> bytes:
    (pb,) = _helpers.pbs_for_update(PATH, {**fields, array_field: firestore.ArrayUnion(values)}, None)
    return bytes(write.Write.pb(pb).SerializeToString(deterministic=True))


def fast_update_bytes(fields: dict[str, Any], array_field: str, values: list[Any]) -> bytes:
    return bytes(encode.append_write(PATH, fields, array_field, values).SerializeToString(deterministic=True))


STEP_PROGRESS = {
    "applied": 62,
    "ok": 60,
    "failed": 2,
    "has_failures": True,
    "done": False,
    "updated_at": datetime(2026, 11, 22, 14, 0, 1, 123456, tzinfo=UTC),
    "lease_until": datetime(2026, 11, 22, 14, 2, 1, 123456, tzinfo=UTC),
}
STEP_RESULTS = [
    {"index": 0, "identifier": "SKU-1", "product_id": "abc", "result": "created", "errors": []},
    {"index": 1, "identifier": None, "product_id": None, "result": "failed", "errors": [{"code": "required", "field": "title", "message": "…"}]},
]


def test_a_step_progress_update_encodes_exactly_as_the_client_does() -> None:
    assert fast_update_bytes(STEP_PROGRESS, "results", STEP_RESULTS) == client_update_bytes(STEP_PROGRESS, "results", STEP_RESULTS)


field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(lambda name: name != "results")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(field_names, json_values, min_size=1, max_size=6), st.lists(json_values, min_size=1, max_size=5))
def test_any_append_update_encodes_exactly_as_the_client_does(fields: dict[str, Any], values: list[Any]) -> None:
    assert fast_update_bytes(fields, "results", values) == client_update_bytes(fields, "results", values)


@pytest.mark.parametrize("fields", [{"a.b": 1}, {"with space": 1}, {"ключ": 1}, {"results": 1}, {"n": firestore.Increment(1)}])
def test_append_leaves_names_and_values_it_does_not_encode_to_the_client(fields: dict[str, Any]) -> None:
    with pytest.raises(encode.Unsupported):
        encode.append_write(PATH, fields, "results", [1])


def test_append_of_nothing_is_left_to_the_client_which_refuses_it() -> None:
    with pytest.raises(encode.Unsupported):
        encode.append_write(PATH, STEP_PROGRESS, "results", [])
    ref = firestore.Client(project="p", credentials=_anonymous()).document("a/b")
    with pytest.raises(ValueError):
        encode.add_append(firestore.Client(project="p", credentials=_anonymous()).batch(), ref, STEP_PROGRESS, "results", [])


class CommitRecorder:
    """Stands in for the client's API object: keeps each commit's request as bytes and answers empty."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    def commit(self, request: Any, metadata: Any) -> Any:
        if not isinstance(request, firestore_types.CommitRequest):
            request = firestore_types.CommitRequest(request)
        self.requests.append(firestore_types.CommitRequest.pb(request).SerializeToString(deterministic=True))
        return firestore_types.CommitResponse()


def _commit_through(transaction_class: type[firestore.Transaction]) -> bytes:
    """Commits a transaction holding fast writes and the client's own; returns the request sent."""
    client = firestore.Client(project="p", credentials=_anonymous())
    recorder = CommitRecorder()
    client._firestore_api_internal = recorder
    tx = transaction_class(client)
    tx._id = b"transaction-id"
    encode.add_set(tx, client.document("a/fast"), PRODUCT)
    # Encoding starts in place and meets a sentinel: the client's set() takes over, nothing is left over.
    encode.add_set(tx, client.document("a/slow"), {"n": 1, "at": firestore.SERVER_TIMESTAMP})
    tx.delete(client.document("a/gone"))
    encode.add_append(tx, client.document("a/progress"), STEP_PROGRESS, "results", STEP_RESULTS)
    tx._commit()
    assert tx._id is None and tx._write_pbs == []
    tx._id = b"again"
    tx.delete(client.document("a/next"))
    tx._commit()
    (request, again) = recorder.requests
    assert b"a/next" in again and b"a/fast" not in again
    return request


def test_the_fast_transaction_sends_the_commit_request_the_client_sends() -> None:
    assert _commit_through(encode.Transaction) == _commit_through(firestore.Transaction)


def test_the_fast_transaction_refuses_to_commit_when_not_begun() -> None:
    tx = encode.Transaction(firestore.Client(project="p", credentials=_anonymous()))
    with pytest.raises(ValueError):
        tx._commit()
