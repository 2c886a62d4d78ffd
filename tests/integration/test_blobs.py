"""The Cloud Storage adapter against the storage emulator."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from common.clients import storage_client
from common.store import blobs


def test_delete_many_deletes_in_batch_requests_of_100(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"it-blobs/{uuid.uuid4()}/"
    names = [f"{prefix}{n:03d}.jsonl" for n in range(150)]
    kept = f"{prefix}kept.jsonl"
    for name in [*names, kept]:
        blobs.put_text(name, "{}\n", content_type="application/x-ndjson")
    http = storage_client()._http
    sent: list[tuple[str, str]] = []
    real_request = http.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append((method, url))
        return real_request(method, url, *args, **kwargs)

    monkeypatch.setattr(http, "request", counted)
    blobs.delete_many([*names, f"{prefix}missing.jsonl"])  # a missing object is no error
    monkeypatch.undo()
    assert [(method, url.rsplit("/", 3)[-3:]) for method, url in sent] == [("POST", ["batch", "storage", "v1"])] * 2
    assert blobs.names(prefix) == [kept]
