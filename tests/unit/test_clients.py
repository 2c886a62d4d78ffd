"""The Firestore client's channel: server-streaming calls read on the caller's thread."""

from __future__ import annotations

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from common import clients


@pytest.mark.parametrize("emulator", [True, False])
def test_firestore_channels_read_streams_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch, emulator: bool) -> None:
    if emulator:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")
    else:
        monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    channel = client._firestore_api._transport.grpc_channel  # built, not connected
    assert channel._single_threaded_unary_stream
    clients._single_threaded_streams()  # a second call adds nothing
    assert str(clients.base_client._DEFAULT_CHANNEL_OPTIONS).count("SingleThreadedUnaryStream") == 1
