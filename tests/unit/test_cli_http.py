"""synqctl against a scripted HTTP server on 127.0.0.1: what goes over the wire, and what a broken
answer (cut short, stalled, an HTML 5xx) becomes. No Google service is involved."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from synqctl import cli
from synqctl.client import ApiError, Client, Config

TOKEN = "synq_secret-token-never-printed"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    """An answer with a JSON (or, for bytes, raw) body and a correct Content-Length."""
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()

    def send(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return send


def cut_short(declared: int, sent: bytes, stall: float = 0.0) -> Answer:
    """200 that declares `declared` bytes, sends `sent`, waits `stall` seconds, and closes."""

    def send(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        handler.wfile.write(sent)
        handler.wfile.flush()
        time.sleep(stall)
        handler.close_connection = True

    return send


@dataclass
class FakeApi:
    """Answers each request with the next scripted answer for its path, and records it."""

    url: str = ""
    script: dict[str, list[Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, path: str, *answers: Answer) -> None:
        self.script.setdefault(path, []).extend(answers)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            fake.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            answers = fake.script.get(self.path.split("?")[0]) or [reply(599, {"error": {"code": "unscripted", "message": self.path}})]
            answers.pop(0)(self) if len(answers) > 1 else answers[0](self)

        do_GET = do_POST = do_PUT = handle_one

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(api: FakeApi) -> Client:
    return Client(Config(api.url, TOKEN, "tenant-1", "org-1"), timeout=5, sleep=lambda _: None)


@pytest.fixture
def run(api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`main(argv)` against the fake API: (exit code, stdout, stderr)."""
    for name, value in {"SYNQ_API_URL": api.url, "SYNQ_TOKEN": TOKEN, "SYNQ_TENANT_ID": "tenant-1", "SYNQ_ORG_ID": "org-1"}.items():
        monkeypatch.setenv(name, value)

    def main(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert TOKEN not in out + err
        return code, out, err

    return main


PREFIX = "/api/v1/pim"


def test_an_answer_that_stalls_or_is_cut_short_is_an_error_line_and_exit_2(api: FakeApi, run: Callable[..., tuple[int, str, str]]) -> None:
    """The headers came, the body did not (all of it): a timeout or a dropped connection mid-body,
    not a traceback and exit 1."""
    api.on(f"{PREFIX}/bulk-jobs/j-1", cut_short(100, b'{"id"', stall=2))
    code, out, err = run("--http-timeout", "0.3", "job", "j-1")
    assert (code, out) == (2, "")
    assert err.startswith("error: connection_failed: ") and err.count("\n") == 1

    api.on(f"{PREFIX}/bulk-jobs/j-2", cut_short(100, b'{"id"'))
    code, out, err = run("job", "j-2")
    assert (code, out) == (2, "")
    assert err.startswith("error: connection_failed: ") and err.count("\n") == 1


def test_a_download_cut_short_leaves_no_file(api: FakeApi, client: Client, tmp_path: Path) -> None:
    """Cloud Storage declared 1000 bytes and sent 10: that is a failed download, not a 10-byte export."""
    api.on(f"{PREFIX}/exports/e-1/download", reply(302, headers={"Location": "/storage/e-1.jsonl?sig=abc"}))
    api.on("/storage/e-1.jsonl", cut_short(1000, b'{"sku":"A"'))
    out = tmp_path / "catalog.jsonl"

    with pytest.raises(ApiError) as failed:
        cli.save_export(client, "e-1", out)

    assert failed.value.code == "connection_failed" and "10 of 1000 bytes" in failed.value.message
    assert list(tmp_path.iterdir()) == []
    storage = api.seen[-1]
    assert storage.path == "/storage/e-1.jsonl?sig=abc"
    assert not {"Authorization", "X-Tenant-ID", "X-Org-ID"} & storage.headers.keys()


def test_an_errors_file_cut_short_by_an_api_error_leaves_no_part_file(api: FakeApi, client: Client, tmp_path: Path) -> None:
    first = [{"index": 1, "result": "failed", "errors": []}]
    api.on(
        f"{PREFIX}/bulk-jobs/j-1/results", reply(200, first, {"X-Next-Cursor": "2"}), reply(500, {"error": {"code": "internal", "message": "boom"}})
    )

    with pytest.raises(ApiError, match="boom"):
        cli.write_errors(client, "j-1", tmp_path / "errors.jsonl")

    assert list(tmp_path.iterdir()) == []


def test_a_download_interrupted_by_ctrl_c_leaves_no_part_file(tmp_path: Path) -> None:
    class Interrupted:
        def download_export(self, export_id: str, out: Any) -> int:
            out.write(b'{"sku": "A"}\n')
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli.save_export(Interrupted(), "e-1", tmp_path / "catalog.jsonl")  # type: ignore[arg-type]

    assert list(tmp_path.iterdir()) == []


def test_an_import_is_sent_as_compact_json(api: FakeApi, run: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    """The API takes at most 32 MB: a compact 30 MB file must not grow past it with ', ' and ': '."""
    items = [{"sku": f"S-{i}", "title": "Shirt", "tags": ["a", "b"], "é": 1} for i in range(3)]
    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    api.on(f"{PREFIX}/bulk-jobs", reply(201, {"id": "j-1", "status": "PENDING"}))

    assert run("import", str(source), "--type", "BULK_IMPORT") == (0, "j-1\n", "")

    [sent] = api.seen
    assert json.loads(sent.body) == {"job_type": "BULK_IMPORT", "payload": items}
    assert len(sent.body) < source.stat().st_size + 50


@pytest.mark.parametrize(
    ("argv", "path", "created"),
    [
        (["import", "{source}", "--type", "BULK_IMPORT"], "/bulk-jobs", {"id": "j-1", "status": "PENDING"}),
        (["export"], "/export", {"status": "QUEUED", "export_id": "e-1", "message": "queued"}),
        (["retry", "j-0"], "/bulk-jobs/j-0/retry", {"id": "j-1", "status": "PENDING"}),
    ],
)
def test_a_post_sent_again_after_a_503_carries_the_same_idempotency_key(
    api: FakeApi, run: Callable[..., tuple[int, str, str]], tmp_path: Path, argv: list[str], path: str, created: dict[str, Any]
) -> None:
    """The 503 may come after the work was done (an instance that died answering): a resend without a
    key would create a second job or export; with the key it gets the first one back."""
    source = tmp_path / "items.jsonl"
    source.write_text('{"sku": "A", "title": "A"}\n')
    unavailable = reply(503, {"error": {"code": "unavailable", "message": "try again"}}, {"Retry-After": "0"})
    api.on(PREFIX + path, unavailable, reply(201, created))

    code, out, _ = run(*(arg.format(source=source) for arg in argv))

    assert code == 0 and out.splitlines()[0] in ("j-1", "e-1")
    keys = [seen.headers.get("Idempotency-Key") for seen in api.seen]
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


def test_an_html_error_page_is_one_line_on_stderr(api: FakeApi, run: Callable[..., tuple[int, str, str]]) -> None:
    """A load balancer's 502 is not the API's JSON error: its page is cut to one line, as docs/cli.md says."""
    page = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n"
    api.on(f"{PREFIX}/audit", reply(502, page, {"Content-Type": "text/html"}))

    code, out, err = run("audit")

    assert (code, out) == (2, "")
    assert (
        err
        == "error: http_502: <html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> </body> </html>\n"
    )


def test_export_json_prints_only_json_on_stdout(api: FakeApi, run: Callable[..., tuple[int, str, str]]) -> None:
    """`export --wait --json | jq`: the record alone (it holds the id), not the id line before it."""
    api.on(f"{PREFIX}/export", reply(202, {"status": "QUEUED", "message": "Export queued.", "export_id": "e-1"}))
    record = {"id": "e-1", "status": "COMPLETED", "object": "exports/e-1.jsonl", "product_count": 1}
    api.on(f"{PREFIX}/exports/e-1", reply(200, record))

    code, out, err = run("export", "--wait", "--json")

    assert code == 0 and json.loads(out) == record
    assert err == "export e-1: COMPLETED\n"
    code, out, _ = run("export", "--json")  # not waiting: the API's answer, as JSON too
    assert code == 0 and json.loads(out) == {"status": "QUEUED", "message": "Export queued.", "export_id": "e-1"}


def test_wait_gives_up_at_timeout_not_a_whole_interval_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--timeout 5 --interval 60`: the last sleep ends at the deadline, not 55 s past it."""
    now = [0.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))

    with pytest.raises(cli.UsageError, match="timed out after 5s: job j-1 is still PROCESSING"):
        cli.poll(lambda: {"status": "PROCESSING"}, interval=60, timeout=5, what="job j-1", on_update=lambda _: None)

    assert now[0] == 5


def test_wait_rides_out_a_few_lost_answers_but_not_a_client_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: None)
    answers: list[Any] = [
        ApiError(0, "connection_failed", "the answer from http://api was cut short"),
        ApiError(502, "http_502", "Bad Gateway"),
        {"status": "PROCESSING"},
        *[ApiError(0, "connection_failed", "cannot reach http://api")] * (cli.POLL_LOST_ANSWERS - 1),
        {"status": "COMPLETED"},
    ]

    def fetch() -> dict[str, Any]:
        answer = answers.pop(0)
        if isinstance(answer, ApiError):
            raise answer
        return dict(answer)

    assert cli.poll(fetch, interval=1, timeout=None, what="job j-1", on_update=lambda _: None) == {"status": "COMPLETED"}
    assert capsys.readouterr().err.count("warning: ") == 2 + cli.POLL_LOST_ANSWERS - 1

    lost = [ApiError(0, "connection_failed", "cannot reach http://api")] * cli.POLL_LOST_ANSWERS
    with pytest.raises(ApiError, match="connection_failed"):
        cli.poll(lambda: (_ for _ in ()).throw(lost.pop()), interval=1, timeout=None, what="job j-1", on_update=lambda _: None)
    assert lost == []  # the fifth in a row ends the wait
    with pytest.raises(ApiError, match="not_found"):
        cli.poll(lambda: (_ for _ in ()).throw(ApiError(404, "not_found", "no job")), interval=1, timeout=None, what="j", on_update=lambda _: None)


def test_ctrl_c_during_a_wait_says_once_that_the_job_keeps_running(
    api: FakeApi, run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"title": "T", "sku": "S-1"}\n')
    api.on(f"{PREFIX}/bulk-jobs", reply(201, {"id": "j-1", "status": "PENDING"}))
    api.on(f"{PREFIX}/bulk-jobs/j-1", reply(200, {"id": "j-1", "status": "PROCESSING", "processed_items": 0, "failed_items": 0, "total_items": 1}))

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupt)

    code, out, err = run("import", str(items), "--type", "BULK_IMPORT", "--wait")

    assert (code, out) == (cli.EXIT_INTERRUPTED, "j-1\n")
    assert err.splitlines()[-1] == "interrupted; job j-1 keeps running (see: python -m synqctl job j-1)"
    assert err.count("interrupted") == 1


def after(event: threading.Event, answer: Answer) -> Answer:
    """`answer`, once the test has set `event` (at most 10 s later)."""

    def send(handler: http.server.BaseHTTPRequestHandler) -> None:
        event.wait(10)
        answer(handler)

    return send


def synqctl_process(api: FakeApi, *argv: str, unbuffered: bool = False) -> subprocess.Popen[str]:
    """`python -m synqctl ARGV…` against the fake API, stdout and stderr piped; stdout block-buffered
    as a user's is, unless `unbuffered` (PYTHONUNBUFFERED=1, which this machine's shell may set)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED" and not k.startswith("SYNQ_")}
    env |= {"SYNQ_API_URL": api.url, "SYNQ_TOKEN": TOKEN, "SYNQ_TENANT_ID": "tenant-1", "SYNQ_ORG_ID": "org-1"}
    env |= {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    command = [sys.executable, "-m", "synqctl", *argv]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    ("closed", "command"),
    [
        ("stdout after the id", ["import", "{source}", "--type", "BULK_IMPORT", "--wait", "--errors-out", "{errors}"]),  # `… | head -1`
        ("stdout before the id", ["import", "{source}", "--type", "BULK_IMPORT", "--wait", "--errors-out", "{errors}"]),  # `… | true`
        ("stderr", ["import", "{source}", "--type", "BULK_IMPORT", "--wait", "--errors-out", "{errors}"]),  # `… 2>&1 | head -1`
        ("stdout after the id", ["export", "--wait"]),
    ],
)
def test_a_wait_whose_reader_went_away_still_exits_as_the_job_ended(api: FakeApi, tmp_path: Path, closed: str, command: list[str]) -> None:
    """`set -o pipefail; synqctl import … --wait | head -1`: the pipeline must fail when the job FAILED.
    The wait goes on without the stream, the errors file is still written, and nothing is said about
    the broken pipe (no traceback, no 'Exception ignored')."""
    source, errors = tmp_path / "items.jsonl", tmp_path / "errors.jsonl"
    source.write_text('{"sku": "A", "title": "A"}\n')
    went_away = threading.Event()
    created = after(went_away, reply(201, {"id": "j-1", "status": "PENDING"})) if closed != "stdout after the id" else reply(201, {"id": "j-1"})
    api.on(f"{PREFIX}/bulk-jobs", created)
    api.on(f"{PREFIX}/bulk-jobs/j-1", after(went_away, reply(200, {"id": "j-1", "status": "FAILED", "total_items": 1, "failed_items": 1})))
    api.on(f"{PREFIX}/bulk-jobs/j-1/results", reply(200, [{"index": 0, "result": "failed", "errors": []}]))
    api.on(f"{PREFIX}/export", reply(202, {"status": "QUEUED", "message": "queued", "export_id": "e-1"}))
    api.on(f"{PREFIX}/exports/e-1", after(went_away, reply(200, {"id": "e-1", "status": "FAILED", "error": "boom"})))
    process = synqctl_process(api, *(arg.format(source=source, errors=errors) for arg in command))
    if closed == "stderr":
        process.stderr.close()  # type: ignore[union-attr]
        kept = process.stdout
    else:
        if closed == "stdout after the id":
            assert process.stdout.readline() in ("j-1\n", "e-1\n")  # type: ignore[union-attr]
        process.stdout.close()  # type: ignore[union-attr]
        kept = process.stderr
    went_away.set()
    shown = kept.read()  # type: ignore[union-attr]
    code = process.wait(timeout=30)

    assert code == cli.EXIT_FAILED, shown
    assert "Traceback" not in shown and "Exception ignored" not in shown and "BrokenPipe" not in shown
    if command[0] == "import":
        assert json.loads(errors.read_text())["index"] == 0
    if closed == "stderr":
        assert "status:   FAILED" in shown


@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_list_whose_reader_went_away_exits_0_without_a_word(api: FakeApi, unbuffered: bool) -> None:
    """`synqctl audit | true`: the table had nowhere to go, which is no error; Python's flush at exit
    must not turn it into 'Exception ignored … BrokenPipeError' and exit 120."""
    went_away = threading.Event()
    api.on(f"{PREFIX}/audit", after(went_away, reply(200, [{"action": "bulk_job.created", "created_at": "2026-01-01T00:00:00Z"}])))
    process = synqctl_process(api, "audit", unbuffered=unbuffered)
    process.stdout.close()  # type: ignore[union-attr]
    went_away.set()
    err = process.stderr.read()  # type: ignore[union-attr]

    assert (process.wait(timeout=30), err) == (0, "")


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        (["PROCESSING", 0, 502, 0], "timed out after 5s: job j-1 is still PROCESSING (the last poll got no answer: connection_failed"),
        ([0, 0, 0, 0], "timed out after 5s: job j-1 was not seen yet (the last poll got no answer: connection_failed"),
    ],
)
def test_a_timeout_reached_while_answers_are_lost_is_the_timeout(monkeypatch: pytest.MonkeyPatch, answers: list[Any], said: str) -> None:
    """`--timeout 5` while the connection is down: the wait ended because time ran out, and the
    message says so (exit 2 as any timeout), not `connection_failed` as if the five lost answers had."""
    now = [0.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))

    def fetch() -> dict[str, Any]:
        answer = answers.pop(0)
        if answer == 0:
            raise ApiError(0, "connection_failed", "cannot reach http://api: [Errno 111] Connection refused")
        if answer == 502:
            raise ApiError(502, "http_502", "Bad Gateway")
        return {"status": answer}

    with pytest.raises(cli.UsageError) as ended:
        cli.poll(fetch, interval=2, timeout=5, what="job j-1", on_update=lambda _: None)

    assert str(ended.value).startswith(said) and str(ended.value).endswith("it keeps running on the server.")
    assert answers == [] and now[0] == 5


def test_an_error_page_cut_to_one_line_never_shows_part_of_the_token(api: FakeApi, run: Callable[..., tuple[int, str, str]]) -> None:
    """A proxy's error page may echo the request's headers. The page is cut to 200 characters: the
    token was replaced only when whole, so a cut through it printed its first half."""
    page = f"<html><pre>{'x' * 150}\nAuthorization: Bearer {TOKEN}\n</pre></html>".encode()
    api.on(f"{PREFIX}/audit", reply(400, page, {"Content-Type": "text/html"}))

    code, _, err = run("audit")

    assert code == 2 and err.startswith("error: http_400: <html><pre>xxx")
    assert TOKEN[:12] not in err


def test_a_redirect_s_location_never_shows_the_token(api: FakeApi, run: Callable[..., tuple[int, str, str]]) -> None:
    api.on(f"{PREFIX}/audit", reply(302, headers={"Location": f"https://login.example.com/?token={TOKEN}"}))

    code, _, err = run("audit")

    assert code == 2 and err.startswith("error: unexpected_redirect: the API redirected to https://login.example.com/?token=***;")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNQ_TOKEN", f"{TOKEN}\nsecond-line"),  # `SYNQ_TOKEN=$(cat file)` of a file of two lines
        ("SYNQ_TOKEN", f"{TOKEN} x"),
        ("SYNQ_TOKEN", f"{TOKEN}\u2019"),  # not latin-1: no header can carry it
        ("SYNQ_TENANT_ID", f"t-1\r\nX-Injected: {TOKEN}"),
    ],
)
def test_a_setting_no_header_can_carry_is_refused_without_showing_it(
    api: FakeApi, run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """http.client refused the header with a traceback that printed its value: the whole token."""
    monkeypatch.setenv(name, value)

    code, out, err = run("audit")

    assert (code, out) == (2, "")
    assert err.startswith(f"error: {name} ") and err.count("\n") == 1 and "Traceback" not in err
    assert api.seen == []


@pytest.mark.parametrize("url", ["http://user:pa55word@127.0.0.1:9", "http://user:pa55word@127.0.0.1:9x", "user:pa55word@api.example.com"])
def test_an_api_url_with_a_password_is_refused_without_showing_it(
    run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """`cannot reach http://user:pa55word@…` printed the password; the API takes the token, not one."""
    monkeypatch.setenv("SYNQ_API_URL", url)

    code, out, err = run("audit")

    assert (code, out) == (2, "")
    assert err.startswith("error: SYNQ_API_URL ") and "pa55word" not in err


@pytest.mark.parametrize("busy", [503, 429])
def test_a_wait_ends_at_its_timeout_whatever_the_clients_own_retries_would_wait(
    api: FakeApi, run: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, busy: int
) -> None:
    """`--wait --timeout 5` against an API that answers every poll 503 (or 429) with `Retry-After: 60`:
    the client's retries (5 attempts, each up to 60 s) must not carry the wait minutes past its time,
    and the wait ends as a timeout (exit 2), not as the API's error."""
    now = [0.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    items = tmp_path / "items.jsonl"
    items.write_text('{"title": "T", "sku": "S-1"}\n')
    api.on(f"{PREFIX}/bulk-jobs", reply(201, {"id": "j-1", "status": "PENDING"}))
    api.on(
        f"{PREFIX}/bulk-jobs/j-1",
        reply(200, {"id": "j-1", "status": "PROCESSING", "processed_items": 0, "failed_items": 0, "total_items": 1}),
        reply(busy, {"error": {"code": "unavailable", "message": "try again"}}, {"Retry-After": "60"}),
    )

    code, out, err = run("import", str(items), "--type", "BULK_IMPORT", "--wait", "--timeout", "5", "--interval", "1")

    assert (code, out) == (cli.EXIT_USAGE, "j-1\n")
    assert err.splitlines()[-1].startswith("error: timed out after 5s: job j-1 is still PROCESSING (the last poll got no answer: ")
    assert now[0] <= 5


def test_a_wait_does_not_wait_for_an_answer_past_its_timeout(api: FakeApi, run: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    """A poll the API does not answer (a stalled connection) is given up at the `--timeout`, not after
    `--http-timeout` (60 s by default); here the API would answer 10 s later."""
    items = tmp_path / "items.jsonl"
    items.write_text('{"title": "T", "sku": "S-1"}\n')
    answered = threading.Event()
    api.on(f"{PREFIX}/bulk-jobs", reply(201, {"id": "j-1", "status": "PENDING"}))
    api.on(f"{PREFIX}/bulk-jobs/j-1", after(answered, reply(200, {"id": "j-1", "status": "PROCESSING"})))
    started = time.monotonic()
    try:
        code, out, err = run("import", str(items), "--type", "BULK_IMPORT", "--wait", "--timeout", "1.5")
    finally:
        answered.set()

    assert (code, out) == (cli.EXIT_USAGE, "j-1\n")
    assert err.splitlines()[-1].startswith("error: timed out after 1.5s: job j-1 was not seen yet (the last poll got no answer: ")
    assert time.monotonic() - started < 8  # the API's answer came at 10 s
