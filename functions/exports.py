"""Export worker (Pub/Sub) and notification delivery (HTTP, called by Cloud Tasks)."""

from __future__ import annotations

import flask
import functions_framework
from cloudevents.http import CloudEvent
from pydantic import ValidationError

from common.logging import get_logger
from common.models.export import DeliveryTask, ExportMessage
from common.services import exports, notifications
from functions.events import decode

log = get_logger("synq.functions")


@functions_framework.cloud_event
def run_export(event: CloudEvent) -> None:
    if (message := decode(event, ExportMessage)) is not None:
        exports.run_export(message)


@functions_framework.http
def deliver_notification(request: flask.Request) -> flask.Response:
    """200 when delivered (or nothing to do); 502 makes Cloud Tasks retry with its backoff."""
    try:
        task = DeliveryTask.model_validate_json(request.get_data(cache=False))
    except ValidationError:
        log.error("unreadable delivery task dropped")
        return flask.Response('{"delivered":false}', status=200, content_type="application/json")
    delivered = notifications.deliver(task)
    return flask.Response(f'{{"delivered":{str(delivered).lower()}}}', status=200 if delivered else 502, content_type="application/json")
