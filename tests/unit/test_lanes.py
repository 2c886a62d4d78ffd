"""Chunk messages spread over lanes (Settings.chunk_lanes): which topic each chunk goes to."""

from __future__ import annotations

from typing import Any

import pytest

from common.config import Settings, get_settings, lane_topic
from common.services import jobs
from common.store.paths import Scope


def test_lane_zero_is_the_topic_itself() -> None:
    assert lane_topic("bulk-job-chunks", 0) == "bulk-job-chunks"
    assert lane_topic("bulk-job-chunks", 3) == "bulk-job-chunks-3"


def test_one_lane_sends_every_chunk_to_the_chunks_topic() -> None:
    settings = Settings()
    assert {settings.chunk_topic(n) for n in range(50)} == {"bulk-job-chunks"}


def test_chunks_take_lanes_in_turn() -> None:
    settings = Settings(chunk_lanes=4)
    assert [settings.chunk_topic(n) for n in range(6)] == [
        "bulk-job-chunks",
        "bulk-job-chunks-1",
        "bulk-job-chunks-2",
        "bulk-job-chunks-3",
        "bulk-job-chunks",
        "bulk-job-chunks-1",
    ]


def test_publish_chunks_sends_each_message_once_to_its_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNQ_CHUNK_LANES", "3")
    get_settings.cache_clear()
    sent: list[tuple[str, int]] = []

    def publish(topic: str, messages: Any) -> int:
        batch = list(messages)
        sent.extend((topic, m.chunk) for m in batch)
        return len(batch)

    monkeypatch.setattr(jobs.queue, "publish", publish)
    try:
        assert jobs.publish_chunks(Scope("o", "t"), "job", range(7)) == 7
    finally:
        get_settings.cache_clear()
    assert sorted(sent, key=lambda s: s[1]) == [(lane_topic("bulk-job-chunks", n % 3), n) for n in range(7)]
