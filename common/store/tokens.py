"""API tokens, stored only as the SHA-256 of the token."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from common.clients import firestore_client
from common.models.base import utcnow
from common.store.paths import existing, read

TOKEN_PREFIX = "synq_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def get_token(token: str) -> dict[str, Any] | None:
    snap = read(firestore_client().collection("api_tokens").document(hash_token(token)))
    return existing(snap)


def mint_token(
    *,
    user_id: str,
    email: str,
    org_id: str,
    tenant_ids: list[str],
    role: str,
    expires_at: datetime | None = None,
) -> str:
    """Create a token and return it; only its hash is stored, so it cannot be shown again."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    firestore_client().collection("api_tokens").document(hash_token(token)).set(
        {
            "user_id": user_id,
            "email": email,
            "org_id": org_id,
            "tenant_ids": tenant_ids,
            "role": role,
            "expires_at": expires_at,
            "revoked": False,
            "created_at": utcnow(),
        }
    )
    return token


def revoke_token(token: str) -> None:
    firestore_client().collection("api_tokens").document(hash_token(token)).update({"revoked": True})
