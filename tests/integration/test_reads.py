"""Document reads leave no stream open: the Firestore channel reads streams on the calling thread,
and a stream dropped before its end stays in memory for the life of the process."""

from __future__ import annotations

import uuid

import pytest

from common.store.paths import Scope, coll, read
from tests.helpers import left_open, tracked_streams

BATCH_GET = "/google.firestore.v1.Firestore/BatchGetDocuments"


@pytest.mark.streams_left_open
def test_read_ends_its_stream_where_document_get_drops_it() -> None:
    products = coll(Scope(str(uuid.uuid4()), str(uuid.uuid4())), "products")
    products.document("p1").set({"title": "One", "sku": "S-1"})

    with tracked_streams() as opened:
        assert read(products.document("p1")).to_dict() == {"title": "One", "sku": "S-1"}
        assert read(products.document("p1"), ["sku"]).to_dict() == {"sku": "S-1"}
        assert not read(products.document("missing")).exists
    assert len(opened) == 3 and left_open(opened) == []

    # What `read` is there for, and what the suite's guard (tests/conftest.py) catches.
    with tracked_streams() as opened:
        assert products.document("p1").get().exists
    assert left_open(opened) == [BATCH_GET]
