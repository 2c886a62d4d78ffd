"""Firestore adapter for a tenant's vocabularies (attribute definitions) and taxonomy nodes."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

from common.clients import firestore_client
from common.store import pages
from common.store.paths import Scope, coll, existing, read, rows


def list_vocabularies(scope: Scope) -> list[dict[str, Any]]:
    return [fields for _, fields in rows(coll(scope, "vocabularies").order_by("created_at"))]


def get_vocabulary(scope: Scope, vocabulary_id: str) -> dict[str, Any] | None:
    snap = read(coll(scope, "vocabularies").document(vocabulary_id))
    return existing(snap)


def default_vocabulary(scope: Scope) -> dict[str, Any] | None:
    query = coll(scope, "vocabularies").where(filter=firestore.FieldFilter("default", "==", True)).limit(1)
    found = [fields for _, fields in rows(query)]
    return found[0] if found else None


def put_vocabulary(scope: Scope, vocabulary: dict[str, Any], audit: dict[str, Any]) -> None:
    """Store a vocabulary; when it is the default, the previous default stops being one (same commit)."""
    db = firestore_client()
    vocabularies = coll(scope, "vocabularies", db)

    @firestore.transactional
    def put(tx: firestore.Transaction) -> None:
        others = []
        if vocabulary.get("default"):
            query = vocabularies.where(filter=firestore.FieldFilter("default", "==", True))
            others = [vocabularies.document(doc_id) for doc_id, _ in rows(query, tx) if doc_id != vocabulary["id"]]
        for ref in others:
            tx.update(ref, {"default": False})
        tx.set(vocabularies.document(vocabulary["id"]), vocabulary)
        tx.set(coll(scope, "audit_events", db).document(audit["id"]), audit)

    put(db.transaction())


def create_taxonomy_node(scope: Scope, node: dict[str, Any], audit: dict[str, Any]) -> None:
    batch = firestore_client().batch()
    batch.create(coll(scope, "taxonomy_nodes").document(node["id"]), node)
    batch.set(coll(scope, "audit_events").document(audit["id"]), audit)
    batch.commit()


def get_taxonomy_node(scope: Scope, node_id: str) -> dict[str, Any] | None:
    snap = read(coll(scope, "taxonomy_nodes").document(node_id))
    return existing(snap)


def list_taxonomy_nodes(scope: Scope, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Oldest first, so a parent comes before its children; ties in id order."""
    nodes = coll(scope, "taxonomy_nodes")
    return pages.page(nodes.order_by("created_at").order_by("__name__"), nodes, limit=limit, cursor=cursor)
