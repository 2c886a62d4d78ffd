"""The items of a stored JSON array, read a piece at a time.

A job's payload is stored as a compact JSON array (`create_job` writes it). Dispatching a 32 MB
payload by parsing it whole held the text, every item as Python objects and every item's text again:
over 200 MiB. `array_items` reads the stored text in pieces and yields each item's own text, so
memory holds one piece and the item being read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Protocol

PIECE = 1 << 20
_WHITESPACE = " \t\n\r"
_DELIMITERS = _WHITESPACE + ",]"


class TextStream(Protocol):
    def read(self, size: int = -1, /) -> str: ...


def array_items(stream: TextStream, piece: int = PIECE) -> Iterator[str]:
    """Each item's text, in order, of the JSON array `stream` holds (valid JSON, as stored)."""
    decoder = json.JSONDecoder()
    buf, pos, ended = "", 0, False

    def more(at_least: int) -> bool:
        nonlocal buf, pos, ended
        if ended:
            return False
        text = stream.read(max(piece, at_least))
        if not text:
            ended = True
            return False
        buf, pos = buf[pos:] + text, 0
        return True

    def skip_space() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WHITESPACE:
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more(0):
                raise ValueError("the stored payload ends inside its array")

    if skip_space() != "[":
        raise ValueError("the stored payload is not a JSON array")
    pos += 1
    if skip_space() == "]":
        return
    while True:
        skip_space()
        try:
            _, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError:
            # The item runs past what has been read: read on (at least doubling, so one huge item
            # costs a few parses, not one per piece).
            if not more(len(buf) - pos):
                raise
            continue
        if (end == len(buf) or buf[end] not in _DELIMITERS) and more(0):
            continue  # a number cut by the piece ("6." of "6.02"): parse it again with what follows
        yield buf[pos:end]
        pos = end
        separator = skip_space()
        pos += 1
        if separator == "]":
            return
        if separator != ",":
            raise ValueError("the stored payload's array is malformed")
