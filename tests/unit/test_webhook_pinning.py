"""The webhook is sent to the address its URL's check approved (`notifications._post_webhook`): DNS
answering differently between the check and the connection (rebinding) cannot move the request.
TLS still names the URL's host: SNI, the certificate's host name check and the Host header.

Receivers listen on loopback; DNS is this test's: `_resolve` (what the check consults) and
`socket.getaddrinfo` (what the HTTP client would consult) answer differently, as a rebinding
name server would."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from common import errors
from common.config import Settings
from common.services import notifications
from tests.helpers import self_signed

HOST = "hooks.example.test"
DELIVERY = {"event_id": "msg_1", "body": '{"type":"export.completed","data":{}}'}


class Receiver:
    """An HTTP(S) endpoint on one loopback address, recording each call's Host header and TLS SNI."""

    def __init__(self, address: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.calls: list[str] = []
        self.sni: list[str | None] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                calls.append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """`dns(checked, later)`: the check's look-up of HOST answers `checked` (an address or a list),
    any later one `later`. Returns the list of the check's look-ups."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def install(checked: str | list[str], later: str) -> list[str]:
        def resolve(host: str) -> list[str]:
            lookups.append(host)
            return [checked] if isinstance(checked, str) else checked

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            return real(later if host == HOST else host, port, *args, **kwargs)

        monkeypatch.setattr(notifications, "_resolve", resolve)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return install


def test_the_request_goes_to_the_address_that_was_checked(
    settings_env: Callable[..., Settings], dns: Callable[..., list[str]], receivers: list[Receiver]
) -> None:
    settings_env(allow_private_webhooks="true")
    checked = Receiver("127.0.0.1")
    rebound = Receiver("127.0.0.2", port=checked.port)  # where a second look-up would send it
    receivers += [checked, rebound]
    lookups = dns("127.0.0.1", "127.0.0.2")
    status = notifications._post_webhook({"webhook_url": f"http://{HOST}:{checked.port}/hooks"}, DELIVERY)
    assert status == 204
    assert checked.calls == [f"{HOST}:{checked.port}"] and rebound.calls == []
    assert lookups == [HOST]  # one look-up: the one the connection uses


def test_an_address_that_refuses_the_connection_hands_over_to_the_next_checked_one(
    settings_env: Callable[..., Settings], dns: Callable[..., list[str]], receivers: list[Receiver]
) -> None:
    settings_env(allow_private_webhooks="true")
    receiver = Receiver("127.0.0.1")
    receivers.append(receiver)
    dns(["127.0.0.3", "127.0.0.1"], "127.0.0.2")  # nothing listens on 127.0.0.3
    assert notifications._post_webhook({"webhook_url": f"http://{HOST}:{receiver.port}/hooks"}, DELIVERY) == 204
    assert receiver.calls == [f"{HOST}:{receiver.port}"]


def tls_receiver(name: str, tmp_path: Path, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """An HTTPS receiver on 127.0.0.1 whose certificate, for `name`, the client trusts."""
    cert, key = self_signed(tmp_path, name)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    receiver = Receiver("127.0.0.1", tls=tls)
    receivers.append(receiver)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    return receiver


def test_https_keeps_sni_and_the_certificate_check_on_the_host_name(
    settings_env: Callable[..., Settings],
    dns: Callable[..., list[str]],
    receivers: list[Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_env(allow_private_webhooks="true")
    receiver = tls_receiver(HOST, tmp_path, receivers, monkeypatch)
    dns("127.0.0.1", "127.0.0.2")
    status = notifications._post_webhook({"webhook_url": f"https://{HOST}:{receiver.port}/hooks"}, DELIVERY)
    assert status == 204
    assert receiver.sni == [HOST] and receiver.calls == [f"{HOST}:{receiver.port}"]


def test_https_refuses_a_certificate_for_another_host(
    settings_env: Callable[..., Settings],
    dns: Callable[..., list[str]],
    receivers: list[Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings_env(allow_private_webhooks="true")
    receiver = tls_receiver("other.example.test", tmp_path, receivers, monkeypatch)
    dns("127.0.0.1", "127.0.0.1")
    with pytest.raises(requests.exceptions.SSLError):
        notifications._post_webhook({"webhook_url": f"https://{HOST}:{receiver.port}/hooks"}, DELIVERY)
    assert receiver.calls == []


def test_a_private_address_is_refused_before_any_connection(settings_env: Callable[..., Settings], dns: Callable[..., list[str]]) -> None:
    settings_env(allow_private_webhooks="false")
    lookups = dns("10.0.0.7", "10.0.0.7")
    with pytest.raises(errors.Unprocessable, match="private"):
        notifications._post_webhook({"webhook_url": f"https://{HOST}/hooks"}, DELIVERY)
    assert lookups == [HOST]


def test_each_address_is_looked_up_once() -> None:
    """getaddrinfo answers once per socket type unless asked for one: each address would be tried thrice."""
    assert notifications._resolve("127.0.0.1") == ["127.0.0.1"]


def test_a_connection_that_timed_out_is_not_tried_at_the_next_address(
    settings_env: Callable[..., Settings], dns: Callable[..., list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt may take the whole timeout: trying every address could outlast the function's."""
    settings_env(allow_private_webhooks="true")
    dns(["127.0.0.3", "127.0.0.1"], "127.0.0.2")
    tried: list[str] = []

    def timed_out(self: Any, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        tried.append(request.url or "")
        raise requests.ConnectTimeout("timed out")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", timed_out)
    with pytest.raises(requests.ConnectTimeout):
        notifications._post_webhook({"webhook_url": f"http://{HOST}:9/hooks"}, DELIVERY)
    assert tried == ["http://127.0.0.3:9/hooks"]
