"""The import engine: applies job items to a view of the catalog, with no I/O of its own.

A `CatalogView` holds the documents an item needs (products, SKU index entries, identifier index
entries), loads missing ones through a `Loader` port, and records every document it changes. The
store commits those changes atomically with the chunk's progress; a dry run just drops them; unit
tests drive it with an in-memory loader. Everything an item changes (product, SKU index, validation
issues on it and on other holders of its SKUs, its audit event) is recorded together, so it commits
together.

Every id the engine makes is derived from (job, item index), so running the same item again after a
lost commit produces the very same documents.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from common.domain import rules
from common.models.product import CORE_FIELDS, ProductIn, ProductPatch

_NS = uuid.UUID("6f1d3c2a-9b7e-4e55-8a1f-0c2d4b6e8f10")

# Failure classes: each failed item opens a validation issue of this type (ERROR).
IMPORT_REJECTED = "IMPORT_REJECTED"
PRODUCT_NOT_FOUND = "PRODUCT_NOT_FOUND"
IDENTIFIER_CONFLICT = "IDENTIFIER_CONFLICT"
AMBIGUOUS_IDENTIFIER = "AMBIGUOUS_IDENTIFIER"
FAILURE_ISSUE_TYPES = (IMPORT_REJECTED, PRODUCT_NOT_FOUND, IDENTIFIER_CONFLICT, AMBIGUOUS_IDENTIFIER)
ISSUE_TYPES = (*rules.RULE_ISSUE_TYPES, *FAILURE_ISSUE_TYPES)

CREATED, UPDATED, DELETED, FAILED = "created", "updated", "deleted", "failed"


def derived_id(*parts: object) -> str:
    return str(uuid.uuid5(_NS, ":".join(str(p) for p in parts)))


@dataclass(frozen=True)
class JobContext:
    """Who is making the change, and under which job."""

    job_id: str
    job_type: str
    org_id: str
    tenant_id: str
    actor_email: str
    user_id: str
    ip_address: str
    now: datetime
    quality_threshold: int = 60


class Loader(Protocol):
    """Reads the engine needs; each returns a dict with every asked key (None when absent)."""

    def products(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]: ...

    def open_issues(self, product_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Unresolved issues pointing at each product: their `id` and `identifier`."""
        ...

    def values(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Value index entries (see `value_key`): who holds an identifier attribute's value."""
        ...

    def taxonomy_nodes(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]: ...

    def issues(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Validation issues by id."""
        ...

    def indexes(
        self, skus: Iterable[str], identifiers: Iterable[str], values: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None]]:
        """SKU index entries, identifier failure records and value index entries, in one round trip."""
        ...


@dataclass
class ItemError:
    code: str
    message: str
    field: str | None = None

    def dump(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


class ItemFailure(Exception):
    """An item the engine refuses: recorded as a failed result and a validation issue."""

    def __init__(self, issue_type: str, errors: list[ItemError], product_id: str | None = None):
        super().__init__(errors[0].message if errors else issue_type)
        self.issue_type = issue_type
        self.errors = errors
        self.product_id = product_id


@dataclass
class CatalogView:
    loader: Loader
    ctx: JobContext
    products: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    skus: dict[str, dict[str, Any]] = field(default_factory=dict)
    identifiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What changed, by document.
    dirty_products: set[str] = field(default_factory=set)
    dirty_skus: set[str] = field(default_factory=set)
    dirty_identifiers: set[str] = field(default_factory=set)
    issue_writes: dict[str, dict[str, Any]] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    dirty_values: set[str] = field(default_factory=set)
    # Unresolved issues pointing at a product, as the loader found them (deletes resolve them).
    product_issues: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Other documents merged as they are, keyed by (collection, id): the asset registry.
    extra_writes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Products created in this view, which the store holds only once the view is committed.
    created: set[str] = field(default_factory=set)
    # Validation issues read by id, as the store held them (see `supersede_failure`).
    issues: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    # Each identifier's failure issues that may stand open once the view is committed, whatever it
    # commits: those open in the store when it was read, and those the view opened since. A newer
    # failure supersedes them all, even those an item the view may not commit resolved
    # (`supersede_older`); ErrorMode Fail's validation commits only failures (store.catalog.failure_writes).
    failure_ids: dict[str, set[str]] = field(default_factory=dict)
    # Each identifier's failure issues open in the store when it was read (see `discard_changes`).
    stored_failure_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    # Failure issues resolved because a newer failure of their identifier supersedes them: the old
    # issue's id, and the new one's (a pass that commits only failures writes these too).
    superseded: dict[str, str] = field(default_factory=dict)

    # -- reads -------------------------------------------------------------------------------

    def prefetch(
        self,
        product_ids: Iterable[str] = (),
        skus: Iterable[str] = (),
        idents: Iterable[str] = (),
        values: Iterable[str] = (),
        *,
        names_of_products: bool = False,
    ) -> None:
        """Load many documents in a few round trips instead of one per item: the products, then the
        SKUs and value index entries they and the items hold, and the identifiers' failure records
        (with `names_of_products`, those of the names the products go by too: `failure_names`)."""
        wanted = {p for p in product_ids if p not in self.products}
        if wanted:
            self.products.update(self.loader.products(wanted))
        loaded = [doc for p in wanted if (doc := self.products.get(p))]
        want_skus = {s for s in (*skus, *(s for doc in loaded for s in rules.product_skus(doc))) if s not in self.skus}
        names = (n for doc in loaded for n in failure_names(doc)) if names_of_products else ()
        want_idents = {i for i in (*idents, *names) if i not in self.identifiers}
        want_values = {k for k in (*values, *(k for doc in loaded for k in indexed_values(doc))) if k not in self.values}
        if not (want_skus or want_idents or want_values):
            return
        found_skus, found_idents, found_values = self.loader.indexes(want_skus, want_idents, want_values)
        for sku, doc in found_skus.items():
            self.skus[sku] = doc or {"sku": sku, "holders": {}}
        for ident, doc in found_idents.items():
            self.identifiers[ident] = doc or {"identifier": ident, "open": {}}
            self.stored_failure_ids[ident] = frozenset(self.identifiers[ident]["open"])
            self.failure_ids[ident] = set(self.stored_failure_ids[ident])
        self._keep_values(found_values)

    def prefetch_open_issues(self, product_ids: Iterable[str]) -> None:
        wanted = {p for p in product_ids if p not in self.product_issues}
        if wanted:
            self.product_issues.update(self.loader.open_issues(wanted))

    def open_issues_of(self, product_id: str) -> list[dict[str, Any]]:
        self.prefetch_open_issues([product_id])
        return self.product_issues[product_id]

    def prefetch_issues(self, issue_ids: Iterable[str]) -> None:
        """Load issues by id, and the identifier entries that list them."""
        wanted = {i for i in issue_ids if i not in self.issues}
        if wanted:
            self.issues.update(self.loader.issues(wanted))
            self.prefetch(idents=[doc["identifier"] for i in wanted if (doc := self.issues[i]) and doc.get("identifier")])

    def prefetch_values(self, keys: Iterable[str]) -> None:
        wanted = {k for k in keys if k not in self.values}
        if wanted:
            self._keep_values(self.loader.values(wanted))

    def _keep_values(self, found: dict[str, dict[str, Any] | None]) -> None:
        for k, doc in found.items():
            attr, _, value = k.partition("\n")
            self.values[k] = doc or {"key": attr, "value": value, "holders": {}}

    def value_entry(self, key: str) -> dict[str, Any]:
        self.prefetch_values([key])
        return self.values[key]

    def product(self, product_id: str) -> dict[str, Any] | None:
        if product_id not in self.products:
            self.prefetch(product_ids=[product_id])
        return self.products.get(product_id)

    def sku_entry(self, sku: str) -> dict[str, Any]:
        if sku not in self.skus:
            self.prefetch(skus=[sku])
        return self.skus[sku]

    def identifier_entry(self, ident: str) -> dict[str, Any]:
        if ident not in self.identifiers:
            self.prefetch(idents=[ident])
        return self.identifiers[ident]

    def product_holders(self, sku: str) -> list[str]:
        """Products whose own (product-level) SKU is `sku`."""
        return sorted(pid for pid, h in self.sku_entry(sku)["holders"].items() if h.get("p"))

    @staticmethod
    def sku_total(entry: dict[str, Any]) -> int:
        return sum(h.get("p", 0) + h.get("v", 0) for h in entry["holders"].values())

    # -- writes ------------------------------------------------------------------------------

    def write_count(self) -> int:
        return (
            len(self.dirty_products)
            + len(self.dirty_skus)
            + len(self.dirty_identifiers)
            + len(self.issue_writes)
            + len(self.audits)
            + len(self.dirty_values)
            + len(self.extra_writes)
        )

    def open_issue(self, issue_id: str, doc: dict[str, Any]) -> None:
        self.issue_writes[issue_id] = {
            "id": issue_id,
            "org_id": self.ctx.org_id,
            "tenant_id": self.ctx.tenant_id,
            "resolved": False,
            "created_at": self.ctx.now,
            "updated_at": self.ctx.now,
            **doc,
        }

    def resolve_issue(self, issue_id: str) -> None:
        pending = self.issue_writes.get(issue_id)
        if pending is not None and "created_at" in pending:
            pending.update(resolved=True, updated_at=self.ctx.now)
        else:
            self.issue_writes[issue_id] = {"resolved": True, "updated_at": self.ctx.now}

    def update_issue(self, issue_id: str, changes: dict[str, Any]) -> None:
        self.issue_writes.setdefault(issue_id, {}).update(changes, updated_at=self.ctx.now)

    def audit(self, index: int, action: str, entity_type: str, entity_id: str, details: dict[str, Any]) -> None:
        seq = sum(1 for a in self.audits if a["details"].get("item_index") == index)
        self.audits.append(
            {
                "id": derived_id(self.ctx.job_id, index, "audit", seq),
                "org_id": self.ctx.org_id,
                "tenant_id": self.ctx.tenant_id,
                "actor_email": self.ctx.actor_email,
                "action": action,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "details": {"job_id": self.ctx.job_id, "item_index": index, **details},
                "ip_address": self.ctx.ip_address,
                "created_at": self.ctx.now,
            }
        )

    def clear_changes(self) -> None:
        """Forget the recorded writes: after they were committed, or after items whose writes are
        not committed (`discard_changes`). The loaded state, and `created`, stay."""
        self.dirty_products.clear()
        self.dirty_skus.clear()
        self.dirty_identifiers.clear()
        self.issue_writes.clear()
        self.audits.clear()
        self.dirty_values.clear()
        self.extra_writes.clear()
        self.superseded.clear()

    def discard_changes(self) -> None:
        """Forget the writes of items a pass replays without committing them (`catalog.run_step`),
        the failure issues they opened included: a later failure supersedes only what the store
        holds, not an issue never stored (resolving it would write a stub of one)."""
        self.clear_changes()
        self.failure_ids = {ident: set(ids) for ident, ids in self.stored_failure_ids.items()}


# -- issues on products ----------------------------------------------------------------------


def _counts(open_issues: dict[str, dict[str, Any]]) -> dict[str, int]:
    counts = {"ERROR": 0, "WARNING": 0}  # not a Counter: this runs for every item, and a Counter costs more
    for entry in open_issues.values():
        if entry["severity"] in counts:
            counts[entry["severity"]] += 1
    return counts


def _sync_findings(view: CatalogView, index: int, product: dict[str, Any], findings: list[rules.Finding]) -> list[str]:
    """Open issues for new findings, resolve those whose cause is gone. Returns what changed."""
    open_issues: dict[str, dict[str, Any]] = product.setdefault("open_issues", {})
    wanted = {f.key: f for f in findings}
    changes: list[str] = []
    for key in [k for k in open_issues if k not in wanted]:
        view.resolve_issue(open_issues.pop(key)["id"])
        changes.append(f"resolved {key}")
    for key, finding in wanted.items():
        current = open_issues.get(key)
        if current is None:
            issue_id = derived_id(view.ctx.job_id, index, product["id"], key)
            view.open_issue(
                issue_id,
                {
                    "product_id": product["id"],
                    "issue_type": finding.issue_type,
                    "severity": finding.severity,
                    "message": finding.message,
                    "key": key,
                    "job_id": None,
                    "item_index": None,
                    "identifier": None,
                },
            )
            open_issues[key] = {"id": issue_id, "severity": finding.severity, "message": finding.message}
            changes.append(f"opened {key}")
        elif current.get("message") != finding.message:
            view.update_issue(current["id"], {"message": finding.message})
            current["message"] = finding.message
    product["issue_counts"] = _counts(open_issues)
    return changes


def _toggle_duplicate(view: CatalogView, index: int, holder_id: str, sku: str, duplicated: bool) -> None:
    """Open or resolve the DUPLICATE_SKU issue of another holder of `sku`."""
    holder = view.product(holder_id)
    if holder is None:
        return
    open_issues = holder.setdefault("open_issues", {})
    finding = rules.duplicate_sku_finding(sku)
    if duplicated and finding.key not in open_issues:
        issue_id = derived_id(view.ctx.job_id, index, holder_id, finding.key)
        view.open_issue(
            issue_id,
            {
                "product_id": holder_id,
                "issue_type": finding.issue_type,
                "severity": finding.severity,
                "message": finding.message,
                "key": finding.key,
                "job_id": None,
                "item_index": None,
                "identifier": None,
            },
        )
        open_issues[finding.key] = {"id": issue_id, "severity": finding.severity, "message": finding.message}
    elif not duplicated and finding.key in open_issues:
        view.resolve_issue(open_issues.pop(finding.key)["id"])
    else:
        return
    holder["issue_counts"] = _counts(open_issues)
    view.dirty_products.add(holder_id)


def _move_skus(view: CatalogView, index: int, product_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> set[str]:
    """Update the SKU index for one product's change; returns its SKUs now held more than once."""
    old_skus = rules.product_skus(old) if old else {}
    new_skus = rules.product_skus(new) if new else {}
    old_primary = old.get("sku") if old else None
    new_primary = new.get("sku") if new else None
    for sku in old_skus.keys() | new_skus.keys():
        entry = view.sku_entry(sku)
        before = CatalogView.sku_total(entry)
        held, holds = old_skus.get(sku, 0), new_skus.get(sku, 0)
        p = 1 if new_primary == sku else 0
        v = holds - p
        if held == holds and (old_primary == sku) == (new_primary == sku):
            continue
        if holds:
            entry["holders"][product_id] = {"p": p, "v": v}
        else:
            entry["holders"].pop(product_id, None)
        view.dirty_skus.add(sku)
        after = CatalogView.sku_total(entry)
        if (before >= 2) != (after >= 2):
            for other in entry["holders"]:
                if other != product_id:
                    _toggle_duplicate(view, index, other, sku, after >= 2)
    if not new:
        return set()
    return {sku for sku in new_skus if CatalogView.sku_total(view.sku_entry(sku)) >= 2}


def value_key(attribute: str, value: str) -> str:
    """The value index key of an identifier attribute's value (`gtin`, or a vocabulary attribute)."""
    return f"{attribute}\n{value}"


def indexed_values(product: dict[str, Any] | None) -> set[str]:
    """The value index keys a product holds: its GTIN and its identifier attributes' values."""
    if not product:
        return set()
    keys = {value_key("gtin", product["gtin"])} if product.get("gtin") else set()
    keys |= {value_key(attr, value) for attr, value in (product.get("identifier_values") or {}).items() if value}
    return keys


def _move_values(view: CatalogView, product_id: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    before, after = indexed_values(old), indexed_values(new)
    for key in before ^ after:
        entry = view.value_entry(key)
        if key in after:
            entry["holders"][product_id] = True
        else:
            entry["holders"].pop(product_id, None)
        view.dirty_values.add(key)


def holders_of(view: CatalogView, key: str) -> list[str]:
    return sorted(view.value_entry(key)["holders"])


def _resolve_failures(view: CatalogView, identifiers: Iterable[str | None]) -> None:
    """A successful item clears earlier failures recorded under the same identifier."""
    for ident in identifiers:
        if not ident:
            continue
        entry = view.identifier_entry(ident)
        if entry["open"]:
            for issue_id in entry["open"]:
                view.resolve_issue(issue_id)
            entry["open"] = {}
            view.dirty_identifiers.add(ident)


def supersede_failure(view: CatalogView, issue_id: str) -> None:
    """A retry job ran again an item that failed in the job it retries: the failure recorded then is
    resolved, whatever the item's outcome now (failing again, it opened an issue of its own). The
    identifier index forgets it too, so the issue resolves even when the retry corrected the item's
    identifier, or the item had none (then nothing else could ever resolve it)."""
    view.prefetch_issues([issue_id])
    issue = view.issues[issue_id]
    if issue is None or issue.get("resolved"):
        return  # no issue (an item ErrorMode Fail only left uncommitted), or already resolved
    view.issues[issue_id] = {**issue, "resolved": True}
    forget_failure(view, issue_id, issue.get("identifier"))


def failure_names(product: dict[str, Any]) -> set[str]:
    """The identifiers a failed item that matched this product can carry: its id, its SKU, its GTIN
    and its identifier attributes' values (how plain items and ProductImportData entries find one)."""
    names = {product.get("id"), product.get("sku"), product.get("gtin"), *(product.get("identifier_values") or {}).values()}
    return {n for n in names if isinstance(n, str) and n}


def _forget_failures_named(view: CatalogView, product_id: str, product: dict[str, Any]) -> None:
    """A deleted product's failure issues found through its names' identifier entries, which the
    step reads in its transaction. The issue query (`open_issues_of`) runs outside it, so it misses a
    failure another job's step commits for this product while this step runs; that step wrote its
    identifier's entry, so the two steps conflict and this one, run again, finds the issue there."""
    listed = {issue_id: ident for ident in sorted(failure_names(product)) for issue_id in view.identifier_entry(ident)["open"]}
    view.prefetch_issues(listed)
    for issue_id, ident in listed.items():
        issue = view.issues.get(issue_id)
        if issue is not None and not issue.get("resolved") and issue.get("product_id") == product_id:
            forget_failure(view, issue_id, ident)


def forget_failure(view: CatalogView, issue_id: str, identifier: str | None) -> None:
    """Resolve a failure issue, and take it out of its identifier's index entry, so that a later
    success under that identifier does not resolve it again."""
    view.resolve_issue(issue_id)
    if identifier and view.identifier_entry(identifier)["open"].pop(issue_id, None):
        view.dirty_identifiers.add(identifier)


# -- products ----------------------------------------------------------------------------------


def _variants(product_id: str, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    skus = Counter(v.get("sku") for v in variants)
    for i, variant in enumerate(variants):
        sku = variant.get("sku")
        # A variant keeps its id across updates through its SKU; a repeated or missing SKU falls back to position.
        key = sku if sku and skus[sku] == 1 else f"{sku or ''}#{i}"
        out.append(
            {
                "id": derived_id(product_id, "variant", key),
                "sku": variant.get("sku"),
                "gtin": variant.get("gtin"),
                "attributes": variant.get("attributes") or {},
            }
        )
    return out


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + "…"
    if isinstance(value, (dict, list)):
        return "(changed)"
    return value


def save_product(
    view: CatalogView,
    index: int,
    product_id: str,
    new: dict[str, Any] | None,
    *,
    identifiers: Iterable[str | None] = (),
    extra_details: dict[str, Any] | None = None,
) -> str:
    """Write one product's new state (None deletes it) with its index, issues and audit event."""
    ctx = view.ctx
    old = view.product(product_id)
    if new is not None:
        _check_storable(new, product_id if old is not None else None)
        new = {**new, "id": product_id, "org_id": ctx.org_id, "tenant_id": ctx.tenant_id}
        new["created_at"] = old["created_at"] if old else ctx.now
        new["open_issues"] = dict(old.get("open_issues", {})) if old else {}
        new["updated_at"] = old["updated_at"] if old else ctx.now
        if old is not None and _same(old, new):
            _resolve_failures(view, identifiers)
            return UPDATED
        new["updated_at"] = ctx.now
        new["version"] = (old or {}).get("version", 0) + 1
    duplicates = _move_skus(view, index, product_id, old, new)
    _move_values(view, product_id, old, new)
    view.products[product_id] = new
    view.dirty_products.add(product_id)
    if old is None:
        view.created.add(product_id)
    elif new is None:
        view.created.discard(product_id)
    details: dict[str, Any] = dict(extra_details or {})
    if new is None:
        assert old is not None
        for entry in old.get("open_issues", {}).values():
            view.resolve_issue(entry["id"])
        # Failure issues of items that matched this product go with it, out of the identifier index too.
        for issue in view.open_issues_of(product_id):
            forget_failure(view, issue["id"], issue.get("identifier"))
        _forget_failures_named(view, product_id, old)
        action, result = "product.deleted", DELETED
        details["sku"] = old.get("sku")
    else:
        new["quality_score"] = rules.quality_score(new)
        findings = rules.evaluate(new, duplicates, ctx.quality_threshold)
        changed_issues = _sync_findings(view, index, new, findings)
        if changed_issues:
            details["issues"] = changed_issues
        if old is None:
            action, result = "product.created", CREATED
            details["fields"] = sorted(k for k in CORE_FIELDS if new.get(k) not in (None, {}, []))
        else:
            action, result = "product.updated", UPDATED
            details["changes"] = {k: {"old": _short(old.get(k)), "new": _short(new.get(k))} for k in _data_keys(old, new) if old.get(k) != new.get(k)}
    view.audit(index, action, "product", product_id, details)
    # A product's variants are created, changed and deleted with it: each is audited as a variant.
    before, after = (old or {}).get("variants") or [], (new or {}).get("variants") or []
    if before != after:
        _audit_variants(view, index, before, after)
    _resolve_failures(view, identifiers)
    return result


# A Firestore document holds 1 MiB (1,048,576 bytes), field names included; what the engine adds to
# a product (ids, timestamps, issue summaries) stays well within the rest.
PRODUCT_MAX_BYTES = 1_000_000


def _check_storable(product: dict[str, Any], product_id: str | None) -> None:
    """A product too big to store fails as an item (in every pass, whatIf and ErrorMode Fail's
    validation included), rather than as a commit the store refuses. Only ProductImportData products
    can grow so (their values merge in, update after update); a plain item replaces what it names and
    is itself at most Settings.max_item_bytes."""
    if "values" not in product:
        return
    size = len(json.dumps(product, ensure_ascii=False, default=str).encode("utf-8"))
    if size > PRODUCT_MAX_BYTES:
        message = f"The product would take {size:,} bytes; a product holds at most {PRODUCT_MAX_BYTES:,}. Delete values it no longer needs."
        raise ItemFailure(IMPORT_REJECTED, [ItemError("product_too_large", message)], product_id)


_INTERNAL = {"id", "org_id", "tenant_id", "created_at", "updated_at", "open_issues", "issue_counts", "version", "quality_score"}


def _data_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted((set(old) | set(new)) - _INTERNAL)


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(k) == new.get(k) for k in _data_keys(old, new))


def _audit_variants(view: CatalogView, index: int, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    before = {v["id"]: v for v in old}
    after = {v["id"]: v for v in new}
    for vid in sorted(set(before) | set(after)):
        if vid not in before:
            view.audit(index, "variant.created", "variant", vid, {"sku": after[vid].get("sku")})
        elif vid not in after:
            view.audit(index, "variant.deleted", "variant", vid, {"sku": before[vid].get("sku")})
        elif before[vid] != after[vid]:
            view.audit(index, "variant.updated", "variant", vid, {"sku": after[vid].get("sku")})


# -- failures ----------------------------------------------------------------------------------


MAX_ITEM_ERRORS = 10


def _validation_errors(exc: ValidationError) -> list[ItemError]:
    """The first errors of an item, bounded: an item with 20,000 unknown fields must not make a
    per-item result bigger than the document that holds the chunk's results."""
    out = []
    found = exc.errors()
    for err in found[:MAX_ITEM_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"])[:200] if err["loc"] else None
        kind = err["type"]
        if kind == "extra_forbidden":
            out.append(ItemError("unknown_field", f"Unknown field '{loc}'.", loc))
        elif kind == "missing":
            out.append(ItemError("missing_field", f"Field '{loc}' is required.", loc))
        else:
            out.append(ItemError("invalid_value", f"Field '{loc}': {err['msg'][:300]}.", loc))
    if len(found) > MAX_ITEM_ERRORS:
        out.append(ItemError("more_errors", f"… and {len(found) - MAX_ITEM_ERRORS} more errors in this item.", None))
    return out


def record_failure(view: CatalogView, index: int, identifier: str | None, failure: ItemFailure) -> dict[str, Any]:
    """A failed item: its result, plus an ERROR validation issue a person can act on, which
    supersedes the older failure issues of its identifier (`supersede_older`)."""
    issue_id = derived_id(view.ctx.job_id, index, "failure")
    what = f"Item {index}" + (f" ('{_clip(identifier, IDENTIFIER_CHARS)}')" if identifier else "")
    reasons = _clip(" ".join(e.message for e in failure.errors[:5]), 2_000)
    view.open_issue(
        issue_id,
        {
            "product_id": failure.product_id,
            "issue_type": failure.issue_type,
            "severity": rules.ERROR,
            "message": f"{what} of job {view.ctx.job_id} was not applied: {reasons}",
            "key": failure.issue_type,
            "job_id": view.ctx.job_id,
            "item_index": index,
            "identifier": identifier,
        },
    )
    if identifier:
        supersede_older(view, identifier, issue_id)
    return result(index, identifier, failure.product_id, FAILED, [e.dump() for e in failure.errors])


def supersede_older(view: CatalogView, identifier: str, issue_id: str) -> None:
    """One open failure issue per identifier in a tenant: the newest. A nightly feed failing on the
    same product would otherwise pile up an issue a night, each saying the same; the older ones are
    resolved as the new one opens, in the same commit (the identifier's entry is read in that
    transaction, so two failures committing at once take turns and the second resolves the first).
    Never `issue_id` itself: running the same item again finds its own issue stored."""
    entry = view.identifier_entry(identifier)  # reading it notes the store's open ones in `failure_ids`
    known = view.failure_ids[identifier]
    for old in sorted(known - {issue_id}):
        view.resolve_issue(old)
        view.superseded[old] = issue_id
    known.add(issue_id)
    entry["open"] = {issue_id: True}
    view.dirty_identifiers.add(identifier)


# A chunk's results share one Firestore document (1 MiB) among its items (at most 250, see
# Settings.chunk_size): each result stays under 3,000 bytes, however many errors its item has (one
# per unknown attribute of a ProductImportData entry) and however long the texts they quote.
RESULT_ERRORS_BYTES = 1_500
IDENTIFIER_CHARS = 256  # as long as any valid identifier (ProductIdentifierValue)


def result(index: int, identifier: str | None, product_id: str | None, outcome: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "identifier": _clip(identifier, IDENTIFIER_CHARS),
        "product_id": product_id,
        "result": outcome,
        "errors": bounded_errors(errors or []),
    }


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first errors that fit RESULT_ERRORS_BYTES, each clipped, then one `more_errors` naming how
    many were left out. The first error is always kept."""
    out: list[dict[str, Any]] = []
    used = 0
    for n, error in enumerate(errors):
        clipped = {**error, "field": _clip(error.get("field"), 100), "message": _clip(error["message"], 300)}
        cost = len(clipped["code"]) + len((clipped["field"] or "").encode()) + len(clipped["message"].encode()) + 40
        if out and used + cost > RESULT_ERRORS_BYTES:
            out.append({"code": "more_errors", "field": None, "message": f"… and {len(errors) - n} more errors in this item."})
            break
        out.append(clipped)
        used += cost
    return out


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"


# -- the plain (Synq) payload ---------------------------------------------------------------


def _str_field(raw: Any, name: str) -> str | None:
    value = raw.get(name) if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None


def plain_name(job_type: str, raw: Any) -> tuple[str, str] | None:
    """How a plain item names its product: the way ("id" or "sku") and the value. A delete names it
    by id, an update by id or else sku, an import by sku."""
    if job_type == "BULK_DELETE":
        return ("id", raw) if isinstance(raw, str) and raw else None
    if job_type == "BULK_UPDATE" and (product_id := _str_field(raw, "id")):
        return ("id", product_id)
    sku = _str_field(raw, "sku")
    return ("sku", sku) if sku else None


def plain_identifier(job_type: str, raw: Any) -> str | None:
    name = plain_name(job_type, raw)
    return name[1] if name else None


def plain_needs(job_type: str, items: Iterable[Any]) -> tuple[set[str], set[str], set[str], set[str]]:
    """Which products, SKUs, identifiers and value index keys a batch of plain items will read."""
    ids, skus, idents, values = set(), set(), set(), set()
    for raw in items:
        ident = plain_identifier(job_type, raw)
        if ident:
            idents.add(ident)
        if job_type == "BULK_DELETE":
            if ident and _safe_id(ident):
                ids.add(ident)
            continue
        if sku := _str_field(raw, "sku"):
            skus.add(sku)
        if gtin := _str_field(raw, "gtin"):
            values.add(value_key("gtin", gtin))
        if job_type == "BULK_UPDATE" and (pid := _str_field(raw, "id")) and _safe_id(pid):
            ids.add(pid)
        for variant in (raw.get("variants") if isinstance(raw, dict) else None) or []:
            if isinstance(variant, dict) and (vsku := _str_field(variant, "sku")):
                skus.add(vsku)
    return ids, skus, idents, values


def plain_prefetch(view: CatalogView, job_type: str, items: list[Any]) -> None:
    """Load what a batch of plain items will read, in a few round trips (a delete also reads the
    unresolved issues pointing at its product: one query per batch, not one per item, and none for
    ids that name no product, which fail without reading them; and the identifier entries of the
    names its product goes by, with the failure issues they list: `_forget_failures_named`)."""
    ids, skus, idents, values = plain_needs(job_type, items)
    view.prefetch(ids, skus, idents, values, names_of_products=job_type == "BULK_DELETE")
    if job_type == "BULK_DELETE":
        found = [doc for i in ids if (doc := view.products.get(i)) is not None]
        view.prefetch_issues(issue_id for doc in found for name in failure_names(doc) for issue_id in view.identifiers[name]["open"])
        view.prefetch_open_issues(doc["id"] for doc in found)


def _safe_id(value: str) -> bool:
    from common.http import is_safe_id

    return is_safe_id(value)


def _by_sku(view: CatalogView, sku: str) -> str | None:
    holders = view.product_holders(sku)
    if len(holders) > 1:
        raise ItemFailure(
            AMBIGUOUS_IDENTIFIER,
            [ItemError("ambiguous_identifier", f"SKU '{sku}' names {len(holders)} products; use the product id.", "sku")],
        )
    return holders[0] if holders else None


def _fields(model: ProductIn | ProductPatch, product_id: str) -> dict[str, Any]:
    data = model.model_dump(exclude_unset=True, exclude={"id"})
    if "variants" in data:
        data["variants"] = _variants(product_id, data["variants"] or [])
    if "attributes" in data and data["attributes"] is None:
        data["attributes"] = {}  # null clears: stored as empty, the read model's shape
    return data


def apply_plain_item(view: CatalogView, index: int, raw: Any) -> dict[str, Any]:
    """Apply one item of a plain (Synq) payload; failures are recorded, never raised."""
    job_type = view.ctx.job_type
    identifier = plain_identifier(job_type, raw)
    try:
        if job_type == "BULK_IMPORT":
            return _import(view, index, raw, identifier)
        if job_type == "BULK_UPDATE":
            return _update(view, index, raw, identifier)
        return _delete(view, index, raw, identifier)
    except ItemFailure as failure:
        return record_failure(view, index, identifier, failure)


def _import(view: CatalogView, index: int, raw: Any, identifier: str | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ItemFailure(IMPORT_REJECTED, [ItemError("invalid_item", "Each item must be a JSON object (a product).")])
    sku = _str_field(raw, "sku")
    product_id = _by_sku(view, sku) if sku else None
    try:
        item = ProductIn.model_validate(raw)
    except ValidationError as exc:
        raise ItemFailure(IMPORT_REJECTED, _validation_errors(exc), product_id) from None
    if product_id is None:
        product_id = derived_id(view.ctx.job_id, index, "product")
        # Known absent without a read: had an earlier step created it, that step would have
        # committed this item's progress with it, and the item would not run again.
        view.products.setdefault(product_id, None)
        current: dict[str, Any] = {}
    else:
        current = dict(view.product(product_id) or {})
    new = {**current, **_fields(item, product_id)}
    outcome = save_product(view, index, product_id, new, identifiers=[identifier])
    return result(index, identifier, product_id, outcome)


def _find_for_update(view: CatalogView, raw: dict[str, Any]) -> tuple[str | None, str]:
    """The product an update item names (by `id`, else `sku`), and what to say when there is none."""
    pid, sku = raw.get("id"), raw.get("sku")
    if isinstance(pid, str):
        found = pid if _safe_id(pid) and view.product(pid) is not None else None
        return found, f"No product with id '{pid[:100]}' in this tenant."
    if pid is None and isinstance(sku, str) and sku:
        return _by_sku(view, sku), f"No product with SKU '{sku[:128]}' in this tenant."
    return None, ""


def _update(view: CatalogView, index: int, raw: Any, identifier: str | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ItemFailure(IMPORT_REJECTED, [ItemError("invalid_item", "Each item must be a JSON object with 'id' or 'sku'.")])
    product_id, missing = _find_for_update(view, raw)
    try:
        patch = ProductPatch.model_validate(raw)
    except ValidationError as exc:
        raise ItemFailure(IMPORT_REJECTED, _validation_errors(exc), product_id) from None
    if patch.id is None and patch.sku is None:
        raise ItemFailure(IMPORT_REJECTED, [ItemError("missing_field", "Give 'id' or 'sku' to name the product to update.", "id")])
    if product_id is None:
        raise ItemFailure(PRODUCT_NOT_FOUND, [ItemError("product_not_found", missing, "id" if patch.id else "sku")])
    if "title" in patch.model_fields_set and patch.title is None:
        raise ItemFailure(IMPORT_REJECTED, [ItemError("invalid_value", "Field 'title' cannot be cleared.", "title")], product_id)
    changes = _fields(patch, product_id)
    if patch.id is None:
        changes.pop("sku", None)  # the SKU named the product; it is not a change
    new = {**(view.product(product_id) or {}), **changes}
    outcome = save_product(view, index, product_id, new, identifiers=[identifier, product_id])
    return result(index, identifier, product_id, outcome)


def _delete(view: CatalogView, index: int, raw: Any, identifier: str | None) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw:
        raise ItemFailure(IMPORT_REJECTED, [ItemError("invalid_item", "Each BULK_DELETE item must be a product id string.")])
    product = view.product(raw) if _safe_id(raw) else None
    if product is None:
        raise ItemFailure(PRODUCT_NOT_FOUND, [ItemError("product_not_found", f"No product with id '{raw[:100]}' in this tenant.", "id")])
    outcome = save_product(view, index, raw, None, identifiers=[identifier])
    return result(index, identifier, raw, outcome)
