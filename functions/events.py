"""Turning a Pub/Sub CloudEvent into one of our message models."""

from __future__ import annotations

import base64
from typing import TypeVar

from cloudevents.http import CloudEvent
from pydantic import BaseModel, ValidationError

from common.logging import get_logger

log = get_logger("synq.events")

M = TypeVar("M", bound=BaseModel)


def decode(event: CloudEvent, model: type[M]) -> M | None:
    """The message, or None for one that can never be processed (logged, then acknowledged)."""
    try:
        data = base64.b64decode(event.data["message"]["data"])
        return model.model_validate_json(data)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        log.error("unreadable message acknowledged", extra={"type": model.__name__, "error": str(exc)[:300]})
        return None
