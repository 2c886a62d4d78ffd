"""Issue 5: exporting 50,000 products keeps the export function's peak memory under 256 MiB."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from common.clients import firestore_client
from common.models.base import utcnow
from common.store.paths import Scope, coll
from tests.conftest import Tenant

N = 50_000
LIMIT_MIB = 256


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in a process group (the function and its gunicorn worker)."""
    total_kib = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state, ppid, pgrp, …
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total_kib / 1024


def seed_products(tenant: Tenant) -> None:
    """50,000 products written straight into the tenant's collection in 500-document batches."""
    products = coll(Scope(tenant.org_id, tenant.tenant_id), "products", firestore_client())
    now = utcnow()
    for start in range(0, N, 500):
        batch = firestore_client().batch()
        for i in range(start, start + 500):
            pid = f"p{i:06d}"
            batch.set(
                products.document(pid),
                {
                    "id": pid,
                    "org_id": tenant.org_id,
                    "tenant_id": tenant.tenant_id,
                    "title": f"Product {i}",
                    "sku": f"M-{i}",
                    "description": "A long enough description of this product for shoppers." * 4,
                    "category": "Shirts",
                    "brand": "HarbourLine",
                    "attributes": {"colour": "blue", "size": "M"},
                    "variants": [],
                    "issue_counts": {"ERROR": 1 if i % 100 == 0 else 0, "WARNING": 0},
                    "created_at": now,
                    "updated_at": now,
                },
            )
        batch.commit()


@pytest.mark.slow
def test_exporting_50000_products_stays_under_256_mib(tenant: Tenant, stack) -> None:  # type: ignore[no-untyped-def]
    seed_products(tenant)
    pgid = os.getpgid(stack.procs["run_export"].pid)
    peak = group_rss_mib(pgid)
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.1):
            peak = max(peak, group_rss_mib(pgid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    export_id = tenant.post("/api/v1/pim/export").json()["export_id"]
    deadline = time.monotonic() + 600
    while (record := tenant.get(f"/api/v1/pim/exports/{export_id}").json())["status"] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, record
        time.sleep(0.5)
    stop.set()
    sampler.join()
    assert record["status"] == "COMPLETED"
    assert (record["product_count"], record["excluded_count"]) == (N - N // 100, N // 100)
    print(f"run_export peak RSS {peak:.0f} MiB for {N} products")
    assert 0 < peak < LIMIT_MIB, f"run_export peaked at {peak:.0f} MiB"
