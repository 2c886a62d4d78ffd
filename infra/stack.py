"""The local stack: real emulators plus every function under functions-framework, wired as in the cloud.

`make dev` runs `python -m infra.stack` (foreground until Ctrl-C); the test session starts the same
`Stack` on free ports in a temporary directory, so a test run never collides with a running `make dev`.

    Firestore emulator ─┐
    Pub/Sub emulator ───┼── topics with push subscriptions ──▶ dispatch_job / process_chunk / reconcile
    Storage emulator ───┤
    Tasks emulator ─────┘   (its own virtualenv: it pins protobuf<5)
    api (HTTP) on API_PORT (8080 by default)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import lane_topic

ROOT = Path(__file__).resolve().parent.parent

# Function targets of main.py: (name, kind, topic it is pushed from).
HTTP_FUNCTIONS = ["api", "deliver_notification"]
EVENT_FUNCTIONS = {
    "dispatch_job": "jobs_topic",
    "process_chunk": "chunks_topic",
    "run_export": "exports_topic",
    "reconcile": "reconcile_topic",
}
TOPICS = {
    "jobs_topic": "bulk-jobs",
    "chunks_topic": "bulk-job-chunks",
    "exports_topic": "exports",
    "reconcile_topic": "reconcile-ticks",
}
# Longest a pushed handler may run before Pub/Sub redelivers while it still runs.
ACK_DEADLINE_SECONDS = 300
# The Pub/Sub emulator pushes at most two messages at a time per subscription (it runs two push
# loops, each waiting for its handler's answer), where Cloud Pub/Sub pushes as many as the function
# takes. Chunk messages are spread over this many topics, each with its own push subscription
# (common.config Settings.chunk_lanes), so the chunk worker's eight threads all get work.
PUSH_LANES = 4
# Process settings every function runs with, here and deployed (`infra.deploy.env_vars`). glibc gives
# each thread that allocates its own malloc arena, and a function has a dozen (gunicorn's, gRPC's):
# two arenas took ~30 MiB off run_export's peak in a 100k export (216–220 → 188–190 MiB).
PROCESS_ENV = {"MALLOC_ARENA_MAX": "2"}


# Ports this process has handed out: they are only reserved here, bound later by other processes.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port nothing is bound to, below the kernel's ephemeral range, not handed out before.

    The stack picks every port first and its processes bind them later. A port from the ephemeral
    range (what binding port 0 gives) can be taken in between: the Java emulators open extra
    listeners on ephemeral ports as they start. When one sat on a function's port, the function could
    not bind it, the readiness check found the port open, and every push went to the emulator: an
    import stayed PENDING with nothing in any log. Below the range only an explicit bind takes a port.
    """
    low = 20000
    high = _ephemeral_floor()
    for _ in range(500 if high - low >= 1000 else 0):
        port = random.randrange(low, high)
        with _handed_out_lock:
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # an unusual port range: the kernel's choice, as before
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def throwaway_service_account_key() -> str:
    """A service-account key (its JSON) made up for this stack: the functions sign Cloud Storage URLs
    with it, which the storage emulator accepts without checking the signature. It grants nothing
    anywhere: no such account exists."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "synq-local",
            "private_key_id": uuid.uuid4().hex,
            "private_key": pem,
            "client_email": "synq-local-signer@synq-local.iam.gserviceaccount.com",
            "client_id": "0",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@dataclass
class Stack:
    state_dir: Path
    api_port: int = 8080
    project: str = "synq-local"
    seed_demo: bool = True
    reconcile_every: float = 3.0
    stale_after_seconds: float = 10.0
    extra_env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable
    tasks_python: str = str(ROOT / ".venv-tasks" / "bin" / "python")
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    demo: dict[str, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    # Signs download links within this stack only; production takes it from Secret Manager.
    signing_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Signs the stack's Cloud Storage URLs (the download route's redirects); production signs through IAM.
    storage_key: str = field(default_factory=lambda: throwaway_service_account_key())

    @property
    def mail_dir(self) -> Path:
        return self.state_dir / "mail"

    # -- environment ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def client_env(self) -> dict[str, str]:
        """What a process needs to talk to this stack's emulators as the functions do."""
        return {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports['firestore']}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports['pubsub']}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.ports['storage']}",
            "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{self.ports['tasks']}",
            "SYNQ_BUCKET": "synq-local",
            "SYNQ_STALE_AFTER_SECONDS": str(self.stale_after_seconds),
            "SYNQ_ALLOW_PRIVATE_WEBHOOKS": "true",
            "SYNQ_DELIVER_URL": f"http://127.0.0.1:{self.ports['deliver_notification']}/",
            "SYNQ_PUBLIC_API_URL": self.api_url,
            "SYNQ_DOWNLOAD_SIGNING_KEY": self.signing_key,
            "SYNQ_EMULATOR_SIGNING_KEY": self.storage_key,
            "SYNQ_EMULATOR_STORAGE_URL": f"http://127.0.0.1:{self.ports['storage']}",
            "SYNQ_SMTP_HOST": "127.0.0.1",
            "SYNQ_SMTP_PORT": str(self.ports["smtp"]),
            **self.extra_env,
        }

    def function_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNQ_", "FIRESTORE_", "PUBSUB_", "STORAGE_"))}
        env.update(self.client_env())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(PROCESS_ENV)
        # Only the functions publish to the lanes: a test driving the services in-process publishes
        # to the topics it wired itself, lane 0 only.
        env["SYNQ_CHUNK_LANES"] = str(PUSH_LANES)
        env["PYTHONPATH"] = str(ROOT)
        return env

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.state_dir / "logs" / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - the child process owns it
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env or self.function_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # No preexec_fn (e.g. PR_SET_PDEATHSIG): it forces a plain fork() in a process full of gRPC
            # threads, whose fork handlers can abort the child before it execs.
            start_new_session=True,
        )
        handle.close()
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def start_function(self, name: str) -> None:
        port = self.ports[name]
        if port_open(port):
            # The readiness check below would take another process's listener for this function's.
            raise RuntimeError(f"port {port} for {name} is taken by another process")
        functions_framework = str(Path(self.python).parent / "functions-framework")
        proc = self._spawn(
            name,
            [
                functions_framework,
                "--target",
                name,
                "--source",
                str(ROOT / "main.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
        )
        wait_for(f"function {name}", lambda: port_open(port), 60, proc, self.log_path(name))

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def start(self) -> Stack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        for name in ("firestore", "pubsub", "storage", "tasks", "smtp", *HTTP_FUNCTIONS, *EVENT_FUNCTIONS):
            self.ports.setdefault(name, free_port())
        self.ports["api"] = self.api_port
        if port_open(self.api_port):
            raise RuntimeError(f"port {self.api_port} is taken; set API_PORT to another port")
        try:
            self._start_emulators()
            self._wire()
            for name in HTTP_FUNCTIONS:
                self.start_function(name)
            for name in EVENT_FUNCTIONS:
                self.start_function(name)
            wait_for("api", lambda: http_ok(f"{self.api_url}/healthz"), 30)
            if self.seed_demo:
                self._seed()
            self._write_env()
            threading.Thread(target=self._tick, name="reconcile-ticker", daemon=True).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_emulators(self) -> None:
        p = self.ports
        fs = self._spawn(
            "firestore",
            ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{p['firestore']}"],
            os.environ.copy(),
        )
        ps = self._spawn(
            "pubsub",
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port=127.0.0.1:{p['pubsub']}",
                f"--project={self.project}",
            ],
            os.environ.copy(),
        )
        storage_cli = str(Path(self.python).parent / "gcp-storage-emulator")
        st = self._spawn(
            "storage",
            [
                storage_cli,
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(p["storage"]),
                "--default-bucket",
                "synq-local",
                "--in-memory",
            ],
            os.environ.copy(),
        )
        tasks_cli = str(Path(self.tasks_python).parent / "gcloud-tasks-emulator")
        queue = f"projects/{self.project}/locations/us-central1/queues/notifications"
        sm = self._spawn("smtp", [self.python, "-m", "infra.smtp_sink", "--port", str(p["smtp"]), "--dir", str(self.mail_dir)])
        tk = self._spawn("tasks", [tasks_cli, "start", "--port", str(p["tasks"]), "--default-queue", queue], os.environ.copy())
        wait_for("firestore emulator", lambda: http_ok(f"http://127.0.0.1:{p['firestore']}/"), 60, fs, self.log_path("firestore"))
        wait_for("pubsub emulator", lambda: port_open(p["pubsub"]), 60, ps, self.log_path("pubsub"))
        wait_for("storage emulator", lambda: http_ok(f"http://127.0.0.1:{p['storage']}/storage/v1/b"), 60, st, self.log_path("storage"))
        wait_for("tasks emulator", lambda: port_open(p["tasks"]), 60, tk, self.log_path("tasks"))
        wait_for("smtp sink", lambda: port_open(p["smtp"]), 30, sm, self.log_path("smtp"))

    def _wire(self) -> None:
        """Topics, and a push subscription from each event function's topic to its port (the chunks
        topic in PUSH_LANES lanes, each with its own subscription)."""
        from google.cloud import pubsub_v1

        saved = dict(os.environ)
        os.environ.update(self.client_env())
        try:
            publisher = pubsub_v1.PublisherClient()
            subscriber = pubsub_v1.SubscriberClient()
            lanes = {key: PUSH_LANES if key == "chunks_topic" else 1 for key in TOPICS}
            for key, topic in TOPICS.items():
                for lane in range(lanes[key]):
                    publisher.create_topic(name=publisher.topic_path(self.project, lane_topic(topic, lane)))
            for name, topic_key in EVENT_FUNCTIONS.items():
                for lane in range(lanes[topic_key]):
                    topic = publisher.topic_path(self.project, lane_topic(TOPICS[topic_key], lane))
                    subscriber.create_subscription(
                        request={
                            "name": subscriber.subscription_path(self.project, lane_topic(f"{name}-push", lane)),
                            "topic": topic,
                            "push_config": {"push_endpoint": f"http://127.0.0.1:{self.ports[name]}/"},
                            "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                        }
                    )
            subscriber.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def run_python(self, code: str) -> str:
        """Run code against this stack's emulators in a fresh process; returns its stdout."""
        out = subprocess.run([self.python, "-c", code], cwd=ROOT, env=self.function_env(), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return out.stdout

    def mint_token(self, org_id: str, tenant_ids: list[str], email: str, role: str = "admin", expires_in: float | None = None) -> str:
        code = (
            "import json,sys; from datetime import timedelta; from common.models.base import utcnow; "
            "from common.store.tokens import mint_token; "
            f"exp = None if {expires_in!r} is None else utcnow() + timedelta(seconds={expires_in!r}); "
            f"print(mint_token(user_id={str(uuid.uuid4())!r}, email={email!r}, org_id={org_id!r}, "
            f"tenant_ids={tenant_ids!r}, role={role!r}, expires_at=exp))"
        )
        return self.run_python(code).strip().splitlines()[-1]

    def _seed(self) -> None:
        org, tenant = str(uuid.uuid4()), str(uuid.uuid4())
        token = self.mint_token(org, [tenant], "demo@synq.local", "admin")
        self.demo = {"DEMO_ORG_ID": org, "DEMO_TENANT_ID": tenant, "DEMO_TOKEN": token}

    def env_lines(self) -> dict[str, str]:
        env = {"API_URL": self.api_url, **self.client_env(), **self.demo}
        # A multi-line PEM inside JSON, which neither `. stack.env` nor infra.token's reader takes;
        # only the functions (and the test process) sign Cloud Storage URLs.
        env.pop("SYNQ_EMULATOR_SIGNING_KEY")
        if self.demo:
            env |= {
                "SYNQ_API_URL": self.api_url,
                "SYNQ_TOKEN": self.demo["DEMO_TOKEN"],
                "SYNQ_ORG_ID": self.demo["DEMO_ORG_ID"],
                "SYNQ_TENANT_ID": self.demo["DEMO_TENANT_ID"],
            }
        return env

    def _write_env(self) -> None:
        lines = [f"{k}={v}" for k, v in self.env_lines().items()]
        (self.state_dir / "stack.env").write_text("\n".join(lines) + "\n")

    def _tick(self) -> None:
        """The local stand-in for Cloud Scheduler: publish a reconcile tick every few seconds."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        publisher = None
        while not self._stop.wait(self.reconcile_every):
            try:
                if publisher is None:
                    # This stack's own emulator, whatever PUBSUB_EMULATOR_HOST this process has.
                    channel = grpc.insecure_channel(f"127.0.0.1:{self.ports['pubsub']}")
                    publisher = pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=channel))
                topic = publisher.topic_path(self.project, TOPICS["reconcile_topic"])
                publisher.publish(topic, b"{}").result(timeout=10)
            except Exception:  # a missed tick is retried on the next one
                publisher = None

    def stop(self) -> None:
        self._stop.set()
        for name in list(self.procs)[::-1]:
            self.stop_process(name)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Synq local stack until Ctrl-C.")
    parser.add_argument("--state-dir", default=str(ROOT / ".dev"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8080")))
    args = parser.parse_args()
    state = Path(args.state_dir)
    if (state / "logs").exists():
        shutil.rmtree(state / "logs")
    started = time.monotonic()
    stack = Stack(state_dir=state, api_port=args.port)

    def shutdown(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    try:
        stack.start()
        demo = stack.demo
        curl = (
            f"curl -s {stack.api_url}/api/v1/pim/bulk-jobs?type=BULK_IMPORT -H 'Authorization: Bearer {demo['DEMO_TOKEN']}' "
            f"-H 'X-Tenant-ID: {demo['DEMO_TENANT_ID']}' -H 'X-Org-ID: {demo['DEMO_ORG_ID']}'"
        )
        print(
            f"ready in {time.monotonic() - started:.0f}s: API {stack.api_url} org={demo['DEMO_ORG_ID']} "
            f"tenant={demo['DEMO_TENANT_ID']} token={demo['DEMO_TOKEN']} | try: {curl}",
            flush=True,
        )
        print(
            f"environment written to {state / 'stack.env'} (source it for the CLI and tests); logs in {state / 'logs'}",
            flush=True,
        )
        print(f"ports {json.dumps(stack.ports)}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short and leave emulators running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
