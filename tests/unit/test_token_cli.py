"""`make token` / `python -m infra.token`: which Firestore it mints into, and when it refuses to."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import token


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # load_env writes os.environ; setting the keys here first has monkeypatch put them back after.
    for name in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.setenv(name, "before")


@pytest.fixture
def listener() -> Iterator[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once it is closed


def env_file(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "stack.env"
    path.write_text(f"FIRESTORE_EMULATOR_HOST={host}\nGOOGLE_CLOUD_PROJECT=synq-local\n")
    return path


def test_without_the_local_stack_it_refuses_rather_than_use_whatever_the_environment_points_at(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(token, "DEFAULT_ENV", tmp_path / "stack.env")
    problem = token.load_env(tmp_path / "stack.env")
    assert problem is not None and "make dev" in problem and "--env /dev/null" in problem
    assert token.os.environ["GOOGLE_CLOUD_PROJECT"] == "before"


def test_a_stopped_stacks_env_file_is_refused_at_once(tmp_path: Path) -> None:
    host = closed_port()
    problem = token.load_env(env_file(tmp_path, host))
    assert problem is not None and host in problem and "make dev" in problem


def test_a_running_stacks_env_file_is_used(tmp_path: Path, listener: str) -> None:
    assert token.load_env(env_file(tmp_path, listener)) is None
    assert (token.os.environ["FIRESTORE_EMULATOR_HOST"], token.os.environ["GOOGLE_CLOUD_PROJECT"]) == (listener, "synq-local")


def test_an_empty_env_file_leaves_the_environment_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    assert token.load_env(Path("/dev/null")) is None
    assert token.os.environ["GOOGLE_CLOUD_PROJECT"] == "before"
