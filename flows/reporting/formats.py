"""How a report shows a value, decided by its column's name and type, the same way in the
workbook and on the page: rates as percentages, p-values to four places, counts with thousands
separators."""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from typing import Literal

import pandas as pd

Kind = Literal["rate", "p", "points", "amount", "count", "decimal", "date", "datetime", "text"]

EXCEL_FORMATS: dict[Kind, str] = {
    "rate": "0.0%",
    "p": "0.0000",
    "points": "0.0",
    "amount": "#,##0.00",
    "count": "#,##0",
    "decimal": "#,##0.0",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
    "text": "@",
}

_RATE_NAMES = {"rate", "csat", "share", "chance_to_beat_control", "value_rate", "change"}


def column_kind(name: str, values: pd.Series) -> Kind:
    """The kind of a column: its name first (a rate stays a rate whatever its type), then its
    type."""
    lowered = name.lower()
    if lowered == "p_value" or lowered.endswith("_p_value"):
        return "p"
    if (
        lowered in _RATE_NAMES
        or lowered.endswith("_rate")
        or lowered.endswith("_lift")
        or lowered.endswith("ci_low")
        or lowered.endswith("ci_high")
        or lowered.startswith("ci_")
    ):
        return "rate"
    if lowered == "nps":
        return "points"
    if pd.api.types.is_bool_dtype(values):
        return "text"
    if pd.api.types.is_datetime64_any_dtype(values):
        present = values.dropna()
        midnight = present.empty or bool((present == present.dt.normalize()).all())
        return "date" if midnight else "datetime"
    if pd.api.types.is_integer_dtype(values):
        return "count"
    if pd.api.types.is_float_dtype(values):
        if "amount" in lowered:
            return "amount"
        present = values.dropna()
        # DuckDB hands sums over (hugeint) as floats: whole numbers are counts
        if not present.empty and bool((present == present.round()).all()):
            return "count"
        return "decimal"
    if len(values) and values.map(lambda v: isinstance(v, dt.date)).all():
        return "date"
    return "text"


def metric_kind(metric: str) -> Kind:
    """The kind of a headline figure, by its name (followup_kpis mixes rates, days and
    points)."""
    if metric == "nps":
        return "points"
    if metric.endswith("_days"):
        return "decimal"
    if metric.endswith("amount"):
        return "amount"
    if column_kind(metric, pd.Series([], dtype="float64")) == "rate":
        return "rate"
    return "count"


def is_missing(value: object) -> bool:
    if value is None or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or an array is not missing
        return False


def is_truthy(value: object) -> bool:
    """A boolean as DuckDB, a CSV or a person may write it (`is_control`)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "t")
    return not is_missing(value) and bool(value)


def display(value: object, kind: Kind) -> str:
    """The value as a reader sees it (blank when missing)."""
    if is_missing(value):
        return ""
    if kind in ("rate", "p", "points", "amount", "count", "decimal"):
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return str(value)
        return {
            "rate": f"{number:.1%}",
            "p": f"{number:.4f}",
            "points": f"{number:.1f}",
            "amount": f"{number:,.2f}",
            "count": f"{number:,.0f}",
            "decimal": f"{number:,.1f}",
        }[kind]
    if kind == "date" and isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d")
    if kind == "datetime" and isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


def text_width(text: str) -> int:
    """Display width: a Chinese character takes two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
