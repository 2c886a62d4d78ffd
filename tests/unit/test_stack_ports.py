"""The local stack's ports: none that the kernel or the emulators could take before a process binds it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from infra import stack


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    ports = [stack.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < stack._ephemeral_floor() for port in ports)


def test_a_port_something_is_bound_to_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        monkeypatch.setattr(stack, "_ephemeral_floor", lambda: 20000 + 1000)
        monkeypatch.setattr(stack, "_handed_out", set())
        candidates = iter([busy, 20500])
        monkeypatch.setattr(stack.random, "randrange", lambda low, high: next(candidates))
        assert stack.free_port() == 20500


def test_a_function_is_not_started_on_a_port_another_process_listens_on(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        own = stack.Stack(state_dir=tmp_path)
        own.ports["dispatch_job"] = other.getsockname()[1]
        with pytest.raises(RuntimeError, match="taken by another process"):
            own.start_function("dispatch_job")
    assert "dispatch_job" not in own.procs
