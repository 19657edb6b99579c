"""The `tasks` flow: the call and visit lists staff return close their tasks.

A call list (adapters/channels/call_list.py) has four columns for the caller: 结果 (outcome),
满意度, 下次联系时间 and 备注. `followup tasks --source FILE|DIR` loads the returned lists (XLSX or
CSV, or a hand-made CSV of the same columns) into `raw.task_results`, one row per task, through the
same checks as every other file (expectations/task_results.json): a row naming a task we never
gave, an outcome that is not one of the labels, or a next contact before the task was given is
quarantined with its reason, and nothing else changes. A row whose four columns are all empty is a
task not done yet: it is skipped. Loading a list twice changes nothing; a changed row updates.

What a result does, in the transaction that loads it:

- the task is `done` in `manual_followups`, with its outcome and `done_at` (the list's 完成时间,
  else the moment it was first loaded), so `followup_execution` counts it;
- a task made for a message gains a feedback row (`response_type = call`, the outcome, 满意度 and
  备注 as text, feedback id `task:<task id>`), which the analysis and the unreachable rule read;
- an agreed next contact becomes an open task of its own for the same owner (`next:<task id>`),
  due that day, which the dispatch of that day puts on the owner's list; a result that no longer
  names one cancels it while it is open.

A task still open past its day comes back on its owner's next list marked 逾期 (overdue), by the
daily dispatch (`carry_open_tasks` in flows/dispatching/carry.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.analysis.publish import AnalysisSummary, publish_analysis, read_summary
from flows.building.runner import NodeResult, build_args, run_build
from flows.ingestion.load import EntityLoad, IngestError, connect, ingest
from flows.ledger import ensure_tables
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.rundate import Moment, RunDate
from flows.settings import Settings

LIST_FORMATS = (".xlsx", ".csv")


@dataclass
class TasksReport:
    as_of: dt.date
    loads: list[EntityLoad] = field(default_factory=list)
    load_ids: list[str] = field(default_factory=list)
    done: int = 0  # tasks done, all told
    open: int = 0  # call and visit tasks still open
    overdue: int = 0  # of those, past their day
    next_contacts: int = 0  # open tasks made from an agreed next contact
    nodes: list[NodeResult] = field(default_factory=list)
    summary: AnalysisSummary | None = None


def returned_lists(source: Path) -> list[Path]:
    """The lists to load: `source` itself, or every `.xlsx` and `.csv` under the folder. Where
    both files of one list are there (as the call list channel writes them), the one changed last
    is the one the caller filled in."""
    if not source.exists():
        raise IngestError(f"{source}: no such file or folder")
    if source.is_file():
        return [source]
    by_list: dict[Path, Path] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and path.suffix.lower() in LIST_FORMATS and not path.name.startswith("."):
            stem = path.with_suffix("")
            other = by_list.get(stem)
            if other is None or path.stat().st_mtime > other.stat().st_mtime:
                by_list[stem] = path
    if not by_list:
        raise IngestError(f"{source}: no returned call list (.xlsx or .csv)")
    return list(by_list.values())


def load_task_results(source: Path, db_path: Path, run: RunDate, settings: Settings) -> TasksReport:
    """Load each returned list (one transaction per file) and apply its results."""
    files = returned_lists(source)
    con = connect(db_path, settings)
    try:
        ensure_tables(con)  # results are checked against the tasks, which may not exist yet
    finally:
        con.close()
    report = TasksReport(as_of=run.day)
    for path in files:
        loaded = ingest(
            db_path,
            None,
            settings=settings,
            run=run,
            files={"task_results": path},
            entities=("task_results",),
            on_commit=lambda con: apply_results(con, run.now()),
        )
        report.loads.extend(loaded.loads)
        report.load_ids.append(loaded.load_id)
    con = connect(db_path, settings)
    try:
        count_tasks(con, run, report)
    finally:
        con.close()
    return report


def apply_results(con: duckdb.DuckDBPyConnection, now: dt.datetime) -> None:
    """Every loaded result onto its task, its feedback row and its next contact (idempotent: a
    result already applied changes nothing)."""
    con.execute(
        """
        update manual_followups m set
            status = 'done', outcome = r.outcome, done_at = coalesce(r.done_at, m.done_at, $now)
        from raw.task_results r
        where m.task_id = r.task_id
            and (m.status <> 'done' or m.outcome is distinct from r.outcome
                 or (r.done_at is not null and m.done_at is distinct from r.done_at))
        """,
        {"now": now},
    )
    con.execute(_TASK_FEEDBACK)
    con.execute(
        """
        delete from raw.feedback f using task_feedback t
        where f._key = t.feedback_id and (
            f.outcome is distinct from t.outcome or f.satisfaction is distinct from t.satisfaction
            or f.text is distinct from t.text or f.responded_at is distinct from t.responded_at)
        """
    )
    con.execute(
        """
        insert into raw.feedback by name
        select * exclude (feedback_id), feedback_id, feedback_id as _key from task_feedback
        where feedback_id not in (select _key from raw.feedback)
        """
    )
    con.execute("drop table task_feedback")
    con.execute(_NEXT_CONTACTS)
    con.execute(
        """
        update manual_followups m set status = 'cancelled'
        from raw.task_results r
        where m.task_id = 'next:' || r.task_id and m.status = 'open' and r.next_contact_at is null
        """
    )


# a call's result as feedback on its message (a task made for a next contact has none)
_TASK_FEEDBACK = """
create or replace temp table task_feedback as
select 'task:' || r.task_id as feedback_id, m.message_id, m.customer_id,
       m.done_at as responded_at, 'call' as response_type, r.outcome, r.satisfaction,
       r.note as text, r._source_file, r._line_number, r._load_id
from raw.task_results r join manual_followups m on m.task_id = r.task_id
where m.message_id is not null
"""

# an agreed next contact: an open task for the same owner, due by the end of that day
_NEXT_CONTACTS = """
insert into manual_followups by name
select 'next:' || r.task_id as task_id, m.customer_id, m.owner_id,
       '约定下次联系 (agreed next contact)' as reason, m.priority, m.done_at as created_at,
       date_trunc('day', r.next_contact_at) + interval 1 day as due_by, 'open' as status,
       m.kind, m.playbook, m.step, coalesce(r.note, m.script) as script,
       r.next_contact_at
from raw.task_results r join manual_followups m on m.task_id = r.task_id
where r.next_contact_at is not null
on conflict (task_id) do update set
    next_contact_at = excluded.next_contact_at, due_by = excluded.due_by,
    script = excluded.script, status = 'open'
where manual_followups.status in ('open', 'cancelled')
"""


def count_tasks(con: duckdb.DuckDBPyConnection, run: RunDate, report: TasksReport) -> None:
    """The tasks' state after the load: done, open, overdue, open next contacts."""
    report.done, report.open, report.overdue, report.next_contacts = con.execute(
        """
        select count(*) filter (status = 'done'),
               count(*) filter (status = 'open'),
               count(*) filter (status = 'open' and due_by <= $start),
               count(*) filter (status = 'open' and next_contact_at is not null)
        from manual_followups where kind in ('call', 'visit')
        """,
        {"start": run.start},
    ).fetchone()


@task(name="load-returned-lists", cache_policy=NO_CACHE)
def load_task_results_task(
    source: Path, db_path: Path, run: RunDate, settings: Settings
) -> TasksReport:
    """Read, check and load the returned lists; close their tasks."""
    return load_task_results(source, db_path, run, settings)


@flow(name="tasks", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def tasks_flow(
    source: Path, db: Path | None = None, at: Moment | None = None, refresh_models: bool = True
) -> TasksReport:
    """Load the call and visit lists staff return (`source`: a list, or a folder of them) and
    refresh the analysis models, so execution and call outcomes count at once.

    Args:
        source: a returned list (.xlsx or .csv) or a folder holding them.
        db: the database (default: FOLLOWUP_DB).
        at: when the lists come back (default: now), in the business time zone when naive.
        refresh_models: rebuild the analysis models (dbt tag `analysis`) after the load.
    """
    settings = Settings.from_env()
    db_path = Path(db) if db else settings.db_path
    run = RunDate.moment(settings.business_tz, at)
    with writer_lock(db_path, settings.db_lock_timeout):
        report = load_task_results_task(Path(source), db_path, run, settings)
        get_run_logger().info(
            "tasks: %d done, %d open (%d overdue, %d agreed next contacts)",
            report.done,
            report.open,
            report.overdue,
            report.next_contacts,
        )
        if refresh_models:
            day = RunDate.of(settings.business_tz, run.day)  # the models of the day, not a moment
            report.nodes = run_build(build_args(select="tag:analysis"), db_path, day, settings)
            report.summary = read_summary(db_path)
            publish_analysis(report.summary, run.day)
    return report
