"""Reading a stored payload's items a piece at a time yields exactly the items' texts."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.jsonstream import array_items


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
