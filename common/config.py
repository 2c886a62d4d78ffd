"""All configuration in one place, read from the environment once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# run_export's timeout as deployed (infra/deploy.py: an event-driven function's longest, 9 minutes).
RUN_EXPORT_TIMEOUT_SECONDS = 540


def lane_topic(topic: str, lane: int) -> str:
    """The topic of a lane: lane 0 is the topic itself, lane k is `{topic}-{k}`."""
    return topic if lane == 0 else f"{topic}-{lane}"


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

    # Proxies in front of the API that append the address they were reached from to X-Forwarded-For:
    # the audit log's ip_address is that many entries from its end (what a caller sends before them
    # is forgeable). 0, locally: the connection's address. The deploy sets 1, the Google front end.
    trusted_proxies: int = Field(default=0, ge=0)

    # Request limits (Cloud Functions takes HTTP bodies of at most 32 MB).
    max_body_bytes: int = 32 * 1024 * 1024
    # Payloads larger than this go to Cloud Storage: a Firestore document holds at most 1 MiB.
    inline_payload_max_bytes: int = 700_000
    max_items_per_job: int = 200_000
    max_item_bytes: int = 256 * 1024

    # A chunk is what one worker invocation applies; its items live in one Firestore document, and
    # so do their results (each under 3,000 bytes: engine.result), hence the ceiling.
    chunk_size: int = Field(default=200, ge=1, le=250)
    chunk_max_bytes: int = 600_000
    # Fairness: a job keeps at most this many chunk messages outstanding; each finished chunk
    # releases the next, so another tenant's chunks queue behind a window, not behind a whole job.
    chunk_window: int = 8
    # Chunk messages are spread over this many topics, chunk n on lane n % chunk_lanes (see
    # lane_topic), each with its own push subscription to process_chunk. On Cloud Pub/Sub one push
    # subscription already delivers as many messages at once as process_chunk's instances take, so
    # the deployment keeps 1. The Pub/Sub emulator pushes at most two messages at a time per
    # subscription, which would cap a local chunk worker at two chunks in flight; the local stack
    # wires infra.stack.PUSH_LANES lanes instead (docs/performance.md).
    chunk_lanes: int = Field(default=1, ge=1)

    # The reconciler republishes PENDING jobs and unfinished chunks untouched for this long.
    stale_after_seconds: float = 120.0

    quality_threshold: int = 60

    # Requests per token per minute (0: unlimited). A token document's `rate_limit_per_minute`
    # overrides it for that token; instances re-read the override after token_cache_seconds.
    rate_limit_per_minute: int = 600
    # An instance sends the hits it counted at most this often while a token is far from its
    # budget (one document per token per minute sustains about one write a second); 0 sends each.
    rate_limit_flush_seconds: float = Field(default=1.0, ge=0)
    token_cache_seconds: float = 60.0
    # An Idempotency-Key's stored answer is replayed this long. A claim whose request died (the
    # instance was killed) is taken over after the lock; the api function's timeout is 120 s.
    idempotency_ttl_seconds: int = 24 * 3600
    idempotency_lock_seconds: float = 300.0

    # Webhooks to private or loopback addresses are refused unless this is set (local stack, tests).
    allow_private_webhooks: bool = False
    webhook_timeout_seconds: float = 10.0
    # Where Cloud Tasks reaches deliver_notification, the OIDC identity it uses, and the queue's
    # backoff (mirrored from infra/deploy.py, to tell callers when the next retry is due).
    tasks_location: str = "us-central1"
    tasks_service_account: str = ""
    tasks_min_backoff_seconds: float = 10.0
    tasks_max_backoff_seconds: float = 3600.0

    # Export files: read as one query stream, written through resumable (streaming) uploads.
    export_upload_chunk_bytes: int = 4 * 1024 * 1024
    # The file is written in segments, each an object of its own, and the export's record takes a
    # checkpoint (lease-checked) as each one is whole: a new claim resumes after it, so a claim cut
    # short loses one segment's work at most and a catalog of any size gets written. A segment ends
    # after this many products read (written or excluded) or this many seconds, whichever is first:
    # far within the lease (renewed as it writes) and run_export's 540 s. 25,000 products of
    # ~1.5 KB a line are ~37 MB; a million-product catalog makes 40 segments, composed in two rounds.
    export_segment_products: int = Field(default=25_000, ge=1)
    export_segment_seconds: float = Field(default=60.0, gt=0)
    # A claim starts no segment after writing this long (0: after each segment): it hands the
    # export over (claim given back, a new message published) for a new claim to resume at once. Killed by the timeout
    # instead, it would lose its segment and wait ~11 minutes (the lease lapsing, the reconciler's
    # tick). 420 s leaves a segment's 60 s and the compose within run_export's 540 s; the two
    # together must stay under it (checked when the settings are read).
    export_claim_seconds: float = Field(default=420.0, ge=0)
    # Claims in a row that may end without committing a segment (killed, timed out, a storage fault's
    # given-back claim, a worker that died); the next one ends the export FAILED
    # (`too_many_attempts`) instead of running it again, and republished by the reconciler, for
    # ever. A claim that commits a checkpoint starts the count again, so an export that needs ten
    # claims finishes as long as each moves it on (`domain.export_file.claims_without_progress`).
    export_max_claims: int = Field(default=3, ge=1)
    excluded_ids_listed: int = 1000
    # download_url in notifications: the API's download route with an HMAC-signed expiry, so a
    # webhook receiver needs no API token. The key comes from Secret Manager in the cloud.
    public_api_url: str = "http://127.0.0.1:8080"
    download_signing_key: str = ""
    download_url_ttl_seconds: int = 7 * 24 * 3600
    # The download route answers 302 to a V4 signed Cloud Storage URL valid this long: the file is
    # fetched from Cloud Storage, never through the api function (whose responses are capped at
    # 32 MB, 10 MB streamed, and whose instance a slow download would hold). Only the start of the
    # fetch must fall within it; a longer transfer goes on.
    download_redirect_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    # Local stack only (the deploy refuses both): a throwaway service-account key (its JSON) that
    # signs those URLs for the storage emulator, which checks neither signature nor expiry, and the
    # emulator's URL for them. In the cloud the URL is signed through IAM (signBlob) as the function's
    # own service account: no key exists.
    emulator_signing_key: SecretStr = SecretStr("")
    emulator_storage_url: str = ""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_tls: bool = False
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_sender: str = "Synq <no-reply@synq.local>"

    @model_validator(mode="after")
    def _export_claim_fits_run_export(self) -> Settings:
        """A claim may start a segment just before `export_claim_seconds`; that segment (then its
        close, the compose, the finish) must end before run_export's timeout, or long exports have
        claims killed mid-segment that lose it and wait for their lease and the reconciler instead
        of handing over. Refused here, a bad setting fails the first settings read of every
        function rather than only large exports, later and slowly."""
        if self.export_claim_seconds + self.export_segment_seconds >= RUN_EXPORT_TIMEOUT_SECONDS:
            raise ValueError(
                f"export_claim_seconds ({self.export_claim_seconds:g}) + export_segment_seconds ({self.export_segment_seconds:g}) "
                f"must stay under run_export's {RUN_EXPORT_TIMEOUT_SECONDS} s timeout"
            )
        return self

    def chunk_topic(self, n: int) -> str:
        """The topic chunk `n`'s messages are published to."""
        return lane_topic(self.chunks_topic, n % self.chunk_lanes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; tests call `get_settings.cache_clear()` after changing the environment."""
    import os

    settings = Settings()
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project:
        settings.project_id = project
    return settings
