"""The `intraday` flow: a run during the day for the playbooks declared `intraday: true` (the
hot web-form lead: a call within 30 minutes), scheduled every 30 minutes in working hours by the
`lead-routing` deployment.

It stands on the morning's plan and adds the day so far: it loads the source folder (if given),
rebuilds the models the plan reads and the intraday playbooks' rows of `followups_due` with the
data up to its moment `at` (dbt var `as_of_time`; the other playbooks' rows stay), decides the
follow-ups no run has decided yet (consent, opt-outs up to `at`, caps counting today's contacts,
owners' capacity counting today's tasks), and hands their tasks to the task lists up to one
interval before they are due. Every follow-up keeps its idempotency key, so a re-run, the next
run and the next morning never plan or send it twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from adapters.channels.config import channels_file, load_channels
from flows.artifacts import markdown_artifact
from flows.building.runner import NodeResult, build_args, catch_up_vars, declare_playbooks, run_dbt
from flows.dispatch import renderer
from flows.dispatching.dispatch import DispatchReport, Sending, When, dispatch
from flows.ingest import ingest_flow
from flows.ingestion.load import IngestReport
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.planning.calendar import Calendar
from flows.planning.declarations import PLAYBOOK_DIR, load_playbooks
from flows.planning.plan import PlanReport, plan_intraday
from flows.planning.policy import Policy
from flows.rundate import Moment, RunDate
from flows.settings import Settings

# What an intraday run rebuilds, with the data up to its moment: what `followups_due` reads (the
# facts, incremental; customers, tiers and tags, so a customer whose record came in today with
# their lead is there; the anchors), then the intraday playbooks' rows of `followups_due`.
MODELS = "+followups_due"


class IntradayError(ValueError):
    """An intraday run that cannot run (no morning build to stand on); one line."""


@dataclass
class IntradayReport:
    at: dt.datetime
    playbooks: list[str]
    morning: dt.date | None  # the last morning plan the run stands on
    ingest: IngestReport | None = None
    plan: PlanReport | None = None
    dispatch: DispatchReport | None = None


def intraday_playbooks(playbook_dir: Path = PLAYBOOK_DIR) -> list[str]:
    return sorted(p.name for p in load_playbooks(playbook_dir) if p.intraday)


def morning_build(db_path: Path) -> dt.date | None:
    """The date of the last build that planned a day (`followups_due`), or None."""
    if not db_path.exists():
        return None
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        (exists,) = con.execute(
            "select count(*) from duckdb_tables() where table_name = 'followups_due'"
        ).fetchone()
        if not exists:
            return None
        (day,) = con.execute("select max(as_of_date) from followups_due").fetchone()
        return day
    finally:
        con.close()


@task(name="intraday-models", cache_policy=NO_CACHE)
def models_task(
    db_path: Path, run: RunDate, settings: Settings, policy: Policy
) -> list[NodeResult]:
    """The intraday playbooks' follow-ups due today, and what they read, with the data up to
    the run's moment."""
    declare_playbooks(db_path, run.day, policy.calendar)
    return run_dbt(
        # the tests of these models alone: one that also reads a model the run leaves as of the
        # morning (the sales funnel against the leads) would compare two moments
        [*build_args(select=MODELS), "--indirect-selection", "cautious"],
        db_path,
        run,
        settings,
        extra_vars=catch_up_vars(db_path, run.day),
    )


@task(name="intraday-plan", cache_policy=NO_CACHE)
def plan_task(
    db_path: Path, run: RunDate, playbooks: list[str], dry_run: bool, policy: Policy
) -> PlanReport:
    """The follow-ups no run has decided yet, decided as of the run's moment; one transaction."""
    return plan_intraday(db_path, run, playbooks, dry_run=dry_run, policy=policy)


@task(name="intraday-send", cache_policy=NO_CACHE)
def dispatch_task(
    db_path: Path,
    run: RunDate,
    playbooks: list[str],
    channels_path: Path | None,
    settings: Settings,
    dry_run: bool,
    realtime: bool,
    interval_minutes: int,
) -> DispatchReport:
    """The intraday playbooks' messages due by now, and their tasks due before the next run."""
    return dispatch(
        db_path,
        run,
        channels=load_channels(channels_path, outbox=settings.outbox_dir),
        dry_run=dry_run,
        when=When(
            realtime=realtime,
            until=run.cutoff + dt.timedelta(seconds=1),
            playbooks=playbooks,
            task_lead_minutes=interval_minutes,
        ),
        how=Sending(renderer=renderer(settings), log=get_run_logger().info),
    )


def summary_markdown(report: IntradayReport) -> str:
    lines = [f"# Intraday run at {report.at:%Y-%m-%d %H:%M}", ""]
    lines.append(f"Playbooks: {', '.join(report.playbooks)}; on the {report.morning} plan")
    if report.plan is not None:
        counts = ", ".join(f"{s} {n:,}" for s, n in sorted(report.plan.counts.items()))
        lines.append(f"\nNew decisions: {counts or 'nothing new'}")
    if report.dispatch is not None:
        handed = report.dispatch.handed_over
        lines.append(f"\nHanded over: {handed:,}")
    return "\n".join(lines)


def _morning(db_path: Path, at: dt.datetime, settings: Settings) -> dt.date:
    """The day of the morning build the intraday run stands on (read under the writer lock)."""
    with writer_lock(db_path, settings.db_lock_timeout):
        morning = morning_build(db_path)
    if morning is None:
        raise IntradayError(
            f"{db_path}: no morning build to stand on: run `followup run` for {at.date()} first"
        )
    if morning > at.date():
        raise IntradayError(f"{db_path} is built for {morning}, after {at:%Y-%m-%d %H:%M}")
    return morning


@flow(name="intraday", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def intraday_flow(
    at: Moment | None = None,
    db: Path | None = None,
    source: Path | None = None,
    sources_file: Path | None = None,
    channels: Path | None = None,
    dry_run: bool = False,
    interval_minutes: int = 30,
) -> IntradayReport:
    """Plan and send the intraday playbooks' follow-ups that became due since the last run.

    Args:
        at: the run's moment, YYYY-MM-DDTHH:MM (empty: now; a naive time is in the business
            time zone).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        source: a source folder to load first (the day's leads).
        sources_file: an HTTP API sources file (sources.yml) to fetch and load first.
        channels: the channel settings file (empty: channels.yml, else the local outbox).
        dry_run: render the messages into the ledger; nothing is sent.
        interval_minutes: the time to the next run; a task due before it goes to its list now.
    """
    settings = Settings.from_env()
    realtime = at is None
    run = RunDate.moment(settings.business_tz, at)
    at = run.cutoff
    if not 1 <= interval_minutes <= 24 * 60:
        raise IntradayError(f"interval_minutes {interval_minutes}: between 1 and 1440")
    db_path = Path(db) if db else settings.db_path
    if settings.dbt_target != "duckdb":
        raise IntradayError("an intraday run needs the DuckDB target (FOLLOWUP_DBT_TARGET=duckdb)")
    log = get_run_logger()
    morning = _morning(db_path, at, settings)
    report = IntradayReport(at=at, playbooks=intraday_playbooks(), morning=morning)
    if not report.playbooks:
        log.info("no playbook declares intraday: true; nothing to do")
        return report
    if morning < at.date():
        log.warning(
            "the morning run for %s has not run (the last was %s): the day's other "
            "follow-ups are not planned yet",
            at.date(),
            morning,
        )
    # the ingest holds the writer lock while it loads, not while an API source answers
    if source is not None or sources_file is not None:
        report.ingest = ingest_flow(
            source=source, db=db_path, as_of=at.date(), sources_file=sources_file
        )
    with writer_lock(db_path, settings.db_lock_timeout):
        # read again: a morning run may have finished while the sources loaded
        report.morning = _morning(db_path, at, settings)
        policy = Policy.load(calendar=Calendar.load(settings.calendar_file))
        models_task(db_path, run, settings, policy)
        report.plan = plan_task(db_path, run, report.playbooks, dry_run, policy)
        log.info("intraday plan %s: %s", f"{at:%H:%M}", report.plan.counts)
        report.dispatch = dispatch_task(
            db_path,
            run,
            report.playbooks,
            channels_file(channels),
            settings,
            dry_run,
            realtime,
            interval_minutes,
        )
    markdown_artifact(summary_markdown(report), key="intraday-summary")
    return report
