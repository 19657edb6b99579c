"""The `ingest` flow: a source folder (and any HTTP API sources) into DuckDB's raw tables.

Thin on purpose: the work lives in `flows.ingestion`; this module wires it into Prefect tasks,
publishes the load summary as an artifact and keeps the Data Docs for the data engineer.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_artifact
from flows.ingestion.entities import LOAD_ORDER
from flows.ingestion.load import IngestError, IngestReport, connect, ingest
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.rundate import Day, RunDate
from flows.settings import Settings


@task(name="fetch-api-sources", cache_policy=NO_CACHE)
def fetch_api_sources(sources_file: Path, db_path: Path, staging: Path, settings: Settings) -> dict:
    """Fetch every API source changed since its saved cursor; returns {entity: FetchResult}."""
    from adapters.sources.http_api import fetch, load_http_sources, read_cursor

    configs = load_http_sources(sources_file)
    for config in configs:
        if config.entity not in LOAD_ORDER:
            raise ValueError(
                f"{sources_file}: {config.entity}: not an entity ({', '.join(LOAD_ORDER)})"
            )
    cursors = {}
    if db_path.exists():
        with writer_lock(db_path, settings.db_lock_timeout):  # the cursors only, not the fetch
            con = connect(db_path, settings)
            try:
                cursors = {c.entity: read_cursor(con, c.entity) for c in configs}
            finally:
                con.close()
    results = {}
    for config in configs:
        results[config.entity] = fetch(config, staging, updated_since=cursors.get(config.entity))
        get_run_logger().info(
            "%s: %d records in %d pages since %s",
            config.entity,
            results[config.entity].records,
            results[config.entity].pages,
            cursors.get(config.entity) or "the beginning",
        )
    return results


@task(name="load-sources", cache_policy=NO_CACHE)
def load_sources(
    source: Path | None, db_path: Path, run: RunDate, fetched: dict, settings: Settings
) -> IngestReport:
    """Read, type, validate and upsert every entity in one transaction."""
    from adapters.sources.http_api import read_cursor, save_cursor

    files = {entity: r.path for entity, r in fetched.items() if r.path is not None}

    def save_cursors(con) -> None:
        for entity, result in fetched.items():
            # the fetch ran without the lock: a run that loaded newer records from the API in
            # the meantime wins, and this older snapshot is not loaded over it
            if read_cursor(con, entity) != result.since:
                raise IngestError(
                    f"{entity}: another run loaded from the API while this one fetched; nothing "
                    "was loaded, run again"
                )
            if result.new_cursor is not None:
                save_cursor(con, entity, result.new_cursor, dt.datetime.now(dt.UTC))

    try:
        return ingest(
            db_path, source, settings=settings, run=run, files=files, on_commit=save_cursors
        )
    except IngestError as exc:
        if exc.checks:  # the validation report is most useful when the load failed
            try:
                index = _data_docs(exc.checks, settings, stopped=str(exc))
                get_run_logger().warning("Data Docs of the failed load: %s", index)
            except Exception as docs_error:  # never let the report hide the load's own error
                get_run_logger().warning("Data Docs not written: %s", docs_error)
        raise


def _data_docs(checks, settings: Settings, loads=(), stopped: str | None = None) -> Path | None:
    from flows.ingestion.data_docs import write_data_docs

    run_time = dt.datetime.now(dt.UTC)
    name = run_time.strftime("%Y%m%dT%H%M%SZ") + ("-failed" if stopped else "")
    return write_data_docs(
        checks,
        settings.data_docs_dir,
        run_name=name,
        run_time=run_time,
        loads=loads,
        stopped=stopped,
    )


@task(name="write-data-docs", cache_policy=NO_CACHE)
def write_data_docs_task(report: IngestReport, settings: Settings) -> str:
    """Great Expectations Data Docs of this load's validations."""
    index = _data_docs(report.checks, settings, loads=report.loads)
    get_run_logger().info("Data Docs: %s", index)
    return str(index)


def summary_markdown(report: IngestReport) -> str:
    lines = [
        f"# Ingest {report.load_id} (as of {report.as_of_date})",
        "",
        "| entity | rows read | inserted | updated | unchanged | errors | warnings |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load in report.loads:
        lines.append(
            f"| {load.entity} | {load.rows_read:,} | {load.inserted:,} | {load.updated:,} "
            f"| {load.unchanged:,} | {load.errors:,} | {load.warnings:,} |"
        )
    return "\n".join(lines)


@flow(name="ingest", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def ingest_flow(
    source: Path | None = None,
    db: Path | None = None,
    as_of: Day | None = None,
    sources_file: Path | None = None,
) -> IngestReport:
    """Ingest a source folder (CSV / XLSX / Parquet per entity) and any API sources into DuckDB.

    Rows breaking a rule land in `quarantine` with every reason; bad rows above the configured
    share fail the run and leave the database as it was. The database's writer lock is held
    while the load writes, not while the API sources answer.

    Args:
        source: the source folder, one file per entity (customers.csv, orders.xlsx, ...).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        as_of: the load's day, YYYY-MM-DD (empty: today in the business time zone).
        sources_file: an HTTP API sources file (sources.yml) to fetch and load too.
    """
    settings = Settings.from_env()
    run = RunDate.of(settings.business_tz, as_of)
    db_path = Path(db) if db else settings.db_path
    staging = Path(tempfile.mkdtemp(prefix="followup-api-"))
    try:
        fetched = (
            fetch_api_sources(Path(sources_file), db_path, staging, settings)
            if sources_file
            else {}
        )
        with writer_lock(db_path, settings.db_lock_timeout):
            report = load_sources(Path(source) if source else None, db_path, run, fetched, settings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_data_docs_task(report, settings)
    markdown_artifact(summary_markdown(report), key="ingest-summary", description="Rows per entity")
    return report
