"""A job's per-item results as a chunk document holds them: a retry job's say where each item came from."""

from __future__ import annotations

from typing import Any

from common.models.job import ItemResult
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
