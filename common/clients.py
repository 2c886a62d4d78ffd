"""Google Cloud clients, created lazily once per instance (never at import time)."""

from __future__ import annotations

from functools import lru_cache

from google.cloud import firestore, pubsub_v1, storage

from common.config import get_settings


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


def reset_clients() -> None:
    """Forget cached clients (tests point the process at other emulators)."""
    for factory in (firestore_client, publisher, storage_client):
        factory.cache_clear()
