"""A job's per-item results as a chunk document holds them: a retry job's say where each item came
from; with include=item, each carries the item as submitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from common import errors
from common.models.job import ItemResult
from common.services.jobs import attach_items
from common.store.jobs import chunk_results


def row(index: int, result: str = "created") -> dict[str, Any]:
    return {"index": index, "identifier": None, "product_id": None, "result": result, "errors": []}


def test_a_retry_chunks_results_carry_the_index_each_item_had_in_the_job_retried() -> None:
    """The retry of a job whose items 3, 7, 8, 12 and 40 failed: its second chunk holds items 2 to 4."""
    chunk = {"first_index": 2, "count": 3, "origins": [8, 12, 40], "results": [row(2), row(3, "failed"), row(4)]}
    assert [(r["index"], r["retry_of_index"], r["result"]) for r in chunk_results(chunk)] == [
        (2, 8, "created"),
        (3, 12, "failed"),
        (4, 40, "created"),
    ]


def test_a_retry_chunk_cut_short_maps_the_results_it_has() -> None:
    """A cancelled job's chunk holds the results of the items it ran before the stop."""
    chunk = {"first_index": 200, "count": 3, "origins": [5, 9, 11], "results": [row(200)]}
    assert [r["retry_of_index"] for r in chunk_results(chunk)] == [5]


def test_the_results_of_a_job_that_retries_none_have_no_origin() -> None:
    chunk = {"first_index": 0, "count": 2, "named_before": [], "results": [row(0), row(1)]}
    assert chunk_results(chunk) == [row(0), row(1)]
    assert [ItemResult.model_validate(r).dump()["retry_of_index"] for r in chunk_results(chunk)] == [None, None]


# -- include=item: each result with the item as submitted ------------------------------------------


def stored(first: int, items: list[Any]) -> dict[str, Any]:
    """A chunk's stored items, as dispatch writes them (compact JSON)."""
    return {"first_index": first, "items_json": json.dumps(items, separators=(",", ":"), ensure_ascii=False)}


def test_each_result_gets_the_item_at_its_place_in_its_chunk() -> None:
    """Failed items 1 and 202 of a job in chunks of 200: each chunk's items are numbered from its first index."""
    groups = [(0, [row(1, "failed")]), (1, [row(202, "failed")])]
    chunks = [stored(0, [{"sku": "A"}, {"sku": "B", "n": 1.5}]), stored(200, ["x", None, {"sku": "é", "tags": []}])]
    page, next_start = attach_items(groups, chunks, 7, budget=1_000)
    assert [(r["index"], r["item"]) for r in page] == [(1, {"sku": "B", "n": 1.5}), (202, {"sku": "é", "tags": []})]
    assert next_start == 7  # the page was not cut: its own next start stands
    assert page[0] == {**row(1, "failed"), "item": {"sku": "B", "n": 1.5}}


def test_a_page_ends_once_its_items_reach_the_budget_and_reads_no_chunk_after_it() -> None:
    items = [{"sku": f"S-{i}", "pad": "x" * 30} for i in range(4)]
    size = len(json.dumps(items[0], separators=(",", ":")))
    read: list[int] = []

    def chunks() -> Iterator[dict[str, Any]]:
        for n in range(3):
            read.append(n)
            yield stored(n * 4, items)

    groups = [(0, [row(0), row(1)]), (1, [row(4), row(5)]), (2, [row(8)])]
    page, next_start = attach_items(groups, chunks(), None, budget=2 * size + 1)
    assert [r["index"] for r in page] == [0, 1, 4] and next_start == 5
    assert read == [0, 1]
    # An item larger than the whole budget still makes a page of its own: the cursor always moves.
    page, next_start = attach_items(groups, chunks(), None, budget=1)
    assert [r["index"] for r in page] == [0] and next_start == 1


def test_a_chunk_whose_items_are_not_stored_is_gone() -> None:
    with pytest.raises(errors.Gone) as gone:
        attach_items([(0, [row(0)]), (1, [row(200)])], [stored(0, [{}]), None], None, budget=1_000)
    assert gone.value.code == "payload_expired" and "include=item" in gone.value.message
