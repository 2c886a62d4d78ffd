"""The deploy plan (`infra/deploy.sh --dry-run`) checked against the code, offline.

* every function target of main.py is deployed exactly once, with the trigger the local stack wires;
* every topic the code uses is created, with dead-lettering for the triggered ones;
* each function's service account may publish to exactly the topics, enqueue tasks and read exactly
  the secrets its code does, found by following the calls from main.py's targets in the source;
* every Firestore query in common/ has the composite index it needs in infra/firestore.indexes.json,
  found by reading the query chains (`.where(` / `.order_by(` / `collection_group(`) in the source;
* the plan is deterministic, prints without calling gcloud, and a second run against a fake gcloud
  that remembers what exists creates nothing.
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import itertools
import json
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings
from infra import deploy, stack, topology

ROOT = Path(__file__).resolve().parents[2]
PROJECT, REGION = "synq-test-project", "europe-west1"
ARGS = [PROJECT, REGION, "--dry-run"]
API_URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/api"  # the api function's URL, the default public one


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert deploy.main([*ARGS, *args]) == 0
    return capsys.readouterr().out.splitlines()


def commands(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("#")]


def deploy_lines(lines: list[str]) -> dict[str, list[str]]:
    """`gcloud functions deploy NAME ...` lines, parsed into words, by function name."""
    found: dict[str, list[str]] = {}
    for line in commands(lines):
        if line.startswith("gcloud functions deploy "):
            words = shlex.split(line)
            assert words[3] not in found, f"{words[3]} is deployed twice"
            found[words[3]] = words
    return found


def env_of(words: list[str]) -> dict[str, str]:
    """--set-env-vars, including gcloud's `^DELIM^K=V...` form for values holding commas."""
    value = flag(words, "--set-env-vars") or ""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1], value[3:]
    return dict(pair.split("=", 1) for pair in value.split(delimiter))


def flag(words: list[str], name: str) -> str | None:
    values = [w.split("=", 1)[1] for w in words if w.startswith(f"{name}=")]
    assert len(values) <= 1, f"{name} given twice"
    return values[0] if values else None


@pytest.fixture(scope="module")
def plan_lines() -> list[str]:
    cfg, _ = deploy.parse_args(ARGS)
    return deploy.build_plan(cfg)


# -- functions ---------------------------------------------------------------------------------------


def test_every_main_target_is_deployed_once_with_its_trigger(plan_lines: list[str]) -> None:
    main = importlib.import_module("main")
    targets = list(main.__all__)
    deployed = deploy_lines(plan_lines)
    assert sorted(deployed) == sorted(targets)
    for name, words in deployed.items():
        assert {"--gen2", "--source=.", f"--entry-point={name}", "--runtime=python311"} <= set(words), name
        assert flag(words, "--region") == REGION
        assert flag(words, "--memory") and flag(words, "--timeout") and flag(words, "--max-instances"), name
        assert flag(words, "--service-account") == f"{deploy.account_id(name)}@{PROJECT}.iam.gserviceaccount.com"
        env = env_of(words)
        assert env["SYNQ_PROJECT_ID"] == PROJECT and env["SYNQ_BUCKET"] == f"{PROJECT}-synq" and env["SYNQ_REGION"] == REGION
        assert env["MALLOC_ARENA_MAX"] == stack.PROCESS_ENV["MALLOC_ARENA_MAX"] == "2", name
        if name in stack.HTTP_FUNCTIONS:
            assert "--trigger-http" in words and flag(words, "--trigger-topic") is None, name
            assert "--retry" not in words
        else:
            assert name in stack.EVENT_FUNCTIONS, f"{name} is in neither HTTP_FUNCTIONS nor EVENT_FUNCTIONS"
            assert flag(words, "--trigger-topic") == stack.TOPICS[stack.EVENT_FUNCTIONS[name]], name
            assert "--retry" in words and "--trigger-http" not in words, name
            assert int(flag(words, "--timeout").rstrip("s")) <= deploy.EVENT_TIMEOUT_MAX_S  # type: ignore[union-attr]
    # Each function runs as its own identity.
    accounts = [flag(words, "--service-account") for words in deployed.values()]
    assert len(set(accounts)) == len(accounts)


def test_trigger_kinds_match_the_functions_framework_decorators() -> None:
    from functions_framework import _function_registry

    main = importlib.import_module("main")
    for name in main.__all__:
        expected = "http" if name in stack.HTTP_FUNCTIONS else "cloudevent"
        assert _function_registry.REGISTRY_MAP[getattr(main, name).__name__] == expected, name


def test_only_the_api_is_public(plan_lines: list[str]) -> None:
    for name, words in deploy_lines(plan_lines).items():
        public = "--allow-unauthenticated" in words
        assert public == (name == "api"), name


def test_the_api_serves_several_requests_per_instance_on_a_whole_cpu(plan_lines: list[str]) -> None:
    """A 2nd gen function serves one request per instance unless told otherwise, and a concurrency
    above 1 needs at least 1 vCPU; the api's requests mostly wait on Firestore, so it takes 8."""
    words = deploy_lines(plan_lines)["api"]
    assert flag(words, "--concurrency") == "8"
    assert float(flag(words, "--cpu") or 0) >= 1
    # Eight 31 MB POSTs at once, at ~150 MiB each over one POST's 339-366 MiB (docs/performance.md).
    assert flag(words, "--memory") == "2Gi"
    assert env_of(words)["THREADS"] == "8"


def test_every_function_is_deployed_with_a_concurrency_its_cpu_and_threads_allow(plan_lines: list[str]) -> None:
    for name, words in deploy_lines(plan_lines).items():
        concurrency = int(flag(words, "--concurrency") or 0)  # always given: a deploy resets a hand-made change
        assert 1 <= concurrency <= deploy.MAX_CONCURRENCY, name
        if concurrency > 1:
            assert float(flag(words, "--cpu") or 0) >= 1, name
            assert env_of(words)["THREADS"] == str(concurrency), name
        else:
            assert "THREADS" not in env_of(words), name
    # The queue never sends deliver_notification more calls than its instances take at once.
    (line,) = [c for c in commands(plan_lines) if "gcloud tasks queues create notifications" in c]
    deliver = deploy_lines(plan_lines)[deploy.TASKS_TARGET]
    at_once = int(flag(deliver, "--max-instances") or 0) * int(flag(deliver, "--concurrency") or 0)
    assert flag(shlex.split(line.split("; else ", 1)[1]), "--max-concurrent-dispatches") == str(at_once)


@pytest.mark.parametrize(("cpu", "concurrency"), [(None, 2), ("0.583", 8), ("1", deploy.MAX_CONCURRENCY + 1), ("1", 0)])
def test_a_concurrency_the_function_cannot_have_fails_loudly(monkeypatch: pytest.MonkeyPatch, cpu: str | None, concurrency: int) -> None:
    monkeypatch.setitem(deploy.PROFILES, "api", replace(deploy.PROFILES["api"], cpu=cpu, concurrency=concurrency))
    cfg, _ = deploy.parse_args(ARGS)
    with pytest.raises(deploy.DeployError, match="concurrency"):
        deploy.build_plan(cfg)


def test_a_main_target_missing_from_the_stack_maps_fails_loudly(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = topology.main_targets()
    monkeypatch.setattr(topology, "main_targets", lambda: {**real, "purge_everything": "http"})
    assert deploy.main(ARGS) == 2
    out, err = capsys.readouterr()
    assert out == ""  # not one command printed
    assert "purge_everything" in err and "HTTP_FUNCTIONS" in err


def test_settings_must_be_fields_of_the_code_and_not_secrets() -> None:
    assert deploy.parse_args([*ARGS, "--setting", "quality_threshold=70"])[0].settings == (("quality_threshold", "70"),)
    for bad in ("no_such_field=1", "bucket=elsewhere", "quality_threshold", "chunk_lanes=4"):
        with pytest.raises(SystemExit):
            deploy.parse_args([*ARGS, "--setting", bad])


def test_topology_disagreements_are_errors() -> None:
    with pytest.raises(topology.TopologyError, match="registers it as 'http'"):
        topology.functions(targets={"dispatch_job": "http"}, http=[], events={"dispatch_job": "jobs_topic"})
    with pytest.raises(topology.TopologyError, match="does not export it"):
        topology.functions(targets={}, http=["api"], events={})
    with pytest.raises(topology.TopologyError, match="not a topic"):
        topology.functions(targets={"x": "cloudevent"}, http=[], events={"x": "nope_topic"})
    with pytest.raises(topology.TopologyError, match="Settings"):
        topology.topics({"jobs_topic": "some-other-name"})


def test_a_function_without_a_profile_fails_loudly() -> None:
    fns = topology.functions(targets={"purge": "http"}, http=["purge"], events={})
    cfg, _ = deploy.parse_args(ARGS)
    with pytest.raises(deploy.DeployError, match="no Profile"):
        deploy.build_plan(cfg, fns)


# -- topics, queue, bucket, scheduler ----------------------------------------------------------------


def created(lines: list[str], *kind: str) -> set[str]:
    """Names of resources of this kind the plan creates (`gcloud KIND... create NAME`)."""
    pattern = re.compile(r"gcloud " + " ".join(map(re.escape, kind)) + r" create (\S+)")
    return {m.group(1) for line in commands(lines) for m in pattern.finditer(line)}


def test_every_topic_the_code_uses_is_created(plan_lines: list[str]) -> None:
    topics = created(plan_lines, "pubsub", "topics")
    publishes = {Settings.model_fields[f].default for f in Settings.model_fields if f.endswith("_topic")}
    assert set(stack.TOPICS.values()) <= topics
    assert publishes <= topics
    for topic in {stack.TOPICS[key] for key in stack.EVENT_FUNCTIONS.values()}:
        dead = f"{topic}-dead-letter"
        assert dead in topics
        assert dead in created(plan_lines, "pubsub", "subscriptions"), "dead letters need a subscription to be kept"


def test_event_subscriptions_get_backoff_and_dead_letters(plan_lines: list[str]) -> None:
    updates = [line for line in commands(plan_lines) if line.startswith("gcloud pubsub subscriptions update ")]
    deployed = deploy_lines(plan_lines)
    for name, topic_key in stack.EVENT_FUNCTIONS.items():
        (line,) = [u for u in updates if f"functions describe {name} " in u]
        assert "--min-retry-delay=10s" in line and "--max-retry-delay=600s" in line
        assert f"--dead-letter-topic={stack.TOPICS[topic_key]}-dead-letter" in line
        # Pub/Sub must not redeliver an event while the function may still be working on it.
        ack = int(re.search(r"--ack-deadline=(\d+)", line).group(1))  # type: ignore[union-attr]
        timeout = int(flag(deployed[name], "--timeout").rstrip("s"))  # type: ignore[union-attr]
        assert timeout <= ack <= 600, name


def test_notifications_queue_retries_for_a_day_with_exponential_backoff(plan_lines: list[str]) -> None:
    (line,) = [c for c in commands(plan_lines) if "gcloud tasks queues create notifications" in c]
    words = shlex.split(line.split("; else ", 1)[1])
    min_b, max_b = int(flag(words, "--min-backoff")[:-1]), int(flag(words, "--max-backoff")[:-1])  # type: ignore[index]
    doublings, attempts = int(flag(words, "--max-doublings")), int(flag(words, "--max-attempts"))  # type: ignore[arg-type]
    assert int(flag(words, "--max-retry-duration")[:-1]) >= 24 * 3600  # type: ignore[index]
    assert min_b < max_b and doublings >= 1
    # Replay the queue's schedule: the attempts must still be going after 24 h.
    elapsed, backoff = 0, min_b
    for retry in range(attempts - 1):
        elapsed += backoff
        backoff = min(backoff * 2, max_b) if retry < doublings else backoff
    assert elapsed >= 24 * 3600
    assert int(flag(words, "--max-dispatches-per-second")) <= 500  # type: ignore[arg-type]


def lifecycle(lines: list[str]) -> dict[str, int]:
    (line,) = [c for c in commands(lines) if "--lifecycle-file=" in c]
    rules = json.loads(re.search(r"printf %s '([^']*)'", line).group(1))["rule"]  # type: ignore[union-attr]
    return {r["condition"]["matchesPrefix"][0]: r["condition"]["age"] for r in rules if r["action"]["type"] == "Delete"}


def test_bucket_lifecycle_deletes_old_exports_and_payloads(capsys: pytest.CaptureFixture[str], plan_lines: list[str]) -> None:
    assert lifecycle(plan_lines) == {"exports/": 30, "idempotency/": 2}
    assert lifecycle(dry_run(capsys, "--export-days", "10", "--payload-days", "3")) == {"exports/": 10, "idempotency/": 2, "payloads/": 3}


def test_reconcile_is_ticked_every_minute(plan_lines: list[str]) -> None:
    (line,) = [c for c in commands(plan_lines) if "scheduler jobs create pubsub" in c]
    create = shlex.split(line.split("; else ", 1)[1])
    assert flag(create, "--schedule") == "* * * * *"
    assert flag(create, "--topic") == stack.TOPICS["reconcile_topic"]


SMTP_LOGIN = ("--setting", "smtp_username=synq")  # mail through a server that wants a login: the SMTP password is used


def with_export_and_notifications(*args: str) -> list[str]:
    """The plan once main.py also has run_export (topic exports) and deliver_notification (Cloud Tasks)."""
    fns = topology.functions(
        targets={**topology.main_targets(), "run_export": "cloudevent", "deliver_notification": "http"},
        http=[*stack.HTTP_FUNCTIONS, "deliver_notification"],
        events={**stack.EVENT_FUNCTIONS, "run_export": "exports_topic"},
    )
    cfg, _ = deploy.parse_args([*ARGS, *args])
    return deploy.build_plan(cfg, fns)


def test_the_future_export_and_notification_functions_get_their_wiring() -> None:
    cfg, _ = deploy.parse_args(ARGS)
    lines = commands(with_export_and_notifications(*SMTP_LOGIN))
    deployed = deploy_lines(lines)
    assert flag(deployed["run_export"], "--trigger-topic") == "exports"
    deliver = deployed["deliver_notification"]
    assert flag(deliver, "--set-secrets") == "SYNQ_SMTP_PASSWORD=synq-smtp-password:latest"
    assert "--no-allow-unauthenticated" in deliver
    env = env_of(deliver)
    assert env["SYNQ_DELIVER_URL"] == f"https://{REGION}-{PROJECT}.cloudfunctions.net/deliver_notification"
    export_sa = f"serviceAccount:{deploy.account_email(cfg, 'run_export')}"
    tasks_sa = deploy.account_email(cfg, deploy.TASKS_IDENTITY)
    deliver_sa = f"serviceAccount:{deploy.account_email(cfg, 'deliver_notification')}"
    text = "\n".join(lines)
    assert f"tasks queues add-iam-policy-binding notifications --location={REGION} --member={export_sa} --role=roles/cloudtasks.enqueuer" in text
    assert f"iam service-accounts add-iam-policy-binding {tasks_sa} --member={export_sa} --role=roles/iam.serviceAccountUser" in text
    assert f"secrets add-iam-policy-binding synq-smtp-password --member={deliver_sa} --role=roles/secretmanager.secretAccessor" in text
    assert f"functions add-invoker-policy-binding deliver_notification --region={REGION} --member=serviceAccount:{tasks_sa}" in text
    # The SMTP password is never handed to a function that does not send mail.
    assert [name for name, words in deployed.items() if "synq-smtp-password" in (flag(words, "--set-secrets") or "")] == ["deliver_notification"]


# -- permissions and secrets, derived from the code --------------------------------------------------

PUBLISH, ENQUEUE, SIGN_URL = "common.store.queue.publish", "common.store.tasks.enqueue_delivery", "common.store.blobs.signed_url"
TOPIC_FIELDS = {f for f in Settings.model_fields if f.endswith("_topic")}
SECRET_NAME = re.compile(r"password|secret|(signing|private|api)_key|credential")


def secret_fields() -> set[str]:
    """Secret Settings fields: what the deploy treats as secret, and whatever is named like one."""
    return deploy.secret_settings() | {f for f in Settings.model_fields if SECRET_NAME.search(f)}


@dataclass
class Needs:
    """What a function's code does that needs a grant."""

    topics: set[str] = field(default_factory=set)  # Settings fields of the topics it publishes to
    enqueues: bool = False
    secrets: set[str] = field(default_factory=set)  # secret Settings fields it reads
    signs_urls: bool = False  # signs Cloud Storage URLs (IAM signBlob as itself, in the cloud)


@functools.cache
def source_functions() -> tuple[dict[str, ast.FunctionDef | ast.AsyncFunctionDef], dict[str, dict[str, str]]]:
    """Every module-level function of main.py, common/ and functions/ by qualified name (nested
    functions are part of theirs), and each module's imported names (local name -> qualified name)."""
    defs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    imports: dict[str, dict[str, str]] = {}
    for path in sorted([ROOT / "main.py", *(ROOT / "common").rglob("*.py"), *(ROOT / "functions").rglob("*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        names = imports.setdefault(module, {})
        for node in ast.walk(tree):  # late imports inside functions too
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and node.module, f"{path}: relative import"
                names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                names.update({a.asname: a.name for a in node.names if a.asname})
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defs[f"{module}.{node.name}"] = node
    return defs, imports


def references(qualname: str) -> set[str]:
    """The repository functions a function calls or passes on (a superset of what it may run)."""
    defs, imports = source_functions()
    module = qualname.rsplit(".", 1)[0]
    names = imports[module]
    found = set()
    for node in ast.walk(defs[qualname]):
        if isinstance(node, ast.Name):
            found.add(f"{module}.{node.id}" if f"{module}.{node.id}" in defs else names.get(node.id, ""))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names:
            found.add(f"{names[node.value.id]}.{node.attr}")
    if any(ref.endswith(".router") for ref in found):
        # The router dispatches to every function registered with @router.route, wherever it is.
        found |= {name for name, fn in defs.items() if any(_is_route(d) for d in fn.decorator_list)}
    return {ref for ref in found if ref in defs}


def _is_route(decorator: ast.expr) -> bool:
    return isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) and decorator.func.attr == "route"


def settings_reads(fn: ast.AST) -> set[str]:
    """Settings fields a function reads (`settings.x`, `get_settings().x`), through Settings' own methods."""
    methods = {m.name: m for m in ast.walk(ast.parse((ROOT / "common" / "config.py").read_text())) if isinstance(m, ast.FunctionDef)}
    attrs = {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
    via = {n.attr for m in attrs & (methods.keys() - {"get_settings"}) for n in ast.walk(methods[m]) if isinstance(n, ast.Attribute)}
    return (attrs | via) & set(Settings.model_fields)


def code_needs(target: str) -> Needs:
    """What main.py's `target` does, following its calls through the source."""
    defs, imports = source_functions()
    start = imports["main"][target]
    seen, todo, needs = {start}, [start], Needs()
    while todo:
        name = todo.pop()
        reads, refs = settings_reads(defs[name]), references(name)
        if PUBLISH in refs:
            topics = reads & TOPIC_FIELDS
            assert topics, f"{name} publishes to a topic this test cannot name"
            needs.topics |= topics
        needs.enqueues |= ENQUEUE in refs
        needs.signs_urls |= SIGN_URL in refs
        # The local stack's storage signing key never reaches a deployment (the deploy refuses it).
        needs.secrets |= reads & (secret_fields() - set(deploy.LOCAL_ONLY_SETTINGS))
        todo += sorted(refs - seen)
        seen |= refs
    return needs


def planned_needs(lines: list[str], cfg: deploy.Config, name: str) -> Needs:
    """What the plan grants `name`'s service account."""
    member = f"--member=serviceAccount:{deploy.account_email(cfg, name)}"
    topics = {v: k for k, v in topology.topics().items()}
    needs = Needs()
    tasks_sa = deploy.account_email(cfg, deploy.TASKS_IDENTITY)
    queue = act_as = False
    own = deploy.account_email(cfg, name)
    for words in (shlex.split(line) for line in commands(lines) if member in line.split()):
        role = flag(words, "--role")
        if words[1:4] == ["iam", "service-accounts", "add-iam-policy-binding"] and role == "roles/iam.serviceAccountTokenCreator":
            assert words[4] == own, f"{name} may sign as {words[4]}, not only as itself"
            needs.signs_urls = True
        if words[1:4] == ["pubsub", "topics", "add-iam-policy-binding"] and role == "roles/pubsub.publisher":
            needs.topics.add(topics[words[4]])
        queue |= words[1:4] == ["tasks", "queues", "add-iam-policy-binding"] and role == "roles/cloudtasks.enqueuer"
        act_as |= (
            words[1:4] == ["iam", "service-accounts", "add-iam-policy-binding"] and words[4] == tasks_sa and role == "roles/iam.serviceAccountUser"
        )
        if words[1:3] == ["secrets", "add-iam-policy-binding"] and role == "roles/secretmanager.secretAccessor":
            needs.secrets.add(words[3])  # a secret name, mapped to its field below
    assert queue == act_as, f"{name}: enqueuing a task with an OIDC token needs both the queue and the act-as grant"
    needs.enqueues = queue
    wired = dict(item.split("=", 1) for item in (flag(deploy_lines(lines)[name], "--set-secrets") or "").split(",") if item)
    by_secret = {value.rsplit(":", 1)[0]: deploy.secret_field(var) for var, value in wired.items()}
    assert needs.secrets == set(by_secret), f"{name}: the secrets it is given and the secrets it may read differ"
    needs.secrets = set(by_secret.values())
    return needs


def test_every_function_may_do_exactly_what_its_code_does(plan_lines: list[str]) -> None:
    cfg, _ = deploy.parse_args([*ARGS, *SMTP_LOGIN])
    lines = deploy.build_plan(cfg)
    for name in deploy_lines(lines):
        assert planned_needs(lines, cfg, name) == code_needs(name), name
    # Without an SMTP login the password is never sent, so no function gets it; all else is the same.
    cfg, _ = deploy.parse_args(ARGS)
    for name in deploy_lines(plan_lines):
        needs = code_needs(name)
        needs.secrets -= {"smtp_password"}
        assert planned_needs(plan_lines, cfg, name) == needs, name


def test_the_smtp_password_is_created_required_and_wired_only_with_an_smtp_username(capsys: pytest.CaptureFixture[str]) -> None:
    """The password is only sent when smtp_username is set (notifications._send_email): without it the
    deploy must not stop until a secret it never uses has a value."""
    for args in ((), ("--setting", "smtp_username=")):
        lines = dry_run(capsys, *args)
        assert deploy.SMTP_SECRET not in "\n".join(lines), args
        deliver = deploy_lines(lines)["deliver_notification"]
        # An earlier deploy with a login wired the secret in: this one takes it out again.
        assert flag(deliver, "--set-secrets") is None and "--clear-secrets" in deliver, args
        # The download-link key is still required: it is always used.
        assert sum(f"secrets versions describe latest --secret={deploy.SIGNING_KEY_SECRET} " in line for line in lines) == 1
    lines = dry_run(capsys, *SMTP_LOGIN)
    text = "\n".join(lines)
    assert text.count(f"gcloud secrets create {deploy.SMTP_SECRET} ") == 1
    [require] = [line for line in lines if f"secrets versions describe latest --secret={deploy.SMTP_SECRET} " in line]
    assert "SMTP_PASSWORD" in require
    deliver = deploy_lines(lines)["deliver_notification"]
    assert flag(deliver, "--set-secrets") == f"SYNQ_SMTP_PASSWORD={deploy.SMTP_SECRET}:latest" and "--clear-secrets" not in deliver
    # Functions that never had a secret to drop are left as they are.
    assert not [name for name, words in deploy_lines(lines).items() if "--clear-secrets" in words]


def test_the_smtp_password_instructions_never_add_an_empty_version(tmp_path: Path) -> None:
    """Secret Manager refuses an empty payload: with SMTP_PASSWORD unset or empty the documented
    command must stop before anything is added, with a message naming the variable."""
    received = tmp_path / "received"
    command = f"{deploy.SECRET_VALUES[deploy.SMTP_SECRET]} | cat > {received}"
    for env in ({}, {"SMTP_PASSWORD": ""}):
        done = subprocess.run(["bash", "-c", command], env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=False)
        assert done.returncode != 0 and "SMTP_PASSWORD" in done.stderr and not received.exists(), env
    done = subprocess.run(["bash", "-c", command], env={"PATH": os.environ["PATH"], "SMTP_PASSWORD": "pw 1"}, check=False)
    assert done.returncode == 0 and received.read_text() == "pw 1"


def test_the_code_scan_finds_the_known_publishers_and_readers() -> None:
    """The scan of the source sees what the reviewers found by reading it (a guard on the scan itself)."""
    assert code_needs("process_chunk").topics == {"chunks_topic"}  # each finished chunk releases the next
    assert code_needs("reconcile").topics == {"jobs_topic", "chunks_topic", "exports_topic"}
    assert code_needs("api").enqueues and code_needs("run_export").enqueues  # redeliver; the export's notification
    assert code_needs("run_export").secrets == {"download_signing_key"}  # signs download_url
    assert code_needs("api").secrets == {"download_signing_key"}  # checks signed links
    assert code_needs("deliver_notification").secrets == {"smtp_password"}
    assert code_needs("api").signs_urls and not code_needs("run_export").signs_urls  # the download redirect


def test_the_api_signs_download_urls_through_iam_as_itself(plan_lines: list[str]) -> None:
    """The api has no key file: it signs the download redirect's Cloud Storage URL with IAM signBlob,
    which needs the IAM Credentials API and the token creator role on its own service account."""
    cfg, _ = deploy.parse_args(ARGS)
    api = deploy.account_email(cfg, "api")
    text = "\n".join(plan_lines)
    assert "iamcredentials.googleapis.com" in next(line for line in commands(plan_lines) if "services enable" in line)
    grant = f"iam service-accounts add-iam-policy-binding {api} --member=serviceAccount:{api} --role=roles/iam.serviceAccountTokenCreator"
    assert grant in text
    # No other function may sign as anyone; the one other grant is Pub/Sub's own service agent minting
    # push tokens as the push identity (needed in projects older than April 2021).
    creators = [line for line in commands(plan_lines) if "roles/iam.serviceAccountTokenCreator" in line]
    push = deploy.account_email(cfg, deploy.PUSH_IDENTITY)
    assert len(creators) == 2 and any(grant in line for line in creators)
    [agent] = [line for line in creators if grant not in line]
    assert f"iam service-accounts add-iam-policy-binding {push} " in agent and "@gcp-sa-pubsub.iam.gserviceaccount.com" in agent
    # Nor can a deployment be handed the local stack's key or endpoint instead.
    for name in deploy.LOCAL_ONLY_SETTINGS:
        with pytest.raises(SystemExit):
            deploy.parse_args([*ARGS, "--setting", f"{name}=x"])
        assert all(f"SYNQ_{name.upper()}" not in env_of(words) for words in deploy_lines(plan_lines).values())


def test_chunk_workers_reconciler_and_api_get_their_grants(plan_lines: list[str]) -> None:
    cfg, _ = deploy.parse_args(ARGS)
    text = "\n".join(plan_lines)

    def sa(name: str) -> str:
        return f"--member=serviceAccount:{deploy.account_email(cfg, name)}"

    assert f"pubsub topics add-iam-policy-binding bulk-job-chunks {sa('process_chunk')} --role=roles/pubsub.publisher" in text
    assert f"pubsub topics add-iam-policy-binding exports {sa('reconcile')} --role=roles/pubsub.publisher" in text
    assert f"tasks queues add-iam-policy-binding notifications --location={REGION} {sa('api')} --role=roles/cloudtasks.enqueuer" in text
    tasks_sa = deploy.account_email(cfg, deploy.TASKS_IDENTITY)
    assert f"iam service-accounts add-iam-policy-binding {tasks_sa} {sa('api')} --role=roles/iam.serviceAccountUser" in text


def test_download_links_are_signed_with_a_secret_and_point_at_the_api(capsys: pytest.CaptureFixture[str], plan_lines: list[str]) -> None:
    deployed = deploy_lines(plan_lines)
    for name in ("api", "run_export"):
        assert flag(deployed[name], "--set-secrets") == f"SYNQ_DOWNLOAD_SIGNING_KEY={deploy.SIGNING_KEY_SECRET}:latest", name
    for name, words in deployed.items():
        env = env_of(words)
        assert "SYNQ_DOWNLOAD_SIGNING_KEY" not in env, "a secret in a plain environment variable"
        assert env["SYNQ_PUBLIC_API_URL"] == API_URL, name
        # The code enqueues into the queue the deploy created, in the deploy's region.
        assert env["SYNQ_TASKS_LOCATION"] == REGION, name
        # The audit log's ip_address is the one Google's front end appended to X-Forwarded-For.
        assert env["SYNQ_TRUSTED_PROXIES"] == "1", name
    # The secret is created once, and the deploy stops with instructions while it has no value.
    text = "\n".join(plan_lines)
    assert text.count(f"gcloud secrets create {deploy.SIGNING_KEY_SECRET} ") == 1
    assert text.count(f"gcloud secrets versions describe latest --secret={deploy.SIGNING_KEY_SECRET} ") == 1
    # The deploy ends by checking that the links' base URL reaches the API.
    assert commands(plan_lines)[-1].startswith(f"curl -fsS -o /dev/null --max-time 30 {API_URL}/api/v1/pim/openapi.json || ")
    # Behind a load balancer or a custom domain, the operator names the URL.
    lines = dry_run(capsys, "--public-api-url", "https://pim.example.com/")
    assert {env_of(w)["SYNQ_PUBLIC_API_URL"] for w in deploy_lines(lines).values()} == {"https://pim.example.com"}
    assert "curl -fsS -o /dev/null --max-time 30 https://pim.example.com/api/v1/pim/openapi.json" in "\n".join(lines)
    for bad in ("http://pim.example.com", "pim.example.com", "https://pim.example.com/?x=1"):
        with pytest.raises(SystemExit):
            deploy.parse_args([*ARGS, "--public-api-url", bad])


def test_no_secret_setting_can_be_passed_in_plain_text() -> None:
    secrets = deploy.secret_settings()
    assert {"smtp_password", "download_signing_key"} <= secrets
    # Every Settings field that looks secret is one the deploy treats as such.
    assert secret_fields() == secrets
    for name in sorted(secrets):
        with pytest.raises(SystemExit):
            deploy.parse_args([*ARGS, "--setting", f"{name}=abc"])
    for name in ("public_api_url", "tasks_location"):  # set by the deploy from its own options
        with pytest.raises(SystemExit):
            deploy.parse_args([*ARGS, "--setting", f"{name}=x"])


# -- determinism, idempotency, offline ---------------------------------------------------------------


def test_dry_run_is_deterministic_and_every_line_is_valid_bash(capsys: pytest.CaptureFixture[str]) -> None:
    first, second = dry_run(capsys), dry_run(capsys)
    assert first == second
    # One line per command, so bash's "line N" in a syntax error names the command.
    check = subprocess.run(["bash", "-n"], input="\n".join(first) + "\n", capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr


def test_every_create_is_guarded(plan_lines: list[str]) -> None:
    for line in commands(plan_lines):
        if re.search(r"gcloud (\S+ )+create ", line):
            assert " describe " in line or "already[ _]exists" in line, line


# A gcloud stand-in that remembers what was created, so the deploy can run twice offline. It is a
# bash function handed to each line's shell through the environment (bash's exported-function
# form): a real executable costs a process start per call, ~100 calls per run.
FAKE_GCLOUD = r"""() {
  local state="${FAKE_GCLOUD_STATE:?}" a i verb="" at=0 lookup="" index="" kind name key
  local -a pos=()
  printf '%s\n' "$*" >>"$state/calls.log"
  for a in "$@"; do
    case "$a" in
      --format=value*) lookup=1 ;;
      --collection-group=*|--query-scope=*|--field-config=*) index+="${a#*=}" ;;
      --*) ;;
      *) pos+=("$a") ;;
    esac
  done
  for i in "${!pos[@]}"; do
    case "${pos[$i]}" in describe|create|update|deploy|enable|add-iam-policy-binding|add-invoker-policy-binding)
      verb="${pos[$i]}"; at=$i; break ;; esac
  done
  kind="${pos[*]:0:$at}"; name="${pos[$((at + 1))]:-}"
  [[ "$name" == pubsub ]] && name="${pos[$((at + 2))]:-}"
  [[ "$kind" == "iam service-accounts" ]] && name="${name%%@*}"
  [[ "$kind" == "firestore indexes composite" ]] && name="$index"
  key="$kind $name"; key="${key//[^A-Za-z0-9._-]/_}"
  case "$verb" in
    describe)
      if [[ -n "$lookup" ]]; then echo fake-value; return 0; fi
      [[ -e "$state/$key" ]] && return 0
      echo "ERROR: NOT_FOUND: $kind $name" >&2; return 1 ;;
    create)
      if [[ -e "$state/$key" ]]; then echo "ERROR: (gcloud) ALREADY_EXISTS: index already exists" >&2; return 1; fi
      : >"$state/$key"; echo "$kind $name" >>"$state/created.log" ;;
    deploy)
      [[ -e "$state/$key" ]] || { : >"$state/$key"; echo "$kind $name" >>"$state/created.log"; } ;;
  esac
  return 0
}"""

# On PATH for the dry-run through deploy.sh: any call at all is recorded.
RECORDING_GCLOUD = """#!/usr/bin/env bash
printf '%s\\n' "$*" >>"${FAKE_GCLOUD_STATE:?}/calls.log"
"""


def install_fake_gcloud(root: Path) -> tuple[dict[str, str], Path]:
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir()
    state.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(RECORDING_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GCLOUD_STATE": str(state),
    }
    return env, state


@pytest.fixture
def fake_gcloud(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env, state = install_fake_gcloud(tmp_path)
    (state / "secrets_versions_latest").touch()  # the one thing a person provides: the secrets' values
    # The closing check fetches the API's public URL: answered here, and recorded.
    fake_curl = '() { printf "%s\\n" "$*" >>"${FAKE_GCLOUD_STATE:?}/curl.log"; }'
    return {**env, "BASH_FUNC_gcloud%%": FAKE_GCLOUD, "BASH_FUNC_curl%%": fake_curl}, state


@pytest.fixture(scope="module", autouse=True)
def script_dry_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`infra/deploy.sh --dry-run` in a fresh process, with a gcloud on PATH that records any call.

    Started before the module's first test and read by a later one: importing main.py takes the
    new process most of its second, which would otherwise add to the test time.
    """
    env, state = install_fake_gcloud(tmp_path_factory.mktemp("script"))
    proc = subprocess.Popen([str(ROOT / "infra" / "deploy.sh"), *ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, state
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_dry_run_through_deploy_sh_calls_no_gcloud(script_dry_run: tuple[subprocess.Popen[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    proc, state = script_dry_run
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert not (state / "calls.log").exists(), "the dry-run called gcloud"
    assert out.splitlines() == dry_run(capsys)


def test_running_twice_creates_nothing_the_second_time(fake_gcloud: tuple[dict[str, str], Path]) -> None:
    env, state = fake_gcloud
    lines = with_export_and_notifications(*SMTP_LOGIN)  # every kind of step the deploy has
    deploy.execute(lines, env=env, attempts=1, out=io.StringIO())
    first = (state / "created.log").read_text().splitlines()
    assert {"pubsub topics bulk-jobs", "functions api", "secrets synq-smtp-password", "tasks queues notifications"} <= set(first)
    deploy.execute(lines, env=env, attempts=1, out=io.StringIO())
    assert (state / "created.log").read_text().splitlines() == first
    assert (state / "curl.log").read_text().splitlines() == [f"-fsS -o /dev/null --max-time 30 {API_URL}/api/v1/pim/openapi.json"] * 2


def test_a_failing_step_stops_the_deploy(fake_gcloud: tuple[dict[str, str], Path]) -> None:
    env, state = fake_gcloud
    with pytest.raises(deploy.DeployError, match="failed 2 times"):
        deploy.execute(["false", "touch later-step"], cwd=state, env=env, attempts=2, pause_s=0, out=io.StringIO())
    assert not (state / "later-step").exists()


# -- Firestore indexes -------------------------------------------------------------------------------

INDEXES = json.loads((ROOT / "infra" / "firestore.indexes.json").read_text())
A, D = "ASCENDING", "DESCENDING"

# Query filters whose field name is a variable in the store code, and where the names come from.
DYNAMIC_FIELDS = {"common/store/catalog.py:list_issues": ("common.services.catalog", "ISSUE_FILTERS")}


def declared(group: str, *fields: tuple[str, str], scope: str = "COLLECTION") -> bool:
    want = [{"fieldPath": f, "order": o} for f, o in fields]
    return any(i["collectionGroup"] == group and i.get("queryScope", "COLLECTION") == scope and i["fields"] == want for i in INDEXES["indexes"])


def test_indexes_file_declares_the_known_composite_indexes() -> None:
    newest = [("created_at", D), ("__name__", D)]
    assert declared("bulk_jobs", ("job_type", A), *newest)
    assert declared("bulk_jobs", ("job_type", A), ("status", A), *newest)  # ?status=
    assert declared("products", ("sku", A), *newest)
    assert declared("validation_issues", ("resolved", A), *newest)
    for name in ("severity", "issue_type", "product_id", "job_id"):
        assert declared("validation_issues", ("resolved", A), (name, A), *newest), name
    assert declared("validation_issues", ("product_id", A), ("resolved", A))
    # chunks: `first_index > n ORDER BY first_index` is served by the automatic single-field index;
    # with `has_failures ==` it needs a composite one.
    assert declared("chunks", ("has_failures", A), ("first_index", A))
    # Collection-group queries of the reconciler (no automatic index exists for that scope).
    assert declared("bulk_jobs", ("status", A), ("touched_at", A), scope="COLLECTION_GROUP")
    assert declared("chunks", ("done", A), ("published", A), ("updated_at", A), scope="COLLECTION_GROUP")


def test_every_declared_index_is_created_by_the_deploy(plan_lines: list[str]) -> None:
    creates = [c for c in commands(plan_lines) if "indexes composite create" in c]
    assert len(creates) == len(INDEXES["indexes"])
    for index in INDEXES["indexes"]:
        configs = "".join(f" --field-config=field-path={f['fieldPath']},order={f['order'].lower()}" for f in index["fields"])
        assert any(f"--collection-group={index['collectionGroup']} " in c and configs in c for c in creates), index


@dataclass(frozen=True)
class Query:
    """One Firestore query as the source builds it."""

    where: str  # file:function
    group: str
    collection_group: bool
    ops: tuple[tuple[Any, ...], ...] = ()  # ("where", field|None, op, optional, dynamic) / ("order", field, dir, optional)

    def add(self, op: tuple[Any, ...]) -> Query:
        return Query(self.where, self.group, self.collection_group, (*self.ops, op))


@dataclass
class _Scanner:
    """Follows query chains through one function: `q = coll(...).where(...)`, `q = q.order_by(...)`."""

    where: str
    found: list[Query] = field(default_factory=list)
    names: dict[str, Query] = field(default_factory=dict)
    selected: set[tuple[str, str]] = field(default_factory=set)  # (group, field) a projection reads

    def source(self, call: ast.Call) -> Query | None:
        fn, args = call.func, call.args
        text = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if isinstance(fn, ast.Name) and fn.id == "coll" and len(args) >= 2 and isinstance(args[1], ast.Constant):
            return Query(self.where, str(args[1].value), False)
        if isinstance(fn, ast.Attribute) and fn.attr in ("collection", "collection_group") and text:
            return Query(self.where, text[0], fn.attr == "collection_group")
        return None

    def eval(self, node: ast.AST, optional: bool, looping: bool) -> Query | None:
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if not isinstance(node, ast.Call):
            return None
        query = self.source(node)
        if query is None and isinstance(node.func, ast.Attribute):
            base = self.eval(node.func.value, optional, looping)
            if base is None:
                return None
            if node.func.attr == "where":
                query = base.add(self.filter(node, optional, looping))
            elif node.func.attr == "order_by":
                direction = next((k.value for k in node.keywords if k.arg == "direction"), None)
                desc = isinstance(direction, ast.Attribute) and direction.attr == "DESCENDING"
                assert isinstance(node.args[0], ast.Constant), f"{self.where}: order_by on a computed field"
                query = base.add(("order", node.args[0].value, D if desc else A, optional))
            else:  # select, limit, start_after, stream, get, ...: the same query
                if node.func.attr == "select" and node.args and isinstance(node.args[0], ast.List):
                    self.selected |= {(base.group, e.value) for e in node.args[0].elts if isinstance(e, ast.Constant)}
                query = base
        if query is not None:
            self.found.append(query)
        return query

    def filter(self, call: ast.Call, optional: bool, looping: bool) -> tuple[Any, ...]:
        spec = next((k.value for k in call.keywords if k.arg == "filter"), None)
        args = spec.args if isinstance(spec, ast.Call) else call.args
        name, op = args[0], args[1]
        assert isinstance(op, ast.Constant), f"{self.where}: computed operator"
        if isinstance(name, ast.Constant):
            return ("where", name.value, op.value, optional, False)
        assert looping, f"{self.where}: filter on a computed field outside a loop"
        return ("where", None, op.value, optional, True)

    def walk(self, body: list[ast.stmt], optional: bool = False, looping: bool = False) -> None:
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                # A nested function (a transaction's body) uses the names its enclosing one made.
                inner = _Scanner(self.where, names=dict(self.names))
                inner.walk(stmt.body, optional, looping)
                self.found += inner.found
                self.selected |= inner.selected
                continue
            if isinstance(stmt, ast.ClassDef):
                continue
            # Queries built in a statement's own expression (`for row in rows(q.order_by(...))`).
            heads = {ast.If: "test", ast.For: "iter", ast.AsyncFor: "iter", ast.While: "test"}
            head = getattr(stmt, heads.get(type(stmt), ""), None)
            heads_of_with = [item.context_expr for item in stmt.items] if isinstance(stmt, ast.With) else []
            for expr in [head, *heads_of_with]:
                for node in ast.walk(expr) if expr is not None else ():
                    if isinstance(node, ast.Call):
                        self.eval(node, optional, looping)
            if isinstance(stmt, ast.If):
                self.walk(stmt.body, True, looping)
                self.walk(stmt.orelse, True, looping)
                continue
            if isinstance(stmt, ast.For | ast.AsyncFor | ast.While):
                self.walk(stmt.body, optional, True)
                self.walk(stmt.orelse, optional, looping)
                continue
            if isinstance(stmt, ast.With):
                self.walk(stmt.body, optional, looping)
                continue
            if isinstance(stmt, ast.Try):
                self.walk(stmt.body, optional, looping)
                for handler in stmt.handlers:
                    self.walk(handler.body, True, looping)
                self.walk(stmt.orelse, True, looping)
                self.walk(stmt.finalbody, optional, looping)
                continue
            target = value = None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign):
                target, value = stmt.target, stmt.value
            if value is not None and isinstance(target, ast.Name):
                query = self.eval(value, optional, looping)
                if query is not None:
                    self.names[target.id] = query
                continue
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call):
                    self.eval(node, optional, looping)


def source_files() -> list[Path]:
    return sorted([*(ROOT / "common").rglob("*.py"), *(ROOT / "functions").rglob("*.py")])


def outer_functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and methods; functions nested in them are part of theirs."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from outer_functions(node)


@functools.cache
def scan_queries() -> list[Query]:
    """The most complete form of every query chain in common/ and functions/."""
    return _scan()[0]


@functools.cache
def scan_projections() -> frozenset[tuple[str, str]]:
    """(group, field) of every field a query chain reads by a literal `.select([...])`."""
    return _scan()[1]


@functools.cache
def _scan() -> tuple[list[Query], frozenset[tuple[str, str]]]:
    queries: list[Query] = []
    selected: set[tuple[str, str]] = set()
    for path in source_files():
        for node in outer_functions(ast.parse(path.read_text())):
            scanner = _Scanner(f"{path.relative_to(ROOT)}:{node.name}")
            scanner.walk(node.body)
            selected |= scanner.selected
            built = [q for q in scanner.found if q.ops]
            # Keep only chains no other chain extends (intermediate steps are not run alone).
            queries += [
                q
                for q in set(built)
                if not any(o is not q and o.group == q.group and o.ops[: len(q.ops)] == q.ops and len(o.ops) > len(q.ops) for o in built)
            ]
    return sorted(queries, key=lambda q: (q.where, q.ops)), frozenset(selected)


@dataclass(frozen=True)
class Shape:
    """What index a query needs: equality fields (any order), then the sort order Firestore applies."""

    where: str
    group: str
    collection_group: bool
    equal: frozenset[str]
    order: tuple[tuple[str, str], ...]  # including the implicit first order on an inequality field
    name_order: str  # direction of the implicit __name__ ordering

    @property
    def fields(self) -> set[str]:
        return set(self.equal) | {f for f, _ in self.order}

    def needs_composite(self) -> bool:
        if self.collection_group:  # Firestore keeps no automatic single-field index for this scope
            return bool(self.fields)
        return len(self.fields) >= 2 and bool(self.order)  # equality-only queries merge single-field indexes


def variants(query: Query) -> Iterator[Shape]:
    """Each form the query takes at run time: optional filters on or off, each dynamic field name."""
    optional = [i for i, op in enumerate(query.ops) if op[3]]
    dynamic = [i for i, op in enumerate(query.ops) if op[0] == "where" and op[4]]
    names: tuple[str | None, ...] = (None,)
    if dynamic:
        assert query.where in DYNAMIC_FIELDS, f"{query.where} filters on a computed field: add it to DYNAMIC_FIELDS"
        module, attr = DYNAMIC_FIELDS[query.where]
        names = (None, *getattr(importlib.import_module(module), attr))
    for on in itertools.product((True, False), repeat=len(optional)):
        skipped = {i for i, keep in zip(optional, on, strict=True) if not keep}
        for name in names:
            equal, ranges, orders = set(), [], []
            for i, op in enumerate(query.ops):
                if i in skipped or (i in dynamic and name is None):
                    continue
                if op[0] == "where":
                    field_name = name if i in dynamic else op[1]
                    (equal.add(field_name) if op[2] in ("==", "in", "array-contains") else ranges.append(field_name))
                else:
                    orders.append((op[1], op[2]))
            named = [d for f, d in orders if f == "__name__"]
            orders = [(f, d) for f, d in orders if f != "__name__"]
            if ranges and (not orders or orders[0][0] != ranges[0]):
                orders.insert(0, (ranges[0], A))
            name_order = named[0] if named else (orders[-1][1] if orders else A)
            yield Shape(query.where, query.group, query.collection_group, frozenset(equal), tuple(orders), name_order)


def serves(index: dict[str, Any], shape: Shape) -> bool:
    scope = "COLLECTION_GROUP" if shape.collection_group else "COLLECTION"
    if index["collectionGroup"] != shape.group or index.get("queryScope", "COLLECTION") != scope:
        return False
    fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
    name_order = fields.pop()[1] if fields and fields[-1][0] == "__name__" else (fields[-1][1] if fields else A)
    n = len(shape.equal)
    return (
        len(fields) == n + len(shape.order)
        and {f for f, _ in fields[:n]} == shape.equal
        and tuple(fields[n:]) == shape.order
        and name_order == shape.name_order
    )


def test_the_source_scan_finds_the_known_queries() -> None:
    wheres = {q.where for q in scan_queries()}
    for known in (
        "common/store/jobs.py:list_page",
        "common/store/jobs.py:results_by_chunk",
        "common/store/jobs.py:stale_pending",
        "common/store/jobs.py:stale_chunks",
        "common/store/catalog.py:list_products",
        "common/store/catalog.py:list_issues",
        "common/store/catalog.py:open_issues",
    ):
        assert known in wheres


def test_every_query_in_the_source_has_its_index() -> None:
    missing = []
    for query in scan_queries():
        for shape in variants(query):
            if shape.needs_composite() and not any(serves(i, shape) for i in INDEXES["indexes"]):
                missing.append(shape)
    assert not missing, "queries without a composite index in infra/firestore.indexes.json:\n" + "\n".join(map(str, missing))


def test_every_declared_index_serves_some_query() -> None:
    shapes = [s for q in scan_queries() for s in variants(q)]
    unused = [i for i in INDEXES["indexes"] if not any(serves(i, s) for s in shapes)]
    assert not unused, f"indexes no query uses (each costs writes): {unused}"


# Projections whose field list is a variable, and where the names come from (pages.page selects
# the fields its caller passes: the job list's summary).
DYNAMIC_PROJECTIONS = {"common/store/pages.py:page": ("bulk_jobs", "common.services.jobs", "SUMMARY_FIELDS")}
QUERY_CALLS = ("where", "order_by", "select", "FieldFilter")


def named_in_query_calls() -> dict[str, set[str | None]]:
    """What a grep finds, independent of the chain scanner: by file:function, each field named in a
    `.where(` / `FieldFilter(` / `.order_by(` / `.select(` call (None for a name held in a variable)."""
    found: dict[str, set[str | None]] = {}
    for path in source_files():
        for fn in outer_functions(ast.parse(path.read_text())):
            for call in ast.walk(fn):
                name = call.func.attr if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) else None
                name = call.func.id if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) else name
                if name not in QUERY_CALLS or not isinstance(call, ast.Call) or not call.args:
                    continue
                first = call.args[0]
                values = first.elts if isinstance(first, ast.List) else [first]
                names = found.setdefault(f"{path.relative_to(ROOT)}:{fn.name}", set())
                names |= {v.value if isinstance(v, ast.Constant) else None for v in values}
    return found


def queried_fields() -> dict[str, set[str]]:
    """Every field a query of the code filters, orders or projects on, by collection group."""
    by_group: dict[str, set[str]] = {}
    for query in scan_queries():
        for shape in variants(query):  # dynamic filter names included
            by_group.setdefault(shape.group, set()).update(shape.fields)
    for group, name in scan_projections():
        by_group.setdefault(group, set()).add(name)
    for group, module, attr in DYNAMIC_PROJECTIONS.values():
        by_group.setdefault(group, set()).update(getattr(importlib.import_module(module), attr))
    return by_group


def test_the_scan_sees_every_field_a_query_call_names() -> None:
    """A query the chain scanner cannot follow would let an override hide a queried field: every
    field named in a query call must be one the scan attributes to that function's queries."""
    scanned: dict[str, set[str]] = {}
    for query in scan_queries():
        scanned.setdefault(query.where, set()).update(op[1] for op in query.ops if op[1] is not None)
    projections = {name for _, name in scan_projections()}
    for where, names in named_in_query_calls().items():
        if None in names:
            assert where in DYNAMIC_FIELDS or where in DYNAMIC_PROJECTIONS, f"{where} queries on a field held in a variable: name its source"
        missing = {n for n in names if n is not None} - scanned.get(where, set()) - projections
        assert not missing, f"{where}: the scan does not see the query on {missing}"


def test_unindexed_fields_are_never_queried() -> None:
    queried = queried_fields()
    assert queried["validation_issues"] >= {"severity", "issue_type", "product_id", "job_id", "identifier"}  # dynamic and projected
    assert "import_options" in queried["bulk_jobs"]  # the job list's projection
    for override in INDEXES["fieldOverrides"]:
        assert override["indexes"] == [], override
        group, path = override["collectionGroup"], override["fieldPath"]
        # A disabled map disables its subfields too.
        hidden = {f for f in queried.get(group, set()) if f == path or f.startswith(f"{path}.")}
        assert not hidden, f"{group}.{path} is left unindexed, but a query uses {hidden}"


def test_big_maps_and_unsorted_timestamps_are_left_unindexed() -> None:
    """Firestore indexes every leaf of a map (ascending and descending) up to 40,000 index entries a
    document: a product with ~20,000 attributes is refused in production (the emulator accepts it).
    Sequential timestamps that are indexed cap a collection near 500 writes a second."""
    off = {(o["collectionGroup"], o["fieldPath"]) for o in INDEXES["fieldOverrides"]}
    for group, path in [
        *(("products", f) for f in ("attributes", "values", "assets", "multi_values", "variants", "open_issues", "updated_at")),
        ("audit_events", "details"),
        ("validation_issues", "updated_at"),
        ("identifier_index", "open"),
        ("sku_index", "holders"),
        ("value_index", "holders"),
        ("bulk_jobs", "payload_json"),
        ("chunk_items", "items_json"),
        ("chunks", "results"),
        ("snapshots", "attributes"),  # a ProductImportData job's vocabulary, up to 2,000 attributes
    ]:
        assert (group, path) in off, (group, path)
    # Firestore allows 200 single-field index exemptions per database; each is one more deploy line.
    assert len(off) == len(INDEXES["fieldOverrides"]) <= 200
    # The file says which overrides hold a TTL policy, as the deploy sets them.
    assert {(o["collectionGroup"], o["fieldPath"]) for o in INDEXES["fieldOverrides"] if o["ttl"]} == set(deploy.TTL_FIELDS)


def test_every_field_override_is_applied_by_the_deploy(plan_lines: list[str]) -> None:
    updates = [c for c in commands(plan_lines) if "firestore indexes fields update" in c]
    assert len(updates) == len(INDEXES["fieldOverrides"])
    text = "\n".join(updates)
    for override in INDEXES["fieldOverrides"]:
        group, path = override["collectionGroup"], override["fieldPath"]
        # A TTL field's index change is waited for: its TTL policy is the next operation on it.
        wanted = f"firestore indexes fields update {path} --collection-group={group} --disable-indexes{'' if override['ttl'] else ' --async'} "
        assert text.count(wanted) == 1, wanted
    ttl_first = next(i for i, c in enumerate(commands(plan_lines)) if "fields ttls update" in c)
    assert max(i for i, c in enumerate(commands(plan_lines)) if "firestore indexes fields update" in c) < ttl_first


def test_short_lived_records_get_a_ttl_policy(plan_lines: list[str]) -> None:
    text = "\n".join(plan_lines)
    for group in ("idempotency_keys", "rate_limits"):
        assert f"fields ttls update expires_at --collection-group={group} --enable-ttl" in text
