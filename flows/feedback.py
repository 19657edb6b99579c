"""The `feedback` flow: replies, clicks, survey answers, call outcomes and delivery receipts back
into `raw.feedback`, linked to the ledger's messages, then the analysis models rebuilt (campaign
performance, satisfaction, `ab_results`).

A row names its message by the ledger's `message_id` or by the survey link that carries it
(`?m=<message_id>`), else by the provider's id of the send (`provider_id`, the ledger's
`provider_message_id`), else by the phone number it came from (the latest message the one
customer with that number got on the row's channel within its response window; the suite
`expectations/feedback.json` declares the match); a row that finds no message goes to
`quarantine` with its reason. Rows are keyed on their content, so a late, duplicated or re-sent
file changes nothing twice.

Instead of a file, the feedback may be pulled from an SMS provider's API (`pull_from`: a channel
of kind `aliyun_sms` or `tencent_sms`): its delivery reports and replies are written to a file
beside the database (`pulled/<channel>-<digest>.csv`, the only copy of what Tencent Cloud hands
out once) and loaded through the same checks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from adapters.channels import mask
from flows.analysis.publish import AnalysisSummary, publish_analysis, read_summary
from flows.building.runner import NodeResult, build_args, run_build
from flows.ingestion.load import IngestError, IngestReport, connect, ingest
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.rundate import Day, RunDate
from flows.settings import Settings


@dataclass
class FeedbackReport:
    as_of: dt.date
    ingest: IngestReport
    nodes: list[NodeResult] = field(default_factory=list)
    summary: AnalysisSummary | None = None


def load_feedback(source: Path, db_path: Path, run: RunDate, settings: Settings) -> IngestReport:
    """`source` is a feedback file (CSV, XLSX, Parquet), a folder holding `feedback.*`, or the
    delivery reports and replies Alibaba Cloud pushed (SmsReport, SmsUp), saved as `.json` or
    `.jsonl` (read into a feedback file beside the database first)."""
    from flows.ledger import ensure_tables

    if not source.exists():
        raise IngestError(f"{source}: no such file or folder")
    if source.is_file() and source.suffix.lower() in (".json", ".jsonl"):
        from adapters.channels.aliyun_sms import parse_push

        try:
            rows = parse_push(source)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IngestError(str(exc).splitlines()[0]) from None
        source = _feedback_file(rows, None, db_path, source.stem)
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


# Kinds whose delivery reports and replies can be pulled; for Alibaba Cloud, of the numbers the
# channel sent to on the run's day and the days before (its QuerySendDetails asks per day).
PULL_KINDS = ("aliyun_sms", "tencent_sms")
PULL_DAYS = 3
_PULLED_COLUMNS = (
    "message_id",
    "provider_id",
    "phone",
    "channel",
    "responded_at",
    "response_type",
    "outcome",
    "text",
)


class PullError(Exception):
    """Feedback cannot be pulled from the channel; one line, numbers masked."""


def pull_channel(channel: str, channels: Path | None, settings: Settings) -> tuple[str, Any]:
    """The kind and options of the channel `channel` of the channel settings `channels`
    (default as `followup run`'s); PullError when there is none, or it has nothing to pull."""
    from adapters.channels import kind_options
    from adapters.channels.config import channels_file, load_channels

    configured = load_channels(channels_file(channels), outbox=settings.outbox_dir)
    if channel not in configured:
        raise PullError(
            f"channel {channel}: not in the channel settings ({', '.join(sorted(configured))})"
        )
    kind = configured[channel]["kind"]
    if kind not in PULL_KINDS:
        raise PullError(
            f"channel {channel} ({kind}): has no delivery reports or replies to pull "
            f"(kinds {', '.join(PULL_KINDS)} have)"
        )
    return kind, kind_options(channel, configured[channel])


def pull_feedback(
    channel: str, channels: Path | None, db_path: Path, run: RunDate, settings: Settings
) -> Path:
    """Pull the delivery reports and replies of `channel` (named in the channel settings
    `channels`, default as `followup run`'s) into a feedback file beside the database; its path.
    The same pull writes the same file, so loading it twice changes nothing."""
    from adapters.channels import aliyun_sms, tencent_sms

    kind, options = pull_channel(channel, channels, settings)
    try:
        if kind == "aliyun_sms":
            rows = aliyun_sms.pull_feedback(options, _recent_sends(db_path, channel, run, settings))
        else:
            rows = tencent_sms.pull_feedback(options)
    except (aliyun_sms.PullError, tencent_sms.PullError) as exc:
        raise PullError(mask(str(exc).splitlines()[0])) from None
    return _feedback_file(rows, channel, db_path, channel)


def _feedback_file(rows: list[dict], channel: str | None, db_path: Path, name: str) -> Path:
    """The raw feedback rows (`adapters.channels.feedback_row`) as a feedback file beside the
    database, `pulled/<name>-<digest of its content>.csv`: the same rows, the same file."""
    import csv
    import hashlib
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, _PULLED_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["responded_at"], repr(sorted(r.items())))):
        at = row["responded_at"].isoformat()
        writer.writerow({**row, "channel": channel, "responded_at": at})
    content = text.getvalue().encode("utf-8")
    path = db_path.parent / "pulled" / f"{name}-{hashlib.sha256(content).hexdigest()[:16]}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _recent_sends(
    db_path: Path, channel: str, run: RunDate, settings: Settings
) -> list[tuple[str, dt.date]]:
    """(phone, Beijing day) of the messages `channel` sent on the run's day and the
    `PULL_DAYS` before: the ledger's messages and their customers' numbers."""
    from adapters.channels.aliyun_sms import BEIJING

    con = connect(db_path, settings)
    try:
        return con.execute(
            f"""
            select distinct c.phone, cast(timezone('{BEIJING.key}', l.sent_at) as date) as day
            from main.message_ledger l
            inner join raw.customers c on c.customer_id = l.customer_id
            where l.channel = ? and c.phone is not null and l.sent_at is not null
              and cast(timezone('{BEIJING.key}', l.sent_at) as date) between ? and ?
            order by all
            """,
            [channel, run.day - dt.timedelta(days=PULL_DAYS), run.day],
        ).fetchall()
    finally:
        con.close()


@task(name="pull-feedback", cache_policy=NO_CACHE)
def pull_feedback_task(
    channel: str, channels: Path | None, db_path: Path, run: RunDate, settings: Settings
) -> Path:
    """Pull a provider's delivery reports and replies into a feedback file (no retries: Tencent
    Cloud hands each out once, and the file is where it is kept)."""
    return pull_feedback(channel, channels, db_path, run, settings)


@task(name="load-feedback", cache_policy=NO_CACHE)
def load_feedback_task(
    source: Path, db_path: Path, run: RunDate, settings: Settings
) -> IngestReport:
    """Read, type and validate the feedback, and upsert it in one transaction."""
    return load_feedback(source, db_path, run, settings)


@flow(name="feedback", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def feedback_flow(
    source: Path | None = None,
    db: Path | None = None,
    as_of: Day | None = None,
    refresh_models: bool = True,
    pull_from: str | None = None,
    channels: Path | None = None,
) -> FeedbackReport:
    """Load a feedback file, or pull an SMS channel's delivery reports and replies, and refresh
    the analysis models (dbt tag `analysis`).

    Args:
        source: a feedback file (CSV, XLSX, Parquet, an Alibaba Cloud push) or a folder holding
            feedback.*; or empty with `pull_from`.
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        as_of: the models' day, YYYY-MM-DD (empty: today in the business time zone).
        refresh_models: rebuild the analysis models after the load (false: the next build does).
        pull_from: an aliyun_sms or tencent_sms channel whose reports and replies to pull.
        channels: the channel settings file (empty: channels.yml).
    """
    if (source is None) == (pull_from is None):
        raise PullError("give either a feedback file (--source) or a channel to pull (--from)")
    settings = Settings.from_env()
    db_path = Path(db) if db else settings.db_path
    run = RunDate.of(settings.business_tz, as_of)
    as_of = run.day
    with writer_lock(db_path, settings.db_lock_timeout):
        if pull_from is not None:
            channels = Path(channels) if channels else None
            source = pull_feedback_task(pull_from, channels, db_path, run, settings)
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
