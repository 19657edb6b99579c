"""The `build` flow: the dbt project for one run date, one Prefect task per dbt node
(flows/building/runner.py), then the analysis marts published as artifacts."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.analysis.publish import publish_analysis, read_summary
from flows.artifacts import markdown_artifact
from flows.building.runner import (
    BuildReport,
    build_args,
    catch_up_vars,
    declare_playbooks,
    run_build,
)
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.planning.calendar import Calendar
from flows.rundate import Day, RunDate
from flows.settings import Settings


def summary_markdown(report: BuildReport) -> str:
    counts = ", ".join(f"{status} {n}" for status, n in sorted(report.counts.items()))
    lines = [
        f"# dbt build as of {report.as_of}{' (full refresh)' if report.full_refresh else ''}",
        "",
        f"{len(report.nodes)} nodes in {report.seconds:.1f} s: {counts}",
        "",
        "| node | type | status | seconds |",
        "|---|---|---|---:|",
    ]
    slowest = sorted(report.nodes, key=lambda n: n.seconds, reverse=True)
    lines += [f"| {n.name} | {n.resource_type} | {n.status} | {n.seconds:.2f} |" for n in slowest]
    return "\n".join(lines)


@task(name="declare-playbooks", cache_policy=NO_CACHE)
def declare_playbooks_task(db_path: Path, run: RunDate, calendar: Calendar) -> int:
    """Validate the playbooks and write them, with the calendar, for the models."""
    return declare_playbooks(db_path, run.day, calendar)


@flow(name="build", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def build_flow(
    as_of: Day | None = None, db: Path | None = None, full_refresh: bool = False
) -> BuildReport:
    """Build every dbt model and seed as of `as_of`, each followed by its data tests.

    Order and event facts are incremental on their keys; `full_refresh` rebuilds them (the tier
    history is never wiped).

    Args:
        as_of: the models' day, YYYY-MM-DD (empty: today in the business time zone).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        full_refresh: rebuild the incremental models from all history.
    """
    settings = Settings.from_env()
    run = RunDate.of(settings.business_tz, as_of)
    db_path = Path(db) if db else settings.db_path
    with writer_lock(db_path, settings.db_lock_timeout):
        started = time.perf_counter()
        calendar = Calendar.load(settings.calendar_file)
        playbooks = declare_playbooks_task(db_path, run, calendar)
        get_run_logger().info("%d playbooks declared", playbooks)
        catch_up = catch_up_vars(db_path, run.day)
        get_run_logger().info("follow-ups due from %s", catch_up["catch_up_from"])
        nodes = run_build(build_args(full_refresh), db_path, run, settings, catch_up)
        report = BuildReport(
            as_of=run.day,
            full_refresh=full_refresh,
            seconds=time.perf_counter() - started,
            nodes=nodes,
        )
        get_run_logger().info("dbt build: %d nodes in %.1f s", len(nodes), report.seconds)
        markdown_artifact(summary_markdown(report), key="dbt-build", description="dbt nodes")
        if settings.dbt_target == "duckdb":  # the analysis marts are in the DuckDB file
            publish_analysis(read_summary(db_path), run.day)
        return report
