"""Cursor paging over Firestore queries; the cursor is an opaque token naming the last document."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from google.cloud import firestore

from common import errors
from common.http import is_safe_id
from common.store.paths import read, rows


def encode_cursor(doc_id: str) -> str:
    return base64.urlsafe_b64encode(doc_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        doc_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor") from exc
    if not is_safe_id(doc_id):
        raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor")
    return doc_id


def page(
    query: firestore.Query,
    collection: firestore.CollectionReference,
    *,
    limit: int,
    cursor: str | None,
    fields: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `query` after `cursor`, and the cursor of the next page (None at the end);
    `fields` reads only those fields of each document (a projection)."""
    if cursor:
        snap = read(collection.document(decode_cursor(cursor)))
        if not snap.exists:
            raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor")
        query = query.start_after(snap)
    if fields is not None:
        query = query.select(list(fields))
    found = list(rows(query.limit(limit + 1)))
    docs = [fields | {"id": doc_id} for doc_id, fields in found[:limit]]
    next_cursor = encode_cursor(found[limit - 1][0]) if len(found) > limit else None
    return docs, next_cursor
