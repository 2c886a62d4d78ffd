"""Catalog-wide invariants checked on what the emulator holds, after jobs raced each other.

`stored_catalog` reads a tenant's products, SKU, identifier and value indexes, validation issues
and audit events into the unit suite's `MemoryCatalog`, keyed as the engine's loader keys them, so
that `assert_consistent` (tests/unit/fakes.py: indexes agree with the products, no open issue on a
deleted product, one open failure issue per identifier, ...) judges the real store too.
"""

from __future__ import annotations

from typing import Any

from common.domain.engine import value_key
from common.store.paths import Scope, coll, rows
from tests.unit.fakes import MemoryCatalog, assert_consistent


def _all(scope: Scope, name: str) -> list[tuple[str, dict[str, Any]]]:
    return list(rows(coll(scope, name).order_by("__name__")))


def stored_catalog(scope: Scope) -> MemoryCatalog:
    """Every catalog document of the tenant, as the unit suite's in-memory catalog."""
    return MemoryCatalog(
        products=dict(_all(scope, "products")),
        skus={doc["sku"]: doc for _, doc in _all(scope, "sku_index")},
        identifiers={doc["identifier"]: doc for _, doc in _all(scope, "identifier_index")},
        issues={doc_id: {**doc, "id": doc_id} for doc_id, doc in _all(scope, "validation_issues")},
        audits=dict(_all(scope, "audit_events")),
        values={value_key(doc["key"], doc["value"]): doc for _, doc in _all(scope, "value_index")},
    )


def assert_catalog_consistent(scope: Scope) -> MemoryCatalog:
    """`assert_consistent` on the stored catalog, and: every product's last audit event on it is not
    a deletion, and every product deleted (its last event) is gone. Returns the catalog read."""
    catalog = stored_catalog(scope)
    assert_consistent(catalog)
    last: dict[str, dict[str, Any]] = {}
    for event in sorted(catalog.audits.values(), key=lambda e: e["created_at"]):
        if event["entity_type"] == "product":
            last[event["entity_id"]] = event
    for product_id in catalog.products:
        assert product_id in last and last[product_id]["action"] != "product.deleted", product_id
    assert not {pid for pid, event in last.items() if event["action"] == "product.deleted"} & set(catalog.products)
    return catalog
