"""Where things live in Firestore. Tenants are isolated by path, never by a filter.

api_tokens/{sha256(token)}
orgs/{org}/tenants/{tenant}                         tenant settings
    bulk_jobs/{job}                                 the job record
        chunk_items/{n}                             a chunk's items (immutable, written by dispatch)
        chunks/{n}                                  a chunk's progress and per-item results
    products/{product}
    sku_index/{key(sku)}                            who holds a SKU: one read per SKU
    identifier_index/{key(identifier)}              open failure issues by item identifier
    validation_issues/{issue}
    audit_events/{event}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from google.cloud import firestore

from common.clients import firestore_client


@dataclass(frozen=True)
class Scope:
    """One tenant of one org; every store method takes it first."""

    org_id: str
    tenant_id: str


def data(snap: firestore.DocumentSnapshot) -> dict[str, Any]:
    """The fields of a snapshot known to exist (query results, checked `.exists`)."""
    return snap.to_dict() or {}


def tenant_ref(scope: Scope, client: firestore.Client | None = None) -> firestore.DocumentReference:
    db = client or firestore_client()
    return db.collection("orgs").document(scope.org_id).collection("tenants").document(scope.tenant_id)


def coll(scope: Scope, name: str, client: firestore.Client | None = None) -> firestore.CollectionReference:
    return tenant_ref(scope, client).collection(name)


def job_ref(scope: Scope, job_id: str) -> firestore.DocumentReference:
    return coll(scope, "bulk_jobs").document(job_id)


def index_key(value: str) -> str:
    """A document id for an arbitrary string (SKUs may hold '/', '.', anything)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]


def chunk_id(n: int) -> str:
    return f"{n:06d}"
