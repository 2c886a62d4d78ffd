"""A bulk job's end, told to the tenants that ask for it: the record is written in the transaction
that ends the job, queued after it, and queued by the reconciler when the worker died in between.

The pipeline runs in this process; the notification it queues is delivered by the session stack's
Cloud Tasks emulator and deliver_notification, by email to the stack's SMTP sink.
"""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common import errors
from common.domain.engine import derived_id
from common.models.base import utcnow
from common.models.job import ChunkMessage
from common.services import jobs, notifications
from common.store import blobs, tasks
from common.store import exports as export_store
from common.store import jobs as job_store
from tests.helpers import until
from tests.integration.conftest import Killed, Pipeline
from tests.integration.test_job_lifecycle import big_payload

GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
JOB_EVENTS = ["bulk_job.completed", "bulk_job.failed", "bulk_job.cancelled"]


def subscribe(pipeline: Pipeline, events: list[str] | None = JOB_EVENTS) -> str:
    address = f"jobs-{uuid.uuid4().hex[:8]}@example.com"
    body: dict[str, Any] = {"channel": "email", "email": address}
    if events is not None:
        body["events"] = events
    notifications.put_notification_settings(pipeline.principal, body)
    return address


def delivery_of(pipeline: Pipeline, job_id: str) -> dict[str, Any] | None:
    return export_store.get_delivery(pipeline.scope, derived_id(job_id, "notification"))


def mails_to(mail_dir: Path, address: str) -> list[email.message.Message]:
    found = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in mail_dir.glob("*.eml")]  # headers unfolded
    return [m for m in found if m["To"] == address]


def test_a_failed_job_tells_its_end_once_with_the_counts_of_its_record(pipeline: Pipeline, stack: Any) -> None:
    address = subscribe(pipeline)
    job = pipeline.run("BULK_IMPORT", [{"title": "One", "sku": "N-1", **GOOD}, {"sku": "N-2"}, {"title": "Three", "sku": "N-3", **GOOD}])
    assert job["status"] == "FAILED"
    delivery = delivery_of(pipeline, job["id"])
    assert delivery is not None
    assert (delivery["type"], delivery["job_id"], delivery["export_id"], delivery["channel"]) == ("bulk_job.failed", job["id"], None, "email")
    event = json.loads(delivery["body"])
    assert event == {
        "type": "bulk_job.failed",
        "data": {
            "job_id": job["id"],
            "job_type": "BULK_IMPORT",
            "status": "FAILED",
            "total_items": 3,
            "processed_items": 2,
            "failed_items": 1,
            "item_count": 3,
            "what_if": False,
            "retry_of": None,
            "error": None,
            "created_at": job["created_at"],
            "completed_at": job["completed_at"],
        },
    }
    until("delivered", lambda: (delivery_of(pipeline, job["id"]) or {}).get("delivered_at"))
    [mail] = until("the email", lambda: mails_to(stack.mail_dir, address))
    assert mail["Subject"] == f"Synq bulk job {job['id']} FAILED: 2 of 3 items applied"
    text = mail.get_payload(decode=True).decode()
    assert f"/bulk-jobs/{job['id']}/results?status=failed" in text and f"/bulk-jobs/{job['id']}/retry" in text
    # A redelivered last message finds the job ended: no second record, no second email.
    last = ChunkMessage(job_id=job["id"], org_id=pipeline.scope.org_id, tenant_id=pipeline.scope.tenant_id, chunk=0)
    jobs.process_chunk(last)
    assert delivery_of(pipeline, job["id"])["attempts"] == 1  # type: ignore[index]
    records, _ = notifications.list_deliveries(pipeline.scope, limit=50, cursor=None)
    assert [r["id"] for r in records] == [delivery["id"]]


def test_job_events_are_opt_in_and_exports_stay_told_by_default(pipeline: Pipeline) -> None:
    subscribe(pipeline, events=None)
    assert notifications.get_notification_settings(pipeline.scope)["events"] == ["export.completed", "export.failed"]
    job = pipeline.run("BULK_IMPORT", [{"title": "Quiet", "sku": "Q-1", **GOOD}])
    assert job["status"] == "COMPLETED"
    assert delivery_of(pipeline, job["id"]) is None
    # Asked for completions only: a completed job tells, a failed one does not.
    subscribe(pipeline, events=["bulk_job.completed"])
    told = pipeline.run("BULK_IMPORT", [{"title": "Told", "sku": "Q-2", **GOOD}])
    untold = pipeline.run("BULK_IMPORT", [{"sku": "Q-3"}])
    assert (told["status"], untold["status"]) == ("COMPLETED", "FAILED")
    assert delivery_of(pipeline, told["id"])["type"] == "bulk_job.completed"  # type: ignore[index]
    assert delivery_of(pipeline, untold["id"]) is None
    # Who changed what the tenant hears of is in the audit log.
    changes = [e["details"] for e in pipeline.audit_events() if e["action"] == "notification_settings.updated"]
    assert changes == [
        {"channel": "email", "events": ["bulk_job.completed"]},
        {"channel": "email", "events": ["export.completed", "export.failed"]},
    ]  # newest first


def test_a_job_cancelled_before_it_ran_tells_its_cancel(pipeline: Pipeline, stack: Any) -> None:
    address = subscribe(pipeline)
    job = pipeline.create("BULK_IMPORT", [{"title": "Never", "sku": "C-1", **GOOD}, {"title": "Run", "sku": "C-2", **GOOD}])
    cancelled = jobs.cancel_job(pipeline.principal, job["id"])
    delivery = delivery_of(pipeline, job["id"])
    assert delivery is not None and delivery["type"] == "bulk_job.cancelled"
    data = json.loads(delivery["body"])["data"]
    assert (data["status"], data["total_items"], data["item_count"]) == ("CANCELLED", None, 2)
    assert data["completed_at"] == cancelled["completed_at"]
    [mail] = until("the email", lambda: mails_to(stack.mail_dir, address))
    assert mail["Subject"] == f"Synq bulk job {job['id']} CANCELLED: 0 of 2 items applied"
    pipeline.dispatch_all()  # the job's own message, arriving after the cancel, changes nothing
    assert delivery_of(pipeline, job["id"])["attempts"] == 1  # type: ignore[index]


def test_a_notification_whose_worker_died_before_queueing_it_is_queued_by_the_reconciler(
    pipeline: Pipeline, stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = subscribe(pipeline)
    job = pipeline.create("BULK_IMPORT", [{"title": "Last", "sku": "R-1", **GOOD}])
    [message] = pipeline.dispatch_all()

    def killed(*args: Any) -> None:
        raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(notifications, "enqueue", killed)
        with pytest.raises(Killed):
            jobs.process_chunk(message)
    assert pipeline.job(job["id"])["status"] == "COMPLETED"
    recorded = delivery_of(pipeline, job["id"])
    assert recorded is not None and recorded["awaiting_queue"] is True  # written with the end, never queued
    # Not before it is overdue: a worker may be queueing it right now.
    notifications.requeue(recorded["created_at"] - timedelta(seconds=1))
    assert delivery_of(pipeline, job["id"])["awaiting_queue"] is True  # type: ignore[index]
    notifications.requeue(utcnow() + timedelta(seconds=1))
    assert delivery_of(pipeline, job["id"])["awaiting_queue"] is False  # type: ignore[index]
    until("delivered", lambda: (delivery_of(pipeline, job["id"]) or {}).get("delivered_at"))
    [mail] = until("the email", lambda: mails_to(stack.mail_dir, address))
    assert mail["Subject"] == f"Synq bulk job {job['id']} COMPLETED: 1 of 1 items applied"


def test_a_redelivery_whose_queueing_failed_is_queued_by_the_reconciler(pipeline: Pipeline, stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A redeliver clears `delivered_at` and starts a new series before it queues that series: a
    # queue that fails then must not leave the record waiting for a task that nothing will queue.
    address = subscribe(pipeline)
    job = pipeline.run("BULK_IMPORT", [{"title": "Again", "sku": "D-1", **GOOD}])
    until("delivered", lambda: (delivery_of(pipeline, job["id"]) or {}).get("delivered_at"))
    until("the email", lambda: mails_to(stack.mail_dir, address))

    def queue_down(*args: Any) -> None:
        raise errors.Transient("Enqueueing the notification failed.")

    with monkeypatch.context() as patched:
        patched.setattr(tasks, "enqueue_delivery", queue_down)
        answered = notifications.redeliver(pipeline.principal, derived_id(job["id"], "notification"))
    assert (answered["delivered_at"], answered["attempts"]) == (None, 1)
    record = delivery_of(pipeline, job["id"])
    assert record is not None and (record["redeliveries"], record["awaiting_queue"]) == (1, True)
    notifications.requeue(utcnow() + timedelta(seconds=1))
    until("delivered again", lambda: (delivery_of(pipeline, job["id"]) or {}).get("delivered_at"))
    assert len(until("the second email", lambda: len(mails_to(stack.mail_dir, address)) == 2 and mails_to(stack.mail_dir, address))) == 2


def test_a_job_whose_payload_expired_tells_so_and_points_at_no_retry(pipeline: Pipeline, stack: Any) -> None:
    address = subscribe(pipeline)
    job = pipeline.create("BULK_IMPORT", big_payload("GONE"))
    stored = job_store.get(pipeline.scope, job["id"])
    assert stored is not None
    blobs.bucket().blob(stored["payload_object"]).delete()  # what the bucket's retention rule does
    [] = pipeline.dispatch_all()
    assert pipeline.job(job["id"])["status"] == "FAILED"
    with pytest.raises(errors.Gone):
        jobs.retry_job(pipeline.principal, job["id"], {})
    assert pipeline.results(job["id"], failed_only=True) == []
    [mail] = until("the email", lambda: mails_to(stack.mail_dir, address))
    text = mail.get_payload(decode=True).decode()
    assert "/retry" not in text and "results?status=failed" not in text
    assert "Its payload passed its retention before the job ran, so no item ran." in text
    data = json.loads(delivery_of(pipeline, job["id"])["body"])["data"]  # type: ignore[index]
    assert (data["status"], data["error"], data["processed_items"], data["failed_items"]) == ("FAILED", "payload_expired", 0, 400)
