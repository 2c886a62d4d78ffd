"""Every stored record names its org and tenant (DESIGN.md, data model), not only its path: the
records a tenant's vocabulary, taxonomy and export notification requests write, read back raw."""

from __future__ import annotations

import time

from common.store.paths import Scope, coll, rows
from tests.conftest import Tenant

PREFIX = "/api/v1/pim"


def stored(scope: Scope, collection: str) -> list[dict[str, object]]:
    return [fields for _, fields in rows(coll(scope, collection).limit(100))]


def test_vocabularies_taxonomy_nodes_and_deliveries_carry_org_and_tenant(tenant: Tenant) -> None:
    vocabulary = {"name": "Scope", "attributes": [{"name": "Name", "maps_to": "title"}]}
    assert tenant.post(f"{PREFIX}/vocabularies", json=vocabulary).status_code == 201
    parent = tenant.post(f"{PREFIX}/taxonomy-nodes", json={"name": "Food"})
    assert parent.status_code == 201, parent.text
    child = tenant.post(f"{PREFIX}/taxonomy-nodes", json={"name": "Bakery", "parent_id": parent.json()["id"]}).json()
    settings = tenant.request("PUT", f"{PREFIX}/notification-settings", json={"channel": "email", "email": "ops@example.com"})
    assert settings.status_code == 200, settings.text
    assert tenant.post(f"{PREFIX}/export").status_code == 202
    deadline = time.monotonic() + 60
    while not tenant.get(f"{PREFIX}/notification-deliveries").json():
        assert time.monotonic() < deadline, "no delivery recorded"
        time.sleep(0.2)

    scope = Scope(tenant.org_id, tenant.tenant_id)
    for collection, count in (("vocabularies", 1), ("taxonomy_nodes", 2), ("notification_deliveries", 1)):
        records = stored(scope, collection)
        assert len(records) == count, (collection, records)
        for record in records:
            assert (record.get("org_id"), record.get("tenant_id")) == (tenant.org_id, tenant.tenant_id), (collection, record)

    # The answers keep their documented shape: the caller's headers already name org and tenant.
    assert set(child) == {"id", "name", "parent_id", "created_at"}
    assert {frozenset(n) for n in tenant.get(f"{PREFIX}/taxonomy-nodes").json()} == {frozenset(child)}
