"""Working days: China's public holidays and make-up working days (调休) from `chinese-calendar`,
a user-supplied table that overrides it, and Monday–Friday (with a warning) for years neither
knows.

The user table is a CSV with `date,is_workday[,name]` (dates as 2027-01-01, booleans as the
contract's forms), named by FOLLOWUP_CALENDAR (default: playbooks/calendar.csv when it exists).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flows.settings import PROJECT_ROOT

log = logging.getLogger(__name__)
DEFAULT_TABLE = PROJECT_ROOT / "playbooks" / "calendar.csv"
_TRUE = {"true", "1", "yes", "y", "是"}
_FALSE = {"false", "0", "no", "n", "否"}


class CalendarError(ValueError):
    """The user's calendar table is unreadable; the message names the file and line."""


@dataclass(frozen=True)
class Day:
    day: dt.date
    is_workday: bool
    source: str  # user, chinese_calendar, weekday_fallback


def user_table(path: Path | None = None) -> dict[dt.date, bool]:
    """The user's overrides, {date: is_workday}; empty when there is no table."""
    if path is None:
        named = os.environ.get("FOLLOWUP_CALENDAR")
        path = Path(named) if named else DEFAULT_TABLE
        if not named and not path.exists():
            return {}
    table: dict[dt.date, bool] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    day = dt.date.fromisoformat(row["date"].strip())
                    flag = row["is_workday"].strip().lower()
                except (KeyError, AttributeError, ValueError):
                    raise CalendarError(
                        f"{path}:{line}: need date (YYYY-MM-DD) and is_workday columns"
                    ) from None
                if flag not in _TRUE | _FALSE:
                    raise CalendarError(f"{path}:{line}: is_workday {flag!r} is not a boolean")
                table[day] = flag in _TRUE
    except OSError as exc:
        raise CalendarError(f"{path}: {exc.strerror}") from None
    return table


def days(
    start: dt.date, end: dt.date, overrides: dict[dt.date, bool] | None = None
) -> Iterator[Day]:
    """Every day from start to end inclusive, with whether people work on it."""
    import chinese_calendar

    overrides = user_table() if overrides is None else overrides
    warned: set[int] = set()
    day = start
    while day <= end:
        if day in overrides:
            yield Day(day, overrides[day], "user")
        else:
            try:
                yield Day(day, chinese_calendar.is_workday(day), "chinese_calendar")
            except NotImplementedError:
                if day.year not in warned:
                    warned.add(day.year)
                    log.warning(
                        "chinese-calendar has no holidays for %d: Monday to Friday are taken as "
                        "working days; supply the year's holidays and make-up days in %s",
                        day.year,
                        os.environ.get("FOLLOWUP_CALENDAR", DEFAULT_TABLE),
                    )
                yield Day(day, day.weekday() < 5, "weekday_fallback")
        day += dt.timedelta(days=1)


def next_workday(day: dt.date, overrides: dict[dt.date, bool] | None = None) -> dt.date:
    """The first working day on or after `day`."""
    for candidate in days(day, day + dt.timedelta(days=60), overrides):
        if candidate.is_workday:
            return candidate.day
    raise CalendarError(f"no working day in the 60 days from {day}")
