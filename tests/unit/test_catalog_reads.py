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
