"""Reading the database for the report and the notebooks, read only: a table by name and its
columns by name (a table not built yet is an empty frame with the columns it would have; a column
missing from an older table is an empty column), every text masked (`mask()`), and timestamps in
the business time zone without the zone (Excel has none)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pandas as pd

from adapters.channels import mask


@contextlib.contextmanager
def open_readonly(db_path: Path | str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to an existing database; a missing file is a one-line error."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such database (run `followup demo` or `followup run`)")
    con = duckdb.connect(str(path), read_only=True)
    try:
        yield con
    finally:
        con.close()


def existing_tables(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """schema -> its tables and views."""
    tables: dict[str, set[str]] = {}
    for schema, name in con.execute(
        "select table_schema, table_name from information_schema.tables"
    ).fetchall():
        tables.setdefault(schema, set()).add(name)
    return tables


def table_columns(
    con: duckdb.DuckDBPyConnection, table: str, schema: str = "main"
) -> dict[str, str]:
    """column -> its type, in the table's order."""
    return dict(
        con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, table],
        ).fetchall()
    )


def read_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    columns: Sequence[str] = (),
    *,
    schema: str = "main",
    tables: dict[str, set[str]] | None = None,
    business_tz: str = "Asia/Shanghai",
) -> pd.DataFrame:
    """Table `schema.name`, `columns` first (empty where the table lacks one), then the rest; an
    empty frame with `columns` when the table does not exist. Text masked."""
    tables = existing_tables(con) if tables is None else tables
    if name not in tables.get(schema, set()):
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in columns})
    available = table_columns(con, name, schema)
    select = select_columns(available, list(available), "t", business_tz)
    frame = con.execute(f'select {select} from "{schema}"."{name}" t').df()
    for column in columns:
        if column not in frame.columns:
            frame[column] = None
    ordered = [*columns, *(c for c in frame.columns if c not in columns)]
    return clean(frame[ordered], business_tz)


def clean(frame: pd.DataFrame, business_tz: str) -> pd.DataFrame:
    """Every text masked; timestamps in the business time zone, without the zone."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            frame[column] = values.dt.tz_convert(business_tz).dt.tz_localize(None)
        elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
            frame[column] = values.map(
                lambda v: mask(v) if isinstance(v, str) else v, na_action="ignore"
            ).astype("object")
    return frame


def select_columns(
    available: dict[str, str], wanted: Sequence[str], alias: str, business_tz: str
) -> str:
    """The wanted columns, null where the table lacks one; a timestamp with a zone becomes the
    business time zone's wall-clock time (which is also all Excel can hold)."""
    zone = business_tz.replace("'", "''")
    columns = []
    for c in wanted:
        if c not in available:
            columns.append(f'null as "{c}"')
        elif available[c].upper().startswith("TIMESTAMP WITH TIME ZONE"):
            columns.append(f'timezone(\'{zone}\', {alias}."{c}") as "{c}"')
        else:
            columns.append(f'{alias}."{c}"')
    return ", ".join(columns)
