"""Exports written in checkpointed segments, resumed by a new claim, driven in-process against the
real emulators: a claim killed after some segments, an export that needs more claims than
`export_max_claims` allows in a row without progress, more segments than one compose takes, a
claim overtaken between writing a segment and committing it, and a claim handing over.

Workers die by `Killed` raised from the product stream (what a timeout's kill leaves: no release)
or stall in the checkpoint commit; the Google services are the emulators, never mocks."""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from common.config import get_settings
from common.models.base import utcnow
from common.models.export import ExportMessage
from common.services import exports
from common.store import blobs
from common.store import exports as export_store
from common.store.paths import Scope
from tests.helpers import until
from tests.integration.conftest import Killed, Pipeline, pull_all

GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
BAD_GTIN = "12345"  # INVALID_BARCODE, an ERROR: the product is left out of the file and counted


def configure(monkeypatch: pytest.MonkeyPatch, **values: Any) -> None:
    """Settings for this test (`exports_topic`'s teardown clears the cache once these are undone)."""
    for name, value in values.items():
        monkeypatch.setenv(f"SYNQ_{name.upper()}", str(value))
    get_settings.cache_clear()


def seed(pipeline: Pipeline, n: int, bad: Collection[int] = ()) -> list[dict[str, Any]]:
    """n products (item i with a bad GTIN when i is in `bad`), as the API lists them, in the
    export's order (document id); each with `excluded` set for those the file leaves out."""
    items = [{"title": f"Resume {i}", "sku": f"RES-{i:03d}", **GOOD, **({"gtin": BAD_GTIN} if i in bad else {})} for i in range(n)]
    assert pipeline.run("BULK_IMPORT", items)["status"] == "COMPLETED"
    products = sorted(pipeline.products(), key=lambda p: p["id"])
    assert len(products) == n
    for product in products:
        product["excluded"] = product.get("gtin") == BAD_GTIN
    return products


def request(pipeline: Pipeline, subscription: str) -> ExportMessage:
    queued = exports.request_export(pipeline.principal)
    [data] = pull_all(subscription)
    message = ExportMessage.model_validate_json(data)
    assert message.export_id == queued["export_id"]
    return message


def stored(scope: Scope, export_id: str) -> dict[str, Any]:
    export = export_store.get_export(scope, export_id)
    assert export is not None
    return export


def lease_lapsed(scope: Scope, export_id: str) -> None:
    until("lease lapsed", lambda: stored(scope, export_id)["lease_until"] < utcnow(), timeout=2 * get_settings().stale_after_seconds + 5)


def lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in blobs.bucket().blob(record["object"]).download_as_bytes().splitlines()]


def tenant_objects(scope: Scope) -> list[str]:
    return blobs.names(f"exports/{scope.org_id}/{scope.tenant_id}/")


def assert_exactly_the_exportable_products(record: dict[str, Any], products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file holds every exportable product once, in document-id order, and the record counts them."""
    exportable = [p for p in products if not p["excluded"]]
    excluded = [p["id"] for p in products if p["excluded"]]
    written = lines(record)
    assert [line["id"] for line in written] == [p["id"] for p in exportable]
    assert record["status"] == "COMPLETED", record
    assert (record["product_count"], record["excluded_count"], record["excluded_product_ids"]) == (len(exportable), len(excluded), excluded)
    return written


class Stream:
    """export_store.iter_products, observed: where each claim's stream started and how many products
    it read. With `die_at` set, the worker dies (Killed) as it reads that many-th product of a claim."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = export_store.iter_products
        self.started_after: list[str | None] = []
        self.reads: list[int] = []
        self.die_at: int | None = None
        monkeypatch.setattr(export_store, "iter_products", self.iter)

    def iter(self, scope: Scope, start_after: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        self.started_after.append(start_after)
        self.reads.append(0)
        for product in self.real(scope, start_after):
            self.reads[-1] += 1
            if self.reads[-1] == self.die_at:
                raise Killed
            yield product


@pytest.mark.streams_left_open  # the killed claim stops mid-catalog
def test_a_killed_claim_is_resumed_after_its_last_whole_segment(pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=3, stale_after_seconds=0.5)
    products = seed(pipeline, 11, bad={1, 7})
    message = request(pipeline, exports_topic)
    stream = Stream(monkeypatch)
    stream.die_at = 9  # two segments (6 products) whole, the third's two lines in its upload: killed

    with pytest.raises(Killed):
        exports.run_export(message)
    export = stored(scope, message.export_id)
    checkpoint, done = export["checkpoint"], products[:6]
    assert export["status"] == "RUNNING" and export["claims"] == 1
    assert checkpoint["claim"] == 1 and checkpoint["last_product_id"] == done[-1]["id"]
    assert checkpoint["product_count"] == sum(not p["excluded"] for p in done)
    assert checkpoint["excluded_count"] == sum(p["excluded"] for p in done)
    assert checkpoint["excluded_product_ids"] == [p["id"] for p in done if p["excluded"]]
    segments = [exports.segment_name(scope, message.export_id, 1, n) for n in range(2)]
    assert checkpoint["segments"] == segments
    # The third segment's upload was never finished: no object, nothing the checkpoint names.
    assert blobs.names(exports.segment_prefix(scope, message.export_id)) == segments
    assert export["product_count"] is None  # the record's counts wait for the finished file

    # Between the claims, a product already written changes, and one not yet written.
    # Both must be in the file: products are in id order, so either bad GTIN may sort last.
    written_before = next(p for p in done if not p["excluded"])
    written_after = next(p for p in reversed(products[6:]) if not p["excluded"])
    changes = [
        {"sku": written_before["sku"], "title": "Changed after its segment"},
        {"sku": written_after["sku"], "title": "Changed before its segment"},
    ]
    assert pipeline.run("BULK_UPDATE", changes)["status"] == "COMPLETED"

    lease_lapsed(scope, message.export_id)
    stream.die_at = None
    exports.run_export(message)  # the reconciler's copy: claim 2
    assert stream.started_after == [None, done[-1]["id"]]
    assert stream.reads == [9, 5]  # it read only what the checkpoint did not cover

    record = exports.get_export(scope, message.export_id)
    assert record["object"] == exports.object_name(scope, message.export_id, 2)
    written = {line["id"]: line for line in assert_exactly_the_exportable_products(record, products)}
    # Not one point in time: each product as of when its segment was written.
    assert written[written_before["id"]]["title"] == written_before["title"]
    assert written[written_after["id"]]["title"] == "Changed before its segment"
    assert tenant_objects(scope) == [record["object"]]  # the segments are gone
    assert "checkpoint" not in stored(scope, message.export_id)  # it named them: it goes with the finish


@pytest.mark.streams_left_open  # every claim but the last is killed mid-catalog
def test_an_export_needing_more_claims_than_the_bound_finishes_while_each_claim_moves_it_on(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2, export_max_claims=2, stale_after_seconds=0.5)
    products = seed(pipeline, 9)
    message = request(pipeline, exports_topic)
    stream = Stream(monkeypatch)
    stream.die_at = 3  # every claim commits one segment, then dies reading the next product

    for _ in range(10):
        try:
            exports.run_export(message)
            break
        except Killed:
            lease_lapsed(scope, message.export_id)
    record = exports.get_export(scope, message.export_id)
    assert stored(scope, message.export_id)["claims"] == 5  # more than export_max_claims, each one moving it on
    assert stream.reads == [3, 3, 3, 3, 1]
    assert stream.started_after == [None, *[products[n]["id"] for n in (1, 3, 5, 7)]]
    assert record["object"] == exports.object_name(scope, message.export_id, 5)
    assert_exactly_the_exportable_products(record, products)
    assert tenant_objects(scope) == [record["object"]]


@pytest.mark.streams_left_open  # the killed claims stop mid-catalog
def test_claims_in_a_row_without_progress_still_fail_an_export_that_moved_before(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2, export_max_claims=2, stale_after_seconds=0.5)
    seed(pipeline, 6)
    message = request(pipeline, exports_topic)
    stream = Stream(monkeypatch)
    stream.die_at = 3  # claim 1 commits a segment, then dies
    for die_at in (3, 1, 1):  # claims 2 and 3 die on their first product: no progress
        stream.die_at = die_at
        with pytest.raises(Killed):
            exports.run_export(message)
        lease_lapsed(scope, message.export_id)
    exports.run_export(message)  # claim 4: two in a row without progress, the bound: it fails it unrun
    assert stream.reads == [3, 1, 1]
    record = exports.get_export(scope, message.export_id)
    assert record["status"] == "FAILED" and record["error"] == "too_many_attempts" and record["product_count"] is None, record
    assert stored(scope, message.export_id)["claims"] == 4
    assert tenant_objects(scope) == []  # claim 1's segment went with the failure
    assert "checkpoint" not in stored(scope, message.export_id)


def test_more_segments_than_one_compose_takes_are_joined_in_rounds(pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=1)
    products = seed(pipeline, 40, bad={5, 17})  # 38 segments with a line, 2 with none (no object)
    message = request(pipeline, exports_topic)
    real_compose = blobs.compose
    composed: list[tuple[str, int]] = []

    def observed(name: str, sources: list[str], content_type: str) -> None:
        composed.append((name, len(sources)))
        real_compose(name, sources, content_type)  # which refuses more than 32, as Cloud Storage does

    monkeypatch.setattr(blobs, "compose", observed)
    exports.run_export(message)
    record = exports.get_export(scope, message.export_id)
    assert_exactly_the_exportable_products(record, products)
    prefix = exports.segment_prefix(scope, message.export_id)
    assert [(name.startswith(prefix), count) for name, count in composed] == [(True, 32), (True, 6), (False, 2)]
    assert composed[-1][0] == record["object"] == exports.object_name(scope, message.export_id, 1)
    assert tenant_objects(scope) == [record["object"]]  # segments and scratch objects are gone


@pytest.mark.streams_left_open  # the overtaken worker stops mid-catalog
def test_a_segment_of_an_overtaken_claim_is_never_in_the_file(pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A writes its second segment whole, then stalls before committing it, past its lease.
    Worker B claims the export, resumes after A's first segment, changes made meanwhile included,
    and finishes it. A's second segment must be in neither the checkpoint nor the file."""
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2, stale_after_seconds=1)
    products = seed(pipeline, 6)
    message = request(pipeline, exports_topic)
    real_checkpoint = export_store.checkpoint_export
    stalled, release = threading.Event(), threading.Event()
    slow = threading.local()

    def stalling_checkpoint(scope: Scope, export_id: str, owner: str, checkpoint: dict[str, Any], lease_seconds: float) -> bool:
        if getattr(slow, "on", False) and len(checkpoint["segments"]) == 2:
            stalled.set()
            assert release.wait(60)
        return real_checkpoint(scope, export_id, owner, checkpoint, lease_seconds)

    monkeypatch.setattr(export_store, "checkpoint_export", stalling_checkpoint)
    real_compose = blobs.compose
    composed: list[tuple[str, list[str]]] = []

    def observed(name: str, sources: list[str], content_type: str) -> None:
        composed.append((name, sources))
        real_compose(name, sources, content_type)

    monkeypatch.setattr(blobs, "compose", observed)

    def worker_a() -> None:
        slow.on = True
        exports.run_export(message)

    first, second = (exports.segment_name(scope, message.export_id, 1, n) for n in range(2))
    with ThreadPoolExecutor(max_workers=1) as pool:
        a = pool.submit(worker_a)
        try:
            assert stalled.wait(30)
            assert blobs.names(exports.segment_prefix(scope, message.export_id)) == [first, second]  # whole, not committed
            assert pipeline.run("BULK_UPDATE", [{"sku": products[2]["sku"], "title": "Changed while A stalled"}])["status"] == "COMPLETED"
            lease_lapsed(scope, message.export_id)
            exports.run_export(message)  # B: claim 2
        finally:
            release.set()
        a.result(timeout=60)  # A's checkpoint is refused: it deletes its segment and stops quietly

    record = exports.get_export(scope, message.export_id)
    assert record["object"] == exports.object_name(scope, message.export_id, 2)
    # The file is B's checkpoint's segments: A's first, committed, then B's own.
    assert composed == [(record["object"], [first, *(exports.segment_name(scope, message.export_id, 2, n) for n in (1, 2))])]
    written = assert_exactly_the_exportable_products(record, products)
    assert written[2]["title"] == "Changed while A stalled"  # B's segment, not A's
    assert tenant_objects(scope) == [record["object"]]


@pytest.mark.streams_left_open  # a claim that hands over stops mid-catalog
def test_a_claim_out_of_time_hands_over_to_a_new_claim_at_once(pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = pipeline.scope
    # Every claim hands over after its first segment; one claim without progress would fail it.
    configure(monkeypatch, export_segment_products=3, export_claim_seconds=0, export_max_claims=1)
    products = seed(pipeline, 8, bad={4})
    messages = [request(pipeline, exports_topic)]
    for _ in range(10):
        [message] = messages
        exports.run_export(message)
        export = stored(scope, message.export_id)
        if export["status"] not in ("QUEUED", "RUNNING"):
            break
        # Handed over: given back (no lease to wait out), and published again for the next claim.
        assert export["status"] == "QUEUED" and export["lease_owner"] is None and export["lease_until"] is None, export
        messages = [ExportMessage.model_validate_json(data) for data in pull_all(exports_topic)]
        assert messages == [message]
    record = exports.get_export(scope, message.export_id)
    assert stored(scope, message.export_id)["claims"] == 3
    assert_exactly_the_exportable_products(record, products)
    assert tenant_objects(scope) == [record["object"]]
    assert pull_all(exports_topic) == []


def test_a_worker_killed_after_finishing_leaves_no_segment_behind(pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed once the finish is committed, before its notification is queued and its segments
    deleted (or its enqueue failing): Pub/Sub redelivers the unacknowledged message, and that copy
    must finish the cleanup as well as the notification."""
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2)
    products = seed(pipeline, 5)
    message = request(pipeline, exports_topic)
    real_enqueue = exports.notifications.enqueue

    def killed(scope: Scope, delivery_id: str, series: int = 0) -> None:
        raise Killed

    monkeypatch.setattr(exports.notifications, "enqueue", killed)
    with pytest.raises(Killed):
        exports.run_export(message)
    record = exports.get_export(scope, message.export_id)
    assert_exactly_the_exportable_products(record, products)
    assert len(blobs.names(exports.segment_prefix(scope, message.export_id))) == 3  # left by the killed worker

    monkeypatch.setattr(exports.notifications, "enqueue", real_enqueue)
    exports.run_export(message)  # the redelivery
    assert exports.get_export(scope, message.export_id) == record
    assert tenant_objects(scope) == [record["object"]]


def test_a_file_composed_by_a_claim_killed_before_finishing_is_deleted(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claim 1 composes its file `{id}.jsonl`, then dies before its finish commits; claim 2 finishes
    the export with `{id}.2.jsonl`. Claim 1's file, a whole copy of the catalog that no record names,
    must not be left for the bucket's retention rule (30 days)."""
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2, stale_after_seconds=0.5)
    products = seed(pipeline, 5, bad={3})
    message = request(pipeline, exports_topic)
    real_finish = export_store.finish_export

    def killed(*args: Any) -> bool:
        raise Killed

    monkeypatch.setattr(export_store, "finish_export", killed)
    with pytest.raises(Killed):
        exports.run_export(message)
    first = exports.object_name(scope, message.export_id, 1)
    assert first in tenant_objects(scope)

    monkeypatch.setattr(export_store, "finish_export", real_finish)
    lease_lapsed(scope, message.export_id)
    exports.run_export(message)  # the reconciler's copy: claim 2, which reads nothing new
    record = exports.get_export(scope, message.export_id)
    assert record["object"] == exports.object_name(scope, message.export_id, 2)
    assert_exactly_the_exportable_products(record, products)
    assert tenant_objects(scope) == [record["object"]]


def test_an_overtaken_claim_reaching_its_compose_after_the_cleanup_stops_quietly(
    pipeline: Pipeline, exports_topic: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker A commits every segment, then stalls before its compose, past its lease. Worker B
    claims the export, finishes it and deletes A's segments. A's compose then finds them gone: that
    is a lost claim (nothing is written), not an export failure to log as an error."""
    scope = pipeline.scope
    configure(monkeypatch, export_segment_products=2, stale_after_seconds=1)
    products = seed(pipeline, 5)
    message = request(pipeline, exports_topic)
    real_assemble = exports._assemble
    stalled, release = threading.Event(), threading.Event()
    slow = threading.local()

    def stalling_assemble(*args: Any) -> None:
        if getattr(slow, "on", False):
            stalled.set()
            assert release.wait(60)
        real_assemble(*args)

    monkeypatch.setattr(exports, "_assemble", stalling_assemble)

    def worker_a() -> None:
        slow.on = True
        exports.run_export(message)

    with ThreadPoolExecutor(max_workers=1) as pool:
        a = pool.submit(worker_a)
        try:
            assert stalled.wait(30)
            lease_lapsed(scope, message.export_id)
            exports.run_export(message)  # B: claim 2, which finishes and deletes claim 1's segments
        finally:
            release.set()
        record = exports.get_export(scope, message.export_id)
        assert_exactly_the_exportable_products(record, products)
        caplog.clear()
        a.result(timeout=60)

    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "synq.exports"]
    assert logged == [("WARNING", "export taken over by another worker; this one stops")]
    assert exports.get_export(scope, message.export_id) == record
    assert tenant_objects(scope) == [record["object"]]
