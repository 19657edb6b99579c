"""The `daily` flow: one daily cycle for a run date, the steps in order, each its own flow run.

Today it ingests, builds the models and plans the day's follow-ups into the ledger; dispatch joins
it when it is built.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flows.build import BuildReport, build_flow
from flows.ingest import ingest_flow
from flows.ingestion.load import IngestReport
from flows.plan import plan_flow
from flows.planning.plan import PlanReport
from flows.settings import Settings


@dataclass
class DailyReport:
    as_of: dt.date
    ingest: IngestReport | None
    build: BuildReport
    plan: PlanReport


@flow(name="daily", log_prints=True)
def daily_flow(
    as_of: dt.date,
    source: Path | None = None,
    db: Path | None = None,
    sources_file: Path | None = None,
    full_refresh: bool = False,
    dry_run: bool = True,
) -> DailyReport:
    """Ingest and validate the sources (if any), build every model as of `as_of`, and plan the
    day's follow-ups (`dry_run`: planned messages are recorded as `dry_run`)."""
    db_path = Path(db) if db else Settings.from_env().db_path
    ingested = None
    if source is not None or sources_file is not None:
        ingested = ingest_flow(source=source, db=db_path, as_of=as_of, sources_file=sources_file)
    built = build_flow(as_of=as_of, db=db_path, full_refresh=full_refresh)
    planned = plan_flow(as_of=as_of, db=db_path, dry_run=dry_run)
    return DailyReport(as_of=as_of, ingest=ingested, build=built, plan=planned)
