"""ProductImportData imports: the synchronous route, the vocabulary and taxonomy it relies on,
and the options a bulk job carries when its payload is that envelope."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from common import errors
from common.auth import Principal, audit_by
from common.config import get_settings
from common.domain import syndigo
from common.domain.engine import CatalogView, JobContext, derived_id
from common.http import is_safe_id
from common.models.base import rfc3339, utcnow
from common.models.syndigo import ErrorModeValue, ImportRequest, TaxonomyNodeIn, VocabularyIn
from common.store import catalog
from common.store import vocab as store
from common.store.paths import Scope

SYNC_LIMIT = 1000
# Where an envelope keeps its products, the items of a bulk job whose payload is one.
ENVELOPE_ITEMS = ("ProductImportData", "ProductsToImport")


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: Any, what: str = "a JSON object", at: tuple[str, ...] = ()) -> M:
    """A request body (or its member down `at`) as `model`: 400 when it is not an object or lacks a
    field, 422 naming the first invalid field."""
    if not isinstance(body, dict):
        raise errors.BadRequest(f"The body must be {what}.", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise errors.invalid_body(exc.errors()[0], at) from None


# -- vocabularies and taxonomy ------------------------------------------------------------------


def _vocabulary_public(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "name": doc["name"],
        "default": doc["default"],
        "default_locale": doc.get("default_locale", "en-US"),
        "include_missing_attributes": doc.get("include_missing_attributes", False),
        "attributes": doc["attributes"],
        "created_at": rfc3339(doc["created_at"]),
        "updated_at": rfc3339(doc["updated_at"]),
    }


# A vocabulary is one Firestore document (1 MiB, field names included), and so is each job's copy of
# it. Its compact JSON is larger than its stored size (quotes, timestamps as text), so this bound keeps
# both within the limit, names and all: 2,000 attributes of 200 characters fit unless most are multi-byte.
VOCABULARY_MAX_BYTES = 1_000_000


def save_vocabulary(principal: Principal, body: Any, vocabulary_id: str | None = None) -> dict[str, Any]:
    wanted = _parse(VocabularyIn, body)
    current = store.get_vocabulary(principal.scope, vocabulary_id) if vocabulary_id else None
    if vocabulary_id and current is None:
        raise errors.NotFound("No vocabulary with that id in this tenant.")
    vocabulary_id = vocabulary_id or str(uuid.uuid4())
    now = utcnow()
    attributes = [{**a.model_dump(), "id": derived_id(vocabulary_id, "attribute", a.name.casefold())} for a in wanted.attributes]
    if not current and not store.list_vocabularies(principal.scope):
        wanted.default = True  # a tenant's first vocabulary is its default
    if current and "default" not in wanted.model_fields_set:
        wanted.default = current["default"]  # a replacement that does not say keeps the flag
    if current and current["default"] and not wanted.default:
        # Imports without vocabularyId read the default: a tenant never goes without one.
        raise errors.Conflict(
            'This vocabulary is the tenant\'s default; make another one the default ("default": true) instead.', code="default_vocabulary"
        )
    doc = {
        "id": vocabulary_id,
        "org_id": principal.scope.org_id,
        "tenant_id": principal.scope.tenant_id,
        **wanted.model_dump(exclude={"attributes"}),
        "attributes": attributes,
        "created_at": current["created_at"] if current else now,
        "updated_at": now,
    }
    size = len(json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8"))
    if size > VOCABULARY_MAX_BYTES:
        raise errors.PayloadTooLarge(
            f"The vocabulary would take {size:,} bytes; one holds at most {VOCABULARY_MAX_BYTES:,}."
            " Shorten its attribute names, or drop those no feed sends.",
            code="vocabulary_too_large",
        )
    action = "vocabulary.updated" if current else "vocabulary.created"
    store.put_vocabulary(principal.scope, doc, audit_by(principal, action, "vocabulary", vocabulary_id, {"name": doc["name"]}))
    return _vocabulary_public(doc)


def get_vocabulary(scope: Scope, vocabulary_id: str) -> dict[str, Any]:
    doc = store.get_vocabulary(scope, vocabulary_id) if is_safe_id(vocabulary_id) else None
    if doc is None:
        raise errors.NotFound("No vocabulary with that id in this tenant.")
    return _vocabulary_public(doc)


def list_vocabularies(scope: Scope) -> list[dict[str, Any]]:
    return [_vocabulary_public(d) for d in store.list_vocabularies(scope)]


def create_taxonomy_node(principal: Principal, body: Any) -> dict[str, Any]:
    wanted = _parse(TaxonomyNodeIn, body)
    if wanted.parent_id and (not is_safe_id(wanted.parent_id) or store.get_taxonomy_node(principal.scope, wanted.parent_id) is None):
        raise errors.Unprocessable("parent_id names no taxonomy node of this tenant.", code="parent_not_found", details={"field": "parent_id"})
    scope = principal.scope
    node: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "org_id": scope.org_id,
        "tenant_id": scope.tenant_id,
        "name": wanted.name,
        "parent_id": wanted.parent_id,
        "created_at": utcnow(),
    }
    store.create_taxonomy_node(scope, node, audit_by(principal, "taxonomy_node.created", "taxonomy_node", node["id"], {"name": wanted.name}))
    return _taxonomy_node_public(node)


def _taxonomy_node_public(node: dict[str, Any]) -> dict[str, Any]:
    # The stored node also carries org_id and tenant_id, which the caller's own headers already name.
    return {"id": node["id"], "name": node["name"], "parent_id": node.get("parent_id"), "created_at": rfc3339(node["created_at"])}


def list_taxonomy_nodes(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    nodes, next_cursor = store.list_taxonomy_nodes(scope, limit=limit, cursor=cursor)
    return [_taxonomy_node_public(n) for n in nodes], next_cursor


# -- imports ------------------------------------------------------------------------------------


def parse_request(
    body: Any, *, what_if: bool | None = None, include_missing: bool | None = None, vocabulary_id: str | None = None, at: tuple[str, ...] = ()
) -> ImportRequest:
    """The envelope, checked whole (its products are checked one by one as items); `at` is where it
    sits in the request body (a bulk job's `payload`), for the field an error names."""
    request = _parse(ImportRequest, body, "a JSON object with ProductImportData", at)
    updates: dict[str, Any] = {}
    if what_if is not None:
        updates["whatIf"] = what_if or request.whatIf
    if include_missing is not None:
        updates["shouldIncludeMissingVocabularyAttributes"] = include_missing
    if vocabulary_id:
        updates["vocabularyId"] = vocabulary_id
    return request.model_copy(update=updates)


def load_vocabulary(scope: Scope, vocabulary_id: str | None) -> dict[str, Any]:
    """The vocabulary named, or the tenant's default; importing needs one (as the vendor warns)."""
    if vocabulary_id:
        doc = store.get_vocabulary(scope, vocabulary_id) if is_safe_id(vocabulary_id) else None
        if doc is None:
            raise errors.Unprocessable(
                "vocabularyId names no vocabulary of this tenant.", code="vocabulary_not_found", details={"field": "vocabularyId"}
            )
        return doc
    doc = store.default_vocabulary(scope)
    if doc is None:
        raise errors.Unprocessable(
            "Importing products needs a vocabulary: create one with POST /api/v1/pim/vocabularies first (a tenant's first is its default).",
            code="no_vocabulary",
        )
    return doc


# What a ProductImportData job keeps of its vocabulary (`snapshot`): what `options_for` reads, and
# `updated_at`, which version it was.
SNAPSHOT_FIELDS = ("id", "default_locale", "include_missing_attributes", "attributes", "updated_at")


def snapshot(vocabulary: dict[str, Any]) -> dict[str, Any]:
    """The vocabulary as a job keeps it, to run under it whatever PUT follows: fewer fields than the
    stored vocabulary, so it fits in a document wherever the vocabulary does."""
    return {k: vocabulary[k] for k in SNAPSHOT_FIELDS if k in vocabulary}


def options_for(request: ImportRequest, vocabulary: dict[str, Any], verbose: bool = False) -> syndigo.ImportOptions:
    include = request.shouldIncludeMissingVocabularyAttributes
    if include is None:
        include = bool(vocabulary.get("include_missing_attributes", False))
    return syndigo.ImportOptions(
        vocabulary=syndigo.Vocabulary.from_doc(vocabulary),
        identifier_property=request.ProductImportData.ProductIdentifierProperty,
        include_missing=include,
        archived=request.ProductImportData.Archived,
        verbose=verbose,
    )


def prefetcher(options: syndigo.ImportOptions):  # type: ignore[no-untyped-def]
    def prefetch(view: CatalogView, batch: list[Any]) -> None:
        view.prefetch(*syndigo.syndigo_needs(batch, options), values=syndigo.value_keys(batch, options))

    return prefetch


def vendor_result(item: dict[str, Any]) -> dict[str, Any]:
    """A per-item result in the vendor's shape (Result, IdentifierValue, MatchedId, Errors)."""
    out: dict[str, Any] = {
        "Result": "Failure" if item["result"] == "failed" else "Success",
        "IdentifierValue": item.get("identifier"),
        "MatchedId": item.get("product_id"),
        "Errors": [{"Code": e["code"], "Field": e.get("field"), "Message": e["message"]} for e in item.get("errors", [])],
    }
    if "changes" in item:
        out["Changes"] = item["changes"]
        out["ValidationIssues"] = item.get("issues", [])
    return out


NOT_COMMITTED = "Not committed: another product failed and ErrorMode is Fail."
CANCELLED_UNCOMMITTED = "Not committed: the job was cancelled before ErrorMode Fail's commit pass."


def held_back(item: dict[str, Any], created: set[str], why: str = NOT_COMMITTED) -> dict[str, Any]:
    """An item of an import that ErrorMode Fail held back: one that passed fails as not committed
    (`why`), and none names a product that only the import would have created (`created`). Like any
    failure it lists no change (verbose): the changes it would have made were never made."""
    product_id = None if item.get("product_id") in created else item.get("product_id")
    if item["result"] == "failed":
        return {**item, "product_id": product_id}
    error = {"code": "not_committed", "field": None, "message": why}
    kept = {k: v for k, v in item.items() if k not in ("changes", "issues")}
    return {**kept, "result": "failed", "product_id": product_id, "errors": [error]}


def created_by(results: list[dict[str, Any]]) -> set[str]:
    return {r["product_id"] for r in results if r["result"] == "created"}


def overall(results: list[dict[str, Any]]) -> str:
    """Success; PartialSuccess when some products were committed and others failed; Failure when none was."""
    failed = sum(r["result"] == "failed" for r in results)
    return "Success" if not failed else "Failure" if failed == len(results) else "PartialSuccess"


def import_products(
    principal: Principal, body: Any, *, verbose: bool, what_if: bool, include_missing: bool | None, vocabulary_id: str | None
) -> tuple[str, dict[str, Any]]:
    """POST /product-import: the vendor's request and response, applied with the bulk engine; and
    the import's id, which its failure issues and audit events carry as their job_id."""
    request = parse_request(body, what_if=what_if, include_missing=include_missing, vocabulary_id=vocabulary_id)
    products = request.ProductImportData.ProductsToImport
    if len(products) > SYNC_LIMIT:
        raise errors.PayloadTooLarge(
            f"At most {SYNC_LIMIT} products per request; send larger imports as the payload of a BULK_IMPORT job (POST /api/v1/pim/bulk-jobs)."
        )
    scope = principal.scope
    vocabulary = load_vocabulary(scope, request.vocabularyId)
    options = options_for(request, vocabulary, verbose)
    import_id = str(uuid.uuid4())

    def context() -> JobContext:
        return JobContext(
            job_id=import_id,
            job_type="PRODUCT_IMPORT",
            org_id=scope.org_id,
            tenant_id=scope.tenant_id,
            actor_email=principal.email,
            user_id=principal.user_id,
            ip_address=principal.ip_address,
            now=utcnow(),
            quality_threshold=get_settings().quality_threshold,
        )

    def apply_product(view: CatalogView, index: int, raw: Any) -> dict[str, Any]:
        return syndigo.apply_syndigo_item(view, index, raw, options)

    apply = catalog.naming_no_unborn_product(apply_product) if request.whatIf else apply_product
    prefetch = prefetcher(options)
    fail_mode = request.ErrorMode == ErrorModeValue.Fail
    # whatIf runs the pass a real import starts with and commits nothing; ErrorMode Fail's first pass
    # validates every product (committing only the failures' issues), Ignore's commits as it goes.
    first = catalog.NOTHING if request.whatIf else catalog.FAILURES if fail_mode else catalog.ALL
    results = catalog.apply_items(scope, products, context, apply, prefetch, first)
    # ErrorMode Fail: one product failing holds back every other (and whatIf says so, as the import would).
    held = fail_mode and any(r["result"] == "failed" for r in results)
    if first == catalog.FAILURES and not held:
        results = catalog.apply_items(scope, products, context, apply, prefetch, catalog.ALL)
    if held:
        created = created_by(results)
        results = [held_back(r, created) for r in results]
    outcome = overall(results)
    return import_id, {
        "VerboseResponse": verbose,
        "OverallResult": outcome,
        "WhatIf": request.whatIf,
        "Errors": [{"Code": "import_failed", "Message": "No product was committed."}] if outcome == "Failure" else [],
        "ResultsByActionType": {"ProductImportData": [vendor_result(r) for r in results]},
    }
