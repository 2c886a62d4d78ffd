"""How a chunk step takes items: as many as fit its writes, each item's reads prefetched exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from common.domain.engine import CatalogView, apply_plain_item, plain_needs
from common.store.catalog import PREFETCH_MAX, STEP_WRITES, WRITES_PER_ITEM_GUESS, prefetch_size, run_items
from tests.unit.fakes import MemoryCatalog, assert_consistent, commit, new_view


def item(i: int, *, valid: bool = True) -> dict[str, Any]:
    return {"title": f"Sweater {i}", "sku": f"SKU-{i}", "gtin": "4006381333931" if i == 0 else None} if valid else {"sku": f"SKU-{i}"}


def run_steps(catalog: MemoryCatalog, items: list[Any]) -> tuple[list[int], list[int]]:
    """Apply items step by step as `apply_chunk_step` does (a fresh view per step, committed after
    it); returns how many items each step took and how many each prefetch asked for."""
    taken: list[int] = []
    fetched: list[int] = []

    def prefetch(view: CatalogView, batch: list[Any]) -> None:
        fetched.append(len(batch))
        view.prefetch(*plain_needs("BULK_IMPORT", batch))

    start = 0
    while start < len(items):
        view = new_view(catalog, "BULK_IMPORT", "job-steps")
        results = run_items(view, items, start, 0, apply_plain_item, prefetch)
        commit(catalog, view)
        taken.append(len(results))
        start += len(results)
    return taken, fetched


def test_steps_prefetch_every_item_once() -> None:
    catalog = MemoryCatalog()
    items = [item(i, valid=i % 7 != 3) for i in range(500)]
    taken, fetched = run_steps(catalog, items)
    assert sum(taken) == 500
    # A step reads ahead only by its first guess's error, which the next step reads again (reading
    # 100 at a time, as steps once did, read 1.8 times over).
    assert sum(fetched) <= 1.2 * 500
    assert len(taken) > 1 and all(n > 0 for n in taken)
    assert len(catalog.products) == sum(1 for i in range(500) if i % 7 != 3)
    assert_consistent(catalog)


def test_each_step_stays_within_its_writes() -> None:
    catalog = MemoryCatalog()
    items = [item(i) for i in range(300)]
    start = 0
    while start < len(items):
        view = new_view(catalog, "BULK_IMPORT", "job-w")
        results = run_items(view, items, start, 0, apply_plain_item, lambda v, b: v.prefetch(*plain_needs("BULK_IMPORT", b)))
        assert view.write_count() < STEP_WRITES + 10  # one item past the mark at most
        commit(catalog, view)
        start += len(results)


@pytest.mark.parametrize(
    ("writes", "taken", "max_items", "expected"),
    [
        (0, 0, None, -(-STEP_WRITES // WRITES_PER_ITEM_GUESS)),  # nothing seen yet: the guess
        (100, 25, None, -(-(STEP_WRITES - 100) // 4)),  # what is left, at the rate seen
        (0, 40, None, PREFETCH_MAX),  # failures write nothing: read ahead as far as allowed
        (249, 60, None, 1),
        (400, 60, None, 1),  # past the mark (one big item): still the next one
        (0, 0, 1, 1),  # one item at a time
        (10, 2, 3, 1),
    ],
)
def test_prefetch_size(writes: int, taken: int, max_items: int | None, expected: int) -> None:
    assert prefetch_size(writes, taken, max_items) == expected
