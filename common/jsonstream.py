"""The items of a stored JSON array, read a piece at a time.

A job's payload is stored as compact JSON (`create_job` writes it): an array of items, or a
ProductImportData envelope whose items are the array at `ProductImportData.ProductsToImport`.
Dispatching a 32 MB payload by parsing it whole held the text, every item as Python objects and
every item's text again: over 200 MiB. `array_items` reads the stored text in pieces and yields each
item's own text, so memory holds one piece and the item being read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

PIECE = 1 << 20
_WHITESPACE = " \t\n\r"
_DELIMITERS = _WHITESPACE + ",]}:"


class TextStream(Protocol):
    def read(self, size: int = -1, /) -> str: ...


def array_items(stream: TextStream, piece: int = PIECE, path: Sequence[str] = ()) -> Iterator[str]:
    """Each item's text, in order, of the JSON array `stream` holds (valid JSON, as stored), or of the
    array found by following `path`'s member names down from the stored object. The members passed on
    the way are decoded and dropped; nothing after the array is read."""
    reader = _Reader(stream, piece)
    for name in path:
        reader.enter(name)
    yield from reader.items()


def object_around(stream: TextStream, path: Sequence[str], piece: int = PIECE) -> dict[str, Any]:
    """The JSON object `stream` holds (valid JSON, as stored), decoded, except for the array found by
    following `path`'s member names down from it: that array's items are read one at a time and
    dropped, and None holds its place (the members keep their order). So the members around a large
    array are read with no more than one of its items in memory."""
    return _Reader(stream, piece).around(path)


class _Reader:
    def __init__(self, stream: TextStream, piece: int) -> None:
        self.stream, self.piece = stream, piece
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.ended = "", 0, False

    def _more(self, at_least: int) -> bool:
        if self.ended:
            return False
        text = self.stream.read(max(self.piece, at_least))
        if not text:
            self.ended = True
            return False
        self.buf, self.pos = self.buf[self.pos :] + text, 0
        return True

    def _next(self) -> str:
        """The next character that is not whitespace (left unread)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more(0):
                raise ValueError("the stored payload ends too soon")

    def _take(self, expected: str) -> str:
        """The next character, which must be one of `expected`, read."""
        found = self._next()
        if found not in expected:
            raise ValueError(f"the stored payload has {found!r} where one of {expected!r} belongs")
        self.pos += 1
        return found

    def _value(self) -> tuple[Any, str]:
        """The next value, decoded, and its text."""
        self._next()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError:
                # The value runs past what has been read: read on (at least doubling, so one huge
                # value costs a few parses, not one per piece).
                if not self._more(len(self.buf) - self.pos):
                    raise
                continue
            if (end == len(self.buf) or self.buf[end] not in _DELIMITERS) and self._more(0):
                continue  # a number cut by the piece ("6." of "6.02"): parse it again with what follows
            text, self.pos = self.buf[self.pos : end], end
            return value, text

    def enter(self, name: str) -> None:
        """Pass the members of the object that starts here up to `name`'s, and stop at its value."""
        self._take("{")
        if self._next() != "}":
            while True:
                key, _ = self._value()
                self._take(":")
                if key == name:
                    return
                self._value()
                if self._take(",}") == "}":
                    break
        raise ValueError(f"the stored payload has no member {name!r}")

    def around(self, path: Sequence[str]) -> dict[str, Any]:
        """The object that starts here, decoded, with the array down `path` passed and held as None."""
        out: dict[str, Any] = {}
        self._take("{")
        if self._next() != "}":
            while True:
                key, _ = self._value()
                self._take(":")
                if path and key == path[0] and len(path) > 1:
                    out[key] = self.around(path[1:])
                elif path and key == path[0]:
                    for _ in self.items():
                        pass
                    out[key] = None
                else:
                    out[key], _ = self._value()
                if self._take(",}") == "}":
                    return out
        self.pos += 1
        return out

    def items(self) -> Iterator[str]:
        self._take("[")
        if self._next() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()[1]
            if self._take(",]") == "]":
                return
