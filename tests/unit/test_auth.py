"""Who is calling: the token read once per request, whatever asks (no Google service: the token store is a stand-in)."""

from __future__ import annotations

from typing import Any

import flask
import pytest

from common import auth, errors
from common.http import Request

HEADERS = {"Authorization": "Bearer synq_t", "X-Org-ID": "org-1", "X-Tenant-ID": "tenant-1"}
RECORD = {"user_id": "u-1", "email": "u@example.com", "org_id": "org-1", "tenant_ids": ["tenant-1"], "role": "editor", "revoked": False}


def request(method: str = "POST", headers: dict[str, str] = HEADERS) -> Request:
    return Request(method=method, path="/x", headers=headers, args={}, remote_addr="10.0.0.9", raw=flask.Request.from_values(method=method))


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []

    def get_token(token: str) -> dict[str, Any] | None:
        seen.append(token)
        return dict(RECORD) if token == "synq_t" else None

    monkeypatch.setattr(auth.tokens, "get_token", get_token)
    return seen


def test_a_request_s_token_is_read_once_however_often_it_is_asked(lookups: list[str]) -> None:
    """The body check, the Idempotency-Key hook and the handler each authenticate a POST."""
    one = request()

    first = auth.authenticate(one)

    assert auth.authenticate(one) is first and lookups == ["synq_t"]
    assert auth.authenticate(request()) == first and lookups == ["synq_t", "synq_t"]  # another request reads it again


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("GET", {**HEADERS, "Authorization": "Bearer synq_unknown"}, errors.Unauthorized),
        ("GET", {**HEADERS, "X-Tenant-ID": "tenant-2"}, errors.Forbidden),
    ],
)
def test_a_refused_token_is_not_kept_for_the_next_ask(lookups: list[str], method: str, headers: dict[str, str], refused: type[Exception]) -> None:
    one = request(method, headers)
    for _ in range(2):
        with pytest.raises(refused):
            auth.authenticate(one)
    assert len(lookups) == 2


def test_a_viewer_s_write_is_refused_every_time_it_is_asked(lookups: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECORD, "role", "viewer")
    one = request("POST")
    for _ in range(2):
        with pytest.raises(errors.Forbidden, match="needs the editor role"):
            auth.authenticate(one)
