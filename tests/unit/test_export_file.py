"""An export file from segments: what a segment covered, the checkpoint after it, which claims count
against `export_max_claims`, and the compose calls that join any number of segments 32 at a time."""

from __future__ import annotations

import pytest

from common.domain.export_file import COMPOSE_MAX_SOURCES, SegmentTally, advance, claims_without_progress, compose_plan, scratch_objects
from common.models.export import ExportCheckpoint


def scratch(round_: int, n: int) -> str:
    return f"scratch-{round_}-{n}"


def run(plan: list[list[tuple[str, list[str]]]], sources: list[str]) -> dict[str, list[str]]:
    """Carry the plan out on named lists of lines, as Cloud Storage would, checking its limit."""
    objects = {name: [name] for name in sources}
    for steps in plan:
        for target, parts in steps:
            assert 1 <= len(parts) <= COMPOSE_MAX_SOURCES, len(parts)
            assert target not in objects, f"{target} is overwritten"
            objects[target] = [line for part in parts for line in objects[part]]
    return objects


@pytest.mark.parametrize("count", [1, 2, 31, 32, 33, 40, 63, 64, 65, 1024, 1025, 33 * 32 + 1])
def test_any_number_of_segments_composes_in_order_in_calls_of_at_most_32(count: int) -> None:
    sources = [f"seg-{i:05d}" for i in range(count)]
    plan = compose_plan(sources, "final", scratch)
    objects = run(plan, sources)
    assert objects["final"] == sources  # every segment once, in order
    [(target, _)] = plan[-1]
    assert target == "final"
    assert all(target != "final" for steps in plan[:-1] for target, _ in steps)
    expected_rounds = 1 if count <= 32 else 2 if count <= 32 * 32 else 3
    assert len(plan) == expected_rounds
    made = scratch_objects(plan)
    assert len(made) == len(set(made)) and not set(made) & set(sources)


def test_a_run_of_one_is_passed_on_rather_than_composed_alone() -> None:
    sources = [f"s{i}" for i in range(33)]
    plan = compose_plan(sources, "final", scratch)
    assert plan == [[("scratch-0-0", sources[:32])], [("final", ["scratch-0-0", "s32"])]]
    assert scratch_objects(plan) == ["scratch-0-0"]


def test_a_small_fan_in_shows_the_rounds() -> None:
    plan = compose_plan(list("abcdefg"), "final", scratch, fan_in=2)
    assert run(plan, list("abcdefg"))["final"] == list("abcdefg")
    assert [len(steps) for steps in plan] == [3, 2, 1]  # 7 → 4 (g passed on) → 2 → final


def test_nothing_to_compose_is_refused() -> None:
    with pytest.raises(ValueError):
        compose_plan([], "final", scratch)
    with pytest.raises(ValueError):
        compose_plan(["a", "b"], "final", scratch, fan_in=1)


def tally(*products: tuple[str, bool], listed: int = 1000) -> SegmentTally:
    counted = SegmentTally(listed=listed)
    for product_id, excluded in products:
        counted.add(product_id, excluded=excluded)
    return counted


def test_a_checkpoint_adds_a_segment_and_its_counts() -> None:
    first = advance(ExportCheckpoint(), tally(("a", False), ("b", True), ("c", False)), "seg-0", claim=1, listed=1000)
    assert first == ExportCheckpoint(claim=1, segments=["seg-0"], last_product_id="c", product_count=2, excluded_count=1, excluded_product_ids=["b"])
    second = advance(first, tally(("d", True), ("e", False)), "seg-1", claim=2, listed=1000)
    assert second == ExportCheckpoint(
        claim=2, segments=["seg-0", "seg-1"], last_product_id="e", product_count=3, excluded_count=2, excluded_product_ids=["b", "d"]
    )
    assert first.segments == ["seg-0"]  # the checkpoint before is not changed


def test_a_segment_of_excluded_products_only_moves_the_checkpoint_without_an_object() -> None:
    before = ExportCheckpoint(claim=1, segments=["seg-0"], last_product_id="c", product_count=2)
    after = advance(before, tally(("d", True), ("e", True)), None, claim=1, listed=1000)
    assert after.segments == ["seg-0"] and after.last_product_id == "e" and after.excluded_count == 2 and after.product_count == 2


def test_the_excluded_ids_listed_stay_the_first_ones_in_stream_order() -> None:
    checkpoint = ExportCheckpoint()
    for n, segment in enumerate([["a", "b"], ["c", "d"], ["e"]]):
        checkpoint = advance(checkpoint, tally(*[(p, True) for p in segment], listed=3), None, claim=1, listed=3)
        assert checkpoint.excluded_count == sum(len(s) for s in [["a", "b"], ["c", "d"], ["e"]][: n + 1])
    assert checkpoint.excluded_product_ids == ["a", "b", "c"] and checkpoint.excluded_count == 5
    assert tally(*[(p, True) for p in "abcdef"], listed=2).excluded_ids == ["a", "b"]  # a segment holds no more either


def test_a_segment_that_read_nothing_is_not_a_checkpoint() -> None:
    with pytest.raises(ValueError):
        advance(ExportCheckpoint(), SegmentTally(listed=10), None, claim=1, listed=10)


@pytest.mark.parametrize(
    ("claims", "progress_claim", "idle"),
    [
        (1, 0, 0),  # the first claim
        (3, 0, 2),  # two claims before it, neither committed a segment
        (4, 0, 3),  # the old rule: the fourth claim of an export that never moved fails at 3
        (4, 3, 0),  # the claim before it moved the export on
        (10, 9, 0),  # a huge catalog: every claim moves it on
        (10, 6, 3),  # three claims in a row since the last progress
    ],
)
def test_only_the_claims_since_the_last_progress_count(claims: int, progress_claim: int, idle: int) -> None:
    checkpoint = ExportCheckpoint(claim=progress_claim, last_product_id="p" if progress_claim else None)
    assert claims_without_progress(claims, checkpoint) == idle


def test_an_export_fails_after_max_claims_in_a_row_without_progress() -> None:
    """Claims 1-3 each commit a segment and die; 4-6 commit none: with a bound of 3, claim 7 fails it."""
    max_claims = 3
    checkpoint = ExportCheckpoint()
    refused_at = None
    for claim in range(1, 20):
        if claims_without_progress(claim, checkpoint) >= max_claims:
            refused_at = claim
            break
        if claim <= 3:
            checkpoint = advance(checkpoint, tally((f"p{claim}", False)), f"seg-{claim}", claim, listed=10)
    assert refused_at == 7
