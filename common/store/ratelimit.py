"""Request counters: rate_limits/{sha256(token)}-{minute}, one document per token per window.

An instance adds the hits it counted since its last write: the server-side `Increment` returns the
new count in the commit response (`WriteResult.transform_results`), so counting needs no read and
no transaction. Documents carry `expires_at` for a TTL policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from google.cloud import firestore

from common.clients import firestore_client


class Counter(Protocol):
    def add(self, token_hash: str, window: int, hits: int, expires_at: datetime) -> int:
        """Add `hits` requests of a token to a window; returns the window's count including them."""


class FirestoreCounter:
    def add(self, token_hash: str, window: int, hits: int, expires_at: datetime) -> int:
        ref = firestore_client().collection("rate_limits").document(f"{token_hash}-{window}")
        result = ref.set({"count": firestore.Increment(hits), "expires_at": expires_at}, merge=True)
        return int(result.transform_results[0].integer_value)
