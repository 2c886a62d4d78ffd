"""The synqctl commands: arguments, input files, tables and progress, exit codes.

Exit codes: 0 done (job or export COMPLETED), 1 the job or export FAILED (or the job CANCELLED), 2 usage,
configuration, input-file or HTTP error (or --timeout reached), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

from synqctl import __version__
from synqctl.client import MAX_PAGE, ApiError, Client, Config, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
JOB_TYPES = ("BULK_IMPORT", "BULK_UPDATE", "BULK_DELETE")
JOB_STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")  # a job cancelled while we wait ends the wait too
JSONL_SUFFIXES = (".jsonl", ".ndjson")
INDEX = re.compile(r"0|[1-9][0-9]*")  # an item's `index` as the API writes it, the key of a correction
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NUMBER = re.compile(r"-[0-9.]+")  # a negative number is a value, not an option
LINE_END = re.compile(r"\r\n|\r|\n")
POLL_LOST_ANSWERS = 5  # a --wait gives up at the fifth answer in a row it did not get


class UsageError(Exception):
    """Something the caller can fix in the command line or the input file (exit 2)."""


# -- input files ----------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key[:100]!r}")
        result[key] = value
    return result


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise ValueError(f"{literal[:40]} is too large for a 64-bit float")
    return value


def loads_strict(text: str) -> Any:
    """JSON as the API accepts it (it would refuse the whole job otherwise): no NaN/Infinity, nor a number
    that overflows to it; no duplicate keys; no lone UTF-16 surrogate (it cannot be sent as UTF-8)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if SURROGATE_ESCAPE.search(text):
        try:  # an escaped pair decodes to one character: only a lone surrogate fails here
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("lone UTF-16 surrogate escape (a \\ud800-\\udfff not in a pair)") from None
    return value


def plural(n: int, noun: str) -> str:
    """`1 item`, `2 items`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _why(exc: ValueError) -> str:
    return f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else str(exc)


def parse_json_lines(text: str, name: str) -> tuple[list[Any], list[str]]:
    """(items, where each came from) for JSON Lines text; blank lines are skipped, a bad one names its line."""
    items: list[Any] = []
    places: list[str] = []
    # Not splitlines(): U+2028, U+2029 and U+0085 may stand raw in a JSON string. A raw CR may not,
    # so CRLF, CR alone (old Mac files) and LF all end a line.
    for number, line in enumerate(LINE_END.split(text), start=1):
        if not line.strip():
            continue
        try:
            items.append(loads_strict(line))
        except ValueError as exc:
            raise UsageError(f"{name}:{number}: not valid JSON: {_why(exc)}; nothing was sent.") from None
        places.append(f"{name}:{number}")
    return items, places


def parse_json_file(text: str, name: str, job_type: str) -> Any:
    """The payload a JSON file holds: an array of items, a ProductImportData envelope, or either of
    them as the `payload` of a whole `POST /bulk-jobs` body (whose job_type must be `job_type`)."""
    try:
        value = loads_strict(text)
    except ValueError as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"{name}{line}: not valid JSON: {_why(exc)}; nothing was sent.") from None
    return payload_of(value, name, job_type)


def payload_of(value: Any, name: str, job_type: str) -> Any:
    """The payload in a parsed JSON file (see `parse_json_file`)."""
    if isinstance(value, dict) and "job_type" in value and "payload" in value:
        if value["job_type"] != job_type:
            raise UsageError(f"{name} is a request body for {value['job_type']!s:.40}, not {job_type}; nothing was sent.")
        value = value["payload"]
    if isinstance(value, dict) and "ProductImportData" in value and job_type != "BULK_DELETE":
        return value
    if not isinstance(value, list):
        raise UsageError(
            f"{name}: must hold a JSON array of items, a ProductImportData envelope, or a POST /bulk-jobs body"
            " (or use a .jsonl file, one item a line)."
        )
    return value


def envelope_products(envelope: dict[str, Any], name: str) -> list[Any]:
    data = envelope["ProductImportData"]
    products = data.get("ProductsToImport") if isinstance(data, dict) else None
    if not isinstance(products, list):
        raise UsageError(f"{name}: ProductImportData.ProductsToImport must be an array of products; nothing was sent.")
    return products


def check_items(items: list[Any], places: list[str], job_type: str) -> None:
    """Refuse, before sending, an item of the wrong kind: the API would refuse the whole job, naming only its index."""
    want, what = (str, "a product id string") if job_type == "BULK_DELETE" else (dict, "a JSON object (a product)")
    for item, place in zip(items, places, strict=True):
        if not isinstance(item, want):
            raise UsageError(f"{place}: each {job_type} item must be {what}; nothing was sent.")


def _whole_object(text: str) -> dict[str, Any] | None:
    """The text parsed, when it is one envelope or one request body; None for anything else, JSON
    Lines among it (whose first item a one-line file would also parse as one object)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = loads_strict(text)
    except ValueError:
        return None
    whole = isinstance(value, dict) and ("ProductImportData" in value or {"job_type", "payload"} <= value.keys())
    return value if whole else None


def read_items(path: Path, job_type: str) -> Any:
    """The payload in a JSON file or a JSON Lines file (by suffix; other names are sniffed: JSON
    when they hold an array, an envelope or a request body), checked item by item."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    suffix = path.suffix.lower()
    whole = _whole_object(text) if suffix not in JSONL_SUFFIXES and suffix != ".json" else None
    lines = suffix in JSONL_SUFFIXES or (suffix != ".json" and not text.lstrip().startswith("[") and whole is None)
    if lines:
        payload, places = parse_json_lines(text, str(path))
        items = payload
    else:
        # A sniffed object is parsed once.
        payload = payload_of(whole, str(path), job_type) if whole is not None else parse_json_file(text, str(path), job_type)
        items = envelope_products(payload, str(path)) if isinstance(payload, dict) else payload
        places = [f"{path}: item {i}" for i in range(len(items))]
    if not items:
        raise UsageError(f"{path} holds no items.")
    check_items(items, places, job_type)
    return payload


def parse_corrections(text: str, name: str) -> dict[str, Any]:
    """The corrections a file holds: one JSON object of corrected items keyed by the `index` of the
    failed result each replaces, or a whole `POST …/retry` body (`{"corrections": {…}}`)."""
    try:
        value = loads_strict(text)
    except ValueError as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"{name}{line}: not valid JSON: {_why(exc)}; nothing was sent.") from None
    if isinstance(value, dict) and value.keys() == {"corrections"}:
        value = value["corrections"]
    if not isinstance(value, dict):
        raise UsageError(f'{name}: must hold one JSON object of corrected items keyed by their index, like {{"1": {{…}}}}; nothing was sent.')
    for key in value:
        if not INDEX.fullmatch(key):
            raise UsageError(f"{name}: {key[:40]!r} is not an item index (the `index` of a failed result: 0, 1, 2 …); nothing was sent.")
    if not value:
        raise UsageError(f"{name} holds no corrections (to retry the failed items as they were, leave out --corrections).")
    return value


def read_corrections(path: Path) -> dict[str, Any]:
    """The corrections in a file (see `parse_corrections`)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return parse_corrections(text, str(path))


# -- output ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One table column: a header, how to read the cell from a row, alignment and a width cap."""

    header: str
    get: Callable[[dict[str, Any]], Any]
    right: bool = False
    max_width: int | None = None


def field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(name)


def cell(value: Any, max_width: int | None = None) -> str:
    """A value as one table cell: no control characters (titles come from anyone's import), '-' for none."""
    if value is None or value == "":
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if max_width is not None and len(text) > max_width:
        text = text[: max_width - 1] + "…"
    return text


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as aligned text under a header line."""
    cells = [[cell(col.get(row), col.max_width) for col in columns] for row in rows]
    widths = [max([len(col.header)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if col.right else v.ljust(w) for v, w, col in zip(values, widths, columns, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([c.header for c in columns]), *(line(r) for r in cells)])


def _drop(stream: TextIO) -> None:
    """Send the rest of `stream`, and what its buffer still holds, to /dev/null: its reader went away.
    Python's flush at exit then has nothing to complain about (no 'Exception ignored … BrokenPipeError')."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's capture): nothing is flushed at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def emit_to(stream: TextIO, show: Callable[[], object]) -> None:
    """Run `show`, which prints on `stream`, and flush. If the stream's reader went away (`| head -1`),
    drop the rest of its output and go on: a --wait keeps waiting, writes its errors file and still
    exits as the job or export ended, which `set -o pipefail` then sees."""
    try:
        show()
        stream.flush()
    except BrokenPipeError:
        _drop(stream)


def say(line: str) -> None:
    """One line on stderr (see `emit_to`)."""
    emit_to(sys.stderr, lambda: print(line, file=sys.stderr))


def emit_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def emit_rows(rows: Sequence[dict[str, Any]], columns: Sequence[Column], as_json: bool, what: str) -> None:
    """A table (or the raw JSON array) on stdout; an empty result says so on stderr."""
    if as_json:
        emit_json(list(rows), sys.stdout)
        return
    print(table(rows, columns))
    if not rows:
        print(f"(no {what})", file=sys.stderr)


def emit_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`key: value` lines with the values aligned."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {cell(value)}")


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def duration(job: dict[str, Any], fallback: float | None = None) -> str | None:
    """completed_at − created_at as `12.3s` / `4m05s`, else the locally measured fallback."""
    start, end = parse_time(job.get("created_at")), parse_time(job.get("completed_at"))
    seconds = (end - start).total_seconds() if start and end else fallback
    if seconds is None:
        return None
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def counts(job: dict[str, Any]) -> tuple[int, int | None, int]:
    """(items done so far — processed or failed, total items or None before dispatch, failed items)."""
    failed = job.get("failed_items") or 0
    return (job.get("processed_items") or 0) + failed, job.get("total_items"), failed


class Progress:
    """Job progress on stderr: one bar redrawn in place on a terminal, otherwise a line now and then."""

    WIDTH = 30

    def __init__(self, stream: TextIO, *, tty: bool, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.tty, self.every, self.clock = stream, tty, every, clock
        self._last_text, self._last_status, self._last_at, self._drawn = "", "", 0.0, 0

    @classmethod
    def render(cls, job: dict[str, Any]) -> str:
        done, total, failed = counts(job)
        if not total:
            return f"[{'-' * cls.WIDTH}] {job.get('status', '?')}"
        filled = min(cls.WIDTH, done * cls.WIDTH // total)
        text = f"[{'#' * filled}{'-' * (cls.WIDTH - filled)}] {done * 100 // total}% {done}/{total}"
        return text + (f" ({failed} failed)" if failed else "")

    def update(self, job: dict[str, Any]) -> None:
        emit_to(self.stream, lambda: self._draw(job))

    def _draw(self, job: dict[str, Any]) -> None:
        text, status = self.render(job), str(job.get("status"))
        if self.tty:
            self.stream.write("\r" + text.ljust(self._drawn))
            self._drawn = len(text)
        elif status != self._last_status or (text != self._last_text and self.clock() - self._last_at >= self.every):
            self.stream.write(f"{status} {text}\n" if counts(job)[1] else f"{status}\n")
            self._last_text, self._last_status, self._last_at = text, status, self.clock()

    def close(self) -> None:
        """End the in-place bar with a newline (once)."""
        if self.tty and self._drawn:
            emit_to(self.stream, lambda: self.stream.write("\n"))
            self._drawn = 0


# -- commands -------------------------------------------------------------------------------------


def deadline_of(timeout: float | None) -> float | None:
    """The time.monotonic() a `--timeout` of `timeout` seconds ends at, from now (None: none)."""
    return None if timeout is None else time.monotonic() + timeout


def poll(
    fetch: Callable[[], dict[str, Any]], *, interval: float, timeout: float | None, what: str, on_update: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Fetch every `interval` seconds until the status is COMPLETED, FAILED or CANCELLED; the last wait
    before `timeout` ends at it, for one more fetch. A fetch that got no answer, a 429 or a 5xx (the
    client has already retried 429 and 503, within the caller's `Client.until`), is tried again at
    the next interval, up to `POLL_LOST_ANSWERS` in a row: the job runs on the server whatever
    happens to one poll."""
    deadline = None if timeout is None else time.monotonic() + timeout
    lost = 0  # answers lost in a row: a long wait rides out a few (a dropped connection, a proxy's 502)
    status: Any = None  # the last one seen
    while True:
        try:
            record = fetch()
            lost = 0
        except ApiError as exc:
            if not (exc.status in (0, 429) or exc.status >= 500):
                raise
            lost += 1
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # time ran out, whatever happened to this last poll
                seen = f"is still {status}" if status is not None else "was not seen yet"
                raise UsageError(
                    f"timed out after {timeout:g}s: {what} {seen} (the last poll got no answer: {exc.code}: {exc.message});"
                    " it keeps running on the server."
                ) from None
            if lost >= POLL_LOST_ANSWERS:
                raise
            say(f"warning: {exc.code}: {exc.message}; asking again ({lost} of {POLL_LOST_ANSWERS - 1})")
            time.sleep(interval if left is None else min(interval, left))
            continue
        on_update(record)
        status = record.get("status")
        if status in TERMINAL:
            return record
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise UsageError(f"timed out after {timeout:g}s: {what} is still {status}; it keeps running on the server.")
        time.sleep(interval if left is None else min(interval, left))


def fetch_job(client: Client, job_id: str) -> dict[str, Any]:
    """The job without its payload."""
    job = client.get_job(job_id)
    job.pop("payload_json", None)
    return job


def write_errors(client: Client, job_id: str, path: Path) -> int:
    """Every failed item's result as JSON Lines in `path` (written whole, then renamed into place)."""
    part = path.with_name(path.name + ".part")
    written = 0
    try:
        with part.open("w", encoding="utf-8") as out:
            for result in client.failed_results(job_id):
                out.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")
                written += 1
        part.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)  # the API's error (or Ctrl-C) midway
    return written


def write_corrections(results: Iterable[dict[str, Any]], path: Path) -> int:
    """A file for `retry --corrections`: each failed result's `item` as submitted, keyed by its
    index, one item after the other, to be fixed in place. Written whole, then renamed into place;
    with no failed item, no file (the retry refuses an empty one). Returns how many items it holds."""
    part = path.with_name(path.name + ".part")
    written = 0
    try:
        with part.open("w", encoding="utf-8") as out:
            for result in results:
                # An item's JSON holds no raw newline (strings escape theirs): indenting its lines is safe.
                item = json.dumps(result["item"], indent=2, ensure_ascii=False).replace("\n", "\n  ")
                out.write(("{\n" if not written else ",\n") + f'  "{result["index"]}": {item}')
                written += 1
            if written:
                out.write("\n}\n")
        if written:
            part.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)  # no failed item, or the API's error midway (a 410)
    return written


def follow_job(client: Client, job_id: str, args: argparse.Namespace, started: float) -> int:
    """Poll a new job to its end with progress on stderr, then print the summary and save the failed
    items (`--errors-out`); the exit code says how it ended."""
    progress = Progress(sys.stderr, tty=sys.stderr.isatty())
    try:
        with client.until(deadline_of(args.wait_timeout)):
            job = poll(
                lambda: fetch_job(client, job_id), interval=args.interval, timeout=args.wait_timeout, what=f"job {job_id}", on_update=progress.update
            )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; job {job_id} keeps running (see: python -m synqctl job {job_id})") from None
    finally:
        progress.close()
    done, total, failed = counts(job)
    lines = [("status", job["status"]), ("items", f"{total} total, {done - failed} processed, {failed} failed")]
    lines.append(("duration", duration(job, time.monotonic() - started)))
    if failed:
        path = Path(args.errors_out or f"{job_id}.errors.jsonl")
        lines.append(("errors", f"{path} ({plural(write_errors(client, job_id, path), 'item')})"))
    emit_to(sys.stdout, lambda: emit_fields(lines))
    return EXIT_OK if job["status"] == "COMPLETED" else EXIT_FAILED


def cmd_import(args: argparse.Namespace, client: Client) -> int:
    """Create a bulk job from a file; with --wait, follow it to the end and save the failed items."""
    if args.errors_out and not args.wait:
        raise UsageError("--errors-out only applies with --wait.")
    items = read_items(Path(args.file), args.type)
    started = time.monotonic()
    job_id = str(client.create_job(args.type, items)["id"])
    del items
    emit_to(sys.stdout, lambda: print(job_id))
    return follow_job(client, job_id, args, started) if args.wait else EXIT_OK


def cmd_retry(args: argparse.Namespace, client: Client) -> int:
    """Create a job of what a FAILED or CANCELLED job did not apply, some items corrected; with
    --wait, follow it as import does."""
    if args.errors_out and not args.wait:
        raise UsageError("--errors-out only applies with --wait.")
    corrections = read_corrections(Path(args.corrections)) if args.corrections else None
    started = time.monotonic()
    # One key per run, sent with every attempt: if the client resends after a 429/503, a first attempt
    # that did create the retry job answers again with it instead of 409 already_retried.
    job_id = str(client.retry_job(args.job_id, corrections, idempotency_key=str(uuid.uuid4()))["id"])
    emit_to(sys.stdout, lambda: print(job_id))
    return follow_job(client, job_id, args, started) if args.wait else EXIT_OK


JOB_COLUMNS = (
    Column("ID", field("id")),
    Column("TYPE", field("job_type")),
    Column("STATUS", field("status")),
    Column("TOTAL", field("total_items"), right=True),
    Column("PROCESSED", field("processed_items"), right=True),
    Column("FAILED", field("failed_items"), right=True),
    Column("CREATED", field("created_at")),
)


def cmd_jobs(args: argparse.Namespace, client: Client) -> int:
    """Recent bulk jobs, newest first; without --type, of every type (the API alone defaults to BULK_UPDATE)."""
    types = [args.type] if args.type else list(JOB_TYPES)
    jobs = [job for t in types for job in client.list_jobs(t, status=args.status, limit=args.limit or None, page_size=args.page_size)]
    jobs.sort(key=lambda j: str(j.get("created_at", "")), reverse=True)
    emit_rows(jobs[: args.limit or None], JOB_COLUMNS, args.json, "jobs")
    return EXIT_OK


RESULT_COLUMNS = (
    Column("INDEX", field("index"), right=True),
    Column("IDENTIFIER", field("identifier"), max_width=40),
    Column("PRODUCT_ID", field("product_id")),
    Column("CODES", lambda r: ",".join(sorted({e.get("code", "?") for e in r.get("errors") or []}))),
    Column("MESSAGE", lambda r: " ".join(e.get("message", "") for e in r.get("errors") or []), max_width=100),
)


def show_job(job: dict[str, Any], as_json: bool) -> None:
    """A job record as `key: value` lines (its retry links only when it has any), or as JSON."""
    if as_json:
        emit_json(job, sys.stdout)
        return
    done, total, failed = counts(job)
    emit_fields(
        [
            ("id", job.get("id")),
            ("type", job.get("job_type")),
            ("status", job.get("status")),
            ("progress", Progress.render(job)),
            ("items", f"{total if total is not None else '?'} total, {done - failed} processed, {failed} failed"),
            *[(link, job[link]) for link in ("retry_of", "retried_by", "error") if job.get(link)],
            ("created_by", job.get("created_by")),
            ("created_at", job.get("created_at")),
            ("started_at", job.get("started_at")),
            ("completed_at", job.get("completed_at")),
            ("duration", duration(job)),
        ]
    )


def cmd_job(args: argparse.Namespace, client: Client) -> int:
    """One job's record; with --failed, its failed items instead; with --corrections-out, also a
    corrections file of the failed items as submitted."""
    if args.corrections_out:
        path = Path(args.corrections_out)
        written = write_corrections(client.failed_results(args.job_id, with_items=True), path)
        print(f"corrections: {path} ({plural(written, 'item')})" if written else "(no failed items: no corrections file written)", file=sys.stderr)
    if args.failed:
        emit_rows(list(client.failed_results(args.job_id)), RESULT_COLUMNS, args.json, "failed items")
        return EXIT_OK
    show_job(client.get_job(args.job_id), args.json)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    """Cancel a PENDING or PROCESSING job and show it as `job` does."""
    show_job(client.cancel_job(args.job_id), args.json)
    return EXIT_OK


def cmd_issues(args: argparse.Namespace, client: Client) -> int:
    """Open validation issues, filtered like GET /validation."""
    filters = {"job_id": args.job_id, "severity": args.severity, "issue_type": args.issue_type, "product_id": args.product_id}
    issues = client.list_issues(filters, limit=args.limit or None, page_size=args.page_size)
    columns = [
        Column("ID", field("id")),  # what `resolve` takes
        Column("SEVERITY", field("severity")),
        Column("ISSUE_TYPE", field("issue_type")),
        Column("PRODUCT_ID", field("product_id")),
        *([] if args.job_id else [Column("JOB_ID", field("job_id"))]),
        Column("ITEM", field("item_index"), right=True),
        Column("MESSAGE", field("message"), max_width=100),
    ]
    emit_rows(issues, columns, args.json, "open issues")
    return EXIT_OK


def show_issue(issue: dict[str, Any], as_json: bool) -> None:
    """One validation issue as `key: value` lines, or as JSON."""
    if as_json:
        emit_json(issue, sys.stdout)
        return
    emit_fields(
        [
            ("id", issue.get("id")),
            ("issue_type", issue.get("issue_type")),
            ("severity", issue.get("severity")),
            ("resolved", issue.get("resolved")),
            ("job_id", issue.get("job_id")),
            ("item", issue.get("item_index")),
            ("identifier", issue.get("identifier")),
            ("product_id", issue.get("product_id")),
            ("message", issue.get("message")),
        ]
    )


def cmd_issue(args: argparse.Namespace, client: Client) -> int:
    """One validation issue, open or resolved."""
    show_issue(client.get_issue(args.issue_id), args.json)
    return EXIT_OK


def cmd_resolve(args: argparse.Namespace, client: Client) -> int:
    """Resolve by hand a failed item's issue that nothing else will resolve, and show it."""
    show_issue(client.resolve_issue(args.issue_id), args.json)
    return EXIT_OK


AUDIT_COLUMNS = (
    Column("CREATED", field("created_at")),
    Column("ACTOR", field("actor_email"), max_width=40),
    Column("ACTION", field("action")),
    Column("ENTITY_TYPE", field("entity_type")),
    Column("ENTITY_ID", field("entity_id")),
    Column("DETAILS", field("details"), max_width=60),
)


def cmd_audit(args: argparse.Namespace, client: Client) -> int:
    """Recent audit events, newest first."""
    emit_rows(client.list_audit(limit=args.limit or None, page_size=args.page_size), AUDIT_COLUMNS, args.json, "audit events")
    return EXIT_OK


PRODUCT_COLUMNS = (
    Column("ID", field("id")),
    Column("SKU", field("sku"), max_width=30),
    Column("TITLE", field("title"), max_width=50),
    Column("CATEGORY", field("category"), max_width=24),
    Column("BRAND", field("brand"), max_width=24),
    Column("SCORE", field("quality_score"), right=True),
    Column("ERRORS", lambda p: (p.get("issue_counts") or {}).get("ERROR"), right=True),
    Column("WARNINGS", lambda p: (p.get("issue_counts") or {}).get("WARNING"), right=True),
    Column("UPDATED", field("updated_at")),
)


def cmd_products(args: argparse.Namespace, client: Client) -> int:
    """Products in the catalog, or the one with --sku."""
    emit_rows(client.list_products(sku=args.sku, limit=args.limit or None, page_size=args.page_size), PRODUCT_COLUMNS, args.json, "products")
    return EXIT_OK


def status_changes(label: str) -> Callable[[dict[str, Any]], None]:
    """A poll callback that prints `LABEL: STATUS` on stderr whenever the status changes."""
    last: dict[str, Any] = {}

    def report(record: dict[str, Any]) -> None:
        if "status" not in last or record.get("status") != last["status"]:
            last["status"] = record.get("status")
            say(f"{label}: {last['status']}")

    return report


def save_export(client: Client, export_id: str, path: Path) -> int:
    """Download the export file to `path` (written whole, then renamed into place); returns its size."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as out:
            size = client.download_export(export_id, out)
        part.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)  # the download failed, or Ctrl-C, midway
    return size


def cmd_export(args: argparse.Namespace, client: Client) -> int:
    """Queue a catalog export; with --wait (or --out), follow it and report the object and counts. With
    --json, stdout holds only JSON: the export record (or, not waiting, the API's answer), no id line."""
    queued = client.create_export()
    export_id = queued.get("export_id")
    if not export_id:
        raise ApiError(202, "invalid_response", "POST /export answered without an export_id, so the export cannot be followed.")
    if args.json and not (args.wait or args.out):
        emit_json(queued, sys.stdout)
        return EXIT_OK
    if not args.json:
        emit_to(sys.stdout, lambda: print(export_id))
    if not (args.wait or args.out):
        return EXIT_OK
    with client.until(deadline_of(args.wait_timeout)):
        export = poll(
            lambda: client.get_export(export_id),
            interval=args.interval,
            timeout=args.wait_timeout,
            what=f"export {export_id}",
            on_update=status_changes(f"export {export_id}"),
        )
    completed = export.get("status") == "COMPLETED"
    saved = save_export(client, export_id, Path(args.out)) if completed and args.out else None
    emit_to(sys.stdout, lambda: show_export(export, args.json, args.out, saved))
    return EXIT_OK if completed else EXIT_FAILED


def show_export(export: dict[str, Any], as_json: bool, out: str | None, saved: int | None) -> None:
    """The end of an export --wait: its record as JSON, or `key: value` lines with the file it was saved to."""
    completed = export.get("status") == "COMPLETED"
    if as_json:
        emit_json(export, sys.stdout)
    else:
        lines = [
            ("status", export.get("status")),
            ("object", export.get("object")),
            ("products", export.get("product_count")),
            ("excluded", export.get("excluded_count")),
            ("duration", duration(export)),
        ]
        lines += [("error", export.get("error"))] if not completed else []
        lines += [("file", f"{out} ({saved} bytes)")] if saved is not None else []
        emit_fields(lines)


def parse_events(text: str) -> list[str]:
    """`--events E1,E2,...` as a list, each name stripped. The names themselves are the API's to check
    (its 422 lists the valid ones), so a new event type needs no new synqctl; an empty name is
    refused here: a stray comma, or an empty variable that would otherwise ask for no events at all."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"--events takes event names separated by commas, not {text[:100]!r}; nothing was sent.")
    return names


def settings_body(webhook: str | None, email: str | None, events: str | None) -> dict[str, Any]:
    """The PUT /notification-settings body for `notify set`. Without --events the body names none,
    and the API sets its default (the export events), as a PUT replaces the whole settings."""
    body: dict[str, Any] = {"channel": "webhook", "webhook_url": webhook} if webhook is not None else {"channel": "email", "email": email}
    if events is not None:
        body["events"] = parse_events(events)
    return body


def show_settings(settings: dict[str, Any], extra: Sequence[tuple[str, Any]] = ()) -> None:
    """Notification settings as `key: value` lines, `extra` last; events comma-separated, as `--events` takes them."""
    emit_fields(
        [
            ("channel", settings.get("channel")),
            ("webhook_url", settings.get("webhook_url")),
            ("email", settings.get("email")),
            ("events", ",".join(settings.get("events") or [])),
            ("has_signing_secret", settings.get("has_signing_secret")),
            ("updated_at", settings.get("updated_at")),
            *extra,
        ]
    )


def cmd_notify_show(args: argparse.Namespace, client: Client) -> int:
    """How the tenant is notified (admin)."""
    settings = client.get_notification_settings()
    if args.json:
        emit_json(settings, sys.stdout)
    else:
        show_settings(settings)
    return EXIT_OK


def cmd_notify_set(args: argparse.Namespace, client: Client) -> int:
    """Set the channel and events (admin); a new webhook URL's signing secret is printed on stdout,
    the one place the API ever shows it."""
    settings = client.put_notification_settings(settings_body(args.webhook, args.email, args.events))
    if args.json:
        emit_json(settings, sys.stdout)
        return EXIT_OK
    secret = settings.get("signing_secret")
    show_settings(settings, [("signing_secret", secret)] if secret else [])
    if secret:
        print("signing_secret is shown this once: store it now (`notify rotate-secret` issues a new one).", file=sys.stderr)
    return EXIT_OK


def cmd_notify_rotate_secret(args: argparse.Namespace, client: Client) -> int:
    """A new webhook signing secret (admin); the old one keeps signing beside it until the time shown."""
    rotated = client.rotate_signing_secret()
    if args.json:
        emit_json(rotated, sys.stdout)
        return EXIT_OK
    emit_fields([("signing_secret", rotated.get("signing_secret")), ("previous_secret_expires_at", rotated.get("previous_secret_expires_at"))])
    return EXIT_OK


DELIVERY_COLUMNS = (
    Column("ID", field("id")),  # what `notify redeliver` takes
    Column("TYPE", field("type")),
    Column("EXPORT_OR_JOB_ID", lambda d: d.get("export_id") or d.get("job_id")),
    Column("ATTEMPTS", field("attempts"), right=True),
    Column("DELIVERED_AT", field("delivered_at")),
    Column("LAST_ERROR", field("last_error"), max_width=60),
)


def cmd_notify_deliveries(args: argparse.Namespace, client: Client) -> int:
    """Notifications sent or being sent, newest first."""
    emit_rows(client.list_deliveries(limit=args.limit or None, page_size=args.page_size), DELIVERY_COLUMNS, args.json, "notification deliveries")
    return EXIT_OK


def cmd_notify_redeliver(args: argparse.Namespace, client: Client) -> int:
    """Send a notification again (same webhook-id) and show its record."""
    delivery = client.redeliver(args.delivery_id)
    if args.json:
        emit_json(delivery, sys.stdout)
        return EXIT_OK
    emit_fields(
        [
            ("id", delivery.get("id")),
            ("type", delivery.get("type")),
            ("channel", delivery.get("channel")),
            *[(key, delivery[key]) for key in ("export_id", "job_id") if delivery.get(key)],
            ("attempts", delivery.get("attempts")),
            ("delivered_at", delivery.get("delivered_at")),
            ("last_error", delivery.get("last_error")),
            ("updated_at", delivery.get("updated_at")),
        ]
    )
    return EXIT_OK


# -- parser and entry point -----------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _page_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE}")
    return value


def _connection_options() -> argparse.ArgumentParser:
    """Flags valid before or after the command; SUPPRESS keeps a subcommand from erasing the top-level value."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection (default: the SYNQ_* environment variables)")
    group.add_argument("--api-url", metavar="URL", default=argparse.SUPPRESS, help="API base URL (SYNQ_API_URL)")
    group.add_argument(
        "--token", metavar="TOKEN", default=argparse.SUPPRESS, help="API token (SYNQ_TOKEN); prefer the variable, flags show up in `ps`"
    )
    group.add_argument("--tenant-id", metavar="ID", default=argparse.SUPPRESS, help="tenant id (SYNQ_TENANT_ID)")
    group.add_argument("--org-id", metavar="ID", default=argparse.SUPPRESS, help="organization id (SYNQ_ORG_ID)")
    group.add_argument(
        "--http-timeout", metavar="SECONDS", type=_positive_float, default=argparse.SUPPRESS, help="seconds per HTTP request (default 60)"
    )
    return parent


def _list_options(default_limit: int) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--limit", metavar="N", type=_count, default=default_limit, help=f"at most N rows, 0 for all (default {default_limit})")
    parent.add_argument("--page-size", metavar="N", type=_page_size, default=MAX_PAGE, help=f"items per request (default {MAX_PAGE})")
    parent.add_argument("--json", action="store_true", help="print the raw JSON array instead of a table")
    return parent


def _wait_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--wait", action="store_true", help="poll until COMPLETED or FAILED (a job also CANCELLED)")
    parent.add_argument("--interval", metavar="SECONDS", type=_positive_float, default=1.0, help="seconds between polls (default 1)")
    parent.add_argument(
        "--timeout", dest="wait_timeout", metavar="SECONDS", type=_positive_float, default=None, help="give up waiting after N seconds (exit 2)"
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    conn = _connection_options()
    # Its commands' parsers are _Parser too (add_subparsers makes them of its class).
    parser = cast(
        argparse.ArgumentParser,
        _Parser(prog="python -m synqctl", description="Command-line client for the Synq PIM bulk operations API.", parents=[conn]),
    )
    parser.add_argument("--version", action="version", version=f"synqctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import", parents=[conn, _wait_options()], help="create a bulk job from a .json array or .jsonl file")
    p.add_argument("file", metavar="FILE", help="a JSON array (.json) or JSON Lines (.jsonl, one item a line)")
    p.add_argument("--type", required=True, choices=JOB_TYPES, help="the job type")
    p.add_argument("--errors-out", metavar="FILE", help="with --wait: where failed items go (default JOBID.errors.jsonl)")
    p.set_defaults(run=cmd_import)

    p = sub.add_parser("retry", parents=[conn, _wait_options()], help="retry what a FAILED or CANCELLED job did not apply, corrected by index")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--corrections", metavar="FILE", help='a JSON object of corrected items keyed by their failed index: {"1": {…}}')
    p.add_argument("--errors-out", metavar="FILE", help="with --wait: where failed items go (default JOBID.errors.jsonl)")
    p.set_defaults(run=cmd_retry)

    p = sub.add_parser("jobs", parents=[conn, _list_options(20)], help="list recent bulk jobs")
    p.add_argument("--type", choices=JOB_TYPES, help="only this job type (default: all types)")
    p.add_argument("--status", type=str.upper, choices=JOB_STATUSES, help="only jobs in this status (default: all statuses)")
    p.set_defaults(run=cmd_jobs)

    p = sub.add_parser("job", parents=[conn], help="show one bulk job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--failed", action="store_true", help="list the job's failed items instead")
    p.add_argument(
        "--corrections-out", metavar="FILE", help="also write the failed items as submitted, keyed by index: fix them, then retry --corrections FILE"
    )
    p.add_argument("--json", action="store_true", help="print the raw JSON instead")
    p.set_defaults(run=cmd_job)

    p = sub.add_parser("cancel", parents=[conn], help="cancel a PENDING or PROCESSING bulk job")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead")
    p.set_defaults(run=cmd_cancel)

    p = sub.add_parser("issues", parents=[conn, _list_options(100)], help="list open validation issues")
    p.add_argument("--job-id", help="only issues raised by this job")
    p.add_argument("--severity", type=str.upper, choices=("WARNING", "ERROR"), help="only this severity")
    p.add_argument("--issue-type", help="only this type, e.g. MISSING_DESCRIPTION")
    p.add_argument("--product-id", help="only issues of this product")
    p.set_defaults(run=cmd_issues)

    p = sub.add_parser("issue", parents=[conn], help="show one validation issue, open or resolved")
    p.add_argument("issue_id", metavar="ISSUE_ID", help="the ID column of `issues`")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead")
    p.set_defaults(run=cmd_issue)

    p = sub.add_parser("resolve", parents=[conn], help="resolve by hand a failed item's issue that nothing else will")
    p.add_argument("issue_id", metavar="ISSUE_ID", help="the ID column of `issues`")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead")
    p.set_defaults(run=cmd_resolve)

    p = sub.add_parser("audit", parents=[conn, _list_options(100)], help="list recent audit events")
    p.set_defaults(run=cmd_audit)

    p = sub.add_parser("products", parents=[conn, _list_options(50)], help="list products")
    p.add_argument("--sku", help="only the product with this SKU")
    p.set_defaults(run=cmd_products)

    p = sub.add_parser("export", parents=[conn, _wait_options()], help="queue a catalog export")
    p.add_argument("--out", metavar="FILE", help="wait, then download the export file here")
    p.add_argument("--json", action="store_true", help="print the export record (without --wait, the API's answer) as JSON, and no id line")
    p.set_defaults(run=cmd_export)

    _add_notify(sub, conn)
    return parser


def _add_notify(sub: Any, conn: argparse.ArgumentParser) -> None:
    """`notify show|set|rotate-secret|deliveries|redeliver`: the notification settings and deliveries."""
    notify = sub.add_parser("notify", parents=[conn], help="show or set how the tenant is notified; list and resend notifications")
    verbs = notify.add_subparsers(dest="notify_command", required=True, metavar="VERB")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print the raw JSON instead")

    p = verbs.add_parser("show", parents=[conn, as_json], help="the notification settings (admin)")
    p.set_defaults(run=cmd_notify_show)

    p = verbs.add_parser("set", parents=[conn, as_json], help="set the channel and events (admin); a new webhook URL prints its secret once")
    channel = p.add_mutually_exclusive_group(required=True)
    channel.add_argument("--webhook", metavar="URL", help="send signed webhooks to URL")
    channel.add_argument("--email", metavar="ADDRESS", help="send emails to ADDRESS")
    p.add_argument(
        "--events", metavar="E1,E2,...", help="the ends to hear of, comma-separated (default: export.completed,export.failed; see docs/cli.md)"
    )
    p.set_defaults(run=cmd_notify_set)

    p = verbs.add_parser("rotate-secret", parents=[conn, as_json], help="a new webhook signing secret; the old one signs for 24 h more (admin)")
    p.set_defaults(run=cmd_notify_rotate_secret)

    p = verbs.add_parser("deliveries", parents=[conn, _list_options(50)], help="list notifications sent, newest first")
    p.set_defaults(run=cmd_notify_deliveries)

    p = verbs.add_parser("redeliver", parents=[conn, as_json], help="send a notification again")
    p.add_argument("delivery_id", metavar="ID", help="the ID column of `notify deliveries`")
    p.set_defaults(run=cmd_notify_redeliver)


def _client(args: argparse.Namespace) -> Client:
    overrides = {name: getattr(args, name, None) for name in ("api_url", "token", "tenant_id", "org_id")}
    return Client(Config.load(overrides), timeout=getattr(args, "http_timeout", 60.0))


# The command line being parsed and the words of it an error must not show (see parse_args).
_UNSHOWN: ContextVar[tuple[Sequence[str], set[str]]] = ContextVar("unshown", default=((), set()))


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and, through add_subparsers, each command's) whose errors leave out the
    words that could be an option's value."""

    def error(self, message: str) -> NoReturn:
        words, hidden = _UNSHOWN.get()
        shown = _unechoed(message, words, hidden)
        super().error(shown + (" (… stands for a word that may be an option's value)" if "…" in shown else ""))


def _option_like(word: str) -> bool:
    """Whether argparse takes `word` for an option: not `-`, a negative number, or a value like "-A B"."""
    name = word.split("=", 1)[0]
    return name.startswith("-") and name != "-" and not _NUMBER.fullmatch(name) and " " not in name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, parsed. No error echoes a word that could be an option's value: argparse
    would print the word after an option it did not expect here (`--tokne SECRET`, or `jobs --failed
    SECRET`: an option of another command) as an unrecognized argument or an invalid command, and
    that word is often the value of a misplaced `--token`. An unknown option is refused naming only
    the option; any other error has such words (and `--option=VALUE`'s value) taken out."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    known, vocabulary = _option_strings(parser), {word.casefold() for word in _choices(parser)}
    hidden: set[str] = set()  # casefolded; synqctl's own words (commands, choices) are never secret
    for place, word in enumerate(words):
        if not _option_like(word):
            continue
        name, attached, value = word.partition("=")
        after = words[place + 1] if place + 1 < len(words) else None
        value = value if attached else after if after is not None and not _option_like(after) else ""
        if value and value.casefold() not in vocabulary:
            hidden.add(value.casefold())
    unshown = _UNSHOWN.set((words, hidden))
    try:
        for word in words:
            if word == "--":
                break
            name = word.split("=", 1)[0]
            if not _option_like(word) or word in known or (name.startswith("--") and any(option.startswith(name) for option in known)):
                continue
            # A short option may have its value attached (`-tVALUE`), and that value may be the token.
            shown = name if name.startswith("--") else name[:2]
            parser.error(f"unrecognized option {shown[:40]} (the words after it are not shown; see --help)")
        args, extras = parser.parse_known_args(words)  # parse_args would echo the words left over
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(_shown(word, hidden) for word in extras)}")
        return args
    finally:
        _UNSHOWN.reset(unshown)


QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")  # a repr()'d string, as argparse quotes a value


def _shown(word: str, hidden: set[str]) -> str:
    """A left-over word as an error may show it: an option by its name alone, a possible value as `…`."""
    if _option_like(word):
        name = word.split("=", 1)[0]
        return name if name.startswith("--") else name[:2]
    return "…" if word.casefold() in hidden else word


def _unechoed(message: str, words: Sequence[str], hidden: set[str]) -> str:
    """An argparse error without the words that could be an option's value: a quoted one is `…`,
    `--option=VALUE` is `--option` (argparse shows an ambiguous one whole), and a long one is
    taken out wherever else it stands."""

    def quoted(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group())
        except (ValueError, SyntaxError):
            return match.group()
        return "…" if isinstance(value, str) and value.casefold() in hidden else match.group()

    for word in sorted((w for w in words if _option_like(w) and "=" in w), key=len, reverse=True):
        message = message.replace(word, word.split("=", 1)[0])
    message = QUOTED.sub(quoted, message)
    for word in sorted((w for w in hidden if len(w) >= 8), key=len, reverse=True):
        message = re.sub(re.escape(word), "…", message, flags=re.IGNORECASE)
    return message


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    """Every command name and option choice: synqctl's own words, which an error may always show."""
    words: set[str] = set()
    for action in parser._actions:
        words.update(str(choice) for choice in action.choices or ())
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                words |= _choices(sub)
    return words


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option any command takes (argparse keeps them only on its private actions list)."""
    options: set[str] = set()
    for action in parser._actions:
        options.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _option_strings(sub)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure becomes `error: …` on stderr and an exit code."""
    args = parse_args(argv)
    code = _run(args)
    for stream in (sys.stdout, sys.stderr):  # now, not at exit: a reader gone away is no error here
        emit_to(stream, lambda: None)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args, _client(args)))
    except (ConfigError, UsageError) as exc:
        say(f"error: {exc}")
    except ApiError as exc:
        say(f"error: {exc.code}: {exc.message}")
    except KeyboardInterrupt as exc:
        say(str(exc) or "interrupted")  # one line: what was left running, if anything
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # A command that only prints lost its reader (`jobs | head -1`): it has done all it could.
        # A --wait never gets here: it drops the stream and exits as the job ended (see emit_to).
        return EXIT_OK
    return EXIT_USAGE
