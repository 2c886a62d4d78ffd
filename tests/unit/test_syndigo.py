"""ProductImportData (the vendor's import payload) applied by the pure engine over an in-memory catalog.

Vocabulary look-ups, identifier resolution, ImportMode, Values/ValuesByLocale/Recipient/Delete/
IsExplicitNullValue, MultiValues, typed attributes, AssetValues and their SourceUrl de-duplication, TaxonomyNodes,
ImmediateParentDetails, LifeCycle, the value index, verbose changes and failure issues.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from common.domain import engine, rules
from common.domain.engine import CatalogView, ItemFailure, derived_id, value_key
from common.domain.syndigo import (
    GENERAL,
    Attribute,
    Identifier,
    ImportOptions,
    Vocabulary,
    apply_named_before,
    apply_syndigo_item,
    resolve_identifier,
    syndigo_needs,
    value_changes,
    value_keys,
)
from common.models.product import ProductPublic
from common.models.syndigo import ImportRequest, VocabularyIn
from common.store.catalog import ALL, FAILURES, NOTHING, run_step
from tests.unit.fakes import (
    NOW,
    ORG,
    TENANT,
    MemoryCatalog,
    MemoryLoader,
    assert_consistent,
    assert_value_index,
    commit,
    commit_failures,
    make_context,
    new_view,
    run_one,
    run_syndigo,
)

DATA = Path(__file__).resolve().parents[1] / "data"

VOCAB_DOC: dict[str, Any] = {
    "id": "vocab-1",
    "default_locale": "en-US",
    "attributes": [
        {"name": "Product Name", "maps_to": "title"},
        {"name": "Short Description", "maps_to": "description"},
        {"name": "MFG Brand Name", "maps_to": "brand"},
        {"name": "Category", "maps_to": "category"},
        {"name": "GTIN", "maps_to": "gtin"},
        {"name": "Item Number", "maps_to": "sku"},
        {"name": "UPC"},
        {"name": "MFG Part", "identifier": True},
        {"name": "MFG Name"},
        {"name": "Feature - Benefit Bullet 1"},
        {"name": "Feature - Benefit Bullet 2"},
        {"name": "Feature - Benefit Bullet 3"},
        {"name": "Packaging Level"},
        {"name": "Net Weight", "type": "number"},
        {"name": "Organic", "type": "boolean"},
        {"name": "Launch Date", "type": "date"},
        {"name": "Allergens", "multi_value": True},
        {"name": "Claims", "multi_value": True},
        {"name": "Pack Sizes", "type": "number", "multi_value": True},
        {"name": "Country Of Origin", "locale_aware": False},
        {"name": "Main Product Image", "type": "asset"},
        {"name": "Gallery", "type": "asset", "id": "attr-gallery"},
    ],
}
VOCAB = Vocabulary.from_doc(VOCAB_DOC)
OPTIONS = ImportOptions(VOCAB, "GTIN")
INCLUDE_MISSING = ImportOptions(VOCAB, "GTIN", include_missing=True)
VERBOSE = ImportOptions(VOCAB, "GTIN", verbose=True)
BY_PART = ImportOptions(VOCAB, "MFG Part")
BY_SKU = ImportOptions(VOCAB, "SKU")
BY_ID = ImportOptions(VOCAB, "Id")


def gtin(n: int) -> str:
    """A valid GTIN-14 (GS1 check digit) for the number n."""
    data = f"{n:013d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    return data + str((10 - total % 10) % 10)


G1, G2, G3 = gtin(1), gtin(2), gtin(3)
LATER = NOW + timedelta(hours=1)


def val(name: str, by_locale: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "ValuesByLocale": by_locale or {},
        "SourceParty": "",
        "Recipient": "",
        "Delete": False,
        "IsExplicitNullValue": False,
        **extra,
    }


def asset(name: str, by_locale: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"Name": name, "ValuesByLocale": by_locale, "Delete": False, "IsExplicitNullValue": False, **extra}


def image(url: str, **extra: Any) -> dict[str, Any]:
    return {"Name": url.rsplit("/", 1)[-1], "Url": url, "Format": "jpeg", **extra}


def item(identifier: str, *values: dict[str, Any], mode: str = "CreateOrUpdate", **fields: Any) -> dict[str, Any]:
    return {"ImportMode": mode, "ProductIdentifierValue": identifier, "Values": list(values), **fields}


def one(catalog: MemoryCatalog, raw: Any, options: ImportOptions = OPTIONS, job_id: str = "job-1", **kwargs: Any) -> dict[str, Any]:
    return run_syndigo(catalog, [raw], options, job_id, **kwargs)[0]


def create(catalog: MemoryCatalog, raw: dict[str, Any], options: ImportOptions = OPTIONS, job_id: str = "seed") -> str:
    res = one(catalog, raw, options, job_id)
    assert res["result"] == "created", res
    return str(res["product_id"])


def failure_issue(catalog: MemoryCatalog, job_id: str, index: int) -> dict[str, Any]:
    return catalog.issues[derived_id(job_id, index, "failure")]


def codes(res: dict[str, Any]) -> list[str]:
    return [e["code"] for e in res["errors"]]


def consistent(catalog: MemoryCatalog) -> None:
    assert_consistent(catalog)
    assert_value_index(catalog)


def test_gtin_helper_makes_valid_barcodes() -> None:
    assert {rules.gtin_problem(g) for g in (G1, G2, G3, gtin(4006381333931))} == {None}


# -- vocabulary ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["Product Name", "product name", "PRODUCT NAME", "pRoDuCt NaMe"])
def test_vocabulary_finds_an_attribute_by_alias_case_insensitively(alias: str) -> None:
    attr = VOCAB.find(alias)
    assert attr is not None
    assert (attr.name, attr.maps_to) == ("Product Name", "title")


def test_vocabulary_alias_lookup_uses_unicode_casefolding() -> None:
    vocab = Vocabulary.from_doc({"id": "v", "attributes": [{"name": "Straße"}]})
    assert vocab.find("STRASSE") is vocab.find("straße") is not None


def test_vocabulary_finds_an_attribute_by_derived_id() -> None:
    attr = VOCAB.find("MFG Part")
    assert attr is not None
    assert attr.id == derived_id("vocab-1", "attribute", "mfg part")
    assert VOCAB.find(attr.id) is attr
    assert VOCAB.find(attr.id.upper()) is attr


def test_vocabulary_keeps_an_explicit_attribute_id() -> None:
    attr = VOCAB.find("attr-gallery")
    assert attr is not None and attr.name == "Gallery" and attr.type == "asset"
    assert VOCAB.find("ATTR-GALLERY") is attr is VOCAB.find("gallery")


def test_vocabulary_defaults() -> None:
    vocab = Vocabulary.from_doc({"id": "v", "default_locale": None, "attributes": [{"name": "Plain"}, {"name": "Code", "maps_to": "sku"}]})
    assert vocab.default_locale == "en-US"
    assert Vocabulary.from_doc({"id": "v"}).default_locale == "en-US"
    assert Vocabulary.from_doc({"id": "v", "default_locale": "de-DE"}).default_locale == "de-DE"
    plain = vocab.find("plain")
    assert plain == Attribute(name="Plain", id=derived_id("v", "attribute", "plain"))
    assert (plain.type, plain.multi_value, plain.locale_aware, plain.identifier) == ("text", False, True, False)
    # Attributes mapped to sku or gtin always identify a product.
    assert vocab.find("code").identifier is True  # type: ignore[union-attr]
    assert VOCAB.find("GTIN").identifier is True  # type: ignore[union-attr]
    assert VOCAB.find("UPC").identifier is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ({"name": "Tags", "multi_value": True, "maps_to": "category"}, "a multi_value attribute cannot map to 'category'"),
        ({"name": "Logo", "type": "asset", "maps_to": "brand"}, "an asset attribute cannot map to 'brand'"),
    ],
)
def test_a_core_field_takes_one_text_value_only(attribute: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VocabularyIn.model_validate({"name": "v", "attributes": [attribute]})
    VocabularyIn.model_validate({"name": "v", "attributes": [{k: v for k, v in attribute.items() if k != "maps_to"}]})


def test_one_attribute_per_core_field() -> None:
    twice = [{"name": "Brand", "maps_to": "brand"}, {"name": "MFG Brand Name", "maps_to": "brand"}]
    with pytest.raises(ValidationError, match="only one attribute may map to 'brand'"):
        VocabularyIn.model_validate({"name": "v", "attributes": twice})


def test_a_stored_list_or_asset_mapped_to_a_core_field_is_kept_unmapped(catalog: MemoryCatalog) -> None:
    """Vocabularies stored before the API refused these: the core field is left alone, the value kept."""
    vocab = Vocabulary.from_doc(
        {
            "id": "old",
            "attributes": [
                {"name": "GTIN", "maps_to": "gtin"},
                {"name": "Tags", "multi_value": True, "maps_to": "category"},
                {"name": "Codes", "multi_value": True, "maps_to": "sku"},
                {"name": "Logo", "type": "asset", "maps_to": "brand"},
            ],
        }
    )
    tags, codes = vocab.find("Tags"), vocab.find("Codes")
    assert tags is not None and (tags.maps_to, tags.multi_value) == (None, True)
    assert codes is not None and (codes.maps_to, codes.identifier) == (None, False)
    options = ImportOptions(vocab, "GTIN")
    res = one(catalog, item(G1, val("Tags", {"en-US": ["organic", "vegan"]})), options)
    assert (res["result"], res["errors"]) == ("created", [])
    product = catalog.products[res["product_id"]]
    assert product.get("category") is None
    assert stored(catalog, res["product_id"], "Tags")["by_locale"] == {"en-US": ["organic", "vegan"]}


@pytest.mark.parametrize("name", ["Colour", "", "product", "Product Name "])
def test_vocabulary_does_not_find_what_it_does_not_hold(name: str) -> None:
    assert VOCAB.find(name) is None


# -- identifier resolution --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "attribute"),
    [
        ("GTIN", "value", "gtin"),
        ("gtin", "value", "gtin"),
        ("Item Number", "sku", "sku"),
        ("item number", "sku", "sku"),
        ("MFG Part", "value", "MFG Part"),
        ("MFG PART", "value", "MFG Part"),
        ("SKU", "sku", "sku"),
        ("sku", "sku", "sku"),
        ("Id", "id", "id"),
        ("ID", "id", "id"),
        ("Product Id", "id", "id"),
        ("ProductId", "id", "id"),
    ],
)
def test_resolve_identifier(name: str, kind: str, attribute: str) -> None:
    assert resolve_identifier(OPTIONS, name) == Identifier(kind, attribute, name)


def test_resolve_identifier_by_attribute_id() -> None:
    attr_id = VOCAB.find("MFG Part").id  # type: ignore[union-attr]
    assert resolve_identifier(OPTIONS, attr_id) == Identifier("value", "MFG Part", attr_id)


def test_core_identifier_names_work_without_a_vocabulary_entry() -> None:
    empty = ImportOptions(Vocabulary.from_doc({"id": "v"}), "GTIN")
    assert resolve_identifier(empty, "GTIN") == Identifier("value", "gtin", "GTIN")
    assert resolve_identifier(empty, "Sku") == Identifier("sku", "sku", "Sku")
    assert resolve_identifier(empty, "Id") == Identifier("id", "id", "Id")


@pytest.mark.parametrize(("name", "code"), [("UPC", "not_an_identifier"), ("Net Weight", "not_an_identifier"), ("Colour", "unknown_attribute")])
def test_unusable_identifier_properties(name: str, code: str) -> None:
    with pytest.raises(ItemFailure) as caught:
        resolve_identifier(OPTIONS, name)
    assert caught.value.issue_type == engine.IMPORT_REJECTED
    [error] = caught.value.errors
    assert (error.code, error.field) == (code, "ProductIdentifierProperty")
    assert name in error.message


def test_a_vocabulary_attribute_shadows_a_core_name() -> None:
    vocab = Vocabulary.from_doc({"id": "v", "attributes": [{"name": "SKU"}]})
    with pytest.raises(ItemFailure) as caught:
        resolve_identifier(ImportOptions(vocab, "SKU"), "SKU")
    assert caught.value.errors[0].code == "not_an_identifier"


def test_a_non_identifier_property_fails_the_item(catalog: MemoryCatalog) -> None:
    res = one(catalog, item("11122233345"), ImportOptions(VOCAB, "UPC"))
    assert (res["result"], codes(res)) == ("failed", ["not_an_identifier"])
    res = one(catalog, item("x", ProductIdentifierPropertyOverride="Colour"), job_id="job-2")
    assert (res["result"], codes(res)) == ("failed", ["unknown_attribute"])
    assert catalog.products == {}
    consistent(catalog)


def test_syndigo_needs_and_value_keys() -> None:
    items: list[Any] = [
        item(G1),
        item("S-1", ProductIdentifierPropertyOverride="SKU"),
        item("S-2", ProductIdentifierPropertyOverride="Item Number"),
        item("pid-1", ProductIdentifierPropertyOverride="Id"),
        item("P-1", ProductIdentifierPropertyOverride="MFG Part"),
        item("U-1", ProductIdentifierPropertyOverride="UPC"),
        item("C-1", ProductIdentifierPropertyOverride="Colour"),
        {"ImportMode": "Create"},
        {"ProductIdentifierValue": ""},
        "not an object",
        None,
    ]
    ids, skus, idents = syndigo_needs(items, OPTIONS)
    assert ids == {"pid-1"}
    assert skus == {"S-1", "S-2"}
    assert idents == {G1, "S-1", "S-2", "pid-1", "P-1", "U-1", "C-1"}
    assert value_keys(items, OPTIONS) == {value_key("gtin", G1), value_key("MFG Part", "P-1")}


@pytest.mark.parametrize("unsafe", ["a/b", "..", "__name__"])
def test_syndigo_needs_prefetches_only_safe_product_ids(unsafe: str) -> None:
    ids, _, idents = syndigo_needs([item(unsafe)], BY_ID)
    assert unsafe in idents
    assert ids == set()


# -- ImportMode -------------------------------------------------------------------------------


def test_create_makes_a_product_with_a_derived_id(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Bread"}), mode="Create"))
    pid = derived_id("job-1", 0, "product")
    assert res == {"index": 0, "identifier": G1, "product_id": pid, "result": "created", "errors": []}
    product = catalog.products[pid]
    assert (product["title"], product["gtin"], product["version"], product["vocabulary_id"]) == ("Bread", G1, 1, "vocab-1")
    assert product["values"]["Product Name"] == {GENERAL: {"by_locale": {"en-US": "Bread"}, "explicit_null": False, "source_party": ""}}
    assert (product["org_id"], product["tenant_id"]) == (ORG, TENANT)
    [event] = catalog.audits.values()
    assert (event["action"], event["entity_id"], event["details"]["source"]) == ("product.created", pid, "ProductImportData")
    consistent(catalog)


def test_create_of_an_existing_identifier_conflicts(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"})))
    before = copy.deepcopy(catalog.products[pid])
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Other"}), mode="Create"))
    assert (res["result"], res["product_id"]) == ("failed", pid)
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("identifier_conflict", "ProductIdentifierValue")
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.IDENTIFIER_CONFLICT
    assert catalog.products == {pid: before}
    consistent(catalog)


def test_update_of_a_missing_product_fails(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Bread"}), mode="Update"))
    assert (res["result"], res["product_id"], codes(res)) == ("failed", None, ["product_not_found"])
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.PRODUCT_NOT_FOUND
    assert catalog.products == {}
    consistent(catalog)


def test_update_changes_an_existing_product(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"}), val("UPC", {"en-US": "1"})))
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Rye Bread"}), mode="Update"))
    assert res == {"index": 0, "identifier": G1, "product_id": pid, "result": "updated", "errors": []}
    product = catalog.products[pid]
    assert (product["title"], product["version"]) == ("Rye Bread", 2)
    assert product["values"]["UPC"][GENERAL]["by_locale"] == {"en-US": "1"}  # what the item leaves out stays
    consistent(catalog)


def test_create_or_update_creates_then_updates_the_same_product(catalog: MemoryCatalog) -> None:
    first = one(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    second = one(catalog, item(G1, val("Product Name", {"en-US": "B"})), job_id="job-2")
    assert (first["result"], second["result"]) == ("created", "updated")
    assert first["product_id"] == second["product_id"]
    assert [p["title"] for p in catalog.products.values()] == ["B"]
    consistent(catalog)


def test_create_or_update_twice_in_one_view_finds_the_first(catalog: MemoryCatalog) -> None:
    results = run_syndigo(catalog, [item(G1, val("Product Name", {"en-US": "A"})), item(G1, val("UPC", {"en-US": "9"}))], OPTIONS)
    assert [r["result"] for r in results] == ["created", "updated"]
    assert results[0]["product_id"] == results[1]["product_id"]
    [product] = catalog.products.values()
    assert (product["title"], product["values"]["UPC"][GENERAL]["by_locale"]) == ("A", {"en-US": "9"})
    consistent(catalog)


def test_an_unchanged_import_writes_nothing(catalog: MemoryCatalog) -> None:
    raw = item(G1, val("Product Name", {"en-US": "A"}), val("Short Description", {"en-US": "d" * 50}))
    pid = create(catalog, raw)
    before = copy.deepcopy(catalog.products[pid])
    audits = len(catalog.audits)
    assert one(catalog, raw, job_id="job-2")["result"] == "updated"
    assert catalog.products[pid] == before
    assert len(catalog.audits) == audits


def test_export_only_cannot_import(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "A"}), mode="ExportOnly"))
    assert (res["result"], res["product_id"]) == ("failed", None)
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("export_only", "ImportMode")
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.IMPORT_REJECTED
    assert catalog.products == {}
    consistent(catalog)


def test_export_only_leaves_an_existing_product_alone(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    before = copy.deepcopy(catalog.products[pid])
    res = one(catalog, item(G1, val("Product Name", {"en-US": "B"}), mode="ExportOnly"))
    assert codes(res) == ["export_only"]
    assert catalog.products[pid] == before


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        ({"ImportMode": "Upsert", "ProductIdentifierValue": "X"}, "invalid_value", "ImportMode"),
        ({"ProductIdentifierValue": "X"}, "missing_field", "ImportMode"),
        ({"ImportMode": "Create"}, "missing_field", "ProductIdentifierValue"),
        ({"ImportMode": "Create", "ProductIdentifierValue": 12345}, "invalid_value", "ProductIdentifierValue"),
        ({"ImportMode": "Create", "ProductIdentifierValue": "X", "Colour": "red"}, "unknown_field", "Colour"),
        ({"ImportMode": "Create", "ProductIdentifierValue": "X", "Archived": "yes"}, "invalid_value", "Archived"),
        # A target market is a three-digit code, in ASCII digits (Arabic-Indic ٨٤٠ is not 840).
        (
            {"ImportMode": "Create", "ProductIdentifierValue": "X", "CatalogItems": [{"Party": "P", "TargetMarket": "\u0668\u0664\u0660"}]},
            "invalid_value",
            "CatalogItems.0.TargetMarket",
        ),
        (
            {"ImportMode": "Create", "ProductIdentifierValue": "X", "CatalogItems": [{"Party": "P", "TargetMarket": "84"}]},
            "invalid_value",
            "CatalogItems.0.TargetMarket",
        ),
    ],
)
def test_malformed_entries_fail_with_the_field_named(catalog: MemoryCatalog, raw: dict[str, Any], code: str, field: str) -> None:
    res = one(catalog, raw)
    assert res["result"] == "failed"
    assert (res["errors"][0]["code"], res["errors"][0]["field"]) == (code, field)
    assert catalog.products == {}
    consistent(catalog)


@pytest.mark.parametrize("raw", ["a string", 5, None, True, [], [item("X")]])
def test_non_object_entries_fail(catalog: MemoryCatalog, raw: Any) -> None:
    res = one(catalog, raw)
    assert (res["result"], res["identifier"], codes(res)) == ("failed", None, ["invalid_item"])
    assert failure_issue(catalog, "job-1", 0)["identifier"] is None
    assert catalog.identifiers == {}
    consistent(catalog)


# -- other identifiers ------------------------------------------------------------------------


def test_sku_identifier_sets_the_sku_and_finds_the_product_again(catalog: MemoryCatalog) -> None:
    first = one(catalog, item("BREAD-1", val("Product Name", {"en-US": "A"})), BY_SKU)
    pid = first["product_id"]
    assert catalog.products[pid]["sku"] == "BREAD-1"
    assert catalog.skus["BREAD-1"]["holders"] == {pid: {"p": 1, "v": 0}}
    again = one(catalog, item("BREAD-1", val("Product Name", {"en-US": "B"}), mode="Update"), BY_SKU, "job-2")
    assert (again["result"], again["product_id"]) == ("updated", pid)
    # An attribute mapped to sku names the product the same way.
    by_alias = one(catalog, item("BREAD-1", mode="Update", ProductIdentifierPropertyOverride="Item Number"), OPTIONS, "job-3")
    assert (by_alias["result"], by_alias["product_id"]) == ("updated", pid)
    consistent(catalog)


def test_id_identifier_updates_by_product_id(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    res = one(catalog, item(pid, val("Product Name", {"en-US": "B"})), BY_ID, "job-2")
    assert (res["result"], res["product_id"]) == ("updated", pid)
    assert catalog.products[pid]["title"] == "B"
    consistent(catalog)


@pytest.mark.parametrize("value", [derived_id("nowhere"), "a/b", "..", "__name__"])
def test_id_identifier_never_creates(catalog: MemoryCatalog, value: str) -> None:
    res = one(catalog, item(value, val("Product Name", {"en-US": "A"})), BY_ID)
    assert (res["result"], codes(res)) == ("failed", ["product_not_found"])
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.PRODUCT_NOT_FOUND
    assert catalog.products == {}


def test_override_applies_to_one_product_only(catalog: MemoryCatalog) -> None:
    results = run_syndigo(
        catalog,
        [item(G1, val("Product Name", {"en-US": "A"})), item("S-1", val("Product Name", {"en-US": "B"}), ProductIdentifierPropertyOverride="SKU")],
        OPTIONS,
    )
    assert [r["result"] for r in results] == ["created", "created"]
    assert catalog.products[results[0]["product_id"]]["gtin"] == G1
    assert catalog.products[results[1]["product_id"]]["sku"] == "S-1"
    assert catalog.products[results[1]["product_id"]].get("gtin") is None
    consistent(catalog)


def test_two_holders_of_a_gtin_make_it_ambiguous(catalog: MemoryCatalog) -> None:
    a = create(catalog, item("S-A", val("GTIN", {"en-US": G1})), BY_SKU, "seed-a")
    b = create(catalog, item("S-B", val("GTIN", {"en-US": G1})), BY_SKU, "seed-b")
    assert catalog.values[value_key("gtin", G1)]["holders"] == {a: True, b: True}
    res = one(catalog, item(G1, val("Product Name", {"en-US": "X"})))
    assert (res["result"], res["product_id"]) == ("failed", None)
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("ambiguous_identifier", "ProductIdentifierValue")
    assert "names 2 products" in error["message"]
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.AMBIGUOUS_IDENTIFIER
    assert {catalog.products[p].get("title") for p in (a, b)} == {None}
    consistent(catalog)


def test_two_holders_of_an_identifier_attribute_make_it_ambiguous(catalog: MemoryCatalog) -> None:
    create(catalog, item("S-A", val("MFG Part", {"en-US": "P-9"})), BY_SKU, "seed-a")
    create(catalog, item("S-B", val("MFG Part", {"en-US": "P-9"})), BY_SKU, "seed-b")
    res = one(catalog, item("P-9", mode="Update"), BY_PART)
    assert codes(res) == ["ambiguous_identifier"]
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.AMBIGUOUS_IDENTIFIER
    consistent(catalog)


def test_two_holders_of_a_sku_make_it_ambiguous(catalog: MemoryCatalog) -> None:
    create(catalog, item("S", val("Product Name", {"en-US": "A"})), BY_SKU, "seed-a")
    b = create(catalog, item("T", val("Product Name", {"en-US": "B"})), BY_SKU, "seed-b")
    # The sku-mapped attribute moves B's SKU onto A's.
    assert one(catalog, item("T", val("Item Number", {"en-US": "S"}), mode="Update"), BY_SKU, "job-0")["product_id"] == b
    assert catalog.products[b]["sku"] == "S"
    res = one(catalog, item("S", mode="Update"), BY_SKU)
    assert codes(res) == ["ambiguous_identifier"]
    assert failure_issue(catalog, "job-1", 0)["issue_type"] == engine.AMBIGUOUS_IDENTIFIER
    consistent(catalog)


# -- values ---------------------------------------------------------------------------------------


def stored(catalog: MemoryCatalog, pid: str, attribute: str, scope: str = GENERAL) -> dict[str, Any]:
    return catalog.products[pid]["values"][attribute][scope]


def test_values_by_locale_merge_across_imports(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread", "pl-PL": "Chleb"})))
    one(catalog, item(G1, val("Product Name", {"de-DE": "Brot"}), mode="Update"), job_id="job-2")
    assert stored(catalog, pid, "Product Name")["by_locale"] == {"en-US": "Bread", "pl-PL": "Chleb", "de-DE": "Brot"}
    one(catalog, item(G1, val("Product Name", {"en-US": "Rye Bread"}), mode="Update"), job_id="job-3")
    assert stored(catalog, pid, "Product Name")["by_locale"] == {"en-US": "Rye Bread", "pl-PL": "Chleb", "de-DE": "Brot"}
    assert catalog.products[pid]["title"] == "Rye Bread"
    consistent(catalog)


def test_values_for_one_attribute_merge_within_one_item(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1"}), val("UPC", {"de-DE": "2"})))
    assert stored(catalog, pid, "UPC")["by_locale"] == {"en-US": "1", "de-DE": "2"}


def test_a_recipient_value_sits_beside_the_general_one(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog,
        item(
            G1, val("UPC", {"en-US": "11122233345"}), val("UPC", {"en-US": "11111111111"}, Recipient="Amazon US"), val("Product Name", {"en-US": "A"})
        ),
    )
    upc = catalog.products[pid]["values"]["UPC"]
    assert upc == {
        GENERAL: {"by_locale": {"en-US": "11122233345"}, "explicit_null": False, "source_party": ""},
        "Amazon US": {"by_locale": {"en-US": "11111111111"}, "explicit_null": False, "source_party": ""},
    }
    # A recipient's value never fills a core field: only the general value does.
    one(catalog, item(G1, val("Product Name", {"en-US": "Amazon title"}, Recipient="Amazon US"), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["title"] == "A"
    assert stored(catalog, pid, "Product Name", "Amazon US")["by_locale"] == {"en-US": "Amazon title"}


def test_a_null_recipient_is_the_general_value(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1"}, Recipient=None, SourceParty=None)))
    assert catalog.products[pid]["values"]["UPC"] == {GENERAL: {"by_locale": {"en-US": "1"}, "explicit_null": False, "source_party": ""}}


def test_source_party_is_kept_until_another_is_given(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1"}, SourceParty="Marketplace")))
    assert stored(catalog, pid, "UPC")["source_party"] == "Marketplace"
    one(catalog, item(G1, val("UPC", {"de-DE": "2"}), mode="Update"), job_id="job-2")
    assert stored(catalog, pid, "UPC")["source_party"] == "Marketplace"
    one(catalog, item(G1, val("UPC", {"de-DE": "3"}, SourceParty="Retailer"), mode="Update"), job_id="job-3")
    assert stored(catalog, pid, "UPC")["source_party"] == "Retailer"


def test_delete_of_one_locale_keeps_the_others(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread", "de-DE": "Brot"}), val("UPC", {"en-US": "1"})))
    # Together with another change (the e2e test's shape).
    res = one(catalog, item(G1, val("Product Name", {"de-DE": ""}, Delete=True), val("UPC", {"en-US": "2"}), mode="Update"), job_id="job-2")
    assert res["result"] == "updated"
    assert stored(catalog, pid, "Product Name")["by_locale"] == {"en-US": "Bread"}
    assert catalog.products[pid]["title"] == "Bread"
    consistent(catalog)


def test_delete_of_one_locale_alone_is_committed(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1", "de-DE": "2"})))
    res = one(catalog, item(G1, val("UPC", {"de-DE": None}, Delete=True), mode="Update"), VERBOSE, "job-2")
    assert res["result"] == "updated"
    assert res["changes"] == [{"attribute": "UPC", "recipient": None, "locale": "de-DE", "old": "2", "new": None}]
    assert stored(catalog, pid, "UPC")["by_locale"] == {"en-US": "1"}


def test_a_failed_items_locale_delete_does_not_leak_into_the_next_item(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1", "de-DE": "2"}), val("Product Name", {"en-US": "A"})))
    failing = item(G1, val("UPC", {"de-DE": None}, Delete=True), mode="Update", TaxonomyNodes=["no-such-node"])
    results = run_syndigo(catalog, [failing, item(G1, val("Product Name", {"en-US": "B"}), mode="Update")], OPTIONS, "job-2")
    assert [r["result"] for r in results] == ["failed", "updated"]
    assert catalog.products[pid]["title"] == "B"
    assert stored(catalog, pid, "UPC")["by_locale"] == {"en-US": "1", "de-DE": "2"}


def test_delete_of_every_locale_removes_the_attribute(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1"}), val("Product Name", {"en-US": "A"})))
    one(catalog, item(G1, val("UPC", {"en-US": None}, Delete=True), val("Product Name", {"en-US": "B"}), mode="Update"), job_id="job-2")
    assert "UPC" not in catalog.products[pid]["values"]
    consistent(catalog)


def test_delete_without_locales_removes_that_scope_only(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("UPC", {"en-US": "1", "de-DE": "2"}), val("UPC", {"en-US": "3"}, Recipient="Amazon US")))
    one(catalog, item(G1, val("UPC", Delete=True), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["values"]["UPC"] == {"Amazon US": {"by_locale": {"en-US": "3"}, "explicit_null": False, "source_party": ""}}
    one(catalog, item(G1, val("UPC", Delete=True, Recipient="Amazon US"), mode="Update"), job_id="job-3")
    assert "UPC" not in catalog.products[pid]["values"]
    consistent(catalog)


def test_delete_of_an_absent_value_is_a_no_op(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    res = one(catalog, item(G1, val("UPC", Delete=True), val("MFG Name", {"en-US": "x"}, Delete=True), mode="Update"), job_id="job-2")
    assert (res["result"], res["errors"]) == ("updated", [])
    assert set(catalog.products[pid]["values"]) == {"Product Name"}


def test_delete_does_not_type_check_the_values_it_names(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Net Weight", {"en-US": 5, "de-DE": 6}), val("Product Name", {"en-US": "A"})))
    res = one(
        catalog, item(G1, val("Net Weight", {"de-DE": "whatever"}, Delete=True), val("Product Name", {"en-US": "B"}), mode="Update"), job_id="job-2"
    )
    assert res["result"] == "updated"
    assert stored(catalog, pid, "Net Weight")["by_locale"] == {"en-US": 5}


def test_explicit_null_is_distinct_from_absent(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("MFG Name", {"en-US": "Acme"}), val("UPC", {"en-US": "1"}), val("Product Name", {"en-US": "Bread"})))
    one(catalog, item(G1, val("MFG Name", {"en-US": "ignored"}, IsExplicitNullValue=True), mode="Update"), job_id="job-2")
    values = catalog.products[pid]["values"]
    assert values["MFG Name"] == {GENERAL: {"by_locale": {}, "explicit_null": True, "source_party": ""}}
    assert values["UPC"][GENERAL]["by_locale"] == {"en-US": "1"}  # absent from the item: untouched
    assert "Packaging Level" not in values  # never given: absent, not null
    # A later value replaces the explicit null.
    one(catalog, item(G1, val("MFG Name", {"de-DE": "Acme GmbH"}), mode="Update"), job_id="job-3")
    assert stored(catalog, pid, "MFG Name") == {"by_locale": {"de-DE": "Acme GmbH"}, "explicit_null": False, "source_party": ""}
    # Delete removes an explicit null as well.
    one(catalog, item(G1, val("MFG Name", IsExplicitNullValue=True), mode="Update"), job_id="job-4")
    one(catalog, item(G1, val("MFG Name", Delete=True), mode="Update"), job_id="job-5")
    assert "MFG Name" not in catalog.products[pid]["values"]
    consistent(catalog)


@pytest.mark.parametrize(
    ("array", "name", "empty"),
    [
        ("Values", "MFG Name", None),
        ("Values", "Net Weight", ""),
        ("Values", "Organic", None),
        ("Values", "Launch Date", ""),
        ("MultiValues", "Allergens", ""),
        ("MultiValues", "Pack Sizes", None),
    ],
)
def test_an_explicit_null_is_not_type_checked(catalog: MemoryCatalog, array: str, name: str, empty: Any) -> None:
    """IsExplicitNullValue "indicates if value is intended to be published as empty": the empty text
    or null a feed sends with it is not a value of the attribute's type, and is not kept either."""
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"})))
    res = one(catalog, item(G1, mode="Update", **{array: [val(name, {"en-US": empty}, IsExplicitNullValue=True)]}), job_id="job-2")
    assert (res["result"], res["errors"]) == ("updated", [])
    assert stored(catalog, pid, name) == {"by_locale": {}, "explicit_null": True, "source_party": ""}


def test_explicit_null_on_a_mapped_attribute_clears_the_core_field(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"}), val("MFG Brand Name", {"en-US": "Grainy"})))
    one(catalog, item(G1, val("UPC", {"en-US": "1"}), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["brand"] == "Grainy"  # absent: kept
    one(catalog, item(G1, val("MFG Brand Name", IsExplicitNullValue=True), mode="Update"), job_id="job-3")
    assert catalog.products[pid]["brand"] is None
    assert catalog.products[pid]["title"] == "Bread"
    consistent(catalog)


# -- MultiValues ----------------------------------------------------------------------------------


def test_multi_values_are_stored_per_attribute_like_values(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, MultiValues=[val("Allergens", {"en-US": ["milk", "soy"], "de-DE": ["Milch"]}, SourceParty="Marketplace")]))
    assert stored(catalog, pid, "Allergens") == {
        "by_locale": {"en-US": ["milk", "soy"], "de-DE": ["Milch"]},
        "explicit_null": False,
        "source_party": "Marketplace",
    }
    # Not a second, opaque copy beside `values`: the read model and the export show them in `values` only.
    assert "multi_values" not in catalog.products[pid]
    public = ProductPublic.model_validate(catalog.products[pid]).dump()
    assert public["values"]["Allergens"][GENERAL]["by_locale"]["en-US"] == ["milk", "soy"] and public["multi_values"] == []
    consistent(catalog)


def test_multi_values_merge_across_updates_and_keep_other_attributes(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog, item(G1, val("Product Name", {"en-US": "Bread"}), MultiValues=[val("Allergens", {"en-US": ["milk", "soy"], "de-DE": ["Milch"]})])
    )
    # An update that gives only Claims keeps Allergens (and the single values).
    res = one(catalog, item(G1, mode="Update", MultiValues=[val("Claims", {"en-US": ["vegan"]})]), job_id="job-2")
    assert res["result"] == "updated", res
    assert stored(catalog, pid, "Allergens")["by_locale"] == {"en-US": ["milk", "soy"], "de-DE": ["Milch"]}
    assert stored(catalog, pid, "Claims")["by_locale"] == {"en-US": ["vegan"]}
    assert catalog.products[pid]["title"] == "Bread"
    # A locale sent again gets the list sent (whole); the attribute's other locales stay.
    one(catalog, item(G1, mode="Update", MultiValues=[val("Allergens", {"en-US": ["gluten"], "pl-PL": ["mleko"]})]), job_id="job-3")
    assert stored(catalog, pid, "Allergens")["by_locale"] == {"en-US": ["gluten"], "de-DE": ["Milch"], "pl-PL": ["mleko"]}
    consistent(catalog)


def test_multi_values_delete_of_one_locale_keeps_the_others(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, MultiValues=[val("Allergens", {"en-US": ["milk"], "de-DE": ["Milch"]}), val("Claims", {"en-US": ["vegan"]})]))
    res = one(catalog, item(G1, mode="Update", MultiValues=[val("Allergens", {"de-DE": None}, Delete=True)]), VERBOSE, "job-2")
    assert res["result"] == "updated", res
    assert res["changes"] == [{"attribute": "Allergens", "recipient": None, "locale": "de-DE", "old": ["Milch"], "new": None}]
    assert stored(catalog, pid, "Allergens")["by_locale"] == {"en-US": ["milk"]}
    # Delete without locales removes the attribute; explicit null is kept apart from absent.
    one(catalog, item(G1, mode="Update", MultiValues=[val("Allergens", Delete=True), val("Claims", IsExplicitNullValue=True)]), job_id="job-3")
    assert "Allergens" not in catalog.products[pid]["values"]
    assert stored(catalog, pid, "Claims") == {"by_locale": {}, "explicit_null": True, "source_party": ""}
    consistent(catalog)


def test_multi_values_for_a_recipient_sit_beside_the_general_ones(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog, item(G1, MultiValues=[val("Allergens", {"en-US": ["milk"]}), val("Allergens", {"en-US": ["milk", "nuts"]}, Recipient="Amazon US")])
    )
    assert stored(catalog, pid, "Allergens")["by_locale"] == {"en-US": ["milk"]}
    assert stored(catalog, pid, "Allergens", "Amazon US")["by_locale"] == {"en-US": ["milk", "nuts"]}


def test_a_multi_value_attribute_in_values_and_in_multi_values_is_one_attribute(catalog: MemoryCatalog) -> None:
    # Values still takes a multi_value attribute with a list (as before); MultiValues then adds to it.
    pid = create(catalog, item(G1, val("Allergens", {"en-US": ["milk"]})))
    one(catalog, item(G1, mode="Update", MultiValues=[val("Allergens", {"de-DE": ["Milch", "Soja"]})]), job_id="job-2")
    assert catalog.products[pid]["values"]["Allergens"] == {
        GENERAL: {"by_locale": {"en-US": ["milk"], "de-DE": ["Milch", "Soja"]}, "explicit_null": False, "source_party": ""}
    }


def test_an_unknown_attribute_in_multi_values_fails_unless_missing_attributes_are_included(catalog: MemoryCatalog) -> None:
    raw = item(G1, MultiValues=[val("Allergens", {"en-US": ["milk", "soy"]}), val("Colours", {"en-US": ["red", "blue"]})])
    res = one(catalog, raw)
    assert (res["result"], [(e["code"], e["field"]) for e in res["errors"]]) == ("failed", [("unknown_attribute", "MultiValues[1]")])
    assert "Colours" in res["errors"][0]["message"]
    assert catalog.products == {}
    res = one(catalog, raw, INCLUDE_MISSING, "job-2")
    assert res["result"] == "created", res
    assert stored(catalog, res["product_id"], "Colours")["by_locale"] == {"en-US": ["red", "blue"]}
    # Kept under the name sent, it still holds a list per locale.
    scalar = one(catalog, item(G1, mode="Update", MultiValues=[val("Sizes", {"en-US": "L"})]), INCLUDE_MISSING, "job-3")
    assert (codes(scalar), scalar["errors"][0]["field"]) == (["invalid_value"], "MultiValues[0]")
    consistent(catalog)


@pytest.mark.parametrize("locale", ["xx_bad", "english", "en-US-"])
def test_multi_values_need_locale_keys(catalog: MemoryCatalog, locale: str) -> None:
    res = one(catalog, item(G1, MultiValues=[val("Allergens", {locale: ["milk"]})]))
    assert (res["result"], [(e["code"], e["field"]) for e in res["errors"]]) == ("failed", [("invalid_locale", "MultiValues[0]")])
    assert catalog.products == {}


@pytest.mark.parametrize(("name", "code"), [("UPC", "not_multi_value"), ("Net Weight", "not_multi_value"), ("Gallery", "wrong_attribute_type")])
def test_an_attribute_that_is_not_multi_valued_is_refused_in_multi_values(catalog: MemoryCatalog, name: str, code: str) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "A"}), MultiValues=[val(name, {"en-US": ["1", "2"]})]))
    assert (res["result"], [(e["code"], e["field"]) for e in res["errors"]]) == ("failed", [(code, "MultiValues[0]")])
    assert catalog.products == {}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [("Allergens", "milk", "holds several values"), ("Allergens", {"a": "milk"}, "holds several values"), ("Pack Sizes", [6, "many"], "is a number")],
)
def test_multi_values_need_a_list_of_fitting_values_per_locale(catalog: MemoryCatalog, name: str, value: Any, says: str) -> None:
    res = one(catalog, item(G1, MultiValues=[val(name, {"en-US": value})]))
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("invalid_value", "MultiValues[0]") and says in error["message"]
    assert catalog.products == {}


def test_multi_values_entries_must_have_the_values_shape(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, MultiValues=[{"Name": "Allergens", "ValuesByLocale": {"en-US": ["milk"]}, "Colour": "red"}]))
    assert (codes(res), res["errors"][0]["field"]) == (["unknown_field"], "MultiValues.0.Colour")
    assert codes(one(catalog, item(G1, MultiValues=["milk"]), job_id="job-2")) == ["invalid_value"]
    assert catalog.products == {}


def test_a_legacy_multi_values_blob_is_kept_as_it_was_and_still_reads(catalog: MemoryCatalog) -> None:
    """Products imported before MultiValues were applied hold them as sent, in `multi_values`."""
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"})))
    legacy = [{"Name": "Allergens", "ValuesByLocale": {"en-US": ["milk"]}}, {"Name": "No Such Attribute", "ValuesByLocale": {"xx_bad": 5}}]
    catalog.products[pid]["multi_values"] = copy.deepcopy(legacy)
    res = one(catalog, item(G1, mode="Update", MultiValues=[val("Claims", {"en-US": ["vegan"]})]), job_id="job-2")
    assert res["result"] == "updated", res
    assert catalog.products[pid]["multi_values"] == legacy
    assert stored(catalog, pid, "Claims")["by_locale"] == {"en-US": ["vegan"]}
    public = ProductPublic.model_validate(catalog.products[pid]).dump()
    assert public["multi_values"] == legacy and public["values"]["Claims"][GENERAL]["by_locale"] == {"en-US": ["vegan"]}


# -- core fields ------------------------------------------------------------------------------


def test_core_fields_come_from_the_default_locale(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog,
        item(
            G1,
            val("Product Name", {"de-DE": "Brot", "en-US": "Bread"}),
            val("Short Description", {"en-US": "Whole grain bread, baked daily."}),
            val("MFG Brand Name", {"en-US": "Grainy"}),
            val("Category", {"en-US": "Bakery"}),
            val("Item Number", {"en-US": "BR-1", "de-DE": "BR-DE"}),
        ),
    )
    product = catalog.products[pid]
    assert {k: product[k] for k in ("title", "description", "brand", "category", "sku", "gtin")} == {
        "title": "Bread",
        "description": "Whole grain bread, baked daily.",
        "brand": "Grainy",
        "category": "Bakery",
        "sku": "BR-1",
        "gtin": G1,
    }
    assert catalog.skus["BR-1"]["holders"] == {pid: {"p": 1, "v": 0}}
    consistent(catalog)


def test_core_fields_follow_a_de_de_default_locale(catalog: MemoryCatalog) -> None:
    german = ImportOptions(Vocabulary.from_doc({**VOCAB_DOC, "default_locale": "de-DE"}), "GTIN")
    pid = create(catalog, item(G1, val("Product Name", {"de-DE": "Brot", "en-US": "Bread"}), val("MFG Brand Name", {"en-US": "Grainy"})), german)
    product = catalog.products[pid]
    assert (product["title"], product["brand"]) == ("Brot", None)


def test_a_value_only_in_another_locale_leaves_the_core_field_empty(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"fr-FR": "Pain"})))
    assert catalog.products[pid]["title"] is None
    assert stored(catalog, pid, "Product Name")["by_locale"] == {"fr-FR": "Pain"}


def test_gtin_from_values_and_from_the_identifier(catalog: MemoryCatalog) -> None:
    from_id = create(catalog, item(G1, val("Product Name", {"en-US": "A"})), job_id="seed-a")
    assert catalog.products[from_id]["gtin"] == G1
    from_values = create(catalog, item("S-2", val("GTIN", {"en-US": G2, "de-DE": G3})), BY_SKU, "seed-b")
    assert catalog.products[from_values]["gtin"] == G2
    assert value_key("gtin", G2) in catalog.values and value_key("gtin", G3) not in catalog.values
    consistent(catalog)


def test_a_mapped_identifier_sent_only_in_another_locale_keeps_the_core_field(catalog: MemoryCatalog) -> None:
    """The GTIN came from ProductIdentifierValue; a pl-PL GTIN must not empty it (the product would
    no longer be found by it, and the next CreateOrUpdate would create a second one)."""
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "Bread"})))
    one(catalog, item(G1, val("GTIN", {"pl-PL": G2}), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["gtin"] == G1
    assert one(catalog, item(G1, val("Product Name", {"en-US": "Loaf"})), job_id="job-3")["product_id"] == pid
    assert len(catalog.products) == 1
    consistent(catalog)


def test_deleting_a_mapped_value_clears_its_core_field(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog,
        item(
            G1, val("Product Name", {"en-US": "Bread"}), val("Short Description", {"en-US": "Tasty bread"}), val("MFG Brand Name", {"en-US": "Acme"})
        ),
    )
    one(
        catalog, item(G1, val("Short Description", {}, Delete=True), val("MFG Brand Name", {"en-US": ""}, Delete=True), mode="Update"), job_id="job-2"
    )
    product = catalog.products[pid]
    assert (product["description"], product["brand"], product["title"]) == (None, None, "Bread")
    assert "MISSING_DESCRIPTION" in {i["key"] for i in catalog.open_issues(product_id=pid)}
    consistent(catalog)


def test_non_text_values_fill_core_fields_as_text(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Category", {"en-US": 42}), val("Product Name", {"en-US": 1.5})))
    assert (catalog.products[pid]["category"], catalog.products[pid]["title"]) == ("42", "1.5")


# -- typed attributes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Net Weight", 12.5),
        ("Net Weight", 3),
        ("Net Weight", "12.5"),
        ("Net Weight", "-1e3"),
        ("Organic", True),
        ("Organic", False),
        ("Organic", "true"),
        ("Organic", "false"),
        ("Launch Date", "2025-03-01"),
        ("Launch Date", "2025-03-01T10:00:00Z"),
        ("Launch Date", "2025-03-01T10:00:00+02:00"),
        ("Allergens", ["milk", "soy"]),
        ("Allergens", []),
        ("Pack Sizes", [6, "12", 24.5]),
        ("UPC", "text"),
        ("UPC", 5),
        ("UPC", True),
        ("Country Of Origin", "DE"),
    ],
)
def test_typed_values_that_fit(catalog: MemoryCatalog, name: str, value: Any) -> None:
    res = one(catalog, item(G1, val(name, {"en-US": value})))
    assert res["result"] == "created", res
    assert stored(catalog, res["product_id"], name)["by_locale"] == {"en-US": value}


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("Net Weight", "heavy", "is a number"),
        ("Net Weight", True, "is a number"),
        ("Net Weight", None, "is a number"),
        ("Net Weight", [1], "is a number"),
        ("Organic", "yes", "is true or false"),
        ("Organic", 1, "is true or false"),
        ("Organic", "True", "is true or false"),
        ("Launch Date", "2025-02-30", "is a date"),
        ("Launch Date", "01/03/2025", "is a date"),
        ("Launch Date", "2025-03-01Tnoon", "is a date"),
        ("Launch Date", 20250301, "is a date"),
        ("Allergens", "milk", "holds several values"),
        ("Allergens", [{"name": "milk"}], "is text"),
        ("Pack Sizes", [6, "many"], "is a number"),
        ("UPC", {"a": 1}, "is text"),
        ("UPC", ["a"], "is text"),
        ("UPC", None, "is text"),
    ],
)
def test_typed_values_that_do_not_fit(catalog: MemoryCatalog, name: str, value: Any, says: str) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "ok"}), val(name, {"en-US": value})))
    assert (res["result"], res["product_id"]) == ("failed", None)
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("invalid_value", "Values[1]")
    assert says in error["message"] and "en-US" in error["message"]
    assert catalog.products == {}
    consistent(catalog)


def test_an_attribute_that_is_not_locale_aware_takes_one_value(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Country Of Origin", {"en-US": "DE", "de-DE": "DE"})))
    assert (res["result"], codes(res)) == ("failed", ["not_locale_aware"])
    assert res["errors"][0]["field"] == "Values[0]"


@pytest.mark.parametrize(
    ("locale", "code"),
    [
        ("english", "invalid_locale"),
        ("en_US", "invalid_locale"),
        ("e", "invalid_locale"),
        ("en-", "invalid_locale"),
        ("en-US-", "invalid_locale"),
        ("", "invalid_value"),
    ],
)
def test_values_need_locale_keys(catalog: MemoryCatalog, locale: str, code: str) -> None:
    res = one(catalog, item(G1, val("UPC", {locale: "1"})))
    assert codes(res) == [code]
    assert catalog.products == {}


@pytest.mark.parametrize("locale", ["en", "de-DE", "zh-Hans-CN", "es-419", "EN-us"])
def test_locale_forms_accepted(catalog: MemoryCatalog, locale: str) -> None:
    assert one(catalog, item(G1, val("UPC", {locale: "1"})))["result"] == "created"


def test_an_unknown_attribute_fails_unless_missing_attributes_are_included(catalog: MemoryCatalog) -> None:
    raw = item(G1, val("Product Name", {"en-US": "A"}), val("Colour", {"en-US": "Red"}))
    res = one(catalog, raw)
    assert res["result"] == "failed"
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("unknown_attribute", "Values[1]")
    assert "Colour" in error["message"]
    assert catalog.products == {}
    res = one(catalog, raw, INCLUDE_MISSING, "job-2")
    assert res["result"] == "created"
    assert stored(catalog, res["product_id"], "Colour")["by_locale"] == {"en-US": "Red"}
    consistent(catalog)


def test_an_attribute_by_its_id_is_stored_under_its_name(catalog: MemoryCatalog) -> None:
    attr_id = VOCAB.find("UPC").id  # type: ignore[union-attr]
    pid = create(catalog, item(G1, val(attr_id, {"en-US": "1"}), val("upc", {"de-DE": "2"})))
    assert catalog.products[pid]["values"]["UPC"][GENERAL]["by_locale"] == {"en-US": "1", "de-DE": "2"}


def test_values_and_assets_must_use_attributes_of_their_kind(catalog: MemoryCatalog) -> None:
    res = one(
        catalog, item(G1, val("Main Product Image", {"en-US": "x"}), AssetValues=[asset("UPC", {"en-US": image("https://cdn.example.com/a.jpg")})])
    )
    assert [(e["code"], e["field"]) for e in res["errors"]] == [("wrong_attribute_type", "Values[0]"), ("wrong_attribute_type", "AssetValues[0]")]


def test_every_bad_entry_is_reported(catalog: MemoryCatalog) -> None:
    res = one(
        catalog,
        item(G1, val("Colour", {"en-US": "x"}), val("Net Weight", {"en-US": "x"}), val("UPC", {"xx_YY": "1"}), TaxonomyNodes=["nope"]),
    )
    assert [(e["code"], e["field"]) for e in res["errors"]] == [
        ("unknown_attribute", "Values[0]"),
        ("invalid_value", "Values[1]"),
        ("invalid_locale", "Values[2]"),
        ("taxonomy_node_not_found", "TaxonomyNodes"),
    ]
    message = failure_issue(catalog, "job-1", 0)["message"]
    assert "Attribute 'Colour'" in message and "'Net Weight' is a number" in message and "'xx_YY' is not a locale" in message


# -- assets -----------------------------------------------------------------------------------

SRC = "https://images.example.com/source/bread.jpg"


def test_the_same_source_url_is_the_same_asset_across_products(catalog: MemoryCatalog) -> None:
    first = image("https://cdn.example.com/a.jpg", SourceUrl=SRC)
    second = image("https://cdn.example.com/b.jpg", SourceUrl=SRC, Format="png")
    results = run_syndigo(
        catalog,
        [item(G1, AssetValues=[asset("Main Product Image", {"en-US": first})]), item(G2, AssetValues=[asset("Gallery", {"de-DE": second})])],
        OPTIONS,
    )
    a = catalog.products[results[0]["product_id"]]["assets"]["Main Product Image"][GENERAL]["en-US"]
    b = catalog.products[results[1]["product_id"]]["assets"]["Gallery"][GENERAL]["de-DE"]
    expected_id = derived_id(ORG, TENANT, "asset", SRC)
    assert a["asset_id"] == b["asset_id"] == expected_id
    assert a == {
        "asset_id": expected_id,
        "name": "a.jpg",
        "url": "https://cdn.example.com/a.jpg",
        "source_url": SRC,
        "format": "jpeg",
        "source_party": "",
    }
    assert (b["url"], b["format"]) == ("https://cdn.example.com/b.jpg", "png")
    # One registry document per source in the tenant; the later write wins.
    assert list(catalog.extra) == [("assets", expected_id)]
    # The registry holds the asset, not how a product uses it (its source party).
    registered = {k: v for k, v in b.items() if k != "source_party"}
    assert catalog.extra[("assets", expected_id)] == {**registered, "org_id": ORG, "tenant_id": TENANT}
    consistent(catalog)


def test_an_asset_keeps_its_source_party_and_a_locale_its_own_recipient(catalog: MemoryCatalog) -> None:
    """SourceParty and Recipient may sit in a locale's value (the reference's asset table) or beside
    ValuesByLocale: a locale's own Recipient makes its asset specific to that recipient."""
    us = image("https://cdn.example.com/us.jpg", Recipient="Amazon US", SourceParty="Marketplace")
    de = image("https://cdn.example.com/de.jpg")
    pid = create(catalog, item(G1, AssetValues=[asset("Gallery", {"en-US": us, "de-DE": de}, SourceParty="Supplier")]))
    scopes = catalog.products[pid]["assets"]["Gallery"]
    assert set(scopes) == {GENERAL, "Amazon US"}
    assert (scopes["Amazon US"]["en-US"]["url"], scopes["Amazon US"]["en-US"]["source_party"]) == (us["Url"], "Marketplace")
    assert list(scopes[GENERAL]) == ["de-DE"] and scopes[GENERAL]["de-DE"]["source_party"] == "Supplier"
    # Deleting by locale finds the asset under the locale's recipient, and leaves the general one.
    gone = one(catalog, item(G1, AssetValues=[asset("Gallery", {"en-US": {"Recipient": "Amazon US"}}, Delete=True)], mode="Update"))
    assert gone["result"] == "updated"
    assert set(catalog.products[pid]["assets"]["Gallery"]) == {GENERAL}
    consistent(catalog)


def test_asset_values_need_values_by_locale(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, AssetValues=[asset("Gallery", {"en-US": image("https://cdn.example.com/a.jpg")})]))
    missing = {"Name": "Gallery", "Delete": False, "IsExplicitNullValue": False}
    res = one(catalog, item(G1, AssetValues=[missing], mode="Update"))
    assert res["result"] == "failed" and codes(res) == ["missing_field"]
    # An empty one, with Delete, removes the attribute's assets.
    cleared = one(catalog, item(G1, AssetValues=[asset("Gallery", {}, Delete=True)], mode="Update"))
    assert cleared["result"] == "updated" and "Gallery" not in catalog.products[pid]["assets"]


def test_the_same_source_url_is_a_different_asset_in_another_tenant() -> None:
    raw = item(G1, AssetValues=[asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg", SourceUrl=SRC)})])
    ids = []
    for tenant in ("tenant-1", "tenant-2"):
        catalog = MemoryCatalog()
        view = CatalogView(MemoryLoader(catalog), replace(make_context(), tenant_id=tenant))
        res = apply_syndigo_item(view, 0, raw, OPTIONS)
        commit(catalog, view)
        [(_, asset_id)] = catalog.extra
        assert catalog.products[res["product_id"]]["assets"]["Main Product Image"][GENERAL]["en-US"]["asset_id"] == asset_id
        assert catalog.extra[("assets", asset_id)]["tenant_id"] == tenant
        ids.append(asset_id)
    assert ids[0] != ids[1]
    assert ids == [derived_id(ORG, "tenant-1", "asset", SRC), derived_id(ORG, "tenant-2", "asset", SRC)]


def test_different_source_urls_are_different_assets(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog,
        item(G1, AssetValues=[asset("Gallery", {"en-US": image("https://cdn.example.com/a.jpg"), "de-DE": image("https://cdn.example.com/b.jpg")})]),
    )
    gallery = catalog.products[pid]["assets"]["Gallery"][GENERAL]
    assert gallery["en-US"]["asset_id"] != gallery["de-DE"]["asset_id"]
    assert len(catalog.extra) == 2


@pytest.mark.parametrize(
    ("locale_value", "url", "source"),
    [
        ({"Url": "https://cdn.example.com/u.jpg"}, "https://cdn.example.com/u.jpg", "https://cdn.example.com/u.jpg"),
        ({"URL": "https://cdn.example.com/U.jpg"}, "https://cdn.example.com/U.jpg", "https://cdn.example.com/U.jpg"),
        (
            {"Url": "https://cdn.example.com/u.jpg", "URL": "https://cdn.example.com/U.jpg"},
            "https://cdn.example.com/u.jpg",
            "https://cdn.example.com/u.jpg",
        ),
        ({"SourceUrl": SRC}, SRC, SRC),
        ({"URL": "https://cdn.example.com/U.jpg", "SourceUrl": SRC}, "https://cdn.example.com/U.jpg", SRC),
    ],
    ids=["Url", "URL", "Url-wins", "SourceUrl-only", "URL+SourceUrl"],
)
def test_asset_url_spellings(catalog: MemoryCatalog, locale_value: dict[str, Any], url: str, source: str) -> None:
    pid = create(catalog, item(G1, AssetValues=[asset("Main Product Image", {"en-US": locale_value})]))
    record = catalog.products[pid]["assets"]["Main Product Image"][GENERAL]["en-US"]
    assert (record["url"], record["source_url"], record["asset_id"]) == (url, source, derived_id(ORG, TENANT, "asset", source))


def test_an_asset_needs_a_url(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, AssetValues=[asset("Main Product Image", {"en-US": {"Name": "a.jpg", "Format": "jpeg"}})]))
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("missing_field", "AssetValues[0]")
    assert catalog.products == {}


@pytest.mark.parametrize("fmt", ["bmp", "tiff", "", "jpeg "])
def test_an_unknown_asset_format_fails(catalog: MemoryCatalog, fmt: str) -> None:
    res = one(catalog, item(G1, AssetValues=[asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg", Format=fmt)})]))
    assert res["result"] == "failed"
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("invalid_value", "AssetValues.0.ValuesByLocale.en-US.Format")
    assert "jpeg" in error["message"]
    assert catalog.products == {} and catalog.extra == {}


@pytest.mark.parametrize(("fmt", "kept"), [("JPEG", "jpeg"), ("Png", "png"), ("pdf", "pdf"), ("mov", "mov"), (None, None)])
def test_asset_formats_are_kept_in_lower_case(catalog: MemoryCatalog, fmt: str | None, kept: str | None) -> None:
    pid = create(catalog, item(G1, AssetValues=[asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg", Format=fmt)})]))
    assert catalog.products[pid]["assets"]["Main Product Image"][GENERAL]["en-US"]["format"] == kept


@pytest.mark.parametrize("missing", ["Delete", "IsExplicitNullValue"])
def test_asset_entries_need_delete_and_explicit_null(catalog: MemoryCatalog, missing: str) -> None:
    entry = asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg")})
    del entry[missing]
    res = one(catalog, item(G1, AssetValues=[entry]))
    assert [(e["code"], e["field"]) for e in res["errors"]] == [("missing_field", f"AssetValues.0.{missing}")]


def test_asset_delete_of_one_locale_and_of_the_whole_attribute(catalog: MemoryCatalog) -> None:
    both = {"en-US": image("https://cdn.example.com/en.jpg"), "de-DE": image("https://cdn.example.com/de.jpg")}
    pid = create(
        catalog, item(G1, AssetValues=[asset("Gallery", both), asset("Main Product Image", {"en-US": image("https://cdn.example.com/m.jpg")})])
    )
    one(catalog, item(G1, mode="Update", AssetValues=[asset("Gallery", {"de-DE": {}}, Delete=True)]), job_id="job-2")
    assets = catalog.products[pid]["assets"]
    assert set(assets["Gallery"][GENERAL]) == {"en-US"}
    one(catalog, item(G1, mode="Update", AssetValues=[asset("Main Product Image", {}, Delete=True)]), job_id="job-3")
    assert set(catalog.products[pid]["assets"]) == {"Gallery"}
    one(catalog, item(G1, mode="Update", AssetValues=[asset("Gallery", {"en-US": {}}, Delete=True)]), job_id="job-4")
    assert catalog.products[pid]["assets"] == {}
    consistent(catalog)


def test_asset_explicit_null_and_recipient_scopes(catalog: MemoryCatalog) -> None:
    pid = create(
        catalog,
        item(
            G1,
            AssetValues=[
                asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg")}),
                asset("Main Product Image", {"en-US": image("https://cdn.example.com/amazon.jpg")}, Recipient="Amazon US"),
            ],
        ),
    )
    main = catalog.products[pid]["assets"]["Main Product Image"]
    assert set(main) == {GENERAL, "Amazon US"}
    assert main["Amazon US"]["en-US"]["url"] == "https://cdn.example.com/amazon.jpg"
    one(catalog, item(G1, mode="Update", AssetValues=[asset("Main Product Image", {}, IsExplicitNullValue=True)]), job_id="job-2")
    main = catalog.products[pid]["assets"]["Main Product Image"]
    assert main[GENERAL] == {}
    assert set(main["Amazon US"]) == {"en-US"}
    consistent(catalog)


def test_an_unknown_asset_attribute_is_kept_when_missing_attributes_are_included(catalog: MemoryCatalog) -> None:
    raw = item(G1, AssetValues=[asset("Back Image", {"en-US": image("https://cdn.example.com/back.jpg")})])
    assert codes(one(catalog, raw)) == ["unknown_attribute"]
    res = one(catalog, raw, INCLUDE_MISSING, "job-2")
    assert res["result"] == "created"
    assert catalog.products[res["product_id"]]["assets"]["Back Image"][GENERAL]["en-US"]["url"] == "https://cdn.example.com/back.jpg"


def test_a_failed_item_writes_no_asset_registry_document(catalog: MemoryCatalog) -> None:
    raw = item(G1, AssetValues=[asset("Main Product Image", {"en-US": image("https://cdn.example.com/a.jpg")})], TaxonomyNodes=["no-such-node"])
    assert one(catalog, raw)["result"] == "failed"
    assert catalog.products == {}
    assert catalog.extra == {}


def _firestore_key_problem(key: str) -> str | None:
    if not key:
        return "empty"
    if key.startswith("__") and key.endswith("__"):
        return "reserved"
    if len(key.encode()) > 1500:
        return "longer than 1500 bytes"
    return None


def _map_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in (k, *_map_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _map_keys(v)]
    return []


@pytest.mark.parametrize(
    "raw",
    [
        item(G1, val("__x__", {"en-US": "a"})),
        item(G1, val("UPC", {"en-US": "a"}, Recipient="__x__")),
        item(G1, val("UPC", {"en-US": "a"}, Recipient="R" * 1501)),
        item(G1, AssetValues=[asset("Main Product Image", {"": image("https://cdn.example.com/a.jpg")})]),
        item(G1, AssetValues=[asset("Main Product Image", {"__x__": image("https://cdn.example.com/a.jpg")})]),
    ],
    ids=["reserved-name", "reserved-recipient", "long-recipient", "empty-asset-locale", "reserved-asset-locale"],
)
def test_stored_map_keys_are_storable(catalog: MemoryCatalog, raw: dict[str, Any]) -> None:
    res = one(catalog, raw, INCLUDE_MISSING)
    for product in catalog.products.values():
        problems = {
            k[:20]: p for k in _map_keys({"values": product.get("values"), "assets": product.get("assets")}) if (p := _firestore_key_problem(k))
        }
        assert problems == {}, res


def test_asset_locale_keys_are_checked_like_values_locales(catalog: MemoryCatalog) -> None:
    assert codes(one(catalog, item(G1, val("UPC", {"en_US": "1"})))) == ["invalid_locale"]
    res = one(catalog, item(G1, AssetValues=[asset("Main Product Image", {"en_US": image("https://cdn.example.com/a.jpg")})]), job_id="job-2")
    assert codes(res) == ["invalid_locale"]


# -- taxonomy, parents, package, life cycle ---------------------------------------------------------


def test_taxonomy_nodes_must_exist(catalog: MemoryCatalog) -> None:
    catalog.taxonomy["node-bakery"] = {"id": "node-bakery", "name": "Bakery", "parent_id": None}
    catalog.taxonomy["node-bread"] = {"id": "node-bread", "name": "Bread", "parent_id": "node-bakery"}
    pid = create(catalog, item(G1, TaxonomyNodes=["node-bakery", "node-bread"]))
    assert catalog.products[pid]["taxonomy_nodes"] == ["node-bakery", "node-bread"]
    res = one(catalog, item(G1, mode="Update", TaxonomyNodes=["node-bread", "node-missing"]), job_id="job-2")
    assert res["result"] == "failed" and res["product_id"] == pid
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("taxonomy_node_not_found", "TaxonomyNodes")
    assert "node-missing" in error["message"]
    assert catalog.products[pid]["taxonomy_nodes"] == ["node-bakery", "node-bread"]
    # Left out, the nodes stay.
    one(catalog, item(G1, val("UPC", {"en-US": "1"}), mode="Update"), job_id="job-3")
    assert catalog.products[pid]["taxonomy_nodes"] == ["node-bakery", "node-bread"]
    consistent(catalog)


def test_no_taxonomy_read_without_nodes(catalog: MemoryCatalog) -> None:
    view = new_view(catalog)
    apply_syndigo_item(view, 0, item(G1, TaxonomyNodes=[]), OPTIONS)
    assert all(name != "taxonomy_nodes" for name, _ in view.loader.calls)  # type: ignore[attr-defined]


@pytest.mark.parametrize("form", ["object", "list"])
def test_a_parent_by_gtin(catalog: MemoryCatalog, form: str) -> None:
    parent = create(catalog, item(G1, val("Product Name", {"en-US": "Case of bread"}), PackageType="Case"))
    detail = {"ProductIdentifier": G1, "Quantity": 12}
    res = one(catalog, item(G2, PackageType="BaseUnit", ImmediateParentDetails=detail if form == "object" else [detail]))
    assert res["result"] == "created"
    child = catalog.products[res["product_id"]]
    assert child["parents"] == [{"product_id": parent, "identifier": G1, "quantity": 12}]
    assert (child["package_type"], catalog.products[parent]["package_type"]) == ("BaseUnit", "Case")
    consistent(catalog)


def test_an_empty_parent_object_means_no_parent(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, ImmediateParentDetails={}))
    assert catalog.products[pid]["parents"] == []


def test_a_parent_must_exist(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G2, ImmediateParentDetails={"ProductIdentifier": G1, "Quantity": 1}))
    [error] = res["errors"]
    assert (error["code"], error["field"]) == ("parent_not_found", "ImmediateParentDetails")
    assert catalog.products == {}


def test_a_parent_gtin_held_twice_names_no_single_parent(catalog: MemoryCatalog) -> None:
    create(catalog, item("S-A", val("GTIN", {"en-US": G1})), BY_SKU, "seed-a")
    create(catalog, item("S-B", val("GTIN", {"en-US": G1})), BY_SKU, "seed-b")
    res = one(catalog, item(G2, ImmediateParentDetails={"ProductIdentifier": G1, "Quantity": 1}))
    assert codes(res) == ["parent_not_found"]


@pytest.mark.parametrize(
    "details",
    [
        {"ProductIdentifier": G1, "Quantity": 0},
        {"ProductIdentifier": G1, "Quantity": -3},
        [{"ProductIdentifier": G1, "Quantity": 0}],
        {"ProductIdentifier": G1},
        {"Quantity": 2},
        {"ProductIdentifier": "", "Quantity": 2},
        {"ProductIdentifier": G1, "Quantity": True},
        {"ProductIdentifier": G1, "Quantity": "3"},
        {"ProductIdentifier": G1, "Quantity": 2.0},
    ],
)
def test_parent_details_need_an_identifier_and_a_positive_quantity(catalog: MemoryCatalog, details: Any) -> None:
    create(catalog, item(G1))
    res = one(catalog, item(G2, ImmediateParentDetails=details))
    assert res["result"] == "failed"
    assert {e["code"] for e in res["errors"]} <= {"invalid_value", "missing_field"}
    assert len(catalog.products) == 1


@pytest.mark.parametrize("package", ["Load", "MixedModule", "Pallet", "Display", "Pack", "Case", "BaseUnit"])
def test_package_types(catalog: MemoryCatalog, package: str) -> None:
    pid = create(catalog, item(G1, PackageType=package))
    assert catalog.products[pid]["package_type"] == package


@pytest.mark.parametrize("package", ["Crate", "case", ""])
def test_an_unknown_package_type_fails(catalog: MemoryCatalog, package: str) -> None:
    res = one(catalog, item(G1, PackageType=package))
    assert [(e["code"], e["field"]) for e in res["errors"]] == [("invalid_value", "PackageType")]


def test_life_cycle_discontinue_date_set_and_deleted(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, LifeCycle={"DiscontinueDate": {"Value": "2027-01-31"}, "DeleteDate": {"Value": "2028-01-31T00:00:00Z"}}))
    assert catalog.products[pid]["lifecycle"] == {"discontinue_date": "2027-01-31", "delete_date": "2028-01-31T00:00:00Z"}
    one(catalog, item(G1, mode="Update", LifeCycle={"DiscontinueDate": {"Delete": True}}), job_id="job-2")
    assert catalog.products[pid]["lifecycle"] == {"delete_date": "2028-01-31T00:00:00Z"}
    # Left out (or null), a date stays.
    one(catalog, item(G1, mode="Update", LifeCycle={"DeleteDate": {"Value": None}}), job_id="job-3")
    one(catalog, item(G1, val("UPC", {"en-US": "1"}), mode="Update"), job_id="job-4")
    assert catalog.products[pid]["lifecycle"] == {"delete_date": "2028-01-31T00:00:00Z"}
    consistent(catalog)


def test_life_cycle_created_date_is_ignored(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, LifeCycle={"CreatedDate": {"Value": "not even a date"}}))
    assert catalog.products[pid]["lifecycle"] == {}


@pytest.mark.parametrize("name", ["DiscontinueDate", "DeleteDate"])
@pytest.mark.parametrize("value", ["31/01/2027", "2027-13-01", "soon", "2027-01-31 noon"])
def test_life_cycle_dates_must_be_dates(catalog: MemoryCatalog, name: str, value: str) -> None:
    res = one(catalog, item(G1, LifeCycle={name: {"Value": value}}))
    assert [(e["code"], e["field"]) for e in res["errors"]] == [("invalid_value", f"LifeCycle.{name}")]
    assert catalog.products == {}


def test_archived_comes_from_the_item_or_the_envelope(catalog: MemoryCatalog) -> None:
    a = create(catalog, item(G1, Archived=True), job_id="seed-a")
    b = create(catalog, item(G2), ImportOptions(VOCAB, "GTIN", archived=True), "seed-b")
    c = create(catalog, item(G3), job_id="seed-c")
    assert [catalog.products[p]["archived"] for p in (a, b, c)] == [True, True, False]


def test_an_update_keeps_what_it_leaves_out_or_sends_empty(catalog: MemoryCatalog) -> None:
    """Like its values, a product's other fields change only when an update gives them: an update
    that only renames it keeps its recipients, workflow, catalog items and archived flag."""
    catalog_item = {"Party": "P-1", "TargetMarket": "840"}
    pid = create(
        catalog,
        item(G1, RecipientsToLink=["R-1"], WorkflowId="W-1", CatalogItems=[catalog_item], SourceParties=["S-1"], PackageType="Case", Archived=True),
    )
    kept = ("recipients_to_link", "workflow_id", "catalog_items", "source_parties", "package_type", "archived")
    before = {k: catalog.products[pid][k] for k in kept}
    assert before == {
        "recipients_to_link": ["R-1"],
        "workflow_id": "W-1",
        "catalog_items": [catalog_item],
        "source_parties": ["S-1"],
        "package_type": "Case",
        "archived": True,
    }
    renamed = item(G1, val("Product Name", {"en-US": "Renamed"}), mode="Update", RecipientsToLink=[], TaxonomyNodes=[], ImmediateParentDetails={})
    assert one(catalog, renamed)["result"] == "updated"
    assert {k: catalog.products[pid][k] for k in kept} == before and catalog.products[pid]["title"] == "Renamed"
    assert one(catalog, item(G1, mode="Update", RecipientsToLink=["R-2"], Archived=False))["result"] == "updated"
    assert (catalog.products[pid]["recipients_to_link"], catalog.products[pid]["archived"]) == (["R-2"], False)
    consistent(catalog)


# -- the value index ----------------------------------------------------------------------------


def test_identifier_values_are_indexed_and_move_with_the_value(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("MFG Part", {"en-US": "P-1", "de-DE": "P-DE"}), val("UPC", {"en-US": "U-1"})))
    product = catalog.products[pid]
    assert product["identifier_values"] == {"MFG Part": "P-1"}  # default locale; UPC is no identifier
    assert catalog.values[value_key("MFG Part", "P-1")] == {"key": "MFG Part", "value": "P-1", "holders": {pid: True}}
    assert set(catalog.values) == {value_key("MFG Part", "P-1"), value_key("gtin", G1)}
    consistent(catalog)

    one(catalog, item(G1, val("MFG Part", {"en-US": "P-2"}), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["identifier_values"] == {"MFG Part": "P-2"}
    assert value_key("MFG Part", "P-1") not in catalog.values
    assert catalog.values[value_key("MFG Part", "P-2")]["holders"] == {pid: True}
    consistent(catalog)

    found = one(catalog, item("P-2", val("Product Name", {"en-US": "By part"}), mode="Update"), BY_PART, "job-3")
    assert (found["result"], found["product_id"]) == ("updated", pid)
    assert codes(one(catalog, item("P-1", mode="Update"), BY_PART, "job-4")) == ["product_not_found"]

    one(catalog, item(G1, val("MFG Part", IsExplicitNullValue=True), mode="Update"), job_id="job-5")
    assert catalog.products[pid]["identifier_values"] == {}
    assert set(catalog.values) == {value_key("gtin", G1)}
    consistent(catalog)


def test_a_gtin_change_moves_its_index_entry(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    one(catalog, item(G1, val("GTIN", {"en-US": G2}), mode="Update"), job_id="job-2")
    assert catalog.products[pid]["gtin"] == G2
    assert set(catalog.values) == {value_key("gtin", G2)}
    assert one(catalog, item(G2, mode="Update"), job_id="job-3")["product_id"] == pid
    consistent(catalog)


def test_creating_by_an_identifier_attribute_records_its_value(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item("P-7", val("Product Name", {"en-US": "A"})), BY_PART)
    assert catalog.products[pid]["identifier_values"] == {"MFG Part": "P-7"}
    assert catalog.values[value_key("MFG Part", "P-7")]["holders"] == {pid: True}
    consistent(catalog)


def test_an_identifier_attribute_value_survives_updates(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item("P-7", val("Product Name", {"en-US": "A"})), BY_PART)
    assert one(catalog, item("P-7", val("Product Name", {"en-US": "B"})), BY_PART, "job-2")["product_id"] == pid
    assert catalog.products[pid]["identifier_values"] == {"MFG Part": "P-7"}
    third = one(catalog, item("P-7", val("Product Name", {"en-US": "C"})), BY_PART, "job-3")
    assert (third["result"], third["product_id"]) == ("updated", pid)
    assert len(catalog.products) == 1


# -- verbose ------------------------------------------------------------------------------------


def test_verbose_results_carry_changes_and_issues(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Bread"})), VERBOSE)
    assert res["result"] == "created"
    assert res["changes"] == [{"attribute": "Product Name", "recipient": None, "locale": "en-US", "old": None, "new": "Bread"}]
    assert "opened MISSING_DESCRIPTION" in res["issues"]
    res = one(
        catalog,
        item(G1, val("Product Name", {"en-US": "Rye"}), val("UPC", {"en-US": "1"}, Recipient="Amazon US"), val("MFG Name", IsExplicitNullValue=True)),
        VERBOSE,
        "job-2",
    )
    assert res["changes"] == [
        {"attribute": "MFG Name", "recipient": None, "locale": None, "old": False, "new": True, "explicit_null": True},
        {"attribute": "Product Name", "recipient": None, "locale": "en-US", "old": "Bread", "new": "Rye"},
        {"attribute": "UPC", "recipient": "Amazon US", "locale": "en-US", "old": None, "new": "1"},
    ]
    assert res["issues"] == []


def test_results_are_terse_unless_verbose(catalog: MemoryCatalog) -> None:
    res = one(catalog, item(G1, val("Product Name", {"en-US": "Bread"})))
    assert set(res) == {"index", "identifier", "product_id", "result", "errors"}
    failed = one(catalog, item(G1, val("Colour", {"en-US": "x"})), VERBOSE, "job-2")
    assert set(failed) == {"index", "identifier", "product_id", "result", "errors"}


def scope(by_locale: dict[str, Any], explicit_null: bool = False) -> dict[str, Any]:
    return {"by_locale": by_locale, "explicit_null": explicit_null, "source_party": ""}


def test_value_changes_locale_by_locale() -> None:
    old = {"values": {"A": {GENERAL: scope({"en-US": "1", "de-DE": "2"})}, "B": {"R": scope({"en-US": "x"})}, "C": {GENERAL: scope({}, True)}}}
    new = {"values": {"A": {GENERAL: scope({"en-US": "1", "fr-FR": "3"})}, "C": {GENERAL: scope({"en-US": "c"})}, "D": {GENERAL: scope({}, True)}}}
    assert value_changes(old, new) == [
        {"attribute": "A", "recipient": None, "locale": "de-DE", "old": "2", "new": None},
        {"attribute": "A", "recipient": None, "locale": "fr-FR", "old": None, "new": "3"},
        {"attribute": "B", "recipient": "R", "locale": "en-US", "old": "x", "new": None},
        {"attribute": "C", "recipient": None, "locale": "en-US", "old": None, "new": "c"},
        {"attribute": "C", "recipient": None, "locale": None, "old": True, "new": False, "explicit_null": True},
        {"attribute": "D", "recipient": None, "locale": None, "old": False, "new": True, "explicit_null": True},
    ]
    assert value_changes(new, new) == []
    assert value_changes({}, {}) == []
    assert value_changes({"values": None}, {"values": {}}) == []


# -- failures -----------------------------------------------------------------------------------


def test_a_failed_item_records_an_error_issue(catalog: MemoryCatalog) -> None:
    items = [item(G1), item(G2), item(G3), item("X-1", val("Colour", {"en-US": "x"}))]
    results = run_syndigo(catalog, items, OPTIONS, first_index=10)
    assert [r["result"] for r in results] == ["created", "created", "created", "failed"]
    issue_id = derived_id("job-1", 13, "failure")
    issue = catalog.issues[issue_id]
    assert {
        k: issue[k] for k in ("product_id", "issue_type", "severity", "key", "job_id", "item_index", "identifier", "resolved", "org_id", "tenant_id")
    } == {
        "product_id": None,
        "issue_type": engine.IMPORT_REJECTED,
        "severity": "ERROR",
        "key": engine.IMPORT_REJECTED,
        "job_id": "job-1",
        "item_index": 13,
        "identifier": "X-1",
        "resolved": False,
        "org_id": ORG,
        "tenant_id": TENANT,
    }
    assert issue["message"].startswith("Item 13 ('X-1') of job job-1 was not applied: Attribute 'Colour'")
    assert catalog.identifiers == {"X-1": {"identifier": "X-1", "open": {issue_id: True}}}
    consistent(catalog)


def test_a_failure_on_an_existing_product_points_at_it_but_stays_out_of_its_issues(catalog: MemoryCatalog) -> None:
    pid = create(catalog, item(G1, val("Product Name", {"en-US": "A"})))
    res = one(catalog, item(G1, val("Net Weight", {"en-US": "heavy"}), mode="Update"))
    assert res["product_id"] == pid
    issue = failure_issue(catalog, "job-1", 0)
    assert (issue["product_id"], issue["identifier"]) == (pid, G1)
    assert issue["key"] not in catalog.products[pid]["open_issues"]
    consistent(catalog)


def test_a_later_success_resolves_the_failure(catalog: MemoryCatalog) -> None:
    assert one(catalog, item(G1, val("Colour", {"en-US": "x"})))["result"] == "failed"
    assert catalog.identifiers[G1]["open"]
    assert one(catalog, item(G1, val("Product Name", {"en-US": "A"})), job_id="job-2")["result"] == "created"
    assert failure_issue(catalog, "job-1", 0)["resolved"] is True
    assert catalog.identifiers == {}
    consistent(catalog)


def test_a_dropped_view_commits_nothing(catalog: MemoryCatalog) -> None:
    """whatIf and ErrorMode Fail: the view's recorded changes are simply not committed."""
    view = new_view(catalog)
    results = [apply_syndigo_item(view, i, raw, OPTIONS) for i, raw in enumerate([item(G1), item(G2, val("Colour", {"en-US": "x"}))])]
    assert [r["result"] for r in results] == ["created", "failed"]
    assert view.write_count() > 0
    assert catalog.snapshot() == MemoryCatalog().snapshot()


def in_steps(catalog: MemoryCatalog, raws: list[Any], mode: str, step: int) -> list[dict[str, Any]]:
    """A pass over `raws` as `apply_items` and a chunk make it: a fresh view per step of at most
    `step` items, committed after it as `mode` says."""
    results: list[dict[str, Any]] = []
    while len(results) < len(raws):
        view = new_view(catalog)
        results += run_step(
            view,
            raws,
            len(results),
            0,
            lambda v, i, raw: apply_syndigo_item(v, i, raw, OPTIONS),
            lambda v, batch: v.prefetch(*syndigo_needs(batch, OPTIONS), values=value_keys(batch, OPTIONS)),
            mode,
            max_items=step,
        )
        if mode == ALL:
            commit(catalog, view)
        elif mode == FAILURES:
            commit_failures(catalog, view)
    return results


def open_failures(catalog: MemoryCatalog) -> list[tuple[str, int, str | None]]:
    return sorted((d["job_id"], d["item_index"], d["identifier"]) for d in catalog.open_issues() if d.get("job_id"))


def failing(gtin: str) -> dict[str, Any]:
    return item(gtin, val("Colour", {"en-US": "x"}))


def fail_pass(catalog: MemoryCatalog, raws: list[Any], job_id: str, mode: str) -> list[dict[str, Any]]:
    """A pass of the synchronous import or a chunk in `mode`, in one step: FAILURES commits only
    the failures (ErrorMode Fail's validation), NOTHING nothing (whatIf)."""
    view = new_view(catalog, "PRODUCT_IMPORT", job_id, now=LATER)
    results = run_step(
        view, raws, 0, 0, lambda v, i, raw: apply_syndigo_item(v, i, raw, OPTIONS), lambda v, b: v.prefetch(*syndigo_needs(b, OPTIONS)), mode
    )
    if mode == FAILURES:
        commit_failures(catalog, view)
    return results


def test_three_failed_imports_of_one_product_leave_one_open_issue(catalog: MemoryCatalog) -> None:
    for n in range(3):
        assert one(catalog, failing(G1), job_id=f"import-{n}")["result"] == "failed"
    assert open_failures(catalog) == [("import-2", 0, G1)]
    assert [failure_issue(catalog, f"import-{n}", 0)["issue_type"] for n in range(3)] == [engine.IMPORT_REJECTED] * 3
    consistent(catalog)


def test_an_error_mode_fail_validation_failure_supersedes_the_older_failure(catalog: MemoryCatalog) -> None:
    """The failure's issue is committed though nothing else is: it replaces the older one."""
    one(catalog, failing(G1), job_id="import-1")
    results = fail_pass(catalog, [item(G2), failing(G1)], "import-2", FAILURES)
    assert [r["result"] for r in results] == ["created", "failed"]
    assert open_failures(catalog) == [("import-2", 1, G1)]
    assert failure_issue(catalog, "import-1", 0)["updated_at"] == LATER
    assert catalog.products == {}
    consistent(catalog)


def test_an_error_mode_fail_validation_success_resolves_nothing(catalog: MemoryCatalog) -> None:
    """Not committed, it fixed nothing: the older failure stays open; only the pass's failures count."""
    one(catalog, failing(G1), job_id="import-1")
    fail_pass(catalog, [item(G1), failing(G2)], "import-2", FAILURES)
    assert open_failures(catalog) == [("import-1", 0, G1), ("import-2", 1, G2)]
    consistent(catalog)


def test_an_error_mode_fail_validation_failure_after_a_success_still_supersedes(catalog: MemoryCatalog) -> None:
    """The uncommitted success resolved the older failure in the view only: the failure after it
    supersedes what the store holds."""
    one(catalog, failing(G1), job_id="import-1")
    results = fail_pass(catalog, [item(G1), failing(G1), failing(G1)], "import-2", FAILURES)
    assert [r["result"] for r in results] == ["created", "failed", "failed"]
    assert open_failures(catalog) == [("import-2", 2, G1)]
    assert failure_issue(catalog, "import-2", 1)["resolved"] is True
    consistent(catalog)


def test_an_error_mode_fail_validation_step_resolves_only_failures_the_store_holds(catalog: MemoryCatalog) -> None:
    """A later step replays the items before it; one that passed in its own step may fail in the
    replay (another job deleted its product meanwhile). That failure was never committed, so a
    later failure of its identifier supersedes what the store holds, not a document that is not
    there: resolving it would store a stub, an issue without a type, job or message."""
    create(catalog, item(G1))
    raws = [item(G1, mode="Update"), failing(G1)]
    view = new_view(catalog, "PRODUCT_IMPORT", "import-2", now=LATER)
    apply = lambda v, i, raw: apply_syndigo_item(v, i, raw, OPTIONS)  # noqa: E731
    prefetch = lambda v, b: v.prefetch(*syndigo_needs(b, OPTIONS), values=value_keys(b, OPTIONS))  # noqa: E731
    assert [r["result"] for r in run_step(view, raws, 0, 0, apply, prefetch, FAILURES, max_items=1)] == ["updated"]
    commit_failures(catalog, view)
    [product_id] = catalog.products
    assert run_one(catalog, "BULK_DELETE", product_id, "another-job")["result"] == "deleted"  # meanwhile
    assert catalog.products == {}
    view = new_view(catalog, "PRODUCT_IMPORT", "import-2", now=LATER)
    assert [r["result"] for r in run_step(view, raws, 1, 0, apply, prefetch, FAILURES)] == ["failed"]
    commit_failures(catalog, view)
    assert open_failures(catalog) == [("import-2", 1, G1)]
    assert derived_id("import-2", 0, "failure") not in catalog.issues
    consistent(catalog)


def test_a_what_if_failure_supersedes_nothing(catalog: MemoryCatalog) -> None:
    one(catalog, failing(G1), job_id="import-1")
    before = catalog.snapshot()
    assert fail_pass(catalog, [failing(G1)], "import-2", NOTHING)[0]["result"] == "failed"
    assert catalog.snapshot() == before


@settings(max_examples=150, deadline=None)
@given(
    entries=st.lists(st.tuples(st.sampled_from([G1, G2, G3]), st.sampled_from(["Create", "Update", "CreateOrUpdate"]), st.booleans()), max_size=10),
    step=st.integers(1, 4),
    mode=st.sampled_from([FAILURES, NOTHING]),
)
def test_a_pass_that_commits_nothing_gives_every_item_the_committing_pass_result(entries: list[tuple[str, str, bool]], step: int, mode: str) -> None:
    """whatIf and ErrorMode Fail's validation: an item meets what the payload's earlier items would
    have done in earlier steps (the same identifier created twice, created then updated), as when
    every step commits; what the pass leaves behind is only the failures' issues."""
    raws = [
        item(g, val("Product Name", {"en-US": f"P {i}"}) if ok else val("Colour", {"en-US": "x"}), mode=m) for i, (g, m, ok) in enumerate(entries)
    ]
    committed = in_steps(MemoryCatalog(), raws, ALL, step)
    dry = MemoryCatalog()
    assert in_steps(dry, raws, mode, step) == committed
    assert dry.products == {} and dry.audits == {} and dry.values == {}
    failures = {(r["index"], r["identifier"]) for r in committed if r["result"] == "failed"}
    expected = failures if mode == FAILURES else set()
    assert {(doc["item_index"], doc["identifier"]) for doc in dry.issues.values()} == expected
    # Of each identifier's failures, the last stays open: it supersedes the earlier ones.
    latest = {ident: index for index, ident in sorted(expected)}
    assert {(doc["item_index"], doc["identifier"]) for doc in dry.issues.values() if not doc["resolved"]} == {(i, g) for g, i in latest.items()}
    assert_consistent(dry)


@pytest.mark.parametrize(
    ("mode", "stored", "expected"),
    [
        ("Create", False, ("failed", "identifier_conflict")),
        ("Update", False, ("updated", None)),
        ("CreateOrUpdate", False, ("updated", None)),
        ("Create", True, ("failed", "identifier_conflict")),
        ("Update", True, ("updated", None)),
        ("CreateOrUpdate", True, ("updated", None)),
    ],
)
def test_an_entry_an_earlier_chunk_names_is_checked_against_what_that_chunk_would_create(
    catalog: MemoryCatalog, mode: str, stored: bool, expected: tuple[str, str | None]
) -> None:
    """In a pass that commits nothing, an earlier chunk's products are not in the store: an entry
    naming one of them gets the result it will get once that chunk has committed it."""
    if stored:
        create(catalog, item(G1))
    view = new_view(catalog, job_id="job-w")
    res = apply_named_before(view, 250, item(G1, val("Product Name", {"en-US": "Later"}), mode=mode), OPTIONS)
    assert (res["result"], (res["errors"] or [{}])[0].get("code")) == expected
    assert res["product_id"] is None or stored
    # Content is still checked: an unknown attribute fails the entry whatever names it.
    bad = apply_named_before(new_view(catalog), 251, item(G1, val("Colour", {"en-US": "x"}), mode=mode), OPTIONS)
    assert codes(bad) == (["identifier_conflict"] if mode == "Create" and stored else ["unknown_attribute"])


# -- the seed's example -------------------------------------------------------------------------

SEED_VOCAB = Vocabulary.from_doc(
    {
        "id": "vocab-seed",
        "attributes": [
            {"name": "Product Name", "maps_to": "title"},
            {"name": "Short Description", "maps_to": "description"},
            {"name": "MFG Brand Name", "maps_to": "brand"},
            {"name": "GTIN", "maps_to": "gtin"},
            {"name": "UPC"},
            {"name": "MFG Part", "identifier": True},
            {"name": "MFG Name"},
            {"name": "Feature - Benefit Bullet 1"},
            {"name": "Feature - Benefit Bullet 2"},
            {"name": "Feature - Benefit Bullet 3"},
            {"name": "Packaging Level"},
            {"name": "Main Product Image", "type": "asset"},
        ],
    }
)


def seed_request() -> dict[str, Any]:
    return json.loads((DATA / "syndigo_seed_request.json").read_text())


def test_the_seed_request_validates_as_an_import_request() -> None:
    request = ImportRequest.model_validate(seed_request())
    assert request.ErrorMode == "Fail"
    assert request.ProductImportData.ProductIdentifierProperty == "GTIN"
    assert len(request.ProductImportData.ProductsToImport) == 1


def test_the_seed_example_product_applies(catalog: MemoryCatalog) -> None:
    body = seed_request()
    options = ImportOptions(SEED_VOCAB, body["ProductImportData"]["ProductIdentifierProperty"])
    [raw] = body["ProductImportData"]["ProductsToImport"]

    # As written it is an Update: the product must exist first.
    assert codes(one(catalog, raw, options, "job-0")) == ["product_not_found"]

    raw["ImportMode"] = "CreateOrUpdate"
    res = one(catalog, raw, options)
    assert res["result"] == "created" and res["identifier"] == "12345678911111"
    product = catalog.products[res["product_id"]]
    assert product["title"] == "Whole Grain Bread"
    assert product["gtin"] == "12345678911111"
    assert product["brand"] == "Whole Grainy"
    assert product["description"].startswith("Whole Grain Bread is a nutritious")
    values = product["values"]
    assert values["GTIN"][GENERAL]["by_locale"] == {"en-US": "12345678911111", "pl-PL": "33377788821122", "de-DE": "45237654621242"}
    assert values["UPC"][GENERAL]["by_locale"] == {"en-US": "11122233345"}
    assert values["UPC"]["Amazon US"]["by_locale"] == {"en-US": "11111111111"}
    assert product["identifier_values"] == {"MFG Part": "TEST OEM Number 123"}
    [image_record] = product["assets"]["Main Product Image"][GENERAL].values()
    assert image_record["format"] == "jpeg" and image_record["name"] == "Coconut_water.jpg"
    source = raw["AssetValues"][0]["ValuesByLocale"]["en-US"]["SourceUrl"]
    assert image_record["asset_id"] == derived_id(ORG, TENANT, "asset", source)
    assert product["package_type"] == "BaseUnit"
    assert product["nutritional_information_module"]["IsExplicitNullValue"] is False
    assert product["parents"] == [] and product["taxonomy_nodes"] == []
    # The seed's GTIN-14 has a bad check digit: an INVALID_BARCODE issue, and the product still imports.
    assert rules.gtin_problem("12345678911111") is not None
    assert "INVALID_BARCODE" in product["open_issues"]
    consistent(catalog)

    # The same payload again (now as the original Update) changes nothing.
    raw["ImportMode"] = "Update"
    again = one(catalog, raw, options, "job-2")
    assert (again["result"], again["product_id"]) == ("updated", res["product_id"])
    assert catalog.products[res["product_id"]]["version"] == 1
    consistent(catalog)


# -- never raises -------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=12,
)
locales = st.one_of(st.sampled_from(["en-US", "de-DE", "pl-PL"]), st.sampled_from(["en-US", "fr-FR"]), st.text(max_size=6))
locale_values = st.one_of(st.text(max_size=8), st.integers(0, 99), json_values)
value_entries = st.fixed_dictionaries(
    {"Name": st.sampled_from(["Product Name", "GTIN", "UPC", "MFG Part", "Net Weight", "Allergens", "Country Of Origin", "Gallery", "Colour"])},
    optional={
        "ValuesByLocale": st.dictionaries(locales, locale_values, max_size=3),
        "Delete": st.booleans(),
        "IsExplicitNullValue": st.booleans(),
        "Recipient": st.sampled_from(["", "Amazon US", None]),
        "SourceParty": st.one_of(st.just("Marketplace"), json_values),
    },
)
asset_entries = st.fixed_dictionaries(
    {"Name": st.sampled_from(["Main Product Image", "Gallery", "UPC", "Back"]), "Delete": st.booleans(), "IsExplicitNullValue": st.booleans()},
    optional={
        "ValuesByLocale": st.dictionaries(
            locales,
            st.fixed_dictionaries(
                {},
                optional={
                    "Url": st.sampled_from(["https://a.example/x.jpg", ""]),
                    "URL": st.text(max_size=5),
                    "SourceUrl": st.sampled_from([SRC, "https://b.example/y.png"]),
                    "Format": st.sampled_from(["jpeg", "PNG", "bmp"]),
                    "Name": json_values,
                },
            ),
            max_size=2,
        ),
        "Recipient": st.sampled_from(["", "Amazon US"]),
    },
)


def shaped(junk: bool) -> st.SearchStrategy[dict[str, Any]]:
    """ProductsToImport entries shaped like the vendor's; with `junk`, any field may hold any JSON instead."""

    def field(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(strategy, json_values) if junk else strategy

    return st.fixed_dictionaries(
        {
            "ImportMode": field(st.sampled_from(["Create", "Update", "CreateOrUpdate", "CreateOrUpdate", "ExportOnly"])),
            "ProductIdentifierValue": field(st.sampled_from([G1, G2, "P-1", "S-1", ""])),
        },
        optional={
            "ProductIdentifierPropertyOverride": field(st.sampled_from(["GTIN", "SKU", "Id", "MFG Part", "UPC", "Colour"])),
            "Values": field(st.lists(value_entries, max_size=3)),
            "AssetValues": field(st.lists(asset_entries, max_size=2)),
            "TaxonomyNodes": field(st.lists(st.sampled_from(["node-1", "nope"]), max_size=2)),
            "ImmediateParentDetails": field(st.fixed_dictionaries({"ProductIdentifier": st.sampled_from([G1, G2]), "Quantity": st.integers(-1, 3)})),
            "LifeCycle": field(
                st.fixed_dictionaries(
                    {"DiscontinueDate": st.fixed_dictionaries({"Value": st.sampled_from(["2027-01-31", "soon"]), "Delete": st.booleans()})}
                )
            ),
            "PackageType": field(st.sampled_from(["Case", "Crate"])),
            "MultiValues": field(st.lists(value_entries, max_size=2)),
            "Archived": field(st.booleans()),
        },
    )


entries = st.one_of(shaped(junk=False), shaped(junk=True), json_values, st.dictionaries(st.text(max_size=8), json_values, max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(entries, max_size=4), include_missing=st.booleans(), verbose=st.booleans())
def test_any_entry_gives_a_result_and_never_raises(batch: list[Any], include_missing: bool, verbose: bool) -> None:
    catalog = MemoryCatalog()
    catalog.taxonomy["node-1"] = {"id": "node-1", "name": "Node"}
    options = ImportOptions(VOCAB, "GTIN", include_missing=include_missing, verbose=verbose)
    for job_id in ("job-1", "job-2"):  # the second run meets what the first committed
        view = new_view(catalog, "BULK_IMPORT", job_id)
        for index, raw in enumerate(batch):
            res = apply_syndigo_item(view, index, raw, options)
            assert isinstance(res, dict)
            assert res["index"] == index and res["result"] in ("created", "updated", "failed")
            assert (res["result"] == "failed") == bool(res["errors"])
        commit(catalog, view)
    assert_consistent(catalog)
    assert_value_index(catalog)
