"""The import engine over an in-memory catalog: imports, updates, deletes, issues, audit, idempotency."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import engine
from common.domain.engine import CatalogView, apply_plain_item, derived_id, plain_needs, plain_prefetch
from common.domain.syndigo import ImportOptions, Vocabulary
from common.models.job import ItemResult
from tests.unit.fakes import (
    ACTOR,
    NOW,
    ORG,
    TENANT,
    MemoryCatalog,
    MemoryLoader,
    assert_consistent,
    commit,
    make_context,
    new_view,
    run_job,
    run_one,
    run_syndigo,
)

DATA = Path(__file__).resolve().parents[1] / "data"
LATER = NOW + timedelta(hours=1)
MUCH_LATER = NOW + timedelta(hours=2)

GOOD = {
    "title": "Merino Wool Crew Neck Sweater",
    "sku": "MWS-RED-S",
    "description": "100% Grade-A merino wool, knitted in Portugal.",
    "category": "Knitwear",
    "brand": "NordicThread",
    "gtin": "4006381333931",
    "attributes": {"colour": "red"},
}


def create(catalog: MemoryCatalog, item: dict[str, Any], job_id: str = "seed", index: int = 0) -> str:
    """Import one product in its own job and return its id."""
    res = run_job(catalog, "BULK_IMPORT", [item], job_id, first_index=index)[0]
    assert res["result"] == "created", res
    return str(res["product_id"])


def issue_keys(catalog: MemoryCatalog, product_id: str) -> set[str]:
    return {doc["key"] for doc in catalog.open_issues(product_id=product_id)}


def failure_issue(catalog: MemoryCatalog, job_id: str, index: int) -> dict[str, Any]:
    return catalog.issues[derived_id(job_id, index, "failure")]


def events_for(catalog: MemoryCatalog, job_id: str) -> list[dict[str, Any]]:
    return [e for e in catalog.audits.values() if e["details"]["job_id"] == job_id]


# -- BULK_IMPORT ----------------------------------------------------------------------------------


def test_import_creates_a_product_with_a_deterministic_id(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_IMPORT", GOOD)
    pid = derived_id("job-1", 0, "product")
    assert res == {"index": 0, "identifier": "MWS-RED-S", "product_id": pid, "result": "created", "errors": []}
    product = catalog.products[pid]
    assert {k: product[k] for k in GOOD} == GOOD
    assert product["id"] == pid
    assert (product["org_id"], product["tenant_id"]) == (ORG, TENANT)
    assert product["created_at"] == product["updated_at"] == NOW
    assert product["version"] == 1
    assert product["quality_score"] == 100
    assert product["open_issues"] == {}
    assert product["issue_counts"] == {"ERROR": 0, "WARNING": 0}
    assert catalog.skus == {"MWS-RED-S": {"sku": "MWS-RED-S", "holders": {pid: {"p": 1, "v": 0}}}}
    assert catalog.issues == {}
    assert_consistent(catalog)


def test_import_id_is_derived_from_job_and_index(catalog: MemoryCatalog) -> None:
    results = run_job(catalog, "BULK_IMPORT", [{"title": "A"}, {"title": "B"}], "job-7", first_index=40)
    assert [r["product_id"] for r in results] == [derived_id("job-7", 40, "product"), derived_id("job-7", 41, "product")]
    assert len(set(catalog.products)) == 2
    other = run_one(catalog, "BULK_IMPORT", {"title": "A"}, "job-8")
    assert other["product_id"] == derived_id("job-8", 0, "product")
    assert len(catalog.products) == 3


def test_import_of_a_known_sku_updates_that_product(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "Old", "sku": "S-1", "description": "kept " * 10})
    res = run_one(catalog, "BULK_IMPORT", {"title": "New", "sku": "S-1", "brand": "B"}, "job-2", now=LATER)
    assert res == {"index": 0, "identifier": "S-1", "product_id": pid, "result": "updated", "errors": []}
    assert len(catalog.products) == 1
    product = catalog.products[pid]
    assert product["title"] == "New"
    assert product["brand"] == "B"
    assert product["description"] == "kept " * 10  # fields the item leaves out stay
    assert product["created_at"] == NOW
    assert product["updated_at"] == LATER
    assert product["version"] == 2
    assert catalog.skus["S-1"]["holders"] == {pid: {"p": 1, "v": 0}}
    assert_consistent(catalog)


def test_import_of_a_sku_created_earlier_in_the_same_view_updates_it(catalog: MemoryCatalog) -> None:
    results = run_job(catalog, "BULK_IMPORT", [{"title": "A", "sku": "S"}, {"title": "B", "sku": "S"}])
    assert [r["result"] for r in results] == ["created", "updated"]
    assert results[0]["product_id"] == results[1]["product_id"]
    assert [p["title"] for p in catalog.products.values()] == ["B"]
    assert_consistent(catalog)


def test_import_of_a_sku_held_only_by_a_variant_creates_a_new_product(catalog: MemoryCatalog) -> None:
    holder = create(catalog, {"title": "A", "variants": [{"sku": "S"}]})
    res = run_one(catalog, "BULK_IMPORT", {"title": "B", "sku": "S"})
    assert res["result"] == "created"
    assert res["product_id"] != holder
    assert_consistent(catalog)


def test_import_of_a_sku_held_by_two_products_is_ambiguous(catalog: MemoryCatalog) -> None:
    first = create(catalog, {"title": "A", "sku": "S"}, "seed-a")
    second = create(catalog, {"title": "B", "sku": "T"}, "seed-b")
    assert run_one(catalog, "BULK_UPDATE", {"id": second, "sku": "S"}, "job-0")["result"] == "updated"
    res = run_one(catalog, "BULK_IMPORT", {"title": "C", "sku": "S"})
    assert res["result"] == "failed"
    assert res["errors"] == [{"code": "ambiguous_identifier", "field": "sku", "message": "SKU 'S' names 2 products; use the product id."}]
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.AMBIGUOUS_IDENTIFIER
    assert {catalog.products[first]["title"], catalog.products[second]["title"]} == {"A", "B"}
    assert_consistent(catalog)


@pytest.mark.parametrize(
    ("item", "errors"),
    [
        (
            {"title": "T", "colour": "red"},
            [{"code": "unknown_field", "field": "colour", "message": "Unknown field 'colour'."}],
        ),
        (
            {"sku": "S"},
            [{"code": "missing_field", "field": "title", "message": "Field 'title' is required."}],
        ),
        (
            {"title": "T", "variants": [{"sku": "V", "size": "M"}]},
            [{"code": "unknown_field", "field": "variants.0.size", "message": "Unknown field 'variants.0.size'."}],
        ),
        (
            {"title": "T", "id": "abc"},
            [{"code": "unknown_field", "field": "id", "message": "Unknown field 'id'."}],
        ),
    ],
)
def test_import_field_errors(catalog: MemoryCatalog, item: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    res = run_one(catalog, "BULK_IMPORT", item)
    assert res["result"] == "failed"
    assert res["product_id"] is None
    assert res["errors"] == errors
    assert catalog.products == {}
    assert catalog.skus == {}
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.IMPORT_REJECTED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", ""),
        ("title", "t" * 501),
        ("title", 5),
        ("title", None),
        ("sku", ""),
        ("sku", "s" * 129),
        ("sku", 123),
        ("gtin", 96385074),
        ("description", "d" * 20_001),
        ("category", "c" * 501),
        ("brand", ["B"]),
        ("attributes", ["not", "an", "object"]),
        ("variants", {"sku": "V"}),
        ("variants", [{"sku": "V"}] * 51),
        ("variants", ["V"]),
    ],
)
def test_import_invalid_values(catalog: MemoryCatalog, field: str, value: Any) -> None:
    item = {"title": "T", field: value}
    res = run_one(catalog, "BULK_IMPORT", item)
    assert res["result"] == "failed"
    codes = {(e["code"], e["field"].split(".")[0]) for e in res["errors"]}
    assert codes == {("invalid_value", field)}, res["errors"]
    assert catalog.products == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("title", "t" * 500), ("sku", "s" * 128), ("description", "d" * 20_000), ("variants", [{"sku": "V"}] * 50)],
)
def test_import_limits_are_inclusive(catalog: MemoryCatalog, field: str, value: Any) -> None:
    assert run_one(catalog, "BULK_IMPORT", {"title": "T", field: value})["result"] == "created"


def test_title_over_500_characters_names_the_field(catalog: MemoryCatalog) -> None:
    [error] = run_one(catalog, "BULK_IMPORT", {"title": "t" * 501})["errors"]
    assert error["code"] == "invalid_value"
    assert error["field"] == "title"
    assert error["message"].startswith("Field 'title': ")
    assert "500" in error["message"]


@pytest.mark.parametrize("job_type", ["BULK_IMPORT", "BULK_UPDATE"])
@pytest.mark.parametrize("item", ["a string", 5, 1.5, None, True, [], [{"title": "T"}]])
def test_non_object_items_fail(catalog: MemoryCatalog, job_type: str, item: Any) -> None:
    res = run_one(catalog, job_type, item)
    assert res["result"] == "failed"
    assert [e["code"] for e in res["errors"]] == ["invalid_item"]
    assert res["identifier"] is None
    issue = failure_issue(catalog, "job-1", 0)
    assert issue["issue_type"] == engine.IMPORT_REJECTED
    assert issue["identifier"] is None
    assert catalog.identifiers == {}


def test_unknown_empty_key_is_named(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_IMPORT", {"title": "T", "": 1})
    assert res["errors"] == [{"code": "unknown_field", "field": "", "message": "Unknown field ''."}]


# -- attribute storability --------------------------------------------------------------------------


def nested(levels: int) -> dict[str, Any]:
    """`levels` nested objects: nested(1) == {"k": "leaf"}."""
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("where", ["product", "variant"])
def test_attributes_nested_eight_levels_are_stored(catalog: MemoryCatalog, where: str) -> None:
    attrs = nested(8)
    item = {"title": "T", "attributes": attrs} if where == "product" else {"title": "T", "variants": [{"attributes": attrs}]}
    res = run_one(catalog, "BULK_IMPORT", item)
    assert res["result"] == "created"


@pytest.mark.parametrize("levels", [9, 10, 50, 500])
@pytest.mark.parametrize("where", ["product", "variant"])
def test_attributes_nested_deeper_than_eight_levels_fail_the_item(catalog: MemoryCatalog, levels: int, where: str) -> None:
    attrs = nested(levels)
    item = {"title": "T", "attributes": attrs} if where == "product" else {"title": "T", "variants": [{"attributes": attrs}]}
    res = run_one(catalog, "BULK_IMPORT", item)
    assert res["result"] == "failed"
    [error] = res["errors"]
    assert error["code"] == "invalid_value"
    assert error["field"] == ("attributes" if where == "product" else "variants.0.attributes")
    assert "nested deeper than 8 levels" in error["message"]


def test_an_array_inside_an_array_fails_the_item(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_IMPORT", {"title": "T", "attributes": {"sizes": [[1, 2], [3, 4]]}})
    assert res["result"] == "failed" and "array directly inside an array" in res["errors"][0]["message"]


def test_nesting_through_lists_counts_too(catalog: MemoryCatalog) -> None:
    value: Any = 1
    for _ in range(5):
        value = [{"k": value}]  # list, map, list, map…: storable shapes, but too deep
    res = run_one(catalog, "BULK_IMPORT", {"title": "T", "attributes": {"k": value}})
    assert res["result"] == "failed"
    assert "nested deeper than 8 levels" in res["errors"][0]["message"]


@pytest.mark.parametrize("number", [2**63, 2**63 + 1, 10**30, -(2**63) - 1, 10**5000], ids=["2^63", "2^63+1", "1e30", "-2^63-1", "5001-digits"])
def test_integers_outside_64_bits_fail_the_item(catalog: MemoryCatalog, number: int) -> None:
    for item in ({"title": "T", "attributes": {"n": number}}, {"title": "T", "attributes": {"a": [{"n": number}]}}):
        res = run_one(catalog, "BULK_IMPORT", item)
        assert res["result"] == "failed"
        assert res["errors"][0]["code"] == "invalid_value"
        assert "64-bit" in res["errors"][0]["message"]
    assert catalog.products == {}


@pytest.mark.parametrize("number", [2**63 - 1, -(2**63), 0, True])
def test_integers_inside_64_bits_are_stored(catalog: MemoryCatalog, number: int) -> None:
    res = run_one(catalog, "BULK_IMPORT", {"title": "T", "attributes": {"n": number}})
    assert res["result"] == "created"
    assert catalog.products[res["product_id"]]["attributes"] == {"n": number}


@pytest.mark.parametrize("key", ["", "__name__", "__x__", "k" * 257])
def test_unstorable_attribute_names_fail_the_item(catalog: MemoryCatalog, key: str) -> None:
    res = run_one(catalog, "BULK_IMPORT", {"title": "T", "attributes": {"ok": {key: 1}}})
    assert res["result"] == "failed"
    assert "attribute name" in res["errors"][0]["message"]


@pytest.mark.parametrize("key", ["__x", "x__", "_", "k" * 256, "a.b", "a/b", "ü"])
def test_unusual_but_storable_attribute_names(catalog: MemoryCatalog, key: str) -> None:
    assert run_one(catalog, "BULK_IMPORT", {"title": "T", "attributes": {key: 1}})["result"] == "created"


# -- BULK_UPDATE ----------------------------------------------------------------------------------


def test_update_by_id(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, "title": "Renamed"}, "job-2", now=LATER)
    assert res == {"index": 0, "identifier": pid, "product_id": pid, "result": "updated", "errors": []}
    product = catalog.products[pid]
    assert product["title"] == "Renamed"
    assert {k: product[k] for k in GOOD if k != "title"} == {k: v for k, v in GOOD.items() if k != "title"}
    assert (product["version"], product["created_at"], product["updated_at"]) == (2, NOW, LATER)
    assert_consistent(catalog)


def test_update_by_sku(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    res = run_one(catalog, "BULK_UPDATE", {"sku": "MWS-RED-S", "brand": "HarbourLine"}, "job-2")
    assert res == {"index": 0, "identifier": "MWS-RED-S", "product_id": pid, "result": "updated", "errors": []}
    assert catalog.products[pid]["brand"] == "HarbourLine"
    assert catalog.products[pid]["sku"] == "MWS-RED-S"
    assert catalog.skus["MWS-RED-S"]["holders"] == {pid: {"p": 1, "v": 0}}


def test_partial_update_changes_only_the_given_fields(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {**GOOD, "variants": [{"sku": "V-1", "gtin": "96385074"}]})
    before = copy.deepcopy(catalog.products[pid])
    run_one(catalog, "BULK_UPDATE", {"id": pid, "category": "Sweaters"}, "job-2", now=LATER)
    after = catalog.products[pid]
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"category", "updated_at", "version"}


@pytest.mark.parametrize(
    ("field", "cleared"),
    # Collections clear to empty (the read model's shape), scalars to null.
    [("description", None), ("category", None), ("brand", None), ("gtin", None), ("attributes", {}), ("variants", [])],
)
def test_null_clears_an_optional_field(catalog: MemoryCatalog, field: str, cleared: Any) -> None:
    pid = create(catalog, {**GOOD, "variants": [{"sku": "V-1"}]})
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, field: None}, "job-2")
    assert res["result"] == "updated"
    product = catalog.products[pid]
    assert product[field] == cleared
    assert product["quality_score"] < 100 or field == "variants"
    assert_consistent(catalog)


def test_clearing_the_description_opens_missing_description(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    run_one(catalog, "BULK_UPDATE", {"id": pid, "description": None}, "job-2")
    assert issue_keys(catalog, pid) == {"MISSING_DESCRIPTION"}
    assert catalog.products[pid]["issue_counts"] == {"ERROR": 0, "WARNING": 1}


def test_clearing_the_sku_by_id_removes_the_index_entry(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    run_one(catalog, "BULK_UPDATE", {"id": pid, "sku": None}, "job-2")
    assert catalog.products[pid]["sku"] is None
    assert catalog.skus == {}
    assert_consistent(catalog)


def test_changing_the_sku_by_id_moves_the_index_entry(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    run_one(catalog, "BULK_UPDATE", {"id": pid, "sku": "MWS-RED-M"}, "job-2")
    assert catalog.products[pid]["sku"] == "MWS-RED-M"
    assert catalog.skus == {"MWS-RED-M": {"sku": "MWS-RED-M", "holders": {pid: {"p": 1, "v": 0}}}}


def test_null_title_is_refused(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, "title": None}, "job-2")
    assert res["result"] == "failed"
    assert res["errors"] == [{"code": "invalid_value", "field": "title", "message": "Field 'title' cannot be cleared."}]
    assert catalog.products[pid]["title"] == GOOD["title"]
    assert failure_issue(catalog, "job-2", 0)["issue_type"] == engine.IMPORT_REJECTED


def test_update_of_an_unknown_id_opens_product_not_found(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_UPDATE", {"id": "no-such-product", "title": "T"})
    assert res["result"] == "failed"
    assert res["errors"] == [{"code": "product_not_found", "field": "id", "message": "No product with id 'no-such-product' in this tenant."}]
    issue = failure_issue(catalog, "job-1", 0)
    assert issue["issue_type"] == engine.PRODUCT_NOT_FOUND
    assert issue["severity"] == "ERROR"
    assert issue["identifier"] == "no-such-product"
    assert catalog.products == {}


def test_update_of_an_unknown_sku_opens_product_not_found(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_UPDATE", {"sku": "NOPE", "title": "T"})
    assert res["errors"] == [{"code": "product_not_found", "field": "sku", "message": "No product with SKU 'NOPE' in this tenant."}]
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.PRODUCT_NOT_FOUND


@pytest.mark.parametrize("unsafe", ["../x", "a/b", ".", "..", "__name__", "x" * 129, "-leading-dash", "sp ace"])
def test_update_by_an_unsafe_id_is_not_found_without_a_read(unsafe: str) -> None:
    catalog = MemoryCatalog()
    view = new_view(catalog, "BULK_UPDATE")
    res = apply_plain_item(view, 0, {"id": unsafe, "title": "T"})
    assert res["result"] == "failed"
    assert res["errors"][0]["code"] == "product_not_found"
    assert isinstance(view.loader, MemoryLoader)
    assert not any(name == "products" for name, _ in view.loader.calls)


def test_update_naming_no_product(catalog: MemoryCatalog) -> None:
    res = run_one(catalog, "BULK_UPDATE", {"title": "T"})
    assert res["errors"] == [{"code": "missing_field", "field": "id", "message": "Give 'id' or 'sku' to name the product to update."}]


def test_update_with_an_unknown_field(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, "price": 10}, "job-2")
    assert res["errors"] == [{"code": "unknown_field", "field": "price", "message": "Unknown field 'price'."}]
    assert catalog.products[pid]["version"] == 1


def test_update_by_an_ambiguous_sku_fails(catalog: MemoryCatalog) -> None:
    create(catalog, {"title": "A", "sku": "S"}, "seed-a")
    other = create(catalog, {"title": "B"}, "seed-b")
    run_one(catalog, "BULK_UPDATE", {"id": other, "sku": "S"}, "job-0")
    res = run_one(catalog, "BULK_UPDATE", {"sku": "S", "brand": "X"})
    assert res["result"] == "failed"
    assert res["errors"][0]["code"] == "ambiguous_identifier"
    assert all(p.get("brand") is None for p in catalog.products.values())


def test_update_identifier_prefers_id_over_sku(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, "sku": "NEW-SKU"}, "job-2")
    assert res["identifier"] == pid
    assert catalog.products[pid]["sku"] == "NEW-SKU"


# -- BULK_DELETE ----------------------------------------------------------------------------------


def test_delete_removes_the_product_its_sku_entry_and_resolves_its_issues(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "T", "sku": "S"})
    opened = catalog.open_issues(product_id=pid)
    assert {d["key"] for d in opened} == {"MISSING_DESCRIPTION", "LOW_QUALITY_SCORE"}
    res = run_one(catalog, "BULK_DELETE", pid, "job-2", now=LATER)
    assert res == {"index": 0, "identifier": pid, "product_id": pid, "result": "deleted", "errors": []}
    assert catalog.products == {}
    assert catalog.skus == {}
    for doc in opened:
        stored = catalog.issues[doc["id"]]
        assert stored["resolved"] is True
        assert stored["updated_at"] == LATER
        # A resolve is a merge: the rest of the issue stays as it was.
        assert {k: v for k, v in stored.items() if k not in ("resolved", "updated_at")} == {
            k: v for k, v in doc.items() if k not in ("resolved", "updated_at")
        }
    assert catalog.open_issues() == []
    [event] = events_for(catalog, "job-2")
    assert (event["action"], event["entity_id"], event["details"]["sku"]) == ("product.deleted", pid, "S")
    assert_consistent(catalog)


def test_delete_resolves_issues_only_the_store_knows(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    catalog.issues["stray"] = {
        "id": "stray",
        "product_id": pid,
        "issue_type": "INVALID_BARCODE",
        "severity": "ERROR",
        "message": "m",
        "resolved": False,
        "created_at": NOW,
        "updated_at": NOW,
    }
    run_one(catalog, "BULK_DELETE", pid, "job-2", now=LATER)
    assert catalog.issues["stray"]["resolved"] is True
    assert catalog.issues["stray"]["updated_at"] == LATER
    assert catalog.issues["stray"]["created_at"] == NOW


def test_delete_keeps_other_products_and_their_index_entries(catalog: MemoryCatalog) -> None:
    keep = create(catalog, {**GOOD, "sku": "KEEP"}, "seed-a")
    gone = create(catalog, {**GOOD, "sku": "GONE"}, "seed-b")
    run_one(catalog, "BULK_DELETE", gone)
    assert set(catalog.products) == {keep}
    assert set(catalog.skus) == {"KEEP"}


@pytest.mark.parametrize("item", ["no-such-product", "../etc", "__x__"])
def test_delete_of_an_unknown_product_fails(catalog: MemoryCatalog, item: str) -> None:
    res = run_one(catalog, "BULK_DELETE", item)
    assert res["result"] == "failed"
    assert res["errors"] == [{"code": "product_not_found", "field": "id", "message": f"No product with id '{item}' in this tenant."}]
    issue = failure_issue(catalog, "job-1", 0)
    assert issue["issue_type"] == engine.PRODUCT_NOT_FOUND
    assert issue["identifier"] == item


@pytest.mark.parametrize("item", ["", 5, None, {"id": "x"}, ["x"]])
def test_delete_items_must_be_id_strings(catalog: MemoryCatalog, item: Any) -> None:
    res = run_one(catalog, "BULK_DELETE", item)
    assert res["result"] == "failed"
    assert res["errors"][0]["code"] == "invalid_item"
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.IMPORT_REJECTED


def test_delete_twice_in_one_view_fails_the_second(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    results = run_job(catalog, "BULK_DELETE", [pid, pid], "job-2")
    assert [r["result"] for r in results] == ["deleted", "failed"]
    assert catalog.products == {}


# -- DUPLICATE_SKU across products ------------------------------------------------------------------


def duplicate_pair(catalog: MemoryCatalog) -> tuple[str, str]:
    """Two products that both hold SKU 'MWS-RED-S' (the second got it by an update by id)."""
    first = create(catalog, GOOD, "seed-a")
    second = create(catalog, {**GOOD, "sku": "OTHER"}, "seed-b")
    res = run_one(catalog, "BULK_UPDATE", {"id": second, "sku": "MWS-RED-S"}, "job-dup")
    assert res["result"] == "updated"
    return first, second


def test_two_products_with_one_sku_each_get_one_duplicate_issue(catalog: MemoryCatalog) -> None:
    first, second = duplicate_pair(catalog)
    for pid in (first, second):
        [issue] = catalog.open_issues(product_id=pid, issue_type="DUPLICATE_SKU")
        assert issue["message"] == "SKU 'MWS-RED-S' is used by more than one variant in this tenant."
        assert issue["severity"] == "ERROR"
        assert issue["key"] == "DUPLICATE_SKU:MWS-RED-S"
        assert issue["job_id"] is None
        assert catalog.products[pid]["issue_counts"] == {"ERROR": 1, "WARNING": 0}
    assert catalog.skus["MWS-RED-S"]["holders"] == {first: {"p": 1, "v": 0}, second: {"p": 1, "v": 0}}
    assert len(catalog.open_issues()) == 2
    assert_consistent(catalog)


def test_changing_one_holders_sku_resolves_both_duplicate_issues(catalog: MemoryCatalog) -> None:
    first, second = duplicate_pair(catalog)
    ids = {d["id"] for d in catalog.open_issues(issue_type="DUPLICATE_SKU")}
    run_one(catalog, "BULK_UPDATE", {"id": first, "sku": "MWS-RED-M"}, "job-fix", now=LATER)
    assert catalog.open_issues(issue_type="DUPLICATE_SKU") == []
    assert all(catalog.issues[i]["resolved"] is True and catalog.issues[i]["updated_at"] == LATER for i in ids)
    assert catalog.products[second]["issue_counts"] == {"ERROR": 0, "WARNING": 0}
    assert catalog.products[second]["open_issues"] == {}
    assert_consistent(catalog)


def test_deleting_one_holder_resolves_the_other_holders_issue(catalog: MemoryCatalog) -> None:
    first, second = duplicate_pair(catalog)
    run_one(catalog, "BULK_DELETE", first, "job-del")
    assert catalog.open_issues() == []
    assert catalog.skus["MWS-RED-S"]["holders"] == {second: {"p": 1, "v": 0}}
    assert_consistent(catalog)


def test_a_variant_sku_duplicating_another_products_sku(catalog: MemoryCatalog) -> None:
    first = create(catalog, GOOD, "seed-a")
    second = create(catalog, {**GOOD, "sku": "B-1", "variants": [{"sku": "MWS-RED-S"}]}, "seed-b")
    assert catalog.skus["MWS-RED-S"]["holders"] == {first: {"p": 1, "v": 0}, second: {"p": 0, "v": 1}}
    assert issue_keys(catalog, first) == {"DUPLICATE_SKU:MWS-RED-S"}
    assert issue_keys(catalog, second) == {"DUPLICATE_SKU:MWS-RED-S"}
    assert_consistent(catalog)
    # Dropping the variant resolves both.
    run_one(catalog, "BULK_UPDATE", {"id": second, "variants": []}, "job-fix")
    assert catalog.open_issues() == []
    assert catalog.skus["MWS-RED-S"]["holders"] == {first: {"p": 1, "v": 0}}
    assert_consistent(catalog)


def test_one_product_holding_a_sku_twice_is_flagged(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {**GOOD, "variants": [{"sku": "MWS-RED-S"}]})
    assert issue_keys(catalog, pid) == {"DUPLICATE_SKU:MWS-RED-S"}
    assert catalog.skus["MWS-RED-S"]["holders"] == {pid: {"p": 1, "v": 1}}


def test_a_third_holder_leaving_keeps_the_other_two_flagged(catalog: MemoryCatalog) -> None:
    first, second = duplicate_pair(catalog)
    third = create(catalog, {**GOOD, "sku": "C-1", "variants": [{"sku": "MWS-RED-S"}]}, "seed-c")
    assert all(issue_keys(catalog, p) == {"DUPLICATE_SKU:MWS-RED-S"} for p in (first, second, third))
    run_one(catalog, "BULK_DELETE", third, "job-del")
    assert issue_keys(catalog, first) == issue_keys(catalog, second) == {"DUPLICATE_SKU:MWS-RED-S"}
    run_one(catalog, "BULK_DELETE", second, "job-del-2")
    assert catalog.open_issues() == []
    assert_consistent(catalog)


def test_duplicates_made_within_one_view(catalog: MemoryCatalog) -> None:
    results = run_job(catalog, "BULK_IMPORT", [{**GOOD, "sku": "A"}, {**GOOD, "sku": "B", "variants": [{"sku": "A"}]}])
    assert [r["result"] for r in results] == ["created", "created"]
    assert len(catalog.open_issues(issue_type="DUPLICATE_SKU")) == 2
    assert_consistent(catalog)


# -- failures as validation issues ------------------------------------------------------------------


def test_a_failed_item_opens_an_error_issue(catalog: MemoryCatalog) -> None:
    res = run_job(catalog, "BULK_IMPORT", [{"title": "ok"}, {"sku": "SKU-1"}], "job-9")[1]
    assert res["result"] == "failed"
    issue_id = derived_id("job-9", 1, "failure")
    assert catalog.issues[issue_id] == {
        "id": issue_id,
        "org_id": ORG,
        "tenant_id": TENANT,
        "resolved": False,
        "created_at": NOW,
        "updated_at": NOW,
        "product_id": None,
        "issue_type": engine.IMPORT_REJECTED,
        "severity": "ERROR",
        "message": "Item 1 ('SKU-1') of job job-9 was not applied: Field 'title' is required.",
        "key": engine.IMPORT_REJECTED,
        "job_id": "job-9",
        "item_index": 1,
        "identifier": "SKU-1",
    }
    assert catalog.identifiers == {"SKU-1": {"identifier": "SKU-1", "open": {issue_id: True}}}
    assert_consistent(catalog)


def test_a_failure_without_identifier_is_not_indexed(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"title": ""})
    issue = failure_issue(catalog, "job-1", 0)
    assert issue["message"].startswith("Item 0 of job job-1 was not applied: Field 'title': ")
    assert issue["identifier"] is None
    assert catalog.identifiers == {}


def test_failure_message_lists_at_most_five_reasons(catalog: MemoryCatalog) -> None:
    item = {"title": 1, "sku": 2, "description": 3, "category": 4, "brand": 5, "gtin": 6, "extra": 7}
    res = run_one(catalog, "BULK_IMPORT", item)
    assert len(res["errors"]) == 7
    message = failure_issue(catalog, "job-1", 0)["message"]
    assert message.count("Field '") + message.count("Unknown field") == 5


def test_a_later_successful_item_resolves_the_failure(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"sku": "SKU-1", "title": ""}, "job-1")
    issue_id = derived_id("job-1", 0, "failure")
    res = run_one(catalog, "BULK_IMPORT", {"sku": "SKU-1", "title": "Fixed"}, "job-2", now=LATER)
    assert res["result"] == "created"
    assert catalog.issues[issue_id]["resolved"] is True
    assert catalog.issues[issue_id]["updated_at"] == LATER
    assert catalog.issues[issue_id]["created_at"] == NOW
    assert catalog.issues[issue_id]["message"].startswith("Item 0 ('SKU-1')")
    assert catalog.identifiers == {}
    assert_consistent(catalog)


def test_a_success_in_the_same_view_resolves_the_failure(catalog: MemoryCatalog) -> None:
    results = run_job(catalog, "BULK_IMPORT", [{"sku": "S", "title": 5}, {"sku": "S", "title": "ok"}])
    assert [r["result"] for r in results] == ["failed", "created"]
    assert catalog.issues[derived_id("job-1", 0, "failure")]["resolved"] is True
    assert catalog.identifiers == {}


def test_success_under_another_identifier_leaves_the_failure_open(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"sku": "S-1", "title": ""}, "job-1")
    run_one(catalog, "BULK_IMPORT", {"sku": "S-2", "title": "ok"}, "job-2")
    assert catalog.issues[derived_id("job-1", 0, "failure")]["resolved"] is False
    assert set(catalog.identifiers) == {"S-1"}


def retry_one(catalog: MemoryCatalog, item: dict[str, Any], retried: tuple[str, int], job_id: str = "job-retry") -> dict[str, Any]:
    """Apply one item of a retry job as its chunk worker does: then supersede its old failure."""
    view = new_view(catalog, "BULK_IMPORT", job_id, now=LATER)
    res = apply_plain_item(view, 0, item)
    engine.supersede_failure(view, derived_id(*retried, "failure"))
    commit(catalog, view)
    return res


def test_a_retry_resolves_a_failure_that_had_no_identifier(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"title": ""}, "job-1")
    assert failure_issue(catalog, "job-1", 0)["identifier"] is None
    assert retry_one(catalog, {"title": "Has one"}, ("job-1", 0))["result"] == "created"
    issue = failure_issue(catalog, "job-1", 0)
    assert (issue["resolved"], issue["updated_at"], issue["created_at"]) == (True, LATER, NOW)
    assert_consistent(catalog)


def test_a_retry_that_corrects_the_identifier_resolves_the_failure_and_unindexes_it(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"sku": "S-1", "title": ""}, "job-1")
    assert retry_one(catalog, {"sku": "S-2", "title": "Fixed"}, ("job-1", 0))["result"] == "created"
    assert failure_issue(catalog, "job-1", 0)["resolved"] is True
    assert catalog.identifiers == {}
    assert_consistent(catalog)


def test_a_retry_that_fails_again_replaces_the_failure_with_its_own(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"sku": "S-1", "title": ""}, "job-1")
    assert retry_one(catalog, {"sku": "S-1", "title": 5}, ("job-1", 0))["result"] == "failed"
    assert failure_issue(catalog, "job-1", 0)["resolved"] is True
    assert failure_issue(catalog, "job-retry", 0)["resolved"] is False
    assert catalog.identifiers == {"S-1": {"identifier": "S-1", "open": {derived_id("job-retry", 0, "failure"): True}}}
    assert_consistent(catalog)


def test_a_retry_writes_no_issue_where_there_was_none(catalog: MemoryCatalog) -> None:
    """ErrorMode Fail reports items it only left uncommitted as failed, without an issue."""
    retry_one(catalog, {"sku": "S-1", "title": "Fine"}, ("job-1", 0))
    assert derived_id("job-1", 0, "failure") not in catalog.issues


def test_an_unchanged_reapply_still_resolves_the_failure(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    run_one(catalog, "BULK_UPDATE", {"id": pid, "brand": 5}, "job-bad")
    assert failure_issue(catalog, "job-bad", 0)["identifier"] == pid
    res = run_one(catalog, "BULK_UPDATE", {"id": pid, "brand": GOOD["brand"]}, "job-ok")
    assert res["result"] == "updated"
    assert failure_issue(catalog, "job-bad", 0)["resolved"] is True
    assert events_for(catalog, "job-ok") == []


def test_an_update_by_sku_resolves_failures_recorded_under_the_product_id(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    run_one(catalog, "BULK_UPDATE", {"id": pid, "brand": ["x"]}, "job-bad")
    run_one(catalog, "BULK_UPDATE", {"sku": GOOD["sku"], "brand": "Other"}, "job-ok")
    assert failure_issue(catalog, "job-bad", 0)["resolved"] is True
    assert catalog.identifiers == {}


def pile(catalog: MemoryCatalog, identifier: str, jobs: list[str]) -> None:
    """Open failure issues under one identifier, one per job, as a store written before a newer
    failure superseded the older ones held them."""
    for job_id in jobs:
        issue_id = derived_id(job_id, 0, "failure")
        doc = {"id": issue_id, "org_id": ORG, "tenant_id": TENANT, "resolved": False, "created_at": NOW, "updated_at": NOW}
        catalog.issues[issue_id] = {**doc, "product_id": None, "issue_type": engine.IMPORT_REJECTED, "severity": "ERROR", "message": "old"}
        catalog.issues[issue_id] |= {"key": engine.IMPORT_REJECTED, "job_id": job_id, "item_index": 0, "identifier": identifier}
        catalog.identifiers.setdefault(identifier, {"identifier": identifier, "open": {}})["open"][issue_id] = True


def test_several_failures_under_one_identifier_resolve_together(catalog: MemoryCatalog) -> None:
    pile(catalog, "S", ["night-1", "night-2"])
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": "ok"}, "job-2")
    assert catalog.open_issues(issue_type=engine.IMPORT_REJECTED) == []
    assert catalog.identifiers == {}


def open_failures(catalog: MemoryCatalog) -> list[tuple[str, int, str | None]]:
    return sorted((d["job_id"], d["item_index"], d["identifier"]) for d in catalog.open_issues() if d.get("job_id"))


def test_a_newer_failure_of_an_identifier_supersedes_the_older(catalog: MemoryCatalog) -> None:
    """A nightly feed failing on one product: one open issue, the latest, not one a night."""
    for night, now in enumerate((NOW, LATER, MUCH_LATER)):
        assert run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, f"night-{night}", now=now)["result"] == "failed"
        assert open_failures(catalog) == [(f"night-{night}", 0, "S")]
        assert_consistent(catalog)
    first, second = failure_issue(catalog, "night-0", 0), failure_issue(catalog, "night-1", 0)
    assert (first["resolved"], first["created_at"], first["updated_at"]) == (True, NOW, LATER)
    assert (second["resolved"], second["created_at"], second["updated_at"]) == (True, LATER, MUCH_LATER)
    assert catalog.identifiers == {"S": {"identifier": "S", "open": {derived_id("night-2", 0, "failure"): True}}}


def test_a_newer_failure_supersedes_whatever_the_older_failed_of(catalog: MemoryCatalog) -> None:
    assert run_one(catalog, "BULK_UPDATE", {"sku": "S", "brand": "B"}, "job-1")["result"] == "failed"
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.PRODUCT_NOT_FOUND
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, "job-2")
    assert open_failures(catalog) == [("job-2", 0, "S")]
    assert_consistent(catalog)


def test_a_later_failing_item_of_the_same_job_supersedes_the_earlier(catalog: MemoryCatalog) -> None:
    """As a later succeeding item would resolve it: the payload's later item wins."""
    results = run_job(catalog, "BULK_IMPORT", [{"sku": "S", "title": ""}, {"sku": "T", "title": ""}, {"sku": "S", "colour": 1}], "job-1")
    assert [r["result"] for r in results] == ["failed"] * 3  # the job's results still report every item
    assert open_failures(catalog) == [("job-1", 1, "T"), ("job-1", 2, "S")]
    assert failure_issue(catalog, "job-1", 0)["resolved"] is True
    assert_consistent(catalog)


def test_a_newer_failure_supersedes_a_pile_left_from_before(catalog: MemoryCatalog) -> None:
    pile(catalog, "S", ["night-1", "night-2", "night-3"])
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, "night-4", now=LATER)
    assert open_failures(catalog) == [("night-4", 0, "S")]
    assert all(failure_issue(catalog, f"night-{n}", 0)["updated_at"] == LATER for n in (1, 2, 3))
    assert_consistent(catalog)


def test_failures_without_an_identifier_or_under_another_supersede_nothing(catalog: MemoryCatalog) -> None:
    """No identifier, no identity: nothing says two such items are one (a retry resolves them)."""
    run_one(catalog, "BULK_IMPORT", {"sku": "S-1", "title": ""}, "job-1")
    run_one(catalog, "BULK_IMPORT", {"title": ""}, "job-2")
    run_one(catalog, "BULK_IMPORT", {"title": ""}, "job-3")
    run_one(catalog, "BULK_IMPORT", {"sku": "S-2", "title": ""}, "job-4")
    assert open_failures(catalog) == [("job-1", 0, "S-1"), ("job-2", 0, None), ("job-3", 0, None), ("job-4", 0, "S-2")]
    assert_consistent(catalog)


def test_running_a_failed_item_again_keeps_its_own_issue_open(catalog: MemoryCatalog) -> None:
    """A step run again after a commit whose answer was lost finds its own issue stored (the same id)."""
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, "job-1")
    before = catalog.snapshot()
    view = new_view(catalog, "BULK_IMPORT", "job-1")
    assert apply_plain_item(view, 0, {"sku": "S", "title": ""})["result"] == "failed"
    assert view.superseded == {}
    commit(catalog, view)
    assert catalog.snapshot() == before


def test_a_failure_supersedes_nothing_in_a_view_that_is_dropped(catalog: MemoryCatalog) -> None:
    """whatIf: the view is not committed, so the older failure stays open."""
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, "job-1")
    before = catalog.snapshot()
    view = new_view(catalog, "BULK_IMPORT", "job-2")
    apply_plain_item(view, 0, {"sku": "S", "title": ""})
    assert view.superseded == {derived_id("job-1", 0, "failure"): derived_id("job-2", 0, "failure")}
    assert catalog.snapshot() == before


def test_a_failure_after_a_success_in_the_same_view_is_all_that_stays_open(catalog: MemoryCatalog) -> None:
    run_one(catalog, "BULK_IMPORT", {"sku": "S", "title": ""}, "job-1")
    results = run_job(catalog, "BULK_IMPORT", [{"sku": "S", "title": "ok"}, {"sku": "S", "colour": 1}], "job-2")
    assert [r["result"] for r in results] == ["created", "failed"]
    assert open_failures(catalog) == [("job-2", 1, "S")]
    assert_consistent(catalog)


# -- no-ops, audit events and issue updates ---------------------------------------------------------


def test_reapplying_an_unchanged_product_writes_nothing(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "T", "sku": "S", "variants": [{"sku": "V", "attributes": {"a": 1}}]})
    before = catalog.snapshot()
    view = new_view(catalog, "BULK_IMPORT", "job-2", now=LATER)
    res = apply_plain_item(view, 0, {"title": "T", "sku": "S", "variants": [{"sku": "V", "attributes": {"a": 1}}]})
    assert res == {"index": 0, "identifier": "S", "product_id": pid, "result": "updated", "errors": []}
    assert view.write_count() == 0
    commit(catalog, view)
    assert catalog.snapshot() == before
    assert len(catalog.open_issues(product_id=pid)) == 2  # MISSING_DESCRIPTION, LOW_QUALITY_SCORE: not reopened


def test_an_update_to_the_same_values_writes_nothing(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    view = new_view(catalog, "BULK_UPDATE", "job-2")
    assert apply_plain_item(view, 0, {"id": pid, **{k: v for k, v in GOOD.items() if k != "sku"}})["result"] == "updated"
    assert view.write_count() == 0


@pytest.mark.parametrize(
    ("job_type", "item", "action"),
    [
        ("BULK_IMPORT", {"title": "New", "sku": "NEW"}, "product.created"),
        ("BULK_IMPORT", {"title": "Changed", "sku": "MWS-RED-S"}, "product.updated"),
        ("BULK_UPDATE", {"sku": "MWS-RED-S", "brand": "Other"}, "product.updated"),
        ("BULK_DELETE", "PID", "product.deleted"),
    ],
)
def test_every_change_writes_exactly_one_audit_event(catalog: MemoryCatalog, job_type: str, item: Any, action: str) -> None:
    pid = create(catalog, GOOD)
    if item == "PID":
        item = pid
    res = run_job(catalog, job_type, [item], "job-a", first_index=3, now=LATER)[0]
    [event] = events_for(catalog, "job-a")
    assert event["id"] == derived_id("job-a", 3, "audit", 0)
    assert event["action"] == action
    assert event["actor_email"] == ACTOR
    assert event["entity_type"] == "product"
    assert event["entity_id"] == res["product_id"]
    assert event["details"]["job_id"] == "job-a"
    assert event["details"]["item_index"] == 3
    assert (event["org_id"], event["tenant_id"], event["ip_address"]) == (ORG, TENANT, "203.0.113.42")
    assert event["created_at"] == LATER


def test_failed_items_write_no_audit_event(catalog: MemoryCatalog) -> None:
    run_job(catalog, "BULK_IMPORT", [{"sku": "S"}, "x", {"title": "T", "bad": 1}])
    assert catalog.audits == {}


def test_audit_details_of_a_create(catalog: MemoryCatalog) -> None:
    create(catalog, {"title": "T", "sku": "S", "attributes": {}}, "job-c")
    [event] = events_for(catalog, "job-c")
    assert event["details"]["fields"] == ["sku", "title"]
    assert event["details"]["issues"] == ["opened MISSING_DESCRIPTION", "opened LOW_QUALITY_SCORE"]


def test_audit_details_of_an_update(catalog: MemoryCatalog) -> None:
    pid = create(catalog, GOOD)
    long_title = "L" * 300
    run_one(catalog, "BULK_UPDATE", {"id": pid, "title": long_title, "description": None, "attributes": {"a": 2}}, "job-u")
    [event] = events_for(catalog, "job-u")
    assert event["details"]["changes"] == {
        "attributes": {"old": "(changed)", "new": "(changed)"},
        "description": {"old": GOOD["description"], "new": None},
        "title": {"old": GOOD["title"], "new": "L" * 200 + "…"},
    }
    assert event["details"]["issues"] == ["opened MISSING_DESCRIPTION"]


def test_variant_changes_write_variant_events(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {**GOOD, "variants": [{"sku": "V-1"}, {"sku": "V-2"}]})
    run_one(catalog, "BULK_UPDATE", {"id": pid, "variants": [{"sku": "V-1", "gtin": "96385074"}, {"sku": "V-3"}]}, "job-v")
    events = sorted((e["action"], e["details"]["sku"]) for e in events_for(catalog, "job-v") if e["entity_type"] == "variant")
    assert events == [("variant.created", "V-3"), ("variant.deleted", "V-2"), ("variant.updated", "V-1")]
    assert len({e["id"] for e in events_for(catalog, "job-v")}) == 4
    variant_ids = [v["id"] for v in catalog.products[pid]["variants"]]
    assert variant_ids == [derived_id(pid, "variant", "V-1"), derived_id(pid, "variant", "V-3")]


def test_a_product_created_or_deleted_with_variants_audits_each_variant(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {**GOOD, "variants": [{"sku": "V-1"}, {"sku": "V-2"}]}, "job-c")
    run_one(catalog, "BULK_DELETE", pid, "job-d")
    for job_id, verb in (("job-c", "created"), ("job-d", "deleted")):
        events = sorted((e["action"], e["entity_type"], e["entity_id"]) for e in events_for(catalog, job_id))
        variants = [(f"variant.{verb}", "variant", derived_id(pid, "variant", sku)) for sku in ("V-1", "V-2")]
        assert events == sorted([(f"product.{verb}", "product", pid), *variants])


def test_a_changed_issue_message_is_merged_into_the_same_issue(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "T"})
    [low] = catalog.open_issues(product_id=pid, issue_type="LOW_QUALITY_SCORE")
    assert low["message"].startswith("Data quality score is 20/100")
    run_one(catalog, "BULK_UPDATE", {"id": pid, "brand": "B"}, "job-2", now=LATER)
    stored = catalog.issues[low["id"]]
    assert stored["message"].startswith("Data quality score is 35/100")
    assert stored["resolved"] is False
    assert (stored["created_at"], stored["updated_at"]) == (NOW, LATER)
    assert {k: v for k, v in stored.items() if k not in ("message", "updated_at")} == {
        k: v for k, v in low.items() if k not in ("message", "updated_at")
    }
    assert len(catalog.open_issues(product_id=pid, issue_type="LOW_QUALITY_SCORE")) == 1
    assert catalog.products[pid]["open_issues"]["LOW_QUALITY_SCORE"]["message"] == stored["message"]
    assert_consistent(catalog)


def test_fixing_a_product_resolves_its_issues(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "T", "gtin": "123"})
    assert issue_keys(catalog, pid) == {"MISSING_DESCRIPTION", "INVALID_BARCODE", "LOW_QUALITY_SCORE"}
    assert catalog.products[pid]["issue_counts"] == {"ERROR": 1, "WARNING": 2}
    run_one(catalog, "BULK_UPDATE", {"id": pid, **{k: v for k, v in GOOD.items() if k != "title"}}, "job-2")
    assert issue_keys(catalog, pid) == set()
    assert catalog.products[pid]["issue_counts"] == {"ERROR": 0, "WARNING": 0}
    [event] = events_for(catalog, "job-2")
    assert sorted(event["details"]["issues"]) == [
        "resolved INVALID_BARCODE",
        "resolved LOW_QUALITY_SCORE",
        "resolved MISSING_DESCRIPTION",
    ]


def test_the_quality_threshold_comes_from_the_context(catalog: MemoryCatalog) -> None:
    strict = run_one(catalog, "BULK_IMPORT", {**GOOD, "sku": "A", "gtin": None}, "j1", quality_threshold=95)
    lenient = run_one(catalog, "BULK_IMPORT", {**GOOD, "sku": "B", "gtin": None}, "j2", quality_threshold=90)
    assert issue_keys(catalog, strict["product_id"]) == {"LOW_QUALITY_SCORE"}
    assert issue_keys(catalog, lenient["product_id"]) == set()


# -- deterministic ids and lost commits -------------------------------------------------------------

CHUNK = [
    {"title": "A", "sku": "A-1"},
    {"title": "B", "sku": "B-1", "variants": [{"sku": "A-1"}, {"gtin": "bad"}]},
    {"sku": "C-1"},
    {"title": "A again", "sku": "A-1", "description": "now described " * 4},
    "not an object",
    {"title": "C", "sku": "C-1"},
]


def recorded(view: CatalogView) -> dict[str, Any]:
    return {
        "products": {p: view.products[p] for p in view.dirty_products},
        "skus": {s: view.skus[s] for s in view.dirty_skus},
        "identifiers": {i: view.identifiers[i] for i in view.dirty_identifiers},
        "issues": view.issue_writes,
        "audits": view.audits,
    }


def seeded() -> MemoryCatalog:
    catalog = MemoryCatalog()
    create(catalog, {**GOOD, "sku": "C-1"}, "seed")
    run_one(catalog, "BULK_IMPORT", {"sku": "A-1"}, "seed-fail")
    return catalog


def test_running_the_same_items_in_fresh_views_makes_the_same_documents() -> None:
    catalog = seeded()
    state = catalog.snapshot()
    first = new_view(catalog, "BULK_IMPORT", "job-x")
    results_1 = [apply_plain_item(first, i, raw) for i, raw in enumerate(CHUNK)]
    # The commit is lost; a redelivery runs the chunk again against the same committed state.
    assert catalog.snapshot() == state
    second = new_view(catalog, "BULK_IMPORT", "job-x")
    results_2 = [apply_plain_item(second, i, raw) for i, raw in enumerate(CHUNK)]
    assert results_1 == results_2
    assert recorded(first) == recorded(second)
    assert first.write_count() > 0
    commit(catalog, second)
    assert_consistent(catalog)


def test_rerunning_a_committed_item_changes_nothing(catalog: MemoryCatalog) -> None:
    item = {"title": "T", "sku": "S"}
    first = run_one(catalog, "BULK_IMPORT", item, "job-r")
    state = catalog.snapshot()
    again = run_one(catalog, "BULK_IMPORT", item, "job-r")
    assert again["product_id"] == first["product_id"]
    assert again["result"] == "updated"
    assert catalog.snapshot() == state


def test_rerunning_a_committed_item_without_sku_reuses_its_id(catalog: MemoryCatalog) -> None:
    first = run_one(catalog, "BULK_IMPORT", {"title": "T"}, "job-r")
    again = run_one(catalog, "BULK_IMPORT", {"title": "T"}, "job-r")
    assert again["product_id"] == first["product_id"]
    assert len(catalog.products) == 1


def test_results_match_the_public_item_result_model(catalog: MemoryCatalog) -> None:
    for res in run_job(catalog, "BULK_IMPORT", CHUNK):
        assert (
            ItemResult.model_validate(res).model_dump(exclude={"retry_of_index", "item"}) == res
        )  # added as results are read (a retry's; include=item)


# -- plain_needs and prefetching ---------------------------------------------------------------------


def test_plain_needs_for_imports() -> None:
    items = [
        {"title": "T", "sku": "A", "gtin": "4006381333931", "variants": [{"sku": "V"}, "junk", {"sku": 5}]},
        {"title": "U", "gtin": 5},
        "junk",
        {"sku": ""},
    ]
    assert plain_needs("BULK_IMPORT", items) == (set(), {"A", "V"}, {"A"}, {"gtin\n4006381333931"})


def test_plain_needs_for_updates() -> None:
    items = [{"id": "p-1", "sku": "A"}, {"sku": "B"}, {"id": "../bad"}]
    assert plain_needs("BULK_UPDATE", items) == ({"p-1"}, {"A", "B"}, {"p-1", "B", "../bad"}, set())


def test_plain_needs_for_deletes() -> None:
    assert plain_needs("BULK_DELETE", ["p-1", "../bad", "", 5]) == ({"p-1"}, set(), {"p-1", "../bad"}, set())


def test_prefetch_loads_in_batches(catalog: MemoryCatalog) -> None:
    ids = [create(catalog, {"title": f"T{i}", "sku": f"S{i}"}, f"seed-{i}") for i in range(3)]
    view = new_view(catalog, "BULK_DELETE", "job-d")
    plain_prefetch(view, "BULK_DELETE", ids)
    assert isinstance(view.loader, MemoryLoader)
    assert [name for name, _ in view.loader.calls] == ["products", "skus", "identifiers", "open_issues"]
    assert {*view.loader.calls[1][1]} == {"S0", "S1", "S2"}  # the products' SKUs come along
    assert view.loader.calls[3][1] == tuple(sorted(ids))  # one lookup for the batch, not one per delete
    view.loader.calls.clear()
    for i, pid in enumerate(ids):
        assert apply_plain_item(view, i, pid)["result"] == "deleted"
    assert view.loader.calls == []


def test_a_batch_of_deletes_naming_no_product_queries_no_issues(catalog: MemoryCatalog) -> None:
    """An issue query is the dearest read of a delete (the emulator scans for it): ids of products
    that do not exist fail product_not_found without one."""
    pid = create(catalog, {"title": "T", "sku": "S-1"})
    view = new_view(catalog, "BULK_DELETE", "job-d")

    plain_prefetch(view, "BULK_DELETE", ["gone-1", pid, "gone-2"])

    assert isinstance(view.loader, MemoryLoader)
    assert [call for call in view.loader.calls if call[0] == "open_issues"] == [("open_issues", (pid,))]
    view.loader.calls.clear()
    assert [apply_plain_item(view, i, raw)["result"] for i, raw in enumerate(["gone-1", pid, "gone-2"])] == ["failed", "deleted", "failed"]
    assert view.loader.calls == []


def test_a_delete_resolves_the_failure_issues_pointing_at_its_product(catalog: MemoryCatalog) -> None:
    pid = create(catalog, {"title": "T", "sku": "S-1"})
    failed = run_one(catalog, "BULK_UPDATE", {"id": pid, "title": ""}, "job-bad")
    assert failed["result"] == "failed"
    [failure] = [i for i in catalog.open_issues(pid) if i.get("job_id") == "job-bad"]
    view = new_view(catalog, "BULK_DELETE", "job-d")
    plain_prefetch(view, "BULK_DELETE", [pid])
    assert apply_plain_item(view, 0, pid)["result"] == "deleted"
    commit(catalog, view)
    assert catalog.issues[failure["id"]]["resolved"] is True
    assert catalog.open_issues(pid) == []
    assert_consistent(catalog)


GTIN_OPTIONS = ImportOptions(Vocabulary.from_doc({"id": "v", "default_locale": "en-US", "attributes": [{"name": "GTIN", "maps_to": "gtin"}]}), "GTIN")
UNKNOWN_VALUE = [{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}]


class IssueQueryBefore(MemoryLoader):
    """A loader whose issue query ran before `catalog` took its last failures: the Firestore query
    runs outside the step's transaction (`FirestoreLoader.open_issues`); every other read is current."""

    def __init__(self, catalog: MemoryCatalog, before: MemoryCatalog) -> None:
        super().__init__(catalog)
        self.before = before

    def open_issues(self, product_ids: Any) -> dict[str, list[dict[str, Any]]]:
        return MemoryLoader(self.before).open_issues(product_ids)


MPN_OPTIONS = ImportOptions(
    Vocabulary.from_doc(
        {"id": "v", "default_locale": "en-US", "attributes": [{"name": "MPN", "identifier": True}, {"name": "Product Name", "maps_to": "title"}]}
    ),
    "MPN",
)


@pytest.mark.parametrize("name", ["sku", "gtin", "id", "identifier attribute"])
def test_a_delete_resolves_a_failure_its_issue_query_missed_through_the_products_names(catalog: MemoryCatalog, name: str) -> None:
    """Another job's item failed on the product (named by its SKU, its GTIN, its id, or the value of
    an identifier attribute of the vocabulary) after the delete's issue query ran: the failure is
    found in the identifier entry of that name, which the delete reads in its transaction, and goes
    with the product."""
    if name == "identifier attribute":
        title = [{"Name": "Product Name", "ValuesByLocale": {"en-US": "T"}}]
        [made] = run_syndigo(catalog, [{"ImportMode": "Create", "ProductIdentifierValue": "MPN-1", "Values": title}], MPN_OPTIONS, "seed")
        assert made["result"] == "created", made
        pid = made["product_id"]
    else:
        pid = create(catalog, {"title": "T", "sku": "S-1", "gtin": "4006381333931"})
    before = copy.deepcopy(catalog)
    value = {"sku": "S-1", "gtin": "4006381333931", "id": pid, "identifier attribute": "MPN-1"}[name]
    if name in ("sku", "id"):
        failed = run_one(catalog, "BULK_UPDATE", {name: value, "title": None}, "job-bad")
    else:
        entry = {"ImportMode": "Update", "ProductIdentifierValue": value, "Values": UNKNOWN_VALUE}
        [failed] = run_syndigo(catalog, [entry], GTIN_OPTIONS if name == "gtin" else MPN_OPTIONS, "job-bad")
    assert (failed["result"], failed["product_id"], failed["identifier"]) == ("failed", pid, value)
    view = CatalogView(IssueQueryBefore(catalog, before), make_context("BULK_DELETE", "job-d"))
    plain_prefetch(view, "BULK_DELETE", [pid])
    view.loader.calls.clear()  # type: ignore[attr-defined]
    assert apply_plain_item(view, 0, pid)["result"] == "deleted"
    assert view.loader.calls == []  # type: ignore[attr-defined]  # the entries and the issues they list came with the batch
    commit(catalog, view)
    assert catalog.open_issues(pid) == [] and value not in catalog.identifiers
    assert_consistent(catalog)


def apply_prefetched(catalog: MemoryCatalog, job_type: str, job_id: str, items: list[Any], expected: str) -> CatalogView:
    """Prefetch a batch, then apply it: no item may read anything more."""
    view = new_view(catalog, job_type, job_id)
    view.prefetch(*plain_needs(job_type, items))
    assert isinstance(view.loader, MemoryLoader)
    view.loader.calls.clear()
    for i, item in enumerate(items):
        assert apply_plain_item(view, i, item)["result"] == expected
    assert view.loader.calls == []
    return view


def test_prefetch_covers_every_read_of_an_import_and_an_update(catalog: MemoryCatalog) -> None:
    """A batch's reads happen in its prefetch, none per item: SKUs, identifiers, GTIN value index
    entries of the items and of the products they change."""
    items = [{"title": f"T{i}", "sku": f"S{i}", "gtin": f"40063813339{i:02d}"} for i in range(5)]
    commit(catalog, apply_prefetched(catalog, "BULK_IMPORT", "job-i", items, "created"))
    ids = [catalog.skus[f"S{i}"]["holders"].copy().popitem()[0] for i in range(5)]
    updates = [{"id": pid, "gtin": f"50063813339{i:02d}"} for i, pid in enumerate(ids)]
    apply_prefetched(catalog, "BULK_UPDATE", "job-u", updates, "updated")


# -- the sample payloads ------------------------------------------------------------------------------


def test_sample_import_payload(catalog: MemoryCatalog) -> None:
    items = json.loads((DATA / "bulk_import.json").read_text())["payload"]
    results = run_job(catalog, "BULK_IMPORT", items)
    assert [r["result"] for r in results] == ["created"] * len(items)
    assert_consistent(catalog)
    updates = json.loads((DATA / "bulk_update.json").read_text())["payload"]
    results = run_job(catalog, "BULK_UPDATE", updates, "job-2")
    assert [r["result"] for r in results] == ["updated", "updated", "failed"]
    assert results[2]["errors"][0]["code"] == "product_not_found"
    assert_consistent(catalog)


# -- a result's size ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    errors=st.lists(
        st.builds(
            lambda code, field, message: {"code": code, "field": field, "message": message},
            st.sampled_from(["unknown_field", "invalid_value", "unknown_attribute"]),
            st.none() | st.text(max_size=3_000),
            st.text(min_size=1, max_size=3_000),
        ),
        min_size=1,
        max_size=300,
    ),
    identifier=st.none() | st.text(max_size=5_000),
)
def test_a_result_stays_small_whatever_its_item_sent(errors: list[dict[str, Any]], identifier: str | None) -> None:
    """A chunk's results share one 1 MiB document among up to 250 items."""
    out = engine.result(7, identifier, None, "failed", errors)
    assert len(json.dumps(out, ensure_ascii=False).encode()) < 3_000
    kept = out["errors"]
    assert kept[0]["code"] == errors[0]["code"] and kept[0]["message"] == engine._clip(errors[0]["message"], 300)
    if kept[-1]["code"] == "more_errors":
        assert kept[-1]["message"] == f"… and {len(errors) - (len(kept) - 1)} more errors in this item."
    else:
        assert [e["message"] for e in kept] == [engine._clip(e["message"], 300) for e in errors]
