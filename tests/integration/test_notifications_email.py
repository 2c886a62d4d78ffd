"""Email over STARTTLS: the SMTP server's certificate is verified before the password is sent.

The mail server is aiosmtpd on loopback with STARTTLS and a self-signed certificate for `localhost`
(the stack's own sink has no TLS, and `smtp_tls` is off there). The delivery record lives in the
session stack's Firestore; `deliver` runs in this process.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from common.config import get_settings
from common.models.export import DeliveryTask
from common.services import notifications
from common.store import exports as store
from common.store.paths import coll
from infra.stack import free_port
from tests.helpers import self_signed
from tests.integration.conftest import Pipeline

PASSWORD = "smtp-password-never-sent-in-clear"


@dataclass
class TlsMailServer:
    cert: Path
    port: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or envelope.content)
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)


@pytest.fixture
def mail_server(tmp_path: Path) -> Iterator[TlsMailServer]:
    cert, key = self_signed(tmp_path, "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = TlsMailServer(cert=cert, port=free_port())
    controller = Controller(
        server,
        hostname="127.0.0.1",
        port=server.port,
        tls_context=tls,
        require_starttls=True,
        auth_require_tls=True,
        authenticator=server.authenticate,
    )
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_env(mail_server: TlsMailServer) -> Iterator[None]:
    """deliver_notification's SMTP settings: STARTTLS and a login, to the TLS mail server above."""
    values = {
        "SYNQ_SMTP_HOST": "localhost",
        "SYNQ_SMTP_PORT": str(mail_server.port),
        "SYNQ_SMTP_TLS": "true",
        "SYNQ_SMTP_USERNAME": "synq",
        "SYNQ_SMTP_PASSWORD": PASSWORD,
    }
    saved = {k: os.environ.get(k) for k in [*values, "SSL_CERT_FILE"]}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def email_delivery(pipeline: Pipeline) -> DeliveryTask:
    """A tenant notified by email and one export.completed delivery record for it."""
    scope = pipeline.scope
    notifications.put_notification_settings(pipeline.principal, {"channel": "email", "email": "ops@example.com"})
    data = {"export_id": str(uuid.uuid4()), "product_count": 1, "excluded_count": 0, "object": "exports/x.jsonl", "download_url": "https://x"}
    delivery = notifications.new_delivery(scope, str(uuid.uuid4()), "export.completed", data, export_id=data["export_id"])
    coll(scope, "notification_deliveries").document(delivery["id"]).set(delivery)
    return DeliveryTask(org_id=scope.org_id, tenant_id=scope.tenant_id, event_id=delivery["id"])


def test_an_smtp_server_whose_certificate_is_not_trusted_never_gets_the_password(
    pipeline: Pipeline, mail_server: TlsMailServer, smtp_env: None
) -> None:
    task = email_delivery(pipeline)
    assert notifications.deliver(task) is False
    assert mail_server.logins == [] and mail_server.messages == []
    record = store.get_delivery(pipeline.scope, task.event_id)
    assert record is not None and record["delivered_at"] is None
    assert record["last_error"] == "SSLCertVerificationError: delivery failed"


def test_a_trusted_smtp_server_gets_the_login_and_the_mail_over_tls(pipeline: Pipeline, mail_server: TlsMailServer, smtp_env: None) -> None:
    os.environ["SSL_CERT_FILE"] = str(mail_server.cert)  # ssl.create_default_context trusts it now (smtp_env restores)
    task = email_delivery(pipeline)
    assert notifications.deliver(task) is True
    assert mail_server.logins == [("synq", PASSWORD)]
    [message] = mail_server.messages
    assert b"Subject: Synq export" in message
