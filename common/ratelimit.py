"""A request budget per API token: a fixed one-minute window counted in Firestore.

Every request bearing a known token counts against that token's window (`SYNQ_RATE_LIMIT_PER_MINUTE`,
or the token document's `rate_limit_per_minute`; 0 means unlimited). Over budget the answer is 429
`rate_limited` with `Retry-After` (seconds to the next window); every counted answer carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers).

Requests without a known token are not counted: the handler answers them 401 (or serves a signed
download link), and counting garbage tokens would only let anyone create counter documents. Public
routes (health, the OpenAPI document) are not counted either: they take no token.
Counting does not write once per request: one Firestore document takes all of a token's requests
in a window, and Firestore sustains about one write a second per document. An instance adds up the
hits it sees and sends them with one write, learning the window's total from the answer: a second
after its last write (`rate_limit_flush_seconds`), or once it holds a twentieth of the budget, or
on every request once the total it knows is in the budget's last tenth. So the budget holds as
exactly as per-request counting but for the hits other instances have not sent yet: at most a
second of their traffic and a twentieth of the budget each. A fixed window lets a token send up to
twice its budget across a window boundary; a sliding one would need a read-modify-write per request
(see docs/api.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common import errors
from common.config import get_settings
from common.http import Next, Request, Response, Route, error_response
from common.store import tokens
from common.store.ratelimit import Counter, FirestoreCounter

WINDOW_SECONDS = 60
# Instance-local caches stay bounded however many distinct tokens (or garbage) arrive.
_CACHE_MAX = 10_000


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


@dataclass
class _Tally:
    """One token's window as this instance sees it."""

    window: int
    known: int = 0  # the window's count in Firestore's last answer to this instance
    unsent: int = 0  # hits counted here and not sent yet
    sending: int = 0  # hits in writes not answered yet
    sent_at: float | None = None

    @property
    def count(self) -> int:
        return self.known + self.sending + self.unsent


class RateLimiter:
    """The Router hook. Token overrides are cached per instance for `token_cache_seconds`; a token
    found over budget is refused without a write until its window ends."""

    def __init__(
        self,
        counter: Counter | None = None,
        lookup: Callable[[str], dict[str, Any] | None] = tokens.get_token,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counter: Counter = counter or FirestoreCounter()
        self.lookup = lookup
        self.clock = clock
        self._limits: dict[str, tuple[int | None, float]] = {}
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Request, route: Route, call_next: Next) -> Response:
        token = bearer_token(request)
        if token is None or route.doc.public:
            return call_next(request)
        token_hash = tokens.hash_token(token)
        limit = self.limit_for(token, token_hash)
        if not limit:
            return call_next(request)
        now = self.clock()
        window = int(now // WINDOW_SECONDS)
        reset = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        count = self.count(token_hash, window, limit, now)
        if count > limit:
            return self._refuse(limit, reset)
        response = call_next(request)
        response.headers.update(_headers(limit, limit - count, reset))
        return response

    def count(self, token_hash: str, window: int, limit: int, now: float) -> int:
        """Count one request; returns the window's count including it, as this instance knows it.
        Once that count is over the budget, requests are neither counted nor sent until the window ends."""
        with self._lock:
            tally = self._tallies.get(token_hash)
            if tally is None or tally.window != window:
                if len(self._tallies) >= _CACHE_MAX:
                    self._tallies.clear()
                tally = self._tallies[token_hash] = _Tally(window)
            if tally.count > limit:
                return tally.count
            tally.unsent += 1
            due = (
                tally.sent_at is None
                or now - tally.sent_at >= get_settings().rate_limit_flush_seconds
                or tally.unsent >= max(1, limit // 20)
                or tally.count >= limit - limit // 10
            )
            if not due:
                return tally.count
            hits, tally.unsent, tally.sending, tally.sent_at = tally.unsent, 0, tally.sending + tally.unsent, now
        expires_at = datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, UTC) + timedelta(minutes=5)
        try:
            total = self.counter.add(token_hash, window, hits, expires_at)
        except BaseException:
            with self._lock:  # the hits stay counted here and go with the next request's write
                tally.sending -= hits
                tally.unsent += hits
                tally.sent_at = None
            raise
        with self._lock:
            tally.sending -= hits
            tally.known = max(tally.known, total)
            return tally.count

    def limit_for(self, token: str, token_hash: str) -> int | None:
        """The token's budget per minute; None for a token that is not known (the handler says 401)."""
        now = time.monotonic()
        cached = self._limits.get(token_hash)
        if cached is not None and cached[1] > now:
            return cached[0]
        record = self.lookup(token)
        limit: int | None = None
        if record is not None:
            override = record.get("rate_limit_per_minute")
            valid = isinstance(override, int) and not isinstance(override, bool) and override >= 0
            limit = override if valid else get_settings().rate_limit_per_minute
        with self._lock:
            if len(self._limits) >= _CACHE_MAX:
                self._limits.clear()
            self._limits[token_hash] = (limit, now + get_settings().token_cache_seconds)
        return limit

    @staticmethod
    def _refuse(limit: int, reset: int) -> Response:
        exc = errors.TooManyRequests(
            f"This token may make {limit} requests a minute; retry in {reset} s.",
            details={"retry_after": reset, "limit": limit},
        )
        response = error_response(exc)
        response.headers.update(_headers(limit, 0, reset))
        return response


def _headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(max(0, remaining)), "RateLimit-Reset": str(reset)}
