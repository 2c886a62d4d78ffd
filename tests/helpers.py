"""Small helpers the integration and e2e suites share."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(every)


def all_pages(fetch: Callable[[str | None], tuple[list[dict[str, Any]], str | None]]) -> list[dict[str, Any]]:
    """Every item of a cursor-paged listing: `fetch(cursor)` returns (page, next cursor or None)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = fetch(cursor)
        items += page
        if not cursor:
            return items
