"""Webhook notifications as pure functions: secrets, event bodies, Standard Webhooks signatures (checked
with the standardwebhooks library itself), URL safety with an injected resolver, signed download links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from common.domain.webhooks import (
    SECRET_PREFIX,
    download_signature,
    download_signature_ok,
    event_body,
    new_secret,
    signed_headers,
    webhook_url_problem,
)

DATA = {"export_id": "0b6b5e0e-6d55-4c5e-9d8a-3c1e1f6f5a10", "status": "COMPLETED", "rows": 1200, "name": "Crème brûlée – Q4"}
EVENT_ID = "msg_2f1c9a"


def now() -> datetime:
    # The library checks the timestamp against the real clock (5 minutes either way).
    return datetime.now(UTC).replace(microsecond=0)


def expected_signature(secret: str, event_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks v1 signature, computed independently of both the code and the library."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- secrets ------------------------------------------------------------------------------------


def test_new_secret_is_whsec_and_base64_of_24_bytes() -> None:
    secret = new_secret()
    assert SECRET_PREFIX == "whsec_"
    assert secret.startswith("whsec_")
    encoded = secret.removeprefix("whsec_")
    assert len(encoded) == 32  # 24 bytes, no padding needed
    assert len(base64.b64decode(encoded, validate=True)) == 24
    Webhook(secret)  # the library accepts it


def test_new_secrets_are_distinct() -> None:
    secrets = {new_secret() for _ in range(200)}
    assert len(secrets) == 200


# -- event bodies -------------------------------------------------------------------------------


def test_event_body_is_compact_json_of_type_and_data() -> None:
    body = event_body("export.completed", {"a": 1, "b": [1, 2], "c": {"d": None}})
    assert body == '{"type":"export.completed","data":{"a":1,"b":[1,2],"c":{"d":null}}}'
    assert json.loads(body) == {"type": "export.completed", "data": {"a": 1, "b": [1, 2], "c": {"d": None}}}


def test_event_body_is_stable() -> None:
    first = event_body("export.completed", DATA)
    assert all(event_body("export.completed", dict(DATA)) == first for _ in range(5))
    assert " " not in first.replace(DATA["name"], "")  # compact: no separator spaces
    assert "Crème brûlée – Q4" in first  # not \\u-escaped: the bytes sent are UTF-8
    assert event_body("export.failed", DATA) != first


# -- signatures ---------------------------------------------------------------------------------


def test_signed_headers_shape() -> None:
    secret = new_secret()
    ts = now()
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, ts, body, [secret])
    assert headers == {
        "webhook-id": EVENT_ID,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": expected_signature(secret, EVENT_ID, int(ts.timestamp()), body),
        "content-type": "application/json",
    }
    assert signed_headers(EVENT_ID, ts, body, [secret]) == headers  # deterministic


def test_one_secret_verifies_with_the_library() -> None:
    secret = new_secret()
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, now(), body, [secret])
    assert Webhook(secret).verify(body, headers) == {"type": "export.completed", "data": DATA}
    assert Webhook(secret).verify(body.encode(), headers) == {"type": "export.completed", "data": DATA}
    # Receivers see header names in any case.
    assert Webhook(secret).verify(body, {k.title(): v for k, v in headers.items()})["data"] == DATA


def test_a_sub_second_timestamp_still_verifies() -> None:
    secret = new_secret()
    body = event_body("export.completed", DATA)
    ts = datetime.now(UTC).replace(microsecond=987_654)
    headers = signed_headers(EVENT_ID, ts, body, [secret])
    assert headers["webhook-timestamp"] == str(int(ts.timestamp()))
    Webhook(secret).verify(body, headers)


def test_rotation_signs_with_each_live_secret() -> None:
    new, previous, stranger = new_secret(), new_secret(), new_secret()
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, now(), body, [new, previous])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    ts = int(headers["webhook-timestamp"])
    assert signatures == [expected_signature(new, EVENT_ID, ts, body), expected_signature(previous, EVENT_ID, ts, body)]
    for secret in (new, previous):
        assert Webhook(secret).verify(body, headers)["data"] == DATA
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


def test_no_live_secret_signs_nothing() -> None:
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, now(), body, [])
    assert headers["webhook-signature"] == ""
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, h: (body.replace("1200", "1201"), h), id="body"),
        pytest.param(lambda body, h: (body + " ", h), id="body-whitespace"),
        pytest.param(lambda body, h: (body, {**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}), id="timestamp"),
        pytest.param(lambda body, h: (body, {**h, "webhook-id": EVENT_ID + "x"}), id="id"),
        pytest.param(lambda body, h: (body, {**h, "webhook-signature": h["webhook-signature"][:-4] + "AAA="}), id="signature"),
        pytest.param(lambda body, h: (body, {k: v for k, v in h.items() if k != "webhook-signature"}), id="no-signature"),
    ],
)
def test_tampering_fails_verification(tamper: Callable[[str, dict[str, str]], tuple[str, dict[str, str]]]) -> None:
    secret = new_secret()
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, now(), body, [secret])
    Webhook(secret).verify(body, headers)
    tampered_body, tampered_headers = tamper(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered_body, tampered_headers)


def test_an_old_message_fails_verification() -> None:
    secret = new_secret()
    body = event_body("export.completed", DATA)
    headers = signed_headers(EVENT_ID, now() - timedelta(minutes=10), body, [secret])
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(body, headers)


def test_a_non_utc_timestamp_verifies() -> None:
    secret = new_secret()
    body = event_body("export.completed", DATA)
    local = now().astimezone(timezone(timedelta(hours=2)))
    headers = signed_headers(EVENT_ID, local, body, [secret])
    Webhook(secret).verify(body, headers)


# -- webhook URLs -------------------------------------------------------------------------------

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"
PRIVATE = "points at a private, loopback or link-local address"


def resolving_to(*addresses: str) -> Callable[[str], list[str]]:
    def resolve(host: str) -> list[str]:
        resolve.calls.append(host)  # type: ignore[attr-defined]
        return list(addresses)

    resolve.calls = []  # type: ignore[attr-defined]
    return resolve


def never_called(host: str) -> list[str]:
    raise AssertionError(f"resolver called for {host}")


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/synq", "https://hooks.example.com:8443/synq?x=1#f", "https://HOOKS.example.com", "https://hooks.example.com/a%20b"],
)
def test_a_public_https_url_is_fine(url: str) -> None:
    resolve = resolving_to(PUBLIC_V4, PUBLIC_V6)
    assert webhook_url_problem(url, allow_private=False, resolve=resolve) is None
    assert resolve.calls == ["hooks.example.com"]  # type: ignore[attr-defined]


def test_http_is_refused_unless_private_targets_are_allowed() -> None:
    assert webhook_url_problem("http://hooks.example.com/synq", allow_private=False, resolve=resolving_to(PUBLIC_V4)) == "must use https"
    assert webhook_url_problem("http://hooks.example.com/synq", allow_private=True, resolve=never_called) is None


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("url", ["https://user:secret@hooks.example.com/", "https://user@hooks.example.com/", "https://:pw@hooks.example.com/"])
def test_credentials_in_the_url_are_refused(url: str, allow_private: bool) -> None:
    assert webhook_url_problem(url, allow_private=allow_private, resolve=resolving_to(PUBLIC_V4)) == "must not carry credentials"


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "hooks.example.com/synq",
        "//hooks.example.com/synq",
        "ftp://hooks.example.com/synq",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "https:///synq",
        "gopher://127.0.0.1:6379/_",
    ],
)
def test_what_is_not_an_absolute_http_url_is_refused(url: str, allow_private: bool) -> None:
    expected = "must be an absolute http or https URL" if allow_private else "must be an absolute https URL"
    assert webhook_url_problem(url, allow_private=allow_private, resolve=never_called) == expected


def test_a_malformed_url_is_refused() -> None:
    assert webhook_url_problem("https://[::1/synq", allow_private=False, resolve=never_called) == "is not a valid URL"


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "10.255.255.254",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.0.1",
        "192.168.255.254",
        "127.0.0.1",
        "127.8.8.8",
        "169.254.169.254",
        "169.254.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456:789a::1",
        "fe80::1",
        "fe80::1%eth0",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "ff02::1",
    ],
)
def test_hosts_resolving_to_private_addresses_are_refused(address: str) -> None:
    assert webhook_url_problem("https://hooks.example.com/synq", allow_private=False, resolve=resolving_to(address)) == PRIVATE


@pytest.mark.parametrize("address", ["172.15.255.255", "172.32.0.1", "11.0.0.1", "192.169.0.1", "8.8.8.8", PUBLIC_V4, PUBLIC_V6])
def test_public_neighbours_of_private_ranges_are_fine(address: str) -> None:
    assert webhook_url_problem("https://hooks.example.com/", allow_private=False, resolve=resolving_to(address)) is None


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    resolve = resolving_to(PUBLIC_V4, PUBLIC_V6, "10.1.2.3")
    assert webhook_url_problem("https://hooks.example.com/", allow_private=False, resolve=resolve) == PRIVATE


@pytest.mark.parametrize("url", ["https://127.0.0.1/synq", "https://10.0.0.7:8443/", "https://[::1]/synq", "https://[fe80::1]/"])
def test_literal_private_addresses_are_refused(url: str) -> None:
    def identity(host: str) -> list[str]:
        return [host]

    assert webhook_url_problem(url, allow_private=False, resolve=identity) == PRIVATE


@pytest.mark.parametrize("error", [OSError("boom"), socket.gaierror(socket.EAI_NONAME, "Name or service not known"), TimeoutError()])
def test_a_host_that_does_not_resolve_is_refused(error: OSError) -> None:
    def failing(host: str) -> list[str]:
        raise error

    assert webhook_url_problem("https://nowhere.invalid/", allow_private=False, resolve=failing) == "has a host name that does not resolve"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/synq", "http://127.0.0.1:8080/hook", "https://10.0.0.1/", "http://localhost:9000/", "http://[::1]:8080/"]
)
def test_allow_private_accepts_local_targets_without_resolving(url: str) -> None:
    assert webhook_url_problem(url, allow_private=True, resolve=never_called) is None


def test_a_host_name_the_resolver_cannot_encode_is_refused() -> None:
    def getaddrinfo(host: str) -> list[str]:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]  # fails in IDNA encoding, before any lookup

    url = "https://" + "a" * 64 + ".example.com/hook"
    assert webhook_url_problem(url, allow_private=False, resolve=getaddrinfo) == "has a host name that does not resolve"


# -- signed download links ------------------------------------------------------------------------

KEY = "download-signing-key"
ORG, TENANT, EXPORT = "org-1", "tenant-1", "0b6b5e0e-6d55-4c5e-9d8a-3c1e1f6f5a10"
NOW = 1_731_679_200.0
EXPIRES = int(NOW) + 3600


def test_download_signature_is_an_hmac_of_the_scope_and_expiry() -> None:
    signature = download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)
    assert signature == hmac.new(KEY.encode(), f"{ORG}\n{TENANT}\n{EXPORT}\n{EXPIRES}".encode(), hashlib.sha256).hexdigest()
    assert len(signature) == 64 and signature == download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)


def test_a_valid_download_signature() -> None:
    signature = download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)
    assert download_signature_ok(KEY, ORG, TENANT, EXPORT, EXPIRES, signature, NOW)
    assert download_signature_ok(KEY, ORG, TENANT, EXPORT, EXPIRES, signature, float(EXPIRES))  # the last valid second


@pytest.mark.parametrize("later", [EXPIRES + 0.001, EXPIRES + 1, EXPIRES + 86_400])
def test_an_expired_download_signature(later: float) -> None:
    signature = download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)
    assert not download_signature_ok(KEY, ORG, TENANT, EXPORT, EXPIRES, signature, later)


@pytest.mark.parametrize(
    ("key", "org", "tenant", "export", "expires"),
    [
        ("other-key", ORG, TENANT, EXPORT, EXPIRES),
        (KEY, "org-2", TENANT, EXPORT, EXPIRES),
        (KEY, ORG, "tenant-2", EXPORT, EXPIRES),
        (KEY, ORG, TENANT, "1c7c6f1f-7e66-4d6f-ae9b-4d2f2a7a6b21", EXPIRES),
        (KEY, ORG, TENANT, EXPORT, EXPIRES + 1),
        (KEY, TENANT, ORG, EXPORT, EXPIRES),
    ],
    ids=["key", "org", "tenant", "export", "extended-expiry", "swapped-scope"],
)
def test_a_download_signature_for_something_else_fails(key: str, org: str, tenant: str, export: str, expires: int) -> None:
    signature = download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)
    assert not download_signature_ok(key, org, tenant, export, expires, signature, NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: s[:-1] + ("0" if s[-1] != "0" else "1"), id="last-char"),
        pytest.param(lambda s: s[:32], id="truncated"),
        pytest.param(lambda s: s + "00", id="extended"),
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: s.upper() if s.upper() != s else "0" * 64, id="upper-case"),
    ],
)
def test_a_tampered_download_signature_fails(tamper: Callable[[str], str]) -> None:
    signature = download_signature(KEY, ORG, TENANT, EXPORT, EXPIRES)
    assert not download_signature_ok(KEY, ORG, TENANT, EXPORT, EXPIRES, tamper(signature), NOW)


def test_a_non_ascii_download_signature_fails() -> None:
    assert not download_signature_ok(KEY, ORG, TENANT, EXPORT, EXPIRES, "é" * 64, NOW)
