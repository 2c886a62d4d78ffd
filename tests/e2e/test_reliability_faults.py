"""Faults injected into a running stack: crashed workers, a restarted Pub/Sub, unreachable and slow
webhook receivers. Each test shows the work still ends exactly once.

Killing or restarting processes of the session stack would break the tests that share it, so every
destructive fault here hits a stack of this module's own (`own` fixture: its own emulators and
functions on free ports, stale work reconciled after STALE seconds). Only the "receiver down" test
uses the session stack, and it kills nothing.

The module's stack gets its reconcile ticks from `Ticker`, which publishes to *its* Pub/Sub emulator
over the emulator's REST API every TICK seconds; the stack's own ticker is left off
(`reconcile_every=3600.0`). `Ticker` was written when `Stack._tick` took its publisher from
PUBSUB_EMULATOR_HOST, which in the test process names the session stack's emulator. `Stack._tick`
now opens a gRPC channel to its own stack's emulator (infra note G in docs/reliability.md).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from standardwebhooks import Webhook

from common.services.exports import segment_name
from common.store.paths import Scope
from infra.stack import TOPICS, Stack, free_port, port_open, wait_for
from tests.conftest import Tenant
from tests.helpers import until

PIM = "/api/v1/pim"
JOBS = f"{PIM}/bulk-jobs"
SETTINGS = f"{PIM}/notification-settings"
DELIVERIES = f"{PIM}/notification-deliveries"
GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
STALE = 5.0  # the module stack's stale_after_seconds: a dead worker's lease lapses after this long
TICK = 1.0  # its reconcile tick
WEBHOOK_TIMEOUT = 2.0  # its SYNQ_WEBHOOK_TIMEOUT_SECONDS


def log(message: str) -> None:
    """Figures for docs/reliability.md (visible with -s)."""
    print(f"[faults] {message}", flush=True)


# -- the module's own stack -------------------------------------------------------------------


class Ticker(threading.Thread):
    """The stand-in for Cloud Scheduler, aimed at one stack's Pub/Sub emulator (REST publish)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(name="faults-reconcile-ticker", daemon=True)
        self.stack = stack
        self.stopped = threading.Event()

    def run(self) -> None:
        topic = TOPICS["reconcile_topic"]
        body = {"messages": [{"data": base64.b64encode(b"{}").decode()}]}
        while not self.stopped.wait(TICK):
            url = f"http://127.0.0.1:{self.stack.ports['pubsub']}/v1/projects/{self.stack.project}/topics/{topic}:publish"
            with contextlib.suppress(requests.RequestException):  # the emulator may be down: that is a test here
                requests.post(url, json=body, timeout=5)


@pytest.fixture(scope="module")
def own() -> Iterator[Stack]:
    state = Path(tempfile.mkdtemp(prefix="synq-faults-"))
    extra = {
        "SYNQ_RATE_LIMIT_PER_MINUTE": "1000000",
        "SYNQ_WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT),
        # Many small resumable-upload chunks, so an export is visibly "uploading" for a while.
        "SYNQ_EXPORT_UPLOAD_CHUNK_BYTES": str(256 * 1024),
    }
    # reconcile_every is effectively off: the Ticker below does the stack's ticking (see the module doc).
    stack = Stack(state_dir=state, api_port=free_port(), seed_demo=False, reconcile_every=3600.0, stale_after_seconds=STALE, extra_env=extra)
    started = time.monotonic()
    stack.start()
    log(f"own stack up in {time.monotonic() - started:.1f}s (state {state})")
    ticker = Ticker(stack)
    ticker.start()
    try:
        yield stack
    finally:
        ticker.stopped.set()
        stack.stop()
        if os.environ.get("SYNQ_KEEP_TEST_STATE"):
            print(f"fault-test stack state kept in {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def own_tenant(stack: Stack) -> Tenant:
    org_id, tenant_id = str(uuid.uuid4()), str(uuid.uuid4())
    email = f"faults-{tenant_id[:8]}@example.com"
    return Tenant(org_id, tenant_id, stack.mint_token(org_id, [tenant_id], email, "admin"), email, "", stack.api_url)


# -- a webhook receiver -----------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook endpoint on loopback. `answer(n)` gives (status, seconds to wait first) for the
    n-th call (1-based); `on_call(n)` runs before that."""

    answer: Callable[[int], tuple[int, float]] = lambda n: (204, 0.0)
    on_call: Callable[[int], None] | None = None
    port: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/synq"

    def start(self) -> Receiver:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with state.lock:
                    call = {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode(), "at": time.monotonic()}
                    state.calls.append(call)
                    n = len(state.calls)
                if state.on_call is not None:
                    state.on_call(n)
                status, delay = state.answer(n)
                call["status"] = status
                time.sleep(delay)
                with contextlib.suppress(OSError):  # the sender may have given up waiting
                    self.send_response(status)
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="faults-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"only {len(self.calls)} webhook calls arrived"
            time.sleep(0.05)
        return self.calls


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers a test starts; all stopped at its end."""
    started: list[Receiver] = []
    yield started
    for receiver in started:
        receiver.stop()


# -- helpers ----------------------------------------------------------------------------------


def job_now(tenant: Tenant, job_id: str) -> dict[str, Any]:
    response = tenant.get(f"{JOBS}/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def partly_applied(tenant: Tenant, job_id: str, total: int, timeout: float = 120) -> dict[str, Any]:
    """The job once some, but not all, of its items are applied."""

    def check() -> dict[str, Any] | None:
        job = job_now(tenant, job_id)
        assert job["status"] in ("PENDING", "PROCESSING"), f"the job ended before the fault could be injected: {job}"
        return job if 0 < (job["processed_items"] or 0) < total else None

    return dict(until("partial progress", check, timeout, every=0.05))


def assert_applied_exactly_once(tenant: Tenant, job: dict[str, Any], skus: list[str]) -> None:
    """COMPLETED with exact counts, one product per item, one product.created event per product."""
    n = len(skus)
    assert (job["status"], job["total_items"], job["processed_items"], job["failed_items"]) == ("COMPLETED", n, n, 0), job
    results = tenant.all_pages(f"{JOBS}/{job['id']}/results", limit=1000)
    assert len(results) == n and not [r for r in results if r["result"] == "failed"]
    products = tenant.all_pages(f"{PIM}/products", limit=200)
    assert len(products) == n, f"{len(products)} products for {n} items"
    assert sorted(p["sku"] for p in products) == sorted(skus)
    assert {r["product_id"] for r in results} == {p["id"] for p in products}
    events = tenant.all_pages(f"{PIM}/audit", limit=200)
    actions = Counter(e["action"] for e in events)
    assert actions == Counter({"product.created": n, "bulk_job.created": 1, "bulk_job.completed": 1}), actions
    created = [e["entity_id"] for e in events if e["action"] == "product.created"]
    assert len(set(created)) == n and set(created) == {p["id"] for p in products}


def reconciled_since(stack: Stack, offset: int) -> Counter[str]:
    """What the stack's reconciler republished since its log had `offset` bytes, and how many of its
    ticks failed."""
    with stack.log_path("reconcile").open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    total: Counter[str] = Counter()
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message") == "reconciled":
                total.update({k: v for k, v in entry.items() if k.endswith(("_republished", "_finished"))})
            elif entry.get("severity") == "ERROR":
                total["failed_ticks"] += 1
    return total


def log_size(stack: Stack, name: str) -> int:
    return stack.log_path(name).stat().st_size


def kill(stack: Stack, name: str) -> None:
    """SIGKILL a process group and wait until its port is free: `stop_process` waits for the group
    leader only, and a dying worker's socket would otherwise pass `start_function`'s readiness check."""
    stack.stop_process(name, signal.SIGKILL)
    port = stack.ports[name]
    until(f"{name} port released", lambda: not port_open(port), 30, every=0.05)


def set_webhook(tenant: Tenant, url: str) -> str:
    response = tenant.request("PUT", SETTINGS, json={"channel": "webhook", "webhook_url": url})
    assert response.status_code == 200, response.text
    return str(response.json()["signing_secret"])


def request_export(tenant: Tenant) -> str:
    response = tenant.post(f"{PIM}/export")
    assert response.status_code == 202, response.text
    return str(response.json()["export_id"])


def export_now(tenant: Tenant, export_id: str) -> dict[str, Any]:
    response = tenant.get(f"{PIM}/exports/{export_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def deliveries(tenant: Tenant) -> list[dict[str, Any]]:
    return tenant.all_pages(DELIVERIES, limit=200)


def delivered(tenant: Tenant, timeout: float = 60) -> dict[str, Any]:
    """The tenant's only delivery record, once delivered."""

    def check() -> dict[str, Any] | None:
        records = deliveries(tenant)
        assert len(records) <= 1, records
        return records[0] if records and records[0]["delivered_at"] else None

    return dict(until("delivery", check, timeout, every=0.2))


# -- 4a. receiver down for a while (session stack: nothing is killed) --------------------------


@pytest.mark.slow
def test_webhook_receiver_down_then_back_gets_the_same_event(tenant: Tenant, receivers: list[Receiver]) -> None:
    refused_for, failing_for = 10.0, 10.0
    port = free_port()  # nothing listens here yet: every attempt is refused
    secret = set_webhook(tenant, f"http://127.0.0.1:{port}/hooks/synq")
    started = time.monotonic()
    export_id = request_export(tenant)

    # Phase 1: connection refused. The attempts are recorded, nothing is delivered.
    refused = until("a refused attempt", lambda: [d for d in deliveries(tenant) if d["attempts"] >= 2], 60, every=0.5)[0]
    time.sleep(max(0.0, started + refused_for - time.monotonic()))
    [during_refusal] = deliveries(tenant)
    assert during_refusal["delivered_at"] is None and during_refusal["last_status_code"] is None
    assert "ConnectionError" in during_refusal["last_error"], during_refusal
    assert during_refusal["attempts"] >= refused["attempts"] >= 2

    # Phase 2: the receiver is up but answers 503; then it recovers and answers 204.
    healthy_at = time.monotonic() + failing_for
    receiver = Receiver(answer=lambda n: (503 if time.monotonic() < healthy_at else 204, 0.0), port=port).start()
    receivers.append(receiver)
    until("a 204", lambda: any(c.get("status") == 204 for c in receiver.calls), failing_for + 60)
    record = delivered(tenant)
    recovered = time.monotonic() - started
    time.sleep(1.5)
    calls = list(receiver.calls)
    assert calls[-1]["status"] == 204 and [c["status"] for c in calls].count(204) == 1, "a delivered event must not be sent again"
    failed = [c for c in calls if c["status"] == 503]
    assert failed, "no attempt reached the receiver while it answered 503"
    assert {c["headers"]["webhook-id"] for c in calls} == {record["event_id"]}  # one event id throughout
    for call in calls:
        event = Webhook(secret).verify(call["body"], call["headers"])
        assert event["data"]["export_id"] == export_id
    assert len({c["body"] for c in calls}) == 1  # every attempt sends the same bytes
    # Attempts count the refused ones too; the record ends delivered.
    assert record["attempts"] > len(calls) > 1 and record["attempts"] >= during_refusal["attempts"] + len(calls)
    assert record["last_status_code"] == 204 and record["last_error"] is None and record["delivered_at"]
    log(
        f"receiver down: refused {refused_for:.0f}s then 503 {failing_for:.0f}s; {record['attempts']} attempts "
        f"({during_refusal['attempts']}+ refused, {len(failed)} answered 503, 1 delivered); delivered {recovered:.1f}s after the export request"
    )


# -- 4b. receiver slower than the timeout (own stack: SYNQ_WEBHOOK_TIMEOUT_SECONDS=2) ------------


@pytest.mark.slow
def test_webhook_receiver_slower_than_the_timeout_is_retried_not_waited_for(own: Stack, receivers: list[Receiver]) -> None:
    tenant = own_tenant(own)
    slow_calls, slow_seconds = 2, 2 * WEBHOOK_TIMEOUT
    seen_by_third: list[dict[str, Any]] = []

    def on_call(n: int) -> None:
        if n == slow_calls + 1:  # what the record said when the attempt after the timeouts arrived
            seen_by_third.extend(deliveries(tenant))

    receiver = Receiver(answer=lambda n: (204, slow_seconds if n <= slow_calls else 0.0), on_call=on_call).start()
    receivers.append(receiver)
    secret = set_webhook(tenant, receiver.url)
    started = time.monotonic()
    request_export(tenant)
    calls = receiver.wait_for(slow_calls + 1, timeout=90)
    record = delivered(tenant)
    time.sleep(1.0)
    assert len(receiver.calls) == slow_calls + 1, "a delivered event must not be sent again"
    # The sender gave up after its timeout and retried while the receiver was still sleeping.
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(calls)]
    assert all(gap < slow_seconds for gap in gaps[:slow_calls]), gaps
    [before] = seen_by_third
    assert before["attempts"] == slow_calls and before["delivered_at"] is None and before["last_status_code"] is None
    assert "in time" in before["last_error"], before  # "the receiver did not answer in time"
    assert {c["headers"]["webhook-id"] for c in calls} == {record["event_id"]}
    for call in calls:
        Webhook(secret).verify(call["body"], call["headers"])
    assert record["attempts"] == slow_calls + 1 and record["last_status_code"] == 204 and record["last_error"] is None
    log(
        f"slow receiver: {slow_calls} calls held {slow_seconds:.0f}s against a {WEBHOOK_TIMEOUT:.0f}s timeout; "
        f"retries {', '.join(f'{g:.1f}s' for g in gaps)} apart; delivered on attempt {record['attempts']} "
        f"{time.monotonic() - started:.1f}s after the export request"
    )


# -- 1. process_chunk killed mid-job (own stack) -----------------------------------------------


@pytest.mark.slow
def test_chunk_worker_killed_mid_job_the_job_still_applies_every_item_once(own: Stack) -> None:
    tenant = own_tenant(own)
    n = 3000
    skus = [f"CRASH-{i:05d}" for i in range(n)]
    started = time.monotonic()
    job = tenant.create_job("BULK_IMPORT", [{"title": f"Crash item {i}", "sku": sku, **GOOD} for i, sku in enumerate(skus)])
    seen = partly_applied(tenant, job["id"], n)
    mark = log_size(own, "reconcile")
    try:
        kill(own, "process_chunk")
        killed_at = time.monotonic()
        at_kill = job_now(tenant, job["id"])
    finally:
        own.start_function("process_chunk")  # whatever happened, later tests need the worker back
    restarted_at = time.monotonic()
    assert at_kill["status"] == "PROCESSING" and at_kill["processed_items"] < n, at_kill
    done = tenant.wait_job(job["id"], timeout=240)
    finished_at = time.monotonic()
    assert_applied_exactly_once(tenant, done, skus)
    log(
        f"process_chunk SIGKILL: {n} items, killed at {at_kill['processed_items']}/{n} applied "
        f"(seen {seen['processed_items']}) {killed_at - started:.1f}s in; restarted in {restarted_at - killed_at:.1f}s; "
        f"COMPLETED {finished_at - restarted_at:.1f}s after the restart ({finished_at - started:.1f}s in all); "
        f"{n} products, {n} product.created events; reconciler: {dict(reconciled_since(own, mark))}"
    )


# -- 2. run_export killed while uploading (own stack) ------------------------------------------


def storage_objects(stack: Stack, prefix: str) -> list[str]:
    response = requests.get(f"http://127.0.0.1:{stack.ports['storage']}/storage/v1/b/synq-local/o", params={"prefix": prefix}, timeout=30)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json().get("items", [])]


def uploading(stack: Stack, object_name: str) -> bool:
    """A chunk of this object's resumable upload has reached the storage emulator (its request log)."""
    needle = quote(object_name, safe="")
    text = stack.log_path("storage").read_text(errors="replace")
    return any(needle in line and "PUT /upload/" in line for line in text.splitlines())


@pytest.mark.slow
def test_export_worker_killed_while_uploading_still_yields_one_file_and_one_notification(own: Stack, receivers: list[Receiver]) -> None:
    tenant = own_tenant(own)
    n = 1000
    # ~10 KB a line, ~10 MB in all: some 40 upload chunks of 256 KiB, so the worker is still uploading
    # (for seconds) when the test sees the first chunk and kills it. At ~1.5 KB a line the whole
    # upload could finish in the moment between the two, and the test failed now and then.
    blurb = " ".join(["Long-form copy so that each exported line weighs about ten kilobytes."] * 140)
    skus = [f"EXP-{i:05d}" for i in range(n)]
    job = tenant.create_job("BULK_IMPORT", [{"title": f"Export item {i}", "sku": sku, **GOOD, "description": blurb} for i, sku in enumerate(skus)])
    assert tenant.wait_job(job["id"], timeout=240)["status"] == "COMPLETED"
    receiver = Receiver().start()
    receivers.append(receiver)
    secret = set_webhook(tenant, receiver.url)

    started = time.monotonic()
    export_id = request_export(tenant)
    # The file is written in segments (one here: 1,000 products), each uploaded under its own name.
    segment = segment_name(Scope(tenant.org_id, tenant.tenant_id), export_id, claim=1, index=0)

    def mid_upload() -> bool:
        assert export_now(tenant, export_id)["status"] in ("QUEUED", "RUNNING"), "the export ended before it could be killed"
        return uploading(own, segment)

    until("the first upload chunk", mid_upload, 120, every=0.02)
    mark = log_size(own, "reconcile")
    try:
        kill(own, "run_export")
        killed_at = time.monotonic()
        at_kill = export_now(tenant, export_id)
        objects_at_kill = storage_objects(own, f"exports/{tenant.org_id}/{tenant.tenant_id}/{export_id}")
    finally:
        own.start_function("run_export")
    restarted_at = time.monotonic()
    assert at_kill["status"] == "RUNNING" and at_kill["completed_at"] is None, at_kill
    assert objects_at_kill == [], "the killed upload must not have left a finished object, segment or file"

    record = until("export COMPLETED", lambda: (e := export_now(tenant, export_id))["status"] in ("COMPLETED", "FAILED") and e, 120, every=0.2)
    finished_at = time.monotonic()
    assert record["status"] == "COMPLETED" and record["product_count"] == n and record["excluded_count"] == 0, record
    # The killed worker held the first claim; the file is the second claim's, under a name of its own.
    assert record["object"] == f"exports/{tenant.org_id}/{tenant.tenant_id}/{export_id}.2.jsonl", record
    # The segments are deleted after the finishing commit, by the same worker: a moment after COMPLETED.
    prefix = f"exports/{tenant.org_id}/{tenant.tenant_id}/"
    until("only the file left", lambda: storage_objects(own, prefix) == [record["object"]], 30, every=0.1)
    download = tenant.get(f"{PIM}/exports/{export_id}/download")
    assert download.status_code == 200, download.text[:500]
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert len(lines) == n and sorted(p["sku"] for p in lines) == skus and len({p["id"] for p in lines}) == n

    delivery = delivered(tenant)
    assert delivery["export_id"] == export_id and delivery["type"] == "export.completed"
    time.sleep(2.0)
    assert len(deliveries(tenant)) == 1
    calls = receiver.wait_for(1)
    assert {c["headers"]["webhook-id"] for c in calls} == {delivery["event_id"]}
    event = Webhook(secret).verify(calls[0]["body"], calls[0]["headers"])
    assert event["data"]["product_count"] == n and event["data"]["export_id"] == export_id
    runs = [json.loads(line) for line in own.log_path("run_export").read_text().splitlines() if export_id in line and line.startswith("{")]
    finished_runs = sum(1 for r in runs if r.get("message") == "export finished")
    log(
        f"run_export SIGKILL mid-upload: {n} products (~{len(download.content) / 1e6:.1f} MB, 256 KiB chunks), killed "
        f"{killed_at - started:.1f}s after the request; restarted in {restarted_at - killed_at:.1f}s; COMPLETED "
        f"{finished_at - restarted_at:.1f}s after the restart; 1 object, 1 delivery record, 1 webhook-id, "
        f"{len(calls)} webhook call(s), {finished_runs} worker run(s) finished it; reconciler: {dict(reconciled_since(own, mark))}"
    )


# -- 3. the Pub/Sub emulator restarted under a running job (own stack) -------------------------


def restart_pubsub(stack: Stack, down_for: float) -> None:
    """Kill the emulator (it keeps no state), start it again on its port, recreate topics and pushes."""
    try:
        kill(stack, "pubsub")
        time.sleep(down_for)
    finally:
        start_pubsub(stack)


def start_pubsub(stack: Stack) -> None:
    port = stack.ports["pubsub"]
    argv = ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}", f"--project={stack.project}"]
    proc = stack._spawn("pubsub", argv, os.environ.copy())
    wait_for("pubsub emulator", lambda: port_open(port), 90, proc, stack.log_path("pubsub"))
    stack._wire()


@pytest.mark.slow
def test_pubsub_emulator_restarted_mid_job_the_reconciler_finishes_it_exactly(own: Stack) -> None:
    tenant = own_tenant(own)
    n = 2000
    skus = [f"PS-{i:05d}" for i in range(n)]
    started = time.monotonic()
    job = tenant.create_job("BULK_IMPORT", [{"title": f"Pubsub item {i}", "sku": sku, **GOOD} for i, sku in enumerate(skus)])
    seen = partly_applied(tenant, job["id"], n)
    stopped_at = time.monotonic()
    mark = log_size(own, "reconcile")
    restart_pubsub(own, down_for=2.0)
    back_at = time.monotonic()
    at_restart = job_now(tenant, job["id"])
    done = tenant.wait_job(job["id"], timeout=240)
    finished_at = time.monotonic()
    assert_applied_exactly_once(tenant, done, skus)
    log(
        f"pubsub restart: {n} items, emulator killed at {seen['processed_items']}/{n} applied {stopped_at - started:.1f}s in, "
        f"back (topics and pushes re-created) after {back_at - stopped_at:.1f}s with {at_restart['processed_items']}/{n} applied; "
        f"COMPLETED {finished_at - back_at:.1f}s later ({finished_at - started:.1f}s in all); reconciler: {dict(reconciled_since(own, mark))}"
    )
