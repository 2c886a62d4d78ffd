"""Validation issues against the real emulators: opened in the same commit, resolved when the cause goes."""

from __future__ import annotations

import threading
from typing import Any

from common.services import catalog, jobs
from tests.integration.conftest import Pipeline

GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}


def open_issues(pipeline: Pipeline, **filters: str) -> list[dict[str, Any]]:
    items, _ = catalog.list_issues(pipeline.scope, filters, limit=200, cursor=None)
    return items


def kinds(issues: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["issue_type"], i["severity"]) for i in issues}


def test_each_rule_opens_after_import_and_resolves_after_the_fixing_update(pipeline: Pipeline) -> None:
    job = pipeline.run(
        "BULK_IMPORT",
        [
            {"title": "Bare", "sku": "BARE-1"},  # no description, low score
            {"title": "Bad barcode", "sku": "GTIN-1", "gtin": "4006381333932", **GOOD},
            {"title": "Dup A", "sku": "DUP-1", **GOOD},
            {"title": "Dup B", "sku": "B-1", "variants": [{"sku": "DUP-1"}], **GOOD},
        ],
    )
    assert job["status"] == "COMPLETED"
    bare, barcode, dup_a, dup_b = (r["product_id"] for r in pipeline.results(job["id"]))
    assert kinds(open_issues(pipeline, product_id=bare)) == {("MISSING_DESCRIPTION", "WARNING"), ("LOW_QUALITY_SCORE", "WARNING")}
    [invalid] = open_issues(pipeline, product_id=barcode)
    assert invalid["issue_type"] == "INVALID_BARCODE" and invalid["severity"] == "ERROR" and "4006381333932" in invalid["message"]
    for holder in (dup_a, dup_b):
        [dup] = open_issues(pipeline, product_id=holder)
        assert dup["issue_type"] == "DUPLICATE_SKU"
        assert dup["message"] == "SKU 'DUP-1' is used by more than one variant in this tenant."
    assert catalog.get_product(pipeline.scope, dup_a)["issue_counts"] == {"ERROR": 1, "WARNING": 0}

    # Re-importing an unchanged product opens nothing new.
    pipeline.run("BULK_IMPORT", [{"title": "Bare", "sku": "BARE-1"}])
    assert len(open_issues(pipeline, product_id=bare)) == 2

    fix = pipeline.run(
        "BULK_UPDATE",
        [
            {"id": bare, **GOOD},
            {"id": barcode, "gtin": "4006381333931"},
            {"id": dup_b, "variants": [{"sku": "B-1-RED"}]},
        ],
    )
    assert fix["status"] == "COMPLETED"
    assert open_issues(pipeline) == []
    assert catalog.get_product(pipeline.scope, dup_a)["issue_counts"] == {"ERROR": 0, "WARNING": 0}


def test_deleting_the_other_holder_resolves_the_duplicate(pipeline: Pipeline) -> None:
    job = pipeline.run("BULK_IMPORT", [{"title": "One", "sku": "S-1", **GOOD}, {"title": "Two", "sku": "S-2", "variants": [{"sku": "S-1"}], **GOOD}])
    one, two = (r["product_id"] for r in pipeline.results(job["id"]))
    assert len(open_issues(pipeline, issue_type="DUPLICATE_SKU")) == 2
    pipeline.run("BULK_DELETE", [two])
    assert open_issues(pipeline, issue_type="DUPLICATE_SKU") == []
    assert catalog.get_product(pipeline.scope, one)["issue_counts"]["ERROR"] == 0


def test_duplicate_sku_written_by_two_chunks_at_once_is_caught(pipeline: Pipeline) -> None:
    filler = [{"title": f"Filler {i}", "sku": f"F-{i}", **GOOD} for i in range(198)]
    payload = [{"title": "Left", "sku": "L-1", "variants": [{"sku": "SHARED"}], **GOOD}, *filler[:199]]
    payload += [{"title": "Right", "sku": "R-1", "variants": [{"sku": "SHARED"}], **GOOD}, *[{**f, "sku": f"G-{i}"} for i, f in enumerate(filler)]]
    job = pipeline.create("BULK_IMPORT", payload)
    chunks = pipeline.dispatch_all()
    assert len(chunks) == 2
    threads = [threading.Thread(target=jobs.process_chunk, args=(m,)) for m in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pipeline.job(job["id"])["status"] == "COMPLETED"
    dups = open_issues(pipeline, issue_type="DUPLICATE_SKU")
    assert len(dups) == 2 and len({d["product_id"] for d in dups}) == 2


def test_viewer_filters_and_severity(pipeline: Pipeline) -> None:
    pipeline.run("BULK_IMPORT", [{"title": "Bare"}, {"title": "Bad", "gtin": "123", **GOOD}])
    assert {i["severity"] for i in open_issues(pipeline, severity="ERROR")} == {"ERROR"}
    assert {i["issue_type"] for i in open_issues(pipeline, issue_type="MISSING_DESCRIPTION")} == {"MISSING_DESCRIPTION"}


def test_failed_items_open_issues_that_a_fixed_reimport_resolves(pipeline: Pipeline) -> None:
    bad = pipeline.run(
        "BULK_IMPORT",
        [{"title": "Fine", "sku": "OK-1", **GOOD}, {"sku": "FIX-1", "colour": "red"}, {"title": "", "sku": "FIX-2"}],
    )
    assert bad["status"] == "FAILED"
    failures = open_issues(pipeline, job_id=bad["id"])
    assert sorted((f["item_index"], f["identifier"], f["issue_type"], f["severity"]) for f in failures) == [
        (1, "FIX-1", "IMPORT_REJECTED", "ERROR"),
        (2, "FIX-2", "IMPORT_REJECTED", "ERROR"),
    ]
    assert all(f["product_id"] is None and "colour" in failures[0]["message"] + failures[1]["message"] for f in failures)
    pipeline.run("BULK_IMPORT", [{"title": "Fixed one", "sku": "FIX-1", **GOOD}, {"title": "Fixed two", "sku": "FIX-2", **GOOD}])
    assert open_issues(pipeline, job_id=bad["id"]) == []


def test_update_of_unknown_product_is_product_not_found_and_resolves_when_it_applies(pipeline: Pipeline) -> None:
    failed = pipeline.run("BULK_UPDATE", [{"sku": "LATER-1", "title": "Changed"}])
    [issue] = open_issues(pipeline, job_id=failed["id"])
    assert issue["issue_type"] == "PRODUCT_NOT_FOUND" and issue["identifier"] == "LATER-1"
    pipeline.run("BULK_IMPORT", [{"title": "Now it exists", "sku": "LATER-1", **GOOD}])
    assert open_issues(pipeline, job_id=failed["id"]) == []


def test_failure_on_an_existing_product_points_at_it_and_resolves_when_it_is_deleted(pipeline: Pipeline) -> None:
    created = pipeline.run("BULK_IMPORT", [{"title": "Target", "sku": "T-1", **GOOD}])
    [product_id] = [r["product_id"] for r in pipeline.results(created["id"])]
    failed = pipeline.run("BULK_UPDATE", [{"id": product_id, "title": None}])
    [issue] = open_issues(pipeline, job_id=failed["id"])
    assert issue["product_id"] == product_id and issue["issue_type"] == "IMPORT_REJECTED"
    pipeline.run("BULK_DELETE", [product_id])
    assert open_issues(pipeline, job_id=failed["id"]) == []
