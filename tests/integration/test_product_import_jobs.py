"""ProductImportData as a bulk job's payload: ErrorMode Fail across chunks, whatIf, per-item results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.cloud.firestore import DELETE_FIELD

from common import errors
from common.domain import engine
from common.services import catalog, jobs, product_import
from common.store import jobs as job_store
from common.store import vocab as vocab_store
from common.store.encode import Transaction
from common.store.paths import coll, existing, index_key, job_ref, read
from tests.integration.conftest import Killed, Pipeline, die_after_counting

VOCABULARY = {"name": "default", "attributes": [{"name": "Product Name", "maps_to": "title"}, {"name": "GTIN", "maps_to": "gtin"}]}


def product(gtin: str, **extra: Any) -> dict[str, Any]:
    return {
        "ImportMode": "CreateOrUpdate",
        "ProductIdentifierValue": gtin,
        "Values": [{"Name": "Product Name", "ValuesByLocale": {"en-US": f"P {gtin}"}}],
        **extra,
    }


def envelope(products: list[dict[str, Any]], error_mode: str, **extra: Any) -> dict[str, Any]:
    return {"ProductImportData": {"ProductsToImport": products, "ProductIdentifierProperty": "GTIN"}, "ErrorMode": error_mode, **extra}


def drive(pipeline: Pipeline, job_id: str) -> dict[str, Any]:
    return pipeline.drive(job_id)


@pytest.fixture
def with_vocabulary(pipeline: Pipeline) -> Pipeline:
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    return pipeline


def test_cancelled_before_its_commit_pass_error_mode_fail_commits_nothing_and_a_retry_runs_every_item(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    pipeline.cancel_after_first_chunk(job["id"])  # its first chunk validated, nothing committed
    assert pipeline.job(job["id"])["processed_items"] == 0 and pipeline.products() == []
    results = pipeline.results(job["id"])
    assert len(results) == 200 and all(r["result"] == "failed" and r["product_id"] is None for r in results)
    assert {e["message"] for r in results for e in r["errors"]} == {product_import.CANCELLED_UNCOMMITTED}
    retry = jobs.retry_job(pipeline.principal, job["id"], None)
    assert retry["item_count"] == 450
    done = drive(pipeline, retry["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 450) and len(pipeline.products()) == 450


def test_a_new_default_vocabulary_takes_the_default_from_the_previous_one(with_vocabulary: Pipeline) -> None:
    """The previous default is found by a query inside the saving transaction."""
    pipeline = with_vocabulary
    second = product_import.save_vocabulary(pipeline.principal, {**VOCABULARY, "name": "second", "default": True})
    third = product_import.save_vocabulary(pipeline.principal, {**VOCABULARY, "name": "third"})
    defaults = {v["name"]: v["default"] for v in product_import.list_vocabularies(pipeline.scope)}
    assert defaults == {"default": False, "second": True, "third": False}
    assert product_import.load_vocabulary(pipeline.scope, None)["id"] == second["id"] != third["id"]


def test_error_mode_fail_across_chunks_commits_nothing_and_reports_every_item(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    products = [product(f"{i:014d}") for i in range(450)]
    products[420] = product("00000000000420", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    job = pipeline.create("BULK_IMPORT", envelope(products, "Fail"))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("FAILED", 450, 0, 450)
    assert len(pipeline.products()) == 0
    results = pipeline.results(job["id"])
    assert len(results) == 450 and all(r["result"] == "failed" and r["Result"] == "Failure" for r in results)
    assert results[420]["errors"][0]["code"] == "unknown_attribute"
    assert results[0]["errors"][0]["code"] == "not_committed"
    # Only the item that failed opens an issue, not the good items the job refused to commit.
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": job["id"]}, limit=50, cursor=None)
    assert [(i["item_index"], i["identifier"]) for i in issues] == [(420, "00000000000420")]


def test_a_retry_of_an_error_mode_fail_job_resolves_its_one_issue_and_writes_no_other(with_vocabulary: Pipeline) -> None:
    """The items ErrorMode Fail only held back are retried too; they had no issue, and get none."""
    pipeline = with_vocabulary
    products = [product(f"{i:014d}") for i in range(300)]
    products[260] = product("00000000000260", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    failed = drive(pipeline, pipeline.create("BULK_IMPORT", envelope(products, "Fail"))["id"])
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"260": product("00000000000260")}})
    assert drive(pipeline, retry["id"])["status"] == "COMPLETED" and len(pipeline.products()) == 300
    # Failure issues, not the products' quality findings; a stub from a merge would have no job_id either.
    stored = [doc.to_dict() for doc in coll(pipeline.scope, "validation_issues").stream()]
    assert [(i.get("job_id"), i.get("item_index"), i["resolved"]) for i in stored if "issue_type" not in i or i.get("job_id")] == [
        (failed["id"], 260, True)
    ]


def test_error_mode_fail_commits_everything_when_every_chunk_validates(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    assert len(pipeline.products()) == 450
    results = pipeline.results(job["id"])
    assert [r["result"] for r in results] == ["created"] * 450 and results[0]["MatchedId"] == results[0]["product_id"]


def test_error_mode_fail_validates_each_item_after_the_chunks_earlier_items(with_vocabulary: Pipeline) -> None:
    """A GTIN created twice 150 items apart in one chunk: the validation, committing nothing, still
    finds the second Create refused, so the job commits nothing. While it validates, no item counts
    as processed (the count does not climb and fall back to 0 for the commit round)."""
    pipeline = with_vocabulary
    products = [product(f"{i:014d}", ImportMode="Create") for i in range(180)]
    products[150] = product("00000000000000", ImportMode="Create")
    job = pipeline.create("BULK_IMPORT", envelope(products, "Fail"))
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 0, 180)
    assert pipeline.products() == []
    [event] = [e for e in pipeline.audit_events() if e["entity_id"] == job["id"] and e["action"] == "bulk_job.failed"]
    assert (event["details"]["processed_items"], event["details"]["failed_items"]) == (0, 180)  # as the job says
    results = pipeline.results(job["id"])
    assert results[150]["errors"][0]["code"] == "identifier_conflict"
    assert {r["errors"][0]["code"] for i, r in enumerate(results) if i != 150} == {"not_committed"}


def test_error_mode_fail_refuses_a_product_an_earlier_chunk_creates_again(with_vocabulary: Pipeline) -> None:
    """Chunk 2 creates what chunk 0 creates: its validation, with chunk 0 not committed, still
    refuses the second Create, and the job commits nothing."""
    pipeline = with_vocabulary
    products = [product(f"{i:014d}", ImportMode="Create") for i in range(450)]
    products[420] = product(f"{10:014d}", ImportMode="Create")
    job = pipeline.create("BULK_IMPORT", envelope(products, "Fail"))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 0, 450)
    assert pipeline.products() == []
    results = pipeline.results(job["id"])
    assert results[420]["errors"][0]["code"] == "identifier_conflict"
    assert {r["errors"][0]["code"] for i, r in enumerate(results) if i != 420} == {"not_committed"}


def test_error_mode_fail_updates_a_product_an_earlier_chunk_creates(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    products = [product(f"{i:014d}", ImportMode="Create") for i in range(450)]
    products[420] = product(f"{10:014d}", ImportMode="Update", Values=[{"Name": "Product Name", "ValuesByLocale": {"en-US": "Renamed"}}])
    job = pipeline.create("BULK_IMPORT", envelope(products, "Fail"))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    results = pipeline.results(job["id"])
    assert [results[i]["result"] for i in (10, 420)] == ["created", "updated"]
    assert results[420]["product_id"] == results[10]["product_id"]
    titles = {p["id"]: p["title"] for p in pipeline.products()}
    assert len(titles) == 449 and titles[results[10]["product_id"]] == "Renamed"  # the 420th created none


def test_a_fail_job_counts_no_item_processed_until_it_commits(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(250)], "Fail"))
    first, second = pipeline.dispatch_all()
    jobs.process_chunk(first)
    validating = pipeline.job(job["id"])
    assert (validating["status"], validating["processed_items"], validating["failed_items"]) == ("PROCESSING", 0, 0)
    jobs.process_chunk(second)
    assert pipeline.job(job["id"])["processed_items"] == 0
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 250)


def test_an_error_mode_fail_job_that_committed_nothing_names_no_product_on_any_page(with_vocabulary: Pipeline) -> None:
    """An Update of the product the item before it creates, in a job that failed validation: no page
    of its results, however it is cut, gives a MatchedId that no product has."""
    pipeline = with_vocabulary
    bad = product("00000000000024", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    job = pipeline.create("BULK_IMPORT", envelope([product("00000000000017"), product("00000000000017", ImportMode="Update"), bad], "Fail"))
    assert drive(pipeline, job["id"])["status"] == "FAILED" and pipeline.products() == []
    pages = [jobs.results(pipeline.scope, job["id"], start=start, limit=1, failed_only=False)[0] for start in range(3)]
    assert [(r["MatchedId"], r["product_id"]) for [r] in pages] == [(None, None)] * 3


def test_what_if_with_error_mode_fail_reports_what_the_job_would(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    bad = product("00000000000024", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    job = pipeline.create("BULK_IMPORT", envelope([product("00000000000017"), bad], "Fail", whatIf=True))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 0, 2)
    assert [r["errors"][0]["code"] for r in pipeline.results(job["id"])] == ["not_committed", "unknown_attribute"]
    assert pipeline.products() == []
    issues, _ = catalog.list_issues(pipeline.scope, {}, limit=50, cursor=None)
    assert issues == []


def test_what_if_job_runs_everything_and_commits_nothing(with_vocabulary: Pipeline) -> None:
    pipeline = with_vocabulary
    job = pipeline.create(
        "BULK_IMPORT", envelope([product("00000000000017"), {"ImportMode": "Update", "ProductIdentifierValue": "1"}], "Ignore", whatIf=True)
    )
    done = drive(pipeline, job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"], done["what_if"]) == ("FAILED", 1, 1, True)
    listed, _ = jobs.list_jobs(pipeline.scope, "BULK_IMPORT", limit=10, cursor=None)
    assert [(j["id"], j["what_if"]) for j in listed] == [(job["id"], True)]
    assert len(pipeline.products()) == 0
    issues, _ = catalog.list_issues(pipeline.scope, {}, limit=50, cursor=None)
    assert issues == []
    results = pipeline.results(job["id"])
    assert [r["Result"] for r in results] == ["Success", "Failure"]
    assert results[0]["result"] == "created" and results[0]["product_id"] is None  # no such product exists


def test_an_envelope_stored_in_the_bucket_is_dispatched_item_by_item(with_vocabulary: Pipeline) -> None:
    """Dispatch reads a large envelope's products from the stored text as a stream (jsonstream's path),
    whatever members come before or after them."""
    pipeline = with_vocabulary
    long_name = "n" * 2000  # 400 products of ~2.1 KB: over the inline limit, so the payload goes to the bucket
    products = [product(f"{i:014d}", Values=[{"Name": "Product Name", "ValuesByLocale": {"en-US": f"{long_name} {i}"}}]) for i in range(400)]
    payload = {
        "ErrorMode": "Ignore",
        "ProductImportData": {"ProductIdentifierProperty": "GTIN", "ProductsToImport": products, "Archived": False},
        "whatIf": False,
    }
    job = pipeline.create("BULK_IMPORT", payload)
    stored = job_store.get(pipeline.scope, job["id"])
    assert stored is not None and "payload_object" in stored and "payload_json" not in stored
    done = drive(pipeline, job["id"])
    assert (done["status"], done["total_items"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 400, 400, 0)
    results = pipeline.results(job["id"])
    assert [r["IdentifierValue"] for r in results] == [f"{i:014d}" for i in range(400)]
    assert sorted(p["title"] for p in pipeline.products()) == sorted(f"{long_name} {i}" for i in range(400))


def test_envelope_jobs_need_a_vocabulary_and_a_valid_envelope(pipeline: Pipeline) -> None:
    with pytest.raises(errors.Unprocessable, match="vocabulary"):
        pipeline.create("BULK_IMPORT", envelope([product("00000000000017")], "Fail"))
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    with pytest.raises(errors.Unprocessable):
        pipeline.create("BULK_IMPORT", {"ProductImportData": {"ProductsToImport": []}, "ErrorMode": "Fail"})
    with pytest.raises(errors.Unprocessable):
        pipeline.create("BULK_IMPORT", envelope([product("1")], "Sometimes"))
    with pytest.raises(errors.Unprocessable):
        pipeline.create("BULK_DELETE", envelope([product("1")], "Fail"))


def test_lost_commit_round_is_republished_by_the_reconciler(with_vocabulary: Pipeline) -> None:
    import time

    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(250)], "Fail"))
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)
    assert pipeline.job(job["id"])["status"] == "PROCESSING"
    assert len(pipeline.pull("chunks")) == 2  # the commit round's messages, lost
    deadline = time.monotonic() + 30
    while pipeline.job(job["id"])["status"] == "PROCESSING":
        assert time.monotonic() < deadline, "the commit round was never republished"
        jobs.reconcile()
        for data in pipeline.pull("chunks"):
            jobs.process_chunk(jobs.ChunkMessage.model_validate_json(data))
        time.sleep(0.5)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 250) and len(pipeline.products()) == 250


def long_text_vocabulary(pipeline: Pipeline) -> None:
    product_import.save_vocabulary(
        pipeline.principal, {**VOCABULARY, "attributes": [*VOCABULARY["attributes"], {"name": "Long Text"}], "default": True}
    )


def growing(gtin: str, locales: tuple[str, ...], size: int) -> list[dict[str, Any]]:
    """Entries for one product, each adding a long value in another locale (values merge in)."""
    return [product(gtin, Values=[{"Name": "Long Text", "ValuesByLocale": {locale: "x" * size}}]) for locale in locales]


def failure_issues(pipeline: Pipeline, job_id: str) -> list[tuple[int, str | None, str]]:
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": job_id}, limit=50, cursor=None)
    return sorted((i["item_index"], i["identifier"], i["issue_type"]) for i in issues)


def test_a_product_grown_too_big_to_store_fails_as_an_item(with_vocabulary: Pipeline) -> None:
    """Each entry is valid, but the fifth would take the one product they share over Firestore's 1 MiB."""
    pipeline = with_vocabulary
    long_text_vocabulary(pipeline)
    items = [product("00000000000017"), *growing("00000000000017", ("en-US", "de-DE", "fr-FR", "es-ES", "it-IT"), 230_000)]
    items.append(product("00000000000024"))
    job = pipeline.create("BULK_IMPORT", envelope(items, "Ignore"))
    done = drive(pipeline, job["id"])
    results = pipeline.results(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 6, 1)
    assert [(r["index"], r["errors"][0]["code"]) for r in results if r["result"] == "failed"] == [(5, "product_too_large")]
    assert failure_issues(pipeline, job["id"]) == [(5, "00000000000017", "IMPORT_REJECTED")]
    assert results[-1]["result"] == "created"  # the chunk went on past it


def test_an_item_the_store_refuses_fails_alone_with_its_issue(with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal the engine cannot foresee (in Cloud Firestore: too many index entries) is stood in
    for by our own commit-size guard, set low: the step is retried item by item, and the one item
    refused fails with a result and an issue that name it, instead of wedging its chunk."""
    pipeline = with_vocabulary
    long_text_vocabulary(pipeline)
    monkeypatch.setattr(Transaction, "max_bytes", 60_000)
    items = [product("00000000000017"), *growing("00000000000024", ("en-US",), 80_000), product("00000000000031")]
    job = pipeline.create("BULK_IMPORT", envelope(items, "Ignore"))
    done = drive(pipeline, job["id"])
    results = pipeline.results(job["id"])
    assert (done["status"], [r["result"] for r in results]) == ("FAILED", ["created", "failed", "created"])
    assert (results[1]["identifier"], results[1]["errors"][0]["code"]) == ("00000000000024", "not_storable")
    assert failure_issues(pipeline, job["id"]) == [(1, "00000000000024", "IMPORT_REJECTED")]


def sync_import(pipeline: Pipeline, products: list[dict[str, Any]], error_mode: str) -> dict[str, Any]:
    body = envelope(products, error_mode)
    _, answer = product_import.import_products(pipeline.principal, body, verbose=False, what_if=False, include_missing=None, vocabulary_id=None)
    return answer


def test_the_synchronous_import_fails_a_product_too_big_to_store_before_committing_any(with_vocabulary: Pipeline) -> None:
    """ErrorMode Fail stays all or nothing: the size is checked in the validation pass."""
    pipeline = with_vocabulary
    long_text_vocabulary(pipeline)
    good = [product(f"{i:014d}") for i in range(150)]
    answer = sync_import(pipeline, [*good, *growing("00000000000017", ("en-US",), 1_100_000)], "Fail")
    assert answer["OverallResult"] == "Failure" and pipeline.products() == []
    answer = sync_import(pipeline, [*good, *growing("00000000000017", ("en-US",), 1_100_000)], "Ignore")
    assert answer["OverallResult"] == "PartialSuccess" and len(pipeline.products()) == 150


def test_a_verbose_error_mode_fail_import_that_commits_nothing_reports_no_change(with_vocabulary: Pipeline) -> None:
    """Fail "will prevent any information from the payload from being committed": a product held back
    fails, and its verbose result lists no change and no validation issue, none of which happened."""
    pipeline = with_vocabulary
    body = envelope([product("00000000000017"), product("00000000000024", Values=[{"Name": "Nope", "ValuesByLocale": {"en-US": "x"}}])], "Fail")
    for what_if in (False, True):
        _, answer = product_import.import_products(pipeline.principal, body, verbose=True, what_if=what_if, include_missing=None, vocabulary_id=None)
        held, failed = answer["ResultsByActionType"]["ProductImportData"]
        assert (answer["OverallResult"], held["Result"], held["Errors"][0]["Code"]) == ("Failure", "Failure", "not_committed")
        assert (held.get("Changes"), held.get("ValidationIssues")) == (failed.get("Changes"), failed.get("ValidationIssues")) == (None, None)
    assert pipeline.products() == []


def test_the_synchronous_import_takes_a_step_the_store_refuses_item_by_item(with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """30 products of 200 KB are one 6 MB step, over the emulator's 4 MiB: each commits alone. One
    the store refuses even alone fails by itself, and the import answers instead of a 500."""
    pipeline = with_vocabulary
    long_text_vocabulary(pipeline)
    big = [entry for i in range(30) for entry in growing(f"{100 + i:014d}", ("en-US",), 200_000)]
    answer = sync_import(pipeline, big, "Ignore")
    assert answer["OverallResult"] == "Success" and len(pipeline.products()) == 30
    monkeypatch.setattr(Transaction, "max_bytes", 60_000)
    answer = sync_import(pipeline, [product("00000000000017"), *growing("00000000000024", ("en-US",), 80_000)], "Ignore")
    outcomes = [(r["Result"], r["Errors"][0]["Code"] if r["Errors"] else None) for r in answer["ResultsByActionType"]["ProductImportData"]]
    assert outcomes == [("Success", None), ("Failure", "not_storable")]


def chunk_messages(pipeline: Pipeline) -> list[jobs.ChunkMessage]:
    return [jobs.ChunkMessage.model_validate_json(data) for data in pipeline.pull("chunks")]


def test_a_validate_round_duplicate_never_runs_a_chunk_before_the_one_it_follows(with_vocabulary: Pipeline) -> None:
    """Chunk 2 updates what chunk 0 creates, so the job runs one chunk at a time. A duplicate of
    chunk 2's validation message arriving once the commit round began, before chunk 0 committed,
    is acknowledged: chunk 1's end releases chunk 2 in this round."""
    pipeline = with_vocabulary
    items = [product(f"{i:014d}", ImportMode="Create") for i in range(450)]
    items[420] = product(f"{10:014d}", ImportMode="Update", Values=[{"Name": "Product Name", "ValuesByLocale": {"en-US": "Renamed"}}])
    job = pipeline.create("BULK_IMPORT", envelope(items, "Fail"))
    sent: dict[int, jobs.ChunkMessage] = {}
    queue = pipeline.dispatch_all()
    while job_store.get(pipeline.scope, job["id"], ["phase"]) == {"phase": "validate"}:
        message = queue.pop(0)
        sent[message.chunk] = message
        jobs.process_chunk(message)
        queue += chunk_messages(pipeline)
    jobs.process_chunk(sent[2])  # the duplicate
    while queue:
        jobs.process_chunk(queue.pop(0))
        queue += chunk_messages(pipeline)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    results = pipeline.results(job["id"])
    [renamed] = [p for p in pipeline.products() if p["id"] == results[10]["product_id"]]
    assert renamed["title"] == "Renamed"


def test_a_delivery_that_read_the_job_before_its_commit_round_never_resets_a_committed_chunk(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    validate_round = pipeline.dispatch_all()
    before_flip = job_store.get(pipeline.scope, job["id"], jobs.WORKER_FIELDS)
    for message in validate_round:
        jobs.process_chunk(message)
    commit_round = chunk_messages(pipeline)
    assert job_store.get(pipeline.scope, job["id"], ["phase"]) == {"phase": "commit"} and before_flip["phase"] == "validate"  # type: ignore[index]
    jobs.process_chunk(commit_round[0])  # chunk 0 commits
    read_job = job_store.get
    monkeypatch.setattr(
        jobs.store, "get", lambda scope, job_id, fields=None: dict(before_flip) if fields == jobs.WORKER_FIELDS else read_job(scope, job_id, fields)
    )
    jobs.process_chunk(commit_round[0])  # a slower delivery of it, with the job as it read it before the flip
    monkeypatch.undo()
    assert job_store.chunk_progress(pipeline.scope, job["id"], 0)["phase"] == "commit"  # type: ignore[index]
    for message in commit_round[1:]:
        jobs.process_chunk(message)
    done = pipeline.drive(job["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 450) and len(pipeline.products()) == 450


def test_the_redelivery_of_a_committed_chunk_whose_finisher_died_releases_the_next_in_the_commit_round(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 1 updates what chunk 0 creates, so the job runs one chunk at a time. Chunk 1 was
    released once in the validation round; the worker that committed chunk 0 died before releasing
    it for the commit round. The redelivery of chunk 0 releases it at once (before, it released
    nothing and chunk 1 waited for the reconciler's stale period); a delivery that read the job
    while it validated, and duplicates, release nothing more."""
    pipeline = with_vocabulary
    items = [product(f"{i:014d}", ImportMode="Create") for i in range(250)]
    items[220] = product(f"{10:014d}", ImportMode="Update", Values=[{"Name": "Product Name", "ValuesByLocale": {"en-US": "Renamed"}}])
    job = pipeline.create("BULK_IMPORT", envelope(items, "Fail"))
    [chunk_0] = pipeline.dispatch_all()
    validating = job_store.get(pipeline.scope, job["id"], jobs.WORKER_FIELDS)
    jobs.process_chunk(chunk_0)
    [chunk_1] = chunk_messages(pipeline)
    jobs.process_chunk(chunk_1)
    assert chunk_messages(pipeline) == [chunk_0]  # the commit round opens
    assert job_store.get(pipeline.scope, job["id"], ["phase", "window"]) == {"phase": "commit", "window": 1}

    die_after_counting(monkeypatch)
    with pytest.raises(Killed):
        jobs.process_chunk(chunk_0)
    monkeypatch.undo()
    assert job_store.chunk_finished(pipeline.scope, job["id"], 0, "commit") and chunk_messages(pipeline) == []
    jobs.process_chunk(chunk_0)  # Pub/Sub's redelivery of the dead worker's message
    assert chunk_messages(pipeline) == [chunk_1]
    jobs.process_chunk(chunk_0)
    read_job = job_store.get
    monkeypatch.setattr(
        jobs.store, "get", lambda scope, job_id, fields=None: dict(validating) if fields == jobs.WORKER_FIELDS else read_job(scope, job_id, fields)
    )
    jobs.process_chunk(chunk_0)  # a slow delivery from the validation round
    monkeypatch.undo()
    assert chunk_messages(pipeline) == []
    jobs.process_chunk(chunk_1)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 250, 0)
    results = pipeline.results(job["id"])
    [renamed] = [p for p in pipeline.products() if p["id"] == results[10]["product_id"]]
    assert renamed["title"] == "Renamed"


def test_items_with_hundreds_of_errors_keep_their_chunk_storable(with_vocabulary: Pipeline) -> None:
    """200 entries with 80 unknown attributes each: one error per attribute would make the chunk's
    results outgrow their 1 MiB document, and the chunk would fail every delivery. Each result keeps
    the errors that fit and counts the rest."""
    pipeline = with_vocabulary
    unknown = [{"Name": f"Unknown attribute {n:02d} {'z' * 40}", "ValuesByLocale": {"en-US": "x"}} for n in range(80)]
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}", Values=unknown) for i in range(200)], "Ignore"))
    done = drive(pipeline, job["id"])
    assert (done["status"], done["failed_items"]) == ("FAILED", 200)
    results = pipeline.results(job["id"])
    assert len(results) == 200
    errors = results[0]["errors"]
    assert errors[0]["code"] == "unknown_attribute" and errors[-1]["code"] == "more_errors"
    assert errors[-1]["message"] == f"… and {80 - (len(errors) - 1)} more errors in this item."


class Reads(dict):  # type: ignore[type-arg]
    """A job document that records in `seen` which of its fields the code reads."""

    def __init__(self, data: dict[str, Any], seen: set[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)


def test_a_chunk_worker_reads_no_job_field_outside_worker_fields(with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # process_chunk reads its job projected to WORKER_FIELDS: a field it read outside that list
    # would quietly be None. Hand it the whole document and record what it reads, on the paths that
    # read the most (an envelope job with options, through validation and commit; a plain job).
    pipeline = with_vocabulary
    whole = jobs.store.get
    seen: set[str] = set()

    def get_recorded(scope: Any, job_id: str, fields: Any = None) -> dict[str, Any] | None:
        if fields != jobs.WORKER_FIELDS:
            return whole(scope, job_id, fields)
        job = whole(scope, job_id)  # the whole document, where the worker would get the projection
        return None if job is None else Reads(job, seen)

    monkeypatch.setattr(jobs.store, "get", get_recorded)
    fail_job = pipeline.create(
        "BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(3)], "Fail", shouldIncludeMissingVocabularyAttributes=True)
    )
    assert drive(pipeline, fail_job["id"])["status"] == "COMPLETED"
    plain = pipeline.create("BULK_IMPORT", [{"title": "W", "sku": "W-1"}])
    assert drive(pipeline, plain["id"])["status"] == "COMPLETED"
    assert seen <= set(jobs.WORKER_FIELDS), seen - set(jobs.WORKER_FIELDS)
    assert {"import_options", "phase", "status", "actor_email"} <= seen


# -- one open failure issue per identifier ---------------------------------------------------------

UNKNOWN = [{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}]


def failure_docs(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every failure issue stored, resolved or not, oldest first."""
    docs = [d.to_dict() for d in coll(pipeline.scope, "validation_issues").stream()]
    return sorted((d for d in docs if d.get("job_id")), key=lambda d: d["created_at"])


def open_failures(pipeline: Pipeline) -> list[tuple[str, int, str | None]]:
    issues, _ = catalog.list_issues(pipeline.scope, {}, limit=200, cursor=None)
    return sorted((i["job_id"], i["item_index"], i["identifier"]) for i in issues if i.get("job_id"))


def identifier_entry(pipeline: Pipeline, identifier: str) -> dict[str, Any] | None:
    return existing(read(coll(pipeline.scope, "identifier_index").document(index_key(identifier))))


def test_failed_synchronous_imports_of_one_product_leave_one_open_issue_the_latest(with_vocabulary: Pipeline) -> None:
    """A feed failing nightly on one product: each import's issue supersedes the one before,
    whatever the ErrorMode; whatIf commits nothing, so it supersedes nothing; a success resolves it."""
    pipeline = with_vocabulary
    gtin = "00000000000017"
    for error_mode in ("Ignore", "Ignore", "Fail", "Fail"):
        answer = sync_import(pipeline, [product("00000000000024"), product(gtin, Values=UNKNOWN)], error_mode)
        assert answer["OverallResult"] == ("PartialSuccess" if error_mode == "Ignore" else "Failure")
        stored = failure_docs(pipeline)
        assert [d["resolved"] for d in stored] == [True] * (len(stored) - 1) + [False]
        assert open_failures(pipeline) == [(stored[-1]["job_id"], 1, gtin)]
        assert identifier_entry(pipeline, gtin) == {"identifier": gtin, "open": {stored[-1]["id"]: True}}
    assert len({d["job_id"] for d in failure_docs(pipeline)}) == 4
    latest = open_failures(pipeline)
    _, what_if = product_import.import_products(
        pipeline.principal, envelope([product(gtin, Values=UNKNOWN)], "Ignore"), verbose=False, what_if=True, include_missing=None, vocabulary_id=None
    )
    assert what_if["OverallResult"] == "Failure" and open_failures(pipeline) == latest and len(failure_docs(pipeline)) == 4
    assert sync_import(pipeline, [product(gtin)], "Ignore")["OverallResult"] == "Success"
    assert open_failures(pipeline) == [] and identifier_entry(pipeline, gtin) is None


def test_bulk_jobs_failing_one_identifier_leave_one_open_issue_across_jobs_and_chunks(with_vocabulary: Pipeline) -> None:
    """ErrorMode Ignore and Fail (whose validation commits only the failures' issues, and supersedes
    with them), and a later item of the same job that fails again, in a later chunk."""
    pipeline = with_vocabulary
    gtin = "00000000000017"
    first = drive(pipeline, pipeline.create("BULK_IMPORT", envelope([product(gtin, Values=UNKNOWN)], "Ignore"))["id"])
    assert open_failures(pipeline) == [(first["id"], 0, gtin)]
    items = [product(f"{i:014d}") for i in range(100, 400)]
    items[5] = items[250] = product(gtin, Values=UNKNOWN)
    second = drive(pipeline, pipeline.create("BULK_IMPORT", envelope(items, "Fail"))["id"])
    assert (second["status"], second["processed_items"]) == ("FAILED", 0)
    assert open_failures(pipeline) == [(second["id"], 250, gtin)]
    assert [(d["job_id"], d["item_index"], d["resolved"]) for d in failure_docs(pipeline)] == [
        (first["id"], 0, True),
        (second["id"], 5, True),
        (second["id"], 250, False),
    ]


def test_failures_of_one_identifier_committing_at_once_leave_one_open_issue(with_vocabulary: Pipeline) -> None:
    """Each failure reads the identifier's entry in its transaction: of two committing together,
    the second is retried, finds the first's issue and resolves it."""
    pipeline = with_vocabulary
    gtin = "00000000000017"

    def send(_: int) -> dict[str, Any]:
        for _attempt in range(10):
            try:
                return sync_import(pipeline, [product(gtin, Values=UNKNOWN)], "Ignore")
            except errors.Transient:  # 503: a busy emulator timed the lock out; committed nothing, sent again
                continue
        raise AssertionError("the import never committed")

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    assert all(a["OverallResult"] == "Failure" for a in answers)
    stored = failure_docs(pipeline)
    assert len(stored) == 4 and sum(not d["resolved"] for d in stored) == 1
    [(job_id, _, _)] = open_failures(pipeline)
    assert identifier_entry(pipeline, gtin) == {"identifier": gtin, "open": {engine.derived_id(job_id, 0, "failure"): True}}


def test_entries_failing_before_they_name_a_product_keep_payload_order_across_chunks(with_vocabulary: Pipeline) -> None:
    """An entry whose identifier property the vocabulary lacks names no product, yet its failure
    issue is its ProductIdentifierValue's: two such entries in two chunks run in order, so however
    the messages arrive the payload's later entry holds the identifier's one open issue."""
    pipeline = with_vocabulary
    gtin = "00000000000017"
    items = [product(f"{i:014d}") for i in range(100, 550)]
    items[10] = items[420] = product(gtin, ProductIdentifierPropertyOverride="Not In The Vocabulary")
    job = pipeline.create("BULK_IMPORT", envelope(items, "Ignore"))
    messages = pipeline.dispatch_all()
    while messages:
        for message in reversed(messages):
            jobs.process_chunk(message)
        messages = pipeline.dispatch_all()
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 448, 2)
    issues, _ = catalog.list_issues(pipeline.scope, {"job_id": job["id"]}, limit=50, cursor=None)
    assert [(i["item_index"], i["identifier"]) for i in issues] == [(420, gtin)]


def test_a_validation_delivery_whose_chunk_is_reset_for_the_commit_round_under_it_commits_its_items(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery of chunk 0's validation message read the job and the chunk (validating, not done),
    then was slow to claim it. Meanwhile another delivery validated the chunk, the job's commit round
    began, and a commit-round delivery reset the chunk. The slow delivery then claims the chunk:
    what it runs must commit, not validate a chunk that is in the commit round (its items would be
    counted processed, and never be in the catalog)."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    validate_round = pipeline.dispatch_all()
    real_claim = job_store.claim_chunk
    commit_round: list[jobs.ChunkMessage] = []

    def overtaken_first(scope: Any, job_id: str, n: int, owner: str, lease_seconds: float) -> str:
        monkeypatch.setattr(jobs.store, "claim_chunk", real_claim)
        for message in validate_round:  # chunk 0's other delivery among them
            jobs.process_chunk(message)
        commit_round.extend(chunk_messages(pipeline))
        assert job_store.get(scope, job_id, ["phase"]) == {"phase": "commit"}
        job_store.reset_chunk(scope, job_id, 0, "commit")  # the commit round's delivery of chunk 0, up to its claim
        return real_claim(scope, job_id, n, owner, lease_seconds)

    monkeypatch.setattr(jobs.store, "claim_chunk", overtaken_first)
    jobs.process_chunk(validate_round[0])
    monkeypatch.undo()
    for message in commit_round:  # chunk 0's commit delivery claims after the slow one: it may find it busy or done
        jobs.process_chunk(message)
    done = pipeline.drive(job["id"])
    assert (done["status"], done["processed_items"]) == ("COMPLETED", 450)
    assert len(pipeline.products()) == 450, "items counted processed were never committed"


# -- the vocabulary a job runs under ---------------------------------------------------------------


def replace_vocabulary(pipeline: Pipeline, attributes: list[dict[str, Any]]) -> None:
    """PUT the tenant's one vocabulary with other attributes, as a caller would while a job runs."""
    [vocabulary] = product_import.list_vocabularies(pipeline.scope)
    product_import.save_vocabulary(pipeline.principal, {**VOCABULARY, "attributes": attributes}, vocabulary["id"])


# "Product Name" renamed: the entries' alias is no longer in the vocabulary.
RENAMED = [{"name": "Name", "maps_to": "title"}, {"name": "GTIN", "maps_to": "gtin"}]
# "Product Name" kept, but mapped to another attribute.
REMAPPED = [{"name": "Product Name", "maps_to": "brand"}, {"name": "GTIN", "maps_to": "gtin"}]


def test_a_vocabulary_put_between_an_error_mode_fail_jobs_validation_and_commit_rounds_commits_what_validated(
    with_vocabulary: Pipeline,
) -> None:
    """Every entry validated under the vocabulary the job was created with; a PUT renaming the alias
    they use lands before the commit round. The commit round reads the vocabulary as it was, so it
    commits every entry: it never fails entries that passed validation (a partial commit of an
    all-or-nothing job)."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(450)], "Fail"))
    for message in pipeline.dispatch_all():
        jobs.process_chunk(message)
    assert job_store.get(pipeline.scope, job["id"], ["phase", "status"]) == {"phase": "commit", "status": "PROCESSING"}
    commit_round = pipeline.dispatch_all()  # the commit round's messages, not yet delivered
    replace_vocabulary(pipeline, RENAMED)
    for message in commit_round:
        jobs.process_chunk(message)
    done = pipeline.drive(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 450, 0)
    assert sorted(p["title"] for p in pipeline.products()) == [f"P {i:014d}" for i in range(450)]


def test_a_vocabulary_put_between_two_chunks_of_an_ignore_job_maps_an_alias_one_way_for_the_whole_job(
    with_vocabulary: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 0 ran; a PUT maps the entries' alias to another attribute; chunk 1 still maps it as the
    job's vocabulary did when it was created, and reads that vocabulary once per delivery, never the
    tenant's live one."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(400)], "Ignore"))
    first, second = pipeline.dispatch_all()
    jobs.process_chunk(first)
    replace_vocabulary(pipeline, REMAPPED)
    reads: list[str] = []

    def counted(module: Any, name: str) -> None:
        real = getattr(module, name, None)

        def read(*args: Any) -> Any:
            reads.append(name)
            return real(*args)  # type: ignore[misc]

        monkeypatch.setattr(module, name, read, raising=False)

    for module, name in ((vocab_store, "get_vocabulary"), (vocab_store, "default_vocabulary"), (job_store, "vocabulary_snapshot")):
        counted(module, name)
    jobs.process_chunk(second)
    monkeypatch.undo()
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 400, 0)
    stored = {p["gtin"]: (p["title"], p.get("brand")) for p in pipeline.products()}
    assert stored == {f"{i:014d}": (f"P {i:014d}", None) for i in range(400)}, "chunk 1 mapped Product Name to brand"
    assert reads == ["vocabulary_snapshot"], "one read of the job's vocabulary per delivery, and never the live one"


def test_a_job_stored_before_jobs_kept_their_vocabulary_reads_the_live_one(with_vocabulary: Pipeline) -> None:
    """A job without a snapshot of its vocabulary (stored before jobs kept one) keeps reading the
    tenant's vocabulary as it is when each chunk runs, as every job did then."""
    pipeline = with_vocabulary
    job = pipeline.create("BULK_IMPORT", envelope([product(f"{i:014d}") for i in range(400)], "Ignore"))
    ref = job_ref(pipeline.scope, job["id"])
    ref.update({"import_options.vocabulary_snapshot": DELETE_FIELD})
    ref.collection("snapshots").document("vocabulary").delete()
    first, second = pipeline.dispatch_all()
    jobs.process_chunk(first)
    replace_vocabulary(pipeline, RENAMED)
    jobs.process_chunk(second)
    done = pipeline.job(job["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 200, 200)
    assert {r["errors"][0]["code"] for r in pipeline.results(job["id"], failed_only=True)} == {"unknown_attribute"}


def test_a_retry_runs_under_the_vocabulary_as_it_is_when_the_retry_is_created(with_vocabulary: Pipeline) -> None:
    """A retry is a new job: it keeps the vocabulary current at its creation, so a caller whose
    entries failed for an alias the vocabulary lacked adds it with a PUT and retries them as sent."""
    pipeline = with_vocabulary
    products = [product(f"{i:014d}") for i in range(300)]
    products[260] = product("00000000000260", Values=[{"Name": "Colour", "ValuesByLocale": {"en-US": "red"}}])
    failed = drive(pipeline, pipeline.create("BULK_IMPORT", envelope(products, "Fail"))["id"])
    assert failed["status"] == "FAILED"
    replace_vocabulary(pipeline, [*VOCABULARY["attributes"], {"name": "Colour"}])  # type: ignore[list-item]
    retry = jobs.retry_job(pipeline.principal, failed["id"], None)
    done = drive(pipeline, retry["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 300, 0)
