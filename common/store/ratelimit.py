"""Request counters: rate_limits/{sha256(token)}-{minute}, one document per token per window.

One write per request: the server-side `Increment` returns the new count in the commit response
(`WriteResult.transform_results`), so counting needs no read and no transaction. Documents carry
`expires_at` for a TTL policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from google.cloud import firestore

from common.clients import firestore_client


class Counter(Protocol):
    def hit(self, token_hash: str, window: int, expires_at: datetime) -> int:
        """Count one request of a token in a window; returns the window's count including it."""


class FirestoreCounter:
    def hit(self, token_hash: str, window: int, expires_at: datetime) -> int:
        ref = firestore_client().collection("rate_limits").document(f"{token_hash}-{window}")
        result = ref.set({"count": firestore.Increment(1), "expires_at": expires_at}, merge=True)
        return int(result.transform_results[0].integer_value)
