"""The `daily` flow: one daily cycle for a run date, the steps in order, each its own flow run.

It ingests, builds the models, plans the day's follow-ups into the ledger and dispatches them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.build import build_flow
from flows.building.runner import BuildReport
from flows.dispatch import dispatch_flow
from flows.dispatching.dispatch import DispatchReport
from flows.ingest import ingest_flow
from flows.ingestion.load import IngestReport
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.plan import plan_flow
from flows.planning.plan import PlanReport
from flows.rundate import RunDate
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
    as_of: dt.date | None = None,
    source: Path | None = None,
    db: Path | None = None,
    sources_file: Path | None = None,
    full_refresh: bool = False,
    dry_run: bool = True,
    channels: Path | None = None,
    dispatch: bool = True,
) -> DailyReport:
    """Ingest and validate the sources (if any), build every model as of `as_of` (default:
    today), plan the day's follow-ups and send them through the channels (`dry_run`: planned
    messages are recorded as `dry_run` and rendered, and nothing is sent; `dispatch` false: plan
    only, for a `dispatch` run later in the day)."""
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
        return DailyReport(as_of=as_of, ingest=ingested, build=built, plan=planned, dispatch=sent)
