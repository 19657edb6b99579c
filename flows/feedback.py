"""The `feedback` flow: replies, clicks, survey answers, call outcomes and delivery receipts back
into `raw.feedback`, linked to the ledger's messages, then the analysis models rebuilt (campaign
performance, satisfaction, `ab_results`).

A row names its message by the ledger's `message_id` or by the survey link that carries it
(`?m=<message_id>`); a row for a message the ledger does not know goes to `quarantine`. Rows are
keyed on their content, so a late, duplicated or re-sent file changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.analysis.publish import AnalysisSummary, publish_analysis, read_summary
from flows.building.runner import NodeResult, build_args, run_build
from flows.ingestion.load import IngestError, IngestReport, connect, ingest
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.rundate import RunDate
from flows.settings import Settings


@dataclass
class FeedbackReport:
    as_of: dt.date
    ingest: IngestReport
    nodes: list[NodeResult] = field(default_factory=list)
    summary: AnalysisSummary | None = None


def load_feedback(source: Path, db_path: Path, run: RunDate, settings: Settings) -> IngestReport:
    """`source` is a feedback file (CSV, XLSX, Parquet) or a folder holding `feedback.*`."""
    from flows.ledger import ensure_tables

    if not source.exists():
        raise IngestError(f"{source}: no such file or folder")
    con = connect(db_path, settings)
    try:
        ensure_tables(con)  # feedback is checked against the ledger, which may not exist yet
    finally:
        con.close()
    folder, files = (None, {"feedback": source}) if source.is_file() else (source, {})
    report = ingest(
        db_path, folder, settings=settings, run=run, files=files, entities=("feedback",)
    )
    if not report.loads:
        raise IngestError(f"{source}: no feedback file (feedback.csv, .xlsx or .parquet)")
    return report


@task(name="load-feedback", cache_policy=NO_CACHE)
def load_feedback_task(
    source: Path, db_path: Path, run: RunDate, settings: Settings
) -> IngestReport:
    """Read, type and validate the feedback, and upsert it in one transaction."""
    return load_feedback(source, db_path, run, settings)


@flow(name="feedback", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def feedback_flow(
    source: Path, db: Path | None = None, as_of: dt.date | None = None, refresh_models: bool = True
) -> FeedbackReport:
    """Load a feedback file and refresh the analysis models (dbt tag `analysis`) as of `as_of`
    (default: today in the business timezone). Without `refresh_models` the feedback waits for
    the next build (the daily run builds every model)."""
    settings = Settings.from_env()
    db_path = Path(db) if db else settings.db_path
    run = RunDate.of(settings.business_tz, as_of)
    as_of = run.day
    with writer_lock(db_path, settings.db_lock_timeout):
        loaded = load_feedback_task(Path(source), db_path, run, settings)
        load = loaded.loads[0]
        get_run_logger().info(
            "feedback: %d read, %d new, %d changed, %d same, %d quarantined",
            load.rows_read,
            load.inserted,
            load.updated,
            load.unchanged,
            load.errors,
        )
        if not refresh_models:
            return FeedbackReport(as_of=as_of, ingest=loaded)
        nodes = run_build(build_args(select="tag:analysis"), db_path, run, settings)
        summary = read_summary(db_path)
        publish_analysis(summary, as_of)
        return FeedbackReport(as_of=as_of, ingest=loaded, nodes=nodes, summary=summary)
