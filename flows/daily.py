"""The `daily` flow: one daily cycle for a run date, the steps in order, each its own flow run.

It ingests, builds the models, plans the day's follow-ups into the ledger and dispatches them.
The steps' summaries are its own artifact too (`daily-summary`): the run page a person opens is
this one, not its subflows'.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from flows.artifacts import markdown_artifact
from flows.build import build_flow
from flows.build import summary_markdown as build_summary
from flows.building.runner import BuildReport
from flows.dispatch import dispatch_flow
from flows.dispatch import summary_markdown as dispatch_summary
from flows.dispatching.dispatch import DispatchReport
from flows.ingest import ingest_flow
from flows.ingest import summary_markdown as ingest_summary
from flows.ingestion.load import IngestReport
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.plan import plan_flow
from flows.plan import summary_markdown as plan_summary
from flows.planning.plan import PlanReport
from flows.rundate import Day, RunDate
from flows.settings import Settings


@dataclass
class DailyReport:
    as_of: dt.date
    ingest: IngestReport | None
    build: BuildReport
    plan: PlanReport
    dispatch: DispatchReport | None  # None in plan-only mode


@flow(name="daily", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def daily_flow(
    as_of: Day | None = None,
    source: Path | None = None,
    db: Path | None = None,
    sources_file: Path | None = None,
    full_refresh: bool = False,
    dry_run: bool = True,
    channels: Path | None = None,
    dispatch: bool = True,
) -> DailyReport:
    """Ingest and validate the sources (if any), build every model, plan the day's follow-ups
    and send them through the channels.

    Args:
        as_of: the run's day, YYYY-MM-DD (empty: today in the business time zone); the data is
            complete up to the end of the day before.
        source: the source folder to ingest first (empty: no ingest).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        sources_file: an HTTP API sources file (sources.yml) to fetch and ingest first.
        full_refresh: rebuild the incremental models from all history.
        dry_run: render and record the planned messages as `dry_run`; nothing is sent.
        channels: the channel settings file (empty: channels.yml, else the local outbox).
        dispatch: send the day's messages now (false: plan only, for the `dispatch` runs).
    """
    settings = Settings.from_env()
    as_of = RunDate.of(settings.business_tz, as_of).day  # each step gets this date
    db_path = Path(db) if db else settings.db_path
    ingested = None
    # the ingest holds the writer lock while it loads, not while an API source answers
    if source is not None or sources_file is not None:
        ingested = ingest_flow(source=source, db=db_path, as_of=as_of, sources_file=sources_file)
    # held from the build to the dispatch, so no other writer slips in between them (each step
    # takes it again, nested)
    with writer_lock(db_path, settings.db_lock_timeout):
        built = build_flow(as_of=as_of, db=db_path, full_refresh=full_refresh)
        planned = plan_flow(as_of=as_of, db=db_path, dry_run=dry_run)
        sent = (
            dispatch_flow(as_of=as_of, db=db_path, channels=channels, dry_run=dry_run)
            if dispatch
            else None
        )
    report = DailyReport(as_of=as_of, ingest=ingested, build=built, plan=planned, dispatch=sent)
    markdown_artifact(summary_markdown(report), key="daily-summary", description="the day's run")
    get_run_logger().info("%s", summary_line(report))
    return report


def summary_line(report: DailyReport) -> str:
    """The day in one line, for the top of the run's logs."""
    parts = []
    if report.ingest is not None:
        loaded = sum(load.rows_read for load in report.ingest.loads)
        rejected = sum(load.errors for load in report.ingest.loads)
        parts.append(f"ingested {loaded:,} rows ({rejected:,} quarantined)")
    built = ", ".join(f"{status} {n}" for status, n in sorted(report.build.counts.items()))
    parts.append(f"dbt {built}")
    parts.append(f"plan: {report.plan.balance()}")
    if report.dispatch is not None:
        parts.append(f"dispatch: {report.dispatch.handed_over:,} handed over")
    return (
        f"daily run for {report.as_of}: " + "; ".join(parts)
        + " (each step's summary: this run's artifact daily-summary)"
    )  # fmt: skip


def summary_markdown(report: DailyReport) -> str:
    """Each step's summary, under the day's title."""
    parts = [
        (ingest_summary, report.ingest),
        (build_summary, report.build),
        (plan_summary, report.plan),
        (dispatch_summary, report.dispatch),
    ]
    sections = [_one_level_down(summarise(step)) for summarise, step in parts if step is not None]
    steps = "" if report.dispatch else " (plan only: the `dispatch` runs send)"
    return f"# Daily run for {report.as_of}{steps}\n\n" + "\n\n".join(sections)


def _one_level_down(markdown: str) -> str:
    """A step's summary as a section: each heading one level deeper."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.split("\n"))
