"""Small helpers the integration and e2e suites share."""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import _channel as grpc_channel


def until(what: str, check: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(every)


def self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """A certificate (and its key) for `host` and 127.0.0.1 that no trust store knows: a test trusts
    it by pointing `SSL_CERT_FILE` or `REQUESTS_CA_BUNDLE` at it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{host}.pem", folder / f"{host}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def all_pages(fetch: Callable[[str | None], tuple[list[dict[str, Any]], str | None]]) -> list[dict[str, Any]]:
    """Every item of a cursor-paged listing: `fetch(cursor)` returns (page, next cursor or None)."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page, cursor = fetch(cursor)
        items += page
        if not cursor:
            return items


_STREAM_CALLS = (grpc_channel._SingleThreadedUnaryStreamMultiCallable, grpc_channel._UnaryStreamMultiCallable)


@contextmanager
def _wrapped_streams(wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Every gRPC server stream call in the block goes through `wrap(original call)`."""
    originals = {cls: cls.__call__ for cls in _STREAM_CALLS}
    for cls, original in originals.items():
        cls.__call__ = wrap(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.__call__ = original  # type: ignore[method-assign]


@contextmanager
def tracked_streams() -> Iterator[list[Any]]:
    """Every gRPC server stream this process opens inside the block (each call's rendezvous).

    Held until the block's caller drops the list, so a stream dropped before its end still reads
    as open when `left_open` looks (garbage collection would cancel it, which frees nothing
    either: see `common.store.paths.read`)."""
    opened: list[Any] = []

    def tracking(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            rendezvous = original(self, *args, **kwargs)
            opened.append(rendezvous)
            return rendezvous

        return call

    with _wrapped_streams(tracking):
        yield opened


@contextmanager
def sent_requests(method: str) -> Iterator[list[Any]]:
    """The requests of every gRPC server stream of `method` this process opens inside the block."""
    sent: list[Any] = []

    def recording(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if self._method in (method, method.encode()):
                sent.append(request)
            return original(self, request, *args, **kwargs)

        return call

    with _wrapped_streams(recording):
        yield sent


def left_open(opened: list[Any]) -> list[str]:
    """The methods of the streams in `opened` not read to their end (cancelled ones included)."""
    return [r._state.method for r in opened if r._state.code is None or r._state.cancelled]
