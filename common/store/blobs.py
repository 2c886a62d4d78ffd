"""Large payloads and export files in Cloud Storage."""

from __future__ import annotations

import contextlib
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from common.clients import storage_client
from common.config import get_settings


def bucket() -> storage.Bucket:
    return storage_client().bucket(get_settings().bucket)


def put_text(name: str, text: str, content_type: str = "application/json") -> None:
    bucket().blob(name).upload_from_string(text.encode("utf-8"), content_type=content_type)


def open_text(name: str, chunk_size: int = 1 << 20) -> Any:
    """A text stream over the object, fetched `chunk_size` bytes at a time (raises NotFound)."""
    return bucket().blob(name).open("rt", chunk_size=chunk_size, encoding="utf-8")


def get_text(name: str) -> str:
    return bucket().blob(name).download_as_bytes().decode("utf-8")


def delete(name: str) -> None:
    """Delete the object if it is there."""
    with contextlib.suppress(gexc.NotFound):
        bucket().blob(name).delete()
