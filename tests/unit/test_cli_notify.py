"""How synqctl turns `notify set` arguments into the PUT /notification-settings body (no API involved)."""

from __future__ import annotations

import pytest

from synqctl.cli import DELIVERY_COLUMNS, UsageError, build_parser, parse_events, settings_body, table


@pytest.mark.parametrize(
    ("text", "events"),
    [
        ("bulk_job.completed", ["bulk_job.completed"]),
        ("bulk_job.completed,bulk_job.failed", ["bulk_job.completed", "bulk_job.failed"]),
        (" export.completed , bulk_job.cancelled ", ["export.completed", "bulk_job.cancelled"]),
        ("not.an.event", ["not.an.event"]),  # the API's 422 names the valid ones
    ],
)
def test_events_are_split_on_commas_and_stripped(text: str, events: list[str]) -> None:
    assert parse_events(text) == events


@pytest.mark.parametrize("text", ["", " ", "bulk_job.completed,", ",bulk_job.completed", "a,,b"])
def test_an_empty_event_name_is_refused_before_anything_is_sent(text: str) -> None:
    with pytest.raises(UsageError, match="--events takes event names separated by commas"):
        parse_events(text)


def test_set_builds_a_webhook_or_an_email_body_and_names_events_only_when_given() -> None:
    assert settings_body("https://hooks.example.com/x", None, None) == {"channel": "webhook", "webhook_url": "https://hooks.example.com/x"}
    assert settings_body(None, "ops@example.com", "bulk_job.failed") == {
        "channel": "email",
        "email": "ops@example.com",
        "events": ["bulk_job.failed"],
    }


def test_set_takes_one_channel_and_the_events_flag() -> None:
    args = build_parser().parse_args(["notify", "set", "--email", "ops@example.com", "--events", "bulk_job.completed,bulk_job.failed"])
    assert (args.webhook, args.email, args.events) == (None, "ops@example.com", "bulk_job.completed,bulk_job.failed")
    for argv in (["notify", "set"], ["notify", "set", "--email", "a@example.com", "--webhook", "https://x.example.com/"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 2


def test_the_deliveries_table_shows_the_export_or_the_job_a_notification_is_about() -> None:
    rows = [
        {"id": "d-1", "type": "bulk_job.completed", "job_id": "j-1", "export_id": None, "attempts": 1, "delivered_at": "2026-11-22T12:00:00Z"},
        {"id": "d-2", "type": "export.failed", "job_id": None, "export_id": "e-1", "attempts": 3, "last_error": "HTTP 500"},
    ]
    lines = table(rows, DELIVERY_COLUMNS).splitlines()
    assert lines[0].split() == ["ID", "TYPE", "EXPORT_OR_JOB_ID", "ATTEMPTS", "DELIVERED_AT", "LAST_ERROR"]
    assert lines[1].split() == ["d-1", "bulk_job.completed", "j-1", "1", "2026-11-22T12:00:00Z", "-"]
    assert lines[2].split() == ["d-2", "export.failed", "e-1", "3", "-", "HTTP", "500"]
