"""Create-request validation and chunking of bulk jobs (no storage involved)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import errors
from common.config import Settings
from common.domain import syndigo
from common.domain.syndigo import ImportOptions
from common.http import loads_strict
from common.models.job import JobType
from common.services.jobs import Repeats, item_namer, read_request, split_chunks, validate_request

DATA = Path(__file__).resolve().parents[1] / "data"
SettingsEnv = Callable[..., Settings]


@pytest.fixture(autouse=True)
def _defaults(settings_env: SettingsEnv) -> Settings:
    return settings_env(max_items_per_job=200_000, max_item_bytes=256 * 1024)


def reject(body: Any, kind: type[errors.SynqError], status: int, code: str, field: str | None = None) -> errors.SynqError:
    with pytest.raises(kind) as info:
        validate_request(body)
    assert info.value.status == status
    assert info.value.code == code
    if field is not None:
        assert info.value.details == {"field": field}
    return info.value


# -- validate_request -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bulk_import", "bulk_update", "bulk_delete"])
def test_sample_payloads_are_accepted(name: str) -> None:
    body = loads_strict((DATA / f"{name}.json").read_text())
    checked = validate_request(body)
    assert checked.import_options is None
    assert checked.job_type == JobType(body["job_type"])
    assert json.loads(checked.payload_json) == body["payload"]
    assert checked.item_count == len(body["payload"])


def test_the_payload_is_stored_as_compact_utf8_json() -> None:
    checked = validate_request({"job_type": "BULK_IMPORT", "payload": [{"title": "Pull é", "attributes": {"a": [1, 2]}}, {}]})
    assert checked.payload_json == '[{"title":"Pull é","attributes":{"a":[1,2]}},{}]'


@pytest.mark.parametrize("body", [[], [{"job_type": "BULK_IMPORT"}], "x", 5, None, True])
def test_body_must_be_an_object(body: Any) -> None:
    reject(body, errors.BadRequest, 400, "invalid_body")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": [{"title": "T"}]}, "job_type"),
        ({"job_type": "BULK_IMPORT"}, "payload"),
        ({}, "job_type"),
        ({"payload": [], "extra": 1}, "job_type"),  # missing beats unknown
    ],
)
def test_missing_fields_are_400(body: dict[str, Any], field: str) -> None:
    error = reject(body, errors.BadRequest, 400, "missing_field", field)
    assert error.message == f"Field '{field}' is required."


def test_null_fields_are_present_but_invalid() -> None:
    reject({"job_type": None, "payload": [{}]}, errors.Unprocessable, 422, "invalid_job_type", "job_type")
    reject({"job_type": "BULK_IMPORT", "payload": None}, errors.Unprocessable, 422, "invalid_payload", "payload")


@pytest.mark.parametrize("extra", ["dry_run", "Job_Type", "", "x" * 300])
def test_unknown_top_level_field_is_422(extra: str) -> None:
    body = {"job_type": "BULK_IMPORT", "payload": [{"title": "T"}], extra: True}
    error = reject(body, errors.Unprocessable, 422, "unknown_field", extra[:100])
    assert error.message == f"Unknown field '{extra[:100]}'."


@pytest.mark.parametrize("job_type", ["bulk_import", "BULK_EXPORT", "", " BULK_IMPORT", 5, ["BULK_IMPORT"], "__class__", "name"])
def test_unknown_job_type_is_422(job_type: Any) -> None:
    reject({"job_type": job_type, "payload": [{"title": "T"}]}, errors.Unprocessable, 422, "invalid_job_type", "job_type")


@pytest.mark.parametrize("job_type", ["BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE"])
def test_object_payload_that_is_not_the_envelope_is_422(job_type: str) -> None:
    body = {"job_type": job_type, "payload": {"products": [{"title": "T"}]}}
    with pytest.raises(errors.Unprocessable) as caught:
        validate_request(body)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    ("envelope", "code", "field"),
    [
        ({"ProductImportData": {"ProductsToImport": [{}]}}, "missing_field", "payload.ProductImportData.ProductIdentifierProperty"),
        (
            {"ProductImportData": {"ProductsToImport": [{}], "ProductIdentifierProperty": "GTIN"}, "ErrorMode": "Maybe"},
            "invalid_value",
            "payload.ErrorMode",
        ),
        (
            {"ProductImportData": {"ProductsToImport": [], "ProductIdentifierProperty": "GTIN"}},
            "invalid_value",
            "payload.ProductImportData.ProductsToImport",
        ),
        ({"ProductImportData": {"ProductsToImport": [{}], "ProductIdentifierProperty": "GTIN"}, "extra": 1}, "unknown_field", "payload.extra"),
    ],
)
def test_an_envelope_error_names_the_field_from_the_request_body(envelope: dict[str, Any], code: str, field: str) -> None:
    """The envelope is the request's `payload`: its fields are `payload.…`, as the other payload
    errors name `payload` and `payload[3]`, not a top-level `ProductImportData` the body lacks."""
    error = reject({"job_type": "BULK_IMPORT", "payload": envelope}, errors.Unprocessable, 422, code, field)
    assert error.message.startswith(f"Field '{field}': "), error.message


def test_the_envelope_is_accepted_and_its_products_are_the_items() -> None:
    products = [{"ImportMode": "Create", "ProductIdentifierValue": "1"}, {"anything": "checked per item"}]
    envelope = {"ProductImportData": {"ProductsToImport": products, "ProductIdentifierProperty": "GTIN"}, "ErrorMode": "Ignore"}
    checked = validate_request({"job_type": "BULK_IMPORT", "payload": envelope})
    assert checked.job_type == "BULK_IMPORT" and json.loads(checked.payload_json) == envelope and checked.item_count == 2
    assert checked.import_options == {
        "vocabulary_id": None,
        "identifier_property": "GTIN",
        "error_mode": "Ignore",
        "what_if": False,
        "include_missing": None,
        "archived": False,
    }


def _outcome(body: Any) -> Any:
    try:
        checked = validate_request(body)
    except errors.SynqError as exc:
        return (type(exc), exc.code, exc.message, exc.details)
    return checked


_ENV = '"ProductImportData": {"ProductIdentifierProperty": "GTIN", "ProductsToImport": %s}'


@pytest.mark.parametrize(
    "text",
    [
        '{"job_type": "BULK_IMPORT", "payload": {%s, "ErrorMode": "Ignore"}}' % (_ENV % '[{"ProductIdentifierValue": "é"}, {"x": [1, 2.5]}]'),
        '{"payload": {"whatIf": true, %s}, "job_type": "BULK_UPDATE", "item_count": 1}' % (_ENV % "[{}]"),
        '{"job_type": "BULK_IMPORT", "payload": {"ProductImportData": {"ProductsToImport": [{}, {}], "Archived": true, "ProductIdentifierProperty": "SKU"}}}',
        '{"job_type": "BULK_IMPORT", "payload": {%s}}' % (_ENV % "[]"),
        '{"job_type": "BULK_IMPORT", "payload": {%s}}' % (_ENV % "5"),
        '{"job_type": "BULK_IMPORT", "payload": {%s}}' % (_ENV % '[1, "x", null]'),
        '{"job_type": "BULK_IMPORT", "payload": {"ProductImportData": {"ProductsToImport": [{}]}}}',
        '{"job_type": "BULK_IMPORT", "payload": {%s, "ErrorMode": "Sometimes"}}' % (_ENV % "[{}]"),
        '{"job_type": "BULK_IMPORT", "payload": {%s, "Extra": 1}}' % (_ENV % "[{}]"),
        '{"job_type": "BULK_DELETE", "payload": {%s}}' % (_ENV % "[{}]"),
        '{"job_type": "BULK_IMPORT", "payload": {%s}}' % (_ENV % '[{"t": "%s"}]' % ("x" * 300)),
        '{"job_type": "BULK_IMPORT", "payload": {%s}}' % (_ENV % "[%s]" % ",".join(["{}"] * 4)),
        '{"job_type": "BULK_IMPORT", "payload": {"ProductImportData": 5}}',
        '{"job_type": "BULK_IMPORT", "payload": [{}, {"t": "é"}]}',
        '{"job_type": "BULK_DELETE", "payload": ["a", 1]}',
    ],
)
def test_items_read_one_at_a_time_are_checked_as_if_parsed_whole(text: str, settings_env: SettingsEnv) -> None:
    """`read_request` hands validate_request ItemArrays where `loads_strict` hands it lists, for a
    plain payload and for an envelope's products alike: the outcome must be the same."""
    settings_env(max_items_per_job=3, max_item_bytes=200)
    whole, itemised = _outcome(loads_strict(text)), _outcome(read_request(text))
    assert itemised == whole


@pytest.mark.parametrize("payload", ["[]", 5, 1.5, True, None, "product"])
def test_payload_that_is_not_an_array_is_422(payload: Any) -> None:
    reject({"job_type": "BULK_IMPORT", "payload": payload}, errors.Unprocessable, 422, "invalid_payload", "payload")


@pytest.mark.parametrize("job_type", ["BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE"])
def test_empty_payload_is_422(job_type: str) -> None:
    reject({"job_type": job_type, "payload": []}, errors.Unprocessable, 422, "empty_payload", "payload")


@pytest.mark.parametrize("bad", [5, None, {"id": "p-1"}, ["p-1"], True])
def test_delete_items_must_be_strings(bad: Any) -> None:
    body = {"job_type": "BULK_DELETE", "payload": ["p-1", bad]}
    error = reject(body, errors.Unprocessable, 422, "invalid_payload", "payload[1]")
    assert error.message == "payload[1] must be a product id string for BULK_DELETE."


@pytest.mark.parametrize("job_type", ["BULK_IMPORT", "BULK_UPDATE"])
@pytest.mark.parametrize("bad", ["p-1", 5, None, [{"title": "T"}]])
def test_import_and_update_items_must_be_objects(job_type: str, bad: Any) -> None:
    body = {"job_type": job_type, "payload": [{"title": "T"}, {"title": "U"}, bad]}
    error = reject(body, errors.Unprocessable, 422, "invalid_payload", "payload[2]")
    assert error.message == f"payload[2] must be a product object for {job_type}."


def test_item_contents_are_not_validated_here() -> None:
    # Field checks happen per item in the worker, so one bad item cannot sink the whole job.
    checked = validate_request({"job_type": "BULK_IMPORT", "payload": [{"colour": "red"}, {}]})
    assert checked.payload_json == '[{"colour":"red"},{}]'


def test_item_larger_than_max_item_bytes_is_413(settings_env: SettingsEnv) -> None:
    settings_env(max_item_bytes=1000)
    overhead = len('{"title":""}')
    fits = {"title": "x" * (1000 - overhead)}
    assert len(validate_request({"job_type": "BULK_IMPORT", "payload": [fits]}).payload_json) == 1002
    too_big = {"title": "x" * (1001 - overhead)}
    with pytest.raises(errors.PayloadTooLarge) as info:
        validate_request({"job_type": "BULK_IMPORT", "payload": [fits, too_big]})
    assert info.value.status == 413
    assert info.value.message == "payload[1] is larger than 1000 bytes."


def test_item_size_counts_utf8_bytes(settings_env: SettingsEnv) -> None:
    settings_env(max_item_bytes=100)
    item = {"title": "é" * 45}  # 57 characters, 102 bytes
    with pytest.raises(errors.PayloadTooLarge):
        validate_request({"job_type": "BULK_IMPORT", "payload": [item]})


def test_default_item_limit_is_256_kib() -> None:
    big = {"title": "T", "description": "d" * (256 * 1024)}
    with pytest.raises(errors.PayloadTooLarge):
        validate_request({"job_type": "BULK_IMPORT", "payload": [big]})


def test_too_many_items_is_413(settings_env: SettingsEnv) -> None:
    settings_env(max_items_per_job=3)
    assert validate_request({"job_type": "BULK_DELETE", "payload": ["a", "b", "c"]}).item_count == 3
    with pytest.raises(errors.PayloadTooLarge) as info:
        validate_request({"job_type": "BULK_DELETE", "payload": ["a", "b", "c", "d"]})
    assert info.value.status == 413


def _accepts_then_round_trips(text: str) -> None:
    """What the API accepts must come back through the worker's own parser (dispatch runs
    `loads_strict` over the stored payload_json) and be encodable as UTF-8 for Firestore."""
    try:
        payload_json = validate_request(loads_strict(text)).payload_json
    except errors.SynqError as exc:
        assert 400 <= exc.status < 500
        return
    payload_json.encode("utf-8")
    loads_strict(payload_json)


def test_accepted_payloads_round_trip() -> None:
    _accepts_then_round_trips('{"job_type": "BULK_IMPORT", "payload": [{"title": "T", "attributes": {"w": 1.5e300}}]}')
    _accepts_then_round_trips('{"job_type": "BULK_IMPORT", "payload": [{"title": "\\ud83d\\ude00"}]}')


def test_lone_surrogate_is_a_client_error() -> None:
    _accepts_then_round_trips('{"job_type": "BULK_IMPORT", "payload": [{"title": "\\ud800"}]}')


def test_overflowing_number_is_refused_or_round_trips() -> None:
    _accepts_then_round_trips('{"job_type": "BULK_IMPORT", "payload": [{"title": "T", "attributes": {"w": 1e999}}]}')


# -- split_chunks -----------------------------------------------------------------------------------


def check_chunks(texts: list[str], size: int, max_bytes: int) -> list[tuple[int, int, str, int]]:
    """Every invariant a chunking must keep; returns the chunks."""
    chunks = list(split_chunks(texts, size, max_bytes))
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    expected_first = 0
    items: list[Any] = []
    for _n, first, items_json, count in chunks:
        assert first == expected_first
        expected_first += count
        parsed = json.loads(items_json)
        assert len(parsed) == count
        assert 1 <= count <= size
        items.extend(parsed)
        if count > 1:
            assert len(items_json) <= max_bytes + 2
    assert expected_first == len(texts)
    assert items == [json.loads(t) for t in texts]
    # Greedy: a chunk is closed only when the next item would not fit (by count or by size).
    for (_, _first, items_json, count), following in itertools.pairwise(chunks):
        next_text = texts[following[1]]
        assert count == size or (len(items_json) - 1) + len(next_text) > max_bytes
    return chunks


def test_no_items_no_chunks() -> None:
    assert list(split_chunks([], 10, 100)) == []


def test_chunks_respect_the_item_count() -> None:
    texts = [json.dumps(i) for i in range(10)]
    chunks = check_chunks(texts, 3, 10_000)
    assert [(n, first, count) for n, first, _, count in chunks] == [(0, 0, 3), (1, 3, 3), (2, 6, 3), (3, 9, 1)]
    assert chunks[0][2] == "[0,1,2]"


def test_chunks_respect_the_byte_budget() -> None:
    texts = ['"' + "x" * 8 + '"'] * 10  # 10 characters each, 11 with the separator
    chunks = check_chunks(texts, 100, 35)
    assert [c[3] for c in chunks] == [3, 3, 3, 1]
    assert all(len(c[2]) <= 35 for c in chunks)


def test_an_item_larger_than_the_budget_gets_its_own_chunk() -> None:
    texts = ['"a"', '"' + "b" * 100 + '"', '"c"']
    chunks = check_chunks(texts, 10, 20)
    assert [(c[1], c[3]) for c in chunks] == [(0, 1), (1, 1), (2, 1)]


def test_one_item_per_chunk() -> None:
    assert [c[3] for c in check_chunks(['"a"', '"b"'], 1, 1000)] == [1, 1]


json_texts = st.lists(
    st.recursive(
        st.one_of(st.integers(-1000, 1000), st.text(alphabet="abc xyz", max_size=30), st.booleans(), st.none()),
        lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text("kq", max_size=3), c, max_size=3)),
        max_leaves=8,
    ).map(lambda v: json.dumps(v, separators=(",", ":"))),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(texts=json_texts, size=st.integers(1, 12), max_bytes=st.integers(1, 300))
def test_chunking_property(texts: list[str], size: int, max_bytes: int) -> None:
    check_chunks(texts, size, max_bytes)


def test_chunk_budget_counts_utf8_bytes() -> None:
    texts = [json.dumps({"title": "é" * 100}, ensure_ascii=False)] * 10  # 112 characters, 212 bytes each
    chunks = list(split_chunks(texts, 100, 500))
    assert all(len(c[2].encode("utf-8")) <= 500 + 2 for c in chunks if c[3] > 1)


# -- items that name a product an earlier chunk names -------------------------------------------------


def marked(job: dict[str, Any], payload: list[Any], size: int, options: ImportOptions | None = None) -> tuple[list[list[int]], bool]:
    repeats = Repeats(item_namer(job, options), syndigo.identifier_of if options else None)
    chunks = list(repeats.mark(split_chunks([json.dumps(item) for item in payload], size, 10**6)))
    return [chunk[4] for chunk in chunks], repeats.serial


def test_an_item_naming_a_product_of_an_earlier_chunk_is_marked() -> None:
    imports = {"job_type": "BULK_IMPORT"}
    payload = [{"sku": "A"}, {"sku": "B"}, {"sku": "A"}, {"title": "no sku"}, {"sku": "B"}, {"sku": "C"}]
    assert marked(imports, payload, 2) == ([[], [0], [0]], True)  # A in chunk 1, B in chunk 2
    # Named twice within one chunk only: that chunk applies them in order by itself.
    assert marked(imports, payload, 6) == ([[]], False)
    assert marked(imports, [{"sku": "A"}, {"sku": "A"}, {"sku": "B"}], 2) == ([[], []], False)


VOCABULARY = syndigo.Vocabulary.from_doc(
    {"id": "v", "attributes": [{"name": "GTIN", "maps_to": "gtin"}, {"name": "SKU", "maps_to": "sku"}, {"name": "MPN", "identifier": True}]}
)


@pytest.mark.parametrize(
    ("job", "payload", "expected"),
    [
        ({"job_type": "BULK_UPDATE"}, [{"id": "p-1"}, {"id": "p-1"}, {"id": "p-2", "sku": "S"}, {"sku": "p-2"}], [[], [0], [], []]),
        ({"job_type": "BULK_DELETE"}, ["p-1", "p-2", 5, "p-1"], [[], [], [], [0]]),
        (
            {"job_type": "BULK_IMPORT", "payload_kind": "ProductImportData"},
            [
                {"ProductIdentifierValue": "G"},
                {"ProductIdentifierValue": 7},
                "x",
                {"ProductIdentifierValue": "G", "ProductIdentifierPropertyOverride": "Nope"},
                {"ProductIdentifierValue": "G"},
            ],
            [[], [], [], [], [0]],
        ),
    ],
)
def test_items_name_products_as_the_engine_matches_them(job: dict[str, Any], payload: list[Any], expected: list[list[int]]) -> None:
    """An update names its product by id, else by sku; a delete by id; an import entry by its
    ProductIdentifierValue under its identifier property. What names nothing is never marked."""
    options = syndigo.ImportOptions(VOCABULARY, "GTIN") if "payload_kind" in job else None
    assert marked(job, payload, 1, options) == (expected, True)


def test_one_value_named_two_ways_is_two_products() -> None:
    """The same text as a GTIN and as a vendor part number names two products, so neither is marked
    (a marked entry is checked as one an earlier chunk creates)."""
    payload = [{"ProductIdentifierValue": "X1"}, {"ProductIdentifierValue": "X1", "ProductIdentifierPropertyOverride": "MPN"}]
    job = {"job_type": "BULK_IMPORT", "payload_kind": "ProductImportData"}
    assert marked(job, payload, 1, syndigo.ImportOptions(VOCABULARY, "GTIN")) == ([[], []], True)


NOPE = {"ProductIdentifierPropertyOverride": "Nope"}  # a property the vocabulary lacks


@pytest.mark.parametrize(
    ("payload", "serial"),
    [
        ([{"ProductIdentifierValue": "G", **NOPE}, {"ProductIdentifierValue": "G", **NOPE}], True),
        ([{"ProductIdentifierValue": "G"}, {"ProductIdentifierValue": "G", **NOPE}], True),
        ([{"ProductIdentifierValue": "G", **NOPE}, {"ProductIdentifierValue": "G"}], True),
        ([{"ProductIdentifierValue": "G", **NOPE}, {"ProductIdentifierValue": "H"}], False),
        ([{"ProductIdentifierValue": "G", **NOPE}, {"ProductIdentifierValue": "H", **NOPE}], False),
    ],
)
def test_an_identifier_held_by_an_entry_naming_no_product_in_two_chunks_runs_them_in_order(payload: list[Any], serial: bool) -> None:
    """An entry whose identifier property the vocabulary lacks names no product (it is never marked),
    but its failure issue is its identifier's: the payload's later entry of that text must commit last."""
    job = {"job_type": "BULK_IMPORT", "payload_kind": "ProductImportData"}
    assert marked(job, payload, 1, syndigo.ImportOptions(VOCABULARY, "GTIN")) == ([[], []], serial)


@pytest.mark.parametrize(
    ("job", "payload", "options"),
    [
        ({"job_type": "BULK_UPDATE"}, [{"id": "p-1"}, {"sku": "S"}], None),
        ({"job_type": "BULK_UPDATE"}, [{"id": "p-1"}, {"sku": "S"}, {"id": "p-2"}], None),
        (
            {"job_type": "BULK_IMPORT", "payload_kind": "ProductImportData"},
            [{"ProductIdentifierValue": "G"}, {"ProductIdentifierValue": "S", "ProductIdentifierPropertyOverride": "SKU"}],
            syndigo.ImportOptions(VOCABULARY, "GTIN"),
        ),
    ],
)
def test_items_naming_products_in_two_ways_run_one_chunk_at_a_time(job: dict[str, Any], payload: list[Any], options: Any) -> None:
    """Product p-1 may have SKU S: nothing short of reading the catalog tells, so the chunks run in order."""
    assert marked(job, payload, 1, options) == ([[]] * len(payload), True)
    assert marked(job, payload, len(payload), options) == ([[]], False)  # one chunk applies its items in order anyway


def test_a_dry_run_stored_before_what_if_was_a_field_still_says_so() -> None:
    from datetime import UTC, datetime

    from common.services.jobs import summary

    now = datetime(2026, 11, 1, tzinfo=UTC)
    job = {"id": "j", "org_id": "o", "tenant_id": "t", "job_type": "BULK_IMPORT", "status": "COMPLETED", "created_at": now, "updated_at": now}
    assert summary({**job, "import_options": {"what_if": True}})["what_if"] is True
    assert summary({**job, "what_if": False, "import_options": {"what_if": True}})["what_if"] is False
    assert summary(job)["what_if"] is False


# -- a retry's body ------------------------------------------------------------------------------------


def test_a_retrys_body_is_its_corrections_or_none() -> None:
    from common.services.jobs import retry_corrections

    assert retry_corrections(None) == {}
    assert retry_corrections({}) == {}
    assert retry_corrections({"corrections": {}}) == {}
    assert retry_corrections({"corrections": {"2": {"title": "T"}}}) == {"2": {"title": "T"}}


@pytest.mark.parametrize("body", [[], [{"corrections": {}}], "x", 5, True, False])
def test_a_retrys_body_that_is_not_an_object_is_400_as_a_creates(body: Any) -> None:
    from common.services.jobs import retry_corrections

    with pytest.raises(errors.BadRequest) as info:
        retry_corrections(body)
    assert (info.value.status, info.value.code) == (400, "invalid_body")
    reject(body, errors.BadRequest, 400, "invalid_body")  # what POST /bulk-jobs answers the same body


def test_a_retrys_unknown_member_is_422_unknown_field_naming_it_as_a_creates() -> None:
    from common.services.jobs import retry_corrections

    with pytest.raises(errors.Unprocessable) as info:
        retry_corrections({"corrections": {}, "zeta": 1, "payload": []})
    assert (info.value.status, info.value.code, info.value.details) == (422, "unknown_field", {"field": "payload"})
    assert "'payload'" in info.value.message


@pytest.mark.parametrize("corrections", [[], "x", None, 1, [{"title": "T"}]])
def test_corrections_that_are_not_an_object_are_422_naming_the_field(corrections: Any) -> None:
    from common.services.jobs import retry_corrections

    with pytest.raises(errors.Unprocessable) as info:
        retry_corrections({"corrections": corrections})
    assert (info.value.status, info.value.code, info.value.details) == (422, "invalid_value", {"field": "corrections"})
