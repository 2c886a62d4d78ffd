"""Reading the catalog: products, validation issues, the audit log."""

from __future__ import annotations

from typing import Any

from common import errors
from common.auth import Principal, audit_by
from common.domain.engine import ISSUE_TYPES
from common.domain.rules import ERROR, WARNING
from common.http import is_safe_id
from common.models.issue import AuditEventPublic, IssuePublic
from common.models.product import ProductPublic
from common.store import catalog as store
from common.store.paths import Scope

ISSUE_FILTERS = ("severity", "issue_type", "product_id", "job_id")
# The longest value a text filter (`product_id`, `job_id`, `sku`) may have, in characters, as the
# OpenAPI document's maxLength counts (JSON Schema counts code points, Python's len() too), so the
# document and the server refuse the same values. Firestore counts bytes: an indexed value's size, its
# UTF-8 bytes + 1, is at most 1,500, and a query filtering on a longer value fails (the emulator:
# 1,499 bytes pass, 1,500 fail, as a 500 before lengths were checked). A character is at most 4 bytes,
# so any value the document allows can be queried: 374 × 4 = 1,496. What is stored under these fields
# is far shorter (ids this API issues are at most 128 ASCII characters, a SKU 128 characters).
FILTER_MAX_LENGTH = 374


def check_filter(name: str, value: str) -> None:
    if len(value) > FILTER_MAX_LENGTH:
        raise errors.BadRequest(f"Filter '{name}' is too long: at most {FILTER_MAX_LENGTH} characters.", code="invalid_query")


def product_public(doc: dict[str, Any]) -> dict[str, Any]:
    return ProductPublic.model_validate(doc).dump()


def get_product(scope: Scope, product_id: str) -> dict[str, Any]:
    doc = store.get_product(scope, product_id) if is_safe_id(product_id) else None
    if doc is None:
        raise errors.NotFound("No product with that id in this tenant.")
    return product_public(doc)


def list_products(scope: Scope, *, sku: str | None, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    if sku is not None:
        check_filter("sku", sku)
    docs, next_cursor = store.list_products(scope, sku=sku, limit=limit, cursor=cursor)
    return [product_public(d) for d in docs], next_cursor


def list_issues(scope: Scope, filters: dict[str, str], *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    severity = filters.get("severity")
    if severity is not None and severity not in (ERROR, WARNING):
        raise errors.BadRequest("severity must be WARNING or ERROR.", code="invalid_query")
    issue_type = filters.get("issue_type")
    if issue_type is not None and issue_type not in ISSUE_TYPES:
        # A typo would otherwise read as "no such issues".
        raise errors.BadRequest(f"issue_type must be one of {', '.join(ISSUE_TYPES)}.", code="invalid_query")
    for name, value in filters.items():
        check_filter(name, value)
    docs, next_cursor = store.list_issues(scope, filters=filters, limit=limit, cursor=cursor)
    return [IssuePublic.model_validate(d).dump() for d in docs], next_cursor


def get_issue(scope: Scope, issue_id: str) -> dict[str, Any]:
    """One issue, resolved ones included: a resolve's answer and a supersession point at them."""
    doc = store.get_issue(scope, issue_id) if is_safe_id(issue_id) else None
    if doc is None:
        raise errors.NotFound("No validation issue with that id in this tenant.")
    return IssuePublic.model_validate(doc).dump()


def resolve_issue(principal: Principal, issue_id: str) -> dict[str, Any]:
    """Resolve a failed item's issue that nothing will: a delete of a product that was never there,
    an item whose data was fixed some other way. A finding about a product's data (MISSING_DESCRIPTION,
    DUPLICATE_SKU…) resolves itself once the product is fixed, and cannot be resolved by hand."""
    audit = audit_by(principal, "validation_issue.resolved", "validation_issue", issue_id)
    issue = store.resolve_failure(principal.scope, issue_id, audit) if is_safe_id(issue_id) else None
    if issue is None:
        raise errors.NotFound("No validation issue with that id in this tenant.")
    if not issue.get("job_id"):
        raise errors.Conflict("This issue is about the product's data: it resolves itself once the product is fixed.", code="issue_not_resolvable")
    return IssuePublic.model_validate(issue).dump()


def list_audit(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    docs, next_cursor = store.list_audit(scope, limit=limit, cursor=cursor)
    return [AuditEventPublic.model_validate(d).dump() for d in docs], next_cursor
