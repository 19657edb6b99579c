"""Entity declarations, read from the Great Expectations suites in `expectations/`.

Each suite is the single declaration of one input entity: its expectations state the rules, and its
`meta.followup` block names the columns (with their Chinese headers and types) and the key.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from flows.settings import EXPECTATIONS_DIR

# Load order matters: orders, events, contracts and tags refer to customers.
LOAD_ORDER = ("customers", "staff", "orders", "events", "contracts", "tags")
COLUMN_TYPES = {
    "id": "VARCHAR",
    "message_ref": "VARCHAR",
    "text": "VARCHAR",
    "phone": "VARCHAR",
    "email": "VARCHAR",
    "enum": "VARCHAR",
    "timezone": "VARCHAR",
    "list": "VARCHAR",
    "json": "JSON",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "date": "DATE",
    "bool": "BOOLEAN",
    "decimal": "DECIMAL(18,2)",
    "integer": "BIGINT",
}
SEVERITIES = ("fatal", "error", "warning")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    aliases: tuple[str, ...] = ()
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default: str | None = None
    open: bool = False  # an enum that accepts values beyond the listed ones
    upper: bool = False
    pii: bool = False

    @property
    def sql_type(self) -> str:
        return COLUMN_TYPES[self.type]


@dataclass(frozen=True)
class Expectation:
    index: int
    type: str
    kwargs: dict[str, Any]
    severity: str

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def columns(self) -> list[str]:
        return self.kwargs.get("column_list") or [self.kwargs["column"]]


@dataclass(frozen=True)
class Entity:
    name: str
    description: str
    required_file: bool
    key: tuple[str, ...]
    derived_key: tuple[str, ...]
    columns: dict[str, Column]
    expectations: tuple[Expectation, ...]
    suite: dict[str, Any]

    @property
    def required_columns(self) -> list[str]:
        return [e.column for e in self.expectations if e.type == "expect_column_to_exist"]

    @property
    def row_expectations(self) -> list[Expectation]:
        return [e for e in self.expectations if e.type != "expect_column_to_exist"]

    def header_map(self) -> dict[str, str]:
        """Normalised header text -> column name, for English names and Chinese aliases."""
        mapping: dict[str, str] = {}
        for column in self.columns.values():
            for text in (column.name, *column.aliases):
                mapping.setdefault(normalise_header(text), column.name)
        return mapping


def normalise_header(text: str) -> str:
    """Header text as compared: NFKC (full-width to ASCII), trimmed, lower case, spaces as `_`."""
    text = unicodedata.normalize("NFKC", text).replace("\ufeff", "").strip().lower()
    return re.sub(r"[\s\-]+", "_", text)


def _entity_from_suite(suite: dict[str, Any], path: Path) -> Entity:
    meta = suite.get("meta", {}).get("followup")
    if not meta:
        raise ValueError(f"{path}: suite has no meta.followup block")
    columns = {
        name: Column(
            name=name,
            type=spec["type"],
            aliases=tuple(spec.get("aliases", ())),
            values={k: tuple(v) for k, v in spec.get("values", {}).items()},
            default=spec.get("default"),
            open=spec.get("open", False),
            upper=spec.get("upper", False),
            pii=spec.get("pii", False),
        )
        for name, spec in meta["columns"].items()
    }
    for column in columns.values():
        if column.type not in COLUMN_TYPES:
            raise ValueError(f"{path}: column {column.name} has unknown type {column.type!r}")
    expectations = []
    for index, raw in enumerate(suite["expectations"]):
        severity = raw.get("meta", {}).get("severity", "error")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: expectation {index} has unknown severity {severity!r}")
        expectation = Expectation(index, raw["type"], raw["kwargs"], severity)
        for name in expectation.columns:
            if name not in columns:
                raise ValueError(f"{path}: expectation {index} names unknown column {name!r}")
        expectations.append(expectation)
    return Entity(
        name=suite["name"],
        description=meta.get("description", ""),
        required_file=meta.get("required_file", False),
        key=tuple(meta["key"]),
        derived_key=tuple(meta.get("derived_key", ())),
        columns=columns,
        expectations=tuple(expectations),
        suite=suite,
    )


@cache
def load_entity(name: str, directory: Path = EXPECTATIONS_DIR) -> Entity:
    path = directory / f"{name}.json"
    return _entity_from_suite(json.loads(path.read_text(encoding="utf-8")), path)


def all_entities(directory: Path = EXPECTATIONS_DIR) -> list[Entity]:
    return [load_entity(name, directory) for name in LOAD_ORDER]
