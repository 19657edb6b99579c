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
import difflib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import duckdb
import requests
import yaml
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

log = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The entity names the output file, so it must be a plain file stem.
_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_MAX_RETRY_AFTER_S = 60.0
_BODY_SNIPPET_CHARS = 200
_BACKOFF = wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.1)
_CURSOR_TABLE = "source_cursors"
_MISSING = object()


class HttpSourceError(RuntimeError):
    """An API source could not be fetched; the message names the entity and why, in one line."""


class HttpStatusError(HttpSourceError):
    """The API answered with an error status that retrying cannot fix (a 4xx other than 429)."""

    def __init__(self, message: str, *, url: str, status: int, body: str) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


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
class HttpSourceConfig:
    """One entity served by a JSON API: one entry of `sources.yml`.

    `url` and `headers` values may contain `${ENV_VAR}`, expanded at fetch time. Dotted paths
    (`records_path`, `next_cursor_path`) walk JSON objects; an empty `records_path` means the body
    itself is the list. `updated_at_field` is the API's field name (before `field_map`).
    """

    entity: str
    url: str
    pagination: Literal["page", "cursor"] = "page"
    records_path: str = "data"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = 500
    cursor_param: str = "cursor"
    next_cursor_path: str = "next_cursor"
    updated_since_param: str = "updated_since"
    updated_at_field: str = "updated_at"
    # Mappings are not hashable; leaving them out of the hash keeps it consistent with equality.
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    timeout_s: float = 30
    max_attempts: int = 5
    field_map: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        problem = _config_problem(self)
        if problem is not None:
            raise ValueError(f"{self.entity}: {problem}")
        # Own copies, so a caller mutating its dict cannot change a frozen config.
        object.__setattr__(self, "headers", dict(self.headers))
        object.__setattr__(self, "field_map", dict(self.field_map))


@dataclass(frozen=True)
class FetchResult:
    """What one `fetch` produced."""

    entity: str
    path: Path | None  # the written CSV; None when the API returned no records
    records: int
    pages: int
    new_cursor: str | None  # the newest `updated_at_field` value, verbatim; None when no records


def load_http_sources(path: Path) -> list[HttpSourceConfig]:
    """Read and validate `sources.yml`: a mapping `{entity: {url: ..., pagination: ..., ...}}`.

    Unknown keys and bad values raise `ValueError` naming the file, the entity and the problem in
    one line. `${ENV_VAR}` references are checked for syntax here and expanded only at fetch time.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {_one_line(str(exc))}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ValueError(
            f"{path}: expected a mapping of entity -> settings, got {_json_type(document)}"
        )

    known = [f.name for f in fields(HttpSourceConfig) if f.name != "entity"]
    configs = []
    for entity, settings in document.items():
        where = f"{path}: {entity}"
        if not isinstance(entity, str):
            raise ValueError(f"{where}: entity names must be strings")
        if not isinstance(settings, dict):
            raise ValueError(f"{where}: expected a mapping of settings, got {_json_type(settings)}")
        for key in settings:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                raise ValueError(f"{where}: unknown key {key!r} ({hint})")
        if "url" not in settings:
            raise ValueError(f"{where}: missing required key 'url'")
        try:
            configs.append(HttpSourceConfig(entity=entity, **settings))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return configs


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
    url = _expand(config.url, entity=config.entity, where="url")
    headers = {
        name: _expand(value, entity=config.entity, where=f"headers.{name}")
        for name, value in config.headers.items()
    }
    # Expanded URL values (an API key in the query) must not leak into error messages or logs.
    secrets = _env_values(config.url)
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
            newest: tuple[datetime, str] | None = None
            for page in _pages(config, http, url, headers, updated_since, sleep, secrets):
                pages += 1
                for record in page:
                    row = _to_row(record, config)
                    columns.update(dict.fromkeys(row))
                    spool.write(json.dumps(row, ensure_ascii=False) + "\n")
                    newest = _newest(newest, record.get(config.updated_at_field), config)
                    records += 1
            if records == 0:
                target.unlink(missing_ok=True)
                return FetchResult(config.entity, None, 0, pages, None)
            spool.seek(0)
            _write_csv_atomically(target, list(columns), (json.loads(line) for line in spool))
    finally:
        if session is None:
            http.close()
    log.info("%s: fetched %d records in %d pages into %s", config.entity, records, pages, target)
    return FetchResult(config.entity, target, records, pages, newest[1] if newest else None)


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
    secrets: list[str],
) -> Iterator[list[Any]]:
    """Yield each page's list of records, following the configured pagination to the end."""
    since = {} if updated_since is None else {config.updated_since_param: updated_since}

    def get(params: dict[str, Any]) -> tuple[Any, list[Any], str]:
        display = _display_url(config.url, params)
        body = _get_json(config, http, url, params, headers, display, sleep, secrets)
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
                    f" {_json_type(found)}, expected a string or number"
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
    secrets: list[str],
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
            _redact(_describe(state.outcome.exception()), secrets),
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
            f" {_redact(_describe(last), secrets)}"
        ) from None
    except requests.RequestException as exc:  # not worth retrying: a bad URL, too many redirects
        raise HttpSourceError(
            f"{config.entity}: GET {display} failed: {_redact(_describe(exc), secrets)}"
        ) from None

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
        keys = ", ".join(body) if isinstance(body, dict) else _json_type(body)
        raise HttpSourceError(
            f"{config.entity}: GET {display}: no {config.records_path!r} in the response"
            f" (found: {keys}); check records_path"
        )
    if found is None:
        return []
    if not isinstance(found, list):
        raise HttpSourceError(
            f"{config.entity}: GET {display}: {config.records_path or 'the body'!r} is a JSON"
            f" {_json_type(found)}, expected a list of records"
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
            f"{config.entity}: expected each record to be a JSON object, got {_json_type(record)}"
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


# --- configuration --------------------------------------------------------------------------


def _config_problem(config: HttpSourceConfig) -> str | None:
    """The first thing wrong with `config`, as a phrase, or None."""
    if not isinstance(config.entity, str) or not _ENTITY_NAME.match(config.entity):
        return "entity names must be lowercase letters, digits and _ (they name <entity>.csv)"
    if not isinstance(config.url, str) or not config.url.strip():
        return "url must be a non-empty string"
    if problem := _env_ref_problem(config.url, "url"):
        return problem
    if not config.url.startswith(("${", "http://", "https://")):
        return f"url must start with http:// or https://, got {config.url!r}"
    if config.pagination not in ("page", "cursor"):
        return f"pagination must be 'page' or 'cursor', got {config.pagination!r}"
    if not isinstance(config.records_path, str):
        return "records_path must be a string (empty: the body itself is the list)"
    for name in (
        "page_param",
        "page_size_param",
        "cursor_param",
        "next_cursor_path",
        "updated_since_param",
        "updated_at_field",
    ):
        value = getattr(config, name)
        if not isinstance(value, str) or not value:
            return f"{name} must be a non-empty string, got {value!r}"
    if not _is_int(config.page_size) or config.page_size < 1:
        return f"page_size must be a positive integer, got {config.page_size!r}"
    if not _is_number(config.timeout_s) or config.timeout_s <= 0:
        return f"timeout_s must be a positive number of seconds, got {config.timeout_s!r}"
    if not _is_int(config.max_attempts) or config.max_attempts < 1:
        return f"max_attempts must be an integer >= 1, got {config.max_attempts!r}"
    for name in ("headers", "field_map"):
        mapping = getattr(config, name)
        if not isinstance(mapping, Mapping):
            return f"{name} must be a mapping, got {_json_type(mapping)}"
        for key, value in mapping.items():
            if not isinstance(key, str) or not isinstance(value, str) or not value:
                return f"{name}.{key} must map a name to a non-empty string, got {value!r}"
            if name == "headers" and (problem := _env_ref_problem(value, f"headers.{key}")):
                return problem
    targets = list(config.field_map.values())
    if duplicate := next((t for t in targets if targets.count(t) > 1), None):
        return f"field_map sends more than one field to column {duplicate!r}"
    return None


def _env_ref_problem(value: str, where: str) -> str | None:
    for match in _ENV_REF.finditer(value):
        if not _ENV_NAME.match(match.group(1)):
            return f"{where}: {match.group(0)!r} is not a valid ${{ENV_VAR}} reference"
    if "${" in _ENV_REF.sub("", value):
        return f"{where}: unclosed '${{' in {value!r}"
    return None


def _expand(value: str, *, entity: str, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = os.environ.get(name)
        if not resolved:
            raise HttpSourceError(
                f"{entity}: environment variable {name} is not set or empty (used in {where})"
            )
        return resolved

    return _ENV_REF.sub(substitute, value)


def _env_values(value: str) -> list[str]:
    return [os.environ[m.group(1)] for m in _ENV_REF.finditer(value) if os.environ.get(m.group(1))]


# --- small helpers --------------------------------------------------------------------------


def _display_url(template: str, params: Mapping[str, Any]) -> str:
    """The URL as configured (secrets still `${...}`) with the query this module added."""
    return f"{template}{'&' if '?' in template else '?'}{urlencode(params)}"


def _redact(text: str, secrets: list[str]) -> str:
    # Very short values would blank out unrelated text and are hardly secrets.
    for secret in (s for s in secrets if len(s) >= 4):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return text


def _describe(error: BaseException | None) -> str:
    if isinstance(error, _RetryableResponse):
        return str(error)
    return _one_line(f"{type(error).__name__}: {error}")


def _snippet(response: requests.Response) -> str:
    return _one_line(response.text[:_BODY_SNIPPET_CHARS]) or "(empty body)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if _is_number(value) else type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
