"""A retry reads the items it runs from the chunks that hold them (`chunk_items`, kept as long as the
job), not from the job's payload: a payload past its retention no longer stops a retry, and a large
payload is not parsed whole for a few failed items. The payload is read only where no chunk stored
the items (a job cancelled before it was dispatched), and for a ProductImportData envelope's other
members, which the job keeps as sent (`import_envelope`; a job stored before it, only its payload)."""

from __future__ import annotations

import json

import pytest
from google.cloud.firestore import DELETE_FIELD

from common import errors
from common.http import compact_json
from common.services import jobs, product_import
from common.store import blobs
from common.store import jobs as job_store
from common.store.paths import chunk_id, job_ref
from tests.helpers import sent_requests
from tests.integration.conftest import Pipeline
from tests.integration.test_job_lifecycle import big_payload, open_failures
from tests.integration.test_product_import_jobs import VOCABULARY, envelope, product

BATCH_GET = "/google.firestore.v1.Firestore/BatchGetDocuments"


def payload_object(pipeline: Pipeline, job_id: str) -> str:
    stored = job_store.get(pipeline.scope, job_id)
    assert stored is not None and "payload_json" not in stored, "the payload should be in the bucket"
    return str(stored["payload_object"])


def expire(pipeline: Pipeline, job_id: str) -> None:
    blobs.bucket().blob(payload_object(pipeline, job_id)).delete()  # what the bucket's retention rule does
    assert pipeline.job(job_id)["payload_json"] is None


def test_a_job_whose_payload_expired_after_it_ran_is_retried_from_its_chunks(pipeline: Pipeline) -> None:
    payload = big_payload("PX")
    del payload[7]["title"]
    payload[350] = {"sku": "PX-350", "description": "d" * 2000}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert (failed["status"], failed["failed_items"]) == ("FAILED", 2)
    expire(pipeline, failed["id"])
    for key in ("0", "8"):  # the failures are still known without the payload
        with pytest.raises(errors.Unprocessable) as refused:
            jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {key: {"title": "Fixed", "sku": "PX-7"}}})
        assert refused.value.code == "invalid_correction" and refused.value.message.startswith(f"corrections['{key}'] names no item")
    with pytest.raises(errors.Unprocessable) as named:  # a correction the job type refuses is named as one
        jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"7": ["not", "a", "product"]}})
    assert named.value.details == {"field": "corrections['7']"}
    correction = {"title": "Fixed", "sku": "PX-7", "description": "A long enough description of this product."}
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"7": correction}})
    assert retry["payload_json"] == compact_json([correction, payload[350]])
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("FAILED", 1, 1)
    assert [r["retry_of_index"] for r in pipeline.results(retry["id"])] == [7, 350]
    assert open_failures(pipeline, failed["id"]) == [] and open_failures(pipeline, retry["id"]) == [(1, "PX-350")]
    # A retry of the retry: its items are in its own chunks.
    again = jobs.retry_job(pipeline.principal, retry["id"], {"corrections": {"1": {**payload[350], "title": "Fixed"}}})
    assert pipeline.drive(again["id"])["status"] == "COMPLETED" and len(pipeline.products()) == 400
    assert [r["retry_of_index"] for r in pipeline.results(again["id"])] == [1]


def test_a_cancelled_job_whose_payload_expired_is_retried_from_its_sealed_chunks(pipeline: Pipeline) -> None:
    payload = [*big_payload("PC"), *big_payload("PD")]  # 800 items, four chunks
    payload[5] = {"sku": "PC-5"}
    job = pipeline.create("BULK_IMPORT", payload)
    pipeline.cancel_after_first_chunk(job["id"])
    expire(pipeline, job["id"])
    retry = jobs.retry_job(pipeline.principal, job["id"], {"corrections": {"5": {**payload[5], "title": "Fixed"}}})
    assert retry["item_count"] == 601
    assert retry["payload_json"] == compact_json([{**payload[5], "title": "Fixed"}, *payload[200:]])
    done = pipeline.drive(retry["id"])
    assert (done["status"], done["processed_items"], done["failed_items"]) == ("COMPLETED", 601, 0)
    assert len(pipeline.products()) == 800 and open_failures(pipeline, job["id"]) == []


def test_a_retry_of_a_large_job_with_few_failures_reads_only_their_chunks_and_not_the_payload(pipeline: Pipeline) -> None:
    payload = [*big_payload("LA"), *big_payload("LB"), *big_payload("LC")]  # 1,200 items, six chunks
    payload[3]["title"] = ""
    payload[905] = {"sku": "LC-105", "title": 'Déjà vu ✓ "quoted"', "price": 1e-05, "n": 12345678901234567890}
    failed = pipeline.run("BULK_IMPORT", payload)
    assert failed["failed_items"] == 2
    # Unreadable: were the retry to parse the payload, it would fail.
    blobs.put_text(payload_object(pipeline, failed["id"]), "this is not JSON")
    with sent_requests(BATCH_GET) as sent:
        retry = jobs.retry_job(pipeline.principal, failed["id"], None)
    asked = [[d.rsplit("/", 1)[1] for d in request.documents if "/chunk_items/" in d] for request in sent]
    assert [docs for docs in asked if docs] == [[chunk_id(0), chunk_id(4)]]  # in one read
    # As the job ran them, to the byte.
    assert retry["payload_json"] == compact_json([payload[3], payload[905]])
    assert json.loads(retry["payload_json"])[1]["n"] == 12345678901234567890


def test_a_job_cancelled_before_it_was_dispatched_is_retried_from_its_payload_and_410_once_that_expired(pipeline: Pipeline) -> None:
    """No chunk ever stored its items: the payload is where they are, while it is kept."""
    kept = pipeline.create("BULK_IMPORT", big_payload("CK"))
    jobs.cancel_job(pipeline.principal, kept["id"])
    retry = jobs.retry_job(pipeline.principal, kept["id"], {"corrections": {"399": {"title": "Last", "sku": "CK-399"}}})
    assert json.loads(retry["payload_json"]) == [*big_payload("CK")[:399], {"title": "Last", "sku": "CK-399"}]
    gone = pipeline.create("BULK_IMPORT", big_payload("CG"))
    jobs.cancel_job(pipeline.principal, gone["id"])
    expire(pipeline, gone["id"])
    with pytest.raises(errors.Gone) as expired:
        jobs.retry_job(pipeline.principal, gone["id"], None)
    assert expired.value.code == "payload_expired"
    assert "retried_by" not in (job_store.get(pipeline.scope, gone["id"], ["retried_by"]) or {})


@pytest.fixture
def with_vocabulary(pipeline: Pipeline) -> Pipeline:
    product_import.save_vocabulary(pipeline.principal, VOCABULARY)
    return pipeline


def test_a_product_import_retry_keeps_every_other_member_of_the_envelope_as_sent(with_vocabulary: Pipeline) -> None:
    """The job keeps some of the envelope's members as options, not all of them as sent (nor their
    order): the retry's envelope is the original's, with only the products it runs."""
    pipeline = with_vocabulary
    entries = [product(f"{i:014d}") for i in range(250)]
    entries[240] = product("00000000000240", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    sent = {
        "whatIf": False,
        "ProductImportData": {"ProductIdentifierProperty": "GTIN", "ProductsToImport": entries, "ProductReferenceProperty": "", "Archived": False},
        "ErrorMode": "Ignore",
        "shouldIncludeMissingVocabularyAttributes": None,
    }
    failed = pipeline.run("BULK_IMPORT", sent)
    assert (failed["status"], failed["failed_items"]) == ("FAILED", 1)
    fixed = product("00000000000240")
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"240": fixed}})
    assert retry["payload_json"] == compact_json({**sent, "ProductImportData": {**sent["ProductImportData"], "ProductsToImport": [fixed]}})
    assert pipeline.drive(retry["id"])["status"] == "COMPLETED" and len(pipeline.products()) == 250


def test_a_product_import_job_whose_payload_expired_is_retried_with_the_envelope_it_keeps(with_vocabulary: Pipeline) -> None:
    """Its products are in its chunks, the envelope's other members, as sent, on the job itself."""
    pipeline = with_vocabulary
    entries = [product(f"{i:014d}", WorkflowId="w" * 2500) for i in range(300)]
    entries[7] = product("00000000000007", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    sent = {**envelope(entries, "Ignore"), "whatIf": False}
    failed = pipeline.run("BULK_IMPORT", sent)
    assert (failed["status"], failed["failed_items"]) == ("FAILED", 1)
    expire(pipeline, failed["id"])
    retry = jobs.retry_job(pipeline.principal, failed["id"], {"corrections": {"7": product("00000000000007")}})
    expected = {**sent, "ProductImportData": {**sent["ProductImportData"], "ProductsToImport": [product("00000000000007")]}}
    assert retry["payload_json"] == compact_json(expected)
    assert pipeline.drive(retry["id"])["status"] == "COMPLETED" and len(pipeline.products()) == 300


def test_a_product_import_job_stored_without_its_envelope_reads_it_from_the_payload_and_is_410_once_that_expired(
    with_vocabulary: Pipeline,
) -> None:
    """A job stored before jobs kept their envelope (`import_envelope`) has it only in its payload."""
    pipeline = with_vocabulary
    entries = [product(f"{i:014d}", WorkflowId="w" * 2500) for i in range(300)]
    entries[7] = product("00000000000007", Values=[{"Name": "Unknown Attribute", "ValuesByLocale": {"en-US": "x"}}])
    older = [pipeline.run("BULK_IMPORT", envelope(entries, "Ignore")) for _ in range(2)]
    for job in older:
        assert job["failed_items"] == 1
        job_ref(pipeline.scope, job["id"]).update({"import_envelope": DELETE_FIELD})
    retry = jobs.retry_job(pipeline.principal, older[0]["id"], None)
    assert json.loads(retry["payload_json"]) == envelope([entries[7]], "Ignore")
    expire(pipeline, older[1]["id"])
    with pytest.raises(errors.Gone) as gone:
        jobs.retry_job(pipeline.principal, older[1]["id"], None)
    assert gone.value.code == "payload_expired"
