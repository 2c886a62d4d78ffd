"""Several jobs of one tenant touching the same products at the same time, on the real emulators.

Each race is made deterministic by `race`: one job's step is held inside its transaction, its reads
done and its writes computed, while the other job runs. The other either commits (it does not
conflict with what the held step read) or has its commit refused once (it does: the emulator then
lets one of the two commit first, and the other runs again on what that one left). Either way the
end state must be one a serial order of the two gives, and `assert_catalog_consistent` checks the
indexes, the issues and the audit trail against the products.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from common.models.export import ExportMessage
from common.models.job import ChunkMessage
from common.services import catalog, exports, jobs, product_import
from common.store import catalog as catalog_store
from tests.integration.conftest import Pipeline, pull_all
from tests.integration.invariants import assert_catalog_consistent
from tests.integration.test_export_resume import BAD_GTIN, configure, lines, request, seed, stored
from tests.integration.test_product_import_jobs import VOCABULARY, envelope, product

WAIT = 60  # seconds an event may take before the test gives up (never reached when it passes)
GOOD = {"description": "A long enough description of this product, for the rules.", "category": "Shirts", "brand": "HarbourLine"}


def queued(pipeline: Pipeline, job_type: str, payload: Any) -> tuple[str, ChunkMessage]:
    """A one-chunk job, dispatched: its id and its chunk message, undelivered."""
    job = pipeline.create(job_type, payload)
    [message] = pipeline.dispatch_all()
    return job["id"], message


def race(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, held: tuple[str, ChunkMessage], other: tuple[str, ChunkMessage]) -> None:
    """Deliver `held`'s chunk, hold its first step at its commit (inside its transaction, after
    every read), deliver `other`'s until it ended or its commit was refused once, then let both end."""
    real_commit = catalog_store.commit_view
    at_commit, settled = threading.Event(), threading.Event()
    other_commits: list[int] = []

    def commit_view(writer: Any, scope: Any, view: Any, mode: str) -> None:
        if view.ctx.job_id == held[0] and not at_commit.is_set():
            at_commit.set()
            assert settled.wait(WAIT)
        elif view.ctx.job_id == other[0]:
            other_commits.append(1)
            if len(other_commits) > 1:
                settled.set()  # its first commit was refused: it conflicts with the held step
        real_commit(writer, scope, view, mode)

    failed: list[BaseException] = []

    def deliver(message: ChunkMessage, then: threading.Event | None = None) -> None:
        try:
            jobs.process_chunk(message)
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)
        finally:
            if then is not None:
                then.set()

    monkeypatch.setattr(catalog_store, "commit_view", commit_view)
    first = threading.Thread(target=deliver, args=(held[1],))
    first.start()
    try:
        assert at_commit.wait(WAIT)
        second = threading.Thread(target=deliver, args=(other[1], settled))
        second.start()
        second.join(WAIT)
    finally:
        settled.set()
        first.join(WAIT)
    monkeypatch.setattr(catalog_store, "commit_view", real_commit)
    assert not failed, failed
    assert not first.is_alive() and not second.is_alive()


def outcome(pipeline: Pipeline, job_id: str) -> dict[str, Any]:
    [row] = pipeline.results(job_id)
    return row


def open_issues(pipeline: Pipeline, **filters: str) -> list[dict[str, Any]]:
    issues, _ = catalog.list_issues(pipeline.scope, filters=filters, limit=1000, cursor=None)
    return issues


@pytest.fixture
def with_vocabulary(pipeline: Pipeline) -> Pipeline:
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    return pipeline


def test_two_jobs_creating_one_new_gtin_at_once_make_one_product_and_the_other_fails(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ImportMode Create, by GTIN, twice: both steps read the GTIN free. One product; the other
    entry fails as the seed says Create fails on an existing product, with its issue on it."""
    pipeline = with_vocabulary
    gtin = "00000000000017"
    first = queued(pipeline, "BULK_IMPORT", envelope([product(gtin, ImportMode="Create")], "Ignore"))
    second = queued(pipeline, "BULK_IMPORT", envelope([product(gtin, ImportMode="Create")], "Ignore"))
    race(pipeline, monkeypatch, first, second)
    [made] = pipeline.products()
    rows = sorted((outcome(pipeline, job_id) for job_id, _ in (first, second)), key=lambda r: r["result"])
    assert [r["result"] for r in rows] == ["created", "failed"]
    assert rows[0]["product_id"] == made["id"] and rows[1]["errors"][0]["code"] == "identifier_conflict"
    [issue] = open_issues(pipeline, issue_type="IDENTIFIER_CONFLICT")
    assert (issue["product_id"], issue["identifier"]) == (made["id"], gtin)
    assert_catalog_consistent(pipeline.scope)


def test_two_plain_imports_of_one_new_sku_at_once_make_one_product(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain import matches by SKU: of two creating the same new SKU at once, the second updates
    the product the first made, instead of making a second holder of the SKU (DUPLICATE_SKU)."""
    first = queued(pipeline, "BULK_IMPORT", [{"title": "First", "sku": "SAME-1", **GOOD}])
    second = queued(pipeline, "BULK_IMPORT", [{"title": "Second", "sku": "SAME-1", **GOOD}])
    race(pipeline, monkeypatch, first, second)
    [made] = pipeline.products()
    rows = [outcome(pipeline, job_id) for job_id, _ in (first, second)]
    assert sorted(r["result"] for r in rows) == ["created", "updated"] and {r["product_id"] for r in rows} == {made["id"]}
    assert made["title"] == ("Second" if rows[1]["result"] == "updated" else "First")  # the one that committed last
    assert open_issues(pipeline, issue_type="DUPLICATE_SKU") == []
    assert_catalog_consistent(pipeline.scope)


@pytest.mark.parametrize("held", ["delete", "update"])
def test_a_failed_update_racing_the_delete_of_its_product_leaves_no_issue_on_the_deleted_product(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    """The update names the product by SKU and fails (it clears the title): its failure issue
    points at the product. The delete reads the product's open issues with a query outside its
    transaction; the failure committed after that query used to stay open on the deleted product
    (and in the identifier index), whichever order the two steps committed in."""
    [seeded] = pipeline.results(pipeline.run("BULK_IMPORT", [{"title": "P", "sku": "RACE-1", **GOOD}])["id"])
    delete = queued(pipeline, "BULK_DELETE", [seeded["product_id"]])
    update = queued(pipeline, "BULK_UPDATE", [{"sku": "RACE-1", "title": None}])
    race(pipeline, monkeypatch, *((delete, update) if held == "delete" else (update, delete)))
    assert pipeline.products() == [] and outcome(pipeline, delete[0])["result"] == "deleted"
    failed = outcome(pipeline, update[0])
    assert failed["result"] == "failed" and failed["errors"][0]["code"] in {"invalid_value", "product_not_found"}
    assert open_issues(pipeline, product_id=seeded["product_id"]) == []
    assert_catalog_consistent(pipeline.scope)


def test_an_import_racing_the_delete_of_its_sku_ends_as_one_order_of_the_two(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The import updates the product the delete removes (then nothing is left), or the delete
    goes first and the import creates a new product under the SKU: never a product the SKU index
    does not list, nor a deleted one brought back."""
    [seeded] = pipeline.results(pipeline.run("BULK_IMPORT", [{"title": "Old", "sku": "BACK-1", **GOOD}])["id"])
    delete = queued(pipeline, "BULK_DELETE", [seeded["product_id"]])
    again = queued(pipeline, "BULK_IMPORT", [{"title": "New", "sku": "BACK-1", **GOOD}])
    race(pipeline, monkeypatch, delete, again)
    row = outcome(pipeline, again[0])
    left = pipeline.products()
    if row["result"] == "updated":  # the import went first, the delete removed what it updated
        assert row["product_id"] == seeded["product_id"] and left == []
    else:
        assert row["result"] == "created" and [p["id"] for p in left] == [row["product_id"]] != [seeded["product_id"]]
    assert outcome(pipeline, delete[0])["result"] == "deleted"
    assert_catalog_consistent(pipeline.scope)


def test_an_update_moving_a_gtin_racing_an_entry_that_names_the_gtin_keeps_the_value_index_true(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain update moves product P's GTIN from G1 to G2 while a ProductImportData entry names
    G1 (CreateOrUpdate): it updates P (it went first) or creates a new product holding G1 (it went
    second). The value index lists each GTIN's holders exactly."""
    pipeline = with_vocabulary
    g1, g2 = "00000000000017", "00000000000024"
    [seeded] = pipeline.results(pipeline.run("BULK_IMPORT", [{"title": "P", "sku": "GT-1", "gtin": g1, **GOOD}])["id"])
    move = queued(pipeline, "BULK_UPDATE", [{"id": seeded["product_id"], "gtin": g2}])
    entry = queued(pipeline, "BULK_IMPORT", envelope([product(g1)], "Ignore"))
    race(pipeline, monkeypatch, move, entry)
    row = outcome(pipeline, entry[0])
    gtins = {p["id"]: p.get("gtin") for p in pipeline.products()}
    if row["result"] == "updated":
        assert row["product_id"] == seeded["product_id"] and gtins == {seeded["product_id"]: g2}
    else:
        assert row["result"] == "created" and gtins == {seeded["product_id"]: g2, row["product_id"]: g1}
    assert_catalog_consistent(pipeline.scope)


def test_an_error_mode_fail_job_changed_under_between_its_passes_commits_nothing_stale(with_vocabulary: Pipeline) -> None:
    """ErrorMode Fail validates, then commits in a second pass that runs every entry again on the
    catalog as it is then. Another job creates the GTIN the Fail job's Create validated as free, and
    deletes the product its Update validated: the commit pass refuses both (no duplicate, nothing
    brought back) and commits the rest, as README says (`PartialSuccess`)."""
    pipeline = with_vocabulary
    [seeded] = pipeline.results(pipeline.run("BULK_IMPORT", envelope([product("00000000000031")], "Ignore"))["id"])
    fail_job = pipeline.create(
        "BULK_IMPORT",
        envelope([product("00000000000017", ImportMode="Create"), product("00000000000031", ImportMode="Update"), product("00000000000048")], "Fail"),
    )
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)  # the validation pass: every entry valid, the commit round published
    commit_round = [ChunkMessage.model_validate_json(data) for data in pipeline.pull("chunks")]
    assert commit_round and pipeline.job(fail_job["id"])["processed_items"] == 0
    pipeline.run("BULK_IMPORT", envelope([product("00000000000017")], "Ignore"))
    pipeline.run("BULK_DELETE", [seeded["product_id"]])
    for message in commit_round:
        jobs.process_chunk(message)
    done = pipeline.drive(fail_job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 1, 2)
    codes = [r["errors"][0]["code"] if r["errors"] else r["result"] for r in pipeline.results(fail_job["id"])]
    assert codes == ["identifier_conflict", "product_not_found", "created"]
    assert sorted(p["gtin"] for p in pipeline.products()) == ["00000000000017", "00000000000048"]
    assert_catalog_consistent(pipeline.scope)


@pytest.mark.streams_left_open  # a claim that hands over stops mid-catalog
def test_an_export_with_a_job_committing_between_its_claims_holds_each_product_as_its_claim_read_it(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is not one point in time (docs/api.md, "Export files"): the first claim
    writes products 0-2 and hands over; an update job then gives products 1 and 4 a bad GTIN (an
    open ERROR issue), retitles 5 and fails on 3 (its item clears the title: an ERROR failure issue
    naming 3, which changes nothing); the next claim reads on from its checkpoint. Product 1 is in
    the file as it was, without its ERROR; 4 is left out, 5 has its new title, 3 is in."""
    configure(monkeypatch, export_segment_products=3, export_claim_seconds=0, export_max_claims=1)
    products = seed(pipeline, 6)
    message = request(pipeline, exports_topic)
    exports.run_export(message)
    assert stored(pipeline.scope, message.export_id)["status"] == "QUEUED"  # handed over after products 0-2
    updates = [
        {"id": products[1]["id"], "gtin": BAD_GTIN},
        {"id": products[4]["id"], "gtin": BAD_GTIN},
        {"id": products[5]["id"], "title": "Retitled"},
        {"id": products[3]["id"], "title": None},
    ]
    assert pipeline.run("BULK_UPDATE", updates)["status"] == "FAILED"
    [failure] = open_issues(pipeline, product_id=products[3]["id"], severity="ERROR")
    assert failure["issue_type"] == "IMPORT_REJECTED"
    for _ in range(5):
        [data] = pull_all(exports_topic)
        exports.run_export(ExportMessage.model_validate_json(data))
        if stored(pipeline.scope, message.export_id)["status"] == "COMPLETED":
            break
    record = exports.get_export(pipeline.scope, message.export_id)
    written = {line["id"]: line for line in lines(record)}
    assert list(written) == [products[i]["id"] for i in (0, 1, 2, 3, 5)]
    assert written[products[1]["id"]]["gtin"] is None and open_issues(pipeline, product_id=products[1]["id"], severity="ERROR")
    assert written[products[5]["id"]]["title"] == "Retitled"
    assert (record["excluded_count"], record["excluded_product_ids"]) == (1, [products[4]["id"]])
