"""Google Cloud clients, created lazily once per instance (never at import time)."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import google.auth
import google.auth.transport.requests
import grpc
from google.cloud import firestore, pubsub_v1, storage
from google.cloud.firestore_v1 import base_client

from common.config import get_settings


def _single_threaded_streams() -> None:
    """Firestore's server-streaming calls (`get_all`, queries) read on the calling thread.

    By default gRPC hands every streamed message from a thread of its own to the caller's through a
    condition variable; a step's `get_all` streams one message per document, so that hand-off was
    about a fifth of `process_chunk`'s CPU. gRPC's `SingleThreadedUnaryStream` option (experimental,
    and measured faster by gRPC's own benchmarks) reads them on the caller's thread: process_chunk's
    CPU fell 26 % (docs/performance.md). The client builds its channel from these two option lists,
    for the emulator and for the cloud; the option is Python-side only and never reaches the server.

    The price: such a call keeps its completion queue until its stream is read to its end, so a
    stream dropped early stays in memory for the life of the process. `DocumentReference.get`
    drops its stream; documents are read with `common.store.paths.read` instead, queries with
    `common.store.paths.rows`, read whole, and the test suite fails any test whose process drops a
    stream (`tests/conftest.py`).
    """
    option = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)
    for options in (base_client._GRPC_MSG_SIZE_OPTIONS, base_client._DEFAULT_CHANNEL_OPTIONS):
        if option not in options:
            options.append(option)


_single_threaded_streams()


@lru_cache(maxsize=1)
def firestore_client() -> firestore.Client:
    return firestore.Client(project=get_settings().project_id)


@lru_cache(maxsize=1)
def publisher() -> pubsub_v1.PublisherClient:
    # Publish at once: callers wait on each future, so batching only adds latency.
    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001, max_messages=1000))


@lru_cache(maxsize=1)
def storage_client() -> storage.Client:
    return storage.Client(project=get_settings().project_id)


_signer_lock = threading.Lock()


@lru_cache(maxsize=1)
def _default_credentials() -> Any:
    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return credentials


def signing_credentials() -> Any:
    """The function's own credentials, refreshed while they are not valid: their access token calls
    IAM signBlob, and a metadata-server credential learns its service account's email only then."""
    credentials = _default_credentials()
    with _signer_lock:
        if not credentials.valid:
            credentials.refresh(google.auth.transport.requests.Request())
    return credentials


def reset_clients() -> None:
    """Forget cached clients (tests point the process at other emulators)."""
    for factory in (firestore_client, publisher, storage_client, _default_credentials):
        factory.cache_clear()
