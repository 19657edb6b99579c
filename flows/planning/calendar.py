"""Working days: China's public holidays and make-up working days (调休) from `chinese-calendar`,
a user-supplied table that overrides it, and Monday–Friday (with a warning) for years neither
knows.

The user table is a CSV with `date,is_workday[,name]` (dates as 2027-01-01, booleans as the
contract's forms): the settings' `calendar_file` (FOLLOWUP_CALENDAR), else playbooks/calendar.csv
when it exists. `Calendar.load` reads it once; a plan and the models' calendar use the same.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Calendar:
    """Working days: the user's table (`path`, read into `overrides`) over chinese-calendar."""

    path: Path | None = None
    overrides: dict[dt.date, bool] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Calendar:
        """The table at `path`, else playbooks/calendar.csv when it exists, else none."""
        if path is None and not DEFAULT_TABLE.exists():
            return cls()
        path = path or DEFAULT_TABLE
        return cls(path, user_table(path))

    def days(self, start: dt.date, end: dt.date) -> Iterator[Day]:
        return days(start, end, self.overrides, self.path)

    def next_workday(self, day: dt.date) -> dt.date:
        return next_workday(day, self.overrides, self.path)


def user_table(path: Path) -> dict[dt.date, bool]:
    """The user's overrides in the table at `path`, {date: is_workday}."""
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
    start: dt.date,
    end: dt.date,
    overrides: dict[dt.date, bool] | None = None,
    table: Path | None = None,
) -> Iterator[Day]:
    """Every day from start to end inclusive, with whether people work on it (`overrides`: the
    user's table, default: playbooks/calendar.csv's; `table`: its name, for the warning)."""
    import chinese_calendar

    if overrides is None:
        calendar = Calendar.load()
        overrides, table = calendar.overrides, calendar.path
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
                        table or DEFAULT_TABLE,
                    )
                yield Day(day, day.weekday() < 5, "weekday_fallback")
        day += dt.timedelta(days=1)


def next_workday(
    day: dt.date, overrides: dict[dt.date, bool] | None = None, table: Path | None = None
) -> dt.date:
    """The first working day on or after `day`."""
    for candidate in days(day, day + dt.timedelta(days=60), overrides, table):
        if candidate.is_workday:
            return candidate.day
    raise CalendarError(f"no working day in the 60 days from {day}")
