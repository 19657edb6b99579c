"""The `backtest` flow: if these playbooks had been live from D1 to D2, whom would they have
contacted, how often would they have collided with the caps and the owners' capacity, and what
did those customers do anyway?

It replays the planning step for each day on the data as it stood that morning, in a scratch
database (nothing is sent; the live ledger is read, never written), and writes the `backtest_*`
tables to the database (see flows/backtesting/results.py and docs/backtest.md).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import markdown_artifact
from flows.backtesting import results
from flows.backtesting.replay import (
    BacktestError,
    Replay,
    check_range,
    choose_playbooks,
    prepare,
    replay,
)
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.planning.calendar import Calendar
from flows.planning.declarations import PLAYBOOK_DIR
from flows.planning.policy import Policy
from flows.rundate import Day, RunDate
from flows.settings import Settings


@dataclass(frozen=True)
class Run:
    """What the backtest's steps share: the settings, today (no day after it is replayed), and
    the policy the replayed plans apply."""

    settings: Settings
    today: RunDate
    policy: Policy


@dataclass
class BacktestReport:
    replay: Replay
    seconds: float
    per_playbook: list[dict]  # playbook, focus, due, planned, deferred, suppressed, held_out


@task(name="prepare-scratch", cache_policy=NO_CACHE)
def prepare_task(
    scratch: Path, db_path: Path, start: dt.date, source: Path | None, run: Run
) -> None:
    """The scratch database: the sources (or the live raw tables) and the ledger before D1."""
    if source is not None:
        from flows.ingestion.load import ingest

        ingest(scratch, source, settings=run.settings, run=run.today)
    # DuckDB refuses even a read-only attach while another process writes the file
    with writer_lock(db_path, run.settings.db_lock_timeout):
        prepare(scratch, db_path if db_path.exists() else None, start, copy_raw=source is None)


@task(name="replay-days", cache_policy=NO_CACHE)
def replay_task(scratch, start, end, playbooks, focus, run: Run) -> Replay:
    """Plan each day in turn on the morning's data; caps and deferrals carry over."""
    logger = get_run_logger()

    def progress(day: dt.date, counts: dict) -> None:
        logger.info("backtest %s: %s", day, dict(sorted(counts.items())) or "nothing due")

    return replay(
        scratch, start, end, playbooks, focus, run.settings, run.policy, progress=progress
    )


@task(name="write-results", cache_policy=NO_CACHE)
def results_task(scratch: Path, db_path: Path, done: Replay, source: str, run: Run) -> list[dict]:
    results.compute(scratch, done, source, run.settings.business_tz)
    with writer_lock(db_path, run.settings.db_lock_timeout):
        results.publish(scratch, db_path)
    return per_playbook(scratch)  # the same tables, without opening the live database again


def per_playbook(db_path: Path) -> list[dict]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return (
            con.sql(
                """
                select d.playbook, bool_or(d.focus) as focus, sum(d.due)::bigint as due,
                    sum(d.planned)::bigint as planned, sum(d.deferred)::bigint as deferred,
                    sum(d.deferred_by_cap)::bigint as deferred_by_cap,
                    sum(d.deferred_by_capacity)::bigint as deferred_by_capacity,
                    sum(d.suppressed)::bigint as suppressed, sum(d.held_out)::bigint as held_out,
                    any_value(o.baseline) as baseline_conversion, any_value(o.n) as complete
                from backtest_daily d
                left join (
                    select playbook, count(*) as n, avg(ordered::int) as baseline
                    from backtest_outcomes where window_complete group by playbook
                ) o on d.playbook = o.playbook
                group by d.playbook
                order by focus desc, planned desc, d.playbook
                """
            )
            .pl()
            .to_dicts()
        )
    finally:
        con.close()


def baseline_text(row: dict) -> str:
    """A playbook's 'ordered anyway': the share of its would-be messages whose customer placed a
    paid order in the attribution window without one, over the windows that have closed."""
    if row["baseline_conversion"] is None:
        return "window still open"
    return f"{row['baseline_conversion']:.1%} of {row['complete']:,}"


def summary_markdown(report: BacktestReport) -> str:
    r = report.replay
    focus = ", ".join(r.focus) or "every enabled playbook"
    lines = [
        f"# Backtest {r.start} to {r.end} ({r.days} days): {focus}",
        "",
        f"{len(r.playbooks)} playbooks replayed in {report.seconds:.1f} s "
        f"(models {r.seconds.get('models', 0) + r.seconds.get('build', 0):.1f} s, "
        f"plan {r.seconds.get('plan', 0):.1f} s). Nothing was sent.",
        "",
        "| playbook | due | planned | deferred (cap / capacity) | suppressed | held out "
        "| ordered anyway |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.per_playbook:
        baseline = baseline_text(p)
        name = f"**{p['playbook']}**" if p["focus"] else p["playbook"]
        lines.append(
            f"| {name} | {p['due']:,} | {p['planned']:,} | {p['deferred']:,} "
            f"({p['deferred_by_cap']:,} / {p['deferred_by_capacity']:,}) | {p['suppressed']:,} "
            f"| {p['held_out']:,} | {baseline} |"
        )
    return "\n".join(lines)


@flow(name="backtest", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def backtest_flow(
    start: Day,
    end: Day,
    db: Path | None = None,
    source: Path | None = None,
    playbooks: list[str] | None = None,
    playbook_dir: Path | None = None,
) -> BacktestReport:
    """Replay the plan for every day from `start` to `end` (both in the past) for every enabled
    playbook and those named in `playbooks` (which may be disabled), on the sources in `source`
    or the database's own raw tables, and write the `backtest_*` tables to the database.

    Args:
        start: the first day to replay, YYYY-MM-DD.
        end: the last day to replay, YYYY-MM-DD (before today).
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        source: a source folder to replay on (empty: the database's raw tables).
        playbooks: playbooks to replay besides the enabled ones (they may be disabled).
        playbook_dir: the playbooks' folder (empty: playbooks/).
    """
    clock = time.perf_counter()
    settings = Settings.from_env()
    db_path = Path(db) if db else settings.db_path
    today = RunDate.of(settings.business_tz)
    check_range(start, end, today.day)
    if settings.dbt_target != "duckdb":
        raise BacktestError(
            f"a backtest replays in a scratch DuckDB file, not on {settings.dbt_target}: "
            "run it with FOLLOWUP_DBT_TARGET=duckdb on a copy of the data"
        )
    focus = list(playbooks or [])
    chosen = choose_playbooks(playbook_dir, focus)
    policy_file = (playbook_dir or PLAYBOOK_DIR) / "_policy.yml"
    calendar = Calendar.load(settings.calendar_file)
    policy = Policy.load(
        policy_file if policy_file.is_file() else PLAYBOOK_DIR / "_policy.yml", calendar
    )
    run = Run(settings, today, policy)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{db_path.stem}-backtest-", dir=db_path.parent))
    try:
        scratch = work / "backtest.duckdb"
        prepare_task(scratch, db_path, start, source, run)
        done = replay_task(scratch, start, end, chosen, focus, run)
        rows = results_task(scratch, db_path, done, str(source or db_path), run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = BacktestReport(done, time.perf_counter() - clock, rows)
    markdown_artifact(summary_markdown(report), key="backtest")
    get_run_logger().info(
        "backtest %s..%s: %d days in %.1f s", start, end, done.days, report.seconds
    )
    return report
