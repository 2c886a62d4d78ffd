"""Catalog export over HTTP on the running stack: file contents, signed webhooks, retries, email;
and the bulk-job events a tenant may ask for on the same channel."""

from __future__ import annotations

import email
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook

from common.store import blobs
from tests.conftest import Tenant, mint

GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
SETTINGS = "/api/v1/pim/notification-settings"


@dataclass
class Receiver:
    """A webhook endpoint on loopback that fails its first `fail_first` calls."""

    fail_first: int = 0
    delay: float = 0.0
    answer_bytes: int = 0  # the size of a body sent with each answer
    calls: list[dict[str, Any]] = field(default_factory=list)
    answered: list[dict[str, Any]] = field(default_factory=list)  # per call: body bytes sent, whether all
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/synq"

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} webhook calls arrived"
            time.sleep(0.1)
        return self.calls


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.calls.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()})
            time.sleep(state.delay)
            status = 500 if len(state.calls) <= state.fail_first else 204
            if not state.answer_bytes:
                self.send_response(status)
                self.end_headers()
                return
            self.send_response(200 if status == 204 else status)
            self.send_header("Content-Length", str(state.answer_bytes))
            self.end_headers()
            sent, block = 0, b"x" * (1 << 20)
            try:
                while sent < state.answer_bytes:
                    self.wfile.write(block)  # blocks once the socket buffers are full, until the caller reads
                    sent += len(block)
            except OSError:  # the caller closed the connection
                pass
            state.answered.append({"sent": sent, "whole": sent >= state.answer_bytes})

        def log_message(self, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.server.shutdown()


def import_catalog(tenant: Tenant) -> dict[str, str]:
    job = tenant.create_job(
        "BULK_IMPORT",
        [
            {"title": "Exported one", "sku": "E-1", **GOOD},
            {"title": "Exported two", "sku": "E-2", **GOOD},
            {"title": "Blocked", "sku": "E-3", "variants": [{"sku": "E-1"}], **GOOD},  # E-1 and E-3: DUPLICATE_SKU
            {"title": "Warnings only", "sku": "E-4"},
        ],
    )
    assert tenant.wait_job(job["id"])["status"] == "COMPLETED"
    results = tenant.get(f"/api/v1/pim/bulk-jobs/{job['id']}/results").json()
    return {r["identifier"]: r["product_id"] for r in results}


def set_webhook(tenant: Tenant, url: str) -> str:
    response = tenant.request("PUT", SETTINGS, json={"channel": "webhook", "webhook_url": url})
    assert response.status_code == 200, response.text
    secret = response.json()["signing_secret"]
    assert secret.startswith("whsec_")
    return str(secret)


def export(tenant: Tenant) -> str:
    response = tenant.post("/api/v1/pim/export")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "success"
    assert body["message"] == "Export job queued. You will be notified when the file is ready in Cloud Storage."
    return str(body["export_id"])


def wait_export(tenant: Tenant, export_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        record = tenant.get(f"/api/v1/pim/exports/{export_id}").json()
        if record["status"] in ("COMPLETED", "FAILED"):
            return dict(record)
        assert time.monotonic() < deadline, record
        time.sleep(0.2)


def test_signed_webhook_and_download_hold_exactly_the_exportable_products(tenant: Tenant, receiver: Receiver) -> None:
    ids = import_catalog(tenant)
    secret = set_webhook(tenant, receiver.url)
    export_id = export(tenant)
    [call] = receiver.wait_for(1)
    event = Webhook(secret).verify(call["body"], call["headers"])  # raises if the signature is wrong
    assert event["type"] == "export.completed"
    data = event["data"]
    assert data["export_id"] == export_id and data["status"] == "COMPLETED"
    assert data["product_count"] == 2 and data["excluded_count"] == 2
    assert data["object"] == f"exports/{tenant.org_id}/{tenant.tenant_id}/{export_id}.jsonl"
    # The receiver downloads with the signed link alone: no token, no tenant headers. The API answers
    # with a redirect to a short-lived signed Cloud Storage URL (here the storage emulator's), which
    # serves the file itself: it never passes through the api function.
    redirect = requests.get(data["download_url"], timeout=30, allow_redirects=False)
    assert redirect.status_code == 302, redirect.text[:300]
    assert redirect.headers["Cache-Control"] == "no-store" and redirect.content == b""
    location = redirect.headers["Location"]
    storage_url = os.environ["STORAGE_EMULATOR_HOST"].rstrip("/")
    assert location.startswith(f"{storage_url}/{blobs.bucket().name}/exports/"), location
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in location and "X-Goog-Expires=300&" in location and "X-Goog-Signature=" in location
    download = requests.get(location, timeout=30)  # no API headers at all
    assert download.status_code == 200, download.text[:300]
    assert download.headers["Content-Disposition"] == f'attachment; filename="{export_id}.jsonl"'
    assert download.content == blobs.bucket().blob(data["object"]).download_as_bytes()  # the file itself
    assert requests.get(data["download_url"], timeout=30).content == download.content  # as a client following redirects gets it
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert sorted(p["sku"] for p in lines) == ["E-2", "E-4"]  # warnings do not block, errors do
    assert lines[0] == tenant.get(f"/api/v1/pim/products/{lines[0]['id']}").json()
    record = wait_export(tenant, export_id)
    assert sorted(record["excluded_product_ids"]) == sorted([ids["E-1"], ids["E-3"]]) and record["product_count"] == 2
    # A tampered or expired link is refused, saying what to do instead.
    for link in (data["download_url"].replace("signature=", "signature=0"), re.sub(r"expires=\d+", "expires=1000", data["download_url"])):
        refused = requests.get(link, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_download_link"


def test_a_receiver_answering_a_huge_body_is_not_read(tenant: Tenant, receiver: Receiver) -> None:
    """Only the answer's status counts: a 64 MiB body is left unread (deliver_notification has 256 MiB,
    and a 400 MiB answer once took it to 896 MiB). The receiver sees its connection closed after at
    most what the sockets' buffers take, a few MiB, instead of sending all of it."""
    receiver.answer_bytes = 64 << 20
    import_catalog(tenant)
    set_webhook(tenant, receiver.url)
    export(tenant)
    receiver.wait_for(1)
    deadline = time.monotonic() + 60
    while not receiver.answered:
        assert time.monotonic() < deadline, "the receiver is still sending its answer"
        time.sleep(0.1)
    [answer] = receiver.answered
    assert not answer["whole"] and answer["sent"] < 32 << 20, answer
    while not (delivery := tenant.get("/api/v1/pim/notification-deliveries").json()[0])["delivered_at"]:
        assert time.monotonic() < deadline, delivery
        time.sleep(0.1)
    assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200, delivery


def test_failing_receiver_gets_the_same_webhook_id_until_it_accepts(tenant: Tenant, receiver: Receiver) -> None:
    receiver.fail_first = 2
    import_catalog(tenant)
    secret = set_webhook(tenant, receiver.url)
    export(tenant)
    calls = receiver.wait_for(3)
    time.sleep(1)
    assert len(receiver.calls) == 3, "a delivered notification must not be sent again"
    assert len({c["headers"]["webhook-id"] for c in calls}) == 1
    for call in calls:
        Webhook(secret).verify(call["body"], call["headers"])
    [delivery] = tenant.get("/api/v1/pim/notification-deliveries").json()
    assert delivery["attempts"] == 3 and delivery["delivered_at"] and delivery["last_status_code"] == 204
    assert delivery["event_id"] == calls[0]["headers"]["webhook-id"]


def test_a_rotation_answer_is_never_replayed_to_another_caller(tenant: Tenant, receiver: Receiver) -> None:
    """Idempotency keys are per caller: an editor sending the admin's key gets the editor's own 403,
    not the admin's kept answer with its signing secret."""
    set_webhook(tenant, receiver.url)
    keyed = tenant.headers(**{"Idempotency-Key": "rotate-1"})
    rotated = tenant.post(f"{SETTINGS}/rotate-secret", headers=keyed)
    assert rotated.status_code == 200 and rotated.json()["signing_secret"].startswith("whsec_")
    editor, _, _ = mint(tenant.org_id, [tenant.tenant_id], role="editor")
    refused = tenant.post(f"{SETTINGS}/rotate-secret", headers={**keyed, "Authorization": f"Bearer {editor}"})
    assert refused.status_code == 403 and "whsec_" not in refused.text
    again = tenant.post(f"{SETTINGS}/rotate-secret", headers=keyed)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == rotated.json()


def test_rotated_secret_signs_alongside_the_old_one_and_redeliver_sends_again(tenant: Tenant, receiver: Receiver) -> None:
    old = set_webhook(tenant, receiver.url)
    rotated = tenant.post(f"{SETTINGS}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["signing_secret"]
    assert new != old
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rotated.json()["previous_secret_expires_at"])  # as every timestamp
    export(tenant)
    [call] = receiver.wait_for(1)
    Webhook(old).verify(call["body"], call["headers"])
    Webhook(new).verify(call["body"], call["headers"])
    [delivery] = tenant.get("/api/v1/pim/notification-deliveries").json()
    again = tenant.post(f"/api/v1/pim/notification-deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 200
    assert again.json()["delivered_at"] is None and again.json()["updated_at"] > delivery["updated_at"]  # as stored
    calls = receiver.wait_for(2)
    assert calls[1]["headers"]["webhook-id"] == calls[0]["headers"]["webhook-id"]


def test_a_job_end_is_a_signed_webhook_for_a_tenant_that_asks_for_it(tenant: Tenant, receiver: Receiver) -> None:
    response = tenant.request(
        "PUT",
        SETTINGS,
        json={"channel": "webhook", "webhook_url": receiver.url, "events": ["bulk_job.completed", "export.completed", "bulk_job.completed"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["events"] == ["export.completed", "bulk_job.completed"]  # each once, in the documented order
    secret = response.json()["signing_secret"]
    job = tenant.create_job("BULK_IMPORT", [{"title": "Told", "sku": "W-1", **GOOD}, {"title": "Told too", "sku": "W-2", **GOOD}])
    ended = tenant.wait_job(job["id"])
    [call] = receiver.wait_for(1)
    event = Webhook(secret).verify(call["body"], call["headers"])
    assert event["type"] == "bulk_job.completed"
    record = tenant.get(f"/api/v1/pim/bulk-jobs/{job['id']}").json()
    assert event["data"] == {"job_id": job["id"], **{k: record[k] for k in event["data"] if k != "job_id"}}
    assert (event["data"]["status"], event["data"]["processed_items"], event["data"]["failed_items"]) == ("COMPLETED", 2, 0)
    assert event["data"]["completed_at"] == ended["completed_at"]
    [delivery] = tenant.get("/api/v1/pim/notification-deliveries").json()
    assert (delivery["type"], delivery["job_id"], delivery["export_id"], delivery["event_id"]) == (
        "bulk_job.completed",
        job["id"],
        None,
        call["headers"]["webhook-id"],
    )


def test_email_channel_leaves_an_eml(tenant: Tenant, stack) -> None:  # type: ignore[no-untyped-def]
    import_catalog(tenant)
    address = f"ops-{tenant.tenant_id[:8]}@example.com"
    response = tenant.request("PUT", SETTINGS, json={"channel": "email", "email": address})
    assert response.status_code == 200 and "signing_secret" not in response.json()
    export_id = export(tenant)
    deadline = time.monotonic() + 60
    while True:
        mails = [email.message_from_bytes(p.read_bytes()) for p in stack.mail_dir.glob("*.eml")]
        mine = [m for m in mails if m["To"] == address]
        if mine:
            break
        assert time.monotonic() < deadline, "no email arrived"
        time.sleep(0.2)
    [message] = mine
    assert export_id in message["Subject"]
    text = message.get_payload(decode=True).decode()
    assert "Products exported: 2" in text and f"/exports/{export_id}/download" in text
    # The link is in the raw mail as it is, one line a person can copy.
    [link] = [line for line in text.splitlines() if line.startswith("Download: ")]
    assert link in message.as_string() and message["Content-Transfer-Encoding"] == "7bit"


def test_notification_settings_validation_and_roles(tenant: Tenant, make_tenant) -> None:  # type: ignore[no-untyped-def]
    assert tenant.get(SETTINGS).json()["channel"] is None
    bad = [
        ({"channel": "pigeon"}, 422, "invalid_value", "channel"),
        ({}, 400, "missing_field", "channel"),
        ({"channel": "webhook"}, 400, "missing_field", "webhook_url"),
        ({"channel": "email", "webhook_url": "https://example.com/x"}, 400, "missing_field", "email"),
        ({"channel": "webhook", "webhook_url": "ftp://example.com/x"}, 422, "invalid_webhook_url", "webhook_url"),
        ({"channel": "email", "email": "not-an-address"}, 422, "invalid_value", "email"),
        ({"channel": "webhook", "webhook_url": "https://example.com/x", "extra": 1}, 422, "unknown_field", "extra"),
        ({"channel": "email", "email": "a@example.com", "events": ["bulk_job.started"]}, 422, "invalid_value", "events.0"),
        ({"channel": "email", "email": "a@example.com", "events": "bulk_job.completed"}, 422, "invalid_value", "events"),
    ]
    for body, status, code, named in bad:
        response = tenant.request("PUT", SETTINGS, json=body)
        assert response.status_code == status, (body, response.text)
        assert (response.json()["error"]["code"], response.json()["error"]["details"]) == (code, {"field": named})
    assert tenant.get(SETTINGS).json()["channel"] is None
    editor = make_tenant(role="editor")
    refused = editor.request("PUT", SETTINGS, json={"channel": "email", "email": "a@example.com"})
    assert refused.status_code == 403
    assert editor.get(SETTINGS).status_code == 403  # the URL may itself be a credential
    assert tenant.post(f"{SETTINGS}/rotate-secret").status_code == 409


def test_export_unknown_and_not_ready(tenant: Tenant) -> None:
    assert tenant.get("/api/v1/pim/exports/00000000-0000-0000-0000-000000000000").status_code == 404
    assert tenant.get("/api/v1/pim/exports/00000000-0000-0000-0000-000000000000/download").status_code == 404
    assert tenant.get("/api/v1/pim/exports/x/download", headers={"Accept": "*/*"}).status_code == 401


def test_downloading_an_export_whose_file_is_gone_is_a_json_410(tenant: Tenant) -> None:
    """The bucket's lifecycle rule deletes export files after 30 days (docs/deploy.md); the record stays."""
    import_catalog(tenant)
    export_id = export(tenant)
    record = wait_export(tenant, export_id)
    assert record["status"] == "COMPLETED"
    # With a token the same: a redirect, which requests follows without the token (another port).
    redirect = tenant.get(f"/api/v1/pim/exports/{export_id}/download", allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["Cache-Control"] == "no-store"
    followed = tenant.get(f"/api/v1/pim/exports/{export_id}/download")
    assert followed.status_code == 200 and followed.content == blobs.bucket().blob(record["object"]).download_as_bytes()
    assert [r.status_code for r in followed.history] == [302] and "Authorization" not in followed.request.headers
    blobs.bucket().blob(record["object"]).delete()
    response = tenant.get(f"/api/v1/pim/exports/{export_id}/download")
    assert response.status_code == 410, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "export_file_gone" and "POST /api/v1/pim/export" in error["message"]


@pytest.mark.parametrize("delivery_id", ["__x__", "__name__", "not-a-delivery", "00000000-0000-0000-0000-000000000000"])
def test_redelivering_an_id_that_is_no_delivery_is_a_json_404(tenant: Tenant, receiver: Receiver, delivery_id: str) -> None:
    """Delivery ids are UUIDs; any other string (Firestore refuses `__x__` as a document id) is not found."""
    set_webhook(tenant, receiver.url)
    response = tenant.post(f"/api/v1/pim/notification-deliveries/{delivery_id}/redeliver")
    assert response.status_code == 404, response.text[:300]
    assert response.json()["error"]["code"] == "not_found"
