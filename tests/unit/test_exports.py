"""The export download is a redirect to a signed Cloud Storage URL, never the file through the api
function: the object is looked up first, so a missing file or a storage fault is this API's JSON
error rather than Cloud Storage's answer after the redirect."""

from __future__ import annotations

from typing import Any

import google.auth.exceptions
import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.services import exports
from common.store.paths import Scope

SCOPE = Scope("org-1", "tenant-1")
EXPORT_ID = "0b6b5e0e-6d55-4c5e-9d8a-3c1e1f6f5a10"


@pytest.fixture
def completed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    record = {"id": EXPORT_ID, "status": "COMPLETED", "object": f"exports/org-1/tenant-1/{EXPORT_ID}.2.jsonl"}
    monkeypatch.setattr(exports.store, "get_export", lambda scope, export_id: record if export_id == EXPORT_ID else None)
    return record


class Storage:
    """blobs.exists and blobs.signed_url over one object, or raising `fault` at `where`."""

    def __init__(self, present: bool = True, fault: Exception | None = None, where: str = "exists") -> None:
        self.present, self.fault, self.where = present, fault, where
        self.signed: list[tuple[str, dict[str, Any]]] = []

    def exists(self, name: str) -> bool:
        if self.fault is not None and self.where == "exists":
            raise self.fault
        return self.present

    def signed_url(self, name: str, **options: Any) -> str:
        if self.fault is not None and self.where == "sign":
            raise self.fault
        self.signed.append((name, options))
        return f"https://storage.example/{name}?X-Goog-Signature=abc"


def serve(monkeypatch: pytest.MonkeyPatch, storage: Storage) -> Storage:
    monkeypatch.setattr(exports.blobs, "exists", storage.exists)
    monkeypatch.setattr(exports.blobs, "signed_url", storage.signed_url)
    return storage


def test_the_download_is_a_short_lived_signed_url_of_the_file_the_record_names(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any]) -> None:
    storage = serve(monkeypatch, Storage())
    assert exports.download_location(SCOPE, EXPORT_ID) == f"https://storage.example/{completed['object']}?X-Goog-Signature=abc"
    [(name, options)] = storage.signed
    assert name == completed["object"]
    assert options == {"seconds": 300, "content_type": "application/x-ndjson", "disposition": f'attachment; filename="{EXPORT_ID}.jsonl"'}


def test_a_file_the_lifecycle_rule_deleted_is_410_before_any_redirect(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any]) -> None:
    storage = serve(monkeypatch, Storage(present=False))
    with pytest.raises(errors.Gone) as raised:
        exports.download_location(SCOPE, EXPORT_ID)
    assert raised.value.status == 410 and raised.value.code == "export_file_gone"
    assert "POST /api/v1/pim/export" in raised.value.message and "synq-local" not in raised.value.message
    assert storage.signed == []


@pytest.mark.parametrize("fault", [gexc.ServiceUnavailable("down"), gexc.InternalServerError("oops"), gexc.TooManyRequests("slow down")])
def test_a_storage_fault_is_503_unavailable(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any], fault: Exception) -> None:
    serve(monkeypatch, Storage(fault=fault))
    with pytest.raises(errors.Transient) as raised:
        exports.download_location(SCOPE, EXPORT_ID)
    assert raised.value.status == 503 and raised.value.code == "unavailable"


def test_a_signing_failure_is_503_unavailable(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any]) -> None:
    """IAM signBlob (or the metadata server's token) unreachable: retry, not a 500."""
    serve(monkeypatch, Storage(fault=google.auth.exceptions.TransportError("signBlob: 503"), where="sign"))
    with pytest.raises(errors.Transient):
        exports.download_location(SCOPE, EXPORT_ID)


@pytest.mark.parametrize(("status", "error"), [("RUNNING", errors.Conflict), ("FAILED", errors.Conflict)])
def test_an_unfinished_export_has_no_download(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any], status: str, error: type) -> None:
    completed["status"] = status
    storage = serve(monkeypatch, Storage())
    with pytest.raises(error):
        exports.download_location(SCOPE, EXPORT_ID)
    with pytest.raises(errors.NotFound):
        exports.download_location(SCOPE, "00000000-0000-0000-0000-000000000000")
    assert storage.signed == []


def test_the_cloud_signs_through_iam_as_the_functions_own_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the cloud: generate_signed_url gets the refreshed default credentials' email and
    access token, which makes the storage client call IAM signBlob."""
    from common.config import get_settings
    from common.store import blobs

    calls: list[dict[str, Any]] = []

    class Credentials:
        valid = False
        service_account_email = "synq-api@p.iam.gserviceaccount.com"
        token = "ya29.token"

    class Blob:
        def generate_signed_url(self, **kwargs: Any) -> str:
            calls.append(kwargs)
            return "https://storage.googleapis.com/b/o?X-Goog-Signature=x"

    class Bucket:
        def blob(self, name: str) -> Blob:
            return Blob()

    monkeypatch.delenv("SYNQ_EMULATOR_SIGNING_KEY", raising=False)
    get_settings.cache_clear()
    try:
        monkeypatch.setattr(blobs, "bucket", Bucket)
        monkeypatch.setattr(blobs, "signing_credentials", Credentials)
        blobs.signed_url("exports/o/t/x.jsonl", seconds=300, content_type="application/x-ndjson", disposition="attachment")
    finally:
        get_settings.cache_clear()
    [call] = calls
    assert call["version"] == "v4" and call["method"] == "GET" and call["expiration"].total_seconds() == 300
    assert call["service_account_email"] == Credentials.service_account_email and call["access_token"] == Credentials.token
    assert "credentials" not in call and "api_access_endpoint" not in call
    assert call["response_type"] == "application/x-ndjson" and call["response_disposition"] == "attachment"
