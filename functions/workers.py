"""The Pub/Sub-triggered pipeline: dispatch a job into chunks, apply a chunk, reconcile."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from common.models.job import ChunkMessage, JobMessage
from common.services import jobs
from functions.events import decode


@functions_framework.cloud_event
def dispatch_job(event: CloudEvent) -> None:
    if (message := decode(event, JobMessage)) is not None:
        jobs.dispatch(message)


@functions_framework.cloud_event
def process_chunk(event: CloudEvent) -> None:
    if (message := decode(event, ChunkMessage)) is not None:
        jobs.process_chunk(message)


@functions_framework.cloud_event
def reconcile(event: CloudEvent) -> None:
    """Run by Cloud Scheduler through the reconcile topic (the local stack publishes every few seconds)."""
    jobs.reconcile()
