"""Type one source table and check it against its suite, in DuckDB.

Each expectation of the entity's Great Expectations suite compiles to a SQL predicate that is true
on the rows that break it, so every row gets every reason in one pass over the data. The same
predicates give the per-expectation counts that the Data Docs report shows. The columns a suite
derives from other tables (a feedback row's message found by its phone number) are computed first,
in flows/ingestion/derived.py; a condition (`row_condition`) may be a comparison or Great
Expectations' nullity condition, and an `and` / `or` of them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import phonenumbers

from flows.ingestion import derived
from flows.ingestion import typing as ty
from flows.ingestion.entities import Entity, Expectation
from flows.ingestion.readers import SourceTable

log = logging.getLogger(__name__)

PARTIAL_UNEXPECTED = 20
# The expectations of a key that must not repeat (one column, or several together).
UNIQUE = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")


@dataclass(frozen=True)
class CheckParams:
    """Values the suites refer to as `{"$PARAMETER": name}`."""

    as_of_date: dt.date
    future_cutoff: dt.datetime  # timestamps after this cannot have happened by the run
    business_tz: str
    earliest_date: dt.date = dt.date(2000, 1, 1)  # facts dated before this are not plausible
    survey_hosts: tuple[str, ...] = ()  # where the survey and unsubscribe links live
    # hours a reply may come after its message, per channel (dbt var response_window_hours)
    response_window_hours: dict[str, int] = field(default_factory=lambda: {"default": 72})

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and "$PARAMETER" in value:
            name = value["$PARAMETER"]
            if name in ("as_of_date", "future_cutoff", "earliest_date"):
                return getattr(self, name)
            if name == "survey_hosts":
                return list(self.survey_hosts)
            if name == "response_window_hours":
                return dict(self.response_window_hours)
            if "." in name:
                return name  # a reference to a key of another entity: `customers.customer_id`
            raise ValueError(f"unknown suite parameter {name!r}")
        return value


@dataclass
class ExpectationOutcome:
    expectation: Expectation
    reason: str
    unexpected_count: int = 0
    missing_count: int = 0
    partial_unexpected: list[Any] = field(default_factory=list)


@dataclass
class CheckResult:
    entity: Entity
    source: SourceTable
    table: str  # typed rows with one boolean `_x<i>` per expectation
    element_count: int
    outcomes: list[ExpectationOutcome]
    params: CheckParams
    skipped: int = 0  # rows that are not the entity's (`Entity.skip_without`)

    def reasons_sql(self, severity: str) -> str:
        picked = [o for o in self.outcomes if o.expectation.severity == severity]
        if not picked:
            return "cast([] as varchar[])"
        cases = ", ".join(f"case when _x{o.expectation.index} then {o.reason} end" for o in picked)
        return f"list_filter([{cases}], lambda r: r is not null)"

    def any_sql(self, severity: str) -> str:
        picked = [o for o in self.outcomes if o.expectation.severity == severity]
        return " or ".join(f"_x{o.expectation.index}" for o in picked) or "false"


def _literal(value: Any, sql_type: str) -> str:
    if isinstance(value, dt.datetime):
        return f"cast({ty.quote(value.isoformat())} as timestamptz)"
    if isinstance(value, dt.date):
        value = value.isoformat()
    if isinstance(value, str):
        return f"cast({ty.quote(value)} as {sql_type})"
    return f"cast({value} as {sql_type})"


def _python_phones(con: duckdb.DuckDBPyConnection, column: str, table: str, out: str) -> None:
    """Phones the SQL fast path does not type go through phonenumbers (a small share)."""
    national = ty.phone_national(f"{column}__digits")
    rows = con.execute(
        f"select distinct {column}__raw from {table} "
        f"where {column}__raw is not null and not {ty.is_cn_mobile(national)}"
    ).fetchall()
    typed = []
    for (raw,) in rows:
        try:
            number = phonenumbers.parse(raw, "CN")
            valid = phonenumbers.is_valid_number(number)
        except phonenumbers.NumberParseException:
            valid = False
        e164 = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if valid
            else None
        )
        typed.append((raw, e164))
    con.execute(f"create or replace temp table {out} (raw varchar, e164 varchar)")
    if typed:
        con.executemany(f"insert into {out} values (?, ?)", typed)


_OPERATORS = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# the rows a pair expectation skips, by Great Expectations' `ignore_row_if`
_PAIR_SKIPS = {
    "either_value_is_missing": "{a} is null or {b} is null",
    "both_values_are_missing": "{a} is null and {b} is null",
    "neither": "false",
}


def _value(value: Any) -> str:
    return ty.quote(value) if isinstance(value, str) else repr(value)


def _condition(condition: dict[str, Any]) -> tuple[str, str]:
    """(SQL, words) of Great Expectations' serialised row condition: a comparison of a column
    with a value, or an `and`/`or` of them."""
    kind = condition.get("type")
    if kind in ("and", "or"):
        parts = [_condition(c) for c in condition["conditions"]]
        return (
            "(" + f" {kind} ".join(sql for sql, _ in parts) + ")",
            f" {kind} ".join(words for _, words in parts),
        )
    if kind == "nullity":  # Great Expectations' NullityCondition
        name, is_null = condition["column"]["name"], condition["is_null"]
        negation = "" if is_null else "not "
        return f"{name} is {negation}null", f"{name} IS {negation.upper()}NULL"
    if kind != "comparison":
        raise ValueError(f"row condition of type {kind!r} is not supported by the SQL engine")
    column, operator, value = (
        condition["column"]["name"],
        condition["operator"],
        condition["parameter"],
    )
    if operator in ("IN", "NOT_IN"):
        listed = ", ".join(_value(v) for v in value)
        negation = "not " if operator == "NOT_IN" else ""
        return (
            f"{column} {negation}in ({listed})",
            f"{column} {negation}in {', '.join(map(str, value))}",
        )
    return f"{column} {_OPERATORS[operator]} {_value(value)}", f"{column} {operator} {value}"


def _bound(value: Any, column_type: str, tz: str) -> Any:
    """A date bound on a timestamp column is that day's start in the business time zone."""
    if type(value) is dt.date and column_type == "timestamp":
        return dt.datetime.combine(value, dt.time(), ZoneInfo(tz))
    return value


def _predicate(entity: Entity, e: Expectation, params: CheckParams) -> tuple[str, str]:
    """(SQL true where a row breaks `e`, SQL of the reason text)."""
    predicate, reason = _rule(entity, e, params)
    if e.reason is not None:
        reason = ty.quote(e.reason) + (_other_value(e) if e.type in _PAIRS else "")
    if e.row_condition is not None:
        # a reason of the suite's own says where it applies; the generated one is told
        sql, words = _condition(e.row_condition)
        suffix = "" if e.reason is not None else f" || {ty.quote(f' (where {words})')}"
        return f"({sql}) and ({predicate})", reason + suffix
    return predicate, reason


_PAIRS = (
    "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_a_to_be_greater_than_b",
)


def _other_value(e: Expectation) -> str:
    """SQL appending the second column's value to a pair's reason: ` (message_customer_id C1)`."""
    b = e.columns[1]
    return f" || ' ({b} ' || coalesce(cast({b} as varchar), 'missing') || ')'"


def _pair(entity: Entity, e: Expectation, params: CheckParams) -> tuple[str, str]:
    a, b = e.columns
    skip = _PAIR_SKIPS[e.kwargs.get("ignore_row_if", "both_values_are_missing")].format(a=a, b=b)
    shown = _other_value(e)
    if e.type == "expect_column_pair_values_to_be_equal":
        return f"not ({skip}) and {a} is distinct from {b}", ty.quote(
            f"{a}: differs from {b}"
        ) + shown
    left = a
    if entity.column(a).type == "timestamp" and entity.column(b).type == "date":
        left = f"cast(timezone({ty.quote(params.business_tz)}, {a}) as date)"  # that day, there
    operator = ">=" if e.kwargs.get("or_equal") else ">"
    words = "before" if e.kwargs.get("or_equal") else "not after"
    return (
        f"not ({skip}) and not coalesce({left} {operator} {b}, false)",
        ty.quote(f"{a}: {words} {b}") + shown,
    )


def _rule(entity: Entity, e: Expectation, params: CheckParams) -> tuple[str, str]:
    if e.type in _PAIRS:
        return _pair(entity, e, params)
    col = e.column
    kind = e.type
    if kind == "expect_column_values_to_not_be_null":
        if col in entity.derived:  # computed, not read: no cell of the file
            return f"{col} is null", ty.quote(f"{col}: required value is missing")
        return f"{col} is null and {col}__raw is null", ty.quote(
            f"{col}: required value is missing"
        )
    if kind == "expect_column_values_to_be_of_type":
        label = ty.TYPE_LABELS.get(entity.column(col).type, e.kwargs.get("type_", "value"))
        return f"{col}__raw is not null and {col} is null", ty.quote(f"{col}: not a valid {label}")
    if kind == "expect_column_values_to_match_regex":
        label = ty.TYPE_LABELS.get(entity.column(col).type, f"value (pattern {e.kwargs['regex']})")
        return (
            f"{col}__raw is not null and ({col} is null or not regexp_full_match({col}, "
            f"{ty.quote(e.kwargs['regex'])}))",
            ty.quote(f"{col}: not a valid {label}"),
        )
    if kind in UNIQUE:
        cols = e.columns
        label = ", ".join(cols)
        return (
            f"_first{e.index} is not null and _line > _first{e.index}",
            f"'{label}: duplicate (first at line ' || _first{e.index} || ')'",
        )
    if kind == "expect_column_values_to_be_in_set":
        value_set = params.resolve(e.kwargs["value_set"])
        if isinstance(value_set, str):  # a foreign key
            return (
                f"{col} is not null and _fk{e.index} is null",
                ty.quote(f"{col}: not found in {value_set}"),
            )
        allowed = ", ".join(ty.quote(str(v)) for v in value_set)
        listed = ", ".join(map(str, value_set)) if len(value_set) <= 6 else None
        outside = f"{col} not in ({allowed})" if value_set else "true"  # an empty set takes none
        return (
            f"{col} is not null and {outside}",
            ty.quote(f"{col}: not one of {listed}" if listed else f"{col}: not a known {col}"),
        )
    if kind == "expect_column_values_to_be_between":
        column = entity.column(col)
        checks, reasons = [], []
        low, high = e.kwargs.get("min_value"), e.kwargs.get("max_value")
        if low is not None:
            low_value = params.resolve(low)
            bound = _bound(low_value, column.type, params.business_tz)
            words = (
                f"before {low_value}, the earliest date taken (FOLLOWUP_EARLIEST_DATE)"
                if isinstance(low, dict) and low.get("$PARAMETER") == "earliest_date"
                else f"below {low_value}"
            )
            checks.append(f"{col} < {_literal(bound, column.sql_type)}")
            reasons.append(f"when {checks[-1]} then {ty.quote(f'{col}: {words}')}")
        if high is not None:
            high_value = params.resolve(high)
            words = (
                "in the future"
                if isinstance(high, dict) and high.get("$PARAMETER") == "future_cutoff"
                else f"above {high_value}"
            )
            checks.append(f"{col} > {_literal(high_value, column.sql_type)}")
            reasons.append(f"when {checks[-1]} then {ty.quote(f'{col}: {words}')}")
        return f"{col} is not null and ({' or '.join(checks)})", f"case {' '.join(reasons)} end"
    raise ValueError(f"{entity.name}: expectation type {kind!r} is not supported by the SQL engine")


def typed_select(
    con: duckdb.DuckDBPyConnection, entity: Entity, src: SourceTable, params: CheckParams
) -> str:
    """A select of `src`'s rows with every cell cleaned (`<col>__raw`) and typed (`<col>`), and
    `_line`. Phones the SQL cannot decide are parsed by `phonenumbers` into `<src.table>_phones`,
    which the select joins (the caller drops it)."""
    t = src.table
    # Stage 1: clean every cell once (the typing expressions refer to the cleaned column).
    cleaned = ["s._line"]
    for column in entity.columns.values():
        cell = src.columns.get(column.name)
        raw = "cast(null as varchar)" if cell is None else ty.clean(f"s.{cell}", column)
        cleaned.append(f"{raw} as {column.name}__raw")
        if column.type == "phone":
            cleaned.append(f"{ty.phone_digits(raw)} as {column.name}__digits")
    # Unknown columns are kept as attributes; a merge patch onto {} drops the empty ones.
    extras = ", ".join(f"{ty.quote(h)}, s.{c}" for h, c in src.extras.items())
    cleaned.append(
        f"nullif(json_merge_patch('{{}}', json_object({extras})), '{{}}') as _extras"
        if extras
        else "cast(null as json) as _extras"
    )
    cleaned_sql = f"(select {', '.join(cleaned)} from {t} s)"

    # Stage 2: type.
    typed, joins = [], []
    for column in entity.columns.values():
        value = f"{column.name}__raw"
        python_phone = "null"
        if column.type == "phone":
            _python_phones(con, column.name, cleaned_sql, f"{t}_phones")
            alias = f"p_{column.name}"
            joins.append(f"left join {t}_phones {alias} on {alias}.raw = c.{column.name}__raw")
            value, python_phone = f"c.{column.name}__digits", f"{alias}.e164"
        expression = ty.parse(value, column, params.business_tz, python_phone)
        typed.append(f"cast({expression} as {column.sql_type}) as {column.name}")
    drop = [f"{c.name}__digits" for c in entity.columns.values() if c.type == "phone"]
    star = f"c.* exclude ({', '.join(drop)})" if drop else "c.*"
    return f"select {star}, {', '.join(typed)} from {cleaned_sql} c {' '.join(joins)}"


def check(
    con: duckdb.DuckDBPyConnection, entity: Entity, src: SourceTable, params: CheckParams
) -> CheckResult:
    """Create `<src.table>_checked`: typed columns, `<col>__raw` cleaned text, `_x<i>` flags."""
    t = src.table
    typed_sql = typed_select(con, entity, src, params)
    if entity.skip_without:  # rows with none of these filled are not the entity's rows
        filled = " or ".join(f"{c}__raw is not null" for c in entity.skip_without)
        typed_sql = f"select * from ({typed_sql}) where {filled}"

    extra_cols: list[str] = []
    fk_joins: list[str] = []
    # the derived columns, one layer each, in the order declared (flows/ingestion/derived.py)
    ctes, previous = [], "typed"
    for n, select in enumerate(derived.layers(entity, params.resolve)):
        ctes.append(f"derived{n} as not materialized ({select.replace('{prev}', previous)})")
        previous = f"derived{n}"
    flags, outcomes = [], []
    for e in entity.row_expectations:
        if e.type in UNIQUE:
            # Only the few duplicated values are joined back: cheaper than a window over all rows.
            cols = ", ".join(e.columns)
            not_null = " and ".join(f"{c} is not null" for c in e.columns)
            on = " and ".join(f"u{e.index}.{c} = t.{c}" for c in e.columns)
            fk_joins.append(
                f"left join (select {cols}, min(_line) as _first{e.index} from typed "
                f"where {not_null} group by all having count(*) > 1) u{e.index} on {on}"
            )
            extra_cols.append(f"_first{e.index}")
        value_set = e.kwargs.get("value_set")
        if e.type == "expect_column_values_to_be_in_set" and isinstance(
            params.resolve(value_set), str
        ):
            # `customers.customer_id` is a raw table; `main.message_ledger.message_id` names
            # its schema (feedback refers to the ledger)
            *schema, other, key = params.resolve(value_set).split(".")
            table = f"{schema[0] if schema else 'raw'}.{other}"
            fk_joins.append(
                f"left join (select distinct {key} as _fk{e.index} from {table}) fk{e.index} "
                f"on fk{e.index}._fk{e.index} = t.{e.column}"
            )
            extra_cols.append(f"_fk{e.index}")
        predicate, reason = _predicate(entity, e, params)
        flags.append(f"coalesce({predicate}, false) as _x{e.index}")
        outcomes.append(ExpectationOutcome(e, reason))
    # Codes and text are typed as they are cleaned: one copy of them is kept, not two.
    same = [c.name for c in entity.columns.values() if c.type in ("id", "text")]
    kept = f"* exclude ({', '.join(f'{n}__raw' for n in same)})" if same else "*"
    # One table is written: typing is inlined (`not materialized`), and the uniqueness joins
    # read only the key columns of it. At 20M rows each copy of the text costs seconds and spills.
    con.execute(
        f"""
        create or replace temp table {t}_checked as
        with typed as not materialized ({typed_sql}),
        {"".join(c + ", " for c in ctes)}prepared as (
            select t.*{"".join(", " + c for c in extra_cols)} from {previous} t
            {" ".join(fk_joins)}
        )
        select {kept}{"".join(", " + f for f in flags)} from prepared
        """
    )
    con.execute(f"drop table if exists {t}_phones")

    element_count = con.execute(f"select count(*) from {t}_checked").fetchone()[0]
    skipped = src.rows - element_count
    if outcomes:
        aggregates = []
        for o in outcomes:
            i, col = o.expectation.index, o.expectation.columns[0]
            aggregates.append(f"count_if(_x{i})")
            # Rows the check skips as missing: a type, format or not-null check reads the cell
            # (an unreadable cell is present, of the wrong type); the others read typed values.
            reads_cell = o.expectation.type in (
                "expect_column_values_to_not_be_null",
                "expect_column_values_to_be_of_type",
                "expect_column_values_to_match_regex",
            )
            cell = col if col in same or col in entity.derived else f"{col}__raw"
            aggregates.append(f"count_if({cell if reads_cell else col} is null)")
            aggregates.append(
                f"(list(coalesce(cast({cell} as varchar), cast({col} as varchar))) "
                f"filter (where _x{i}))[1:{PARTIAL_UNEXPECTED}]"
            )
        stats = con.execute(f"select {', '.join(aggregates)} from {t}_checked").fetchone()
        for n, o in enumerate(outcomes):
            o.unexpected_count, o.missing_count, partial = stats[3 * n : 3 * n + 3]
            o.partial_unexpected = partial or []
    return CheckResult(entity, src, f"{t}_checked", element_count, outcomes, params, skipped)
