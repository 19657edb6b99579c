"""Entity declarations, read from the Great Expectations suites in `expectations/`.

Each suite is the single declaration of one input entity: its expectations state the rules, and its
`meta.followup` block names the columns (with their Chinese headers and types), the key, and the
columns derived for the checks from other tables (flows/ingestion/derived.py says how).
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
# loaded by their own commands: `followup feedback`, `followup tasks` (returned call lists)
OTHER_ENTITIES = ("feedback", "task_results")
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
    # A derived column is not read from the file nor stored: it is computed for the checks from
    # another table (`lookup` "schema.table.column", joined where its `on` columns equal this
    # row's `by` columns) or from a link in another column (`host_of`).
    lookup: str | None = None
    by: tuple[str, ...] = ()
    host_of: str | None = None
    # the lookup's finer points (flows/ingestion/derived.py): the table's columns matching `by`,
    # a value for an empty `by` column, which of the rows found, an ASOF match and its window
    on: tuple[str, ...] = ()
    by_default: dict[str, str] = field(default_factory=dict)
    aggregate: str = "any"  # any, single, count
    latest: dict[str, str] | None = None  # {by: row's time column, on: table's}
    within_hours: Any = None  # hours, or {"$PARAMETER": name} of hours per `hours_per` value
    hours_per: str | None = None
    # derived columns giving the value a row leaves empty (the first that has one)
    fill_from: tuple[str, ...] = ()
    fill_before_checks: bool = False  # filled before the checks; the key keeps the file's value

    @property
    def sql_type(self) -> str:
        return COLUMN_TYPES[self.type]


@dataclass(frozen=True)
class Expectation:
    index: int
    type: str
    kwargs: dict[str, Any]
    severity: str
    reason: str | None = None  # the quarantine's words, where the generated ones would not do

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @property
    def columns(self) -> list[str]:
        if "column_A" in self.kwargs:  # a pair: the first is the one reported
            return [self.kwargs["column_A"], self.kwargs["column_B"]]
        return self.kwargs.get("column_list") or [self.kwargs["column"]]

    @property
    def row_condition(self) -> dict[str, Any] | None:
        """Great Expectations' serialised condition: the rows the expectation applies to."""
        return self.kwargs.get("row_condition")


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
    derived: dict[str, Column] = field(default_factory=dict)
    # columns added to the content key only when filled: rows keyed before they existed keep
    # their key (a reload of an older file changes nothing)
    derived_key_extra: tuple[str, ...] = ()
    # a row with all of these empty is not one of the entity's rows (a returned call list's task
    # not done yet): it is counted as skipped, neither loaded nor quarantined
    skip_without: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        return self.columns.get(name) or self.derived[name]

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


def bare_header(text: str) -> str:
    """The header without a trailing note in brackets: `outcome (结果)` or `金额(元)` is read as
    `outcome` or `金额` when the whole text names no column."""
    return re.sub(r"\s*[(（][^()（）]*[)）]\s*$", "", text or "")


def _names(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _column(name: str, spec: dict[str, Any], path: Path) -> Column:
    by = _names(spec.get("by"))
    column = Column(
        name=name,
        type=spec["type"],
        aliases=tuple(spec.get("aliases", ())),
        values={k: tuple(v) for k, v in spec.get("values", {}).items()},
        default=spec.get("default"),
        open=spec.get("open", False),
        upper=spec.get("upper", False),
        pii=spec.get("pii", False),
        lookup=spec.get("lookup"),
        by=by,
        host_of=spec.get("host_of"),
        on=_names(spec.get("on")) or by,
        by_default=dict(spec.get("by_default", {})),
        aggregate=spec.get("aggregate", "any"),
        latest=spec.get("latest"),
        within_hours=spec.get("within_hours"),
        hours_per=spec.get("hours_per"),
        fill_from=_names(spec.get("fill_from")),
        fill_before_checks=spec.get("fill_before_checks", False),
    )
    if column.type not in COLUMN_TYPES:
        raise ValueError(f"{path}: column {column.name} has unknown type {column.type!r}")
    if column.aggregate not in ("any", "single", "count") or len(column.on) != len(column.by):
        raise ValueError(
            f"{path}: derived column {name}: aggregate is any, single or count, and `on` names "
            "as many columns as `by`"
        )
    return column


def _entity_from_suite(suite: dict[str, Any], path: Path) -> Entity:
    meta = suite.get("meta", {}).get("followup")
    if not meta:
        raise ValueError(f"{path}: suite has no meta.followup block")
    columns = {name: _column(name, spec, path) for name, spec in meta["columns"].items()}
    derived = {name: _column(name, spec, path) for name, spec in meta.get("derived", {}).items()}
    for column in columns.values():
        for source in column.fill_from:
            if source not in derived:
                raise ValueError(f"{path}: {column.name} fills from {source!r}, not derived")
    known = set(columns)  # a derived column reads the file's columns and those declared before
    for column in derived.values():
        sources = column.by or (column.host_of,)
        if not set(sources) <= known or (column.lookup is None) == (column.host_of is None):
            raise ValueError(
                f"{path}: derived column {column.name} needs `lookup` with `by`, or `host_of`, "
                "naming columns of the file or derived columns declared before it"
            )
        known.add(column.name)
    for name in meta.get("skip_rows_without", ()):
        if name not in columns:
            raise ValueError(f"{path}: skip_rows_without names unknown column {name!r}")
    expectations = []
    for index, raw in enumerate(suite["expectations"]):
        severity = raw.get("meta", {}).get("severity", "error")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: expectation {index} has unknown severity {severity!r}")
        reason = raw.get("meta", {}).get("reason")
        expectation = Expectation(index, raw["type"], raw["kwargs"], severity, reason)
        for name in expectation.columns:
            if name not in columns and name not in derived:
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
        derived=derived,
        derived_key_extra=tuple(meta.get("derived_key_extra", ())),
        skip_without=tuple(meta.get("skip_rows_without", ())),
    )


@cache
def load_entity(name: str, directory: Path = EXPECTATIONS_DIR) -> Entity:
    path = directory / f"{name}.json"
    return _entity_from_suite(json.loads(path.read_text(encoding="utf-8")), path)


def all_entities(directory: Path = EXPECTATIONS_DIR) -> list[Entity]:
    return [load_entity(name, directory) for name in LOAD_ORDER]
