"""Cursor paging over Firestore queries.

A cursor is where a page ended: the values of the list's order-by fields in its last document, and
that document's id. The next page starts after those values, so it needs no read of that document
and does not care whether it still exists. It is opaque to clients: url-safe base64 (no padding) of
the JSON array `[list, [value, ...], id]`, where `list` names the list it was issued for (a digest
of the collection's path, so of the tenant, of the order, and of the query's filters, so of a
list's `type=`, `status=`, `sku=`…) and each value is tagged with its type (`["t", nanoseconds
since the epoch]`, `["s", text]`, `["i", integer]`, `["n", null]`). Anything else is refused as
`invalid_cursor`; a cursor that passes positions only within the caller's own list, whatever values
it carries, so it needs no signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.types import StructuredQuery
from google.protobuf.timestamp_pb2 import Timestamp

from common import errors
from common.http import is_safe_id
from common.store.paths import read, rows

# Ours are about 130 characters (a timestamp and an id of at most 128); the bound keeps a forged
# one from costing more than a glance to refuse.
MAX_CURSOR = 1024
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000
# Timestamps from 1970 up to 2^32 s (2106): within it, `DatetimeWithNanoseconds.timestamp_pb`, which
# the client encodes a query's timestamps with, gives back the exact seconds and nanoseconds (it
# goes through a float, and truncates toward zero before 1970).
_MAX_NS = 2**32 * _NS
_INT64 = range(-(2**63), 2**63)


@dataclass(frozen=True)
class Position:
    """Where a page ended: its last document's order-by values and id. `values` is None for a
    cursor issued before they were carried (a bare id): the document is read for them."""

    values: tuple[Any, ...] | None
    doc_id: str


def order_of(query: firestore.Query) -> list[tuple[str, str]]:
    """The query's order-by fields and directions, `__name__` last. The caller builds the whole
    query, order included, where the index check reads it (tests/unit/test_deploy.py); the client
    keeps the orders only in a private attribute, read here (as `paths.rows` reads `_limit`)."""
    order = [(o.field.field_path, o.direction.name) for o in query._orders]
    if not order or order[-1][0] != "__name__" or any(f == "__name__" for f, _ in order[:-1]):
        raise ValueError("a paged query orders by __name__ last, so that a cursor names one place")
    return order


def filters_of(query: firestore.Query) -> list[str]:
    """The query's filters, each as canonical text, in no particular order (they are a conjunction).
    The client keeps them only in a private attribute, read here as `order_of` reads the orders."""
    return sorted(type(f).to_json(f, sort_keys=True, indent=None) for f in query._field_filters)


def list_key(collection: firestore.CollectionReference, order: Sequence[tuple[str, str]], filters: Sequence[str] = ()) -> str:
    """What ties a cursor to the list it was issued for: another tenant's cursor, another list's, or
    one of the same list under other filters (`type=BULK_IMPORT` read as `type=BULK_UPDATE`) is
    refused rather than read as a position in this one, which would be a wrong page."""
    parent = collection.parent
    path = f"{parent.path}/{collection.id}" if parent is not None else collection.id
    spec_parts: list[Any] = [path, [list(o) for o in order]]
    if filters:  # an unfiltered list keeps the key its cursors were issued with before filters counted
        spec_parts.append(sorted(filters))
    spec = json.dumps(spec_parts)
    return base64.urlsafe_b64encode(hashlib.sha256(spec.encode()).digest()[:8]).decode().rstrip("=")


def encode_cursor(key: str, position: Position) -> str:
    assert position.values is not None, "a new cursor always carries its values"
    payload = [key, [_tagged(v) for v in position.values], position.doc_id]
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, key: str, width: int) -> Position:
    """The position `cursor` names in the list `key` ordered by `width` fields; BadRequest
    (`invalid_cursor`, nothing of the cursor echoed) for anything this module did not issue."""
    if len(cursor) > MAX_CURSOR or not _BASE64URL.fullmatch(cursor):
        _invalid()
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        _invalid(exc)
    if is_safe_id(text):  # issued before the values were carried: still honoured, by a read
        return Position(None, text)
    try:
        payload = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        _invalid(exc)
    if not (isinstance(payload, list) and len(payload) == 3):
        _invalid()
    got_key, tagged, doc_id = payload
    if got_key != key or not isinstance(tagged, list) or len(tagged) != width:
        _invalid()
    if not (isinstance(doc_id, str) and is_safe_id(doc_id)):
        _invalid()
    return Position(tuple(_untagged(t) for t in tagged), doc_id)


def page(
    query: firestore.Query,
    collection: firestore.CollectionReference,
    *,
    limit: int,
    cursor: str | None,
    fields: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `query` (over `collection`, ordered by top-level fields then `__name__`) after
    `cursor`, and the cursor of the next page (None at the end); `fields` reads only those fields
    of each document."""
    order = order_of(query)
    names = [f for f, _ in order[:-1]]
    key = list_key(collection, order, filters_of(query))
    if cursor:
        position = decode_cursor(cursor, key, len(names))
        if position.values is None:
            snap = read(collection.document(position.doc_id))
            if not (snap.exists and _in_list(snap, query)):
                _invalid()
            query = query.start_after(snap)
        else:
            query = query.start_after([*position.values, collection.document(position.doc_id)])
    if fields is not None:
        # The order-by fields are read too, for the next cursor (and for `rows` to resume after).
        query = query.select(list(dict.fromkeys([*fields, *names])))
    found = list(rows(query.limit(limit + 1)))
    next_cursor = None
    if len(found) > limit:
        last_id, last = found[limit - 1]
        next_cursor = encode_cursor(key, Position(tuple(last[f] for f in names), last_id))
    docs = [doc | {"id": doc_id} for doc_id, doc in found[:limit]]
    if fields is not None and (extra := set(names).difference(fields)):
        docs = [{k: v for k, v in doc.items() if k not in extra} for doc in docs]
    return docs, next_cursor


def _in_list(snap: firestore.DocumentSnapshot, query: firestore.Query) -> bool:
    """Whether the document an older cursor names is one `query` lists: that cursor carries no list
    key, so this is what keeps one list's cursor from placing another. Only equality filters (all
    a paged list uses) are checked; any other makes the cursor refused rather than guessed at."""
    for f in query._field_filters:
        if not (isinstance(f, StructuredQuery.FieldFilter) and f.op == StructuredQuery.FieldFilter.Operator.EQUAL):
            return False
        try:
            value = snap.get(f.field.field_path)
        except KeyError:
            return False
        wanted = _helpers.decode_value(f.value, snap.reference._client)
        if type(value) is not type(wanted) or value != wanted:  # Firestore's false is not its 0
            return False
    return True


def _tagged(value: Any) -> list[Any]:
    """A value as the cursor carries it; TypeError for a type no list orders by."""
    if value is None:
        return ["n", None]
    if isinstance(value, datetime):
        return ["t", _timestamp_ns(value)]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, int) and not isinstance(value, bool):
        return ["i", value]
    raise TypeError(f"a cursor cannot carry a {type(value).__name__}")


def _untagged(tagged: Any) -> Any:
    """The value a tagged cursor value stands for, of a type and in a range Firestore takes."""
    if not (isinstance(tagged, list) and len(tagged) == 2 and isinstance(tagged[0], str)):
        _invalid()
    tag, value = tagged
    if tag == "n" and value is None:
        return None
    if tag == "t" and type(value) is int and 0 <= value < _MAX_NS:
        seconds, nanos = divmod(value, _NS)
        return DatetimeWithNanoseconds.from_timestamp_pb(Timestamp(seconds=seconds, nanos=nanos))
    if tag == "s" and isinstance(value, str) and _encodable(value):
        return value
    if tag == "i" and type(value) is int and value in _INT64:
        return value
    _invalid()


def _timestamp_ns(value: datetime) -> int:
    """Exact: integer microseconds, and the nanoseconds below them that Firestore may return."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    micros = (aware - _EPOCH) // timedelta(microseconds=1)
    below = value.nanosecond % 1000 if isinstance(value, DatetimeWithNanoseconds) else 0
    return micros * 1000 + below


def _encodable(text: str) -> bool:
    """JSON may carry lone surrogates, which no request can."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _invalid(cause: BaseException | None = None) -> NoReturn:
    raise errors.BadRequest("The cursor is not valid.", code="invalid_cursor") from cause
