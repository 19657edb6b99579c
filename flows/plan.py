"""The `plan` flow: first the escalation rules look at what went unanswered (reminders, tasks for
managers and specialists, care messages, downgrade flags, stops), then today's follow-ups get their
fate in `message_ledger` (planned, deferred, suppressed, held out), and the change against the
previous run goes to `plan_diff`."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_artifact, table_artifact
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.planning.calendar import Calendar
from flows.planning.escalate import EscalationReport, escalate
from flows.planning.plan import PlanReport, plan
from flows.planning.policy import Policy
from flows.rundate import Day, RunDate
from flows.settings import Settings


@task(name="arbitrate-and-record", cache_policy=NO_CACHE)
def plan_task(db_path: Path, run: RunDate, dry_run: bool, policy: Policy) -> PlanReport:
    """Consent, opt-outs, holdouts, caps and owners, in priority order; one transaction."""
    return plan(db_path, run, dry_run=dry_run, policy=policy)


@task(name="escalate", cache_policy=NO_CACHE)
def escalate_task(db_path: Path, run: RunDate, dry_run: bool, policy: Policy) -> EscalationReport:
    """Yesterday's unanswered follow-ups, by the playbooks' escalation rules; once each."""
    return escalate(db_path, run, dry_run=dry_run, policy=policy)


def summary_markdown(report: PlanReport) -> str:
    mode = "dry run" if report.dry_run else "for dispatch"
    counts = ", ".join(f"{status} {n:,}" for status, n in sorted(report.counts.items()))
    return (
        f"# Plan for {report.as_of} ({mode})\n\n{report.balance()}\n\n"
        f"ledger: {counts or 'nothing due'}"
    )


@flow(name="plan", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def plan_flow(as_of: Day | None = None, db: Path | None = None, dry_run: bool = True) -> PlanReport:
    """Decide the day's follow-ups from `followups_due` (built by the `build` flow).

    Args:
        as_of: the plan's day, YYYY-MM-DD (empty: today in the business time zone).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        dry_run: record the planned messages as `dry_run`, for a rendering without sending.
    """
    settings = Settings.from_env()
    run = RunDate.of(settings.business_tz, as_of)
    db_path = Path(db) if db else settings.db_path
    policy = Policy.load(calendar=Calendar.load(settings.calendar_file))
    with writer_lock(db_path, settings.db_lock_timeout):
        escalated = escalate_task(db_path, run, dry_run, policy)
        get_run_logger().info("escalations %s: %s", run.day, dict(escalated.counts))
        report = plan_task(db_path, run, dry_run, policy)
        get_run_logger().info("plan %s: %s", run.day, report.balance())
        markdown_artifact(summary_markdown(report), key="plan-summary")
        if report.diff:
            rows = [
                {**row, "as_of_date": str(row["as_of_date"]), "run_at": str(row["run_at"])}
                for row in report.diff
            ]
            table_artifact(rows, key="plan-diff", description="per playbook vs the last run")
        return report
