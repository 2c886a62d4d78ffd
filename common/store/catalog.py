"""Firestore adapter for the catalog: products, the SKU and identifier indexes, issues, audit events.

`apply_chunk_step` is where exactly-once lives: in one transaction it reads the chunk's progress,
applies the next items through the engine, writes every change they make together with the new
progress and the job's counters, and commits. A redelivered or concurrent run of the same chunk reads
the advanced progress and applies nothing twice; a crash before the commit leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from common import errors
from common.clients import firestore_client
from common.domain.engine import IMPORT_REJECTED, CatalogView, ItemError, ItemFailure, JobContext, record_failure, supersede_failure
from common.http import is_safe_id
from common.models.base import utcnow
from common.store import pages
from common.store.encode import Transaction, add_append, add_set
from common.store.paths import Scope, chunk_id, coll, data, existing, index_key, job_ref, read, rows

# Firestore takes at most 500 writes in one commit; an item writes at most ~220 documents (50
# variants), so a step stops taking items once it has this many and always stays under the limit.
STEP_WRITES = 250
# The most items one prefetch round trip reads for.
PREFETCH_MAX = 100
# The most values a Firestore `in` filter takes.
IN_FILTER_MAX = 30


class FirestoreLoader:
    """The engine's `Loader` port over Firestore, reading inside a transaction when given one."""

    def __init__(self, scope: Scope, transaction: firestore.Transaction | None = None) -> None:
        self.scope = scope
        self.tx = transaction
        self.db = firestore_client()

    def _get_all(self, name: str, keys: dict[str, str]) -> dict[str, dict[str, Any] | None]:
        return self._get_many({name: keys})[name]

    def _get_many(self, wanted: dict[str, dict[str, str]]) -> dict[str, dict[str, dict[str, Any] | None]]:
        """{collection: {key: doc id}} read in one `get_all` round trip: {collection: {key: data or None}}."""
        refs = {}
        for name, keys in wanted.items():
            collection = coll(self.scope, name, self.db)  # once per collection: building one is not cheap
            refs.update({collection.document(doc_id): (name, key) for key, doc_id in keys.items()})
        found: dict[str, dict[str, dict[str, Any] | None]] = {name: dict.fromkeys(keys) for name, keys in wanted.items()}
        if refs:
            for snap in self.db.get_all(list(refs), transaction=self.tx):
                if snap.exists:
                    name, key = refs[snap.reference]
                    found[name][key] = data(snap)
        return found

    def indexes(
        self, skus: Iterable[str], identifiers: Iterable[str], values: Iterable[str]
    ) -> tuple[dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None], dict[str, dict[str, Any] | None]]:
        found = self._get_many(
            {
                "sku_index": {s: index_key(s) for s in skus},
                "identifier_index": {i: index_key(i) for i in identifiers},
                "value_index": {k: index_key(k) for k in values},
            }
        )
        return found["sku_index"], found["identifier_index"], found["value_index"]

    def products(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return self._get_all("products", {i: i for i in ids})

    def values(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return self._get_all("value_index", {k: index_key(k) for k in keys})

    def taxonomy_nodes(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        ids = list(ids)
        found = self._get_all("taxonomy_nodes", {i: i for i in ids if is_safe_id(i)})
        return {i: found.get(i) for i in ids}

    def issues(self, ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return self._get_all("validation_issues", {i: i for i in ids})

    def open_issues(self, product_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """One query per 30 products (the most an `in` filter takes), not one per product.

        Read outside the step's transaction, as it always was: the code once chose the transactional
        read with `if self.tx`, but a client `Transaction` is falsy until it holds writes, and a step
        adds its writes only at commit. Run in the transaction, the queries lock the ranges they scan
        in the emulator, and a 100,000-item delete's concurrent steps time out on each other's locks
        (2 → ~174 lock timeouts in `test_100_000_tiny_items_are_accepted_and_dispatched`, steps
        given up). What this misses: an issue another step writes for one of these products after
        the read. A failure issue is also listed in its identifier's entry, which the delete reads
        in the transaction for each name of its product (`engine._forget_failures_named`)."""
        ids = sorted(set(product_ids))
        found: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        issues = coll(self.scope, "validation_issues", self.db)
        for start in range(0, len(ids), IN_FILTER_MAX):
            query = (
                issues.where(filter=firestore.FieldFilter("product_id", "in", ids[start : start + IN_FILTER_MAX]))
                .where(filter=firestore.FieldFilter("resolved", "==", False))
                .select(["product_id", "identifier"])
            )
            for doc_id, fields in rows(query):
                found[fields["product_id"]].append({"id": doc_id, "identifier": fields["identifier"]})
        return found


def write_view(writer: firestore.Transaction | firestore.WriteBatch, scope: Scope, view: CatalogView) -> None:
    """Queue every change the view recorded on a transaction or batch (full replacements through
    the fast encoder, `encode.add_set`)."""
    db = firestore_client()
    # One reference per collection, made once: profiling put 8% of process_chunk's CPU in making them per document.
    products, skus, identifiers, issues, audit, values = (
        coll(scope, name, db) for name in ("products", "sku_index", "identifier_index", "validation_issues", "audit_events", "value_index")
    )
    for pid in view.dirty_products:
        doc = view.products.get(pid)
        if doc is None:
            writer.delete(products.document(pid))
        else:
            add_set(writer, products.document(pid), doc)
    for sku in view.dirty_skus:
        entry = view.skus[sku]
        ref = skus.document(index_key(sku))
        add_set(writer, ref, entry) if entry["holders"] else writer.delete(ref)
    for ident in view.dirty_identifiers:
        entry = view.identifiers[ident]
        ref = identifiers.document(index_key(ident))
        add_set(writer, ref, entry) if entry["open"] else writer.delete(ref)
    for issue_id, issue in view.issue_writes.items():
        if "created_at" in issue:
            add_set(writer, issues.document(issue_id), issue)
        else:
            writer.set(issues.document(issue_id), issue, merge=True)
    for event in view.audits:
        add_set(writer, audit.document(event["id"]), event)
    for key in view.dirty_values:
        entry = view.values[key]
        ref = values.document(index_key(key))
        add_set(writer, ref, entry) if entry["holders"] else writer.delete(ref)
    for (collection, doc_id), fields in view.extra_writes.items():
        writer.set(coll(scope, collection, db).document(doc_id), fields, merge=True)


# What a step reads of its chunk's progress: not the results so far, which it only appends to.
STEP_FIELDS = ("applied", "ok", "failed", "has_failures", "done", "phase")

ItemFn = Callable[[CatalogView, int, Any], dict[str, Any]]
# Loads, in a few round trips, what a batch of items will read (products, SKUs, identifiers, values).
PrefetchFn = Callable[[CatalogView, list[Any]], None]

# What a step commits: everything; only the failures' issues (ErrorMode Fail's validation pass); nothing (whatIf).
ALL, FAILURES, NOTHING = "all", "failures", "nothing"


def run_items(
    view: CatalogView,
    items: list[Any],
    start: int,
    first_index: int,
    apply_item: ItemFn,
    prefetch: PrefetchFn,
    max_items: int | None = None,
    mode: str = ALL,
) -> list[dict[str, Any]]:
    """Apply items from `start` until the view holds a step's worth of what `mode` commits; returns their results."""
    results: list[dict[str, Any]] = []
    failed = 0
    fetched = start  # items before this one have had their reads prefetched
    for index in range(start, len(items)):
        if index >= fetched:
            fetched = index + prefetch_size(_writes(view, mode, failed), len(results), max_items)
            prefetch(view, items[index:fetched])
        results.append(apply_item(view, first_index + index, items[index]))
        failed += results[-1]["result"] == "failed"
        if _writes(view, mode, failed) >= STEP_WRITES or (max_items is not None and len(results) >= max_items):
            break
    return results


def _writes(view: CatalogView, mode: str, failed: int) -> int:
    """What committing the view in `mode` writes: everything; at most a failed item's issue, its
    identifier entry and the older issues it supersedes (`write_failures`); nothing."""
    return view.write_count() if mode == ALL else 2 * failed + len(view.superseded) if mode == FAILURES else 0


def run_step(
    view: CatalogView,
    items: list[Any],
    start: int,
    first_index: int,
    apply_item: ItemFn,
    prefetch: PrefetchFn,
    mode: str,
    max_items: int | None = None,
) -> list[dict[str, Any]]:
    """A step of a pass over `items` from `start`, in a fresh view.

    A pass that commits everything finds what its earlier steps did in the store. One that does not
    (whatIf; ErrorMode Fail's validation) replays the items before `start` in the view first and
    forgets what they would write, so that every item meets what the payload's earlier items would
    have done (a product created, an identifier taken) and gets the result the committing pass gives it.
    Such a pass commits little, so it takes a chunk in one step and replays only past many failures.
    """
    if mode != ALL and start:
        run_items(view, items[:start], 0, first_index, apply_item, prefetch, mode=NOTHING)
        view.discard_changes()
    return run_items(view, items, start, first_index, apply_item, prefetch, max_items, mode)


# Writes a typical item makes (its product, SKU and GTIN index entries, its audit event): the first
# guess at how many items a step will take, before it has seen any.
WRITES_PER_ITEM_GUESS = 4


def prefetch_size(writes: int, taken: int, max_items: int | None = None) -> int:
    """How many of the next items to prefetch: about as many as the step still has room for, judged
    by the writes its items made so far, so that a step does not read what the next one reads again."""
    per_item = writes / taken if taken else WRITES_PER_ITEM_GUESS
    room = max(STEP_WRITES - writes, 1)
    size = min(PREFETCH_MAX, max(1, math.ceil(room / max(per_item, 1))))
    return size if max_items is None else max(1, min(size, max_items - taken))


def naming_no_unborn_product(apply_item: ItemFn) -> ItemFn:
    """`apply_item` for a pass that commits no product (whatIf, a job's ErrorMode Fail validation): a
    result never names a product only the real import would create (that id would answer 404, and
    the import would make another)."""

    def apply(view: CatalogView, index: int, raw: Any) -> dict[str, Any]:
        out = apply_item(view, index, raw)
        return {**out, "product_id": None} if out.get("product_id") in view.created else out

    return apply


class StepRefused(Exception):
    """Firestore refused a step's commit for what it holds (an invalid value, a document too big):
    retrying the same step can never succeed, so the caller retries it one item at a time."""


class PhaseMoved(Exception):
    """The chunk is in another phase than the one the worker runs it in: ErrorMode Fail's commit
    round reset it (`store.jobs.reset_chunk`) under a worker that read it while validating. The step
    applied nothing; the worker goes on in `phase`, the chunk's own (phases only move forward)."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


def uncommitted_failure(view: CatalogView, issue: dict[str, Any]) -> dict[str, Any]:
    """A failure issue as a pass that commits only failures stores it (see `failure_writes`): open,
    unless a later failure of the pass superseded it."""
    product_id = None if issue.get("product_id") in view.created else issue.get("product_id")
    return {**issue, "resolved": issue["id"] in view.superseded, "product_id": product_id}


def failure_writes(view: CatalogView) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, dict[str, bool]]]:
    """What a pass that commits only failures writes: the failure issues it opened (whole
    documents), the older failure issues they supersede (fields merged: resolved), and the
    identifier entries of the failures as they then stand (empty: deleted).

    An issue is written open even when a later item of the pass succeeded with the same identifier:
    that item is not committed either, so it fixed nothing. Nor is a product an earlier item created,
    so an issue does not point at one. A failure does supersede the older ones (`engine.supersede_older`):
    it is committed."""
    opened: dict[str, dict[str, Any]] = {}
    resolved: dict[str, dict[str, Any]] = {}
    entries: dict[str, dict[str, bool]] = {}
    for issue_id, fields in view.issue_writes.items():
        if fields.get("job_id") and "created_at" in fields:
            opened[issue_id] = uncommitted_failure(view, fields)
            if (ident := fields.get("identifier")) and ident not in entries:
                entries[ident] = {i: True for i in sorted(view.failure_ids[ident] - view.superseded.keys())}
        elif issue_id in view.superseded:
            resolved[issue_id] = {"resolved": True, "updated_at": fields["updated_at"]}
    return opened, resolved, entries


def write_failures(writer: firestore.Transaction | firestore.WriteBatch, scope: Scope, view: CatalogView) -> None:
    """Queue what `failure_writes` says a pass that commits only failures writes. The identifier
    entries are set whole: the view read them in the same transaction."""
    db = firestore_client()
    issues, identifiers = coll(scope, "validation_issues", db), coll(scope, "identifier_index", db)  # once, as in write_view
    opened, resolved, entries = failure_writes(view)
    for issue_id, doc in opened.items():
        writer.set(issues.document(issue_id), doc)
    for issue_id, fields in resolved.items():
        writer.set(issues.document(issue_id), fields, merge=True)
    for ident, still_open in entries.items():
        ref = identifiers.document(index_key(ident))
        writer.set(ref, {"identifier": ident, "open": still_open}) if still_open else writer.delete(ref)


def commit_view(writer: firestore.Transaction | firestore.WriteBatch, scope: Scope, view: CatalogView, mode: str) -> None:
    if mode == ALL:
        write_view(writer, scope, view)
    elif mode == FAILURES:
        write_failures(writer, scope, view)


def apply_chunk_step(
    scope: Scope,
    job_id: str,
    n: int,
    items: list[Any],
    first_index: int,
    make_context: Callable[[], JobContext],
    apply_item: ItemFn,
    prefetch: PrefetchFn,
    lease_seconds: float = 60.0,
    mode: str = ALL,
    max_items: int | None = None,
    phase: str = "commit",
) -> dict[str, Any]:
    """Apply the chunk's next items in one transaction; returns the chunk's progress after it (a
    step that finds the chunk finished applies nothing).
    `phase`: the chunk's phase the worker runs it in, with `mode`; PhaseMoved when it is in another.

    The job's counters are not written here: every chunk writing the one job document inside its
    transaction makes parallel chunks abort each other. `jobs.count_progress` moves the counts over.
    """
    db = firestore_client()
    progress_ref = job_ref(scope, job_id).collection("chunks").document(chunk_id(n))

    @firestore.transactional
    def step(tx: firestore.Transaction) -> dict[str, Any]:
        progress = existing(read(progress_ref, STEP_FIELDS, transaction=tx))
        if progress is None or progress["done"]:
            return progress or {"done": True}
        if progress.get("phase", "commit") != phase:
            raise PhaseMoved(progress.get("phase", "commit"))
        start = progress["applied"]
        view = CatalogView(FirestoreLoader(scope, tx), make_context())
        results = run_step(view, items, start, first_index, apply_item, prefetch, mode, max_items)
        commit_view(tx, scope, view, mode)
        return _advance(tx, progress_ref, progress, results, len(items), lease_seconds)

    try:
        return step(Transaction(db, max_attempts=10))  # type: ignore[no-any-return]
    except gexc.InvalidArgument as exc:
        if max_items != 1:
            raise StepRefused(str(exc)[:300]) from exc
        refusal = Refusal(scope, items, first_index, make_context, apply_item, mode, str(exc))
        return _refuse_item(db, progress_ref, refusal, lease_seconds)
    except (ValueError, gexc.Aborted) as exc:
        # The client gives up on a transaction that kept losing to others: let Pub/Sub redeliver.
        raise errors.Transient("chunk step kept conflicting; retry later") from exc


def _advance(
    tx: firestore.Transaction,
    progress_ref: firestore.DocumentReference,
    progress: dict[str, Any],
    results: list[dict[str, Any]],
    total: int,
    lease_seconds: float,
) -> dict[str, Any]:
    """Record a step's results in the chunk's progress (same transaction as the step's writes);
    returns the progress with this step's results only."""
    start = progress["applied"]
    ok = sum(1 for r in results if r["result"] != "failed")
    failed = len(results) - ok
    applied = start + len(results)
    done = applied >= total
    now = utcnow()
    update = {
        "applied": applied,
        "ok": progress["ok"] + ok,
        "failed": progress["failed"] + failed,
        "has_failures": progress["has_failures"] or failed > 0,
        "done": done,
        "updated_at": now,
        "lease_until": now + timedelta(seconds=lease_seconds),
    }
    # Results are appended, not rewritten: each holds its item's index, so none equals another.
    add_append(tx, progress_ref, update, "results", results)
    return {**progress, **update, "results": results}


@dataclass(frozen=True)
class Refusal:
    """An item whose one-item step the store refused (a document over 1 MiB, too many index entries):
    it fails alone, with its result and an ERROR issue, so it can wedge neither its chunk nor an import."""

    scope: Scope
    items: list[Any]
    first_index: int
    make_context: Callable[[], JobContext]
    apply_item: ItemFn
    mode: str
    why: str

    def record(self, tx: firestore.Transaction, at: int) -> dict[str, Any]:
        """Queue, on `tx`, the failure of the item at position `at`, named as applying it names it."""
        view = CatalogView(FirestoreLoader(self.scope, tx), self.make_context())
        applied = self.apply_item(view, self.first_index + at, self.items[at])
        view.clear_changes()  # what the store refused
        product_id = None if applied.get("product_id") in view.created else applied.get("product_id")
        error = ItemError("not_storable", f"The catalog store refused this item: {self.why[:200]}")
        out = record_failure(view, self.first_index + at, applied.get("identifier"), ItemFailure(IMPORT_REJECTED, [error], product_id))
        commit_view(tx, self.scope, view, self.mode)
        return out


def _refuse_item(db: firestore.Client, progress_ref: firestore.DocumentReference, refusal: Refusal, lease_seconds: float) -> dict[str, Any]:
    @firestore.transactional
    def refuse(tx: firestore.Transaction) -> dict[str, Any]:
        progress = existing(read(progress_ref, STEP_FIELDS, transaction=tx)) or {"done": True}
        if progress["done"]:
            return progress
        result = refusal.record(tx, progress["applied"])
        return _advance(tx, progress_ref, progress, [result], len(refusal.items), lease_seconds)

    return refuse(Transaction(db))  # type: ignore[no-any-return]


def _record_alone(db: firestore.Client, refusal: Refusal, at: int) -> dict[str, Any]:
    @firestore.transactional
    def record(tx: firestore.Transaction) -> dict[str, Any]:
        return refusal.record(tx, at)

    return record(Transaction(db))  # type: ignore[no-any-return]


def apply_items(
    scope: Scope, items: list[Any], make_context: Callable[[], JobContext], apply_item: ItemFn, prefetch: PrefetchFn, mode: str
) -> list[dict[str, Any]]:
    """Apply items outside a job (the synchronous import): step by step, one transaction each. A step
    the store refuses is taken again one item at a time, and the item it refuses fails alone."""
    db = firestore_client()
    results: list[dict[str, Any]] = []
    isolate = 0  # steps left to take one item at a time, after the store refused a whole step
    while len(results) < len(items):
        start, max_items = len(results), 1 if isolate else None

        @firestore.transactional
        def step(tx: firestore.Transaction, start: int = start, max_items: int | None = max_items) -> list[dict[str, Any]]:
            view = CatalogView(FirestoreLoader(scope, tx), make_context())
            done = run_step(view, items, start, 0, apply_item, prefetch, mode, max_items)
            commit_view(tx, scope, view, mode)
            return done

        try:
            results += step(Transaction(db, max_attempts=10))
        except gexc.InvalidArgument as exc:
            if max_items != 1:
                isolate = STEP_WRITES  # at least as many items as the refused step held
                continue
            results.append(_record_alone(db, Refusal(scope, items, 0, make_context, apply_item, mode, str(exc)), start))
        except (ValueError, gexc.Aborted) as exc:
            raise errors.Transient("the import kept conflicting with other writes; send it again") from exc
        isolate = max(isolate - 1, 0)
    return results


def get_product(scope: Scope, product_id: str) -> dict[str, Any] | None:
    snap = read(coll(scope, "products").document(product_id))
    return existing(snap)


def get_issue(scope: Scope, issue_id: str) -> dict[str, Any] | None:
    """One validation issue, resolved or not; None if absent."""
    doc = existing(read(coll(scope, "validation_issues").document(issue_id)))
    return None if doc is None else doc | {"id": issue_id}


def list_products(scope: Scope, *, sku: str | None, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    products = coll(scope, "products")
    query: Any = products
    if sku is not None:
        query = query.where(filter=firestore.FieldFilter("sku", "==", sku))
    query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
    return pages.page(query, products, limit=limit, cursor=cursor)


def list_audit(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    events = coll(scope, "audit_events")
    query = events.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
    return pages.page(query, events, limit=limit, cursor=cursor)


def resolve_failure(scope: Scope, issue_id: str, audit: dict[str, Any]) -> dict[str, Any] | None:
    """Resolve a failed item's issue by hand, out of the identifier index too (as a retry does,
    `engine.supersede_failure`), with its audit event (given the issue's type, job and item), in one
    transaction. Returns the issue as it is after, unchanged when it is already resolved or is not a
    failure issue (no `job_id`); None if absent."""
    db = firestore_client()
    # Only `now` is used: the view records no product, audit event or new issue.
    context = JobContext(
        job_id="",
        job_type="",
        org_id=scope.org_id,
        tenant_id=scope.tenant_id,
        actor_email=audit["actor_email"],
        user_id="",
        ip_address=audit["ip_address"],
        now=audit["created_at"],
    )

    @firestore.transactional
    def resolve(tx: firestore.Transaction) -> dict[str, Any] | None:
        view = CatalogView(FirestoreLoader(scope, tx), context)
        view.prefetch_issues([issue_id])
        issue = view.issues[issue_id]
        if issue is None or issue.get("resolved") or not issue.get("job_id"):
            return issue
        supersede_failure(view, issue_id)
        write_view(tx, scope, view)
        details = {"issue_type": issue.get("issue_type"), "job_id": issue["job_id"], "item_index": issue.get("item_index")}
        tx.set(coll(scope, "audit_events", db).document(audit["id"]), {**audit, "details": {**audit["details"], **details}})
        return {**issue, "resolved": True, "updated_at": context.now}

    return resolve(db.transaction())  # type: ignore[no-any-return]


def list_issues(scope: Scope, *, filters: dict[str, str], limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    issues = coll(scope, "validation_issues")
    query = issues.where(filter=firestore.FieldFilter("resolved", "==", False))
    for name, value in filters.items():
        query = query.where(filter=firestore.FieldFilter(name, "==", value))
    query = query.order_by("created_at", direction=firestore.Query.DESCENDING).order_by("__name__", direction=firestore.Query.DESCENDING)
    return pages.page(query, issues, limit=limit, cursor=cursor)
