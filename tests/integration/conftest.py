"""Integration fixtures: the pipeline's services driven in-process against the real emulators.

Each test's jobs publish to topics of its own with *pull* subscriptions, so the test decides how
messages are delivered (twice, out of order, to a process it kills) instead of the stack's pushes.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.cloud import pubsub_v1

from common.auth import Principal
from common.config import get_settings
from common.models.job import ChunkMessage, JobMessage
from common.services import catalog, jobs
from common.store.paths import Scope
from tests.helpers import all_pages


@dataclass
class Pipeline:
    scope: Scope
    principal: Principal
    project: str
    subscriptions: dict[str, str] = field(default_factory=dict)

    def create(self, job_type: str, payload: list[Any]) -> dict[str, Any]:
        return jobs.create_job(self.principal, {"job_type": job_type, "payload": payload})

    def pull(self, topic_key: str) -> list[bytes]:
        """Every message waiting on a topic, acknowledged."""
        subscriber = pubsub_v1.SubscriberClient()
        out: list[bytes] = []
        try:
            while True:
                with warnings.catch_warnings():
                    # return_immediately is deprecated for production pulls; a test wants exactly it.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = subscriber.pull(
                        request={"subscription": self.subscriptions[topic_key], "max_messages": 1000, "return_immediately": True},
                        timeout=10,
                    )
                if not response.received_messages:
                    return out
                out += [m.message.data for m in response.received_messages]
                subscriber.acknowledge(
                    request={"subscription": self.subscriptions[topic_key], "ack_ids": [m.ack_id for m in response.received_messages]}
                )
        finally:
            subscriber.close()

    def dispatch_all(self) -> list[ChunkMessage]:
        for data in self.pull("jobs"):
            jobs.dispatch(JobMessage.model_validate_json(data))
        return [ChunkMessage.model_validate_json(d) for d in self.pull("chunks")]

    def run(self, job_type: str, payload: Any) -> dict[str, Any]:
        """Create a job and drive it to its end with single, in-order delivery."""
        return self.drive(self.create(job_type, payload)["id"])

    def drive(self, job_id: str) -> dict[str, Any]:
        """Deliver chunk messages until none is left: a window releases the next chunks as its own
        end, ErrorMode Fail publishes a second, commit round."""
        for _ in range(1000):
            messages = self.dispatch_all()
            if not messages:
                break
            for message in messages:
                jobs.process_chunk(message)
        return self.job(job_id)

    def cancel_after_first_chunk(self, job_id: str) -> None:
        """Dispatch the job, run its first chunk, cancel it, then deliver its other chunks' messages
        (which find it cancelled): a job cancelled in flight."""
        first, *rest = self.dispatch_all()
        jobs.process_chunk(first)
        jobs.cancel_job(self.principal, job_id)
        for message in rest:
            jobs.process_chunk(message)

    def job(self, job_id: str) -> dict[str, Any]:
        return jobs.public(jobs.get_job(self.scope, job_id))

    def products(self) -> list[dict[str, Any]]:
        """Every product of the tenant, through the API's own paging."""
        return all_pages(lambda cursor: catalog.list_products(self.scope, sku=None, limit=200, cursor=cursor))

    def audit_events(self) -> list[dict[str, Any]]:
        return all_pages(lambda cursor: catalog.list_audit(self.scope, limit=200, cursor=cursor))

    def results(self, job_id: str, failed_only: bool = False) -> list[dict[str, Any]]:
        items, _ = jobs.results(self.scope, job_id, start=0, limit=1_000_000, failed_only=failed_only)
        return items


@pytest.fixture
def pipeline(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    suffix = uuid.uuid4().hex[:8]
    project = stack.project
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    subscriptions = {}
    saved = {k: os.environ.get(k) for k in ("SYNQ_JOBS_TOPIC", "SYNQ_CHUNKS_TOPIC")}
    for key, env in (("jobs", "SYNQ_JOBS_TOPIC"), ("chunks", "SYNQ_CHUNKS_TOPIC")):
        topic = f"it-{key}-{suffix}"
        publisher.create_topic(name=publisher.topic_path(project, topic))
        sub = subscriber.subscription_path(project, f"{topic}-pull")
        subscriber.create_subscription(request={"name": sub, "topic": publisher.topic_path(project, topic), "ack_deadline_seconds": 60})
        subscriptions[key] = sub
        os.environ[env] = topic
    subscriber.close()
    get_settings.cache_clear()
    org_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    scope = Scope(org_id, tenant_id)
    principal = Principal(user_id=str(uuid.uuid4()), email="pipeline@example.com", role="admin", scope=scope, ip_address="203.0.113.42")
    try:
        yield Pipeline(scope, principal, project, subscriptions)
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
        get_settings.cache_clear()


@pytest.fixture
def exports_topic(pipeline: Pipeline) -> Iterator[str]:
    """SYNQ_EXPORTS_TOPIC → a topic of this test's own; yields its pull subscription."""
    project = pipeline.project
    topic = f"it-exports-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=publisher.topic_path(project, topic))
    subscription = subscriber.subscription_path(project, f"{topic}-pull")
    subscriber.create_subscription(request={"name": subscription, "topic": publisher.topic_path(project, topic), "ack_deadline_seconds": 60})
    subscriber.close()
    saved = os.environ.get("SYNQ_EXPORTS_TOPIC")
    os.environ["SYNQ_EXPORTS_TOPIC"] = topic
    get_settings.cache_clear()
    try:
        yield subscription
    finally:
        if saved is None:
            os.environ.pop("SYNQ_EXPORTS_TOPIC", None)
        else:
            os.environ["SYNQ_EXPORTS_TOPIC"] = saved
        get_settings.cache_clear()


def pull_all(subscription: str) -> list[bytes]:
    subscriber = pubsub_v1.SubscriberClient()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # return_immediately: exactly what a test wants
            response = subscriber.pull(request={"subscription": subscription, "max_messages": 100, "return_immediately": True}, timeout=10)
        if response.received_messages:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]})
        return [m.message.data for m in response.received_messages]
    finally:
        subscriber.close()


class Killed(BaseException):
    """What a worker killed by its timeout leaves: not an exception run_export handles, no release."""


def die_after_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until `monkeypatch.undo()`, a chunk worker dies (Killed) right after it counted its chunk's
    progress: before it released the next chunk, or finished the job."""
    real_count = jobs.store.count_progress

    def count_then_die(*args: Any) -> dict[str, Any] | None:
        real_count(*args)
        raise Killed

    monkeypatch.setattr(jobs.store, "count_progress", count_then_die)
