"""The run's date (flows/rundate.py): a day in the business time zone, and for an intraday run its
moment; the instants every step reads from it, across a change of summer time too."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from flows.rundate import RunDate

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
DAY = dt.date(2026, 11, 23)
DST_ENDS = dt.date(2026, 11, 1)  # New York: 02:00 EDT becomes 01:00 EST


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def test_a_day_in_shanghai_runs_from_its_midnight_to_the_next() -> None:
    run = RunDate(DAY, "Asia/Shanghai")
    assert run.zone == SH
    assert run.start == dt.datetime(2026, 11, 23, tzinfo=SH)
    assert run.start == _utc(2026, 11, 22, 16)  # 8 hours ahead of UTC
    assert run.end == _utc(2026, 11, 23, 16)
    assert run.cutoff == run.start  # the morning run: what happened before the day counts
    assert run.at is None


def test_a_day_in_new_york_across_the_end_of_summer_time() -> None:
    run = RunDate(DST_ENDS, "America/New_York")
    assert run.start == _utc(2026, 11, 1, 4)  # midnight EDT
    assert run.end == _utc(2026, 11, 2, 5)  # midnight EST
    assert run.end.astimezone(dt.UTC) - run.start.astimezone(dt.UTC) == dt.timedelta(hours=25)
    assert run.cutoff == run.start
    # one day ends where the next starts, each on its own side of the change
    before = RunDate(DST_ENDS - dt.timedelta(days=1), "America/New_York")
    assert before.end == run.start
    assert before.end.utcoffset() == dt.timedelta(hours=-4)
    assert run.end.utcoffset() == dt.timedelta(hours=-5)


def test_a_day_in_new_york_when_summer_time_starts_is_23_hours() -> None:
    run = RunDate(dt.date(2026, 3, 8), "America/New_York")
    assert (run.start, run.end) == (_utc(2026, 3, 8, 5), _utc(2026, 3, 9, 4))


def test_an_intraday_runs_cutoff_is_its_moment() -> None:
    at = dt.datetime(2026, 11, 23, 14, 30, tzinfo=SH)
    run = RunDate(DAY, "Asia/Shanghai", at)
    assert run.cutoff == at and run.now() == at
    assert (run.start, run.end) == (RunDate(DAY, "Asia/Shanghai").start, _utc(2026, 11, 23, 16))


def test_moment_keeps_the_minute() -> None:
    run = RunDate.moment("Asia/Shanghai", dt.datetime(2026, 11, 23, 14, 30, 59, 999_999))
    assert run.at == dt.datetime(2026, 11, 23, 14, 30, tzinfo=SH)  # naive: the business zone
    assert run.at.tzinfo == SH
    assert run.day == DAY and run.cutoff == run.at


def test_moment_takes_an_aware_time_into_the_business_zone() -> None:
    # 18:05 UTC on the 22nd is 02:05 on the 23rd in Shanghai: the run of the 23rd
    run = RunDate.moment("Asia/Shanghai", _utc(2026, 11, 22, 18, 5, 42))
    assert run.day == DAY
    assert run.at == dt.datetime(2026, 11, 23, 2, 5, tzinfo=SH)
    assert run.at.tzinfo == SH and run.at.utcoffset() == dt.timedelta(hours=8)
    # New York's 01:00-02:00 happens twice the night summer time ends: each is its own instant
    first = RunDate.moment("America/New_York", _utc(2026, 11, 1, 5, 30, 10))
    second = RunDate.moment("America/New_York", _utc(2026, 11, 1, 6, 30, 10))
    assert first.day == second.day == DST_ENDS
    assert first.at.astimezone(dt.UTC) == _utc(2026, 11, 1, 5, 30)
    assert second.at.astimezone(dt.UTC) == _utc(2026, 11, 1, 6, 30)
    assert (first.at.utcoffset(), second.at.utcoffset()) == (
        dt.timedelta(hours=-4),
        dt.timedelta(hours=-5),
    )


def test_moment_and_of_default_to_now_in_the_business_zone() -> None:
    before = dt.datetime.now(NY).replace(second=0, microsecond=0)
    run = RunDate.moment("America/New_York")
    after = dt.datetime.now(NY)
    assert before <= run.at <= after and run.at.second == run.at.microsecond == 0
    assert run.day == run.at.date()
    assert RunDate.of("America/New_York").day in (before.date(), after.date())
    assert RunDate.of("America/New_York").at is None
    morning = RunDate.of("America/New_York", DAY)
    assert before <= morning.now() <= dt.datetime.now(NY)  # no moment: the clock


def test_of_takes_a_date_or_its_iso_text() -> None:
    assert RunDate.of("Asia/Shanghai", DAY) == RunDate(DAY, "Asia/Shanghai")
    assert RunDate.of("Asia/Shanghai", "2026-11-23") == RunDate(DAY, "Asia/Shanghai")


@pytest.mark.parametrize("text", ["2026-13-01", "23/11/2026", "tomorrow", ""])
def test_of_a_bad_date_is_one_line(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        RunDate.of("Asia/Shanghai", text)
    message = str(caught.value)
    assert message == f"{text!r} is not a date (YYYY-MM-DD)"
    assert "\n" not in message


def test_a_run_date_is_a_value() -> None:
    run = RunDate(DAY, "Asia/Shanghai")
    assert run == RunDate.of("Asia/Shanghai", DAY) and hash(run) == hash(
        RunDate(DAY, "Asia/Shanghai")
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.day = DST_ENDS  # type: ignore[misc]


def test_dbt_vars_have_the_time_only_for_a_moment(tmp_path: Path) -> None:
    from flows.building.runner import dbt_vars
    from flows.settings import Settings

    morning = RunDate(DAY, "Asia/Shanghai")
    assert morning.dbt_vars() == {"as_of": "2026-11-23", "business_tz": "Asia/Shanghai"}
    moment = RunDate.moment("Asia/Shanghai", dt.datetime(2026, 11, 23, 9, 5, 30))
    assert moment.dbt_vars() == {
        "as_of": "2026-11-23",
        "business_tz": "Asia/Shanghai",
        "as_of_time": "09:05",
    }
    # what dbt gets: the run date, and the database and engine its profile reads
    settings = Settings.from_env().replace(duckdb_threads=3, duckdb_memory_limit="2GB")
    db = tmp_path / "f.duckdb"
    variables = dbt_vars(morning, db, settings)
    assert "as_of_time" not in variables
    assert variables == {
        **morning.dbt_vars(),
        "db_path": str(db.resolve()),
        "duckdb_memory": "2GB",
        "duckdb_threads": 3,
        "spark_dir": str(settings.spark_dir.resolve()),
    }
    assert dbt_vars(moment, db, settings)["as_of_time"] == "09:05"
