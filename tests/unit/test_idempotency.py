"""Idempotency-Key: the pure rules, and the Router hook over an in-memory key store (no emulator)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import flask
import pytest

from common import errors, idempotency
from common.auth import Principal
from common.http import Request, Response, Router
from common.idempotency import Idempotency, decide, fingerprint, key_id, parse_key
from common.models.base import utcnow
from common.store.idempotency import Existing
from common.store.paths import Scope

app = flask.Flask(__name__)
PATH = "/api/v1/pim/things"


# -- the pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "x" * 255, "8e03978e-40d5-43e8-bc93-6894a57f9324", 'with space and "quotes" ~!@#$%^&*()', "a/b/../c"])
def test_printable_ascii_keys_of_1_to_255_characters_are_accepted(key: str) -> None:
    assert parse_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "é", "tab\there", "nul\x00", "del\x7f", "emoji 😀"])
def test_other_keys_are_400(key: str) -> None:
    with pytest.raises(errors.BadRequest) as info:
        parse_key(key)
    assert info.value.code == "invalid_idempotency_key"
    assert info.value.status == 400


def test_key_ids_are_sha256_hex_path_segments_per_caller() -> None:
    assert key_id("user-1", "a/b") == "9be9596a05e88a70b734549fd243cd737f8d3d9f2cad00e904f194ddb8127534"
    assert len({key_id("user-1", "k1"), key_id("user-1", "k2"), key_id("user-1", "K1"), key_id("user-2", "k1")}) == 4


def test_the_fingerprint_covers_method_path_query_and_body() -> None:
    base = fingerprint("POST", "/a", b"", b'{"x":1}')
    assert base == fingerprint("POST", "/a", b"", b'{"x":1}')
    others = [
        fingerprint("PUT", "/a", b"", b'{"x":1}'),
        fingerprint("POST", "/b", b"", b'{"x":1}'),
        fingerprint("POST", "/a", b"v=1", b'{"x":1}'),
        fingerprint("POST", "/a", b"", b'{"x": 1}'),
        fingerprint("POST", "/a?", b"", b'{"x":1}'),
    ]
    assert len({base, *others}) == 6


NOW = utcnow()
AGO, LATER = NOW - timedelta(seconds=1), NOW + timedelta(minutes=5)


def _record(**overrides: Any) -> dict[str, Any]:
    return {"fingerprint": "f", "state": "done", "locked_until": LATER, "expires_at": NOW + timedelta(hours=24)} | overrides


@pytest.mark.parametrize(
    ("record", "outcome"),
    [
        (None, "take_over"),
        (_record(), "replay"),
        (_record(fingerprint="other"), "reused"),
        (_record(state="in_progress"), "in_progress"),
        (_record(state="in_progress", fingerprint="other"), "reused"),
        (_record(state="in_progress", locked_until=AGO), "take_over"),
        (_record(expires_at=AGO), "take_over"),
        (_record(expires_at=AGO, fingerprint="other"), "take_over"),
    ],
    ids=["absent", "done", "other-request", "running", "running-other-request", "lock-lapsed", "expired", "expired-other-request"],
)
def test_decide(record: dict[str, Any] | None, outcome: str) -> None:
    assert decide(record, "f", NOW) == outcome


# -- the hook, over an in-memory twin of the Firestore key store --------------------------------------


class MemoryKeys:
    """KeyStore with Firestore's create()/precondition semantics, thread-safe."""

    def __init__(self) -> None:
        self.docs: dict[tuple[Scope, str], tuple[dict[str, Any], int]] = {}
        self.bodies: dict[str, str] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1)

    def claim(self, scope: Scope, kid: str, record: dict[str, Any]) -> Existing | None:
        with self._lock:
            if (scope, kid) in self.docs:
                stored, version = self.docs[(scope, kid)]
                return Existing(dict(stored), version)  # type: ignore[arg-type]
            self.docs[(scope, kid)] = (dict(record), next(self._versions))
            return None

    def take_over(self, scope: Scope, kid: str, version: Any) -> bool:
        with self._lock:
            current = self.docs.get((scope, kid))
            if current is not None and current[1] != version:
                return False
            self.docs.pop((scope, kid), None)
            return True

    def complete(self, scope: Scope, kid: str, fields: dict[str, Any]) -> None:
        with self._lock:
            stored, _ = self.docs[(scope, kid)]
            self.docs[(scope, kid)] = ({**stored, **fields}, next(self._versions))

    def release(self, scope: Scope, kid: str) -> None:
        with self._lock:
            self.docs.pop((scope, kid), None)

    def put_body(self, scope: Scope, kid: str, text: str) -> str:
        self.bodies[f"memory/{kid}"] = text
        return f"memory/{kid}"

    def get_body(self, name: str) -> str:
        return self.bodies[name]

    def record(self, tenant: str, key: str) -> dict[str, Any] | None:
        found = self.docs.get((Scope("org", tenant), key_id("user-1", key)))
        return found[0] if found else None


def _authenticate(request: Request) -> Principal:
    """Two callers: `good` (user-1, admin) and `other` (user-2, editor)."""
    scope = Scope("org", request.headers.get("X-Tenant-ID", "t1"))
    if request.headers.get("Authorization") == "Bearer good":
        return Principal("user-1", "u@example.com", "admin", scope, "127.0.0.1")
    if request.headers.get("Authorization") == "Bearer other":
        return Principal("user-2", "o@example.com", "editor", scope, "127.0.0.1")
    raise errors.Unauthorized("The token is unknown or revoked.")


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> MemoryKeys:
    monkeypatch.setattr(idempotency, "authenticate", _authenticate)
    return MemoryKeys()


class Api:
    """A router with the hook and one POST route whose behaviour a test sets; counts handler runs."""

    def __init__(self, keys: MemoryKeys) -> None:
        self.runs = 0
        self.behaviour: Callable[[Request], Response] = lambda request: Response({"n": self.runs, "body": request.json(max_bytes=1 << 20)})
        self.router = Router()
        self.router.use(Idempotency(keys))

        @self.router.route("POST", PATH, summary="x")
        def create(request: Request) -> Response:
            self.runs += 1
            return self.behaviour(request)

        @self.router.route("GET", PATH, summary="x")
        def read(request: Request) -> Response:
            self.runs += 1
            return Response({"n": self.runs})

    def call(self, body: str = '{"a":1}', key: str | None = "k-1", method: str = "POST", **headers: str) -> flask.Response:
        sent = {"Authorization": "Bearer good", "Content-Type": "application/json", **headers}
        if key is not None:
            sent["Idempotency-Key"] = key
        with app.test_request_context(PATH, method=method, data=body, headers=sent):
            return self.router.handle(flask.request)


@pytest.fixture
def api(keys: MemoryKeys) -> Iterator[Api]:
    yield Api(keys)


def test_a_repeat_replays_the_stored_answer_without_running_again(api: Api, keys: MemoryKeys) -> None:
    first = api.call()
    assert first.status_code == 200 and first.get_json() == {"n": 1, "body": {"a": 1}}
    assert "Idempotent-Replayed" not in first.headers
    assert keys.record("t1", "k-1")["state"] == "done"  # type: ignore[index]
    again = api.call()
    assert again.status_code == 200
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.runs == 1


def test_the_same_key_with_another_body_or_path_is_422_reused(api: Api) -> None:
    api.call()
    for response in (api.call(body='{"a":2}'), api.call(body='{"a":1} ')):
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "idempotency_key_reused"
    assert api.runs == 1


def test_keys_are_per_tenant(api: Api) -> None:
    assert api.call(**{"X-Tenant-ID": "t1"}).get_json()["n"] == 1
    assert api.call(**{"X-Tenant-ID": "t2"}).get_json()["n"] == 2
    assert api.call(body='{"b":1}', **{"X-Tenant-ID": "t3"}).status_code == 200


def test_keys_are_per_caller(api: Api) -> None:
    """Another caller's request with the same key runs as its own: it neither replays the first
    caller's answer (which it might not be allowed to see) nor collides with it."""
    assert api.call().get_json()["n"] == 1
    other = api.call(Authorization="Bearer other")
    assert other.get_json()["n"] == 2 and "Idempotent-Replayed" not in other.headers
    assert api.call(body='{"b":1}', Authorization="Bearer other").status_code == 422  # its own key now
    assert api.call().headers["Idempotent-Replayed"] == "true"


def test_a_repeat_while_the_first_runs_is_409_in_progress(api: Api) -> None:
    started, finish = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        started.set()
        assert finish.wait(10)
        return Response({"done": True})

    api.behaviour = slow
    results: list[flask.Response] = []
    first = threading.Thread(target=lambda: results.append(api.call()))
    first.start()
    assert started.wait(10)
    second = api.call()
    finish.set()
    first.join(10)
    assert second.status_code == 409
    assert second.get_json()["error"]["code"] == "idempotency_key_in_progress"
    assert results[0].status_code == 200
    assert api.call().headers["Idempotent-Replayed"] == "true"
    assert api.runs == 1


def test_client_errors_are_stored_and_replayed(api: Api) -> None:
    def refuse(request: Request) -> Response:
        raise errors.Unprocessable("nope", code="invalid_payload")

    api.behaviour = refuse
    first = api.call()
    assert first.status_code == 422 and first.get_json()["error"]["code"] == "invalid_payload"
    again = api.call()
    assert again.status_code == 422 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert api.runs == 1


def test_a_server_error_releases_the_key_so_a_retry_runs(api: Api, keys: MemoryKeys) -> None:
    api.behaviour = lambda request: (_ for _ in ()).throw(errors.Transient("storage unavailable"))
    assert api.call().status_code == 503
    assert keys.record("t1", "k-1") is None
    api.behaviour = lambda request: Response({"ok": True})
    retried = api.call()
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert api.runs == 2


def test_a_crash_is_a_500_that_releases_the_key(api: Api, keys: MemoryKeys) -> None:
    def crash(request: Request) -> Response:
        raise RuntimeError("bug")

    api.behaviour = crash
    assert api.call().status_code == 500
    assert keys.record("t1", "k-1") is None


def test_an_exit_inside_the_handler_releases_the_key_and_propagates(api: Api, keys: MemoryKeys) -> None:
    def killed(request: Request) -> Response:
        raise SystemExit(1)  # not an Exception: no answer is made of it

    api.behaviour = killed
    with pytest.raises(SystemExit):
        api.call()
    assert keys.record("t1", "k-1") is None


def test_expired_records_and_lapsed_locks_count_as_absent(api: Api, keys: MemoryKeys) -> None:
    api.call()
    scope_key = (Scope("org", "t1"), key_id("user-1", "k-1"))
    stored, version = keys.docs[scope_key]
    keys.docs[scope_key] = ({**stored, "expires_at": utcnow() - timedelta(seconds=1)}, version)
    assert api.call(body='{"other":true}').status_code == 200  # an expired key is free for any request
    assert api.runs == 2
    stored, version = keys.docs[scope_key]
    keys.docs[scope_key] = ({**stored, "state": "in_progress", "locked_until": utcnow() - timedelta(seconds=1)}, version)
    assert "Idempotent-Replayed" not in api.call(body='{"other":true}').headers
    assert api.runs == 3


def test_without_the_header_or_on_get_nothing_is_stored(api: Api, keys: MemoryKeys) -> None:
    api.call(key=None)
    api.call(key=None)
    api.call(method="GET", body="")
    api.call(method="GET", body="")
    assert api.runs == 4
    assert keys.docs == {}


def test_an_invalid_key_is_400_and_authentication_comes_first(api: Api) -> None:
    bad_key = api.call(key="é")
    assert bad_key.status_code == 400 and bad_key.get_json()["error"]["code"] == "invalid_idempotency_key"
    assert api.call(key="é", Authorization="Bearer bad").status_code == 401
    assert api.call(key="k-1", Authorization="Bearer bad").status_code == 401
    assert api.runs == 0


def test_large_answers_are_kept_outside_the_record(api: Api, keys: MemoryKeys, settings_env: Callable[..., Any]) -> None:
    settings_env(inline_payload_max_bytes=100)
    body = '{"text":"' + "x" * 500 + '"}'
    first = api.call(body=body)
    record = keys.record("t1", "k-1")
    assert record is not None and record["body_json"] is None and record["body_object"] in keys.bodies
    again = api.call(body=body)
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"


def test_the_handler_still_reads_the_body_the_hook_read(api: Api) -> None:
    assert api.call(body='{"deep":[1,2,{"x":null}]}').get_json()["body"] == {"deep": [1, 2, {"x": None}]}
    too_big = api.call(body="[" + "1," * 600_000 + "1]", key="k-2")
    assert too_big.status_code == 413


# -- routes that read no body ------------------------------------------------------------------------------


class NoBodyApi:
    """A router as the api's: the body refusal before the Idempotency-Key hook, one POST route that
    reads no body (as POST /export)."""

    def __init__(self, keys: MemoryKeys) -> None:
        from common.http import RefuseUnreadBody

        self.runs = 0
        self.router = Router()
        self.router.use(RefuseUnreadBody(_authenticate))
        self.router.use(Idempotency(keys))

        @self.router.route("POST", PATH, summary="x")
        def act(request: Request) -> Response:
            self.runs += 1
            return Response({"n": self.runs}, 202)

    def call(self, body: str | None, key: str = "k-1", **headers: str) -> flask.Response:
        sent = {"Authorization": "Bearer good", "Idempotency-Key": key, **headers}
        with app.test_request_context(PATH, method="POST", data=body, headers=sent):
            return self.router.handle(flask.request)


def test_no_body_whitespace_an_empty_object_and_null_are_one_request_to_a_route_that_reads_none(keys: MemoryKeys) -> None:
    api = NoBodyApi(keys)
    first = api.call(None)
    assert first.status_code == 202 and api.runs == 1
    for body, content_type in [("", "application/json"), ("{}", "application/json"), (" { }\n", "application/json"), ("null", "application/json")]:
        again = api.call(body, **{"Content-Type": content_type})
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true", (body, again.get_json())
    assert api.runs == 1


def test_a_body_a_route_refuses_claims_no_key_so_the_corrected_request_runs(keys: MemoryKeys) -> None:
    api = NoBodyApi(keys)
    for body in ('{"format": "csv"}', "{{{", "[]"):
        refused = api.call(body, **{"Content-Type": "application/json"})
        assert refused.status_code in (400, 422), refused.get_json()
        assert keys.docs == {} and api.runs == 0
    ran = api.call(None)
    assert ran.status_code == 202 and "Idempotent-Replayed" not in ran.headers and api.runs == 1
    assert keys.record("t1", "k-1")["status"] == 202  # type: ignore[index]
    # The key now holds that run: a body the route refuses is still refused, never the kept 202.
    assert api.call('{"format": "csv"}', **{"Content-Type": "application/json"}).status_code == 422
