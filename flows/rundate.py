"""The run's date: one value, built once where a command or a flow starts, that every step of the
run reads its moments from. Nothing else in the pipeline reads the clock to learn what day it is.

A run is for a date in the business time zone: `--as-of D` means the morning of D, so the facts
before D's midnight count (`start`). An intraday run also has its moment of the day (`at`): the
facts before it count (`cutoff`). The dbt models get the same value as vars (`dbt_vars`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import WithJsonSchema

# A day and a moment as flow parameters. The Prefect server checks a new run's parameters
# against the flow's schema by type and pattern but not by `format`, so `as_of=not-a-date` was
# accepted and failed on the worker; with the pattern it is refused when the run is created.
Day = Annotated[
    dt.date,
    WithJsonSchema({"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}),
]
Moment = Annotated[
    dt.datetime,
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$",
        }
    ),
]


@dataclass(frozen=True)
class RunDate:
    day: dt.date
    business_tz: str
    at: dt.datetime | None = None  # an intraday run's moment on `day`, in the business zone

    @classmethod
    def of(cls, business_tz: str, day: dt.date | str | None = None) -> RunDate:
        """The morning run of `day` (a date or YYYY-MM-DD; default: today in the business zone)."""
        if isinstance(day, str):
            try:
                day = dt.date.fromisoformat(day)
            except ValueError:
                raise ValueError(f"{day!r} is not a date (YYYY-MM-DD)") from None
        if day is None:
            day = dt.datetime.now(ZoneInfo(business_tz)).date()
        return cls(day, business_tz)

    @classmethod
    def moment(cls, business_tz: str, at: dt.datetime | None = None) -> RunDate:
        """A run at a moment of its day, to the minute (default: now; a naive time is in the
        business zone)."""
        zone = ZoneInfo(business_tz)
        at = dt.datetime.now(zone) if at is None else at
        at = at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)
        at = at.replace(second=0, microsecond=0)
        return cls(at.date(), business_tz, at)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.business_tz)

    @property
    def start(self) -> dt.datetime:
        """Midnight starting the run's day in the business zone."""
        return dt.datetime.combine(self.day, dt.time(), tzinfo=self.zone)

    @property
    def end(self) -> dt.datetime:
        """Midnight ending the run's day."""
        return dt.datetime.combine(self.day + dt.timedelta(days=1), dt.time(), tzinfo=self.zone)

    @property
    def cutoff(self) -> dt.datetime:
        """What happened before this counts: the run's moment, or its day's start."""
        return self.at or self.start

    def now(self) -> dt.datetime:
        """The moment a live step acts at: the run's moment, else the clock (a send's time)."""
        return self.at or dt.datetime.now(self.zone)

    def dbt_vars(self) -> dict[str, str]:
        """The run date as the dbt project reads it (macros/as_of.sql)."""
        variables = {"as_of": self.day.isoformat(), "business_tz": self.business_tz}
        if self.at is not None:
            variables["as_of_time"] = self.at.strftime("%H:%M")
        return variables
