"""Settings that cannot work together are refused when they are read, not found out in production."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from common.config import RUN_EXPORT_TIMEOUT_SECONDS, Settings
from infra import deploy


def test_run_export_timeout_is_the_deployed_one() -> None:
    assert deploy.PROFILES["run_export"].timeout_s == RUN_EXPORT_TIMEOUT_SECONDS


def test_the_default_export_claim_and_segment_fit_run_exports_timeout(settings_env: Callable[..., Settings]) -> None:
    settings = settings_env()
    assert settings.export_claim_seconds + settings.export_segment_seconds < RUN_EXPORT_TIMEOUT_SECONDS


@pytest.mark.parametrize(("claim", "segment"), [(480, 60), (500, 60), (420, 120), (0, 540)])
def test_a_claim_and_segment_longer_than_run_exports_timeout_are_refused(settings_env: Callable[..., Settings], claim: float, segment: float) -> None:
    """A claim starts its last segment just before `export_claim_seconds`: that segment, its
    upload's close and the compose must end before run_export is killed, or every claim loses its
    last segment and the export never finishes."""
    with pytest.raises(ValidationError, match="export_claim_seconds"):
        settings_env(export_claim_seconds=claim, export_segment_seconds=segment)
