"""Each `followup` command's step: the flow it calls, its errors turned into one line. The
command-line parsing and the printing of the results stay in flows/cli.py; the demo runs the same
steps one after another."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

from flows.console import one_line_errors, progress_shown, quiet_prefect
from flows.rundate import RunDate
from flows.settings import Settings


@functools.cache
def current_settings() -> Settings:
    """The settings from the environment, validated once per command: a bad value stops it with
    one line naming the variable."""
    with one_line_errors():
        return Settings.from_env()


def run_ingest(source: Path | None, db: Path, as_of: dt.date | None, sources_file: Path | None):
    quiet_prefect()
    from flows.ingest import ingest_flow
    from flows.ingestion.load import IngestError

    with one_line_errors(IngestError), progress_shown():
        return ingest_flow(source=source, db=db, as_of=as_of, sources_file=sources_file)


def run_daily(
    source: Path | None,
    db: Path,
    as_of: dt.date,
    sources_file: Path | None,
    full_refresh: bool,
    dry_run: bool = True,
    channels: Path | None = None,
):
    quiet_prefect()
    from flows.building.runner import BuildError
    from flows.daily import daily_flow
    from flows.ingestion.load import IngestError

    with one_line_errors(IngestError, BuildError), progress_shown():
        return daily_flow(
            as_of=as_of,
            source=source,
            db=db,
            sources_file=sources_file,
            full_refresh=full_refresh,
            dry_run=dry_run,
            channels=channels,
        )


def run_past_build(db: Path, as_of: dt.date):
    """The models as of an earlier date, for the tier history: plain dbt, no Prefect task per
    node, and without the analysis models, which today's build makes (saves half a minute)."""
    import time

    from flows.building.runner import BuildError, BuildReport, build

    started = time.monotonic()
    with one_line_errors(BuildError), progress_shown():
        settings = current_settings()
        nodes = build(db, RunDate.of(settings.business_tz, as_of), settings, exclude="tag:analysis")
    return BuildReport(as_of, False, time.monotonic() - started, nodes)


def run_ingest_files(db: Path, as_of: dt.date, files: dict[str, Path]):
    from flows.ingestion.load import IngestError, ingest

    with one_line_errors(IngestError), progress_shown():
        settings = current_settings()
        run = RunDate.of(settings.business_tz, as_of)
        return ingest(db, None, settings=settings, run=run, files=files, entities=tuple(files))


def run_feedback(
    source: Path | None,
    db: Path,
    as_of: dt.date | None,
    refresh_models: bool = True,
    pull_from: str | None = None,
    channels: Path | None = None,
):
    """Load a feedback file, or pull the feedback of the SMS channel `pull_from`."""
    quiet_prefect()
    from flows.building.runner import BuildError
    from flows.feedback import PullError, feedback_flow, pull_channel
    from flows.ingestion.load import IngestError

    with one_line_errors(IngestError, BuildError, PullError), progress_shown():
        if pull_from is not None:  # a channel that cannot be pulled stops before the flow
            pull_channel(pull_from, channels, current_settings())
        return feedback_flow(
            source=source,
            db=db,
            as_of=as_of,
            refresh_models=refresh_models,
            pull_from=pull_from,
            channels=channels,
        )


def run_tasks(source: Path, db: Path, at: dt.datetime | None, refresh_models: bool = True):
    quiet_prefect()
    from flows.building.runner import BuildError
    from flows.ingestion.load import IngestError
    from flows.tasks import tasks_flow

    with one_line_errors(IngestError, BuildError), progress_shown():
        return tasks_flow(source=source, db=db, at=at, refresh_models=refresh_models)


def run_backtest(start, end, db, source, playbooks, playbook_dir):
    quiet_prefect()
    from flows.backtest import backtest_flow
    from flows.backtesting.replay import BacktestError
    from flows.building.runner import BuildError
    from flows.ingestion.load import IngestError
    from flows.planning.declarations import PlaybookError

    with one_line_errors(BacktestError, BuildError, IngestError, PlaybookError), progress_shown():
        return backtest_flow(
            start=start,
            end=end,
            db=db,
            source=source,
            playbooks=playbooks,
            playbook_dir=playbook_dir,
        )


def run_intraday(at, db, source, sources_file, dry_run, channels, interval):
    quiet_prefect()
    from flows.building.runner import BuildError
    from flows.ingestion.load import IngestError
    from flows.intraday import IntradayError, intraday_flow
    from flows.planning.declarations import PlaybookError

    with one_line_errors(IntradayError, BuildError, IngestError, PlaybookError), progress_shown():
        return intraday_flow(
            at=at,
            db=db,
            source=source,
            sources_file=sources_file,
            channels=channels,
            dry_run=dry_run,
            interval_minutes=interval,
        )


def run_report(db: Path, out: Path):
    quiet_prefect()
    from flows.report import report_flow

    with one_line_errors():
        return report_flow(db=db, out=out)
