"""A request budget per API token: a fixed one-minute window counted in Firestore.

Every request bearing a known token counts against that token's window (`SYNQ_RATE_LIMIT_PER_MINUTE`,
or the token document's `rate_limit_per_minute`; 0 means unlimited). Over budget the answer is 429
`rate_limited` with `Retry-After` (seconds to the next window); every counted answer carries
`RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers).

Requests without a known token are not counted: the handler answers them 401 (or serves a signed
download link), and counting garbage tokens would only let anyone create counter documents. Public
routes (health, the OpenAPI document) are not counted either: they take no token.
A fixed window lets a token send up to twice its budget across a window boundary; that is the
price of one write per request (see docs/api.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
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
        self._blocked: dict[str, int] = {}
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
        if self._blocked.get(token_hash) == window:
            return self._refuse(limit, reset)
        expires_at = datetime.fromtimestamp((window + 1) * WINDOW_SECONDS, UTC) + timedelta(minutes=5)
        count = self.counter.hit(token_hash, window, expires_at)
        if count > limit:
            with self._lock:
                if len(self._blocked) >= _CACHE_MAX:
                    self._blocked.clear()
                self._blocked[token_hash] = window
            return self._refuse(limit, reset)
        response = call_next(request)
        response.headers.update(_headers(limit, limit - count, reset))
        return response

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
