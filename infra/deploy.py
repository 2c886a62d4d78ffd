"""Create or update the whole Synq environment in one Google Cloud project with gcloud.

    infra/deploy.sh PROJECT REGION [--dry-run] [--bucket NAME] [--export-days 30] [--payload-days N]
                    [--firestore-location LOCATION] [--public-api-url URL] [--setting FIELD=VALUE ...]

The deploy is a list of shell lines. Each line is idempotent on its own (describe-then-create,
create-or-update, or a create that accepts "already exists"), so running the deploy twice changes
nothing and a run that stopped half-way is finished by running it again. `--dry-run` prints exactly
the lines a real run executes, one per line, and runs nothing at all (not even a gcloud lookup:
values only known in the cloud, such as the project number or the subscription Eventarc made, are
`$(gcloud ...)` substitutions inside the line), so the unit test checks the plan offline.

What gets deployed is read from the code (see infra/topology.py); this file only knows *how* each
kind of thing is deployed, plus one `Profile` per function for what the code cannot say: memory,
timeout, instance limits and the permissions the function needs.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from pydantic import SecretBytes, SecretStr

from common.config import Settings
from infra import stack, topology
from infra.topology import Function, TopologyError

ROOT = Path(__file__).resolve().parent.parent
INDEXES_FILE = ROOT / "infra" / "firestore.indexes.json"

RUNTIME = "python311"
# Every API the deploy touches; enabling an enabled API is a no-op.
APIS = (
    "artifactregistry.googleapis.com",  # gen2 function images
    "cloudbuild.googleapis.com",  # builds the function source
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",  # project IAM bindings
    "cloudscheduler.googleapis.com",  # the reconcile ticks
    "cloudtasks.googleapis.com",  # the notifications queue
    "eventarc.googleapis.com",  # Pub/Sub triggers of gen2 functions
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # signBlob: api signs the export downloads' Cloud Storage URLs
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",  # gen2 functions run on Cloud Run
    "secretmanager.googleapis.com",  # the SMTP password, the download-link key
    "storage.googleapis.com",
)

# Cloud Functions (2nd gen) gives an event-driven function at most 9 minutes.
EVENT_TIMEOUT_MAX_S = 540
# Concurrent requests per instance. functions-framework serves them from gunicorn threads, which the
# deploy sets to the same number (THREADS), as Google asks for Python functions; Google's guidance is
# to start at 8 and raise it only once measured (cloud.google.com/functions/docs/configuring/concurrency).
MAX_CONCURRENCY = 8
# Pub/Sub's longest ack deadline; a push delivery is redelivered if unanswered for that long.
ACK_DEADLINE_MAX_S = 600
# Pub/Sub push retries: exponential backoff between these two (the largest maximum Pub/Sub allows).
RETRY_MIN_S, RETRY_MAX_S = 10, 600
# Dead-lettered messages are kept this long for a person to look at (a subscription expires when
# unused for 31 days by default, hence "never" below: a quiet dead-letter queue is the good case).
DEAD_LETTER_RETENTION = "14d"

# The Cloud Tasks queue that delivers notifications, and the function it calls.
TASKS_TARGET = "deliver_notification"
# At least 24 h of retries with exponential backoff: 10 s doubling up to 1 h, then hourly.
TASKS_MIN_BACKOFF_S, TASKS_MAX_BACKOFF_S, TASKS_MAX_DOUBLINGS = 10, 3600, 16
TASKS_RETRY_SPAN_S = 24 * 3600
TASKS_MAX_DISPATCHES_PER_S = 500  # the most Cloud Tasks dispatches from one queue

# Topics fed by Cloud Scheduler rather than by the code: the reconciler's clock.
TICKS = {"reconcile_topic": "* * * * *"}

SMTP_SECRET = "synq-smtp-password"
SIGNING_KEY_SECRET = "synq-download-signing-key"
# How a person gives each secret its value (the deploy creates the secret, never its value): the
# shell words whose output `gcloud secrets versions add SECRET --data-file=-` reads.
SECRET_VALUES = {
    # An unset or empty SMTP_PASSWORD stops the command line with that message (`${VAR:?}` fails
    # before the pipe starts), instead of adding an empty payload, which Secret Manager refuses.
    SMTP_SECRET: 'test -n "${SMTP_PASSWORD:?set SMTP_PASSWORD to the SMTP password}" && printf %s "$SMTP_PASSWORD"',
    # Any long random string; it signs download links (HMAC-SHA256), so 32 random bytes.
    SIGNING_KEY_SECRET: 'printf %s "$(openssl rand -hex 32)"',
}
# Secrets whose value the code reads only when a setting is set: without that setting the deploy
# neither creates nor waits for the secret, nor wires it into any function. The SMTP password is
# only sent when `smtp_username` is set (common/services/notifications.py logs in only then).
SECRET_ONLY_WITH = {SMTP_SECRET: "smtp_username"}
# The public route a deploy checks the download links' base URL with (needs no token).
API_CHECK_PATH = "/api/v1/pim/openapi.json"

STORAGE_WRITER = "roles/storage.objectAdmin"  # writers may overwrite a retried upload: needs delete
STORAGE_READER = "roles/storage.objectViewer"


class DeployError(Exception):
    """The deploy cannot be planned; the message says what to fix."""


@dataclass(frozen=True)
class Profile:
    """What a function needs that the code cannot say. Each function runs as its own service account
    holding only these grants; `roles/datastore.user` is project-wide for all of them, because
    Firestore has no finer IAM than the database."""

    memory: str = "256Mi"
    timeout_s: int = 60
    max_instances: int = 10
    # Requests one instance serves at once (Cloud Run's default for a function is 1). More than one
    # needs at least 1 vCPU, so `cpu` must say so; None leaves the CPU that `memory` comes with.
    concurrency: int = 1
    cpu: str | None = None
    publishes: tuple[str, ...] = ()  # Settings fields of the topics it publishes to
    bucket_role: str | None = None
    enqueues_tasks: bool = False  # creates Cloud Tasks carrying an OIDC token
    public: bool = False  # reached from the internet; the API checks its own bearer tokens
    # (SYNQ_<FIELD> environment variable, Secret Manager secret) for each secret Settings field it reads
    secrets: tuple[tuple[str, str], ...] = ()
    max_delivery_attempts: int = 10  # Pub/Sub deliveries before a message is dead-lettered
    # Signs Cloud Storage URLs through IAM signBlob as its own service account (it has no key file).
    signs_urls: bool = False


# Who publishes where, who enqueues tasks and who reads which secret is what the code does from each
# entry point; tests/unit/test_deploy.py follows the calls from main.py and checks these against it.
PROFILES: dict[str, Profile] = {
    # Eight requests at once per instance: a request is mostly waiting on Firestore (about 8 ms of CPU
    # in a few hundred ms), so one request per instance left the CPU idle, started an instance (a cold
    # start) for every concurrent caller, capped the whole API at max_instances requests in flight,
    # and spread a token's requests over so many instances that the rate limiter's one write a second
    # per instance became about one per request. Concurrency above 1 needs 1 vCPU. A request body of
    # up to 32 MB is read an item at a time: one 31 MB POST peaked at 339 / 366 MiB (array / envelope)
    # and three at once at 639 MiB (docs/performance.md), about 150 MiB more per POST, so eight large
    # POSTs at once take about 1.4 GiB: 2Gi, which is also the size that comes with 1 vCPU.
    "api": Profile(
        memory="2Gi",
        cpu="1",
        concurrency=8,
        timeout_s=120,
        max_instances=50,
        public=True,
        publishes=("jobs_topic", "exports_topic"),
        bucket_role=STORAGE_WRITER,  # payloads/ of large jobs
        enqueues_tasks=True,  # POST /notification-deliveries/{id}/redeliver, a cancelled job's notification
        secrets=(("SYNQ_DOWNLOAD_SIGNING_KEY", SIGNING_KEY_SECRET),),  # checks signed download links
        signs_urls=True,  # the download route redirects to a signed URL of the export's file
    ),
    # Reads the stored payload, array or envelope, a piece at a time (194-225 MiB in the benchmarks); 1Gi is for the CPU
    # that splitting a 32 MB payload takes.
    "dispatch_job": Profile(
        memory="1Gi",
        timeout_s=stack.ACK_DEADLINE_SECONDS,
        max_instances=10,
        publishes=("chunks_topic",),
        bucket_role=STORAGE_READER,
        enqueues_tasks=True,  # the notification of a job it fails (its payload expired before it ran)
    ),
    # One chunk (<= 600 KB of items) plus the products it prefetches, each up to 1 MiB; 512Mi
    # also buys twice the CPU of 256Mi, which shortens its transactions and so their contention.
    # Its instance limit bounds the writes per second on one job's document (~1/s sustained is
    # Firestore's guidance), which every chunk of that job updates.
    # A finished chunk releases the next one into its job's window; the last one may start the commit round.
    # The chunk that ends its job queues the job's notification.
    "process_chunk": Profile(
        memory="512Mi", timeout_s=stack.ACK_DEADLINE_SECONDS, max_instances=20, publishes=("chunks_topic",), enqueues_tasks=True
    ),
    # One tick a minute; a tick that finds the previous one still running is retried, and ticks
    # are interchangeable, so one instance is enough and two would only duplicate work.
    "reconcile": Profile(
        timeout_s=stack.ACK_DEADLINE_SECONDS,
        max_instances=1,
        publishes=("jobs_topic", "chunks_topic", "exports_topic"),  # republishes jobs, chunks and exports
        enqueues_tasks=True,  # notifications a dead worker recorded and never queued; the jobs it finishes
        max_delivery_attempts=5,
    ),
    # Streams the catalog into one object: memory is bounded by a page of products and the
    # upload buffer, time by the 9 minutes an event-driven function gets.
    "run_export": Profile(
        memory="512Mi",
        timeout_s=EVENT_TIMEOUT_MAX_S,
        max_instances=10,
        bucket_role=STORAGE_WRITER,
        publishes=("exports_topic",),  # a claim out of time hands the export over to a new claim
        enqueues_tasks=True,  # the export's notification
        secrets=(("SYNQ_DOWNLOAD_SIGNING_KEY", SIGNING_KEY_SECRET),),  # signs the notification's download_url
    ),
    # One webhook POST or one email per call; Cloud Tasks retries it.
    TASKS_TARGET: Profile(
        timeout_s=60,
        max_instances=20,
        secrets=(("SYNQ_SMTP_PASSWORD", SMTP_SECRET),),
    ),
}

# Settings the deploy itself decides; `--setting` may not override them.
DEPLOY_SETTINGS = ("project_id", "region", "bucket", "tasks_queue", "tasks_location", "deliver_url", "public_api_url")
# Settings of the local stack only; `--setting` refuses them. A deployment signs Cloud Storage URLs
# through IAM as the function's own account, never with a key handed to it, for the real endpoint.
LOCAL_ONLY_SETTINGS = ("emulator_signing_key", "emulator_storage_url")


def secret_settings(profiles: Mapping[str, Profile] | None = None) -> set[str]:
    """Settings fields that are secrets: every field a function gets from Secret Manager, and any
    field common/config.py types as SecretStr/SecretBytes. `--setting` refuses them all, since an
    environment variable is readable by anyone who may view the function."""
    profiles = PROFILES if profiles is None else profiles
    wired = {secret_field(var) for profile in profiles.values() for var, _ in profile.secrets}
    typed = {name for name, info in Settings.model_fields.items() if info.annotation in (SecretStr, SecretBytes)}
    return wired | typed


def secret_field(var: str) -> str:
    """The Settings field an environment variable sets (SYNQ_SMTP_PASSWORD -> smtp_password)."""
    name = var.removeprefix("SYNQ_").lower()
    if not var.startswith("SYNQ_") or name not in Settings.model_fields:
        raise DeployError(f"secret variable {var!r} sets no common.config.Settings field")
    return name


@dataclass(frozen=True)
class Config:
    project: str
    region: str
    bucket: str
    firestore_location: str
    export_days: int = 30
    payload_days: int = 0
    settings: tuple[tuple[str, str], ...] = ()  # extra Settings fields for every function
    api_url: str = ""  # --public-api-url; empty: the api function's own URL

    @property
    def deliver_url(self) -> str:
        # A gen2 function also answers on its cloudfunctions.net URL, which is known before it is
        # deployed (unlike its run.app URL) and is a valid OIDC audience for it.
        return self.function_url(TASKS_TARGET)

    @property
    def public_api_url(self) -> str:
        """Where the download links in notifications point (Settings.public_api_url): the API as
        the internet reaches it. By default the api function's cloudfunctions.net URL, known before
        it is deployed; behind a load balancer or a custom domain, --public-api-url."""
        return self.api_url or self.function_url("api")

    def function_url(self, name: str) -> str:
        return f"https://{self.region}-{self.project}.cloudfunctions.net/{name}"


# -- rendering shell lines ---------------------------------------------------------------------------


class Raw(str):
    """A shell word written as is: a substitution whose value only exists when the line runs."""


def _word(value: str) -> str:
    return value if isinstance(value, Raw) else shlex.quote(value)


Command = tuple[str, ...]  # ("pubsub topics create", "bulk-jobs", "--flag=...")


@dataclass
class Plan:
    """The deploy's shell lines. A command is its gcloud command path then its arguments."""

    cfg: Config
    lines: list[str] = field(default_factory=list)

    def gcloud(self, command: str, *args: str) -> str:
        """One gcloud command, always explicit about the project and never prompting."""
        words = ["gcloud", *command.split(), *args, f"--project={self.cfg.project}", "--quiet"]
        return " ".join(_word(w) for w in words)

    def lookup(self, command: str, *args: str, value: str) -> Raw:
        """A value read from the cloud when the line runs, e.g. the project number."""
        return Raw('"$(' + self.gcloud(command, *args, f"--format=value({value})") + ')"')

    def section(self, title: str) -> None:
        self.lines.append(f"# {title}")

    def run(self, command: str, *args: str) -> None:
        """A command that is idempotent by itself (update, add a binding, deploy, enable)."""
        self.lines.append(self.gcloud(command, *args))

    def grant(self, resource: str, name: str, member: str, role: str, *scope: str) -> None:
        """One IAM binding on one resource (adding a binding that exists changes nothing)."""
        flag = Raw(f"--member={member}") if isinstance(member, Raw) else f"--member={member}"
        self.run(f"{resource} add-iam-policy-binding", name, *scope, flag, f"--role={role}", "--format=none")

    def ensure(self, describe: Command, create: Command) -> None:
        """Create only what does not exist yet."""
        self.lines.append(f"{self.gcloud(*describe)} >/dev/null 2>&1 || {self.gcloud(*create)}")

    def upsert(self, describe: Command, create: Command, update: Command) -> None:
        """Create, or bring an existing resource to the same settings."""
        self.lines.append(f"if {self.gcloud(*describe)} >/dev/null 2>&1; then {self.gcloud(*update)}; else {self.gcloud(*create)}; fi")

    def create_once(self, *create: str) -> None:
        """For what has no name to describe it by (composite indexes): one that exists already is fine."""
        self.lines.append(
            f'out="$({self.gcloud(*create)} 2>&1)" || grep -qiE "already[ _]exists" <<<"$out" || {{ printf "%s\\n" "$out" >&2; exit 1; }}'
        )

    def update_while(self, describe: Command, value: str, pending: str, update: Command) -> None:
        """Update only while a described value still reads `pending` (for updates that are not no-ops).
        A failing describe fails the line, rather than passing for "already done"."""
        look = self.gcloud(*describe, f"--format=value({value})")
        self.lines.append(f'now="$({look})" && {{ [[ "$now" != {shlex.quote(pending)} ]] || {self.gcloud(*update)}; }}')

    def require(self, describe: Command, message: str) -> None:
        """Stop the deploy with instructions when something only a person can provide is missing."""
        self.lines.append(f"{self.gcloud(*describe)} >/dev/null 2>&1 || {{ echo {shlex.quote(message)} >&2; exit 1; }}")


# -- naming --------------------------------------------------------------------------------------------

BUILD_IDENTITY = "cloud-build"  # builds the function images (instead of a default account)
PUSH_IDENTITY = "pubsub-push"  # Eventarc's push deliveries authenticate as it
TASKS_IDENTITY = "tasks-oidc"  # Cloud Tasks' calls to deliver_notification authenticate as it


def account_id(name: str) -> str:
    """A service account id (6-30 of [a-z0-9-], starting with a letter) for a Synq identity."""
    ident = re.sub(r"[^a-z0-9-]", "-", f"synq-{name.lower()}")[:30].rstrip("-")
    if len(ident) < 6:
        raise DeployError(f"cannot make a service account id from {name!r}")
    return ident


def account_email(cfg: Config, name: str) -> str:
    return f"{account_id(name)}@{cfg.project}.iam.gserviceaccount.com"


def dead_letter_topic(topic: str) -> str:
    return f"{topic}-dead-letter"


# -- what each part needs -------------------------------------------------------------------------------


def profile_for(fn: Function) -> Profile:
    profile = PROFILES.get(fn.name)
    if profile is None:
        raise DeployError(
            f"function {fn.name!r} has no Profile in infra/deploy.py PROFILES: add one with its memory, "
            "timeout, instance limit and the permissions it needs"
        )
    if fn.kind == "event" and profile.timeout_s > EVENT_TIMEOUT_MAX_S:
        raise DeployError(f"{fn.name!r}: an event-driven function may run at most {EVENT_TIMEOUT_MAX_S}s")
    if profile.public and fn.kind != "http":
        raise DeployError(f"{fn.name!r}: only an HTTP function can be public")
    if profile.concurrency < 1 or profile.concurrency > MAX_CONCURRENCY:
        raise DeployError(f"{fn.name!r}: concurrency must be between 1 and {MAX_CONCURRENCY}")
    if profile.concurrency > 1 and float(profile.cpu or 0) < 1:
        raise DeployError(f"{fn.name!r}: a concurrency above 1 needs cpu of at least 1 (a 2nd gen function's rule)")
    return profile


def wired_profile(profile: Profile, cfg: Config) -> Profile:
    """The profile with only the secrets this deploy uses (see SECRET_ONLY_WITH)."""
    settings = dict(cfg.settings)
    used = tuple((var, secret) for var, secret in profile.secrets if secret not in SECRET_ONLY_WITH or settings.get(SECRET_ONLY_WITH[secret]))
    return replace(profile, secrets=used)


def tasks_max_attempts() -> int:
    """Attempts that spread over TASKS_RETRY_SPAN_S with the queue's backoff.

    Cloud Tasks stops retrying once *both* max-attempts and max-retry-duration are reached, so
    unlimited attempts would retry until the task expires; this is the count that ends right after
    the retry span."""
    elapsed, attempts, backoff, doublings = 0, 1, TASKS_MIN_BACKOFF_S, 0
    while elapsed < TASKS_RETRY_SPAN_S:
        elapsed += backoff
        attempts += 1
        if doublings < TASKS_MAX_DOUBLINGS:
            backoff, doublings = min(backoff * 2, TASKS_MAX_BACKOFF_S), doublings + 1
    return attempts


def lifecycle_rules(cfg: Config) -> str:
    """Exports are downloadable for `export_days`. Large job payloads back `payload_json` of their job,
    so they are kept as long as the job unless `payload_days` is set (then GET shows those jobs with payload_json null)."""
    rules = [
        {"action": {"type": "Delete"}, "condition": {"age": cfg.export_days, "matchesPrefix": ["exports/"]}},
        # Stored answers of Idempotency-Key requests are replayed for 24 h only.
        {"action": {"type": "Delete"}, "condition": {"age": 2, "matchesPrefix": ["idempotency/"]}},
    ]
    if cfg.payload_days:
        rules.append({"action": {"type": "Delete"}, "condition": {"age": cfg.payload_days, "matchesPrefix": ["payloads/"]}})
    return json.dumps({"rule": rules}, separators=(",", ":"), sort_keys=True)


def env_vars(cfg: Config, fns: Sequence[Function]) -> dict[str, str]:
    """The same SYNQ_* settings for every function (they share one Settings class), and the same
    process settings as on the local stack (`stack.PROCESS_ENV`)."""
    values = {"project_id": cfg.project, "region": cfg.region, "bucket": cfg.bucket}
    # The queue is created in the deploy's region, so the code must enqueue there.
    values["tasks_queue"], values["tasks_location"] = str(topology.setting_default("tasks_queue")), cfg.region
    values["public_api_url"] = cfg.public_api_url
    # Google's front end appends the caller's address to X-Forwarded-For; behind a load balancer of
    # your own there is one proxy more (--setting trusted_proxies=2).
    values["trusted_proxies"] = "1"
    if any(fn.name == TASKS_TARGET for fn in fns):
        values["deliver_url"] = cfg.deliver_url
        # Whatever the code calls the identity it puts in the tasks' OIDC token.
        for name in Settings.model_fields:
            if name.endswith("service_account"):
                values[name] = account_email(cfg, TASKS_IDENTITY)
    for name, value in cfg.settings:
        values[name] = value
    for name in values:
        topology.setting_default(name)  # raises for a field the code does not have
    return {**stack.PROCESS_ENV, **{f"SYNQ_{name.upper()}": value for name, value in sorted(values.items())}}


def _env_flag(env: Mapping[str, str]) -> str:
    """--set-env-vars with a delimiter none of the values contains (gcloud's ^DELIM^ syntax)."""
    pairs = [f"{k}={v}" for k, v in env.items()]
    for delimiter in (",", "|", ";", "#", "~"):
        if not any(delimiter in pair for pair in pairs):
            prefix = "" if delimiter == "," else f"^{delimiter}^"
            return f"--set-env-vars={prefix}{delimiter.join(pairs)}"
    raise DeployError("every delimiter gcloud could use appears in a setting value")


def load_indexes(path: Path = INDEXES_FILE) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    data = json.loads(path.read_text())
    return data.get("indexes", []), data.get("fieldOverrides", [])


# -- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What every section of the plan reads."""

    cfg: Config
    fns: Sequence[Function]
    profiles: Mapping[str, Profile]
    topics: Mapping[str, str]  # Settings field -> topic name
    accounts: Mapping[str, str]  # function or shared identity -> service account email

    @property
    def bucket(self) -> str:
        return f"gs://{self.cfg.bucket}"

    @property
    def queue(self) -> str:
        return str(topology.setting_default("tasks_queue"))

    def pubsub_agent(self, plan: Plan) -> Raw:
        """Pub/Sub's service agent, which dead-letters messages; named after the project number."""
        number = plan.gcloud("projects describe", self.cfg.project, "--format=value(projectNumber)")
        return Raw(f'"serviceAccount:service-$({number})@gcp-sa-pubsub.iam.gserviceaccount.com"')


def build_plan(cfg: Config, fns: Sequence[Function] | None = None) -> list[str]:
    """Every line of the deploy, in order; raises DeployError/TopologyError before printing anything."""
    fns = topology.functions() if fns is None else fns
    declared = {fn.name: profile_for(fn) for fn in fns}
    topics = topology.topics()
    for fn_name, profile in declared.items():
        unknown = [key for key in profile.publishes if key not in topics]
        if unknown:
            raise DeployError(f"{fn_name!r} publishes to {unknown}, which are not topic settings")
        for var, secret in profile.secrets:
            secret_field(var)
            if secret not in SECRET_VALUES:
                raise DeployError(f"{fn_name!r} reads secret {secret!r}, which has no entry in SECRET_VALUES saying how to set it")
    profiles = {name: wired_profile(profile, cfg) for name, profile in declared.items()}
    # One identity per function, plus the shared ones that something uses.
    shared = [BUILD_IDENTITY]
    if any(fn.kind == "event" for fn in fns):
        shared.append(PUSH_IDENTITY)
    if any(fn.name == TASKS_TARGET or profiles[fn.name].enqueues_tasks for fn in fns):
        shared.append(TASKS_IDENTITY)
    accounts = {name: account_email(cfg, name) for name in [*(fn.name for fn in fns), *shared]}
    ids = [account_id(name) for name in accounts]
    if len(set(ids)) != len(ids):
        raise DeployError(f"two identities would share a service account id: {sorted(ids)}")

    ctx = Context(cfg, fns, profiles, topics, accounts)
    plan = Plan(cfg)
    for section in (_apis, _firestore, _storage, _pubsub, _tasks, _identities, _secrets, _grants, _functions, _invocation, _scheduler, _checks):
        section(plan, ctx)
    return plan.lines


def _apis(plan: Plan, ctx: Context) -> None:
    plan.section("APIs")
    plan.run("services enable", *APIS)


def _firestore(plan: Plan, ctx: Context) -> None:
    plan.section("Firestore: native-mode database, composite indexes, large fields left unindexed")
    db = "--database=(default)"
    plan.ensure(
        ("firestore databases describe", db),
        ("firestore databases create", db, f"--location={ctx.cfg.firestore_location}", "--type=firestore-native"),
    )
    indexes, overrides = load_indexes()
    for index in indexes:
        scope = str(index.get("queryScope", "COLLECTION")).lower().replace("_", "-")
        fields = [f"--field-config=field-path={f['fieldPath']},order={f['order'].lower()}" for f in index["fields"]]
        # --async: a build takes minutes; a query needing it fails with FAILED_PRECONDITION until then.
        plan.create_once(
            "firestore indexes composite create", f"--collection-group={index['collectionGroup']}", f"--query-scope={scope}", *fields, "--async"
        )
    for override in overrides:
        if override.get("indexes"):
            raise DeployError("infra/firestore.indexes.json: only fieldOverrides that disable indexing are supported")
        path, group = str(override["fieldPath"]), f"--collection-group={override['collectionGroup']}"
        # A TTL field's policy is set right after (_ttl): wait for its index change rather than start
        # a second operation on a field that still has one running.
        wait = (str(override["collectionGroup"]), path) in TTL_FIELDS
        # A field uses its collection's default indexes until overridden; once it is, leave it be.
        plan.update_while(
            ("firestore indexes fields describe", path, group),
            "indexConfig.usesAncestorConfig",
            "True",
            ("firestore indexes fields update", path, group, "--disable-indexes", *(() if wait else ("--async",))),
        )
    _ttl(plan)


# Documents that only matter for a while carry `expires_at`; Firestore's TTL deletes them after it.
TTL_FIELDS = (("idempotency_keys", "expires_at"), ("rate_limits", "expires_at"))


def _ttl(plan: Plan) -> None:
    for group, ttl_field in TTL_FIELDS:
        # A field without a TTL policy describes an empty ttlConfig.state; one with it, ACTIVE or CREATING.
        plan.update_while(
            ("firestore indexes fields describe", ttl_field, f"--collection-group={group}"),
            "ttlConfig.state",
            "",
            ("firestore fields ttls update", ttl_field, f"--collection-group={group}", "--enable-ttl", "--async"),
        )


def _storage(plan: Plan, ctx: Context) -> None:
    plan.section("Cloud Storage: the bucket for large payloads and exports")
    access = ("--uniform-bucket-level-access", "--public-access-prevention")
    plan.ensure(("storage buckets describe", ctx.bucket), ("storage buckets create", ctx.bucket, f"--location={ctx.cfg.region}", *access))
    lifecycle = Raw(f"--lifecycle-file=<(printf %s {shlex.quote(lifecycle_rules(ctx.cfg))})")
    plan.run("storage buckets update", ctx.bucket, *access, lifecycle)


def _pubsub(plan: Plan, ctx: Context) -> None:
    plan.section("Pub/Sub: topics, and for each triggering one a dead-letter topic with a subscription keeping what failed")
    for topic in sorted(set(ctx.topics.values())):
        plan.ensure(("pubsub topics describe", topic), ("pubsub topics create", topic))
    keep = (f"--message-retention-duration={DEAD_LETTER_RETENTION}", "--expiration-period=never")
    for topic in sorted({fn.topic for fn in ctx.fns if fn.topic}):
        dead = dead_letter_topic(topic)
        plan.ensure(("pubsub topics describe", dead), ("pubsub topics create", dead))
        plan.upsert(
            ("pubsub subscriptions describe", dead),
            ("pubsub subscriptions create", dead, f"--topic={dead}", *keep),
            ("pubsub subscriptions update", dead, *keep),
        )
        # Pub/Sub's own service agent moves failed messages: it must be able to publish there.
        plan.grant("pubsub topics", dead, ctx.pubsub_agent(plan), "roles/pubsub.publisher")


def _tasks(plan: Plan, ctx: Context) -> None:
    plan.section("Cloud Tasks: the notifications queue")
    # The queue never sends more calls at once than deliver_notification has instances to take
    # them: an overflowing call would be refused (429) and burn one of its retries.
    flags = (
        f"--location={ctx.cfg.region}",
        f"--max-attempts={tasks_max_attempts()}",
        f"--max-retry-duration={TASKS_RETRY_SPAN_S}s",
        f"--min-backoff={TASKS_MIN_BACKOFF_S}s",
        f"--max-backoff={TASKS_MAX_BACKOFF_S}s",
        f"--max-doublings={TASKS_MAX_DOUBLINGS}",
        f"--max-dispatches-per-second={TASKS_MAX_DISPATCHES_PER_S}",
        f"--max-concurrent-dispatches={PROFILES[TASKS_TARGET].max_instances * PROFILES[TASKS_TARGET].concurrency}",
    )
    plan.upsert(
        ("tasks queues describe", ctx.queue, f"--location={ctx.cfg.region}"),
        ("tasks queues create", ctx.queue, *flags),
        ("tasks queues update", ctx.queue, *flags),
    )


def _identities(plan: Plan, ctx: Context) -> None:
    plan.section("Service accounts: one per function, plus the build, push and task identities")
    for name, email in ctx.accounts.items():
        plan.ensure(
            ("iam service-accounts describe", email),
            ("iam service-accounts create", account_id(name), f"--display-name=Synq {name}"),
        )
    # What Cloud Build needs to turn the source into an image (the default build account may lack
    # it in a new project, or hold far more).
    build = f"serviceAccount:{ctx.accounts[BUILD_IDENTITY]}"
    plan.grant("projects", ctx.cfg.project, build, "roles/cloudbuild.builds.builder", "--condition=None")


def _secrets(plan: Plan, ctx: Context) -> None:
    """Each secret a function reads, once: created empty if missing; its value only a person gives."""
    secrets = sorted({secret for profile in ctx.profiles.values() for _, secret in profile.secrets})
    if secrets:
        plan.section("Secret Manager: the secrets functions read (their values are added by a person)")
    for secret in secrets:  # all of them first, so the first stop below leaves each one there to fill
        plan.ensure(("secrets describe", secret), ("secrets create", secret, "--replication-policy=automatic"))
    for secret in secrets:
        plan.require(
            ("secrets versions describe", "latest", f"--secret={secret}"),
            f"Secret {secret} has no version yet: {SECRET_VALUES[secret]} | gcloud secrets versions add {secret} "
            f"--data-file=- --project={ctx.cfg.project} (see docs/deploy.md), then run the deploy again.",
        )


def _grants(plan: Plan, ctx: Context) -> None:
    plan.section("Least-privilege grants for each function's own service account")
    for fn in ctx.fns:
        profile, member = ctx.profiles[fn.name], f"serviceAccount:{ctx.accounts[fn.name]}"
        plan.grant("projects", ctx.cfg.project, member, "roles/datastore.user", "--condition=None")
        for key in profile.publishes:
            plan.grant("pubsub topics", ctx.topics[key], member, "roles/pubsub.publisher")
        if profile.bucket_role:
            plan.grant("storage buckets", ctx.bucket, member, profile.bucket_role)
        if profile.enqueues_tasks:
            plan.grant("tasks queues", ctx.queue, member, "roles/cloudtasks.enqueuer", f"--location={ctx.cfg.region}")
            # Putting an OIDC token for the tasks identity on a task is acting as that identity.
            plan.grant("iam service-accounts", ctx.accounts[TASKS_IDENTITY], member, "roles/iam.serviceAccountUser")
        for _, secret in profile.secrets:
            plan.grant("secrets", secret, member, "roles/secretmanager.secretAccessor")
        if profile.signs_urls:
            # signBlob as itself: the token creator role on its own account, and on no other.
            plan.grant("iam service-accounts", ctx.accounts[fn.name], member, "roles/iam.serviceAccountTokenCreator")


def _functions(plan: Plan, ctx: Context) -> None:
    plan.section("Functions (2nd gen), each from the repository root with main.py's target of the same name")
    env = env_vars(ctx.cfg, ctx.fns)
    build = f"--build-service-account=projects/{ctx.cfg.project}/serviceAccounts/{ctx.accounts[BUILD_IDENTITY]}"
    for fn in ctx.fns:
        profile = ctx.profiles[fn.name]
        args = [fn.name, "--gen2", f"--region={ctx.cfg.region}", f"--runtime={RUNTIME}", "--source=.", f"--entry-point={fn.name}"]
        if fn.kind == "http":
            args += ["--trigger-http", "--allow-unauthenticated" if profile.public else "--no-allow-unauthenticated"]
        else:
            args += [f"--trigger-topic={fn.topic}", f"--trigger-service-account={ctx.accounts[PUSH_IDENTITY]}", "--retry"]
        args += [f"--memory={profile.memory}", *((f"--cpu={profile.cpu}",) if profile.cpu else ())]
        # Always given, so a deploy also takes back a concurrency set by hand or by an earlier deploy.
        args.append(f"--concurrency={profile.concurrency}")
        args += [
            f"--timeout={profile.timeout_s}s",
            f"--max-instances={profile.max_instances}",
            f"--service-account={ctx.accounts[fn.name]}",
            build,
            # functions-framework runs gunicorn with 4 threads per CPU it sees unless THREADS says
            # otherwise; Google's guidance for Python is THREADS equal to the concurrency.
            _env_flag({**env, **({"THREADS": str(profile.concurrency)} if profile.concurrency > 1 else {})}),
        ]
        # --set-secrets replaces what a function had; a function whose only secrets this deploy leaves
        # out (the SMTP password without smtp_username) is cleared of what an earlier deploy gave it.
        if profile.secrets:
            args.append("--set-secrets=" + ",".join(f"{var}={secret}:latest" for var, secret in profile.secrets))
        elif profile_for(fn).secrets:
            args.append("--clear-secrets")
        plan.run("functions deploy", *args)


def _invocation(plan: Plan, ctx: Context) -> None:
    plan.section("Who may call each function, and how Pub/Sub retries and dead-letters its events")
    region = f"--region={ctx.cfg.region}"
    # Pub/Sub's service agent mints each push delivery's OIDC token as the push identity. It may do so
    # by default only in a project whose agent was created after 8 April 2021; an older project's
    # agent needs the role granted, or no event function ever receives a delivery (Eventarc: "Roles
    # and permissions for Cloud Run functions targets"). Granted on that one account only.
    plan.grant("iam service-accounts", ctx.accounts[PUSH_IDENTITY], ctx.pubsub_agent(plan), "roles/iam.serviceAccountTokenCreator")
    for fn in ctx.fns:
        if fn.name == TASKS_TARGET:
            plan.run("functions add-invoker-policy-binding", fn.name, region, f"--member=serviceAccount:{ctx.accounts[TASKS_IDENTITY]}")
        if fn.kind != "event":
            continue
        profile = ctx.profiles[fn.name]
        plan.run("functions add-invoker-policy-binding", fn.name, region, f"--member=serviceAccount:{ctx.accounts[PUSH_IDENTITY]}")
        # Eventarc made the push subscription when it deployed the function (and may remake it on a
        # redeploy, hence setting it on every run). Its ack deadline covers the function's timeout,
        # so Pub/Sub never redelivers an event the function is still working on.
        trigger = plan.lookup("functions describe", fn.name, region, value="eventTrigger.trigger.basename()")
        subscription = plan.lookup(
            "eventarc triggers describe", trigger, f"--location={ctx.cfg.region}", value="transport.pubsub.subscription.basename()"
        )
        plan.run(
            "pubsub subscriptions update",
            subscription,
            f"--ack-deadline={min(profile.timeout_s, ACK_DEADLINE_MAX_S)}",
            f"--min-retry-delay={RETRY_MIN_S}s",
            f"--max-retry-delay={RETRY_MAX_S}s",
            f"--dead-letter-topic={dead_letter_topic(str(fn.topic))}",
            f"--max-delivery-attempts={profile.max_delivery_attempts}",
        )
        # Dead-lettering also needs Pub/Sub's agent to acknowledge the message on the subscription.
        plan.grant("pubsub subscriptions", subscription, ctx.pubsub_agent(plan), "roles/pubsub.subscriber")


def _scheduler(plan: Plan, ctx: Context) -> None:
    ticked = [fn for fn in ctx.fns if fn.topic_key in TICKS]
    if ticked:
        plan.section("Cloud Scheduler: the reconciler's clock")
    for fn in ticked:
        job, location = f"synq-{fn.topic}", f"--location={ctx.cfg.region}"
        flags = (location, f"--schedule={TICKS[str(fn.topic_key)]}", f"--topic={fn.topic}", "--message-body={}", "--time-zone=Etc/UTC")
        plan.upsert(
            ("scheduler jobs describe", job, location),
            ("scheduler jobs create pubsub", job, *flags),
            ("scheduler jobs update pubsub", job, *flags),
        )


def _checks(plan: Plan, ctx: Context) -> None:
    """The download links notifications carry must reach the API: fetch a public route at their base URL."""
    if not any(fn.name == "api" for fn in ctx.fns):
        return
    plan.section("Check that the download links' base URL (SYNQ_PUBLIC_API_URL) reaches the API")
    url = ctx.cfg.public_api_url + API_CHECK_PATH
    message = (
        f"{url} does not answer, so the download links in notifications would not work: pass the URL the "
        "API answers on as --public-api-url (docs/deploy.md), then run the deploy again."
    )
    plan.lines.append(f"curl -fsS -o /dev/null --max-time 30 {shlex.quote(url)} || {{ echo {shlex.quote(message)} >&2; exit 1; }}")


# -- running ---------------------------------------------------------------------------------------------


def execute(
    lines: Iterable[str],
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    attempts: int = 3,
    pause_s: float = 15.0,
    out: TextIO = sys.stdout,
) -> None:
    """Run each line in bash, in order, stopping at the first that keeps failing.

    A failed line is retried: every line is idempotent, and some failures pass with time (IAM is
    eventually consistent, so a service account created a moment ago may not be grantable yet)."""
    for line in lines:
        print(line if line.startswith("#") else f"+ {line}", file=out, flush=True)
        if line.startswith("#"):
            continue
        for attempt in range(1, attempts + 1):
            done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=cwd, env=env, check=False)
            if done.returncode == 0:
                break
            if attempt == attempts:
                raise DeployError(f"this step failed {attempts} times (exit {done.returncode}):\n{line}")
            time.sleep(pause_s * attempt)


def parse_args(argv: Sequence[str] | None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(prog="infra/deploy.sh", description="Create or update the Synq environment with gcloud.")
    parser.add_argument("project", help="Google Cloud project id")
    parser.add_argument("region", help="region for the functions, bucket, queue and scheduler, e.g. us-central1")
    parser.add_argument("--dry-run", action="store_true", help="print every command, one per line, and run none")
    parser.add_argument("--bucket", help="bucket name (default: PROJECT-synq)")
    parser.add_argument("--firestore-location", help="Firestore location, fixed once created (default: REGION)")
    parser.add_argument("--export-days", type=int, default=30, help="days an export file is kept (default 30)")
    parser.add_argument("--payload-days", type=int, default=0, help="days a large job payload is kept (default 0: as long as its job)")
    parser.add_argument(
        "--public-api-url",
        default="",
        metavar="URL",
        help="https URL the API answers on from the internet, the base of the download links in notifications "
        "(default: https://REGION-PROJECT.cloudfunctions.net/api)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="another common.config.Settings field for every function, e.g. --setting quality_threshold=70",
    )
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", args.project):
        parser.error(f"{args.project!r} is not a project id")
    if not re.fullmatch(r"[a-z]+-[a-z]+[0-9]+", args.region):
        parser.error(f"{args.region!r} is not a region such as us-central1")
    if args.export_days < 1 or args.payload_days < 0:
        parser.error("--export-days must be at least 1 and --payload-days at least 0")
    settings = []
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep or name not in Settings.model_fields:
            parser.error(f"--setting {item!r}: expected FIELD=VALUE with a common.config.Settings field")
        if name in DEPLOY_SETTINGS:
            parser.error(f"--setting {name}: set by the deploy itself (see docs/deploy.md)")
        if name in LOCAL_ONLY_SETTINGS:
            parser.error(f"--setting {name}: for the local stack only; a deployment signs storage URLs through IAM (see docs/deploy.md)")
        # The name patterns also catch a secret field that no function reads from Secret Manager yet.
        if name in secret_settings() or "password" in name or "secret" in name:
            parser.error(f"--setting {name}: a secret, which functions read from Secret Manager, never from a plain setting (see docs/deploy.md)")
        if name == "chunk_lanes":
            # Lanes work around the Pub/Sub emulator's two pushes at a time (infra/stack.py PUSH_LANES);
            # a deployment has one chunks topic, which Cloud Pub/Sub pushes from without that limit.
            parser.error("--setting chunk_lanes: for the local stack only; a deployment publishes every chunk to one topic")
        settings.append((name, value))
    api_url = args.public_api_url.rstrip("/")
    if api_url:
        parts = urlsplit(api_url)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            parser.error(f"--public-api-url {args.public_api_url!r}: expected an https URL without query or fragment")
    cfg = Config(
        project=args.project,
        region=args.region,
        bucket=args.bucket or f"{args.project}-synq",
        firestore_location=args.firestore_location or args.region,
        export_days=args.export_days,
        payload_days=args.payload_days,
        settings=tuple(settings),
        api_url=api_url,
    )
    return cfg, args.dry_run


def main(argv: Sequence[str] | None = None) -> int:
    cfg, dry_run = parse_args(argv)
    try:
        lines = build_plan(cfg)
    except (DeployError, TopologyError) as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 2
    if dry_run:
        print("\n".join(lines))
        return 0
    if shutil.which("gcloud") is None:
        print("deploy: gcloud is not on PATH (see docs/deploy.md)", file=sys.stderr)
        return 2
    try:
        execute(lines)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    print(f"deployed to {cfg.project} ({cfg.region})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
