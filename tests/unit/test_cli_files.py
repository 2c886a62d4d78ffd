"""How synqctl reads an import file (by suffix, else by what it holds) and a retry's corrections (no API involved)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synqctl.cli import UsageError, parse_corrections, read_corrections, read_items, show_job, write_corrections
from synqctl.client import ApiError

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


@pytest.mark.parametrize(
    "text",
    [
        '{"1": {"sku": "B-1", "title": "Fixed"}, "10": "8d9f0c1e"}',  # a delete's correction is a product id
        '{"corrections": {"1": {"sku": "B-1", "title": "Fixed"}, "10": "8d9f0c1e"}}',  # a whole POST …/retry body
    ],
)
def test_corrections_are_an_object_keyed_by_index_or_a_whole_retry_body(text: str) -> None:
    assert parse_corrections(text, "fix.json") == {"1": {"sku": "B-1", "title": "Fixed"}, "10": "8d9f0c1e"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"1": {"title": "a"}, "1": {"title": "b"}}', "fix.json: not valid JSON: duplicate key '1'"),
        ('{"1": {"weight": NaN}}', "fix.json: not valid JSON: NaN is not valid JSON"),
        ('{"1": {"title": "a"}', "fix.json:1: not valid JSON: Expecting ',' delimiter"),
        ('[{"title": "a"}]', "fix.json: must hold one JSON object of corrected items keyed by their index"),
        # JSON Lines is not a corrections form: its second line is refused, and a one-line file names the key.
        ('{"index": 1, "item": {"title": "a"}}\n{"index": 3, "item": {"title": "b"}}\n', "fix.json:2: not valid JSON: Extra data"),
        ('{"index": 1, "item": {"title": "a"}}', "fix.json: 'index' is not an item index"),
        ('{"01": {"title": "a"}}', "fix.json: '01' is not an item index"),
        ('{"-1": {"title": "a"}}', "fix.json: '-1' is not an item index"),
        ('{"١": {"title": "a"}}', "fix.json: '١' is not an item index"),  # an Arabic-Indic digit: the API takes ASCII only
        ("{}", "fix.json holds no corrections"),
        ('{"corrections": {}}', "fix.json holds no corrections"),
    ],
)
def test_corrections_the_api_would_refuse_are_refused_before_sending(text: str, message: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_corrections(text, "fix.json")
    assert str(refused.value).startswith(message)


def test_a_corrections_file_may_start_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "fix.json"
    path.write_text('{"0": {"title": "Fixed"}}', encoding="utf-8-sig")
    assert read_corrections(path) == {"0": {"title": "Fixed"}}
    with pytest.raises(UsageError, match="cannot read"):
        read_corrections(tmp_path / "missing.json")


def test_a_corrections_file_written_from_failed_results_reads_back_as_their_items(tmp_path: Path) -> None:
    """`job --corrections-out`: the items as submitted, keyed by index, one to a few lines each, ready to fix."""
    items = {1: {"sku": "B-1", "note": "two\nlines", "tags": ["é", {"x": None}]}, 3: "a product id", 12: ENVELOPE["ProductImportData"]}
    path = tmp_path / "fix.json"
    assert write_corrections(({"index": i, "result": "failed", "item": item} for i, item in items.items()), path) == 3
    assert read_corrections(path) == {str(i): item for i, item in items.items()}
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "1": {\n    "sku": "B-1",') and '"12": {' in text and not (tmp_path / "fix.json.part").exists()


def test_no_failed_item_or_an_error_midway_writes_no_corrections_file(tmp_path: Path) -> None:
    assert write_corrections(iter(()), tmp_path / "fix.json") == 0
    assert list(tmp_path.iterdir()) == []

    def cut_short() -> Iterator[dict[str, Any]]:
        yield {"index": 0, "item": {"sku": "A"}}
        raise ApiError(410, "payload_expired", "The submitted items of this job are no longer kept.")

    with pytest.raises(ApiError):
        write_corrections(cut_short(), tmp_path / "fix.json")
    assert list(tmp_path.iterdir()) == []


def test_a_job_failed_as_a_whole_shows_why(capsys: pytest.CaptureFixture[str]) -> None:
    job = {"id": "j", "job_type": "BULK_IMPORT", "status": "FAILED", "total_items": 3, "processed_items": 0, "failed_items": 3}
    show_job({**job, "error": "payload_expired"}, as_json=False)
    assert [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("error:")] == [["error:", "payload_expired"]]
    show_job(job, as_json=False)
    assert "error:" not in capsys.readouterr().out


def test_json_lines_are_split_on_newlines_only(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 are valid inside a JSON string (json.dumps with ensure_ascii=False writes
    them as they are); str.splitlines() would cut a line there. CRLF line ends still work."""
    items = [{"sku": "A", "title": "one\u2028two"}, {"sku": "B", "title": "para\u2029graph\x85"}, {"sku": "C"}]
    path = tmp_path / "items.jsonl"
    path.write_bytes("\r\n".join(json.dumps(item, ensure_ascii=False) for item in items).encode() + b"\r\n")
    assert read_items(path, "BULK_IMPORT") == items
    path.write_bytes(path.read_bytes() + b'{"sku": "D",}\r\n')
    with pytest.raises(UsageError, match=r"items.jsonl:4: not valid JSON"):
        read_items(path, "BULK_IMPORT")
    path.write_bytes("\r".join(json.dumps(item, ensure_ascii=False) for item in items).encode())  # CR alone: an old Mac file
    assert read_items(path, "BULK_IMPORT") == items


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"title": "a"}\n{"title": "b\\ud800"}\n', "items.jsonl:2: not valid JSON: lone UTF-16 surrogate"),
        ('{"title": "a"}\n{"title": "b", "weight": 1e999}\n', "items.jsonl:2: not valid JSON: 1e999 is too large"),
        ('{"title": "a"}\n{"title": "b", "weight": -1E400}\n', "items.jsonl:2: not valid JSON: -1E400 is too large"),
    ],
)
def test_what_the_api_would_refuse_as_json_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    """A lone surrogate cannot be sent as UTF-8, and 1e999 reads as infinity, which JSON cannot carry:
    both crashed the upload with a traceback; the API refuses both as malformed_json."""
    path = tmp_path / "items.jsonl"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        read_items(path, "BULK_IMPORT")
    assert str(refused.value).startswith(str(path.parent / message))
    pair = tmp_path / "pair.jsonl"
    pair.write_text('{"title": "\\ud83d\\ude00", "weight": 1e308}\n')  # an escaped pair is one character; 1e308 is finite
    assert read_items(pair, "BULK_IMPORT") == [{"title": "😀", "weight": 1e308}]


def test_json_nested_too_deeply_is_refused_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UsageError, match=r"deep\.json: not valid JSON: nested too deeply"):
        read_items(path, "BULK_IMPORT")
