"""The latest `followup backtest` as the report shows it: the summaries of the tables
flows/backtesting/results.py writes (volume, cap collisions, owner overload, and the baseline a
live playbook must beat), text masked."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from adapters.channels import mask


@dataclass(frozen=True)
class Backtest:
    """The latest backtest's summaries (flows/backtesting/results.py writes the tables)."""

    start: dt.date
    end: dt.date
    days: int
    playbooks: tuple[str, ...]
    focus: tuple[str, ...]
    volume: pd.DataFrame  # day, playbook, planned
    collisions: pd.DataFrame  # playbook, step, blocked_by, scope, collisions, days
    overload: pd.DataFrame  # owner_id, days_overloaded, most_tasks, capacity, pushed
    baseline: pd.DataFrame  # playbook, step, messages, ordered anyway (with its interval), ...


BACKTEST_TABLES = (
    "backtest_runs",
    "backtest_daily",
    "backtest_collisions",
    "backtest_owner_load",
    "backtest_outcomes",
)


def read_backtest(con: duckdb.DuckDBPyConnection, present: dict[str, set[str]]):
    if not set(BACKTEST_TABLES) <= present.get("main", set()):
        return None
    runs = con.execute(
        "select from_date, to_date, days, playbooks, focus from backtest_runs"
    ).fetchall()
    if not runs:
        return None
    start, end, days, playbooks, focus = runs[0]
    volume = con.execute(
        "select day, playbook, sum(planned)::bigint as planned from backtest_daily "
        "group by all order by day, playbook"
    ).df()
    collisions = con.execute(
        """
        select playbook, step, blocked_by, scope, sum(collisions)::bigint as collisions,
            count(distinct day) as days
        from backtest_collisions
        group by all
        order by collisions desc, playbook, step, blocked_by
        """
    ).df()
    overload = con.execute(
        """
        select owner_id, count(*) filter (where overloaded) as days_overloaded,
            max(tasks) as most_tasks, any_value(capacity) as capacity,
            sum(pushed_for_capacity)::bigint as pushed_for_capacity
        from backtest_owner_load
        group by owner_id
        having count(*) filter (where overloaded) > 0
        order by days_overloaded desc, pushed_for_capacity desc, owner_id
        """
    ).df()
    baseline = con.execute(
        """
        select playbook, step, count(*) as messages,
            count(*) filter (where ordered) as ordered_anyway,
            avg(ordered::int) as baseline_conversion_rate,
            avg(complained::int) as complaint_rate,
            avg(opted_out::int) as opt_out_rate,
            any_value(attribution_days) as attribution_days
        from backtest_outcomes
        where window_complete and would_send
        group by all
        order by playbook, step
        """
    ).df()
    if not baseline.empty:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(
            baseline["ordered_anyway"], baseline["messages"], alpha=0.05, method="wilson"
        )
        baseline.insert(5, "ci_low", low)
        baseline.insert(6, "ci_high", high)
    for frame in (collisions, overload, baseline):
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].map(lambda v: mask(v) if isinstance(v, str) else v)
    return Backtest(
        start=start,
        end=end,
        days=int(days),
        playbooks=tuple(playbooks),
        focus=tuple(focus),
        volume=volume,
        collisions=collisions,
        overload=overload,
        baseline=baseline,
    )
