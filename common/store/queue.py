"""Publishing pointer messages to Pub/Sub topics."""

from __future__ import annotations

from collections.abc import Iterable

from google.api_core import exceptions as gexc
from pydantic import BaseModel

from common import errors
from common.clients import publisher
from common.config import get_settings


def publish(topic: str, messages: Iterable[BaseModel], *, timeout: float = 30.0) -> int:
    """Publish every message and wait until Pub/Sub has them all; returns how many."""
    client = publisher()
    path = client.topic_path(get_settings().project_id, topic)
    futures = [client.publish(path, m.model_dump_json().encode("utf-8")) for m in messages]
    try:
        for future in futures:
            future.result(timeout=timeout)
    except (gexc.GoogleAPICallError, TimeoutError) as exc:
        raise errors.Transient(f"Publishing to {topic} failed.") from exc
    return len(futures)
