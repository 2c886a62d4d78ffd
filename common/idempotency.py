"""Idempotency-Key on every POST, as Stripe and draft-ietf-httpapi-idempotency-key-header have it.

The first request with a key claims it (per caller: the token's user, in its tenant) and its answer
is kept for 24 h; a repeat with the same method, path and body gets that answer again, marked
`Idempotent-Replayed: true`, without the work being done again. The same key with another request is 422 `idempotency_key_reused`; a
repeat while the first still runs is 409 `idempotency_key_in_progress`. 4xx answers are kept too
(the request ran and was refused); a 5xx or a crash releases the key so that a retry can run.

It runs as a `Router` hook, so every POST route, present or future, has it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from typing import Any, Literal

from common import errors
from common.auth import authenticate
from common.config import get_settings
from common.http import Next, Request, Response, Route, no_body
from common.logging import get_logger
from common.models.base import utcnow
from common.store.idempotency import FirestoreKeys, KeyStore
from common.store.paths import Scope

log = get_logger("synq.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")
# Claims that keep losing to other requests' take-overs give up with 409 after this many tries.
_CLAIM_ATTEMPTS = 3

Outcome = Literal["take_over", "reused", "in_progress", "replay"]


def parse_key(value: str) -> str:
    """The key as sent: 1-255 printable ASCII characters, else 400 `invalid_idempotency_key`."""
    if not _KEY.fullmatch(value):
        raise errors.BadRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            code="invalid_idempotency_key",
            details={"header": HEADER},
        )
    return value


def key_id(user_id: str, key: str) -> str:
    """The record's document id: the caller's key, so that one caller's key never replays another's
    answer (an answer the other may not be allowed to see: a rotated signing secret). Keys may hold
    '/', so they are never path segments themselves."""
    return hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests 'the same' for a key: method, path with query string, and body bytes."""
    digest = hashlib.sha256(f"{method} {path}?".encode())
    digest.update(query)
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def decide(record: dict[str, Any] | None, request_fingerprint: str, now: datetime) -> Outcome:
    """What a request finding `record` under its key does; expired records count as absent."""
    if record is None or record["expires_at"] <= now:
        return "take_over"
    if record["fingerprint"] != request_fingerprint:
        return "reused"
    if record["state"] == "in_progress":
        # A lapsed lock means the request holding the key died without releasing it.
        return "take_over" if record["locked_until"] <= now else "in_progress"
    return "replay"


class Idempotency:
    """The Router hook. Authentication comes first: keys belong to a tenant, and a bad token is
    401 whatever the key."""

    def __init__(self, store: KeyStore | None = None) -> None:
        self.store: KeyStore = store or FirestoreKeys()

    def __call__(self, request: Request, route: Route, call_next: Next) -> Response:
        header = request.headers.get(HEADER)
        if request.method != "POST" or route.doc.public or header is None:
            return call_next(request)
        principal = authenticate(request)
        key = parse_key(header)
        settings = get_settings()
        body = request.body(max_bytes=settings.max_body_bytes)
        if route.refuses_body and no_body(request, route, max_bytes=settings.max_body_bytes):
            body = b""  # to a route that reads none, no body, whitespace, {} and null are the same request
        scope, kid = principal.scope, key_id(principal.user_id, key)
        now = utcnow()
        record = {
            "fingerprint": fingerprint(request.method, request.path, request.raw.query_string, body),
            "state": "in_progress",
            "method": request.method,
            "path": request.path,
            "user_id": principal.user_id,
            "created_at": now,
            "locked_until": now + timedelta(seconds=settings.idempotency_lock_seconds),
            "expires_at": now + timedelta(seconds=settings.idempotency_ttl_seconds),
        }
        replay = self._claim(scope, kid, record)
        if replay is not None:
            return replay
        try:
            response = call_next(request)
        except BaseException:
            self._release(scope, kid)
            raise
        if response.status >= 500:
            self._release(scope, kid)
        else:
            self._complete(scope, kid, response)
        return response

    def _claim(self, scope: Scope, kid: str, record: dict[str, Any]) -> Response | None:
        """None once this request holds the key; the stored answer to replay; or the 4xx to send."""
        for _ in range(_CLAIM_ATTEMPTS):
            existing = self.store.claim(scope, kid, record)
            if existing is None:
                return None
            outcome = decide(existing.record, record["fingerprint"], record["created_at"])
            if outcome == "replay":
                assert existing.record is not None
                return self._replay(existing.record)
            if outcome == "reused":
                raise errors.Unprocessable(
                    f"This {HEADER} was used for a different request (method, path or body); use a new key.",
                    code="idempotency_key_reused",
                )
            if outcome == "in_progress":
                break
            self.store.take_over(scope, kid, existing.version)
        raise errors.Conflict(
            f"A request with this {HEADER} is still being processed; retry later.",
            code="idempotency_key_in_progress",
        )

    def _replay(self, record: dict[str, Any]) -> Response:
        text = record["body_json"] if record.get("body_object") is None else self.store.get_body(record["body_object"])
        headers = {**(record.get("headers") or {}), REPLAYED_HEADER: "true"}
        return Response(json.loads(text), int(record["status"]), headers)

    def _complete(self, scope: Scope, kid: str, response: Response) -> None:
        text = json.dumps(response.body, separators=(",", ":"), ensure_ascii=False)
        fields: dict[str, Any] = {
            "state": "done",
            "status": response.status,
            "headers": dict(response.headers),
            "body_json": text,
            "body_object": None,
            "completed_at": utcnow(),
        }
        try:
            # A document holds at most 1 MiB: large answers (a job echoing its payload) go to Storage.
            if len(text.encode("utf-8")) > get_settings().inline_payload_max_bytes:
                fields["body_object"] = self.store.put_body(scope, kid, text)
                fields["body_json"] = None
            self.store.complete(scope, kid, fields)
        except Exception as exc:
            # The work is done and the caller gets its answer; a retry after the lock lapses runs again.
            log.error("idempotency record not completed", extra={"key_id": kid, "error": str(exc)[:300]})

    def _release(self, scope: Scope, kid: str) -> None:
        try:
            self.store.release(scope, kid)
        except Exception as exc:
            # The lock lapses after idempotency_lock_seconds; until then a retry gets 409.
            log.error("idempotency key not released", extra={"key_id": kid, "error": str(exc)[:300]})
