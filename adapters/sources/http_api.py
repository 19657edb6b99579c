"""HTTP JSON API source: pull one entity's pages and write them as `<entity>.csv`.

A company whose CRM or shop exposes a JSON API declares it in `sources.yml`:

    customers:
      url: "https://crm.example/api/customers"
      headers: {Authorization: "Bearer ${CRM_TOKEN}"}
    orders:
      url: "${SHOP_URL}/orders"
      pagination: cursor
      records_path: result.items
      next_cursor_path: result.next
      field_map: {orderNo: order_id}

`fetch` writes what it pulled for one entity as one CSV file that the ingest pipeline then reads
exactly like a user's file, so the same validation and quarantine apply. Incremental sync: the
caller passes the cursor of the last successful load as `updated_since` and stores
`FetchResult.new_cursor` (with `save_cursor`) in the same transaction as the load, so a failed load
never advances the cursor.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import requests
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

__all__ = [
    "FetchResult",
    "HttpSourceConfig",
    "HttpSourceError",
    "HttpStatusError",
    "fetch",
    "load_http_sources",
    "read_cursor",
    "save_cursor",
]

from adapters.sources.http_config import (
    HttpSourceConfig,
    HttpSourceError,
    expand,
    json_type,
    load_http_sources,
    one_line,
    secret_values,
    within_limits,
)
from flows.secrets import redact, register

log = logging.getLogger(__name__)

_MAX_RETRY_AFTER_S = 60.0
_BODY_SNIPPET_CHARS = 200
_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.1)
_CURSOR_TABLE = "source_cursors"
_MISSING = object()


class HttpStatusError(HttpSourceError):
    """The API answered with an error status that retrying cannot fix (a 4xx other than 429)."""

    def __init__(self, message: str, *, url: str, status: int, body: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = redact(body)


class _RetryableResponse(Exception):
    """A 429 or 5xx answer: worth another attempt, after `retry_after` seconds when the API says."""

    def __init__(self, status: int, retry_after: float | None, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.retry_after = retry_after


_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    _RetryableResponse,
)


@dataclass(frozen=True)
class FetchResult:
    """What one `fetch` produced."""

    entity: str
    path: Path | None  # the written CSV; None when the API returned no records
    records: int
    pages: int
    new_cursor: str | None  # the newest `updated_at_field` value, verbatim; None when no records
    since: str | None = None  # the cursor the fetch started from


def fetch(
    config: HttpSourceConfig,
    out_dir: Path,
    *,
    updated_since: str | None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch every page changed since `updated_since` and write `out_dir/<entity>.csv`.

    `updated_since` is sent as `config.updated_since_param` when not None. The CSV is UTF-8, its
    header the union of record keys (after `field_map`) in first-seen order; nested values are
    JSON, None is empty, booleans are true/false. The file appears whole or not at all: it is
    written beside the target and renamed. When there are no records, no file is written and a
    stale `<entity>.csv` from an earlier fetch is removed, so it can never be loaded again over
    newer data. `sleep` is how retries wait (tests pass a recorder).
    """
    url = expand(config.url, entity=config.entity, where="url")
    headers = {
        name: expand(value, entity=config.entity, where=f"headers.{name}")
        for name, value in config.headers.items()
    }
    # Expanded URL and header values (an API key in the query, a bearer token) must not leak into
    # error messages or logs, even when the API echoes the request back.
    register(*secret_values(config, headers))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{config.entity}.csv"

    http = session if session is not None else requests.Session()
    try:
        # Records are spooled to disk one page at a time: the header (union of keys) is only
        # known at the end, and no page is kept in memory after it has been spooled.
        with tempfile.TemporaryFile("w+", encoding="utf-8", dir=out_dir) as spool:
            columns: dict[str, None] = {}
            records = pages = 0
            # the saved cursor is the floor: an older record never moves it backwards
            newest = _newest(None, updated_since, config) if updated_since else None
            started = time.monotonic()
            for page in _pages(config, http, url, headers, updated_since, sleep):
                pages += 1
                within_limits(config, pages, records + len(page), time.monotonic() - started)
                for record in page:
                    row = _to_row(record, config)
                    columns.update(dict.fromkeys(row))
                    spool.write(json.dumps(row, ensure_ascii=False) + "\n")
                    newest = _newest(newest, record.get(config.updated_at_field), config)
                    records += 1
            if records == 0:
                target.unlink(missing_ok=True)
                return FetchResult(config.entity, None, 0, pages, None, updated_since)
            if newest is not None and newest[1] == updated_since:
                newest = None  # nothing newer than the saved cursor: it stays as it is
            spool.seek(0)
            _write_csv_atomically(target, list(columns), (json.loads(line) for line in spool))
    finally:
        if session is None:
            http.close()
    log.info("%s: fetched %d records in %d pages into %s", config.entity, records, pages, target)
    new_cursor = newest[1] if newest else None
    return FetchResult(config.entity, target, records, pages, new_cursor, updated_since)


def read_cursor(con: duckdb.DuckDBPyConnection, entity: str) -> str | None:
    """The cursor saved for `entity`, or None when there is none (or no cursor table yet)."""
    # Look the table up rather than catching the error: a failed statement would abort the
    # caller's open transaction.
    (exists,) = con.execute(
        "select count(*) from information_schema.tables"
        " where table_name = ? and table_schema = current_schema()"
        " and table_catalog = current_database()",
        [_CURSOR_TABLE],
    ).fetchone()
    if not exists:
        return None
    row = con.execute(f"select cursor from {_CURSOR_TABLE} where entity = ?", [entity]).fetchone()
    return None if row is None else row[0]


def save_cursor(con: duckdb.DuckDBPyConnection, entity: str, cursor: str, at: datetime) -> None:
    """Upsert `entity`'s cursor, creating the table if needed.

    Neither begins nor commits a transaction: the caller saves the cursor in the same transaction
    as the load it belongs to.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"save_cursor({entity!r}): `at` must be timezone-aware, got {at!r}")
    con.execute(
        f"create table if not exists {_CURSOR_TABLE} ("
        " entity varchar primary key, cursor varchar, updated_at timestamptz)"
    )
    con.execute(
        f"insert into {_CURSOR_TABLE} (entity, cursor, updated_at) values (?, ?, ?)"
        " on conflict (entity) do update"
        " set cursor = excluded.cursor, updated_at = excluded.updated_at",
        [entity, cursor, at],
    )


# --- fetching -------------------------------------------------------------------------------


def _pages(
    config: HttpSourceConfig,
    http: requests.Session,
    url: str,
    headers: dict[str, str],
    updated_since: str | None,
    sleep: Callable[[float], None],
) -> Iterator[list[Any]]:
    """Yield each page's list of records, following the configured pagination to the end."""
    since = {} if updated_since is None else {config.updated_since_param: updated_since}

    def get(params: dict[str, Any]) -> tuple[Any, list[Any], str]:
        display = _display_url(config.url, params)
        body = _get_json(config, http, url, params, headers, display, sleep)
        return body, _records(body, config, display), display

    if config.pagination == "page":
        number = 1
        previous_digest = None
        while True:
            _, records, display = get(
                {config.page_param: number, config.page_size_param: config.page_size, **since}
            )
            if len(records) < config.page_size:
                yield records
                return
            # An API that ignores the page parameter would serve the same full page forever.
            digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).digest()
            if digest == previous_digest:
                raise HttpSourceError(
                    f"{config.entity}: GET {display} returned the same records as the page"
                    f" before; does the API honour {config.page_param!r}?"
                )
            previous_digest = digest
            yield records
            number += 1
    else:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            at = {} if cursor is None else {config.cursor_param: cursor}
            body, records, display = get({**at, config.page_size_param: config.page_size, **since})
            yield records
            found = _dig(body, config.next_cursor_path)
            if found is _MISSING or found is None or found == "":
                return
            if isinstance(found, dict | list):
                raise HttpSourceError(
                    f"{config.entity}: GET {display}: {config.next_cursor_path!r} is a JSON"
                    f" {json_type(found)}, expected a string or number"
                )
            cursor = str(found)
            if cursor in seen:
                raise HttpSourceError(
                    f"{config.entity}: GET {display} returned next cursor {cursor!r} a second"
                    " time; stopping instead of looping forever"
                )
            seen.add(cursor)


def _get_json(
    config: HttpSourceConfig,
    http: requests.Session,
    url: str,
    params: dict[str, Any],
    headers: dict[str, str],
    display: str,
    sleep: Callable[[float], None],
) -> Any:
    """GET one page, retrying transient failures, and return its decoded JSON body."""

    def log_retry(state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        log.warning(
            "%s: GET %s attempt %d/%d failed (%s); retrying in %.1fs",
            config.entity,
            display,
            state.attempt_number,
            config.max_attempts,
            _describe(state.outcome.exception()),  # the log redacts registered secrets
            state.next_action.sleep,
        )

    retrying = Retrying(
        stop=stop_after_attempt(config.max_attempts),
        wait=_wait,
        retry=retry_if_exception_type(_TRANSIENT),
        sleep=sleep,
        before_sleep=log_retry,
    )
    try:
        response = retrying(_get_once, http, url, params, headers, config.timeout_s)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise HttpSourceError(
            f"{config.entity}: GET {display} failed after {config.max_attempts} attempt(s):"
            f" {_describe(last)}"
        ) from None
    except requests.RequestException as exc:  # not worth retrying: a bad URL, too many redirects
        raise HttpSourceError(f"{config.entity}: GET {display} failed: {_describe(exc)}") from None

    status = response.status_code
    if not 200 <= status < 300:
        body = _snippet(response)
        raise HttpStatusError(
            f"{config.entity}: GET {display} returned HTTP {status}: {body}",
            url=display,
            status=status,
            body=body,
        )
    try:
        return response.json()
    except ValueError:
        raise HttpSourceError(
            f"{config.entity}: GET {display} returned a body that is not JSON: {_snippet(response)}"
        ) from None


def _get_once(
    http: requests.Session,
    url: str,
    params: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
) -> requests.Response:
    response = http.get(url, params=params, headers=headers, timeout=timeout_s)
    if response.status_code == 429 or response.status_code >= 500:
        raise _RetryableResponse(response.status_code, _retry_after(response), _snippet(response))
    return response


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome is not None else None
    if isinstance(error, _RetryableResponse) and error.retry_after is not None:
        return min(error.retry_after, _MAX_RETRY_AFTER_S)
    return _BACKOFF(state)


def _retry_after(response: requests.Response) -> float | None:
    """`Retry-After` in seconds; None when absent or an HTTP date (the backoff applies then)."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _records(body: Any, config: HttpSourceConfig, display: str) -> list[Any]:
    found = _dig(body, config.records_path)
    if found is _MISSING:
        keys = ", ".join(body) if isinstance(body, dict) else json_type(body)
        raise HttpSourceError(
            f"{config.entity}: GET {display}: no {config.records_path!r} in the response"
            f" (found: {keys}); check records_path"
        )
    if found is None:
        return []
    if not isinstance(found, list):
        raise HttpSourceError(
            f"{config.entity}: GET {display}: {config.records_path or 'the body'!r} is a JSON"
            f" {json_type(found)}, expected a list of records"
        )
    return found


def _dig(body: Any, dotted: str) -> Any:
    node = body
    for part in dotted.split(".") if dotted else ():
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


# --- writing --------------------------------------------------------------------------------


def _to_row(record: Any, config: HttpSourceConfig) -> dict[str, str]:
    if not isinstance(record, dict):
        raise HttpSourceError(
            f"{config.entity}: expected each record to be a JSON object, got {json_type(record)}"
        )
    row: dict[str, str] = {}
    for key, value in record.items():
        column = config.field_map.get(key, key)
        if column in row:
            raise HttpSourceError(
                f"{config.entity}: two API fields land in column {column!r}; check field_map"
            )
        row[column] = _cell(value)
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _newest(
    best: tuple[datetime, str] | None, value: Any, config: HttpSourceConfig
) -> tuple[datetime, str] | None:
    """Keep the newest timestamp seen, compared as instants but remembered verbatim."""
    if value is None or value == "":
        return best
    name = config.updated_at_field
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise HttpSourceError(
            f"{config.entity}: {name} value {value!r} is not an ISO 8601 timestamp"
        ) from None
    if best is None:
        return parsed, value
    try:
        return (parsed, value) if parsed > best[0] else best
    except TypeError:
        raise HttpSourceError(
            f"{config.entity}: {name} mixes timestamps with and without a UTC offset"
            f" ({best[1]!r}, {value!r}); cannot tell which is newest"
        ) from None


def _write_csv_atomically(target: Path, columns: list[str], rows: Iterable[dict[str, str]]) -> None:
    # The temp name does not end in .csv, so a reader globbing the folder never picks it up.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- small helpers --------------------------------------------------------------------------


def _display_url(template: str, params: Mapping[str, Any]) -> str:
    """The URL as configured (secrets still `${...}`) with the query this module added."""
    return f"{template}{'&' if '?' in template else '?'}{urlencode(params)}"


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _RetryableResponse):
        return str(error)
    return one_line(f"{type(error).__name__}: {error}")


def _snippet(response: requests.Response) -> str:
    # redacted before it is cut: a secret across the cut would leave its start behind
    text = redact(response.text[: _BODY_SNIPPET_CHARS * 20])
    return one_line(text)[:_BODY_SNIPPET_CHARS] or "(empty body)"
