"""A small HTTP toolkit over the Flask request functions-framework hands us.

Strict request parsing (content type, size, UTF-8, JSON without NaN or duplicate keys), a route table
with path parameters, and one place that turns any `SynqError` into the JSON error body, and any
other exception into a 503 or 500 one (`errors.unexpected`) rather than the server's HTML page.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import uuid
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import flask

from common import errors
from common.logging import get_logger

if TYPE_CHECKING:
    from pydantic import BaseModel

log = get_logger("synq.http")

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def is_safe_id(value: str) -> bool:
    """True for an id usable as a Firestore path segment: no '/', not '.'/'..', not `__x__`."""
    return bool(_SAFE_ID.fullmatch(value)) and not (value.startswith("__") and value.endswith("__"))


@dataclass
class Response:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    args: Mapping[str, str]
    remote_addr: str
    raw: flask.Request
    params: dict[str, str] = field(default_factory=dict)
    _body: bytes | None = field(default=None, repr=False)

    def client_ip(self, trusted_proxies: int) -> str:
        """The caller's address. A proxy appends the address it was reached from to X-Forwarded-For,
        and anything before that is what the caller sent (forgeable): so the entry `trusted_proxies`
        from the end is the caller's, and with none, the connection's own address."""
        if trusted_proxies <= 0:
            return self.remote_addr
        entries = [e.strip() for e in self.headers.get("X-Forwarded-For", "").split(",")]
        return entries[-trusted_proxies] if len(entries) >= trusted_proxies and entries[-trusted_proxies] else self.remote_addr

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.args.get(name, default)

    def body(self, *, max_bytes: int) -> bytes:
        """The raw body, read once: a hook (idempotency) may read it before the handler does."""
        if self._body is None:
            self._body = read_body(self.raw, max_bytes=max_bytes)
        elif len(self._body) > max_bytes:
            raise errors.PayloadTooLarge(f"Request body exceeds {max_bytes} bytes.")
        return self._body

    def json(self, *, max_bytes: int, required: bool = True, parse: Callable[[str], Any] | None = None) -> Any:
        """The body as JSON, parsed strictly (by `parse` when given, else `loads_strict`); raises the
        matching 4xx for anything else."""
        return parse_json_bytes(self.raw, self.body(max_bytes=max_bytes), required=required, parse=parse or loads_strict)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise errors.BadRequest(f"Duplicate key {key[:100]!r} in JSON object.", code="malformed_json")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise errors.BadRequest(f"{name} is not valid JSON.", code="malformed_json")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise errors.BadRequest(f"Number {literal[:40]} is too large for a 64-bit float.", code="malformed_json")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_STRICT = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, parse_float=_finite_float)
_SPACE = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]
_PIECE = 1 << 20
_LONE_SURROGATE = "JSON holds a lone UTF-16 surrogate escape."


def compact_json(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """The compact JSON a job stores: no spaces, keys in the order given, non-ASCII unescaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=default)


def utf8_pieces(text: str) -> Iterator[bytes]:
    """`text.encode("utf-8")` a MiB of characters at a time, so a large text's encoded copy is never whole."""
    for at in range(0, len(text), _PIECE):
        yield text[at : at + _PIECE].encode("utf-8")


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else sum(map(len, utf8_pieces(text)))


@contextlib.contextmanager
def _malformed_as_400() -> Iterator[None]:
    try:
        yield
    except RecursionError as exc:
        raise errors.BadRequest("JSON is nested too deeply.", code="malformed_json") from exc
    except json.JSONDecodeError as exc:
        raise errors.BadRequest(
            f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            code="malformed_json",
        ) from exc
    except UnicodeEncodeError as exc:
        raise errors.BadRequest(_LONE_SURROGATE, code="malformed_json") from exc
    except ValueError as exc:  # e.g. an integer literal past Python's 4300-digit conversion limit
        raise errors.BadRequest("Request body holds a number that cannot be read.", code="malformed_json") from exc


def loads_strict(text: str) -> Any:
    """JSON as RFC 8259 has it: no NaN/Infinity (nor numbers that overflow to it), no duplicate keys,
    no lone surrogates (they cannot be stored as UTF-8), bounded nesting."""
    with _malformed_as_400():
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, parse_float=_finite_float)
        if _SURROGATE_ESCAPE.search(text):
            # Escaped surrogate pairs decode to one character; only a lone one survives and fails here.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


@dataclass(frozen=True)
class ItemArray:
    """A JSON array held as the compact text of its items (`compact_json` of each, joined), with what
    a caller checks per item without parsing it again: the first character of its text (`{` for an
    object, `"` for a string) and its size in UTF-8 bytes. Only the first `len(kinds)` items are
    held; `count` is all of them."""

    json: str
    count: int
    kinds: str
    sizes: array[int]

    @classmethod
    def of(cls, values: Iterable[Any], keep: int) -> ItemArray:
        """The items `values`, each written as compact JSON (only the first `keep`: the rest are counted)."""
        return cls.of_texts((compact_json(value) if at < keep else "" for at, value in enumerate(values)), keep)

    @classmethod
    def of_texts(cls, texts: Iterable[str], keep: int) -> ItemArray:
        """`of` the values whose compact JSON `texts` are (as a job stores its items), none parsed."""
        builder = _ItemArrayBuilder(keep)
        for text in texts:
            builder.add_text(text)
        return builder.checked()


def _utf8_len(text: str) -> int | None:
    """The size of a text in UTF-8, or None when it holds a lone surrogate (and cannot be encoded)."""
    try:
        return utf8_size(text)
    except UnicodeEncodeError:
        return None


class _ItemArrayBuilder:
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.count = 0
        self.pieces: list[str] = []
        self.kinds: list[str] = []
        self.sizes = array("q")
        self.lone_surrogate = False

    def add(self, value: Any) -> None:
        self.add_text(compact_json(value) if self.count < self.keep else "")

    def add_text(self, piece: str) -> None:
        if self.count < self.keep:
            size = _utf8_len(piece)
            self.lone_surrogate |= size is None
            self.sizes.append(size or 0)
            self.pieces.append(piece)
            self.kinds.append(piece[:1])
        self.count += 1

    def checked(self) -> ItemArray:
        """`build`, refusing the items if one holds a lone surrogate (it cannot be stored as UTF-8)."""
        if self.lone_surrogate:
            raise errors.BadRequest(_LONE_SURROGATE, code="malformed_json")
        return self.build()

    def build(self) -> ItemArray:
        pieces = self.pieces
        if pieces:  # the brackets go on the end pieces, so the join is the only copy of the whole text
            pieces[0] = "[" + pieces[0]
            pieces[-1] += "]"
        text = ",".join(pieces) if pieces else "[]"
        pieces.clear()
        return ItemArray(text, self.count, "".join(self.kinds), self.sizes)


def loads_strict_itemised(text: str, paths: Collection[tuple[str, ...]], keep: int) -> Any:
    """`loads_strict(text)`, except that an array found down one of `paths` (member names from the
    top-level object, through nested objects) comes back as an `ItemArray` holding at most `keep` items.

    Each item is decoded (strictly), re-encoded as compact JSON and dropped before the next one is
    read, so a 32 MB array never exists as Python objects all at once: parsed whole, they took about
    twice the text's size, on top of the text and its compact copy. Items past `keep` are still read,
    so the whole text is checked and counted, but not held. Whatever `loads_strict` refuses is refused
    here too, with the same message, found in the same order.
    """
    start = _SPACE(text, 0).end()
    if not text.startswith("{", start):
        return loads_strict(text)
    reader = _ObjectReader(text, paths, keep)
    with _malformed_as_400():
        value, at = reader.members(start, ())
        at = reader.skip(at)
        if at != len(text):
            reader.fail("Extra data", at)
    # Last, as in loads_strict, which checks once the whole text is parsed. The items' sizes already
    # tell; the rest is encoded only when the text holds a surrogate escape at all.
    if reader.lone_surrogate or (_SURROGATE_ESCAPE.search(text) and _utf8_len(compact_json(value, default=_as_empty)) is None):
        raise errors.BadRequest(_LONE_SURROGATE, code="malformed_json")
    return value


def _as_empty(item_array: ItemArray) -> list[Any]:
    return []  # its items were checked as they were read


class _ObjectReader:
    """Reads objects a member at a time down to the arrays it is after; raises `json.JSONDecodeError`
    as the C scanner would."""

    def __init__(self, text: str, paths: Collection[tuple[str, ...]], keep: int) -> None:
        self.text, self.keep = text, keep
        self.arrays = set(paths)
        self.objects = {path[:depth] for path in self.arrays for depth in range(1, len(path))}
        self.lone_surrogate = False

    def skip(self, at: int) -> int:
        return int(_SPACE(self.text, at).end())

    def fail(self, message: str, at: int) -> NoReturn:
        raise json.JSONDecodeError(message, self.text, at)

    def members(self, start: int, path: tuple[str, ...]) -> tuple[dict[str, Any], int]:
        """The object that opens at `text[start]` (reached by `path`), and the index past it."""
        text, pairs = self.text, []
        at = self.skip(start + 1)
        if text.startswith("}", at):
            at += 1
        else:
            while True:
                if not text.startswith('"', at):
                    self.fail("Expecting property name enclosed in double quotes", at)
                key, at = json.decoder.scanstring(text, at + 1)  # type: ignore[attr-defined]
                at = self.skip(at)
                if not text.startswith(":", at):
                    self.fail("Expecting ':' delimiter", at)
                at = self.skip(at + 1)
                value: Any
                here = (*path, key)
                if here in self.arrays and text.startswith("[", at):
                    value, at = self._items(at)
                elif here in self.objects and text.startswith("{", at):
                    value, at = self.members(at, here)
                else:
                    value, at = _STRICT.raw_decode(text, at)
                pairs.append((key, value))
                at = self.skip(at)
                if text.startswith(",", at):
                    at = self.skip(at + 1)
                elif text.startswith("}", at):
                    at += 1
                    break
                else:
                    self.fail("Expecting ',' delimiter", at)
        return _reject_duplicates(pairs), at  # as the C scanner's hook does, when the object closes

    def _items(self, at: int) -> tuple[ItemArray, int]:
        """The array that opens at `text[at]`, an item at a time; returns it and the index past it."""
        text, builder = self.text, _ItemArrayBuilder(self.keep)
        at = self.skip(at + 1)
        if not text.startswith("]", at):
            while True:
                value, at = _STRICT.raw_decode(text, at)
                builder.add(value)
                at = self.skip(at)
                if text.startswith(",", at):
                    at = self.skip(at + 1)
                elif text.startswith("]", at):
                    break
                else:
                    self.fail("Expecting ',' delimiter", at)
        self.lone_surrogate |= builder.lone_surrogate
        return builder.build(), at + 1


def read_body(raw: flask.Request, *, max_bytes: int) -> bytes:
    """The raw body, at most `max_bytes`, as sent: 413 past that, 400 when it is cut short, 415 when
    it is content-coded (`Content-Encoding: gzip`…): bodies are read as they arrive, never decoded."""
    declared = raw.content_length
    if declared is not None and declared > max_bytes:
        raise errors.PayloadTooLarge(f"Request body exceeds {max_bytes} bytes.")
    try:
        data = raw.stream.read(max_bytes + 1)
    except Exception as exc:  # the server's parser of a malformed or cut chunked body, whatever its class
        raise errors.BadRequest("The request body could not be read (malformed or truncated).", code="truncated_body") from exc
    if len(data) > max_bytes:
        raise errors.PayloadTooLarge(f"Request body exceeds {max_bytes} bytes.")
    if declared is not None and len(data) < declared:
        raise errors.BadRequest("Request body is shorter than its Content-Length.", code="truncated_body")
    if data:
        _check_content_coding(raw.headers.get("Content-Encoding", ""))
    return data


def _check_content_coding(header: str) -> None:
    """Only the identity coding: a compressed body would otherwise be refused as malformed JSON
    ("not valid UTF-8"), which says nothing of the real cause. RFC 7694: a 415 with the codings the
    server takes in `Accept-Encoding` (`error_response` adds it from the details)."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    unsupported = [c for c in codings if c != "identity"]
    if unsupported:
        raise errors.UnsupportedMediaType(
            f"Content-Encoding '{header.strip()[:40]}' is not supported: send the request body uncompressed (no Content-Encoding).",
            code="unsupported_content_encoding",
            details={"accept_encoding": "identity"},
        )


def parse_json_body(raw: flask.Request, *, max_bytes: int, required: bool = True) -> Any:
    return parse_json_bytes(raw, read_body(raw, max_bytes=max_bytes), required=required)


def parse_json_bytes(raw: flask.Request, data: bytes, *, required: bool = True, parse: Callable[[str], Any] = loads_strict) -> Any:
    """`data`, the body already read from `raw`, as JSON under `raw`'s declared content type."""
    if not data.strip():
        if required:
            raise errors.BadRequest("Request body is required.", code="missing_body")
        return None
    mimetype = (raw.mimetype or "").lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise errors.UnsupportedMediaType("Content-Type must be application/json.")
    charset = (raw.mimetype_params.get("charset") or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise errors.UnsupportedMediaType("Only the UTF-8 charset is accepted.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.BadRequest("Request body is not valid UTF-8.", code="malformed_json") from exc
    return parse(text)


Handler = Callable[[Request], Response]
BODY_METHODS = ("POST", "PUT", "PATCH")


@dataclass(frozen=True)
class QueryParam:
    """A query parameter as the OpenAPI document describes it (`schema` is JSON Schema)."""

    name: str
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document (`common/openapi.py`) says about a route.

    `summary` marks a route as described. `request_model` None means the route reads no body;
    `response_model` is the 2xx body (a list of it when `list_response`); `error_statuses` are those
    this route raises beyond the ones every route can (auth, rate limit, idempotency, body parsing).
    """

    summary: str = ""
    description: str = ""
    request_model: type[BaseModel] | None = None
    body_required: bool = True  # whether a route with a request_model may be called without a body
    response_model: type[BaseModel] | None = None
    response_status: int = 200
    list_response: bool = False
    query: tuple[QueryParam, ...] = ()
    error_statuses: tuple[int, ...] = ()
    public: bool = False  # no bearer token needed
    role: str = ""  # the role the handler requires beyond what `authenticate` checks (`RefuseUnreadBody` checks it first)
    media_type: str = "application/json"
    tags: tuple[str, ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()  # (name, description) of the 2xx's own headers


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    template: str
    doc: RouteDoc = field(default_factory=RouteDoc)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.template)

    @property
    def reads_body(self) -> bool:
        """Whether the handler reads a request body: it declares one (`request_model`), or it is not
        described at all (then it may read anything, as the OpenAPI document says)."""
        return self.doc.request_model is not None or not self.doc.summary

    @property
    def refuses_body(self) -> bool:
        """A POST, PUT or PATCH that reads no body: `RefuseUnreadBody` refuses one sent to it, rather
        than let the route run as if it had not been sent."""
        return self.method in BODY_METHODS and not self.reads_body


Next = Callable[[Request], Response]
# Runs around every handler: gets the request, the matched route and the rest of the chain. The
# chain answers every `SynqError` as its error response; a hook may raise one itself.
Hook = Callable[[Request, Route, Next], Response]


def error_response(exc: errors.SynqError, route: str = "", cause: Exception | None = None) -> Response:
    """The JSON error body of `exc`, with the headers its kind calls for; `cause` is the exception
    it stands for, whose traceback goes to the log (never to the body). `route` is the route's
    template: a path as sent may hold anything a caller pasted into it."""
    if exc.status >= 500:
        extra = {"code": exc.code, "route": route} | ({"error_type": type(cause).__name__} if cause else {})
        log.error("request failed", exc_info=cause, extra=extra)
    response = Response(exc.body(), exc.status)
    if isinstance(exc, errors.Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="synq"'  # RFC 9110 requires it on a 401; the scheme is RFC 6750's
    if isinstance(exc, errors.MethodNotAllowed) and isinstance(exc.details, dict):
        response.headers["Allow"] = ", ".join(exc.details["allowed"])
    if isinstance(exc, errors.UnsupportedMediaType) and isinstance(exc.details, dict) and "accept_encoding" in exc.details:
        response.headers["Accept-Encoding"] = exc.details["accept_encoding"]
    if isinstance(exc, errors.TooManyRequests) and isinstance(exc.details, dict):
        response.headers["Retry-After"] = str(exc.details.get("retry_after", 1))
    elif isinstance(exc, errors.Transient):
        response.headers["Retry-After"] = "1"
    return response


def _answering(call: Next, route: str) -> Next:
    def run(request: Request) -> Response:
        try:
            return call(request)
        except errors.SynqError as exc:
            return error_response(exc, route)
        except Exception as exc:
            return error_response(errors.unexpected(exc), route, cause=exc)

    return run


class Router:
    """Maps (method, path) to a handler; `{name}` segments become `request.params`."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.hooks: list[Hook] = []

    def add(self, method: str, template: str, handler: Handler, doc: RouteDoc | None = None) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template.rstrip("/"))
        self.routes.append(Route(method, re.compile(f"^{regex}/?$"), handler, template, doc or RouteDoc()))

    def route(
        self,
        method: str,
        template: str,
        *,
        summary: str = "",
        description: str = "",
        request_model: type[BaseModel] | None = None,
        body_required: bool = True,
        response_model: type[BaseModel] | None = None,
        response_status: int = 200,
        list_response: bool = False,
        query: tuple[QueryParam, ...] = (),
        error_statuses: tuple[int, ...] = (),
        public: bool = False,
        role: str = "",
        media_type: str = "application/json",
        tags: tuple[str, ...] = (),
        response_headers: tuple[tuple[str, str], ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Register the decorated handler; the keywords describe it for the OpenAPI document."""
        doc = RouteDoc(
            summary=summary,
            description=description,
            request_model=request_model,
            body_required=body_required,
            response_model=response_model,
            response_status=response_status,
            list_response=list_response,
            query=query,
            error_statuses=error_statuses,
            public=public,
            role=role,
            media_type=media_type,
            tags=tags,
            response_headers=response_headers,
        )

        def decorate(handler: Handler) -> Handler:
            self.add(method, template, handler, doc)
            return handler

        return decorate

    def use(self, hook: Hook) -> None:
        """Run `hook` around every handler; hooks added first run outermost."""
        self.hooks.append(hook)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for the request; HEAD is served by the GET route (the server sends no body)."""
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, match.groupdict()
                allowed += [route.method, "HEAD"] if route.method == "GET" else [route.method]
        if allowed:
            raise errors.MethodNotAllowed(f"{method} is not allowed on {path}.", details={"allowed": sorted(set(allowed))})
        raise errors.NotFound(f"No route for {path}.")

    def resolve(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        route, params = self.match(method, path)
        return route.handler, params

    def handle(self, raw: flask.Request) -> flask.Response:
        """Run the matching handler through the hooks; every `SynqError` becomes its JSON error body."""
        request = Request(
            method=raw.method,
            path=raw.path,
            headers=raw.headers,  # type: ignore[arg-type]
            args=raw.args,
            remote_addr=raw.remote_addr or "",
            raw=raw,
        )
        try:
            route, request.params = self.match(raw.method, raw.path)
            _check_parameter_names(route, raw.args)
        except errors.SynqError as exc:
            return to_flask(error_response(exc))
        call = _answering(route.handler, route.template)
        for hook in reversed(self.hooks):
            call = _answering(functools.partial(_run_hook, hook, route, call), route.template)
        return to_flask(call(request))


class RefuseUnreadBody:
    """The Router hook that refuses a request body a route would not read (`Route.refuses_body`), as an
    unknown query parameter is refused: `POST /export` with `{"format": "csv"}` would otherwise queue a
    JSON Lines export of the whole catalog, a silent real run of something the caller did not ask for.

    No body, whitespace, `{}` and `null` are no body (clients and tools send `{}` or an empty body with
    `Content-Type: application/json`). Anything else is refused as a route that reads a body refuses
    what it cannot take: malformed JSON 400 `malformed_json`, a JSON value that is not an object 400
    `invalid_body`, an object with members 422 `unknown_field` naming the first. It runs after the
    token is checked (401/403 first, as on every route) and before the Idempotency-Key hook, so a
    refused request writes nothing at all, not even a key's record (Stripe keeps no result for a
    request that failed validation either): the key stays free for the corrected request."""

    def __init__(self, authenticate: Callable[[Request], Any], max_bytes: Callable[[], int] = lambda: 32 * 1024 * 1024) -> None:
        self.authenticate = authenticate
        self.max_bytes = max_bytes

    def __call__(self, request: Request, route: Route, call_next: Next) -> Response:
        if route.refuses_body:
            if not route.doc.public:
                principal = self.authenticate(request)
                if route.doc.role:
                    principal.require(route.doc.role)  # 403 before the body, as the handler would
            refuse_body(request, route, max_bytes=self.max_bytes())
        return call_next(request)


def refuse_body(request: Request, route: Route, *, max_bytes: int) -> None:
    """Raise the 4xx for a body `route`, which reads none, was sent; return when it is no body at all."""
    body = request.json(max_bytes=max_bytes, required=False)
    if body is None or body == {}:
        return
    takes = f"{route.method} {route.template} takes no request body: send none, or {{}}."
    if isinstance(body, dict):
        name = sorted(body)[0][:100]  # the first by name, as POST /bulk-jobs names it
        raise errors.Unprocessable(f"Unknown field '{name}': {takes}", code="unknown_field", details={"field": name})
    kind = "an array" if isinstance(body, list) else "a string" if isinstance(body, str) else "a boolean" if isinstance(body, bool) else "a number"
    raise errors.BadRequest(f"The body is {kind}, not an object: {takes}", code="invalid_body")


def no_body(request: Request, route: Route, *, max_bytes: int) -> bool:
    """Whether a route that reads no body was sent none, in any of the forms `refuse_body` takes as none."""
    try:
        refuse_body(request, route, max_bytes=max_bytes)
    except errors.SynqError:
        return False
    return True


def _check_parameter_names(route: Route, args: Any) -> None:
    """A query parameter the route does not take is 400, not ignored: a dry run asked for where
    there is none (`POST /bulk-jobs?whatIf=true`), or in another case (`whatif`), would otherwise
    commit, and a filter the list lacks (`GET /products?title=…`) would answer unfiltered. One given
    twice is 400 too: only its first value would be read, so `status=FAILED&status=CANCELLED` would
    answer the FAILED jobs alone as if they were the whole list."""
    accepted = sorted(q.name for q in route.doc.query)
    known = {n.lower(): n for n in accepted}
    for name in args:
        if name in accepted:
            if len(args.getlist(name)) > 1:
                raise errors.BadRequest(
                    f"Query parameter '{name}' is given more than once; give it once.", code="invalid_query", details={"parameter": name}
                )
            continue
        meant = known.get(name.lower())
        hint = f"; did you mean '{meant}'?" if meant else f"; {route.method} {route.template} takes {_listed(accepted)}."
        raise errors.BadRequest(
            f"Query parameter '{name[:60]}' is not known{hint}", code="unknown_parameter", details={"parameter": name[:60], "accepted": accepted}
        )


def _listed(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names) if names else "no query parameters"


def _run_hook(hook: Hook, route: Route, call_next: Next, request: Request) -> Response:
    return hook(request, route, call_next)


def to_flask(response: Response) -> flask.Response:
    if response.body is None and 300 <= response.status < 400:
        out = flask.Response(b"", status=response.status)  # a redirect: its Location is the answer
    else:
        out = flask.Response(
            json.dumps(response.body, separators=(",", ":"), ensure_ascii=False),
            status=response.status,
            content_type="application/json",
        )
    for key, value in response.headers.items():
        out.headers[key] = value
    return out


_ASCII_INT = re.compile(r"-?[0-9]{1,18}")


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query(name)
    if raw is None or raw == "":
        return default
    if not _ASCII_INT.fullmatch(raw):  # int() also takes "1_0", "+5", " 5" and non-ASCII digits
        raise errors.BadRequest(f"Query parameter '{name}' must be an integer.", code="invalid_query")
    value = int(raw)
    if not low <= value <= high:
        raise errors.BadRequest(f"Query parameter '{name}' must be between {low} and {high}.", code="invalid_query")
    return value


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    raw = request.query(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise errors.BadRequest(f"Query parameter '{name}' must be true or false.", code="invalid_query")
