"""Idempotency-Key records: orgs/{org}/tenants/{tenant}/idempotency_keys/{key_id}, the key_id being
the SHA-256 of the caller's user id and the key (common/idempotency.py `key_id`).

A record is claimed with `create()`, so of two requests with one key exactly one runs; it holds the
request's fingerprint, then the stored answer. Bodies too large for a document go to Cloud Storage
under idempotency/{org}/{tenant}/{key_id}.json. Records carry `expires_at` for a TTL policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import firestore

from common.clients import firestore_client
from common.store import blobs
from common.store.paths import Scope, coll, existing, read


@dataclass(frozen=True)
class Existing:
    """The record already holding a key (None if it vanished meanwhile) and its update time."""

    record: dict[str, Any] | None
    version: datetime | None


class KeyStore(Protocol):
    def claim(self, scope: Scope, key_id: str, record: dict[str, Any]) -> Existing | None:
        """Create the record; None when this call created it, else what holds the key."""

    def take_over(self, scope: Scope, key_id: str, version: datetime | None) -> bool:
        """Delete an expired or abandoned record if it is still the one read at `version`."""

    def complete(self, scope: Scope, key_id: str, fields: dict[str, Any]) -> None:
        """Record the answer of the request holding the key."""

    def release(self, scope: Scope, key_id: str) -> None:
        """Forget the key, so that a retry runs the request again."""

    def put_body(self, scope: Scope, key_id: str, text: str) -> str:
        """Keep a large answer body; returns where it is."""

    def get_body(self, name: str) -> str: ...


def _ref(scope: Scope, key_id: str) -> firestore.DocumentReference:
    return coll(scope, "idempotency_keys").document(key_id)


class FirestoreKeys:
    def claim(self, scope: Scope, key_id: str, record: dict[str, Any]) -> Existing | None:
        ref = _ref(scope, key_id)
        try:
            ref.create(record)
            return None
        except gexc.AlreadyExists:
            snap = read(ref)
            return Existing(existing(snap), snap.update_time if snap.exists else None)

    def take_over(self, scope: Scope, key_id: str, version: datetime | None) -> bool:
        if version is None:
            return True
        try:
            _ref(scope, key_id).delete(option=firestore_client().write_option(last_update_time=version))
        except (gexc.FailedPrecondition, gexc.NotFound):
            return False
        return True

    def complete(self, scope: Scope, key_id: str, fields: dict[str, Any]) -> None:
        _ref(scope, key_id).update(fields)

    def release(self, scope: Scope, key_id: str) -> None:
        _ref(scope, key_id).delete()

    def put_body(self, scope: Scope, key_id: str, text: str) -> str:
        name = f"idempotency/{scope.org_id}/{scope.tenant_id}/{key_id}.json"
        blobs.put_text(name, text)
        return name

    def get_body(self, name: str) -> str:
        return blobs.get_text(name)
