"""Benchmark fixtures: a stack of their own, product generators, an RSS sampler and timed helpers.

Sizes scale with SYNQ_BENCH_SCALE (0.1 runs everything at a tenth). Settings for the functions can
be tried without editing code: SYNQ_BENCH_ENV="THREADS=16,SYNQ_CHUNK_WINDOW=16" is merged into every
function's environment (`Stack.extra_env`). SYNQ_BENCH_OUT=path appends every result line to a file.

Every benchmark prints ONE JSON object on stdout:
{"name", "items", "seconds", "items_per_s", "ratio", "peak_rss_mib", "target", "target_met", ...}.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.stack import Stack, free_port

SCALE = float(os.environ.get("SYNQ_BENCH_SCALE", "1"))
# A request body is at most 32 MiB (Settings.max_body_bytes); big imports are split into jobs under this.
JOB_BODY_MAX = int(os.environ.get("SYNQ_BENCH_JOB_BYTES", str(31 * 1024 * 1024)))
BENCH_TIMEOUT = 3600
# An import whose jobs' status and counters do not move for this long has stalled (the stack's
# reconciler republishes work after 120 s, so a stall longer than that is not going to heal).
STALL_SECONDS = float(os.environ.get("SYNQ_BENCH_STALL_SECONDS", "300"))


def sized(n: int) -> int:
    return max(1, round(n * SCALE))


def bench_env() -> dict[str, str]:
    """Extra function environment from SYNQ_BENCH_ENV ("K=V,K=V")."""
    raw = os.environ.get("SYNQ_BENCH_ENV", "").strip()
    env: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition("=")
        env[key.strip()] = value.strip()
    return env


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print one benchmark's JSON object (and append it to SYNQ_BENCH_OUT when set)."""
    result = {**result, "scale": SCALE, "env": bench_env(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}
    line = json.dumps(result, sort_keys=False, default=str)
    print(line, flush=True)
    out = os.environ.get("SYNQ_BENCH_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return result


# -- memory ------------------------------------------------------------------------------------


def _stat(pid: str) -> list[str] | None:
    """The fields of /proc/{pid}/stat after the command name (state first: the process group is
    [2], user and system CPU ticks [11] and [12]), None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _pgid(pid: str) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def _pgid_and_rss(pid: str) -> tuple[int, int] | None:
    """(process group, VmRSS in KiB) of a live process, None if it is gone or a kernel thread."""
    pgid = _pgid(pid)
    if pgid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return pgid, int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kib(pid: str) -> int:
    """Proportional set size: pages shared with other processes (a forked gunicorn worker shares
    its imports with the arbiter) count once across them, unlike RSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


@dataclass
class GroupMemory:
    rss_kib: int = 0  # sum of VmRSS over the group's processes
    pss_kib: int = 0  # sum of Pss
    largest_rss_kib: int = 0  # the largest single process
    processes: int = 0


def group_members(pgids: set[int]) -> list[str]:
    """The pids of every live process whose process group is in `pgids` (a scan of /proc)."""
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and _pgid(pid) in pgids]


def group_memory(pgids: set[int], pids: list[str] | None = None, pss: bool = True) -> dict[int, GroupMemory]:
    """Memory of each process group, from /proc: of the processes `pids` (default: every process)
    whose pgid is in `pgids`; Pss only with `pss`."""
    out = {pgid: GroupMemory() for pgid in pgids}
    for pid in os.listdir("/proc") if pids is None else pids:
        if not pid.isdigit():
            continue
        found = _pgid_and_rss(pid)
        if found and found[0] in out:
            mem = out[found[0]]
            mem.rss_kib += found[1]
            mem.pss_kib += _pss_kib(pid) if pss else 0
            mem.largest_rss_kib = max(mem.largest_rss_kib, found[1])
            mem.processes += 1
    return out


class RssSampler:
    """Samples the memory of named process groups every `interval` seconds in a thread; keeps peaks.

    It shares the two cores with what it measures, and the baselines run without it, so it keeps
    its cost down: the groups' processes are found by a scan of /proc once a second, not at every
    sample (a scan cost 3.4 of a sample's 8 ms of CPU), and Pss, which walks a process's page
    tables and is reported but held to no target, is read at every fifth sample."""

    def __init__(self, groups: dict[str, int], interval: float = 0.2, rescan_every: float = 1.0, pss_every: int = 5) -> None:
        self.groups = groups
        self.interval = interval
        self.rescan_every = rescan_every
        self.pss_every = pss_every
        self.peak: dict[str, GroupMemory] = {name: GroupMemory() for name in groups}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        by_pgid = {pgid: name for name, pgid in self.groups.items()}
        members: list[str] = []
        rescan_at = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= rescan_at:
                members, rescan_at = group_members(set(by_pgid)), time.monotonic() + self.rescan_every
            sampled = group_memory(set(by_pgid), members, pss=self.samples % self.pss_every == 0)
            for pgid, mem in sampled.items():
                peak = self.peak[by_pgid[pgid]]
                peak.rss_kib = max(peak.rss_kib, mem.rss_kib)
                peak.pss_kib = max(peak.pss_kib, mem.pss_kib)
                peak.largest_rss_kib = max(peak.largest_rss_kib, mem.largest_rss_kib)
                peak.processes = max(peak.processes, mem.processes)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_mib(self, name: str) -> float:
        """Peak of the summed RSS of the group (the figure the targets use)."""
        return round(self.peak[name].rss_kib / 1024, 1)

    def peak_pss_mib(self, name: str) -> float:
        return round(self.peak[name].pss_kib / 1024, 1)

    def peak_single_mib(self, name: str) -> float:
        return round(self.peak[name].largest_rss_kib / 1024, 1)


def idle_memory(stack: Stack, *names: str) -> dict[str, dict[str, float]]:
    """RSS and PSS of process groups now (before a benchmark loads them)."""
    mems = group_memory({stack.procs[name].pid for name in names})
    return {
        name: {"rss_mib": round(mems[stack.procs[name].pid].rss_kib / 1024, 1), "pss_mib": round(mems[stack.procs[name].pid].pss_kib / 1024, 1)}
        for name in names
    }


def group_cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the live processes of each named process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    by_pgid = {pgid: name for name, pgid in groups.items()}
    out = dict.fromkeys(groups, 0.0)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat(pid)
        if fields is None:
            continue
        name = by_pgid.get(int(fields[2]))
        if name is not None:
            out[name] += (int(fields[11]) + int(fields[12])) / ticks
    return out


class CpuMeter:
    """CPU seconds each process group of the stack (and this process) spent between enter and exit."""

    def __init__(self, stack: Stack) -> None:
        self.groups = {name: proc.pid for name, proc in stack.procs.items()}
        self.used: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = group_cpu_seconds(self.groups)
        self._self = os.times()
        return self

    def __exit__(self, *exc: object) -> None:
        end = group_cpu_seconds(self.groups)
        now = os.times()
        self.used = {name: round(end[name] - self._start[name], 1) for name in self.groups if end[name] - self._start[name] >= 0.05}
        self.used["bench (this process)"] = round(now.user + now.system - self._self.user - self._self.system, 1)


def sampler_for(stack: Stack, *names: str) -> RssSampler:
    # Each process is spawned with start_new_session, so its pid is its process group id.
    return RssSampler({name: stack.procs[name].pid for name in names})


# -- products ----------------------------------------------------------------------------------

BRANDS = ["Nordhaus", "Verano", "Kestrel", "Oakline", "Brightwell", "Solace", "Tidewater", "Ironbark", "Lumen & Co", "Pinecrest"]
NOUNS = ["Skillet", "Chef Knife", "Desk Lamp", "Backpack", "Water Bottle", "Throw Blanket", "Headphones", "Trail Shoe", "Kettle", "Cutting Board"]
ADJECTIVES = ["Classic", "Pro", "Compact", "Ultralight", "Premium", "Everyday", "Insulated", "Cordless", "Organic", "Heavy-Duty"]
CATEGORIES = [
    "Home & Kitchen > Cookware > Pans",
    "Home & Kitchen > Cutlery > Knives",
    "Home > Lighting > Desk Lamps",
    "Outdoor > Bags > Backpacks",
    "Outdoor > Hydration > Bottles",
    "Home > Textiles > Blankets",
    "Electronics > Audio > Headphones",
    "Sports > Footwear > Running",
]
COLORS = ["black", "graphite", "sand", "forest green", "navy", "crimson", "ivory", "slate blue"]
MATERIALS = ["stainless steel", "cast iron", "recycled polyester", "organic cotton", "aluminium", "beech wood", "ABS plastic"]
TEXT = (
    "designed for daily use with a durable finish that resists scratches and stains while keeping its shape "
    "after years of washing the ergonomic handle stays cool and the balanced weight makes long sessions "
    "comfortable every component is tested for safety and certified to international standards packaging "
    "is fully recyclable and printed with plant based inks care instructions are simple wipe clean with a "
    "soft cloth or place on the top rack of the dishwasher backed by our satisfaction guarantee"
)
WORDS = TEXT.split(" ")


def gtin13(rng: random.Random, valid: bool = True) -> str:
    data = [rng.randrange(10) for _ in range(12)]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(data)))
    check = (10 - total % 10) % 10
    if not valid:
        check = (check + 1 + rng.randrange(9)) % 10
    return "".join(map(str, data)) + str(check)


def _description(rng: random.Random, length: int = 600) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    text = " ".join(words)[:length].rstrip()
    return text[0].upper() + text[1:] + "."


@dataclass
class Catalog:
    """Generated import items with what a correct import must produce from them."""

    items: list[dict[str, Any]]
    invalid: int  # items the engine must refuse (failed_items)
    bad_gtin: int  # valid items with a wrong GS1 check digit (stored, open ERROR issue, left out of exports)

    @property
    def valid(self) -> int:
        return len(self.items) - self.invalid

    @property
    def valid_items(self) -> list[dict[str, Any]]:
        return [item for item in self.items if not item.get("_invalid")]


def make_products(n: int, run: str, seed: int = 8, invalid_every: int = 40, bad_gtin_every: int = 33) -> Catalog:
    """`n` products of about 1 KB; one in `invalid_every` is refused, one in `bad_gtin_every` has a bad check digit.

    Invalid items carry a private `_invalid` marker that `payload()` strips.
    """
    rng = random.Random(seed)
    descriptions = [_description(rng, rng.randrange(560, 640)) for _ in range(512)]
    items: list[dict[str, Any]] = []
    invalid = bad = 0
    for i in range(n):
        brand = rng.choice(BRANDS)
        noun = rng.choice(NOUNS)
        item: dict[str, Any] = {
            "title": f"{brand} {rng.choice(ADJECTIVES)} {noun} {rng.choice('ABCDEFGHJK')}{rng.randrange(100, 999)}",
            "sku": f"{run}-{i:07d}",
            "description": rng.choice(descriptions),
            "category": rng.choice(CATEGORIES),
            "brand": brand,
            "gtin": gtin13(rng),
            "attributes": {
                "color": rng.choice(COLORS),
                "material": rng.choice(MATERIALS),
                "weight_kg": round(rng.uniform(0.1, 9.5), 2),
                "dimensions_cm": {"length": rng.randrange(5, 90), "width": rng.randrange(5, 60), "height": rng.randrange(1, 40)},
                "tags": rng.sample(["bestseller", "eco", "gift", "new", "sale", "bundle", "limited"], 3),
                "warranty_years": rng.choice([1, 2, 3, 5]),
                "country_of_origin": rng.choice(["DE", "PT", "VN", "US", "IT", "JP"]),
            },
        }
        if i % invalid_every == invalid_every - 1:
            # Refused by validation: each kind a caller really sends.
            kind = (i // invalid_every) % 4
            if kind == 0:
                del item["title"]
            elif kind == 1:
                item["title"] = 12345
            elif kind == 2:
                item["colour"] = "red"
            else:
                item["description"] = ["not", "a", "string"]
            item["_invalid"] = True
            invalid += 1
        elif i % bad_gtin_every == bad_gtin_every - 1:
            item["gtin"] = gtin13(rng, valid=False)
            bad += 1
        items.append(item)
    return Catalog(items, invalid, bad)


def payload(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "_invalid"} for item in items]


def job_bodies(items: list[dict[str, Any]], max_bytes: int = JOB_BODY_MAX) -> list[bytes]:
    """The fewest equal-sized BULK_IMPORT request bodies, each under `max_bytes`."""
    clean = payload(items)
    parts = 1
    while True:
        size = -(-len(clean) // parts)
        bodies = [
            json.dumps({"job_type": "BULK_IMPORT", "payload": clean[i : i + size]}, separators=(",", ":")).encode()
            for i in range(0, len(clean), size)
        ]
        if max(len(b) for b in bodies) <= max_bytes:
            return bodies
        parts += 1


# The vocabulary an envelope benchmark's tenant imports with: the core fields, and two attributes
# that stay as values by locale.
ENVELOPE_VOCABULARY = {
    "name": "bench",
    "default": True,
    "attributes": [
        {"name": "GTIN", "maps_to": "gtin"},
        {"name": "Product Name", "maps_to": "title"},
        {"name": "Description", "maps_to": "description"},
        {"name": "Brand", "maps_to": "brand"},
        {"name": "Category", "maps_to": "category"},
        {"name": "Color"},
        {"name": "Material"},
    ],
}


def envelope_body(items: list[dict[str, Any]], max_bytes: int = JOB_BODY_MAX) -> tuple[bytes, int]:
    """One BULK_IMPORT body whose payload is a ProductImportData envelope (ErrorMode Ignore) of as
    many of `items`, as vendor products of about 1 KB, as fit in `max_bytes`; and how many it holds."""

    def vendor(item: dict[str, Any]) -> dict[str, Any]:
        values = {
            "GTIN": item["gtin"],
            "Product Name": item["title"],
            "Description": item["description"],
            "Brand": item["brand"],
            "Category": item["category"],
            "Color": item["attributes"]["color"],
            "Material": item["attributes"]["material"],
        }
        return {
            "ImportMode": "CreateOrUpdate",
            "ProductIdentifierValue": item["gtin"],
            "Values": [{"Name": name, "ValuesByLocale": {"en-US": value}} for name, value in values.items()],
        }

    products: list[dict[str, Any]] = []
    size, seen = 200, set()  # 200: the envelope around the products
    for item in items:
        if item["gtin"] in seen:  # one product per identifier, so the count of products is exact
            continue
        seen.add(item["gtin"])
        product = vendor(item)
        size += len(json.dumps(product, separators=(",", ":"))) + 1
        if size > max_bytes:
            break
        products.append(product)
    payload = {"ProductImportData": {"ProductsToImport": products, "ProductIdentifierProperty": "GTIN"}, "ErrorMode": "Ignore"}
    return json.dumps({"job_type": "BULK_IMPORT", "payload": payload}, separators=(",", ":")).encode(), len(products)


# -- the stack and its callers -----------------------------------------------------------------


@dataclass
class BenchTenant:
    org_id: str
    tenant_id: str
    token: str
    api_url: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Org-ID": self.org_id, "X-Tenant-ID": self.tenant_id}

    @property
    def scope(self) -> Any:
        from common.store.paths import Scope

        return Scope(self.org_id, self.tenant_id)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{self.api_url}{path}", headers=self.headers, timeout=120, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(f"{self.api_url}{path}", headers=self.headers, timeout=300, **kwargs)


@dataclass
class Bench:
    stack: Stack
    db: Any  # this process's Firestore client, on the stack's emulator

    def tenant(self) -> BenchTenant:
        from common.store.tokens import hash_token, mint_token

        org, tenant = str(uuid.uuid4()), str(uuid.uuid4())
        token = mint_token(user_id=str(uuid.uuid4()), email="bench@synq.local", org_id=org, tenant_ids=[tenant], role="admin")
        # The API's per-token budget (SYNQ_RATE_LIMIT_PER_MINUTE) is still counted on every request,
        # but set high enough that a benchmark measures work rather than 429s.
        self.db.collection("api_tokens").document(hash_token(token)).update({"rate_limit_per_minute": 10**9})
        return BenchTenant(org, tenant, token, self.stack.api_url)

    def products(self, tenant: BenchTenant) -> Any:
        from common.store.paths import coll

        return coll(tenant.scope, "products", self.db)

    def count_products(self, tenant: BenchTenant) -> int:
        result = self.products(tenant).count().get()
        return int(result[0][0].value)

    def log_lines(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        """The JSON log lines of one function written after byte offset `since`."""
        path = self.stack.log_path(name)
        out = []
        with open(path, "rb") as handle:
            handle.seek(since)
            for raw in handle:
                try:
                    out.append(json.loads(raw))
                except ValueError:
                    continue
        return out

    def last_errors(self, names: tuple[str, ...] = ("dispatch_job", "process_chunk"), keep: int = 600) -> dict[str, str]:
        """The last ERROR line of each function's log, shortened to its end (where the cause is)."""
        out = {}
        for name in names:
            errors = [line for line in self.log_lines(name) if line.get("severity") == "ERROR"]
            if errors:
                text = str(errors[-1].get("exception") or errors[-1].get("message"))
                out[name] = text[-keep:]
        return out

    def log_size(self, name: str) -> int:
        return self.stack.log_path(name).stat().st_size


@pytest.fixture(scope="session")
def bench() -> Iterator[Bench]:
    state = Path(tempfile.mkdtemp(prefix="synq-bench-"))
    # The production cadence and staleness (Cloud Scheduler ticks once a minute; Settings.stale_after_seconds
    # = 120 s), so the reconciler only steps in where it would in the cloud. Its queries are not free
    # here: the emulator answers every query by scanning all its documents.
    stack = Stack(state_dir=state, api_port=free_port(), seed_demo=False, reconcile_every=60.0, stale_after_seconds=120.0, extra_env=bench_env())
    saved = dict(os.environ)
    # A SIGTERM (a CI timeout, `timeout`) unwinds like Ctrl-C, so the stack below is stopped and no
    # emulator outlives the run.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    stack.start()
    print(f"\nbench stack up in {time.monotonic() - started:.0f}s (state {state}, extra env {bench_env()})", file=sys.stderr, flush=True)
    os.environ.update(stack.client_env())
    _reset_caches()
    from common.clients import firestore_client

    try:
        bench = Bench(stack, firestore_client())
        warm_up(bench)
        yield bench
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
        os.environ.clear()
        os.environ.update(saved)
        _reset_caches()
        if os.environ.get("SYNQ_KEEP_BENCH_STATE"):
            print(f"bench stack state kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def warm_up(bench: Bench) -> None:
    """Warm the emulators (the Firestore emulator's JIT makes its first writes several times dearer)
    and every function's code path, so neither the first benchmark nor its baseline pays for it."""
    started = time.monotonic()
    catalog = make_products(max(2000, sized(20_000)), "WARM")
    seconds, _ = raw_batch_write(bench, bench.tenant(), catalog.items)
    small = make_products(max(500, sized(5_000)), "WARMJOB")
    run = run_import(bench, bench.tenant(), job_bodies(small.items), len(small.items))
    print(
        f"warm-up: {len(catalog.items)} raw writes in {seconds:.1f}s, a {len(small.items)}-item import in {run.seconds:.1f}s "
        f"({time.monotonic() - started:.0f}s in all)",
        file=sys.stderr,
        flush=True,
    )


def _reset_caches() -> None:
    from common.clients import reset_clients
    from common.config import get_settings

    get_settings.cache_clear()
    reset_clients()


# -- timed operations ----------------------------------------------------------------------------


@dataclass
class ImportRun:
    items: int
    seconds: float
    post_seconds: float  # until every POST had answered
    jobs: list[dict[str, Any]]
    rss: RssSampler
    reconciled_chunks: int
    cpu_seconds: dict[str, float]

    @property
    def processed(self) -> int:
        return sum(j["processed_items"] or 0 for j in self.jobs)

    @property
    def failed(self) -> int:
        return sum(j["failed_items"] or 0 for j in self.jobs)

    @property
    def total(self) -> int:
        return sum(j["total_items"] or 0 for j in self.jobs)


def run_import(bench: Bench, tenant: BenchTenant, bodies: list[bytes], items: int, timeout: float = 3000) -> ImportRun:
    """POST every body at once, then poll the job list until every job is COMPLETED or FAILED."""
    log_from = bench.log_size("reconcile")
    with sampler_for(bench.stack, "api", "dispatch_job", "process_chunk") as rss, CpuMeter(bench.stack) as cpu:
        started = time.monotonic()

        def post(body: bytes) -> str:
            with requests.Session() as session:
                response = session.post(
                    f"{tenant.api_url}/api/v1/pim/bulk-jobs",
                    data=body,
                    headers={**tenant.headers, "Content-Type": "application/json"},
                    timeout=600,
                )
            assert response.status_code == 200, response.text[:500]
            return str(response.json()["id"])

        with ThreadPoolExecutor(len(bodies)) as pool:
            ids = set(pool.map(post, bodies))
        posted = time.monotonic() - started
        deadline = started + timeout
        last_state, moved_at = None, time.monotonic()
        # Each job polled by id without its payload, as a client watching its jobs would: a document
        # read. (Listing would be a query, which the emulator answers by scanning every document it
        # holds, and would cost the emulator more than a share of the import.)
        latest: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in sorted(ids):
                if latest.get(job_id, {}).get("status") in ("COMPLETED", "FAILED"):
                    continue
                got = tenant.get(f"/api/v1/pim/bulk-jobs/{job_id}", params={"include_payload": "false"})
                assert got.status_code == 200, got.text[:500]
                latest[job_id] = got.json()
            jobs = [latest[i] for i in sorted(ids)]
            if all(j["status"] in ("COMPLETED", "FAILED") for j in jobs):
                break
            now = time.monotonic()
            assert now < deadline, f"import not finished after {timeout}s: {jobs}"
            state = [(j["status"], j["processed_items"], j["failed_items"]) for j in jobs]
            if state != last_state:
                last_state, moved_at = state, now
            assert now - moved_at < STALL_SECONDS, f"import made no progress for {STALL_SECONDS:.0f}s: {state}; last errors: {bench.last_errors()}"
            time.sleep(0.25)
        seconds = time.monotonic() - started
    republished = sum(line.get("chunks_republished", 0) for line in bench.log_lines("reconcile", log_from))
    return ImportRun(items, seconds, posted, jobs, rss, republished, cpu.used)


def stored_product(item: dict[str, Any], tenant: BenchTenant, now: datetime) -> dict[str, Any]:
    """The document the engine stores for a new product (same fields, same size)."""
    from common.domain import rules

    doc = {**payload([item])[0], "id": str(uuid.uuid4()), "org_id": tenant.org_id, "tenant_id": tenant.tenant_id}
    doc |= {"created_at": now, "updated_at": now, "version": 1, "open_issues": {}, "issue_counts": {"ERROR": 0, "WARNING": 0}}
    doc["quality_score"] = rules.quality_score(doc)
    return doc


def raw_batch_write(bench: Bench, tenant: BenchTenant, items: list[dict[str, Any]], batch_size: int = 500) -> tuple[float, dict[str, float]]:
    """Seconds for this process to write the items' product documents with sequential 500-document
    batches, and the CPU seconds each process spent on it."""
    now = datetime.now(UTC)
    docs = [stored_product(item, tenant, now) for item in items]
    products = bench.products(tenant)
    with CpuMeter(bench.stack) as cpu:
        started = time.monotonic()
        for first in range(0, len(docs), batch_size):
            batch = bench.db.batch()
            for doc in docs[first : first + batch_size]:
                batch.set(products.document(doc["id"]), doc)
            batch.commit()
        seconds = time.monotonic() - started
    return seconds, cpu.used


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


def hammer(calls: dict[str, Callable[[requests.Session], requests.Response]], callers: int, seconds: float) -> dict[str, Any]:
    """`callers` threads, each with its own session, cycling through `calls` for `seconds`."""
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    errors: dict[str, int] = dict.fromkeys(calls, 0)
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    names = list(calls)

    def caller(offset: int) -> None:
        with requests.Session() as session:
            i = offset
            while time.monotonic() < stop_at:
                name = names[i % len(names)]
                i += 1
                started = time.monotonic()
                try:
                    response = calls[name](session)
                    ok = response.status_code < 300
                except requests.RequestException:
                    ok = False
                elapsed = time.monotonic() - started
                with lock:
                    latencies[name].append(elapsed)
                    if not ok:
                        errors[name] += 1

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": errors}
