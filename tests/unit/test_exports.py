"""The export download's first block is fetched before the answer starts: a missing file or a storage
fault is a JSON error, not a broken stream under a 200 (or Flask's HTML 500)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.services import exports
from common.store.paths import Scope

SCOPE = Scope("org-1", "tenant-1")
EXPORT_ID = "0b6b5e0e-6d55-4c5e-9d8a-3c1e1f6f5a10"


class Reader(io.BytesIO):
    """A BlobReader over `content`, or one whose every read raises `error` (the client fetches lazily)."""

    def __init__(self, content: bytes = b"", error: Exception | None = None) -> None:
        super().__init__(content)
        self.error = error

    def read(self, size: int | None = -1) -> bytes:
        if self.error is not None:
            raise self.error
        return super().read(size)


class Bucket:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.opened: list[str] = []

    def blob(self, name: str) -> Any:
        bucket = self

        class Blob:
            def open(self, mode: str, chunk_size: int) -> Reader:
                bucket.opened.append(name)
                return bucket.reader

        return Blob()


@pytest.fixture
def completed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    record = {"id": EXPORT_ID, "status": "COMPLETED", "object": f"exports/org-1/tenant-1/{EXPORT_ID}.2.jsonl"}
    monkeypatch.setattr(exports.store, "get_export", lambda scope, export_id: record if export_id == EXPORT_ID else None)
    return record


def serve(monkeypatch: pytest.MonkeyPatch, reader: Reader) -> Bucket:
    bucket = Bucket(reader)
    monkeypatch.setattr(exports.blobs, "bucket", lambda: bucket)
    return bucket


def test_the_download_streams_the_file_the_record_names(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any]) -> None:
    content = b'{"id": "a"}\n' * 200_000  # more than one 1 MiB block
    bucket = serve(monkeypatch, Reader(content))
    assert b"".join(exports.download(SCOPE, EXPORT_ID)) == content
    assert bucket.opened == [completed["object"]]


def test_a_file_the_lifecycle_rule_deleted_is_410_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any]) -> None:
    serve(monkeypatch, Reader(error=gexc.NotFound("No such object: synq-local/exports/...")))
    with pytest.raises(errors.Gone) as raised:
        exports.download(SCOPE, EXPORT_ID)
    assert raised.value.status == 410 and raised.value.code == "export_file_gone"
    assert "POST /api/v1/pim/export" in raised.value.message and "synq-local" not in raised.value.message


@pytest.mark.parametrize("fault", [gexc.ServiceUnavailable("down"), gexc.InternalServerError("oops"), gexc.TooManyRequests("slow down")])
def test_a_storage_fault_on_the_first_block_is_503_unavailable(monkeypatch: pytest.MonkeyPatch, completed: dict[str, Any], fault: Exception) -> None:
    serve(monkeypatch, Reader(error=fault))
    with pytest.raises(errors.Transient) as raised:
        exports.download(SCOPE, EXPORT_ID)
    assert raised.value.status == 503 and raised.value.code == "unavailable"
