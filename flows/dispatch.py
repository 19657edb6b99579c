"""The `dispatch` flow: the ledger's pending messages for a day go to their channels (rendered,
rate limited, retried, each exactly once), and the day's escalations are recorded."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from adapters.channels.config import channels_file, load_channels
from flows.artifacts import markdown_artifact, table_artifact
from flows.dispatching.dispatch import DispatchReport, Sending, When, dispatch
from flows.dispatching.fanout import fan_out
from flows.dispatching.templates import Renderer
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.rundate import Day, RunDate
from flows.settings import Settings


@task(name="send", cache_policy=NO_CACHE)
def dispatch_task(
    db_path: Path,
    run: RunDate,
    channels_path: Path | None,
    settings: Settings,
    dry_run: bool,
    realtime: bool,
) -> DispatchReport:
    """Render, send in batches, record every outcome; one task for the whole day, not one per
    message."""
    channels = load_channels(channels_path, outbox=settings.outbox_dir)
    # FOLLOWUP_TASK_RUNNER=dask: the batches are sent from a Dask cluster's workers
    with nullcontext() if dry_run else fan_out(settings) as fanned:
        return dispatch(
            db_path,
            run,
            channels=channels,
            dry_run=dry_run,
            when=When(realtime=realtime),
            how=Sending(renderer=renderer(settings), log=get_run_logger().info, fan_out=fanned),
        )


def renderer(settings: Settings) -> Renderer:
    """The templates' renderer, its survey and unsubscribe links on the configured pages."""
    return Renderer(survey_base=settings.survey_url, unsubscribe_base=settings.unsubscribe_url)


def summary_markdown(report: DispatchReport) -> str:
    mode = "dry run: rendered, nothing sent" if report.dry_run else "sent"
    lines = [
        f"# Dispatch for {report.as_of} ({mode})",
        "",
        f"{report.templates_checked} templates checked before sending; "
        f"{report.handed_over:,} outcomes in {report.seconds:.1f} s",
    ]
    if report.expired:
        lines.append(f"\n{report.expired:,} pending messages expired (too late to send)")
    if report.opted_out:
        lines.append(f"\n{report.opted_out:,} pending messages stopped: opted out since the plan")
    return "\n".join(lines)


@flow(name="dispatch", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def dispatch_flow(
    as_of: Day | None = None,
    db: Path | None = None,
    channels: Path | None = None,
    dry_run: bool = True,
    realtime: bool = False,
) -> DispatchReport:
    """Send the day's pending messages, each once, inside its channel's send window.

    Args:
        as_of: the day to play through, YYYY-MM-DD (empty: today in the business time zone).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        channels: the channel settings file (empty: channels.yml, else the local outbox).
        dry_run: render the messages into the ledger; nothing is sent.
        realtime: send what is due by now (a deployment that runs through the day), not the
            whole day at its due times.
    """
    settings = Settings.from_env()
    run = RunDate.of(settings.business_tz, as_of)
    db_path = Path(db) if db else settings.db_path
    with writer_lock(db_path, settings.db_lock_timeout):
        chosen = channels_file(channels)
        report = dispatch_task(db_path, run, chosen, settings, dry_run, realtime)
        markdown_artifact(summary_markdown(report), key="dispatch-summary")
        rows = [
            {"channel": channel, **{k: int(v) for k, v in counts.items()}}
            for channel, counts in sorted(report.counts.items())
        ]
        if rows:
            table_artifact(rows, key="dispatch-by-channel", description="outcomes per channel")
        return report
