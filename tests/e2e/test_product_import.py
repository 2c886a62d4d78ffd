"""ProductImportData over HTTP: the seed's example request through both ways in, and its semantics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tenant

SEED = json.loads((Path(__file__).parent.parent / "data" / "syndigo_seed_request.json").read_text())
IMPORT = "/api/v1/pim/product-import"
# The example vocabulary the README sends before the seed request.
VOCABULARY = json.loads((Path(__file__).parent.parent / "data" / "syndigo_seed_vocabulary.json").read_text())


def seed(mode: str | None = None, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED)
    product = body["ProductImportData"]["ProductsToImport"][0]
    if mode:
        product["ImportMode"] = mode
    product.update(changes)
    return body


def product_body(identifier: str, mode: str = "CreateOrUpdate", **fields: Any) -> dict[str, Any]:
    return {
        "ImportMode": mode,
        "ProductIdentifierValue": identifier,
        "Values": [{"Name": "Product Name", "ValuesByLocale": {"en-US": f"Product {identifier}"}, "Delete": False, "IsExplicitNullValue": False}],
        **fields,
    }


def envelope(*products: dict[str, Any], error_mode: str = "Ignore", identifier: str = "GTIN") -> dict[str, Any]:
    return {"ProductImportData": {"ProductsToImport": list(products), "ProductIdentifierProperty": identifier}, "ErrorMode": error_mode}


@pytest.fixture
def vocab_tenant(tenant: Tenant) -> Tenant:
    response = tenant.post("/api/v1/pim/vocabularies", json=VOCABULARY)
    assert response.status_code == 201, response.text
    return tenant


def run(tenant: Tenant, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = tenant.post(IMPORT, json=body, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_importing_needs_a_vocabulary(tenant: Tenant) -> None:
    response = tenant.post(IMPORT, json=seed("CreateOrUpdate"))
    assert response.status_code == 422 and response.json()["error"]["code"] == "no_vocabulary"


def test_a_core_field_is_mapped_from_one_single_valued_attribute(tenant: Tenant) -> None:
    listed = {"name": "v", "attributes": [{"name": "Tags", "multi_value": True, "maps_to": "category"}]}
    response = tenant.post("/api/v1/pim/vocabularies", json=listed)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"] == {"field": "attributes.0"}
    twice = {"name": "v", "attributes": [{"name": "Brand", "maps_to": "brand"}, {"name": "Maker", "maps_to": "brand"}]}
    assert tenant.post("/api/v1/pim/vocabularies", json=twice).status_code == 422
    assert tenant.get("/api/v1/pim/vocabularies").json() == []


def test_seed_request_imports_with_the_seed_response_shape(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    # The example as written is an Update: the product must exist first.
    response = tenant.post(IMPORT, json=seed())
    missing = response.json()
    assert missing["OverallResult"] == "Failure"
    assert missing["ResultsByActionType"]["ProductImportData"][0]["Errors"][0]["Code"] == "product_not_found"
    # Its id, given back, finds the failure issue it opened.
    [issue] = tenant.get("/api/v1/pim/validation", params={"job_id": response.headers["X-Import-Id"]}).json()
    assert (issue["issue_type"], issue["item_index"]) == ("PRODUCT_NOT_FOUND", 0)

    created = run(tenant, seed("CreateOrUpdate"))
    assert set(created) >= {"VerboseResponse", "OverallResult", "Errors", "ResultsByActionType"}
    assert created["OverallResult"] == "Success" and created["Errors"] == []
    [item] = created["ResultsByActionType"]["ProductImportData"]
    assert item["Result"] == "Success" and item["IdentifierValue"] == "12345678911111" and item["MatchedId"]

    updated = run(tenant, seed())
    assert updated["ResultsByActionType"]["ProductImportData"][0]["MatchedId"] == item["MatchedId"]

    product = tenant.get(f"/api/v1/pim/products/{item['MatchedId']}").json()
    assert product["title"] == "Whole Grain Bread" and product["gtin"] == "12345678911111"
    assert product["brand"] == "Whole Grainy"
    gtin = product["values"]["GTIN"]["*"]["by_locale"]
    assert gtin == {"en-US": "12345678911111", "pl-PL": "33377788821122", "de-DE": "45237654621242"}
    assert product["values"]["UPC"]["*"]["by_locale"] == {"en-US": "11122233345"}
    assert product["values"]["UPC"]["Amazon US"]["by_locale"] == {"en-US": "11111111111"}
    [asset] = product["assets"]["Main Product Image"]["*"].values()
    assert asset["format"] == "jpeg" and asset["name"] == "Coconut_water.jpg" and asset["asset_id"]
    assert product["package_type"] == "BaseUnit"
    assert product["nutritional_information_module"]["IsExplicitNullValue"] is False
    assert product["lifecycle"]["created_date"] == product["created_at"]


def test_the_seed_payload_also_imports_as_a_bulk_job(vocab_tenant: Tenant) -> None:
    job = vocab_tenant.create_job("BULK_IMPORT", seed("CreateOrUpdate"))
    done = vocab_tenant.wait_job(job["id"])
    assert (done["status"], done["total_items"], done["processed_items"]) == ("COMPLETED", 1, 1)
    [result] = vocab_tenant.get(f"/api/v1/pim/bulk-jobs/{job['id']}/results").json()
    assert result["Result"] == "Success" and result["IdentifierValue"] == "12345678911111" and result["MatchedId"]
    assert vocab_tenant.get(f"/api/v1/pim/products/{result['MatchedId']}").json()["title"] == "Whole Grain Bread"


def test_modes_and_error_modes(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    assert run(tenant, envelope(product_body("00000000000017", "Create")))["OverallResult"] == "Success"
    conflict = run(tenant, envelope(product_body("00000000000017", "Create")))
    assert conflict["ResultsByActionType"]["ProductImportData"][0]["Errors"][0]["Code"] == "identifier_conflict"
    export_only = run(tenant, envelope(product_body("00000000000024", "ExportOnly")))
    assert export_only["ResultsByActionType"]["ProductImportData"][0]["Errors"][0]["Code"] == "export_only"

    good, bad = product_body("00000000000031"), product_body("00000000000048", Values=[{"Name": "Nonexistent", "ValuesByLocale": {"en-US": "x"}}])
    partial = run(tenant, envelope(good, bad, error_mode="Ignore"))
    assert partial["OverallResult"] == "PartialSuccess"
    assert [r["Result"] for r in partial["ResultsByActionType"]["ProductImportData"]] == ["Success", "Failure"]

    before = tenant.get("/api/v1/pim/products").json()
    failed = run(tenant, envelope(product_body("00000000000055"), bad, error_mode="Fail"))
    assert failed["OverallResult"] == "Failure"
    assert [r["Errors"][0]["Code"] for r in failed["ResultsByActionType"]["ProductImportData"]] == ["not_committed", "unknown_attribute"]
    assert tenant.get("/api/v1/pim/products").json() == before


def test_a_product_that_fails_import_after_import_has_one_open_issue_the_latest(vocab_tenant: Tenant) -> None:
    """Three failed imports of one GTIN, then a failed bulk job: each failure's issue supersedes the
    one before (whatIf's supersedes nothing), and a success resolves the last."""
    tenant = vocab_tenant
    bad = envelope(product_body("00000000000116", Values=[{"Name": "Nonexistent", "ValuesByLocale": {"en-US": "x"}}]))

    def open_failures() -> list[dict[str, Any]]:
        issues = tenant.get("/api/v1/pim/validation", params={"issue_type": "IMPORT_REJECTED"}).json()
        return [i for i in issues if i["identifier"] == "00000000000116"]

    seen = set()
    for _ in range(3):
        assert run(tenant, bad)["OverallResult"] == "Failure"
        [issue] = open_failures()
        assert issue["job_id"] not in seen  # each import's own
        seen.add(issue["job_id"])
    assert run(tenant, bad, whatIf="true")["OverallResult"] == "Failure"
    assert [i["job_id"] for i in open_failures()] == [issue["job_id"]]
    job = tenant.create_job("BULK_IMPORT", bad)
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    assert [(i["job_id"], i["item_index"]) for i in open_failures()] == [(job["id"], 0)]
    assert run(tenant, envelope(product_body("00000000000116")))["OverallResult"] == "Success"
    assert open_failures() == []


def test_what_if_commits_nothing_at_all(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    before = {path: tenant.get(path).json() for path in ("/api/v1/pim/products", "/api/v1/pim/audit", "/api/v1/pim/validation")}
    dry = run(tenant, envelope(product_body("00000000000062"), product_body("bad-gtin", Values=[{"Name": "Nope"}])), whatIf="true", verbose="true")
    results = dry["ResultsByActionType"]["ProductImportData"]
    assert dry["VerboseResponse"] is True and [r["Result"] for r in results] == ["Success", "Failure"]
    assert results[0]["MatchedId"] is None  # the product only the real import would create has no id yet
    assert results[0]["Changes"] == [
        {"attribute": "Product Name", "recipient": None, "locale": "en-US", "old": None, "new": "Product 00000000000062"}
    ]
    assert "opened MISSING_DESCRIPTION" in results[0]["ValidationIssues"]
    after = {path: tenant.get(path).json() for path in before}
    assert after == before


def test_what_if_answers_what_the_import_answers(vocab_tenant: Tenant) -> None:
    """ErrorMode Fail with one bad product: whatIf says the good one would not be committed either."""
    tenant = vocab_tenant
    body = envelope(product_body("00000000000093"), product_body("00000000000109", Values=[{"Name": "Nope"}]), error_mode="Fail")
    dry = run(tenant, body, whatIf="true")
    real = run(tenant, body)
    assert (dry.pop("WhatIf"), real.pop("WhatIf")) == (True, False)
    assert dry == real
    assert real["OverallResult"] == "Failure" and real["Errors"] == [{"Code": "import_failed", "Message": "No product was committed."}]
    assert [r["Errors"][0]["Code"] for r in real["ResultsByActionType"]["ProductImportData"]] == ["not_committed", "unknown_attribute"]


def test_a_product_the_payload_creates_is_there_for_its_later_products(vocab_tenant: Tenant) -> None:
    """Each product meets what the products before it did, in the validation of ErrorMode Fail and in
    whatIf too: a GTIN created twice fails the second Create, so Fail commits nothing; a Create then
    an Update of one GTIN both succeed. 120 products take more than one step of a committing pass."""
    tenant = vocab_tenant
    products = [product_body(f"{2000 + i:014d}", "Create") for i in range(120)]
    twice = envelope(*products, {**products[0], "Values": []}, error_mode="Fail")
    for params in ({"whatIf": "true"}, {}):
        answer = run(tenant, twice, **params)
        assert answer["OverallResult"] == "Failure", params
        results = answer["ResultsByActionType"]["ProductImportData"]
        assert results[-1]["Errors"][0]["Code"] == "identifier_conflict"
        assert {r["Errors"][0]["Code"] for r in results[:-1]} == {"not_committed"}
    assert tenant.get("/api/v1/pim/products").json() == []

    then_update = envelope(*products, product_body(f"{2000:014d}", "Update", Values=[]), error_mode="Fail")
    dry = run(tenant, then_update, whatIf="true")
    assert dry["OverallResult"] == "Success", dry["ResultsByActionType"]["ProductImportData"][-1]
    assert {r["MatchedId"] for r in dry["ResultsByActionType"]["ProductImportData"]} == {None}
    assert tenant.get("/api/v1/pim/products").json() == []
    assert run(tenant, then_update)["OverallResult"] == "Success"
    assert len(tenant.get("/api/v1/pim/products", params={"limit": 200}).json()) == 120


def test_values_delete_explicit_null_and_unknown_attributes(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    first = product_body(
        "00000000000079",
        Values=[
            {"Name": "Product Name", "ValuesByLocale": {"en-US": "Bread", "de-DE": "Brot"}},
            {"Name": "UPC", "ValuesByLocale": {"en-US": "1"}},
            {"Name": "MFG Name", "ValuesByLocale": {"en-US": "Acme"}},
            {"Name": "Net Weight", "ValuesByLocale": {"en-US": "12.5"}},
        ],
    )
    pid = run(tenant, envelope(first))["ResultsByActionType"]["ProductImportData"][0]["MatchedId"]
    second = product_body(
        "00000000000079",
        "Update",
        Values=[
            {"Name": "Product Name", "ValuesByLocale": {"de-DE": ""}, "Delete": True},
            {"Name": "UPC", "Delete": True},
            {"Name": "MFG Name", "IsExplicitNullValue": True},
        ],
    )
    assert run(tenant, envelope(second))["OverallResult"] == "Success"
    product = tenant.get(f"/api/v1/pim/products/{pid}").json()
    assert product["values"]["Product Name"]["*"]["by_locale"] == {"en-US": "Bread"}
    assert "UPC" not in product["values"]
    assert product["values"]["MFG Name"]["*"] == {"by_locale": {}, "explicit_null": True, "source_party": ""}
    wrong_type = product_body("00000000000079", "Update", Values=[{"Name": "Net Weight", "ValuesByLocale": {"en-US": "heavy"}}])
    assert run(tenant, envelope(wrong_type))["ResultsByActionType"]["ProductImportData"][0]["Errors"][0]["Code"] == "invalid_value"
    kept = product_body("00000000000079", "Update", Values=[{"Name": "Colour", "ValuesByLocale": {"en-US": "Red"}}])
    assert run(tenant, envelope(kept))["OverallResult"] == "Failure"
    assert run(tenant, envelope(kept), shouldIncludeMissingVocabularyAttributes="true")["OverallResult"] == "Success"
    assert tenant.get(f"/api/v1/pim/products/{pid}").json()["values"]["Colour"]["*"]["by_locale"] == {"en-US": "Red"}
    # Without the parameter, the vocabulary's own setting decides.
    [vocabulary] = tenant.get("/api/v1/pim/vocabularies").json()
    assert vocabulary["include_missing_attributes"] is False
    without_flag = {k: v for k, v in VOCABULARY.items() if k != "default"}
    put = tenant.request("PUT", f"/api/v1/pim/vocabularies/{vocabulary['id']}", json={**without_flag, "include_missing_attributes": True})
    assert put.status_code == 200 and put.json()["include_missing_attributes"] is True, put.text
    assert put.json()["default"] is True  # a replacement that does not mention the flag keeps it
    unset = tenant.request("PUT", f"/api/v1/pim/vocabularies/{vocabulary['id']}", json={**VOCABULARY, "default": False})
    assert unset.status_code == 409 and unset.json()["error"]["code"] == "default_vocabulary"
    sized = product_body("00000000000079", "Update", Values=[{"Name": "Size", "ValuesByLocale": {"en-US": "L"}}])
    assert run(tenant, envelope(sized), shouldIncludeMissingVocabularyAttributes="false")["OverallResult"] == "Failure"
    assert run(tenant, envelope(sized))["OverallResult"] == "Success"


def test_multi_values_are_attribute_values(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    first = product_body("00000000000086", MultiValues=[{"Name": "Allergens", "ValuesByLocale": {"en-US": ["milk", "soy"], "de-DE": ["Milch"]}}])
    created = run(tenant, envelope(first))
    assert created["OverallResult"] == "Success", created
    pid = created["ResultsByActionType"]["ProductImportData"][0]["MatchedId"]
    # Another attribute later, and one locale deleted: the rest of Allergens stays.
    second = product_body(
        "00000000000086",
        "Update",
        MultiValues=[
            {"Name": "Claims", "ValuesByLocale": {"en-US": ["vegan"]}},
            {"Name": "Allergens", "ValuesByLocale": {"de-DE": None}, "Delete": True},
        ],
    )
    assert run(tenant, envelope(second))["OverallResult"] == "Success"
    product = tenant.get(f"/api/v1/pim/products/{pid}").json()
    assert product["values"]["Allergens"]["*"]["by_locale"] == {"en-US": ["milk", "soy"]}
    assert product["values"]["Claims"]["*"]["by_locale"] == {"en-US": ["vegan"]}
    assert product["multi_values"] == []
    # What the vocabulary does not hold, a bad locale, a single-valued attribute: item errors, nothing stored.
    refused = [
        ({"Name": "No Such Attribute", "ValuesByLocale": {"en-US": ["x"]}}, "unknown_attribute"),
        ({"Name": "Claims", "ValuesByLocale": {"xx_bad": ["x"]}}, "invalid_locale"),
        ({"Name": "UPC", "ValuesByLocale": {"en-US": ["1", "2"]}}, "not_multi_value"),
        ({"Name": "Claims", "ValuesByLocale": {"en-US": "vegan"}}, "invalid_value"),
    ]
    for entry, code in refused:
        answer = run(tenant, envelope(product_body("00000000000086", "Update", MultiValues=[entry])))
        [error] = answer["ResultsByActionType"]["ProductImportData"][0]["Errors"]
        assert (answer["OverallResult"], error["Code"], error["Field"]) == ("Failure", code, "MultiValues[0]"), answer
    assert tenant.get(f"/api/v1/pim/products/{pid}").json()["values"] == product["values"]


def test_assets_are_deduplicated_by_source_url(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    asset = {
        "Name": "Main Product Image",
        "ValuesByLocale": {
            "en-US": {"Name": "a.png", "Url": "https://cdn.example.com/a.png", "SourceUrl": "https://src.example.com/a.png", "Format": "png"}
        },
        "Delete": False,
        "IsExplicitNullValue": False,
    }
    out = run(tenant, envelope(product_body("00000000000086", AssetValues=[asset]), product_body("00000000000093", AssetValues=[asset])))
    ids = [r["MatchedId"] for r in out["ResultsByActionType"]["ProductImportData"]]
    asset_ids = {next(iter(tenant.get(f"/api/v1/pim/products/{i}").json()["assets"]["Main Product Image"]["*"].values()))["asset_id"] for i in ids}
    assert len(asset_ids) == 1
    bad = {**asset, "ValuesByLocale": {"en-US": {**asset["ValuesByLocale"]["en-US"], "Format": "bmp"}}}
    assert run(tenant, envelope(product_body("00000000000086", AssetValues=[bad])))["OverallResult"] == "Failure"


def test_taxonomy_parent_and_identifier_overrides(vocab_tenant: Tenant) -> None:
    tenant = vocab_tenant
    node = tenant.post("/api/v1/pim/taxonomy-nodes", json={"name": "Bakery"}).json()
    parent = run(tenant, envelope(product_body("00000000000109", PackageType="Case")))["ResultsByActionType"]["ProductImportData"][0]["MatchedId"]
    child = product_body(
        "00000000000116",
        TaxonomyNodes=[node["id"]],
        ImmediateParentDetails={"ProductIdentifier": "00000000000109", "Quantity": 12},
        LifeCycle={"DiscontinueDate": {"Value": "2027-01-31"}, "CreatedDate": {"Value": "2001-01-01"}},
        Values=[{"Name": "MFG Part", "ValuesByLocale": {"en-US": "PART-7"}}],
    )
    pid = run(tenant, envelope(child))["ResultsByActionType"]["ProductImportData"][0]["MatchedId"]
    product = tenant.get(f"/api/v1/pim/products/{pid}").json()
    assert product["taxonomy_nodes"] == [node["id"]] and product["parents"] == [
        {"product_id": parent, "identifier": "00000000000109", "quantity": 12}
    ]
    assert product["lifecycle"]["discontinue_date"] == "2027-01-31" and product["lifecycle"]["created_date"] == product["created_at"]
    # Another identifier property, per product: the MFG Part.
    by_part = product_body("PART-7", "Update", ProductIdentifierPropertyOverride="MFG Part", PackageType="Pack")
    assert run(tenant, envelope(by_part))["ResultsByActionType"]["ProductImportData"][0]["MatchedId"] == pid
    for broken in (
        {"TaxonomyNodes": ["no-such-node"]},
        {"ImmediateParentDetails": {"ProductIdentifier": "99999999999999", "Quantity": 1}},
        {"ImmediateParentDetails": {"ProductIdentifier": "00000000000109", "Quantity": 0}},
        {"PackageType": "Crate"},
    ):
        assert run(tenant, envelope(product_body("00000000000123", **broken)))["OverallResult"] == "Failure", broken


def test_taxonomy_nodes_are_listed_a_page_at_a_time_oldest_first(tenant: Tenant) -> None:
    root = tenant.post("/api/v1/pim/taxonomy-nodes", json={"name": "Food"}).json()
    made = [root] + [tenant.post("/api/v1/pim/taxonomy-nodes", json={"name": f"Shelf {i}", "parent_id": root["id"]}).json() for i in range(4)]
    listed, params = [], {"limit": "2"}
    while True:
        page = tenant.get("/api/v1/pim/taxonomy-nodes", params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()) <= 2
        listed += page.json()
        if "X-Next-Cursor" not in page.headers:
            break
        params = {"limit": "2", "cursor": page.headers["X-Next-Cursor"]}
    assert listed == made
    assert tenant.get("/api/v1/pim/taxonomy-nodes", params={"cursor": "bm9wZQ"}).json()["error"]["code"] == "invalid_cursor"


def test_sync_import_is_bounded(vocab_tenant: Tenant) -> None:
    body = envelope(*[product_body(f"{i:014d}") for i in range(1001)])
    response = vocab_tenant.post(IMPORT, json=body)
    assert response.status_code == 413 and "bulk-jobs" in response.json()["error"]["message"]
