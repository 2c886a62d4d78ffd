"""Queueing a delivery: every way the Cloud Tasks client can fail is one error its callers handle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from common import errors
from common.config import Settings
from common.models.export import DeliveryTask
from common.store import tasks

TASK = DeliveryTask(org_id="o", tenant_id="t", event_id="e")


class FailingClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def queue_path(self, *parts: str) -> str:
        return "/".join(parts)

    def create_task(self, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize("error", [gexc.ServiceUnavailable("down"), gexc.RetryError("deadline exceeded while retrying", None)])
def test_a_queue_fault_is_transient(error: Exception, monkeypatch: pytest.MonkeyPatch, settings_env: Callable[..., Settings]) -> None:
    settings_env(project_id="p")
    monkeypatch.setattr(tasks, "tasks_client", lambda: FailingClient(error))
    with pytest.raises(errors.Transient):
        tasks.enqueue_delivery(TASK, "msg_1-0")


def test_a_task_already_queued_is_no_error(monkeypatch: pytest.MonkeyPatch, settings_env: Callable[..., Settings]) -> None:
    settings_env(project_id="p")
    monkeypatch.setattr(tasks, "tasks_client", lambda: FailingClient(gexc.AlreadyExists("named")))
    tasks.enqueue_delivery(TASK, "msg_1-0")
