"""Which events a tenant hears of, and what a bulk job's end says by email."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from common.models.export import EVENT_TYPES, NotificationSettingsIn
from common.services.notifications import _job_email, subscribed

JOB = "3f0c2d4e-0000-4000-8000-000000000001"


def ended(**changes: Any) -> dict[str, Any]:
    data = {
        "job_id": JOB,
        "job_type": "BULK_IMPORT",
        "status": "COMPLETED",
        "total_items": 5,
        "processed_items": 5,
        "failed_items": 0,
        "item_count": 5,
        "what_if": False,
        "retry_of": None,
        "created_at": "2026-11-23T10:00:00Z",
        "completed_at": "2026-11-23T10:00:09Z",
    }
    return {**data, **changes}


@pytest.mark.parametrize(
    ("settings_doc", "heard"),
    [
        ({}, {"export.completed", "export.failed"}),  # no settings: the seed's export notification
        ({"channel": "webhook"}, {"export.completed", "export.failed"}),  # settings stored before events existed
        ({"events": []}, set()),
        ({"events": ["bulk_job.failed", "export.completed"]}, {"bulk_job.failed", "export.completed"}),
    ],
)
def test_a_tenant_hears_of_the_events_it_asks_for_or_of_an_export_by_default(settings_doc: dict[str, Any], heard: set[str]) -> None:
    assert {event for event in EVENT_TYPES if subscribed(settings_doc, event)} == heard


def test_events_must_be_known_and_are_few() -> None:
    assert NotificationSettingsIn.model_validate({"channel": "email", "email": "a@example.com"}).events == ["export.completed", "export.failed"]
    with pytest.raises(ValidationError):
        NotificationSettingsIn.model_validate({"channel": "email", "email": "a@example.com", "events": ["bulk_job.started"]})
    with pytest.raises(ValidationError):
        NotificationSettingsIn.model_validate({"channel": "email", "email": "a@example.com", "events": ["export.failed"] * 11})


def test_a_completed_job_email_says_what_was_applied_and_nothing_to_do() -> None:
    subject, text = _job_email(ended())
    assert subject == f"Synq bulk job {JOB} COMPLETED: 5 of 5 items applied"
    assert "Applied: 5" in text and "Failed: 0" in text
    assert "results" not in text and "retry" not in text


def test_a_failed_job_email_points_at_its_failures_and_its_retry() -> None:
    subject, text = _job_email(ended(status="FAILED", processed_items=3, failed_items=2))
    assert subject.endswith("FAILED: 3 of 5 items applied")
    assert f"GET /api/v1/pim/bulk-jobs/{JOB}/results?status=failed" in text and f"POST /api/v1/pim/bulk-jobs/{JOB}/retry" in text


def test_a_job_cancelled_before_it_ran_counts_its_payload() -> None:
    subject, text = _job_email(ended(status="CANCELLED", total_items=None, processed_items=None, failed_items=None))
    assert subject.endswith("CANCELLED: 0 of 5 items applied")
    assert "Items: 5" in text and f"/bulk-jobs/{JOB}/retry" in text and "results" not in text


def test_a_job_whose_payload_expired_says_so_and_points_at_no_retry() -> None:
    _, text = _job_email(ended(status="FAILED", processed_items=0, failed_items=5, error="payload_expired"))
    assert "Its payload passed its retention before the job ran" in text
    assert "/retry" not in text and "results" not in text


def test_a_dry_run_email_says_nothing_was_committed() -> None:
    subject, text = _job_email(ended(what_if=True))
    assert subject.endswith("COMPLETED: 5 of 5 items would apply (dry run)")
    assert "nothing was committed" in text and "Would apply: 5" in text and "Applied" not in text
