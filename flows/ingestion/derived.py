"""Derived columns: values a suite's checks read that the file does not hold, computed in SQL.

A derived column (`meta.followup.derived` of a suite) is one of:

- a lookup in another table (`lookup` "schema.table.column") where the table's `on` columns
  (default: named as `by`) equal the row's `by` columns (file columns, or derived columns declared
  before it; `by_default` gives a value for an empty one). Of the rows found it takes any value
  (`aggregate: any`, the default), the value when exactly one is found (`single`: several are
  never guessed between), or how many distinct values there are (`count`, 0 when none);
- the same lookup as an ASOF join (`latest: {by, on}`): the table row with the greatest `on`
  at or before the row's `by` (a customer's latest message before a reply), kept only when the
  row's `by` is within `within_hours` of it (a number, or hours per value of the table's
  `hours_per` column with a `default`, e.g. the channels' response windows);
- the host of a link in another column (`host_of`).

They are computed in the order declared, one layer each, so a lookup may use an earlier one. A
file column may take its empty values from derived columns (`fill_from`, the first non-empty
one); with `fill_before_checks` that happens as soon as they are computed, so the checks and the
later lookups read the filled value while the row's key keeps the file's (`<column>__given`).
"""

from __future__ import annotations

from flows.ingestion import typing as ty
from flows.ingestion.entities import Column, Entity

# The host of a link (`https://host/path?m=…`, `//host/…`, `host/path?m=…`); a bare token has none.
_HOST = r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?(?:[^/?#@\s]*@)?([^/?#:\s]*)"


def given(name: str) -> str:
    """The column keeping a filled-before-checks column's value as the file gave it."""
    return f"{name}__given"


def early_fills(entity: Entity) -> dict[str, tuple[str, ...]]:
    """Columns filled before the checks -> the derived columns they take their value from."""
    return {c.name: c.fill_from for c in entity.columns.values() if c.fill_before_checks}


def layers(entity: Entity, resolve) -> list[str]:
    """SQL selects computing `entity`'s derived columns, each reading the one
    before (`{prev}` stands for it); `resolve` reads a `$PARAMETER` (`CheckParams.resolve`)."""
    selects: list[str] = []
    pending = early_fills(entity)
    done: set[str] = set()
    for d in entity.derived.values():
        selects.append(_lookup(d, resolve) if d.lookup is not None else _host(entity, d))
        done.add(d.name)
        for name, sources in list(pending.items()):
            if set(sources) <= done:
                filled = ", ".join((name, *sources))
                selects.append(
                    f"select * replace (coalesce({filled}) as {name}), "
                    f"{name} as {given(name)} from {{prev}}"
                )
                del pending[name]
    return selects


def _row_value(d: Column, name: str) -> str:
    """The row's `by` column `name`, or its `by_default` when empty."""
    default = d.by_default.get(name)
    return f"coalesce(t.{name}, {ty.quote(default)})" if default is not None else f"t.{name}"


def _hours(d: Column, resolve) -> str:
    """SQL of the hours of `within_hours` for a row of the looked-up table."""
    hours = resolve(d.within_hours)
    if not isinstance(hours, dict):
        return str(int(hours))
    whens = " ".join(
        f"when {ty.quote(str(k))} then {int(v)}" for k, v in hours.items() if k != "default"
    )
    return f"case {d.hours_per} {whens} else {int(hours.get('default', 0))} end"


def _lookup(d: Column, resolve) -> str:
    *schema, table, column = d.lookup.split(".")
    table = f"{schema[0] if schema else 'raw'}.{table}"
    keys = [f"{o} as _k{i}" for i, o in enumerate(d.on)]
    present = " and ".join(f"{o} is not null" for o in d.on)
    row = [_row_value(d, b) for b in d.by]
    on = " and ".join(f"l._k{i} = {r}" for i, r in enumerate(row))
    cast = f"as {d.sql_type}"
    if d.latest is not None:
        at_row, at_table = d.latest["by"], d.latest["on"]
        window = ""
        if d.within_hours is not None:  # after the latest row, within its hours
            keys.append(f"{_hours(d, resolve)} as _hours")
            window = f" and t.{at_row} < l._at + to_hours(cast(l._hours as bigint))"
        return (
            f"select t.*, cast(case when l._at is not null{window} then l._v end {cast}) "
            f"as {d.name} from {{prev}} t asof left join ("
            f"select {', '.join(keys)}, {at_table} as _at, {column} as _v from {table} "
            f"where {present} and {at_table} is not null and {column} is not null) l "
            f"on {on} and t.{at_row} >= l._at"
        )
    aggregate = {
        "any": f"any_value({column})",
        "single": f"case when count(distinct {column}) = 1 then any_value({column}) end",
        "count": f"count(distinct {column})",
    }[d.aggregate]
    value = "l._v"
    if d.aggregate == "count":  # none found is 0, for a row that has what is looked up by
        known = " and ".join(f"{r} is not null" for r in row)
        value = f"case when {known} then coalesce(l._v, 0) end"
    return (
        f"select t.*, cast({value} {cast}) as {d.name} from {{prev}} t left join ("
        f"select {', '.join(keys)}, {aggregate} as _v from {table} where {present} group by all"
        f") l on {on}"
    )


def _host(entity: Entity, d: Column) -> str:
    source = entity.columns[d.host_of]
    cell = f"t.{source.name}" if source.type in ("id", "text") else f"t.{source.name}__raw"
    host = f"nullif(lower(regexp_extract({cell}, {ty.quote(_HOST)}, 1)), '')"
    return (
        f"select t.*, case when regexp_matches({cell}, '[/?]') then {host} end as {d.name} "
        "from {prev} t"
    )
