"""Property tests: the engine never raises on any JSON item, and keeps the catalog consistent."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.domain.engine import apply_plain_item, derived_id
from common.models.job import ItemResult
from tests.unit.fakes import MemoryCatalog, assert_consistent, commit, new_view, run_job

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Anything `json.loads` can produce (NaN aside: strict parsing refuses it before the engine).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=25,
)


def _chain(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


# Deep chains of lists and objects, to reach the nesting limit.
deep_values = st.integers(0, 14).map(_chain)

SKUS = st.sampled_from(["S-1", "S-2", "MWS-RED-S"])

field_values = st.one_of(json_values, st.text(max_size=30), SKUS, st.none())
variant = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "sku": st.one_of(SKUS, field_values),
            "gtin": st.one_of(st.sampled_from(["96385074", "96385075", "abc"]), field_values),
            "attributes": st.one_of(json_values, deep_values),
        },
    ),
    json_values,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["@a", "@b", "../x", "__x__", ""]), field_values),
        "title": st.one_of(st.text(min_size=1, max_size=10), field_values),
        "sku": st.one_of(SKUS, field_values),
        "description": field_values,
        "category": field_values,
        "brand": field_values,
        "gtin": st.one_of(st.sampled_from(["4006381333931", "4006381333932", "١٢٣٤٥٦٧٨"]), field_values),
        "attributes": st.one_of(json_values, deep_values),
        "variants": st.one_of(st.lists(variant, max_size=3), field_values),
        "unknown": json_values,
    },
)
delete_items = st.one_of(st.sampled_from(["@a", "@b", "../x", "__x__", "", "nope"]), json_values)
items_for = {
    "BULK_IMPORT": st.one_of(near_valid, json_values),
    "BULK_UPDATE": st.one_of(near_valid, json_values),
    "BULK_DELETE": delete_items,
}


def _seed() -> tuple[MemoryCatalog, dict[str, str]]:
    catalog = MemoryCatalog()
    results = run_job(
        catalog,
        "BULK_IMPORT",
        [
            {"title": "A", "sku": "S-1", "variants": [{"sku": "S-2"}]},
            {"title": "B", "sku": "MWS-RED-S", "gtin": "96385074"},
        ],
        "seed",
    )
    return catalog, {"@a": str(results[0]["product_id"]), "@b": str(results[1]["product_id"])}


SEEDED, ALIASES = _seed()


def _resolve_aliases(value: Any) -> Any:
    """Point the "@a"/"@b" placeholders at the seeded products, so updates and deletes find them."""
    if isinstance(value, str):
        return ALIASES.get(value, value)
    if isinstance(value, dict) and "id" in value:
        return {**value, "id": _resolve_aliases(value["id"])}
    return value


def _check_result(view: Any, index: int, res: Any) -> None:
    assert isinstance(res, dict)
    assert set(res) == {"index", "identifier", "product_id", "result", "errors"}
    assert res["index"] == index
    assert res["result"] in {"created", "updated", "deleted", "failed"}
    assert ItemResult.model_validate(res).model_dump(exclude={"retry_of_index", "item"}) == res  # added as results are read (a retry's; include=item)
    failure_id = derived_id(view.ctx.job_id, index, "failure")
    if res["result"] == "failed":
        assert res["errors"], res
        assert all(set(e) == {"code", "field", "message"} and e["code"] for e in res["errors"])
        issue = view.issue_writes[failure_id]
        assert issue["item_index"] == index
        assert issue["severity"] == "ERROR"
        assert issue["identifier"] == res["identifier"]
    else:
        assert res["errors"] == []
        assert failure_id not in view.issue_writes
        assert isinstance(res["product_id"], str)
        stored = view.product(res["product_id"])
        assert (stored is None) == (res["result"] == "deleted")


@pytest.mark.parametrize("job_type", ["BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE"])
def test_apply_plain_item_never_raises(job_type: str) -> None:
    @PROPERTY_SETTINGS
    @given(items=st.lists(items_for[job_type], min_size=1, max_size=3))
    def check(items: list[Any]) -> None:
        catalog = copy.deepcopy(SEEDED)
        view = new_view(catalog, job_type, "job-p")
        for index, raw in enumerate(items):
            res = apply_plain_item(view, index, _resolve_aliases(raw))
            _check_result(view, index, res)
        commit(catalog, view)
        assert_consistent(catalog)

    check()


# A small world of SKUs makes duplicates, moves and deletes collide often.
product_item = st.fixed_dictionaries(
    {"title": st.sampled_from(["t", "u"])},
    optional={
        "sku": SKUS,
        "description": st.sampled_from([None, "described at sufficient length for full marks"]),
        "brand": st.sampled_from([None, "B"]),
        "gtin": st.sampled_from(["96385074", "96385075"]),
        "variants": st.lists(st.fixed_dictionaries({}, optional={"sku": SKUS}), max_size=2),
    },
)
bad_item = st.fixed_dictionaries({"title": st.sampled_from(["", 5])}, optional={"sku": SKUS})
patch = st.fixed_dictionaries(
    {},
    optional={
        "sku": st.one_of(st.none(), SKUS),
        "description": st.sampled_from([None, "x" * 41]),
        "brand": st.sampled_from([None, "B", 7]),
        "variants": st.one_of(st.none(), st.lists(st.fixed_dictionaries({}, optional={"sku": SKUS}), max_size=2)),
    },
)
job = st.one_of(
    st.tuples(st.just("BULK_IMPORT"), st.lists(st.one_of(product_item, bad_item), min_size=1, max_size=4)),
    st.tuples(st.just("BULK_UPDATE"), st.lists(st.tuples(st.integers(0, 6), patch, st.booleans()), min_size=1, max_size=4)),
    st.tuples(st.just("BULK_DELETE"), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
)


@PROPERTY_SETTINGS
@given(jobs=st.lists(job, min_size=1, max_size=5), step=st.integers(1, 3))
def test_any_sequence_of_jobs_keeps_the_catalog_consistent(jobs: list[tuple[str, list[Any]]], step: int) -> None:
    """Jobs applied in steps of `step` items (one view and one commit per step, as a chunk is)."""
    catalog = MemoryCatalog()
    for j, (job_type, specs) in enumerate(jobs):
        ids = [*sorted(catalog.products), "ghost"]
        items: list[Any] = []
        for spec in specs:
            if job_type == "BULK_IMPORT":
                items.append(spec)
            elif job_type == "BULK_UPDATE":
                pick, changes, by_sku = spec
                pid = ids[pick % len(ids)]
                sku = (catalog.products.get(pid) or {}).get("sku")
                if by_sku and sku:
                    items.append({**{k: v for k, v in changes.items() if k != "sku"}, "sku": sku})
                else:
                    items.append({**changes, "id": pid})
            else:
                items.append(ids[spec % len(ids)])
        for start in range(0, len(items), step):
            view = new_view(catalog, job_type, f"job-{j}")
            for index in range(start, min(start + step, len(items))):
                _check_result(view, index, apply_plain_item(view, index, items[index]))
            commit(catalog, view)
            assert_consistent(catalog)
