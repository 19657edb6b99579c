"""Today's plan: every follow-up due (and every one deferred to today) gets its fate as a row in
`message_ledger`: suppressed (no consent, opted out, no contact, deferred too long), held out (the
experiment's control group that gets nothing), deferred (over a frequency cap or its owner's
capacity, to the next allowed day), or planned (`dry_run`, or `pending` for dispatch).

Re-planning a date is idempotent: the decisions an earlier run made for that date and that were
not sent are made again from the same inputs; a message keeps its idempotency key for life.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import yaml

from flows.atomic import transaction
from flows.ledger import ensure_tables, idempotency_key, insert, known_keys, message_id
from flows.planning import candidates as inputs
from flows.planning.decide import Day, decide
from flows.planning.policy import Policy
from flows.rundate import RunDate
from flows.settings import PROJECT_ROOT

DIFF_DDL = """
create table if not exists plan_diff (
    run_id varchar not null,
    run_at timestamptz not null,
    as_of_date date not null,
    playbook varchar not null,
    made_due bigint not null,
    caught_up bigint not null,
    carried bigint not null,
    new bigint not null,
    planned bigint not null,
    deferred bigint not null,
    suppressed bigint not null,
    held_out bigint not null,
    exited bigint not null,
    dropped bigint not null
)
"""
# per run and playbook: the follow-ups the run made due (`caught_up`: of those, due on an earlier
# date than the run's, in its catch-up) and those deferred to the day and carried back; their
# fates (made_due + carried = planned + deferred + suppressed + held_out + exited); `new`: the
# follow-ups new to the ledger; `dropped`: a re-run's earlier decisions it no longer makes
DIFF_COUNTS = (
    "made_due", "caught_up", "carried", "new",
    "planned", "deferred", "suppressed", "held_out", "exited", "dropped",
)  # fmt: skip
FATES = ("planned", "deferred", "suppressed", "held_out", "exited")

# Every plan that completed, written in its own transaction: the watermark a run's catch-up
# starts after (docs/schedule-rules.md §4).
RUNS_DDL = """
create table if not exists plan_runs (
    run_id varchar primary key,
    as_of_date date not null,
    kind varchar not null,  -- plan (a day's), intraday
    catch_up_from date not null,
    dry_run boolean not null,
    run_at timestamptz not null
)
"""
# the catch-up goes back at most this many days (dbt var planning_lookback_days, the same)
LOOKBACK_DAYS = int(
    yaml.safe_load((PROJECT_ROOT / "dbt_project" / "dbt_project.yml").read_text(encoding="utf-8"))[
        "vars"
    ]["planning_lookback_days"]
)


def catch_up_from(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dt.date:
    """The first date a run for `as_of` makes follow-ups due on: the day after the last
    completed plan for an earlier date (a database planned before `plan_runs` existed: the
    ledger's last day), at most `LOOKBACK_DAYS` back; `as_of` itself when nothing was planned
    before it."""
    con.execute(RUNS_DDL)
    [(last, runs)] = con.execute(
        "select max(as_of_date) filter (where kind = 'plan' and as_of_date < ?), count(*) "
        "from plan_runs",
        [as_of],
    ).fetchall()
    if not runs:
        [(last,)] = con.execute(
            "select max(decided_on) from message_ledger where origin = 'plan' and decided_on < ?",
            [as_of],
        ).fetchall()
    if last is None:
        return as_of
    return max(last + dt.timedelta(days=1), as_of - dt.timedelta(days=LOOKBACK_DAYS))


@dataclass
class PlanReport:
    as_of: dt.date
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)  # status -> n
    diff: list[dict] = field(default_factory=list)  # per playbook
    catch_up_from: dt.date | None = None  # the first due date the run made due

    def totals(self) -> dict[str, int]:
        """`DIFF_COUNTS` over every playbook."""
        return {k: sum(row[k] for row in self.diff) for k in DIFF_COUNTS}

    def balance(self) -> str:
        """Where every follow-up of the run went, in one line that adds up."""
        totals = self.totals()
        fates = " + ".join(f"{k.replace('_', ' ')} {totals[k]:,}" for k in FATES)
        since = ""
        if self.catch_up_from and self.catch_up_from < self.as_of:
            since = f" since {self.catch_up_from}"
        return (
            f"made due {totals['made_due']:,} (caught up{since} {totals['caught_up']:,}) + "
            f"carried back {totals['carried']:,} = {fates}"
        )


def plan(db_path: Path, run: RunDate, *, dry_run: bool, policy: Policy | None = None) -> PlanReport:
    """Decide the follow-ups the run made due (its catch-up: everything due since the last
    completed plan) and those deferred to today, and write them to the ledger with the run in
    `plan_runs` and its counts in `plan_diff`, in one transaction."""
    policy = policy or Policy.load()
    as_of, start = run.day, run.start
    record = _Run(as_of, "plan", dry_run)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = ?", [run.business_tz])
        _ensure_plan_tables(con)
        with transaction(con):
            record.catch_up_from = catch_up_from(con, as_of)
            candidates = inputs.candidates(con, as_of, start)
            keys = _keys(candidates)
            # the ledger's rows for today's candidates, not every key it holds (it grows every day)
            known = known_keys(con, keys)
            # Re-planning a date: this date's unsent decisions are made again (the morning's: an
            # intraday run's, made later in the day, stand).
            replanned = (
                "where decided_on = ? and attempts = 0 and status <> 'sent' and origin = 'plan' "
                "and created_at <= ?"
            )
            earlier = con.execute(
                f"select idempotency_key, playbook, status from message_ledger {replanned}",
                [as_of, start],
            ).fetchall()
            con.execute(f"delete from message_ledger {replanned}", [as_of, start])
            # A follow-up already decided on another day, or sent, is not decided again.
            kept = known - {key for key, _, _ in earlier}
            fresh = [c or k not in kept for c, k in zip(candidates["carried"], keys, strict=True)]
            candidates = candidates.filter(pl.Series(fresh, dtype=pl.Boolean))
            history = inputs.history(con, as_of, _longest_cap(policy))
            stopped = inputs.stopped(con, as_of)
            decisions = decide(
                candidates,
                history,
                inputs.staff(con),
                inputs.opt_outs(con, start, candidates["customer_id"]),
                Day(as_of, start, policy, dry_run),
                stopped=stopped,
                # the tasks handed out today that this run does not decide again (sent, or an
                # intraday run's) take their owners' room
                tasks_today=inputs.tasks_today(con, as_of),
            )
            rows = _ledger_rows(decisions, as_of, start)
            con.execute(
                "delete from message_ledger where idempotency_key in (select unnest(?))",
                [[r["idempotency_key"] for r in rows]],
            )
            insert(con, "message_ledger", [_without_carried(r) for r in rows])
            report = _report(record, rows, earlier, known)
            _record_run(con, record, report)
    finally:
        con.close()
    return report


def plan_intraday(
    db_path: Path,
    run: RunDate,
    playbooks: list[str],
    *,
    dry_run: bool,
    policy: Policy | None = None,
) -> PlanReport:
    """A run during the day (`followup intraday`): the follow-ups of `playbooks` due today that
    no run has decided yet (a lead that came in at 14:05) are decided as of the run's moment, in
    one transaction. The day's earlier decisions stand, and count: the caps see today's contacts,
    owners' capacity today's tasks, and an opt-out counts up to the moment."""
    policy = policy or Policy.load()
    as_of, at = run.day, run.cutoff
    record = _Run(as_of, "intraday", dry_run)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = ?", [run.business_tz])
        _ensure_plan_tables(con)
        with transaction(con):
            record.catch_up_from = catch_up_from(con, as_of)
            candidates = inputs.candidates(con, as_of, at, playbooks)
            keys = _keys(candidates)
            known = known_keys(con, keys)
            fresh = pl.Series([k not in known for k in keys], dtype=pl.Boolean)
            candidates = candidates.filter(fresh)
            history = inputs.history(con, as_of, _longest_cap(policy), today=True)
            stopped = inputs.stopped(con, as_of)
            decisions = decide(
                candidates,
                history,
                inputs.staff(con),
                inputs.opt_outs(con, at, candidates["customer_id"], "staging.stg_raw__events"),
                Day(as_of, at, policy, dry_run),
                stopped=stopped,
                tasks_today=inputs.tasks_today(con, as_of),
            )
            rows = _ledger_rows(decisions, as_of, at)
            insert(con, "message_ledger", [_without_carried(r) for r in rows])
            report = _report(record, rows, [], known)
            _record_run(con, record, report)
    finally:
        con.close()
    return report


@dataclass
class _Run:
    as_of: dt.date
    kind: str  # plan, intraday
    dry_run: bool
    catch_up_from: dt.date | None = None
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    run_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _ensure_plan_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_tables(con)
    con.execute(RUNS_DDL)
    # a plan_diff from before it had a row set per run is kept aside, once
    if (
        "run_id"
        not in {
            r[0]
            for r in con.execute(
                "select column_name from duckdb_columns() where table_name = 'plan_diff'"
            ).fetchall()
        }
        and con.execute(
            "select count(*) from duckdb_tables() where table_name = 'plan_diff'"
        ).fetchone()[0]
    ):
        con.execute("alter table plan_diff rename to plan_diff_by_date")
    con.execute(DIFF_DDL)


def _record_run(con: duckdb.DuckDBPyConnection, run: _Run, report: PlanReport) -> None:
    """The run in `plan_runs` (the watermark) and its counts in `plan_diff`, in the plan's
    transaction."""
    con.execute(
        "insert into plan_runs values (?, ?, ?, ?, ?, ?)",
        [run.run_id, run.as_of, run.kind, run.catch_up_from, run.dry_run, run.run_at],
    )
    if report.diff:
        diff = pl.DataFrame(report.diff, infer_schema_length=None)  # noqa: F841
        con.execute("insert into plan_diff by name select * from diff")


def _keys(candidates: pl.DataFrame) -> list[str]:
    """Each candidate's idempotency key, in the frame's order."""
    return [
        idempotency_key(*key)
        for key in candidates.select("playbook", "step", "customer_id", "anchor_id").iter_rows()
    ]


def _longest_cap(policy: Policy) -> int:
    """The longest window any cap counts over, in days."""
    windows = [
        c.days for caps in (*policy.caps.values(), *policy.channel_caps.values()) for c in caps
    ]
    return max(windows, default=1)


def _ledger_rows(decisions: list[dict], as_of: dt.date, start: dt.datetime) -> list[dict]:
    rows = []
    for d in decisions:
        key = idempotency_key(d["playbook"], d["step"], d["customer_id"], d["anchor_id"])
        rows.append(
            {
                "message_id": message_id(key),
                "idempotency_key": key,
                "customer_id": d["customer_id"],
                "playbook": d["playbook"],
                "step": d["step"],
                "anchor_id": d["anchor_id"],
                "variant": d["variant"],
                "channel": d["channel"],
                "purpose": d["purpose"],
                "priority": d["priority"],
                "owner_id": d["owner_id"],
                "first_due_date": d["first_due_date"],
                "planned_for": d["planned_for"],
                "decided_on": as_of,
                "due_at": d["due_at"],
                "anchor_at": d.get("anchor_at"),
                "status": d["status"],
                "reason": d["reason"],
                "attempts": 0,
                "created_at": start,
                "updated_at": start,
                "carried": d["carried"],
            }
        )
    return rows


def _without_carried(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "carried"}


def _report(run: _Run, rows: list[dict], earlier: list, known: set[str]) -> PlanReport:
    counts: dict[str, int] = defaultdict(int)
    per: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    now_keys = {r["idempotency_key"] for r in rows}
    for r in rows:
        counts[r["status"]] += 1
        p = per[r["playbook"]]
        if r["carried"]:
            p["carried"] += 1
        else:
            p["made_due"] += 1
            p["caught_up"] += r["first_due_date"] < run.as_of
        p["new"] += r["idempotency_key"] not in known
        p[{"dry_run": "planned", "pending": "planned"}.get(r["status"], r["status"])] += 1
    for key, playbook, _status in earlier:
        if key not in now_keys:
            per[playbook]["dropped"] += 1
    diff = [
        {
            "run_id": run.run_id,
            "run_at": run.run_at,
            "as_of_date": run.as_of,
            "playbook": playbook,
            **{k: int(v.get(k, 0)) for k in DIFF_COUNTS},
        }
        for playbook, v in sorted(per.items())
    ]
    return PlanReport(
        as_of=run.as_of,
        dry_run=run.dry_run,
        counts=dict(counts),
        diff=diff,
        catch_up_from=run.catch_up_from,
    )
