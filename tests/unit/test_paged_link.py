"""The next page's `Link`: it must lead a client to the next page from whatever URL it called.

A deployed api function answers on two URLs, and sees the same path on both: on its run.app URL
the path as sent, on its cloudfunctions.net URL the path without the function's name in front
(`…cloudfunctions.net/api/api/v1/pim/audit` reaches the function as `/api/v1/pim/audit`). A link
that names the path the function sees is right on the first and leaves the API on the second."""

from __future__ import annotations

from urllib.parse import parse_qs, urljoin, urlsplit

import flask
import pytest

from common.api import paged
from common.http import Request

SEEN_PATH = "/api/v1/pim/audit"  # what the function's request.path is under both URLs
CALLED = (
    "https://us-central1-my-project.cloudfunctions.net/api/api/v1/pim/audit",  # name taken off by the front end
    "https://api-abc123-uc.a.run.app/api/v1/pim/audit",  # the function's Cloud Run URL
    "https://pim.example.com/synq/api/v1/pim/audit",  # a load balancer mounting the API under a prefix
)


def next_link(query: str) -> str:
    app = flask.Flask(__name__)
    with app.test_request_context(f"{SEEN_PATH}?{query}"):
        raw = flask.request
        request = Request(method=raw.method, path=raw.path, headers=raw.headers, args=raw.args, remote_addr="", raw=raw)  # type: ignore[arg-type]
        response = paged(request, [{"id": "x"}], "CURSOR-2")
    link = response.headers["Link"]
    assert link.endswith('>; rel="next"') and link.startswith("<"), link
    return link[1 : link.index(">")]


@pytest.mark.parametrize("called", CALLED)
def test_the_next_link_resolves_to_the_called_url_with_the_next_cursor(called: str) -> None:
    target = urljoin(f"{called}?limit=1&cursor=CURSOR-1", next_link("limit=1&cursor=CURSOR-1"))
    parts = urlsplit(target)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == called
    assert parse_qs(parts.query) == {"limit": ["1"], "cursor": ["CURSOR-2"]}


def test_the_next_link_keeps_the_other_query_parameters_once() -> None:
    link = next_link("limit=5&sku=A%26B&cursor=old")
    assert link.startswith("?"), "a path in the link would be resolved against the host, not the called URL"
    assert parse_qs(link[1:]) == {"limit": ["5"], "sku": ["A&B"], "cursor": ["CURSOR-2"]}
