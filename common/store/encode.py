"""Plain document writes encoded straight to protobuf, for the chunk step's hot path.

The client's `set()` builds every value as a proto-plus wrapper before it becomes protobuf: profiling
`process_chunk` put 40% of its CPU there, about 0.2 ms for a 1 KB product. `add_set` builds the same
`Write` (a full replacement, no mask, no precondition) from the raw protobuf classes, about five times
faster; `add_append` does the same for the step's progress update, which appends its results.
In a `Transaction` they are built straight into its commit request: the client keeps every write as a
message of its own and copies them all into the request at commit, through proto-plus (10% of
`process_chunk`'s CPU), and even copying raw protobufs in cost 7%.
Anything they do not encode exactly as the client would (sentinels such as `Increment`, references,
integers outside int64, field names the client would quote, other types) goes through the client's
own `set()` or `update()`, so its behaviour, errors included, is the client's.
`tests/unit/test_encode.py` holds all three to byte-for-byte equality with the client's encoding.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud import firestore
from google.cloud.firestore_v1.base_transaction import _CANT_COMMIT, _WRITE_READ_ONLY
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write

_Write = write.Write.pb()
_CommitRequest = firestore_types.CommitRequest
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Unsupported(Exception):
    """A value this encoder leaves to the client."""


def _fill(target: Any, value: Any) -> None:
    kind = type(value)
    if value is None:
        target.null_value = 0
    elif kind is bool:
        target.boolean_value = value
    elif kind is str:
        target.string_value = value
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unsupported("integer out of range")
        target.integer_value = value
    elif kind is float:
        target.double_value = value
    elif kind is dict:
        fields = target.map_value.fields
        target.map_value.SetInParent()
        for key, item in value.items():
            if type(key) is not str or not key:
                raise Unsupported("map key")
            _fill(fields[key], item)
    elif kind is list:
        array = target.array_value
        array.SetInParent()
        for item in value:
            _fill(array.values.add(), item)
    elif kind is DatetimeWithNanoseconds:
        target.timestamp_value.CopyFrom(value.timestamp_pb())
    elif kind is datetime:
        target.timestamp_value.FromDatetime(value)
    else:
        raise Unsupported(kind.__name__)


def set_write(document_path: str, data: dict[str, Any], pb: Any = None) -> Any:
    """The `Write` protobuf of `set(data)` (no merge) on the document, filled into `pb` if given;
    raises Unsupported."""
    pb = _Write() if pb is None else pb
    pb.update.name = document_path
    fields = pb.update.fields
    for key, value in data.items():
        if type(key) is not str or not key:
            raise Unsupported("field name")
        _fill(fields[key], value)
    return pb


def _simple(name: Any) -> bool:
    """A field name the client would put in a mask as it is (no dots, no quoting)."""
    return type(name) is str and name.isidentifier() and name.isascii()


def append_write(document_path: str, fields: dict[str, Any], array_field: str, values: list[Any], pb: Any = None) -> Any:
    """The `Write` of `update({**fields, array_field: ArrayUnion(values)})` (the document must exist),
    filled into `pb` if given; raises Unsupported for what it does not encode as the client would."""
    if not _simple(array_field) or array_field in fields:
        raise Unsupported("field name")
    if not values:
        raise Unsupported("empty ArrayUnion")  # the client refuses it
    pb = _Write() if pb is None else pb
    pb.update.name = document_path
    document = pb.update.fields
    for key, value in fields.items():
        if not _simple(key):
            raise Unsupported("field name")
        _fill(document[key], value)
    pb.update_mask.field_paths.extend(sorted(fields))
    pb.current_document.exists = True
    transform = pb.update_transforms.add()
    transform.field_path = array_field
    array = transform.append_missing_elements
    array.SetInParent()
    for value in values:
        _fill(array.values.add(), value)
    return pb


def _add(writer: firestore.Transaction | firestore.WriteBatch, build: Callable[[Any], Any]) -> None:
    """Adds the `Write` that `build` fills in: in place in a `Transaction`'s request, else on its own."""
    if isinstance(writer, Transaction):
        writer.build_write(build)
    else:
        writer._add_write_pbs([build(_Write())])


def add_append(
    writer: firestore.Transaction | firestore.WriteBatch,
    ref: firestore.DocumentReference,
    fields: dict[str, Any],
    array_field: str,
    values: list[Any],
) -> None:
    """`writer.update(ref, {**fields, array_field: ArrayUnion(values)})`, encoded here when it can be."""
    try:
        _add(writer, lambda pb: append_write(ref._document_path, fields, array_field, values, pb))
    except Unsupported:
        writer.update(ref, {**fields, array_field: firestore.ArrayUnion(values)})


def add_set(writer: firestore.Transaction | firestore.WriteBatch, ref: firestore.DocumentReference, data: dict[str, Any]) -> None:
    """`writer.set(ref, data)`, encoded here when it can be."""
    try:
        _add(writer, lambda pb: set_write(ref._document_path, data, pb))
    except Unsupported:
        writer.set(ref, data)


# The largest commit request sent. Cloud Firestore takes requests of up to 10 MiB; the emulator's
# gRPC server refuses a message over 4 MiB with RESOURCE_EXHAUSTED, which the client retries for a
# minute before giving up. Past this size the commit is refused here at once, as Firestore refuses a
# request that is too large: InvalidArgument, so a chunk step retries its items one by one.
COMMIT_MAX_BYTES = 4_000_000


class Transaction(firestore.Transaction):
    """`firestore.Transaction` that builds its commit request as writes are added, not at commit.

    `add_set` and `add_append` fill their writes in place; the client's own writes (their fallbacks,
    deletes) are copied in as they come, so the request keeps the order the writes were made in.
    Everything else, retries, rollback and the transactional decorator included, is the client's.
    A request over `max_bytes` is refused before it is sent (InvalidArgument).
    """

    max_bytes = COMMIT_MAX_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request = _CommitRequest.pb()()

    def _clean_up(self) -> None:
        super()._clean_up()
        self._request = _CommitRequest.pb()()

    def _add_write_pbs(self, write_pbs: list[Any]) -> None:
        super()._add_write_pbs(write_pbs)
        for pb in write_pbs:
            self._request.writes.add().CopyFrom(pb if type(pb) is _Write else write.Write.pb(pb))

    def build_write(self, build: Callable[[Any], Any]) -> None:
        """Adds the write `build` fills in to the request; nothing is left of it if `build` raises."""
        if self._read_only:
            raise ValueError(_WRITE_READ_ONLY)
        writes = self._request.writes
        target = writes.add()
        try:
            build(target)
        except BaseException:
            del writes[-1]
            raise
        self._write_pbs.append(target)

    def _commit(self) -> list[Any]:
        if not self.in_progress:
            raise ValueError(_CANT_COMMIT)
        client, request = self._client, self._request
        request.database = client._database_string
        request.transaction = self._id
        if request.ByteSize() > self.max_bytes:
            raise gexc.InvalidArgument(f"The commit request would hold {request.ByteSize()} bytes, over {self.max_bytes}.")
        response = client._firestore_api.commit(request=_CommitRequest.wrap(request), metadata=client._rpc_metadata)
        self._clean_up()
        self.write_results = list(response.write_results)
        self.commit_time = response.commit_time
        return self.write_results
