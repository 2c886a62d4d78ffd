"""Reading one validation issue: an id that could not name a document is 404 before any read, so
no request turns into a Firestore path of its choosing."""

from __future__ import annotations

from typing import Any

import pytest

from common import errors
from common.services import catalog
from common.store.paths import Scope

SCOPE = Scope("o", "t")
ISSUE = {
    "id": "i-1",
    "org_id": "o",
    "tenant_id": "t",
    "product_id": None,
    "issue_type": "PRODUCT_NOT_FOUND",
    "severity": "ERROR",
    "message": "No product with id 'p'.",
    "resolved": True,
    "job_id": "j-1",
    "item_index": 0,
    "identifier": "p",
    "key": "stored, not shown",
    "created_at": "2026-03-01T12:00:00Z",
    "updated_at": "2026-03-01T12:00:01Z",
}


@pytest.mark.parametrize("issue_id", ["", ".", "..", "../x", "a/b", "__name__", "__x__", "-a", "é", "x" * 129])
def test_an_id_that_is_not_an_id_is_404_without_a_read(monkeypatch: pytest.MonkeyPatch, issue_id: str) -> None:
    monkeypatch.setattr(catalog.store, "get_issue", lambda *a: pytest.fail(f"read {issue_id!r}"))
    with pytest.raises(errors.NotFound):
        catalog.get_issue(SCOPE, issue_id)


def test_an_issue_is_the_lists_shape_resolved_ones_included(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[tuple[Any, ...]] = []
    monkeypatch.setattr(catalog.store, "get_issue", lambda *a: reads.append(a) or dict(ISSUE))
    shown = catalog.get_issue(SCOPE, "i-1")
    assert reads == [(SCOPE, "i-1")]
    assert shown["resolved"] is True and "key" not in shown
    assert set(shown) == {k for k in ISSUE if k != "key"}


def test_an_absent_issue_is_404(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog.store, "get_issue", lambda *a: None)
    with pytest.raises(errors.NotFound) as caught:
        catalog.get_issue(SCOPE, "i-2")
    assert caught.value.message == "No validation issue with that id in this tenant."


# -- filter lengths: counted as the OpenAPI document's maxLength counts them ---------------------------


def _queried(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    queries: list[Any] = []
    monkeypatch.setattr(catalog.store, "list_issues", lambda scope, **kw: queries.append(kw["filters"]) or ([], None))
    monkeypatch.setattr(catalog.store, "list_products", lambda scope, **kw: queries.append(kw["sku"]) or ([], None))
    return queries


@pytest.mark.parametrize("character", ["x", "é", "€", "😀"], ids=["1-byte", "2-byte", "3-byte", "4-byte"])
def test_a_filter_of_the_documented_length_is_queried_whatever_its_characters(monkeypatch: pytest.MonkeyPatch, character: str) -> None:
    queries = _queried(monkeypatch)
    value = character * catalog.FILTER_MAX_LENGTH
    assert len(value.encode("utf-8")) + 1 <= 1500  # Firestore's limit on an indexed value (its bytes + 1)
    for name in ("product_id", "job_id"):
        assert catalog.list_issues(SCOPE, {name: value}, limit=1, cursor=None) == ([], None)
    assert catalog.list_products(SCOPE, sku=value, limit=1, cursor=None) == ([], None)
    assert queries == [{"product_id": value}, {"job_id": value}, value]


@pytest.mark.parametrize("character", ["x", "😀"])
def test_a_filter_one_character_longer_is_400_before_any_query(monkeypatch: pytest.MonkeyPatch, character: str) -> None:
    queries = _queried(monkeypatch)
    value = character * (catalog.FILTER_MAX_LENGTH + 1)
    for call in (
        lambda: catalog.list_issues(SCOPE, {"product_id": value}, limit=1, cursor=None),
        lambda: catalog.list_issues(SCOPE, {"job_id": value}, limit=1, cursor=None),
        lambda: catalog.list_products(SCOPE, sku=value, limit=1, cursor=None),
    ):
        with pytest.raises(errors.BadRequest) as info:
            call()
        assert info.value.code == "invalid_query" and f"at most {catalog.FILTER_MAX_LENGTH} characters" in info.value.message
    assert queries == []
