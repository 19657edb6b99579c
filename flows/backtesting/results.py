"""What a replay found, as tables (computed in the scratch database, then written to the live one
in one transaction, replacing the previous backtest's):

- `backtest_daily`: day x playbook x step x channel: due, carried in from an earlier deferral,
  planned, deferred (by a cap, by owners' capacity), suppressed, held out;
- `backtest_owner_load`: day x owner: call and visit tasks planned against the daily capacity,
  and those the capacity pushed to a later day;
- `backtest_collisions`: day x playbook x step x the playbook whose contact filled the cap;
- `backtest_outcomes`: each would-be message (planned or held out) and what its customer did
  anyway within the playbook's attribution window: ordered, complained, opted out;
- `backtest_decisions`: every decision of every replayed day, as the ledger would have had it
  (a follow-up deferred on one day is decided again on a later one);
- `backtest_due`: the replayed days' `followups_due` rows;
- `backtest_runs`: one row, the backtest's range, playbooks and timings.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb

from flows.atomic import transaction
from flows.planning.declarations import TASK_CHANNELS

TABLES = (
    "backtest_decisions",
    "backtest_daily",
    "backtest_owner_load",
    "backtest_collisions",
    "backtest_outcomes",
    "backtest_due",
    "backtest_runs",
)

_TASKS = "(" + ", ".join(f"'{c}'" for c in TASK_CHANNELS) + ")"

QUERIES = {
    "backtest_decisions": """
        select
            decided_on as day, customer_id, playbook, step, anchor_id, variant, channel,
            purpose, priority, owner_id, due_at, planned_for, status, reason, message_id,
            first_due_date < decided_on as carried, origin
        from bt_decisions
        order by day, playbook, step, customer_id, anchor_id
    """,
    "backtest_daily": """
        select
            decided_on as day, playbook, step, channel,
            playbook in (select unnest($focus)) as focus,
            count(*) as due,
            count(*) filter (where first_due_date < decided_on) as carried,
            count(*) filter (where status = 'dry_run') as planned,
            count(*) filter (where status = 'deferred') as deferred,
            count(*) filter (where status = 'deferred' and reason like 'cap:%') as deferred_by_cap,
            count(*) filter (where status = 'deferred' and reason like '%capacity%')
                as deferred_by_capacity,
            count(*) filter (where status = 'suppressed') as suppressed,
            count(*) filter (where status = 'held_out') as held_out
        from bt_decisions
        where origin = 'plan'
        group by all
        order by day, playbook, step, channel
    """,
    "backtest_owner_load": f"""
        with tasks as (
            select decided_on as day, coalesce(owner_id, '(unassigned)') as owner_id,
                count(*) filter (where status = 'dry_run') as tasks,
                count(*) filter (where status = 'deferred' and reason like '%capacity%')
                    as pushed_for_capacity
            from bt_decisions
            where origin = 'plan' and channel in {_TASKS}
            group by all
        )
        select tasks.*, staff.daily_capacity as capacity,
            tasks.pushed_for_capacity > 0
                or tasks.tasks > coalesce(staff.daily_capacity, tasks.tasks) as overloaded
        from tasks
        left join raw.staff on tasks.owner_id = staff.staff_id
        order by day, owner_id
    """,
    "backtest_collisions": """
        with blocked as (
            select decided_on as day, customer_id, playbook, step, idempotency_key,
                regexp_extract(reason, '^cap: (\\S+) at most', 1) as scope,
                cast(regexp_extract(reason, 'per (\\d+) days', 1) as integer) as days
            from bt_decisions
            where status = 'deferred' and reason like 'cap:%' and origin = 'plan'
        ),
        contacts as (
            select customer_id, playbook, purpose, channel, planned_for, decided_on
            from message_ledger
            where status in ('sent', 'pending', 'dry_run')
        ),
        blame as (
            -- the latest contact inside the cap's window filled it
            select blocked.day, blocked.playbook, blocked.step, blocked.scope,
                arg_max(contacts.playbook, contacts.planned_for) as blocked_by
            from blocked
            join contacts
                on contacts.customer_id = blocked.customer_id
                and blocked.scope in (contacts.purpose, contacts.channel)
                and contacts.planned_for > blocked.day - to_days(blocked.days)
                and contacts.planned_for <= blocked.day
            group by blocked.day, blocked.playbook, blocked.step, blocked.scope,
                blocked.idempotency_key
        )
        select day, playbook, step, blocked_by, scope, count(*) as collisions
        from blame
        group by all
        order by day, playbook, step, blocked_by
    """,
    "backtest_outcomes": """
        with messages as (
            select l.*, coalesce(s.attribution_days, 14) as attribution_days
            from message_ledger l
            left join config.playbook_steps s on l.playbook = s.playbook and l.step = s.step
            where l.origin = 'plan' and l.decided_on between $start and $end
                and l.status in ('dry_run', 'held_out')
        ),
        data_end as (
            select greatest(
                (select max(ordered_at) from fct_orders), (select max(occurred_at) from fct_events)
            ) as end_at
        ),
        windows as (
            select messages.*, due_at + to_days(attribution_days) as window_end
            from messages
        ),
        orders as (
            select w.message_id, count(*) as orders, sum(o.amount) as amount
            from windows w
            join fct_orders o
                on o.customer_id = w.customer_id and o.is_paid
                and o.ordered_at > w.due_at and o.ordered_at <= w.window_end
            group by w.message_id
        ),
        events as (
            select w.message_id,
                count(*) filter (where e.event_type = 'complaint') as complaints,
                count(*) filter (where e.event_type = 'opt_out') as opt_outs
            from windows w
            join fct_events e
                on e.customer_id = w.customer_id
                and e.event_type in ('complaint', 'opt_out')
                and e.occurred_at > w.due_at and e.occurred_at <= w.window_end
            group by w.message_id
        )
        select
            w.message_id, w.decided_on as day, w.customer_id, w.playbook, w.step, w.variant,
            w.channel, w.status = 'dry_run' as would_send, w.due_at, w.attribution_days,
            w.window_end, w.window_end <= (select end_at from data_end) as window_complete,
            coalesce(orders.orders, 0) > 0 as ordered,
            coalesce(orders.amount, 0) as order_amount,
            coalesce(events.complaints, 0) > 0 as complained,
            coalesce(events.opt_outs, 0) > 0 as opted_out,
            w.playbook in (select unnest($focus)) as focus
        from windows w
        left join orders on w.message_id = orders.message_id
        left join events on w.message_id = events.message_id
        order by day, playbook, step, customer_id
    """,
    "backtest_due": """
        select * from followups_due where as_of_date between $start and $end
        order by as_of_date, playbook, step, customer_id, anchor_id
    """,
}

PARAMS = {
    "backtest_decisions": (),
    "backtest_daily": ("focus",),
    "backtest_owner_load": (),
    "backtest_collisions": (),
    "backtest_outcomes": ("start", "end", "focus"),
    "backtest_due": ("start", "end"),
}


def compute(scratch: Path, replay, source: str, business_tz: str) -> None:
    """The result tables, in the scratch database."""
    values = {"start": replay.start, "end": replay.end, "focus": replay.focus or [""]}
    con = duckdb.connect(str(scratch))
    try:
        con.execute("set TimeZone = ?", [business_tz])
        with transaction(con):
            for table, sql in QUERIES.items():
                params = {name: values[name] for name in PARAMS[table]}
                con.execute(f"create or replace table {table} as {sql}", params)
            con.execute(
                """
                create or replace table backtest_runs as select
                    $ran_at::timestamptz as ran_at, $start::date as from_date,
                    $end::date as to_date,
                    $days as days, $playbooks as playbooks, $focus as focus, $source as source,
                    $seconds as seconds, $counts as decisions
                """,
                {
                    "ran_at": dt.datetime.now(dt.UTC),
                    "start": replay.start,
                    "end": replay.end,
                    "days": replay.days,
                    "playbooks": replay.playbooks,
                    "focus": replay.focus,
                    "source": source,
                    "seconds": json.dumps({k: round(v, 2) for k, v in replay.seconds.items()}),
                    "counts": json.dumps(replay.counts, sort_keys=True),
                },
            )
    finally:
        con.close()


def publish(scratch: Path, live_db: Path) -> None:
    """Replace the live database's backtest tables with the scratch database's, at once."""
    con = duckdb.connect(str(live_db))
    try:
        con.execute(f"attach '{scratch.resolve()}' as scratch (read_only)")
        with transaction(con):
            for table in TABLES:
                con.execute(
                    f"create or replace table main.{table} as select * from scratch.{table}"
                )
        con.execute("detach scratch")
    finally:
        con.close()
