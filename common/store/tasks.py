"""Enqueueing notification deliveries on Cloud Tasks."""

from __future__ import annotations

import os
from functools import lru_cache

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2

from common import errors
from common.config import get_settings
from common.models.export import DeliveryTask


@lru_cache(maxsize=1)
def tasks_client() -> tasks_v2.CloudTasksClient:
    emulator = os.environ.get("CLOUD_TASKS_EMULATOR_HOST")
    if emulator:
        import grpc
        from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulator)))
    return tasks_v2.CloudTasksClient()


def enqueue_delivery(task: DeliveryTask, name: str) -> None:
    """Queue one delivery attempt series; `name` makes a re-enqueue of the same series a no-op in the
    cloud (the emulator accepts duplicates, so deliver_notification also checks the record)."""
    settings = get_settings()
    client = tasks_client()
    queue = client.queue_path(settings.project_id, settings.tasks_location, settings.tasks_queue)
    http_request: dict[str, object] = {
        "http_method": tasks_v2.HttpMethod.POST,
        "url": settings.deliver_url,
        "headers": {"Content-Type": "application/json"},
        "body": task.model_dump_json().encode(),
    }
    if settings.tasks_service_account:
        http_request["oidc_token"] = {"service_account_email": settings.tasks_service_account}
    try:
        client.create_task(parent=queue, task={"name": f"{queue}/tasks/{name}", "http_request": http_request})  # type: ignore[arg-type]
    except gexc.AlreadyExists:
        pass
    except (gexc.GoogleAPICallError, gexc.RetryError) as exc:  # RetryError: the client's own retries ran out
        raise errors.Transient("Enqueueing the notification failed.") from exc
