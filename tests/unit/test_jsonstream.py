"""Reading a stored payload's items a piece at a time yields exactly the items' texts."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.jsonstream import _Reader, array_items, object_around


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=12), st.integers(1, 40))
def test_items_come_back_as_their_own_texts_whatever_the_piece_size(items: list[Any], piece: int) -> None:
    texts = [compact(item) for item in items]
    stored = "[" + ",".join(texts) + "]"
    assert list(array_items(io.StringIO(stored), piece)) == texts


def test_whitespace_and_numbers_split_across_pieces() -> None:
    stored = ' [ 12345 , "a,]b" ,\n{"k": [1, 2]} , 6.02e23 ] '
    for piece in range(1, len(stored) + 1):
        assert list(array_items(io.StringIO(stored), piece)) == ["12345", '"a,]b"', '{"k": [1, 2]}', "6.02e23"]


def test_an_item_larger_than_many_pieces() -> None:
    big = {"description": "x" * 100_000}
    assert list(array_items(io.StringIO(compact([1, big, 2])), 64)) == ["1", compact(big), "2"]


@pytest.mark.parametrize("stored", ["", "{}", "[1,2", "[1;2]", "[1,", '["abc'])
def test_what_is_not_a_whole_array_is_refused(stored: str) -> None:
    with pytest.raises(ValueError):
        list(array_items(io.StringIO(stored), 2))


@st.composite
def envelopes(draw: st.DrawFn) -> tuple[str, list[Any]]:
    """A stored ProductImportData envelope: its products among other members, before and after them,
    some of which hold arrays or bear the names on the path at another level."""
    names = st.sampled_from(["ErrorMode", "whatIf", "ProductsToImport", "Archived", "x"])

    def around(inner: tuple[str, Any]) -> dict[str, Any]:
        others = list(draw(st.dictionaries(names.filter(lambda n: n != inner[0]), values, max_size=3)).items())
        at = draw(st.integers(0, len(others)))
        return dict([*others[:at], inner, *others[at:]])

    items = draw(st.lists(values, max_size=8))
    stored = compact(around(("ProductImportData", around(("ProductsToImport", items)))))
    return stored, items


@settings(max_examples=300, deadline=None)
@given(envelopes(), st.integers(1, 40))
def test_the_items_of_an_array_down_a_path_whatever_surrounds_it(envelope: tuple[str, list[Any]], piece: int) -> None:
    stored, items = envelope
    got = array_items(io.StringIO(stored), piece, ("ProductImportData", "ProductsToImport"))
    assert list(got) == [compact(item) for item in items]


@settings(max_examples=300, deadline=None)
@given(envelopes(), st.integers(1, 40))
def test_the_members_around_an_array_down_a_path_in_their_order(envelope: tuple[str, list[Any]], piece: int) -> None:
    """What a retry keeps of a ProductImportData envelope: every member but the products, as stored."""
    stored, _ = envelope
    expected = json.loads(stored)
    expected["ProductImportData"]["ProductsToImport"] = None
    got = object_around(io.StringIO(stored), ("ProductImportData", "ProductsToImport"), piece)
    assert compact(got) == compact(expected)  # equal, keys in the same order


def test_the_members_around_an_array_are_read_with_one_item_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its items are passed one by one: the reader never holds much more than one of them, however
    many the array has (each about 110 characters here, the array about 1,000 times that)."""
    item = '{"v": "' + "y" * 100 + '"}'
    stored = ' { "a" : { "x" : [ ] , "items" : [ ' + ", ".join([item] * 1000) + ' ] , "b" : { } } , "z" : 1 } '
    held: list[int] = []
    real_more = _Reader._more

    def more(reader: _Reader, at_least: int) -> bool:
        read = real_more(reader, at_least)
        held.append(len(reader.buf))
        return read

    monkeypatch.setattr(_Reader, "_more", more)
    assert object_around(io.StringIO(stored), ("a", "items"), 16) == {"a": {"x": [], "items": None, "b": {}}, "z": 1}
    assert len(held) > 1000 and max(held) < 3 * len(item)
    assert object_around(io.StringIO("{}"), ("a",), 1) == {}


def test_a_path_through_spaced_text_and_values_cut_by_pieces() -> None:
    stored = ' { "n" : 12345.5e1 , "s": "}:,", "a" : [ {"ProductsToImport": [9]} ] ,\n "p" : { "q" : [ 1 , "x" ] , "z": 2 } } '
    for piece in range(1, len(stored) + 1):
        assert list(array_items(io.StringIO(stored), piece, ("p", "q"))) == ["1", '"x"']


@pytest.mark.parametrize(
    ("stored", "path"),
    [
        ('{"a":[1]}', ("b",)),
        ('{"a":{"b":[1]}}', ("b",)),
        ("{}", ("a",)),
        ('[{"a":[1]}]', ("a",)),
        ('{"a":{"b":5}}', ("a", "b")),
        ('{"a":{"b":[1,2', ("a", "b")),
        ('{"x":1;"a":[1]}', ("a",)),
    ],
)
def test_a_path_that_leads_to_no_whole_array_is_refused(stored: str, path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        list(array_items(io.StringIO(stored), 3, path))


class CountingStream(io.StringIO):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.read_so_far = 0

    def read(self, size: int | None = -1, /) -> str:
        text = super().read(size)
        self.read_so_far += len(text)
        return text


def test_the_reader_reads_ahead_by_a_piece_not_to_the_end() -> None:
    """A key ends at its `:` and is whole there: waiting for more would read the rest of the payload."""
    stored = '{"n":{"m":1},"k":2,"a":[' + ",".join(['{"v":1}'] * 10_000) + "]}"
    stream = CountingStream(stored)
    items = array_items(stream, 16, ("a",))
    assert next(items) == '{"v":1}'
    assert stream.read_so_far <= 64
