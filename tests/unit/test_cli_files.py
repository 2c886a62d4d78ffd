"""How synqctl reads an import file: by suffix, else by what it holds (no API involved)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synqctl.cli import UsageError, read_items

ENVELOPE = {"ProductImportData": {"ProductsToImport": [{"ImportMode": "Create", "ProductIdentifierValue": "1"}]}, "ErrorMode": "Ignore"}


@pytest.mark.parametrize(
    ("name", "text", "payload"),
    [
        ("one.txt", '{"sku": "A", "title": "x"}\n', [{"sku": "A", "title": "x"}]),  # JSON Lines of one item
        ("two.txt", '{"sku": "A"}\n{"sku": "B"}\n', [{"sku": "A"}, {"sku": "B"}]),
        ("array.txt", '[{"sku": "A"}]', [{"sku": "A"}]),
        ("feed.txt", json.dumps(ENVELOPE), ENVELOPE),
        ("feed.json", json.dumps(ENVELOPE, indent=2), ENVELOPE),
        ("body.json", json.dumps({"job_type": "BULK_IMPORT", "payload": [{"sku": "A"}]}), [{"sku": "A"}]),
        ("body.txt", json.dumps({"job_type": "BULK_IMPORT", "payload": ENVELOPE}), ENVELOPE),
    ],
)
def test_what_a_file_holds_is_the_payload_sent(tmp_path: Path, name: str, text: str, payload: Any) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert read_items(path, "BULK_IMPORT") == payload


def test_an_envelope_is_not_a_delete_payload(tmp_path: Path) -> None:
    path = tmp_path / "feed.json"
    path.write_text(json.dumps(ENVELOPE))
    with pytest.raises(UsageError, match="must hold a JSON array"):
        read_items(path, "BULK_DELETE")
