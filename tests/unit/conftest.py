"""Fixtures shared by the unit tests: an empty in-memory catalog and settings from the environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.config import Settings, get_settings
from tests.unit.fakes import MemoryCatalog


@pytest.fixture
def catalog() -> MemoryCatalog:
    return MemoryCatalog()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """Set `SYNQ_*` variables for one test and return the settings read from them."""

    def apply(**values: Any) -> Settings:
        for name, value in values.items():
            monkeypatch.setenv(f"SYNQ_{name.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings()

    get_settings.cache_clear()
    yield apply
    get_settings.cache_clear()
