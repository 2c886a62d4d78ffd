"""Export messages delivered more than once, and the reconciler facing a dead worker's lock, driven
in-process against the real emulators.

The export service runs in this process (the test decides how often and how concurrently a message
arrives); the notification it queues is delivered by the session stack's Cloud Tasks emulator and
deliver_notification, by email to the stack's SMTP sink. Exports publish to a topic of the test's own
with a pull subscription, so the stack's run_export never sees them.
"""

from __future__ import annotations

import email
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from common import errors
from common.clients import firestore_client
from common.config import get_settings
from common.models.base import utcnow
from common.models.export import ExportMessage
from common.models.job import ChunkMessage
from common.services import catalog, exports, jobs, notifications
from common.store import blobs
from common.store import exports as export_store
from common.store.paths import Scope, chunk_id, job_ref, read
from tests.helpers import until
from tests.integration.conftest import Killed, Pipeline, pull_all

GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}


def mails(mail_dir: Path, message_id: str) -> list[email.message.Message]:
    found = [email.message_from_bytes(p.read_bytes()) for p in mail_dir.glob("*.eml")]
    return [m for m in found if m["Message-ID"] == message_id]


def export_with_email(pipeline: Pipeline, subscription: str, products: int) -> tuple[ExportMessage, str]:
    """A catalog of `products`, email notifications, and a requested export; its one queued message."""
    address = f"dup-{uuid.uuid4().hex[:8]}@example.com"
    notifications.put_notification_settings(pipeline.principal, {"channel": "email", "email": address})
    job = pipeline.run("BULK_IMPORT", [{"title": f"Dup {i}", "sku": f"DUP-{i}", **GOOD} for i in range(products)])
    assert job["status"] == "COMPLETED", job
    queued = exports.request_export(pipeline.principal)
    [data] = pull_all(subscription)
    message = ExportMessage.model_validate_json(data)
    scope = pipeline.scope
    assert message == ExportMessage(export_id=queued["export_id"], org_id=scope.org_id, tenant_id=scope.tenant_id)
    return message, address


def the_delivery(scope: Scope) -> dict[str, Any]:
    records, _ = notifications.list_deliveries(scope, limit=50, cursor=None)
    assert len(records) == 1, records
    return records[0]


def test_export_message_delivered_three_times_writes_one_file_and_one_notification(pipeline: Pipeline, exports_topic: str, stack: Any) -> None:
    scope = pipeline.scope
    message, address = export_with_email(pipeline, exports_topic, products=3)
    ready = threading.Barrier(2)

    def deliver_once() -> None:
        ready.wait(timeout=30)
        exports.run_export(message)

    with ThreadPoolExecutor(max_workers=2) as pool:  # two deliveries of the same message at once
        for future in [pool.submit(deliver_once) for _ in range(2)]:
            future.result(timeout=60)
    record = exports.get_export(scope, message.export_id)
    assert record["status"] == "COMPLETED" and record["product_count"] == 3 and record["excluded_count"] == 0, record
    exports.run_export(message)  # and once more, after it finished
    assert exports.get_export(scope, message.export_id) == record  # the late copy changed nothing

    objects = [b.name for b in blobs.bucket().list_blobs(prefix=f"exports/{scope.org_id}/{scope.tenant_id}/")]
    assert objects == [record["object"]]
    assert len(blobs.bucket().blob(record["object"]).download_as_bytes().splitlines()) == 3
    until("delivered", lambda: the_delivery(scope)["delivered_at"])
    time.sleep(1.5)  # the late copy re-queued the notification: give a second send the chance to show
    delivery = the_delivery(scope)
    assert delivery["export_id"] == message.export_id and delivery["channel"] == "email" and delivery["attempts"] == 1
    sent = mails(stack.mail_dir, f"<{delivery['event_id']}@synq>")
    assert len(sent) == 1 and sent[0]["To"] == address
    events, _ = catalog.list_audit(scope, limit=200, cursor=None)
    finished = [e for e in events if e["entity_id"] == message.export_id and e["action"] != "export.created"]
    assert [e["action"] for e in finished] == ["export.completed"]
    assert pull_all(exports_topic) == []  # nothing was re-published


@pytest.mark.streams_left_open  # the overtaken worker stops mid-catalog: see `export_store.iter_products`
def test_worker_slower_than_its_lease_does_not_notify_twice(
    pipeline: Pipeline, exports_topic: str, stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = pipeline.scope
    message, _ = export_with_email(pipeline, exports_topic, products=2)
    lease = get_settings().stale_after_seconds
    real_iter = export_store.iter_products
    slow = threading.local()
    release = threading.Event()

    def lagging_iter(scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        for product in real_iter(scope, start_after):
            if getattr(slow, "on", False):
                # A storage or Firestore hiccup: alive, but slower than the lease. Held until the other
                # worker has finished, rather than slept for one lease: a worker waking a few ms after
                # its lease lapsed renewed it before the test could claim, and the test failed.
                assert release.wait(60)
            yield product

    monkeypatch.setattr(export_store, "iter_products", lagging_iter)

    def stored() -> dict[str, Any]:
        export = export_store.get_export(scope, message.export_id)
        assert export is not None
        return export

    def slow_worker() -> None:
        slow.on = True
        exports.run_export(message)

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(slow_worker)
        try:
            until("claimed", lambda: stored()["status"] == "RUNNING")
            until("lease lapsed", lambda: stored()["lease_until"] < utcnow(), timeout=2 * lease + 5)
            exports.run_export(message)  # the reconciler's republished copy, while the first worker still runs
            delivered_at = until("delivered", lambda: the_delivery(scope)["delivered_at"])
        finally:
            release.set()  # the first worker goes on, and finds its lease taken over
        first.result(timeout=60)
    until("delivered again, if re-sent", lambda: the_delivery(scope)["delivered_at"])
    time.sleep(1.0)
    delivery = the_delivery(scope)
    assert len(mails(stack.mail_dir, f"<{delivery['event_id']}@synq>")) == 1, "the export notification was sent twice"
    assert delivery["delivered_at"] == delivered_at and delivery["attempts"] == 1


def test_a_chunk_locked_by_a_dead_worker_does_not_stop_the_reconciler(pipeline: Pipeline) -> None:
    scope = pipeline.scope
    locked = pipeline.create("BULK_IMPORT", [{"title": "Locked", "sku": "LOCK-1", **GOOD}])
    lost = pipeline.create("BULK_IMPORT", [{"title": "Lost", "sku": "LOST-1", **GOOD}])
    assert {m.job_id for m in pipeline.dispatch_all()} == {locked["id"], lost["id"]}  # pulled and dropped: lost
    holding, release = threading.Event(), threading.Event()
    chunk_ref = job_ref(scope, locked["id"]).collection("chunks").document(chunk_id(0))

    @firestore.transactional
    def dead_worker_step(tx: firestore.Transaction) -> None:
        read(chunk_ref, transaction=tx)  # what apply_chunk_step reads first; the worker dies before committing
        holding.set()
        release.wait(60)
        raise RuntimeError("the worker is gone")  # rolls back, so the lock is released when the test ends

    def hold() -> None:
        with pytest.raises(RuntimeError):
            dead_worker_step(firestore_client().transaction())

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold)
        try:
            assert holding.wait(30)
            time.sleep(get_settings().stale_after_seconds + 0.5)  # both chunks are stale now
            jobs.reconcile()
        finally:
            release.set()
            holder.result(timeout=60)
    republished = [ChunkMessage.model_validate_json(d) for d in pipeline.pull("chunks")]
    assert ChunkMessage(job_id=lost["id"], org_id=scope.org_id, tenant_id=scope.tenant_id, chunk=0) in republished
    for message in republished:
        if message.job_id == lost["id"]:
            jobs.process_chunk(message)
    assert pipeline.job(lost["id"])["status"] == "COMPLETED"


def test_a_worker_that_outlived_its_lease_never_overwrites_the_finished_file(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A writes every product, then stalls (a slow upload) past its lease; worker B claims the
    export, with a product more in the catalog, and finishes it. When A wakes, its file must not
    replace B's: the record and the file it names both say 3 products."""
    scope = pipeline.scope
    message, _ = export_with_email(pipeline, exports_topic, products=2)
    real_iter = export_store.iter_products
    stalled, release = threading.Event(), threading.Event()
    slow = threading.local()

    def stalling_iter(scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from real_iter(scope, start_after)
        if getattr(slow, "on", False):
            stalled.set()  # every product written: only the upload's close and the compose are left
            assert release.wait(60)

    monkeypatch.setattr(export_store, "iter_products", stalling_iter)

    def stalled_worker() -> None:
        slow.on = True
        exports.run_export(message)

    def stored() -> dict[str, Any]:
        export = export_store.get_export(scope, message.export_id)
        assert export is not None
        return export

    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(stalled_worker)
        try:
            assert stalled.wait(30)
            until("lease lapsed", lambda: stored()["lease_until"] < utcnow(), timeout=2 * get_settings().stale_after_seconds + 5)
            assert pipeline.run("BULK_IMPORT", [{"title": "Dup 2", "sku": "DUP-2", **GOOD}])["status"] == "COMPLETED"
            exports.run_export(message)  # the reconciler's copy: a second claim, which finishes
        finally:
            release.set()
        first.result(timeout=60)

    record = exports.get_export(scope, message.export_id)
    assert record["status"] == "COMPLETED" and record["product_count"] == 3, record
    assert record["object"] == f"exports/{scope.org_id}/{scope.tenant_id}/{message.export_id}.2.jsonl"  # the second claim's own name
    lines = blobs.bucket().blob(record["object"]).download_as_bytes().splitlines()
    assert sorted(json.loads(line)["sku"] for line in lines) == ["DUP-0", "DUP-1", "DUP-2"]
    # The refused worker removed what it composed; no partial is left either.
    assert [b.name for b in blobs.bucket().list_blobs(prefix=f"exports/{scope.org_id}/{scope.tenant_id}/")] == [record["object"]]
    delivery = export_store.get_delivery(scope, the_delivery(scope)["id"])
    assert delivery is not None and json.loads(delivery["body"])["data"]["object"] == record["object"]


def test_finishing_again_with_the_same_claim_is_not_refused(pipeline: Pipeline, exports_topic: str) -> None:
    """A finish commit run again by the client after its answer was lost finds the export finished by
    its own claim: that is not a refusal, or the worker would delete the file the record names."""
    scope = pipeline.scope
    message, _ = export_with_email(pipeline, exports_topic, products=1)
    claim = export_store.claim_export(scope, message.export_id, 60)
    assert claim is not None and claim["claims"] == 1
    audit = {"id": str(uuid.uuid4()), "action": "export.completed"}
    changes = {"status": "COMPLETED", "object": exports.object_name(scope, message.export_id, 1)}
    assert export_store.finish_export(scope, message.export_id, claim["lease_owner"], changes, None, audit)
    assert export_store.finish_export(scope, message.export_id, claim["lease_owner"], changes, None, audit)
    assert not export_store.finish_export(scope, message.export_id, "another claim", changes, None, audit)


@pytest.mark.streams_left_open  # the failing read stops mid-catalog, as a broken stream would
def test_a_storage_fault_releases_the_claim_so_the_redelivery_runs_it(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_export raises Transient for Pub/Sub to redeliver; the redelivery must find the export
    claimable, not RUNNING under a live lease that makes it acknowledge and do nothing."""
    scope = pipeline.scope
    message, _ = export_with_email(pipeline, exports_topic, products=2)
    real_iter = export_store.iter_products
    calls = []

    def breaking_iter(scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        calls.append(1)
        for n, product in enumerate(real_iter(scope, start_after)):
            if len(calls) == 1 and n == 1:
                # What paths.rows raises once a broken stream would not resume.
                raise gexc.ServiceUnavailable("the stream broke")
            yield product

    monkeypatch.setattr(export_store, "iter_products", breaking_iter)
    with pytest.raises(errors.Transient):
        exports.run_export(message)
    stored = export_store.get_export(scope, message.export_id)
    assert stored is not None and stored["status"] == "QUEUED", stored
    assert stored["lease_until"] is None and stored["lease_owner"] is None

    exports.run_export(message)  # Pub/Sub's redelivery, at once: no lease to wait out
    record = exports.get_export(scope, message.export_id)
    assert record["status"] == "COMPLETED" and record["product_count"] == 2, record
    assert [b.name for b in blobs.bucket().list_blobs(prefix=f"exports/{scope.org_id}/{scope.tenant_id}/")] == [record["object"]]


def test_only_the_claims_owner_releases_it(pipeline: Pipeline, exports_topic: str) -> None:
    scope = pipeline.scope
    message, _ = export_with_email(pipeline, exports_topic, products=1)
    claim = export_store.claim_export(scope, message.export_id, 60)
    assert claim is not None
    assert not export_store.release_export(scope, message.export_id, "another claim")
    stored = export_store.get_export(scope, message.export_id)
    assert stored is not None and stored["status"] == "RUNNING" and stored["lease_owner"] == claim["lease_owner"]
    assert export_store.release_export(scope, message.export_id, claim["lease_owner"])
    stored = export_store.get_export(scope, message.export_id)
    assert stored is not None and stored["status"] == "QUEUED" and stored["lease_owner"] is None
    assert not export_store.release_export(scope, message.export_id, claim["lease_owner"])  # released once


def test_an_export_that_never_finishes_fails_after_its_claims_and_is_not_republished(
    pipeline: Pipeline, exports_topic: str, stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export longer than run_export's timeout is killed on every claim. Each claim's lease
    lapses, the reconciler republishes it, the next claim starts over from the first product: without
    a bound it never ends. After `export_max_claims` claims the next one fails it, and notifies."""
    scope = pipeline.scope
    message, address = export_with_email(pipeline, exports_topic, products=2)
    monkeypatch.setenv("SYNQ_EXPORT_MAX_CLAIMS", "2")
    monkeypatch.setenv("SYNQ_STALE_AFTER_SECONDS", "0.5")  # the lease, and the reconciler's staleness
    get_settings.cache_clear()  # exports_topic's teardown clears it again once monkeypatch restored these
    runs: list[int] = []

    def killed_iter(scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        runs.append(1)
        raise Killed
        yield "", {}  # a generator, as the real one is

    monkeypatch.setattr(export_store, "iter_products", killed_iter)

    def stored() -> dict[str, Any]:
        export = export_store.get_export(scope, message.export_id)
        assert export is not None
        return export

    def republished() -> list[str]:
        exports.reconcile(utcnow())
        return [m for m in (ExportMessage.model_validate_json(d).export_id for d in pull_all(exports_topic)) if m == message.export_id]

    for claim in (1, 2):
        with pytest.raises(Killed):
            exports.run_export(message)
        assert stored()["status"] == "RUNNING" and stored()["claims"] == claim
        until("lease lapsed", lambda: stored()["lease_until"] < utcnow(), timeout=10)
        time.sleep(0.6)  # untouched for longer than stale_after_seconds
        assert republished() == [message.export_id]  # the reconciler sends it to run again

    exports.run_export(message)  # the third claim: over the bound, it fails the export without running it
    assert len(runs) == 2
    record = exports.get_export(scope, message.export_id)
    assert record["status"] == "FAILED" and record["error"] == "too_many_attempts" and record["completed_at"], record
    assert record["product_count"] is None

    # Its failure goes out as any failed export's: an audit event with the reason, a notification.
    events, _ = catalog.list_audit(scope, limit=200, cursor=None)
    [failed] = [e for e in events if e["entity_id"] == message.export_id and e["action"] != "export.created"]
    assert failed["action"] == "export.failed" and failed["details"]["error"] == "too_many_attempts", failed
    until("delivered", lambda: the_delivery(scope)["delivered_at"])
    delivery = the_delivery(scope)
    assert delivery["type"] == "export.failed" and delivery["export_id"] == message.export_id
    [mail] = mails(stack.mail_dir, f"<{delivery['event_id']}@synq>")
    assert mail["To"] == address and "failed" in mail["Subject"]

    # And nothing runs it again: no claim, and the reconciler leaves it alone.
    time.sleep(0.6)
    assert republished() == []
    exports.run_export(message)
    assert len(runs) == 2 and stored()["claims"] == 3 and stored()["status"] == "FAILED"
