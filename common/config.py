"""All configuration in one place, read from the environment once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Deployment settings. Every variable is prefixed `SYNQ_`, except the project id."""

    model_config = SettingsConfigDict(env_prefix="SYNQ_", extra="ignore")

    project_id: str = "synq-local"
    region: str = "us-central1"

    jobs_topic: str = "bulk-jobs"
    chunks_topic: str = "bulk-job-chunks"
    exports_topic: str = "exports"
    reconcile_topic: str = "reconcile-ticks"

    bucket: str = "synq-local"
    tasks_queue: str = "notifications"
    deliver_url: str = "http://127.0.0.1:8085/"

    # Request limits (Cloud Functions takes HTTP bodies of at most 32 MB).
    max_body_bytes: int = 32 * 1024 * 1024
    # Payloads larger than this go to Cloud Storage: a Firestore document holds at most 1 MiB.
    inline_payload_max_bytes: int = 700_000
    max_items_per_job: int = 200_000
    max_item_bytes: int = 256 * 1024

    # A chunk is what one worker invocation applies; its items live in one Firestore document.
    chunk_size: int = 200
    chunk_max_bytes: int = 600_000

    # The reconciler republishes PENDING jobs and unfinished chunks untouched for this long.
    stale_after_seconds: float = 120.0

    quality_threshold: int = 60

    # Webhooks to private or loopback addresses are refused unless this is set (local stack, tests).
    allow_private_webhooks: bool = False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; tests call `get_settings.cache_clear()` after changing the environment."""
    import os

    settings = Settings()
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project:
        settings.project_id = project
    return settings
