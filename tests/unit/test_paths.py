"""A snapshot's fields are taken once, without the second deep copy `to_dict` makes."""

from __future__ import annotations

from datetime import UTC, datetime

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1.base_document import DocumentSnapshot

from common.store.paths import data, existing

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
