"""Strict JSON parsing, request bodies, safe ids and the route table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import flask
import pytest
import requests
from google.api_core import exceptions as gexc
from hypothesis import given, settings
from hypothesis import strategies as st

from common import errors
from common.http import (
    ItemArray,
    QueryParam,
    Request,
    Response,
    Router,
    compact_json,
    error_response,
    is_safe_id,
    loads_strict,
    loads_strict_itemised,
    parse_json_body,
    utf8_size,
)
from common.logging import JsonFormatter
from common.store.paths import Scope

app = flask.Flask(__name__)


# -- loads_strict ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [1, 2.5, "x", true, false, null], "c": {"d": "é"}}',
        "[]",
        "{}",
        '"just a string"',
        "0",
        "-1.5e10",
        "null",
        '  {"spaced": true}  ',
        '{"emoji": "\\ud83d\\ude00", "nul": "\\u0000"}',
        '{"a": {"a": 1}, "b": {"a": 2}}',  # the same key in different objects
        "[" * 100 + "]" * 100,
    ],
)
def test_accepts_normal_json(text: str) -> None:
    assert loads_strict(text) == json.loads(text)


def test_keeps_key_order_and_types() -> None:
    assert list(loads_strict('{"z": 1, "a": 2}')) == ["z", "a"]
    assert loads_strict("[9007199254740993]") == [9007199254740993]


def _reject(text: str) -> errors.BadRequest:
    with pytest.raises(errors.BadRequest) as info:
        loads_strict(text)
    assert info.value.status == 400
    assert info.value.code == "malformed_json"
    return info.value


@pytest.mark.parametrize("text", ["NaN", "[NaN]", '{"a": NaN}', "Infinity", "-Infinity", '{"a": [1, -Infinity]}'])
def test_rejects_nan_and_infinity(text: str) -> None:
    assert "is not valid JSON" in _reject(text).message


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', '{"a": 1, "a": 1}', '[{"x": {"k": 1, "k": 2}}]', '{"sku": "A", "title": "T", "sku": "B"}'],
)
def test_rejects_duplicate_keys(text: str) -> None:
    assert _reject(text).message.startswith("Duplicate key ")


def test_duplicate_key_message_is_bounded() -> None:
    key = "k" * 5000
    message = _reject(json.dumps({key: 1})[:-1] + f', "{key}": 2}}').message
    assert len(message) < 200


@pytest.mark.parametrize(
    "text",
    ["[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000, "[" * 100_000, '[{"a":' * 5_000 + "1" + "}]" * 5_000],
    ids=["arrays", "objects", "unclosed", "mixed"],
)
def test_rejects_pathological_nesting(text: str) -> None:
    _reject(text)


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{'a': 1}", '{"a" 1}', "tru", "01", '"\\x"', "[1] [2]", "\x00"])
def test_rejects_malformed_json(text: str) -> None:
    assert _reject(text).message.startswith("Request body is not valid JSON: ")


def test_error_names_the_position() -> None:
    assert _reject('{\n  "a"}').message.endswith("Expecting ':' delimiter at line 2 column 6.")


@pytest.mark.parametrize("digits", [4301, 100_000])
def test_rejects_overlong_integer_literals_as_bad_request(digits: int) -> None:
    _reject('{"n": ' + "9" * digits + "}")


@pytest.mark.parametrize("text", ["1e999", "[-1e999]", '{"w": 1' + "0" * 400 + ".0}"])
def test_rejects_numbers_that_overflow_to_infinity(text: str) -> None:
    _reject(text)


# -- loads_strict_itemised --------------------------------------------------------------------------


# A create request's items: its payload array, or its envelope's products (as jobs.read_request has them).
PATHS = (("payload",), ("payload", "ProductImportData", "ProductsToImport"))


def agrees_with_loads_strict(text: str, keep: int = 1000) -> Any:
    """`loads_strict_itemised` must give what `loads_strict` gives, with every array down one of
    `PATHS` as an `ItemArray` of the same items, or refuse with the same message. Returns its answer
    (or error)."""
    try:
        whole = loads_strict(text)
    except errors.BadRequest as refused:
        with pytest.raises(errors.BadRequest) as info:
            loads_strict_itemised(text, PATHS, keep)
        assert (info.value.code, info.value.message) == (refused.code, refused.message), text
        return info.value
    got = loads_strict_itemised(text, PATHS, keep)
    assert same_with_item_arrays(got, whole, ()) == whole
    return got


def same_with_item_arrays(got: Any, whole: Any, path: tuple[str, ...]) -> Any:
    """`got` with its ItemArrays turned back into the lists they hold, checked against `whole`: an
    ItemArray exactly where `whole` has an array down one of PATHS, and keys in the same order."""
    if path in PATHS and isinstance(whole, list):
        assert isinstance(got, ItemArray), path
        assert got.json == compact_json(whole)
        assert got.count == len(whole)
        assert got.kinds == "".join(compact_json(v)[0] for v in whole)
        assert list(got.sizes) == [len(compact_json(v).encode("utf-8")) for v in whole]
        return whole
    if isinstance(whole, dict) and any(len(p) > len(path) and p[: len(path)] == path for p in PATHS):
        assert isinstance(got, dict) and list(got) == list(whole)
        return {key: same_with_item_arrays(got[key], whole[key], (*path, key)) for key in got}
    assert not isinstance(got, ItemArray), path
    return got


@pytest.mark.parametrize(
    "text",
    [
        '{"job_type": "BULK_IMPORT", "payload": [{"title": "Pull é", "n": [1, 2.5e3, -0]}, {}, "id", 7, null, [true]]}',
        '  {  "payload"  :  [  ]  ,  "x" : { "payload": [1] } }  ',
        '{"payload": {"ProductImportData": {"ProductsToImport": [{"a": 1}], "ErrorMode": "Fail"}}, "job_type": "BULK_IMPORT"}',
        '{"payload": {"x": {"ProductsToImport": [1]}, "ProductsToImport": [2], "ProductImportData": {"ProductsToImport": []}}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": 5}}, "ProductImportData": {"ProductsToImport": [1]}}',
        '{"payload": {"ProductImportData": [{"ProductsToImport": [1]}]}}',  # not an object: parsed whole
        '{"payload": 5, "job_type": "BULK_DELETE"}',
        '{"item_count": 2, "payload": ["a", "b"], "payload_sha256": "00"}',
        '{"payload": [{"emoji": "\\ud83d\\ude00", "nul": "\\u0000", "esc": "\\"\\n\\/"}]}',
        "{}",
        "{ }",
        '{"Payload": [1], "payload ": [2]}',
        "[1, 2]",  # not an object: loads_strict's own answer
        '"payload"',
        "null",
    ],
)
def test_itemised_reading_accepts_what_loads_strict_accepts(text: str) -> None:
    agrees_with_loads_strict(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"payload": [1,]}',
        '{"payload": [1 2]}',
        '{"payload": [1, 2}',
        '{"payload": [',
        '{"payload": [{"a": 1}, {"a": 1, "a": 2}]}',
        '{"payload": [NaN]}',
        '{"payload": [{"w": 1e999}]}',
        '{"payload": [' + "9" * 5000 + "]}",
        '{"payload": [' + "[" * 100_000 + "]}",
        '{"payload": [1], "payload": [1]}',
        '{"payload": [1], "job_type": "X", "job_type": "Y"}',
        '{"a": 1,}',
        '{"a" 1}',
        '{"a": 1 "b": 2}',
        "{'payload': [1]}",
        "{payload: [1]}",
        '{"payload": [1]} x',
        '{"payload": [1], "payload": [2]} x',  # the duplicate is found as the object closes, before the rest
        '{"payload": [1]}{"payload": [1]}',
        '{"payload": [1]',
        '{"payload": ["\\x"]}',
        '{"payload": ["a\x00b"]}',
        '{"payload": [{"t": "\\ud800"}]}',
        '{"payload": [{"t": "\\ud800"}], "job_type": "X", "job_type": "Y"}',  # the duplicate is found first
        '{"payload": [{"t": "\\ud800"}], "x": [1,]}',  # the syntax error is found first
        '{"\\udc00": 1, "payload": [1]}',
        '{"payload": [1], "x": {"t": "\\ud800"}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [{"t": "\\ud800"}]}}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1], "x": "\\udc00"}}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1], "ProductsToImport": [2]}}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1]}, "ProductImportData": 5}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1,]}}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1]}}',
        '{"payload": {"ProductImportData": {"ProductsToImport": [1] "ErrorMode": 1}}}',
        '{"payload": {"ProductImportData": {"a": 1, "a": 2, "ProductsToImport": [{"t": "\\ud800"}]}}}',
        "\ufeff" + '{"payload": [1]}',
        '{"payload": [1]}\x00',
        "{",
        "",
    ],
)
def test_itemised_reading_refuses_what_loads_strict_refuses_with_its_message(text: str) -> None:
    refused = agrees_with_loads_strict(text)
    assert isinstance(refused, errors.BadRequest) and refused.code == "malformed_json"


def test_itemised_reading_counts_past_what_it_keeps_and_still_checks_the_rest() -> None:
    items = loads_strict_itemised('{"payload": [{"a": 1}, "b", 3, [4]]}', PATHS, 2)["payload"]
    assert (items.json, items.count, items.kinds, list(items.sizes)) == ('[{"a":1},"b"]', 4, '{"', [7, 3])
    with pytest.raises(errors.BadRequest, match="Expecting ',' delimiter"):
        loads_strict_itemised('{"payload": [1, 2, 3 4]}', PATHS, 2)
    with pytest.raises(errors.BadRequest, match="Duplicate key"):
        loads_strict_itemised('{"payload": [1, 2, {"k": 1, "k": 2}]}', PATHS, 2)


def test_item_array_of_values_matches_the_reader() -> None:
    values = [{"t": "é"}, "id", 1.5, None]
    text = json.dumps({"payload": values})
    assert ItemArray.of(values, 10) == loads_strict_itemised(text, PATHS, 10)["payload"]
    with pytest.raises(errors.BadRequest, match="lone UTF-16 surrogate"):
        ItemArray.of([{"t": "\ud800"}], 10)


def test_item_array_of_the_texts_of_values_is_the_array_of_the_values() -> None:
    """A retry builds its items from the texts the job stored: the same array, nothing parsed."""
    values = [{"t": "é", "n": 1e-05}, "id", 12345678901234567890, None, [1, {"a": []}]]
    for keep in (10, 2):
        assert ItemArray.of_texts([compact_json(v) for v in values], keep) == ItemArray.of(values, keep)
    with pytest.raises(errors.BadRequest, match="lone UTF-16 surrogate"):
        ItemArray.of_texts(["1", compact_json({"t": "\ud800"})], 10)


@pytest.mark.parametrize("text", ["", "abc", "é" * 3, "x" * (3 << 20) + "€"])
def test_utf8_size_is_the_encoded_length(text: str) -> None:
    assert utf8_size(text) == len(text.encode("utf-8"))


json_values = st.recursive(
    st.one_of(
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.booleans(),
        st.none(),
    ),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=4), c, max_size=4)),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> str:
    """A create request's text: a payload array, or an envelope around one, among other members in
    any place (some bearing the names on the way at another level), spaced or not."""

    def among(names: list[str], member: tuple[str, Any]) -> dict[str, Any]:
        others = list(draw(st.dictionaries(st.sampled_from(names), json_values, max_size=3)).items())
        at = draw(st.integers(0, len(others)))
        return dict([*others[:at], member, *others[at:]])

    items = draw(st.lists(json_values, max_size=6))
    if draw(st.booleans()):
        payload: Any = items
    else:
        products = among(["ProductIdentifierProperty", "Archived", "payload"], ("ProductsToImport", items))
        payload = among(["ErrorMode", "whatIf", "ProductsToImport"], ("ProductImportData", products))
    members = among(["job_type", "item_count", "x", "payload ", "ProductImportData"], ("payload", payload))
    return json.dumps(members, indent=draw(st.sampled_from([None, 0, 2])), ensure_ascii=draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(text=bodies())
def test_itemised_reading_agrees_on_any_body(text: str) -> None:
    agrees_with_loads_strict(text)


@settings(max_examples=500, deadline=None)
@given(text=bodies(), data=st.data())
def test_itemised_reading_agrees_on_any_damaged_body(text: str, data: st.DataObject) -> None:
    # Up to two damages, so that two faults meet (which of them is reported is part of the message).
    for _ in range(data.draw(st.integers(1, 2))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        insert = data.draw(
            st.sampled_from(
                ["", ",", "]", "}", "[", "{", '"', ":", " ", "1", "x", "\\", "\\ud800", "NaN", '"payload":[1],', '"ProductsToImport":[1],']
            )
        )
        text = text[:at] + insert + text[at + cut :]
    agrees_with_loads_strict(text)


# -- the caller's address ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "proxies", "expected"),
    [
        (None, 0, "10.0.0.9"),
        ("198.51.100.7", 0, "10.0.0.9"),  # no proxy in front: whatever the caller sent is not believed
        ("198.51.100.7", 1, "198.51.100.7"),
        ("6.6.6.6, 198.51.100.7", 1, "198.51.100.7"),  # a forged first entry, then the front end's
        ("6.6.6.6,198.51.100.7, 35.191.0.1", 2, "198.51.100.7"),  # a load balancer of one's own too
        ("198.51.100.7", 2, "10.0.0.9"),  # fewer entries than proxies: not what they wrote
        (None, 1, "10.0.0.9"),
    ],
)
def test_the_client_ip_is_what_the_trusted_proxies_appended(forwarded: str | None, proxies: int, expected: str) -> None:
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    request = Request(method="GET", path="/", headers=headers, args={}, remote_addr="10.0.0.9", raw=flask.Request.from_values())
    assert request.client_ip(proxies) == expected


# -- parse_json_body --------------------------------------------------------------------------------


def _parse(
    body: bytes | str, content_type: str | None = "application/json", max_bytes: int = 1000, headers: dict[str, str] | None = None, **kw: Any
) -> Any:
    headers = dict(headers or {}) | ({} if content_type is None else {"Content-Type": content_type})
    with app.test_request_context("/x", method="POST", data=body, headers=headers):
        return parse_json_body(flask.request, max_bytes=max_bytes, **kw)


def test_parses_a_json_body() -> None:
    assert _parse('{"a": [1]}') == {"a": [1]}
    assert _parse('{"a": 1}', "application/merge-patch+json") == {"a": 1}
    assert _parse('{"a": 1}', "application/json; charset=UTF-8") == {"a": 1}
    assert _parse(b"{}", "APPLICATION/JSON") == {}


def test_body_size_limit_is_inclusive() -> None:
    body = '{"a": "' + "x" * 91 + '"}'
    assert len(body) == 100
    assert _parse(body, max_bytes=100) == {"a": "x" * 91}
    with pytest.raises(errors.PayloadTooLarge) as info:
        _parse(body, max_bytes=99)
    assert info.value.status == 413


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body(body: bytes) -> None:
    with pytest.raises(errors.BadRequest) as info:
        _parse(body)
    assert info.value.code == "missing_body"
    assert _parse(body, required=False) is None


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp"])
def test_wrong_content_type(content_type: str | None) -> None:
    with pytest.raises(errors.UnsupportedMediaType) as info:
        _parse("{}", content_type)
    assert info.value.status == 415


def test_non_utf8_charset_is_refused() -> None:
    with pytest.raises(errors.UnsupportedMediaType):
        _parse("{}", "application/json; charset=latin-1")


def test_invalid_utf8_is_a_bad_request() -> None:
    with pytest.raises(errors.BadRequest) as info:
        _parse(b'{"a": "\xff"}')
    assert info.value.code == "malformed_json"


def test_body_json_is_strict() -> None:
    with pytest.raises(errors.BadRequest):
        _parse('{"a": 1, "a": 2}')


# -- is_safe_id -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "0", "c1d2e3f4-0001-5a6b-7c8d-9e0f1a2b3c4d", "a.b", "a:b", "a_b", "A" * 128, "x__"])
def test_safe_ids(value: str) -> None:
    assert is_safe_id(value)


@pytest.mark.parametrize(
    "value",
    [
        *["", ".", "..", "../x", "a/b", "/a", "_", "__x", "__x__", "A" * 129, "-a", ".a", "a b", "é", "a\x00", "\na"],
        pytest.param(
            "a\n",
        ),
    ],
)
def test_unsafe_ids(value: str) -> None:
    assert not is_safe_id(value)


# -- Router -------------------------------------------------------------------------------------------


def _handler(name: str) -> Any:
    def handle(request: Request) -> Response:
        return Response({"handler": name, "params": request.params})

    handle.__name__ = name
    return handle


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("GET", "/api/v1/pim/bulk-jobs", _handler("list"))
    r.add("POST", "/api/v1/pim/bulk-jobs", _handler("create"))
    r.add("GET", "/api/v1/pim/bulk-jobs/{job_id}", _handler("get"))
    r.add("GET", "/api/v1/pim/bulk-jobs/{job_id}/results", _handler("results"))
    r.add("DELETE", "/api/v1/pim/bulk-jobs/{job_id}", _handler("delete"))

    @r.route("GET", "/healthz")
    def health(request: Request) -> Response:
        return Response({"status": "ok"})

    return r


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        ("GET", "/api/v1/pim/bulk-jobs", "list", {}),
        ("GET", "/api/v1/pim/bulk-jobs/", "list", {}),
        ("POST", "/api/v1/pim/bulk-jobs", "create", {}),
        ("GET", "/api/v1/pim/bulk-jobs/j-1", "get", {"job_id": "j-1"}),
        ("DELETE", "/api/v1/pim/bulk-jobs/j-1", "delete", {"job_id": "j-1"}),
        ("GET", "/api/v1/pim/bulk-jobs/j-1/results", "results", {"job_id": "j-1"}),
        ("GET", "/api/v1/pim/bulk-jobs/j-1/results/", "results", {"job_id": "j-1"}),
        ("GET", "/healthz", "health", {}),
    ],
)
def test_resolve_matches(router: Router, method: str, path: str, name: str, params: dict[str, str]) -> None:
    handler, got = router.resolve(method, path)
    assert handler.__name__ == name
    assert got == params


@pytest.mark.parametrize(
    "path",
    ["/", "/api/v1/pim", "/api/v1/pim/bulk-jobs/a/b", "/api/v1/pim/bulk-jobs//results", "/api/v1/pim/bulk-jobsx", "/healthz/x"],
)
def test_unknown_paths_are_404(router: Router, path: str) -> None:
    with pytest.raises(errors.NotFound) as info:
        router.resolve("GET", path)
    assert info.value.status == 404


def test_a_known_path_with_another_method_is_405_listing_the_allowed(router: Router) -> None:
    with pytest.raises(errors.MethodNotAllowed) as info:
        router.resolve("PATCH", "/api/v1/pim/bulk-jobs/j-1")
    assert info.value.status == 405
    assert info.value.details == {"allowed": ["DELETE", "GET", "HEAD"]}
    with pytest.raises(errors.MethodNotAllowed) as info:
        router.resolve("DELETE", "/api/v1/pim/bulk-jobs")
    assert info.value.details == {"allowed": ["GET", "HEAD", "POST"]}


def test_head_is_served_by_the_get_route_and_post_routes_have_none(router: Router) -> None:
    assert router.match("HEAD", "/api/v1/pim/bulk-jobs/j-1")[0].method == "GET"
    router.add("POST", "/api/v1/pim/bulk-jobs/{job_id}/cancel", _handler("cancel"))
    with pytest.raises(errors.MethodNotAllowed) as info:
        router.resolve("HEAD", "/api/v1/pim/bulk-jobs/j-1/cancel")
    assert info.value.details == {"allowed": ["POST"]}


def test_a_query_parameter_named_in_another_case_is_400(router: Router) -> None:
    @router.route("POST", "/import", summary="x", query=(QueryParam("whatIf", "A dry run.", {"type": "boolean"}),))
    def run(request: Request) -> Response:
        return Response({"what_if": request.query("whatIf")})

    with app.test_request_context("/import?whatif=true", method="POST"):
        response = router.handle(flask.request)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "unknown_parameter",
        "message": "Query parameter 'whatif' is not known; did you mean 'whatIf'?",
        "details": {"parameter": "whatif", "accepted": ["whatIf"]},
    }
    with app.test_request_context("/import?whatIf=true", method="POST"):
        assert router.handle(flask.request).get_json() == {"what_if": "true"}


@pytest.mark.parametrize(
    ("path", "parameter", "message"),
    [
        # A dry run asked of a route that has none would commit.
        ("/jobs?whatIf=true", "whatIf", "Query parameter 'whatIf' is not known; POST /jobs takes no query parameters."),
        ("/list?status=FAILED", "status", "Query parameter 'status' is not known; POST /list takes 'cursor', 'type'."),
        ("/list?type=A&cursor=x&%E2%9C%93=1", "\u2713", "Query parameter '\u2713' is not known; POST /list takes 'cursor', 'type'."),
    ],
)
def test_a_query_parameter_the_route_does_not_take_is_400(router: Router, path: str, parameter: str, message: str) -> None:
    ran = []

    @router.route("POST", "/jobs", summary="x")
    def jobs(request: Request) -> Response:
        ran.append(request)
        return Response({})

    @router.route("POST", "/list", summary="x", query=(QueryParam("type", "A filter.", {"type": "string"}), QueryParam("cursor", "A page.", {})))
    def listed(request: Request) -> Response:
        ran.append(request)
        return Response({})

    with app.test_request_context(path, method="POST"):
        response = router.handle(flask.request)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["message"], error["details"]["parameter"]) == ("unknown_parameter", message, parameter)
    assert ran == []


@pytest.mark.parametrize("path", ["/list?type=A&type=B", "/list?type=A&type=A", "/list?type=A&cursor=x&cursor=y"])
def test_a_query_parameter_given_twice_is_400(router: Router, path: str) -> None:
    """Only the first value would be read: `GET /bulk-jobs?status=FAILED&status=CANCELLED` answered
    the FAILED jobs alone, as if they were all the list held, where `status=FAILED,CANCELLED` is 400."""
    ran = []

    @router.route("GET", "/list", summary="x", query=(QueryParam("type", "A filter.", {"type": "string"}), QueryParam("cursor", "A page.", {})))
    def listed(request: Request) -> Response:
        ran.append(request)
        return Response({})

    with app.test_request_context(path, method="GET"):
        response = router.handle(flask.request)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_query" and error["details"]["parameter"] in ("type", "cursor")
    assert "more than once" in error["message"]
    assert ran == []


def test_unknown_method_on_unknown_path_is_404(router: Router) -> None:
    with pytest.raises(errors.NotFound):
        router.resolve("PATCH", "/nowhere")


@pytest.fixture
def call(router: Router) -> Callable[[str, str], flask.Response]:
    def run(method: str, path: str) -> flask.Response:
        with app.test_request_context(path, method=method):
            return router.handle(flask.request)

    return run


def test_handle_sets_the_allow_header_on_405(call: Any) -> None:
    response = call("PUT", "/api/v1/pim/bulk-jobs")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"
    assert response.get_json() == {
        "error": {
            "code": "method_not_allowed",
            "message": "PUT is not allowed on /api/v1/pim/bulk-jobs.",
            "details": {"allowed": ["GET", "HEAD", "POST"]},
        }
    }


def test_handle_404_has_no_allow_header(call: Any) -> None:
    response = call("GET", "/nope")
    assert response.status_code == 404
    assert "Allow" not in response.headers
    assert response.get_json()["error"]["code"] == "not_found"


def test_handle_runs_the_handler_with_path_params(call: Any) -> None:
    response = call("GET", "/api/v1/pim/bulk-jobs/abc/results")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json() == {"handler": "results", "params": {"job_id": "abc"}}


SECRET = "projects/p/databases/(default)/documents/api_tokens/abc123"


def _raising(exc: Exception) -> Router:
    r = Router()

    @r.route("GET", "/boom")
    def boom(request: Request) -> Response:
        raise exc

    return r


@pytest.mark.parametrize(
    "exc",
    [
        gexc.ServiceUnavailable(SECRET),
        gexc.DeadlineExceeded(SECRET),
        gexc.Aborted(SECRET),
        gexc.RetryError(SECRET, cause=None),
        ConnectionResetError(SECRET),
        requests.ConnectionError(SECRET),
    ],
    ids=type,
)
def test_a_storage_fault_is_a_json_503_with_retry_after_and_no_detail(exc: Exception) -> None:
    with app.test_request_context("/boom"):
        response = _raising(exc).handle(flask.request)
    assert response.status_code == 503 and response.content_type == "application/json"
    assert response.headers["Retry-After"] == "1"
    assert response.get_json() == {"error": {"code": "unavailable", "message": "A storage service was unavailable; retry."}}


@pytest.mark.parametrize("exc", [KeyError(SECRET), RuntimeError(SECRET), gexc.PermissionDenied(SECRET)], ids=type)
def test_any_other_exception_is_a_json_500_that_names_nothing(exc: Exception) -> None:
    with app.test_request_context("/boom"):
        response = _raising(exc).handle(flask.request)
    assert response.status_code == 500 and response.content_type == "application/json"
    assert response.get_json()["error"]["code"] == "internal"
    assert "abc123" not in response.get_data(as_text=True) and "Retry-After" not in response.headers


def test_hooks_see_an_unhandled_exception_as_its_5xx_answer() -> None:
    seen: list[int] = []
    r = _raising(gexc.ServiceUnavailable(SECRET))

    def hook(request: Request, route: Any, call_next: Callable[[Request], Response]) -> Response:
        response = call_next(request)
        seen.append(response.status)
        return response

    r.use(hook)
    with app.test_request_context("/boom"):
        assert r.handle(flask.request).status_code == 503
    assert seen == [503]


def test_each_request_is_one_log_line_naming_its_route_and_only_an_accepted_scope(caplog: pytest.LogCaptureFixture) -> None:
    """What a caller sent is never logged as sent: a token pasted into a path, a query string or a
    tenant header would be a secret in the log."""
    from common.api import log_request
    from common.auth import SCOPE_ENVIRON_KEY

    secret = "synq_s3cr3t"
    path = f"/api/v1/pim/exports/{secret}/download?signature={secret}"
    for accepted, status, level in ((True, 200, "INFO"), (False, 403, "WARNING"), (True, 503, "ERROR")):
        with app.test_request_context(path, headers={"X-Tenant-ID": secret, "X-Org-ID": secret}):
            if accepted:
                flask.request.environ[SCOPE_ENVIRON_KEY] = Scope("org-1", "t-1")
            caplog.clear()
            with caplog.at_level("INFO", logger="synq.api"):
                log_request(flask.request, flask.Response(status=status), 0.0123)
        [record] = caplog.records
        logged = (record.levelname, record.route, record.status, record.ms, record.tenant_id)  # type: ignore[attr-defined]
        assert logged == (level, "/api/v1/pim/exports/{export_id}/download", status, 12.3, "t-1" if accepted else None)
        assert secret not in JsonFormatter().format(record)


def test_a_5xx_logs_the_route_not_the_path_it_was_called_with(caplog: pytest.LogCaptureFixture) -> None:
    router = Router()

    @router.route("GET", "/things/{thing_id}", summary="x")
    def broken(request: Request) -> Response:
        raise RuntimeError("a bug")

    with app.test_request_context("/things/synq_s3cr3t"), caplog.at_level("ERROR", logger="synq.http"):
        assert router.handle(flask.request).status_code == 500
    [record] = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert record.route == "/things/{thing_id}"  # type: ignore[attr-defined]
    assert "synq_s3cr3t" not in JsonFormatter().format(record)


def test_a_401_names_the_scheme_it_wants() -> None:
    with app.test_request_context("/boom"):
        response = _raising(errors.Unauthorized("No token.")).handle(flask.request)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == 'Bearer realm="synq"'
    with app.test_request_context("/boom"):
        assert "WWW-Authenticate" not in _raising(errors.Forbidden("No.")).handle(flask.request).headers


# -- a body the route would not read ------------------------------------------------------------------


class _Called(Exception):
    pass


def _no_body_router(authenticate: Callable[[Request], Any] | None = None) -> tuple[Router, list[str]]:
    """POST /things reads no body (no request_model), POST /bodies reads one; the hook is installed."""
    from common.http import RefuseUnreadBody
    from common.models.job import JobCreate

    runs: list[str] = []
    r = Router()
    r.use(RefuseUnreadBody(authenticate or (lambda request: None)))

    @r.route("POST", "/things", summary="Do a thing")
    def things(request: Request) -> Response:
        runs.append("things")
        return Response({"ok": True}, 202)

    @r.route("POST", "/bodies", summary="Take a body", request_model=JobCreate)
    def bodies(request: Request) -> Response:
        runs.append("bodies")
        return Response({"body": request.json(max_bytes=1000, required=False)})

    return r, runs


def _post(r: Router, path: str, body: bytes | None, content_type: str | None = "application/json", **headers: str) -> flask.Response:
    sent = dict(headers) | ({} if content_type is None else {"Content-Type": content_type})
    with app.test_request_context(path, method="POST", data=body, headers=sent):
        return r.handle(flask.request)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (None, None),
        (b"", "application/json"),
        (b"", None),
        (b"  \r\n\t", "application/json"),
        (b"{}", "application/json"),
        (b" { } ", "application/json; charset=utf-8"),
        (b"null", "application/json"),
        (b"   ", "text/plain"),
    ],
    ids=["none", "empty-json", "empty-untyped", "whitespace", "empty-object", "spaced-object", "null", "whitespace-text"],
)
def test_a_route_that_reads_no_body_accepts_none_or_an_empty_object(body: bytes | None, content_type: str | None) -> None:
    r, runs = _no_body_router()
    response = _post(r, "/things", body, content_type)
    assert response.status_code == 202, response.get_json()
    assert runs == ["things"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "field"),
    [
        (b'{"format": "csv", "zeta": 1}', "application/json", 422, "unknown_field", "format"),
        (b'{"zeta": 1, "format": "csv"}', "application/json", 422, "unknown_field", "format"),  # the first by name, as POST /bulk-jobs
        (b"[]", "application/json", 400, "invalid_body", None),
        (b'"csv"', "application/json", 400, "invalid_body", None),
        (b"0", "application/json", 400, "invalid_body", None),
        (b"false", "application/json", 400, "invalid_body", None),
        (b"{{{", "application/json", 400, "malformed_json", None),
        (b'{"a": 1, "a": 2}', "application/json", 400, "malformed_json", None),
        (b"\xff", "application/json", 400, "malformed_json", None),
        (b"{}", "text/plain", 415, "unsupported_media_type", None),
        (b"format=csv", "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
    ],
)
def test_a_route_that_reads_no_body_refuses_any_other_before_its_handler_runs(
    body: bytes, content_type: str, status: int, code: str, field: str | None
) -> None:
    r, runs = _no_body_router()
    response = _post(r, "/things", body, content_type)
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["details"] == {"field": field}
        assert f"'{field}'" in error["message"] and "takes no request body" in error["message"]
    if code == "invalid_body":
        assert "takes no request body" in error["message"]
    assert runs == []


def test_a_route_that_reads_a_body_is_left_to_its_handler() -> None:
    r, runs = _no_body_router()
    response = _post(r, "/bodies", b'{"format": "csv"}')
    assert response.status_code == 200 and response.get_json() == {"body": {"format": "csv"}}
    assert runs == ["bodies"]


def test_authentication_comes_before_the_body_is_refused() -> None:
    def authenticate(request: Request) -> None:
        raise errors.Unauthorized("The token is unknown or revoked.")

    r, runs = _no_body_router(authenticate)
    response = _post(r, "/things", b"{{{")
    assert response.status_code == 401 and runs == []


def test_routes_read_a_body_when_they_declare_one_or_are_undescribed() -> None:
    from common.models.job import JobCreate

    r = Router()
    r.add("POST", "/undescribed", _handler("x"))
    r.route("POST", "/described", summary="x")(_handler("y"))
    r.route("POST", "/with-model", summary="x", request_model=JobCreate)(_handler("z"))
    r.route("GET", "/read", summary="x")(_handler("w"))
    assert [(route.template, route.reads_body, route.refuses_body) for route in r.routes] == [
        ("/undescribed", True, False),
        ("/described", False, True),
        ("/with-model", True, False),
        ("/read", False, False),  # a GET's body is not this check's business
    ]


# -- content codings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "GZIP", "gzip, identity", "x-custom"])
def test_a_content_coded_body_is_415_naming_the_coding_and_what_is_accepted(coding: str) -> None:
    import gzip

    with pytest.raises(errors.UnsupportedMediaType) as info:
        _parse(gzip.compress(b'{"a": 1}'), headers={"Content-Encoding": coding})
    assert info.value.status == 415
    assert info.value.code == "unsupported_content_encoding"
    assert coding[:20] in info.value.message and "uncompressed" in info.value.message
    response = error_response(info.value)
    assert response.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("coding", ["identity", "Identity", " identity ", ""])
def test_the_identity_coding_is_no_coding(coding: str) -> None:
    assert _parse(b'{"a": 1}', headers={"Content-Encoding": coding}) == {"a": 1}


def test_an_empty_body_with_a_coding_is_still_no_body() -> None:
    assert _parse(b"", required=False, headers={"Content-Encoding": "gzip"}) is None
