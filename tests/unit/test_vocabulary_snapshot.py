"""The snapshot of its vocabulary a ProductImportData job keeps: it fits wherever the vocabulary does.

Sizes follow Firestore's storage size rules (https://firebase.google.com/docs/firestore/storage-size),
which its 1 MiB document limit applies to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from common import errors
from common.auth import Principal
from common.services import product_import
from common.store.paths import Scope

MAX_DOCUMENT_BYTES = 1024 * 1024  # "Maximum size for a document: 1 MiB"


def value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | datetime):
        return 8
    if isinstance(value, list):
        return sum(value_size(v) for v in value)
    if isinstance(value, dict):
        return sum(value_size(k) + value_size(v) for k, v in value.items())
    raise TypeError(type(value))


def document_size(path: list[str], fields: dict[str, Any]) -> int:
    """A document's storage size: its name (each collection and document id), its fields, and 32."""
    return sum(value_size(segment) for segment in path) + 16 + value_size(fields) + 32


def stored_vocabulary(monkeypatch: pytest.MonkeyPatch, scope: Scope, body: dict[str, Any]) -> dict[str, Any]:
    """The document `save_vocabulary` stores for `body`, caught at the store's door."""
    stored: list[dict[str, Any]] = []
    monkeypatch.setattr(product_import.store, "list_vocabularies", lambda scope: [])
    monkeypatch.setattr(product_import.store, "put_vocabulary", lambda scope, doc, audit: stored.append(doc))
    principal = Principal(user_id="u", email="a@example.com", role="admin", scope=scope, ip_address="203.0.113.1")
    product_import.save_vocabulary(principal, body)
    return stored[0]


def vocabulary_path(scope: Scope, doc: dict[str, Any]) -> list[str]:
    return ["orgs", scope.org_id, "tenants", scope.tenant_id, "vocabularies", doc["id"]]


def snapshot_path(scope: Scope, job_id: str) -> list[str]:
    # common.store.jobs: job_ref(...).collection("snapshots").document("vocabulary")
    return ["orgs", scope.org_id, "tenants", scope.tenant_id, "bulk_jobs", job_id, "snapshots", "vocabulary"]


@pytest.mark.parametrize("attributes", [[], [{"name": "é" * 200, "maps_to": "title"}], [{"name": f"a{i}"} for i in range(2000)]])
def test_a_snapshot_is_smaller_than_its_vocabulary_however_short_the_fields_it_leaves_out(
    monkeypatch: pytest.MonkeyPatch, attributes: list[dict[str, Any]]
) -> None:
    """The snapshot's name is longer than the vocabulary's (under its job); the fields it leaves out
    (name, org and tenant ids, default, created_at) outweigh that at their shortest."""
    scope = Scope("o", "t")
    vocabulary = stored_vocabulary(monkeypatch, scope, {"name": "v", "attributes": attributes})
    snapshot = product_import.snapshot(vocabulary)
    assert document_size(snapshot_path(scope, "0" * 36), snapshot) < document_size(vocabulary_path(scope, vocabulary), vocabulary)
    # The job reads everything the import options are made of from it.
    request = product_import.parse_request({"ProductImportData": {"ProductsToImport": [{}], "ProductIdentifierProperty": "GTIN"}})
    assert product_import.options_for(request, snapshot) == product_import.options_for(request, vocabulary)


def test_the_largest_vocabulary_of_single_byte_names_fits_in_a_document(monkeypatch: pytest.MonkeyPatch) -> None:
    scope = Scope("o" * 36, "t" * 36)
    body = {"name": "v" * 200, "default_locale": "x" * 35, "attributes": [{"name": f"{i:04d}" + "a" * 196, "maps_to": None} for i in range(2000)]}
    vocabulary = stored_vocabulary(monkeypatch, scope, body)
    assert document_size(vocabulary_path(scope, vocabulary), vocabulary) <= MAX_DOCUMENT_BYTES


def test_a_vocabulary_too_large_for_a_document_is_refused_before_it_is_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 attributes of 200 characters are allowed, but not 200 multi-byte ones each: 1.4 MB."""
    scope = Scope("o" * 36, "t" * 36)
    body = {"name": "v" * 200, "attributes": [{"name": f"{i:04d}" + "€" * 196} for i in range(2000)]}
    with pytest.raises(errors.PayloadTooLarge) as refused:
        stored_vocabulary(monkeypatch, scope, body)
    assert refused.value.code == "vocabulary_too_large" and "1,000,000" in refused.value.message


def test_every_vocabulary_the_api_accepts_fits_in_a_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """Around the bound, of the largest attributes (200 characters, nearly all of 3 bytes)."""
    scope = Scope("o" * 36, "t" * 36)
    outcomes = []
    for count in range(1200, 1500, 25):
        body = {"name": "v" * 200, "attributes": [{"name": f"{i:04d}" + "€" * 196} for i in range(count)]}
        try:
            vocabulary = stored_vocabulary(monkeypatch, scope, body)
        except errors.PayloadTooLarge:
            outcomes.append("refused")
            continue
        assert document_size(vocabulary_path(scope, vocabulary), vocabulary) <= MAX_DOCUMENT_BYTES, count
        outcomes.append("taken")
    assert outcomes[0] == "taken" and outcomes[-1] == "refused"
