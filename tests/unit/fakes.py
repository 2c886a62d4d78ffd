"""In-memory stand-ins for the store, so the pure engine can be driven without Firestore.

`MemoryCatalog` holds one tenant's committed documents; `MemoryLoader` is the engine's `Loader` port
over it; `commit` writes a `CatalogView`'s recorded changes back exactly the way
`common.store.catalog.write_view` queues them on a Firestore transaction:

* dirty products: the view's document is set (whole-document overwrite), or deleted when it is None;
* dirty SKU index entries: set when they still have holders, deleted otherwise;
* dirty identifier index entries: set when they still have open failures, deleted otherwise;
* issue writes: set (overwrite) when they carry `created_at`, else `set(..., merge=True)`, which
  merges the given fields into the stored document (creating it when absent);
* audit events: set by id.

Reads and commits deep-copy, as Firestore does: what a view holds is never the stored object.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.domain import rules
from common.domain.engine import CatalogView, JobContext, apply_plain_item, indexed_values
from common.store.catalog import failure_writes

NOW = datetime(2024, 11, 15, 14, 0, tzinfo=UTC)
ORG = "org-1"
TENANT = "tenant-1"
ACTOR = "alice@example.com"


@dataclass
class MemoryCatalog:
    """One tenant's committed documents, keyed like the Loader port keys them."""

    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    skus: dict[str, dict[str, Any]] = field(default_factory=dict)
    identifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    audits: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    taxonomy: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def open_issues(self, product_id: str | None = None, issue_type: str | None = None) -> list[dict[str, Any]]:
        """Unresolved issues, as `GET /validation` lists them, optionally for one product / type."""
        return [
            doc
            for doc in self.issues.values()
            if doc.get("resolved") is False
            and (product_id is None or doc.get("product_id") == product_id)
            and (issue_type is None or doc.get("issue_type") == issue_type)
        ]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "products": self.products,
                "skus": self.skus,
                "identifiers": self.identifiers,
                "issues": self.issues,
                "audits": self.audits,
            }
        )


class MemoryLoader:
    """The engine's `Loader` port over a `MemoryCatalog`; counts its calls."""

    def __init__(self, catalog: MemoryCatalog) -> None:
        self.catalog = catalog
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def _get(self, name: str, source: dict[str, dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        keys = tuple(keys)
        self.calls.append((name, keys))
        return {k: copy.deepcopy(source[k]) if k in source else None for k in keys}

    def products(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return self._get("products", self.catalog.products, ids)

    def values(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        keys = list(keys)
        self.calls.append(("values", tuple(sorted(keys))))
        return {k: copy.deepcopy(self.catalog.values.get(k)) for k in keys}

    def taxonomy_nodes(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ids = list(ids)
        self.calls.append(("taxonomy_nodes", tuple(sorted(ids))))
        return {i: copy.deepcopy(self.catalog.taxonomy.get(i)) for i in ids}

    def issues(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ids = list(ids)
        self.calls.append(("issues", tuple(sorted(ids))))
        return {i: copy.deepcopy(self.catalog.issues.get(i)) for i in ids}

    def indexes(
        self, skus: Iterable[str], identifiers: Iterable[str], values: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None]]:
        """One round trip in Firestore; recorded here as the reads it stands for (the non-empty ones)."""
        skus, identifiers, values = list(skus), list(identifiers), list(values)
        return (
            self._get("skus", self.catalog.skus, skus) if skus else {},
            self._get("identifiers", self.catalog.identifiers, identifiers) if identifiers else {},
            self.values(values) if values else {},
        )

    def open_issues(self, product_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        ids = sorted(set(product_ids))
        self.calls.append(("open_issues", tuple(ids)))
        return {
            pid: [
                {"id": issue_id, "identifier": doc.get("identifier")}
                for issue_id, doc in self.catalog.issues.items()
                if doc.get("product_id") == pid and doc.get("resolved") is False
            ]
            for pid in ids
        }


def _merge(target: dict[str, Any], data: dict[str, Any]) -> None:
    """Firestore `set(data, merge=True)`: given fields replace, nested maps merge."""
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def commit(catalog: MemoryCatalog, view: CatalogView) -> None:
    """Apply every change the view recorded, as `write_view` does, then forget them."""
    for pid in view.dirty_products:
        doc = view.products.get(pid)
        if doc is None:
            catalog.products.pop(pid, None)
        else:
            catalog.products[pid] = copy.deepcopy(doc)
    for sku in view.dirty_skus:
        entry = view.skus[sku]
        if entry["holders"]:
            catalog.skus[sku] = copy.deepcopy(entry)
        else:
            catalog.skus.pop(sku, None)
    for ident in view.dirty_identifiers:
        entry = view.identifiers[ident]
        if entry["open"]:
            catalog.identifiers[ident] = copy.deepcopy(entry)
        else:
            catalog.identifiers.pop(ident, None)
    for issue_id, data in view.issue_writes.items():
        if "created_at" in data:
            catalog.issues[issue_id] = copy.deepcopy(data)
        else:
            _merge(catalog.issues.setdefault(issue_id, {}), data)
    for event in view.audits:
        catalog.audits[event["id"]] = copy.deepcopy(event)
    for key in view.dirty_values:
        entry = view.values[key]
        if entry["holders"]:
            catalog.values[key] = copy.deepcopy(entry)
        else:
            catalog.values.pop(key, None)
    for ref, fields in view.extra_writes.items():
        _merge(catalog.extra.setdefault(ref, {}), copy.deepcopy(fields))
    view.clear_changes()


def commit_failures(catalog: MemoryCatalog, view: CatalogView) -> None:
    """Apply only what `failure_writes` says a pass that commits only failures writes (ErrorMode
    Fail's validation), as `write_failures` does, then forget every change."""
    opened, resolved, entries = failure_writes(view)
    for issue_id, doc in opened.items():
        catalog.issues[issue_id] = copy.deepcopy(doc)
    for issue_id, fields in resolved.items():
        _merge(catalog.issues.setdefault(issue_id, {}), fields)
    for ident, still_open in entries.items():
        if still_open:
            catalog.identifiers[ident] = {"identifier": ident, "open": dict(still_open)}
        else:
            catalog.identifiers.pop(ident, None)
    view.clear_changes()


def make_context(
    job_type: str = "BULK_IMPORT",
    job_id: str = "job-1",
    *,
    now: datetime = NOW,
    quality_threshold: int = 60,
) -> JobContext:
    return JobContext(
        job_id=job_id,
        job_type=job_type,
        org_id=ORG,
        tenant_id=TENANT,
        actor_email=ACTOR,
        user_id="user-1",
        ip_address="203.0.113.42",
        now=now,
        quality_threshold=quality_threshold,
    )


def new_view(catalog: MemoryCatalog, job_type: str = "BULK_IMPORT", job_id: str = "job-1", **kwargs: Any) -> CatalogView:
    return CatalogView(MemoryLoader(catalog), make_context(job_type, job_id, **kwargs))


def run_job(
    catalog: MemoryCatalog,
    job_type: str,
    items: list[Any],
    job_id: str = "job-1",
    *,
    first_index: int = 0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Apply items in one view (like one chunk step), commit, and return the per-item results."""
    view = new_view(catalog, job_type, job_id, **kwargs)
    results = [apply_plain_item(view, first_index + i, raw) for i, raw in enumerate(items)]
    commit(catalog, view)
    return results


def run_one(catalog: MemoryCatalog, job_type: str, item: Any, job_id: str = "job-1", **kwargs: Any) -> dict[str, Any]:
    return run_job(catalog, job_type, [item], job_id, **kwargs)[0]


def assert_consistent(catalog: MemoryCatalog) -> None:
    """The invariants the engine keeps between committed states of one tenant.

    * the SKU index is exactly what the products hold (product-level `p`, variant-level `v`);
    * each product's `open_issues` mirrors the unresolved issue documents about it, and its
      `issue_counts` counts them by severity;
    * a product has a DUPLICATE_SKU issue exactly for its SKUs held twice or more in the tenant;
    * no unresolved issue points at a deleted product, and every stored issue is a whole document;
    * the identifier index lists exactly the unresolved failure issues that carry an identifier,
      at most one an identifier;
    * the value index is exactly the GTINs and identifier values the products hold, no empty entry.
    """
    expected_index: dict[str, dict[str, dict[str, int]]] = {}
    for pid, product in catalog.products.items():
        for sku, count in rules.product_skus(product).items():
            primary = 1 if product.get("sku") == sku else 0
            expected_index.setdefault(sku, {})[pid] = {"p": primary, "v": count - primary}
    assert {sku: entry["holders"] for sku, entry in catalog.skus.items()} == expected_index
    assert all(entry["sku"] == sku for sku, entry in catalog.skus.items())
    totals = {sku: sum(h["p"] + h["v"] for h in holders.values()) for sku, holders in expected_index.items()}

    for pid, product in catalog.products.items():
        mirrored = {key: entry["id"] for key, entry in product.get("open_issues", {}).items()}
        # Failure issues (a rejected job item) may point at the product they matched, but they are
        # about the item, not the product's data: they stay out of its open_issues and counts.
        stored = {doc["key"]: doc["id"] for doc in catalog.open_issues(product_id=pid) if doc.get("job_id") is None}
        assert mirrored == stored, pid
        duplicated = {f"DUPLICATE_SKU:{sku}" for sku in rules.product_skus(product) if totals[sku] >= 2}
        assert {k for k in mirrored if k.startswith("DUPLICATE_SKU:")} == duplicated, pid
        severities = Counter(entry["severity"] for entry in product.get("open_issues", {}).values())
        assert product["issue_counts"] == {"ERROR": severities["ERROR"], "WARNING": severities["WARNING"]}
        assert product["quality_score"] == rules.quality_score(product)

    for doc in catalog.issues.values():
        assert {"id", "created_at", "updated_at", "resolved", "issue_type", "severity", "message"} <= set(doc), doc
        if doc["resolved"] is False and doc.get("product_id") is not None:
            assert doc["product_id"] in catalog.products, doc

    expected_values: dict[str, dict[str, bool]] = {}
    for pid, product in catalog.products.items():
        for key in indexed_values(product):
            expected_values.setdefault(key, {})[pid] = True
    assert {key: entry["holders"] for key, entry in catalog.values.items()} == expected_values
    assert all((entry["key"], entry["value"]) == tuple(key.split("\n", 1)) for key, entry in catalog.values.items())

    indexed = {(ident, issue_id) for ident, entry in catalog.identifiers.items() for issue_id in entry["open"]}
    open_failures = {(doc["identifier"], doc["id"]) for doc in catalog.open_issues() if doc.get("job_id") and doc.get("identifier")}
    assert indexed == open_failures
    # One open failure issue per identifier, the newest: it supersedes the older (engine.supersede_older).
    assert len(open_failures) == len({ident for ident, _ in open_failures}), sorted(open_failures)


def run_syndigo(
    catalog: MemoryCatalog, items: list[Any], options: Any, job_id: str = "job-1", *, first_index: int = 0, **kwargs: Any
) -> list[dict[str, Any]]:
    """Apply ProductsToImport entries (`common.domain.syndigo`) in one view, commit, return the results."""
    from common.domain.syndigo import apply_syndigo_item

    view = new_view(catalog, "BULK_IMPORT", job_id, **kwargs)
    results = [apply_syndigo_item(view, first_index + i, raw, options) for i, raw in enumerate(items)]
    commit(catalog, view)
    return results


def assert_value_index(catalog: MemoryCatalog) -> None:
    """The value index (GTINs and identifier attributes' values) is exactly what the products hold."""
    from common.domain.engine import indexed_values

    expected: dict[str, dict[str, bool]] = {}
    for pid, product in catalog.products.items():
        for key in indexed_values(product):
            expected.setdefault(key, {})[pid] = True
    assert {key: entry["holders"] for key, entry in catalog.values.items()} == expected
    for key, entry in catalog.values.items():
        attr, _, value = key.partition("\n")
        assert (entry["key"], entry["value"]) == (attr, value), key
