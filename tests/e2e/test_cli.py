"""synqctl run as a subprocess against the running stack: imports, tables, exit codes, errors, export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from common.store.paths import Scope, coll, rows
from tests.conftest import Tenant
from tests.helpers import until

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
JOBS = "/api/v1/pim/bulk-jobs"
GOOD = {"description": "A long enough description of this product for shoppers.", "category": "Shirts", "brand": "HarbourLine"}
Cli = Callable[..., subprocess.CompletedProcess[str]]


def tenant_env(tenant: Tenant, **overrides: str | None) -> dict[str, str]:
    """This process's environment without any SYNQ_* setting, plus the tenant's four (None drops one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNQ_")}
    settings: dict[str, str | None] = {
        "SYNQ_API_URL": tenant.api_url,
        "SYNQ_TOKEN": tenant.token,
        "SYNQ_TENANT_ID": tenant.tenant_id,
        "SYNQ_ORG_ID": tenant.org_id,
        **overrides,
    }
    return env | {k: v for k, v in settings.items() if v is not None}


@pytest.fixture
def cli(tenant: Tenant) -> Cli:
    """Run `python -m synqctl ARGS…` as the tenant; keyword `env` overrides SYNQ_* values, `cwd` the directory."""

    def run(*args: Any, cwd: Path = ROOT, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
        environ = tenant_env(tenant, **(env or {}))
        if cwd != ROOT:
            environ["PYTHONPATH"] = str(ROOT)
        argv = [sys.executable, "-m", "synqctl", *map(str, args)]
        return subprocess.run(argv, cwd=cwd, env=environ, capture_output=True, text=True, timeout=180, check=False)

    return run


def field(output: str, name: str) -> str:
    """The value of a `name: value` summary line."""
    match = re.search(rf"^{name}:\s+(.*)$", output, re.MULTILINE)
    assert match, f"no {name!r} line in:\n{output}"
    return match.group(1)


def job_id_of(result: subprocess.CompletedProcess[str]) -> str:
    first = result.stdout.splitlines()[0]
    assert uuid.UUID(first), result.stdout
    return first


def data_rows(table: str) -> list[str]:
    return table.splitlines()[1:]


def failed_import(cli: Cli, tmp_path: Path) -> tuple[str, Path]:
    """(job id, errors file) of an import whose items 1 and 3 of 4 fail, run with `import --wait`."""
    lines = [
        {"title": "Good 0", "sku": "G-0", **GOOD},
        {"sku": "NO-TITLE"},  # index 1: title is required
        {"title": "Good 2", "sku": "G-2", **GOOD},
        {"title": "Extra", "sku": "EXTRA", "colour": "red"},  # index 3: unknown field
    ]
    source = tmp_path / "products.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    errors_out = tmp_path / "failed.jsonl"
    result = cli("import", source, "--type", "BULK_IMPORT", "--wait", "--timeout", 120, "--errors-out", errors_out)
    assert result.returncode == 1, result.stderr
    return job_id_of(result), errors_out


def no_jobs_and_no_audit(tenant: Tenant) -> bool:
    jobs = [tenant.get(JOBS, params={"type": t}).json() for t in ("BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE")]
    return jobs == [[], [], []] and tenant.get("/api/v1/pim/audit").json() == []


def test_import_json_array_waits_and_completes(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "products.json"
    source.write_text(json.dumps([{"title": f"Shirt {i}", "sku": f"SH-{i}", **GOOD} for i in range(3)]))
    errors_out = tmp_path / "errors.jsonl"

    result = cli("import", source, "--type", "BULK_IMPORT", "--wait", "--timeout", 120, "--errors-out", errors_out)

    assert result.returncode == 0, result.stderr
    job_id = job_id_of(result)
    assert field(result.stdout, "status") == "COMPLETED"
    assert field(result.stdout, "items") == "3 total, 3 processed, 0 failed"
    assert re.fullmatch(r"\d+\.\ds|\d+m\d\ds", field(result.stdout, "duration"))
    assert "COMPLETED [" + "#" * 30 + "] 100% 3/3" in result.stderr  # not a TTY: progress as lines
    assert not errors_out.exists()
    assert tenant.get(f"{JOBS}/{job_id}").json()["status"] == "COMPLETED"

    job = cli("job", job_id)
    assert job.returncode == 0 and field(job.stdout, "id") == job_id and field(job.stdout, "status") == "COMPLETED"
    assert json.loads(cli("job", job_id, "--json").stdout)["id"] == job_id

    products = cli("products")
    assert products.returncode == 0 and products.stdout.splitlines()[0].split()[:3] == ["ID", "SKU", "TITLE"]
    assert sorted(row.split()[1] for row in data_rows(products.stdout)) == ["SH-0", "SH-1", "SH-2"]
    one = data_rows(cli("products", "--sku", "SH-1").stdout)
    assert len(one) == 1 and "Shirt 1" in one[0]
    assert [p["sku"] for p in json.loads(cli("products", "--sku", "SH-2", "--json").stdout)] == ["SH-2"]


def test_jsonl_with_two_invalid_items_exits_1_and_saves_exactly_those(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    lines = [
        json.dumps({"title": "Good 0", "sku": "G-0", **GOOD}),
        "",
        json.dumps({"sku": "NO-TITLE"}),  # index 1: title is required
        json.dumps({"title": "Good 2", "sku": "G-2", **GOOD}),
        "   ",
        json.dumps({"title": "Extra", "sku": "EXTRA", "colour": "red"}),  # index 3: unknown field
        json.dumps({"title": "Good 4", "sku": "G-4", **GOOD}),
        "",
    ]
    source = tmp_path / "products.jsonl"
    source.write_text("\n".join(lines))
    errors_out = tmp_path / "failed.jsonl"

    result = cli("import", source, "--type", "BULK_IMPORT", "--wait", "--timeout", 120, "--errors-out", errors_out)

    assert result.returncode == 1, result.stderr
    job_id = job_id_of(result)
    assert field(result.stdout, "status") == "FAILED"
    assert field(result.stdout, "items") == "5 total, 3 processed, 2 failed"
    assert field(result.stdout, "errors") == f"{errors_out} (2 items)"
    failed = [json.loads(line) for line in errors_out.read_text().splitlines()]
    assert [f["index"] for f in failed] == [1, 3]
    assert [f["identifier"] for f in failed] == ["NO-TITLE", "EXTRA"]
    assert [f["errors"][0]["code"] for f in failed] == ["missing_field", "unknown_field"]

    failed_table = cli("job", job_id, "--failed")
    assert [row.split()[:2] for row in data_rows(failed_table.stdout)] == [["1", "NO-TITLE"], ["3", "EXTRA"]]

    jobs = cli("jobs", "--type", "BULK_IMPORT")
    assert jobs.returncode == 0 and job_id in jobs.stdout and "FAILED" in jobs.stdout
    assert [j["id"] for j in json.loads(cli("jobs", "--status", "failed", "--json").stdout)] == [job_id]
    assert json.loads(cli("jobs", "--status", "COMPLETED", "--json").stdout) == []

    issues = cli("issues", "--job-id", job_id)
    assert issues.returncode == 0
    rows = data_rows(issues.stdout)
    assert len(rows) == 2 and all(row.split()[1:3] == ["ERROR", "IMPORT_REJECTED"] for row in rows)
    rejected = json.loads(cli("issues", "--issue-type", "IMPORT_REJECTED", "--json").stdout)
    assert sorted(i["item_index"] for i in rejected) == [1, 3] and {i["job_id"] for i in rejected} == {job_id}
    warnings = json.loads(cli("issues", "--severity", "warning", "--json").stdout)
    assert warnings == [] or {i["severity"] for i in warnings} == {"WARNING"}

    audit = cli("audit")
    assert audit.returncode == 0
    actions = {row.split()[2] for row in data_rows(audit.stdout) if job_id in row}
    assert {"bulk_job.created", "bulk_job.failed"} <= actions


def test_a_failed_job_fails_a_pipefail_pipeline_into_head(tenant: Tenant, tmp_path: Path) -> None:
    """`set -o pipefail; synqctl import … --wait | head -1`: head takes the id and goes; synqctl waits
    on without its stdout, saves the failed items and exits 1, with nothing said about the pipe."""
    source, errors_out = tmp_path / "products.jsonl", tmp_path / "failed.jsonl"
    source.write_text(json.dumps({"title": "Good 0", "sku": "P-0", **GOOD}) + "\n" + json.dumps({"sku": "NO-TITLE"}) + "\n")
    script = 'set -o pipefail; "$0" -m synqctl import "$1" --type BULK_IMPORT --wait --timeout 120 --errors-out "$2" | head -1'
    env = {k: v for k, v in tenant_env(tenant).items() if k != "PYTHONUNBUFFERED"}  # block-buffered, as a user's stdout

    result = subprocess.run(
        ["bash", "-c", script, sys.executable, str(source), str(errors_out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert uuid.UUID(result.stdout.strip())
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr and "BrokenPipe" not in result.stderr
    assert [json.loads(line)["identifier"] for line in errors_out.read_text().splitlines()] == ["NO-TITLE"]


def test_default_errors_file_is_named_after_the_job(cli: Cli, tmp_path: Path) -> None:
    """Run from another directory: nothing to install, and JOBID.errors.jsonl lands in the working directory."""
    source = tmp_path / "delete.json"
    source.write_text(json.dumps([str(uuid.uuid4()), str(uuid.uuid4())]))

    result = cli("import", source.name, "--type", "BULK_DELETE", "--wait", "--timeout", 120, cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    job_id = job_id_of(result)
    written = tmp_path / f"{job_id}.errors.jsonl"
    assert field(result.stdout, "errors") == f"{written.name} (2 items)"
    failed = [json.loads(line) for line in written.read_text().splitlines()]
    assert [f["index"] for f in failed] == [0, 1] and {f["errors"][0]["code"] for f in failed} == {"product_not_found"}


def test_the_repository_s_request_bodies_and_a_vendor_envelope_import_as_they_are(tenant: Tenant, cli: Cli) -> None:
    body = cli("import", DATA / "bulk_import.json", "--type", "BULK_IMPORT", "--wait", "--timeout", 120)
    assert body.returncode == 0, body.stderr
    sent = json.loads((DATA / "bulk_import.json").read_text())["payload"]
    assert json.loads(tenant.get(f"{JOBS}/{job_id_of(body)}").json()["payload_json"]) == sent
    vocabulary = {"name": "default", "attributes": [{"name": "Product Name", "maps_to": "title"}, {"name": "GTIN", "maps_to": "gtin"}]}
    assert tenant.post("/api/v1/pim/vocabularies", json=vocabulary).status_code == 201
    envelope = cli("import", DATA / "syndigo_seed_request.json", "--type", "BULK_IMPORT")
    assert envelope.returncode == 0, envelope.stderr
    stored = json.loads(tenant.get(f"{JOBS}/{envelope.stdout.strip()}").json()["payload_json"])
    assert stored == json.loads((DATA / "syndigo_seed_request.json").read_text())


def test_import_without_wait_prints_only_the_job_id(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"title": "Solo", **GOOD}) + "\n")
    result = cli("import", source, "--type", "BULK_IMPORT")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [job_id_of(result)]
    assert tenant.wait_job(job_id_of(result))["status"] == "COMPLETED"


def test_jobs_lists_every_type_newest_first_and_pages_to_the_limit(tenant: Tenant, cli: Cli) -> None:
    deletes = [tenant.create_job("BULK_DELETE", [str(uuid.uuid4())])["id"] for _ in range(3)]
    imported = tenant.create_job("BULK_IMPORT", [{"title": "Latest"}])["id"]

    every = json.loads(cli("jobs", "--json").stdout)
    assert [j["id"] for j in every] == [imported, *deletes[::-1]]
    table = cli("jobs")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "TYPE", "STATUS"]
    assert [row.split()[0] for row in data_rows(table.stdout)] == [imported, *deletes[::-1]]

    # --page-size 1 makes every row its own request, so this follows X-Next-Cursor.
    two = json.loads(cli("jobs", "--type", "BULK_DELETE", "--limit", 2, "--page-size", 1, "--json").stdout)
    assert [j["id"] for j in two] == deletes[::-1][:2]
    everything = json.loads(cli("jobs", "--type", "BULK_DELETE", "--limit", 0, "--page-size", 1, "--json").stdout)
    assert [j["id"] for j in everything] == deletes[::-1]


def test_empty_lists_print_a_header_and_say_so(cli: Cli) -> None:
    result = cli("audit")
    assert result.returncode == 0
    assert result.stdout.split() == ["CREATED", "ACTOR", "ACTION", "ENTITY_TYPE", "ENTITY_ID", "DETAILS"]
    assert "(no audit events)" in result.stderr
    assert json.loads(cli("products", "--json").stdout) == []


def test_missing_configuration_exits_2(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "p.json"
    source.write_text(json.dumps([{"title": "Never sent"}]))
    result = cli("import", source, "--type", "BULK_IMPORT", env={"SYNQ_TOKEN": None, "SYNQ_TENANT_ID": None})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: missing configuration: SYNQ_TOKEN, SYNQ_TENANT_ID.")
    assert "Traceback" not in result.stderr
    assert cli("jobs", env={"SYNQ_API_URL": "not a url"}).returncode == 2
    assert no_jobs_and_no_audit(tenant)


@pytest.mark.parametrize(
    ("name", "content", "job_type", "message"),
    [
        ("bad.jsonl", '{"title": "a"}\n\n{"title": "b",}\n{"title": "c"}\n', "BULK_IMPORT", "bad.jsonl:3: not valid JSON"),
        ("nan.jsonl", '{"title": "a"}\n{"title": "b", "weight": NaN}\n', "BULK_IMPORT", "nan.jsonl:2: not valid JSON: NaN"),
        ("dup.jsonl", '{"title": "a", "title": "b"}\n', "BULK_IMPORT", "dup.jsonl:1: not valid JSON: duplicate key 'title'"),
        ("kind.jsonl", '"8d9f…"\n{"id": "x"}\n', "BULK_DELETE", "kind.jsonl:2: each BULK_DELETE item must be a product id string"),
        ("obj.json", '{"title": "not in an array"}', "BULK_IMPORT", "obj.json: must hold a JSON array"),
        ("body.json", '{"job_type": "BULK_DELETE", "payload": ["x"]}', "BULK_IMPORT", "body.json is a request body for BULK_DELETE, not BULK_IMPORT"),
        (
            "env.json",
            '{"ProductImportData": {"ProductsToImport": [1]}}',
            "BULK_IMPORT",
            "env.json: item 0: each BULK_IMPORT item must be a JSON object",
        ),
        ("empty.jsonl", "\n\n", "BULK_IMPORT", "empty.jsonl holds no items"),
    ],
)
def test_bad_input_file_exits_2_and_creates_nothing(
    tenant: Tenant, cli: Cli, tmp_path: Path, name: str, content: str, job_type: str, message: str
) -> None:
    source = tmp_path / name
    source.write_text(content)
    result = cli("import", source, "--type", job_type, "--wait")
    assert result.returncode == 2
    assert result.stdout == ""
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert no_jobs_and_no_audit(tenant)


def test_http_errors_show_the_api_code_and_never_the_token(tenant: Tenant, cli: Cli) -> None:
    missing = cli("job", str(uuid.uuid4()))
    assert missing.returncode == 2
    assert missing.stderr == "error: not_found: No bulk job with that id in this tenant.\n"

    wrong_token = "synq_" + uuid.uuid4().hex
    unauthorized = cli("jobs", env={"SYNQ_TOKEN": wrong_token})
    assert unauthorized.returncode == 2 and unauthorized.stderr.startswith("error: unauthorized: ")
    assert wrong_token not in unauthorized.stdout + unauthorized.stderr

    other_tenant = cli("audit", env={"SYNQ_TENANT_ID": str(uuid.uuid4())})
    assert other_tenant.returncode == 2 and other_tenant.stderr.startswith("error: forbidden: ")
    assert tenant.token not in other_tenant.stdout + other_tenant.stderr

    # A flag overrides the environment.
    assert cli("--token", wrong_token, "audit").stderr.startswith("error: unauthorized: ")


def test_export_waits_and_reports_counts(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    if tenant.post("/api/v1/pim/export").status_code == 404:
        pytest.skip("POST /api/v1/pim/export answers 404: the export endpoint is not in this build yet")
    job = tenant.create_job(
        "BULK_IMPORT", [{"title": "Clean", "sku": "OK-1", **GOOD}, {"title": "Bad barcode", "sku": "BAD-1", "gtin": "123", **GOOD}]
    )
    tenant.wait_job(job["id"])
    out = tmp_path / "catalog.jsonl"

    result = cli("export", "--wait", "--timeout", 120, "--out", out)

    assert result.returncode == 0, result.stderr
    export_id = job_id_of(result)
    assert field(result.stdout, "status") == "COMPLETED"
    assert field(result.stdout, "object").endswith(f"{export_id}.jsonl")
    assert field(result.stdout, "products") == "1" and field(result.stdout, "excluded") == "1"
    assert [json.loads(line)["sku"] for line in out.read_text().splitlines()] == ["OK-1"]
    record = tenant.get(f"/api/v1/pim/exports/{export_id}").json()
    assert record["status"] == "COMPLETED" and record["product_count"] == 1

    queued = cli("export")
    assert queued.returncode == 0 and queued.stdout.splitlines() == [job_id_of(queued)]


def test_a_job_cancelled_while_import_waits_ends_the_wait_with_exit_1(tenant: Tenant, tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    source.write_text("".join(json.dumps({"title": f"Big {i}", "sku": f"BIG-{i}"}) + "\n" for i in range(5000)))
    argv = [sys.executable, "-m", "synqctl", "import", str(source), "--type", "BULK_IMPORT", "--wait", "--timeout", "120"]
    environ = tenant_env(tenant) | {"PYTHONPATH": str(ROOT)}
    with subprocess.Popen(argv, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as waiting:
        assert waiting.stdout is not None
        job_id = waiting.stdout.readline().strip()  # 5,000 items: far from done when the cancel arrives
        assert tenant.post(f"{JOBS}/{job_id}/cancel").json()["status"] == "CANCELLED"
        out, err = waiting.communicate(timeout=180)

    assert waiting.returncode == 1, err
    assert field(out, "status") == "CANCELLED"


def test_cancel_stops_a_running_job_and_shows_it(tenant: Tenant, cli: Cli) -> None:
    job = tenant.create_job("BULK_IMPORT", [{"title": f"Big {i}", "sku": f"BIG-{i}"} for i in range(5000)])

    result = cli("cancel", job["id"])

    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "id") == job["id"] and field(result.stdout, "status") == "CANCELLED"
    assert tenant.get(f"{JOBS}/{job['id']}").json()["status"] == "CANCELLED"
    again = cli("cancel", job["id"])
    assert again.returncode == 2 and again.stderr.startswith("error: job_not_active: The job is CANCELLED;")


def test_cancel_of_a_finished_or_unknown_job_shows_the_api_error(tenant: Tenant, cli: Cli) -> None:
    job = tenant.create_job("BULK_IMPORT", [{"title": "Done", **GOOD}])
    assert tenant.wait_job(job["id"])["status"] == "COMPLETED"

    finished = cli("cancel", job["id"])

    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr == "error: job_not_active: The job is COMPLETED; only PENDING or PROCESSING jobs can be cancelled.\n"
    unknown = cli("cancel", str(uuid.uuid4()))
    assert unknown.returncode == 2 and unknown.stderr == "error: not_found: No bulk job with that id in this tenant.\n"


def test_retry_with_corrections_waits_completes_and_is_linked_to_the_job_it_retries(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    """The recovery loop: import --wait exits 1, the failed items are fixed by their index, retry --wait exits 0."""
    job_id, errors_out = failed_import(cli, tmp_path)
    fixes = {1: {"title": "Has a title now", "sku": "NO-TITLE", **GOOD}, 3: {"title": "Extra", "sku": "EXTRA", **GOOD}}
    corrections = tmp_path / "corrections.json"
    failed = [json.loads(line)["index"] for line in errors_out.read_text().splitlines()]
    assert failed == [1, 3]
    corrections.write_text(json.dumps({str(index): fixes[index] for index in failed}))

    result = cli("retry", job_id, "--corrections", corrections, "--wait", "--timeout", 120, cwd=tmp_path)  # a failure's errors file lands here

    assert result.returncode == 0, result.stderr
    retry_id = job_id_of(result)
    assert field(result.stdout, "status") == "COMPLETED"
    assert field(result.stdout, "items") == "2 total, 2 processed, 0 failed"
    assert "COMPLETED [" + "#" * 30 + "] 100% 2/2" in result.stderr
    assert tenant.get(f"{JOBS}/{retry_id}").json()["retry_of"] == job_id
    assert field(cli("job", retry_id).stdout, "retry_of") == job_id
    assert field(cli("job", job_id).stdout, "retried_by") == retry_id
    assert sorted(p["sku"] for p in json.loads(cli("products", "--json").stdout)) == ["EXTRA", "G-0", "G-2", "NO-TITLE"]
    # Both POSTs carried an Idempotency-Key (so a resend after a 503 cannot create a second job): the API kept their answers.
    kept = [fields for _, fields in rows(coll(Scope(tenant.org_id, tenant.tenant_id), "idempotency_keys").limit(10))]
    assert sorted((k["path"], k["status"]) for k in kept) == [(JOBS, 200), (f"{JOBS}/{job_id}/retry", 200)]
    assert [json.loads(k["body_json"])["id"] for k in kept if k["path"].endswith("/retry")] == [retry_id]


def test_job_writes_the_failed_items_as_a_corrections_file_a_retry_takes_once_fixed(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    """The recovery loop without the source file: the API gives the failed items back as submitted."""
    job_id, _ = failed_import(cli, tmp_path)
    corrections = tmp_path / "fix.json"

    shown = cli("job", job_id, "--failed", "--corrections-out", corrections)

    assert shown.returncode == 0, shown.stderr
    assert [line.split()[0] for line in data_rows(shown.stdout)] == ["1", "3"]  # the table as without the option
    assert f"corrections: {corrections} (2 items)" in shown.stderr
    items = json.loads(corrections.read_text())
    assert items == {"1": {"sku": "NO-TITLE"}, "3": {"title": "Extra", "sku": "EXTRA", "colour": "red"}}
    items["1"] |= {"title": "Has a title now", **GOOD}
    del items["3"]["colour"]
    corrections.write_text(json.dumps(items, indent=2))

    result = cli("retry", job_id, "--corrections", corrections, "--wait", "--timeout", 120, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "items") == "2 total, 2 processed, 0 failed"
    none = cli("job", job_id_of(result), "--corrections-out", tmp_path / "none.json")
    assert none.returncode == 0 and "no failed items" in none.stderr and not (tmp_path / "none.json").exists()


def test_a_retry_that_fails_again_exits_1_and_saves_its_own_failed_items(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    job_id, _ = failed_import(cli, tmp_path)
    corrections = tmp_path / "corrections.json"
    corrections.write_text(json.dumps({"corrections": {"3": {"title": "Extra", "sku": "EXTRA", **GOOD}}}))  # item 1 stays as it was

    result = cli("retry", job_id, "--corrections", corrections, "--wait", "--timeout", 120, cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    retry_id = job_id_of(result)
    assert field(result.stdout, "status") == "FAILED"
    assert field(result.stdout, "items") == "2 total, 1 processed, 1 failed"
    assert field(result.stdout, "errors") == f"{retry_id}.errors.jsonl (1 item)"
    [failed] = [json.loads(line) for line in (tmp_path / f"{retry_id}.errors.jsonl").read_text().splitlines()]
    assert (failed["index"], failed["retry_of_index"], failed["identifier"]) == (0, 1, "NO-TITLE")

    plain = cli("retry", retry_id)  # no corrections: the failed item runs as it was
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [job_id_of(plain)]
    assert json.loads(tenant.wait_job(job_id_of(plain))["payload_json"]) == [{"sku": "NO-TITLE"}]


def test_retry_errors_show_the_api_message_and_exit_2(tenant: Tenant, cli: Cli, tmp_path: Path) -> None:
    job_id, _ = failed_import(cli, tmp_path)
    not_failed = tmp_path / "not-failed.json"
    not_failed.write_text(json.dumps({"0": {"title": "Good 0 again"}}))

    wrong_index = cli("retry", job_id, "--corrections", not_failed)
    assert wrong_index.returncode == 2 and wrong_index.stdout == ""
    assert wrong_index.stderr == "error: invalid_correction: corrections['0'] names no item the retry runs (failed, or not run).\n"

    bad_file = tmp_path / "bad.json"
    bad_file.write_text('{"1": {"title": "a"}, "1": {"title": "b"}}')
    refused = cli("retry", job_id, "--corrections", bad_file, "--wait")
    assert refused.returncode == 2 and refused.stderr.startswith(f"error: {bad_file}: not valid JSON: duplicate key '1'")
    assert cli("retry", job_id, "--errors-out", tmp_path / "e.jsonl").stderr == "error: --errors-out only applies with --wait.\n"
    assert tenant.get(f"{JOBS}/{job_id}").json()["retried_by"] is None  # none of these sent a retry

    first = cli("retry", job_id)
    assert first.returncode == 0, first.stderr
    again = cli("retry", job_id)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == f"error: already_retried: The job was already retried by {job_id_of(first)}.\n"

    done = tenant.create_job("BULK_IMPORT", [{"title": "Fine", **GOOD}])
    assert tenant.wait_job(done["id"])["status"] == "COMPLETED"
    not_retryable = cli("retry", done["id"])
    assert not_retryable.returncode == 2
    assert not_retryable.stderr == "error: job_not_failed: The job is COMPLETED; only FAILED or CANCELLED jobs can be retried.\n"
    unknown = cli("retry", str(uuid.uuid4()))
    assert unknown.returncode == 2 and unknown.stderr == "error: not_found: No bulk job with that id in this tenant.\n"


def test_resolve_closes_a_failure_issue_nothing_else_will(tenant: Tenant, cli: Cli) -> None:
    """A delete of a product that was never there: no later item can succeed with that id."""
    job = tenant.create_job("BULK_DELETE", [str(uuid.uuid4())])
    assert tenant.wait_job(job["id"])["status"] == "FAILED"
    [row] = data_rows(cli("issues", "--job-id", job["id"]).stdout)
    issue_id = row.split()[0]

    result = cli("resolve", issue_id)

    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "id") == issue_id and field(result.stdout, "resolved") == "yes"
    assert (field(result.stdout, "issue_type"), field(result.stdout, "job_id")) == ("PRODUCT_NOT_FOUND", job["id"])
    assert json.loads(cli("issues", "--job-id", job["id"], "--json").stdout) == []
    assert [e["entity_id"] for e in tenant.get("/api/v1/pim/audit").json() if e["action"] == "validation_issue.resolved"] == [issue_id]
    again = cli("resolve", issue_id, "--json")  # the API answers a resolved issue as it is
    assert again.returncode == 0 and json.loads(again.stdout)["resolved"] is True
    shown = cli("issue", issue_id)  # off the list, still shown by id
    assert shown.returncode == 0, shown.stderr
    assert (field(shown.stdout, "id"), field(shown.stdout, "resolved"), field(shown.stdout, "job_id")) == (issue_id, "yes", job["id"])


def test_resolve_of_a_data_finding_or_an_unknown_issue_shows_the_api_error(tenant: Tenant, cli: Cli) -> None:
    job = tenant.create_job("BULK_IMPORT", [{"title": "No description yet", "sku": "ND-1"}])
    assert tenant.wait_job(job["id"])["status"] == "COMPLETED"
    [finding] = json.loads(cli("issues", "--issue-type", "MISSING_DESCRIPTION", "--json").stdout)

    refused = cli("resolve", finding["id"])

    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == "error: issue_not_resolvable: This issue is about the product's data: it resolves itself once the product is fixed.\n"
    unknown = cli("resolve", str(uuid.uuid4()))
    assert unknown.returncode == 2 and unknown.stderr == "error: not_found: No validation issue with that id in this tenant.\n"
    open_one = json.loads(cli("issue", finding["id"], "--json").stdout)
    assert open_one == finding  # the list's shape
    missing = cli("issue", str(uuid.uuid4()))
    assert missing.returncode == 2 and missing.stderr == "error: not_found: No validation issue with that id in this tenant.\n"


NOTIFY = "/api/v1/pim/notification-settings"


def test_notify_set_and_show_the_channel_and_events(tenant: Tenant, cli: Cli) -> None:
    fresh = cli("notify", "show")
    assert fresh.returncode == 0, fresh.stderr
    assert field(fresh.stdout, "channel") == "-" and field(fresh.stdout, "events") == "export.completed,export.failed"
    assert field(fresh.stdout, "has_signing_secret") == "no"

    result = cli("notify", "set", "--email", "ops@example.com", "--events", "bulk_job.failed, bulk_job.completed")

    assert result.returncode == 0, result.stderr
    assert field(result.stdout, "channel") == "email" and field(result.stdout, "email") == "ops@example.com"
    assert field(result.stdout, "events") == "bulk_job.completed,bulk_job.failed"  # the API's order
    assert "\nsigning_secret:" not in result.stdout
    shown = json.loads(cli("notify", "show", "--json").stdout)
    assert (shown["channel"], shown["email"], shown["events"]) == ("email", "ops@example.com", ["bulk_job.completed", "bulk_job.failed"])
    assert tenant.get(NOTIFY).json()["events"] == ["bulk_job.completed", "bulk_job.failed"]

    unknown = cli("notify", "set", "--email", "ops@example.com", "--events", "bulk_job.completed,job.done")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: invalid_value: Field 'events.1': ") and "'bulk_job.cancelled'" in unknown.stderr
    stray_comma = cli("notify", "set", "--email", "ops@example.com", "--events", "bulk_job.completed,")
    assert stray_comma.returncode == 2 and stray_comma.stderr.startswith("error: --events takes event names separated by commas")
    assert tenant.get(NOTIFY).json()["events"] == ["bulk_job.completed", "bulk_job.failed"]  # neither was stored

    # A PUT replaces the settings: without --events, the API's default.
    reset = cli("notify", "set", "--email", "other@example.com")
    assert reset.returncode == 0 and field(reset.stdout, "events") == "export.completed,export.failed"


def test_notify_prints_a_new_webhook_s_secret_once_and_rotates_it(tenant: Tenant, cli: Cli) -> None:
    url = "http://127.0.0.1:9/hooks/synq"  # the local stack allows a private http URL; nothing is sent to it

    result = cli("notify", "set", "--webhook", url)

    assert result.returncode == 0, result.stderr
    secret = field(result.stdout, "signing_secret")
    assert len(secret) > 20 and result.stdout.count(secret) == 1
    assert secret not in result.stderr and "shown this once" in result.stderr
    assert field(result.stdout, "webhook_url") == url and field(result.stdout, "has_signing_secret") == "yes"
    shown = cli("notify", "show")
    assert field(shown.stdout, "has_signing_secret") == "yes" and secret not in shown.stdout + shown.stderr
    same_url = cli("notify", "set", "--webhook", url)  # not a new URL: no new secret, none printed
    assert same_url.returncode == 0 and "\nsigning_secret:" not in same_url.stdout and same_url.stderr == ""

    rotated = cli("notify", "rotate-secret")

    assert rotated.returncode == 0, rotated.stderr
    new_secret = field(rotated.stdout, "signing_secret")
    assert new_secret != secret and rotated.stderr == ""
    expires = datetime.fromisoformat(field(rotated.stdout, "previous_secret_expires_at"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
    assert json.loads(cli("notify", "rotate-secret", "--json").stdout)["signing_secret"] not in (secret, new_secret)

    # Email needs no secret: the webhook's go with it, and the same webhook set again gets a new one.
    emailed = cli("notify", "set", "--email", "ops@example.com")
    assert emailed.returncode == 0 and field(emailed.stdout, "has_signing_secret") == "no"
    assert cli("notify", "rotate-secret").stderr.startswith("error: no_webhook:")
    again = cli("notify", "set", "--webhook", url)
    assert again.returncode == 0 and field(again.stdout, "signing_secret") not in (secret, new_secret)


def test_notify_settings_need_an_admin_and_rotation_a_webhook(tenant: Tenant, cli: Cli, make_tenant: Callable[..., Tenant]) -> None:
    editor = make_tenant(role="editor")
    as_editor = {"SYNQ_TOKEN": editor.token, "SYNQ_TENANT_ID": editor.tenant_id, "SYNQ_ORG_ID": editor.org_id}
    for argv in (["show"], ["set", "--email", "ops@example.com"], ["rotate-secret"]):
        refused = cli("notify", *argv, env=as_editor)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr == "error: forbidden: This action needs the admin role; the token has editor.\n"

    no_webhook = cli("notify", "rotate-secret")
    assert no_webhook.returncode == 2
    assert no_webhook.stderr == "error: no_webhook: No webhook is configured; set one with PUT /notification-settings.\n"


def test_notify_lists_a_job_s_end_newest_first_and_redelivers_it(tenant: Tenant, cli: Cli, stack: Any) -> None:
    address = f"jobs-{uuid.uuid4().hex[:8]}@example.com"
    assert cli("notify", "set", "--email", address, "--events", "bulk_job.completed").returncode == 0
    empty = cli("notify", "deliveries")
    assert empty.returncode == 0 and data_rows(empty.stdout) == [] and "(no notification deliveries)" in empty.stderr
    first = tenant.create_job("BULK_IMPORT", [{"title": "First", "sku": "NT-1", **GOOD}])
    assert tenant.wait_job(first["id"])["status"] == "COMPLETED"
    second = tenant.create_job("BULK_IMPORT", [{"title": "Second", "sku": "NT-2", **GOOD}])
    assert tenant.wait_job(second["id"])["status"] == "COMPLETED"

    listed = cli("notify", "deliveries")

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:6] == ["ID", "TYPE", "EXPORT_OR_JOB_ID", "ATTEMPTS", "DELIVERED_AT", "LAST_ERROR"]
    rows = [row.split() for row in data_rows(listed.stdout)]
    assert [(r[1], r[2]) for r in rows] == [("bulk_job.completed", second["id"]), ("bulk_job.completed", first["id"])]
    paged = json.loads(cli("notify", "deliveries", "--page-size", 1, "--json").stdout)  # follows X-Next-Cursor
    assert [d["job_id"] for d in paged] == [second["id"], first["id"]]
    assert [d["job_id"] for d in json.loads(cli("notify", "deliveries", "--limit", 1, "--json").stdout)] == [second["id"]]

    def mails() -> list[Path]:
        return [p for p in stack.mail_dir.glob("*.eml") if f"To: {address}" in p.read_text(errors="replace")]

    until("the first email", lambda: len(mails()) == 2)
    redelivered = cli("notify", "redeliver", rows[1][0])

    assert redelivered.returncode == 0, redelivered.stderr
    assert field(redelivered.stdout, "id") == rows[1][0] and field(redelivered.stdout, "job_id") == first["id"]
    assert field(redelivered.stdout, "type") == "bulk_job.completed" and field(redelivered.stdout, "delivered_at") == "-"
    until("the email sent again", lambda: len(mails()) == 3)
    unknown = cli("notify", "redeliver", str(uuid.uuid4()))
    assert unknown.returncode == 2 and unknown.stderr == "error: not_found: No notification delivery with that id in this tenant.\n"
