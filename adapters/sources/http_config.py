"""`sources.yml`: which entities come from a JSON API and how to page through it, validated into
`HttpSourceConfig`s (a bad entry is one line naming it), with `${ENV_VAR}` references expanded at
fetch time."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from flows.secrets import SECRET_NAME, redact


class HttpSourceError(RuntimeError):
    """An API source could not be fetched; the message names the entity and why, in one line,
    without any registered secret (a token the API echoed back included)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# The entity names the output file, so it must be a plain file stem.
_ENTITY_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


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
    # A fetch that passes any of these stops with one line and loads nothing (an API that keeps
    # answering would otherwise never end, holding up the day's run).
    max_pages: int = 2000
    max_records: int = 1_000_000
    max_seconds: float = 1800
    field_map: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        problem = _config_problem(self)
        if problem is not None:
            raise ValueError(f"{self.entity}: {problem}")
        # Own copies, so a caller mutating its dict cannot change a frozen config.
        object.__setattr__(self, "headers", dict(self.headers))
        object.__setattr__(self, "field_map", dict(self.field_map))


def load_http_sources(path: Path) -> list[HttpSourceConfig]:
    """Read and validate `sources.yml`: a mapping `{entity: {url: ..., pagination: ..., ...}}`.

    Unknown keys and bad values raise `ValueError` naming the file, the entity and the problem in
    one line. `${ENV_VAR}` references are checked for syntax here and expanded only at fetch time.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {one_line(str(exc))}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if document is None:
        return []
    if not isinstance(document, dict):
        raise ValueError(
            f"{path}: expected a mapping of entity -> settings, got {json_type(document)}"
        )

    known = [f.name for f in fields(HttpSourceConfig) if f.name != "entity"]
    configs = []
    for entity, settings in document.items():
        where = f"{path}: {entity}"
        if not isinstance(entity, str):
            raise ValueError(f"{where}: entity names must be strings")
        if not isinstance(settings, dict):
            raise ValueError(f"{where}: expected a mapping of settings, got {json_type(settings)}")
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
    if not is_int(config.page_size) or config.page_size < 1:
        return f"page_size must be a positive integer, got {config.page_size!r}"
    if not is_number(config.timeout_s) or config.timeout_s <= 0:
        return f"timeout_s must be a positive number of seconds, got {config.timeout_s!r}"
    if not is_int(config.max_attempts) or config.max_attempts < 1:
        return f"max_attempts must be an integer >= 1, got {config.max_attempts!r}"
    for name in ("max_pages", "max_records"):
        if not is_int(getattr(config, name)) or getattr(config, name) < 1:
            return f"{name} must be a positive integer, got {getattr(config, name)!r}"
    if not is_number(config.max_seconds) or config.max_seconds <= 0:
        return f"max_seconds must be a positive number, got {config.max_seconds!r}"
    for name in ("headers", "field_map"):
        mapping = getattr(config, name)
        if not isinstance(mapping, Mapping):
            return f"{name} must be a mapping, got {json_type(mapping)}"
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


def expand(value: str, *, entity: str, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = os.environ.get(name)
        if not resolved:
            raise HttpSourceError(
                f"{entity}: environment variable {name} is not set or empty (used in {where})"
            )
        return resolved

    return _ENV_REF.sub(substitute, value)


def env_values(value: str) -> list[str]:
    return [os.environ[m.group(1)] for m in _ENV_REF.finditer(value) if os.environ.get(m.group(1))]


def one_line(text: str) -> str:
    return " ".join(text.split())


def json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if is_number(value) else type(value).__name__)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def secret_values(config: HttpSourceConfig, headers: Mapping[str, str]) -> list[str]:
    """What must never show in an error or a log line: the variables in the URL, and the
    (expanded) values of headers that name a variable or whose name says they are secret."""
    return env_values(config.url) + [
        secret
        for name, raw in config.headers.items()
        if env_values(raw) or SECRET_NAME.search(name)
        for secret in (*env_values(raw), headers[name])
    ]


def within_limits(config: HttpSourceConfig, pages: int, records: int, seconds: float) -> None:
    """Stop a fetch past its source's limits, with one line naming the limit to raise."""
    for limit, value, name in (
        (config.max_pages, pages, "pages"),
        (config.max_records, records, "records"),
        (config.max_seconds, seconds, "seconds"),
    ):
        if value > limit:
            shown = f"{value:.0f}" if name == "seconds" else f"{value:,}"
            raise HttpSourceError(
                f"{config.entity}: stopped after {shown} {name}, over max_{name} = {limit:,}"
                f" in sources.yml; nothing was loaded and the cursor stays (raise max_{name}"
                " if the API really has that much)"
            )
