"""Large payloads and export files in Cloud Storage."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.oauth2 import service_account

from common.clients import signing_credentials, storage_client
from common.config import get_settings
from common.domain.export_file import COMPOSE_MAX_SOURCES


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


# Cloud Storage takes at most 100 calls in one batch request.
BATCH_MAX_CALLS = 100


def delete_many(names: list[str]) -> None:
    """Delete the objects, 100 to a batch request (one request, not one per object). Best effort:
    a call of the batch that fails (the object missing included) leaves its object as it is."""
    client = storage_client()
    store = bucket()
    for start in range(0, len(names), BATCH_MAX_CALLS):
        with client.batch(raise_exception=False):
            for name in names[start : start + BATCH_MAX_CALLS]:
                store.blob(name).delete()


def compose(name: str, sources: list[str], content_type: str) -> None:
    """Concatenate the objects `sources`, in order, into the object `name`.

    Cloud Storage takes 1 to 32 sources a call; the storage emulator takes any number, so the
    limit is checked here, or a plan that broke it would pass every local test."""
    if not 1 <= len(sources) <= COMPOSE_MAX_SOURCES:
        raise ValueError(f"compose takes 1 to {COMPOSE_MAX_SOURCES} sources, not {len(sources)}")
    store = bucket()
    target = store.blob(name)
    target.content_type = content_type
    target.compose([store.blob(source) for source in sources])


def names(prefix: str) -> list[str]:
    """The names of the objects under `prefix`."""
    return [blob.name for blob in bucket().list_blobs(prefix=prefix)]


def exists(name: str) -> bool:
    """Whether the object is there (one metadata read); storage faults raise."""
    return bucket().get_blob(name) is not None


def signed_url(name: str, *, seconds: int, content_type: str, disposition: str) -> str:
    """A V4 signed URL that GETs the object without credentials for `seconds`, answered with
    `content_type` and `disposition` (the response-content-* parameters, part of the signature).

    In the cloud the function has no key to sign with: the signature comes from IAM's signBlob, as
    the function's own service account (roles/iam.serviceAccountTokenCreator on itself, which the
    deploy grants). The local stack gives a throwaway key and the emulator's URL instead."""
    settings = get_settings()
    blob = bucket().blob(name)
    options: dict[str, Any] = {
        "version": "v4",
        "method": "GET",
        "expiration": timedelta(seconds=seconds),
        "response_type": content_type,
        "response_disposition": disposition,
    }
    if settings.emulator_signing_key.get_secret_value():
        key = service_account.Credentials.from_service_account_info(json.loads(settings.emulator_signing_key.get_secret_value()))
        return str(blob.generate_signed_url(credentials=key, api_access_endpoint=settings.emulator_storage_url or None, **options))
    credentials = signing_credentials()
    return str(blob.generate_signed_url(service_account_email=credentials.service_account_email, access_token=credentials.token, **options))
