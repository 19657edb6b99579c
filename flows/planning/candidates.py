"""What a plan decides on, read from the database: the follow-ups the run made due and the
deferred ones back today (`CANDIDATES`), with their customers' contacts, consent, opt-outs, the
contacts the caps count, the staff and the tasks they already have, and the escalations' stops."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import duckdb
import polars as pl

from flows.planning.declarations import TASK_CHANNELS

CONTACT_STATUSES = ("sent", "pending", "dry_run")  # a contact, for the caps


# The follow-ups the run made due (`followups_due`: its catch-up, each with the rule that removed
# it, if one did) and the deferred ones back today, with what the decisions read about their
# customers (`$as_of`, `$start`, `$playbooks`). A deferred follow-up is judged again as of the
# run's start by the exit and audience rules of followups_due (docs/schedule-rules.md §5, §6;
# not `late_by`: it was in time when first decided). The backtest reads which columns it needs.
CANDIDATES = """
with due as (
    select customer_id, playbook, step, anchor_id, anchor_at, variant, channel, purpose,
        priority, owner_id, due_at, fallback_channels, is_task, due_date as first_due_date,
        false as carried, removed_by, removed_reason
    from followups_due
    where as_of_date = $as_of
        and ($playbooks is null or list_contains($playbooks, playbook))
),
back as (
    select l.*
    from message_ledger l
    where $playbooks is null and (
        -- deferred to today (or earlier) by an earlier day's run
        (l.status = 'deferred' and l.planned_for <= $as_of and l.decided_on < $as_of)
        -- or carried into today by an earlier run of today, now made again
        or (
            l.decided_on = $as_of and l.first_due_date < $as_of
            and l.attempts = 0 and l.status <> 'sent' and l.origin = 'plan'
        )
    )
    -- what the run made due again is decided as made due (a re-run's caught-up follow-ups)
    and not exists (
        select 1 from due d
        where d.customer_id = l.customer_id and d.playbook = l.playbook
            and d.step = l.step and d.anchor_id = l.anchor_id
    )
),
replies as (  -- a row loaded without its customer is its message's
    select coalesce(f.customer_id, m.customer_id) as customer_id,
        max(f.responded_at) as last_reply_at
    from raw.feedback f left join message_ledger m on m.message_id = f.message_id
    where f.response_type = 'reply' and f.responded_at < $start
    group by all
),
rechecked as (
    select l.*, s.fallback_channels, s.is_task,
        case
            when not coalesce(s.audience_customer_type is null
                or s.audience_customer_type like '%,' || c.customer_type || ',%', false)
                then 'audience: customer_type ' || coalesce(c.customer_type, 'missing')
            when not coalesce(s.audience_industry is null
                or s.audience_industry like '%,' || c.industry || ',%', false)
                then 'audience: industry ' || coalesce(c.industry, 'missing')
            when not coalesce(s.audience_tier is null
                or s.audience_tier like '%,' || r.tier || ',%', false)
                then 'audience: tier ' || coalesce(r.tier, 'missing')
            when not coalesce(s.audience_value_tier is null
                or s.audience_value_tier like '%,' || r.value_tier || ',%', false)
                then 'audience: value_tier ' || coalesce(r.value_tier, 'missing')
            when s.audience_tags_any is not null and not exists (
                select 1 from customer_tags t
                where t.customer_id = l.customer_id
                    and s.audience_tags_any like '%,' || t.tag || ',%'
            ) then 'audience: none of the tags_any'
            when s.audience_tags_none is not null and exists (
                select 1 from customer_tags t
                where t.customer_id = l.customer_id
                    and s.audience_tags_none like '%,' || t.tag || ',%'
            ) then 'audience: a tag of tags_none'
        end as audience_reason,
        case
            when s.exit_ordered_again and c.last_paid_order_at > l.anchor_at
                then 'ordered again on ' || strftime(c.last_paid_order_at, '%Y-%m-%d')
            when s.exit_replied and p.last_reply_at > l.anchor_at
                then 'replied on ' || strftime(p.last_reply_at, '%Y-%m-%d')
            when s.exit_ticket_reopened and a.reopened_at < $start
                then 'ticket reopened on ' || strftime(a.reopened_at, '%Y-%m-%d')
        end as exit_reason
    from back l
    left join config.playbook_steps s on l.playbook = s.playbook and l.step = s.step
    left join customer_360 c on l.customer_id = c.customer_id
    left join customer_rfm r on l.customer_id = r.customer_id
    left join replies p on l.customer_id = p.customer_id
    left join intermediate.int_followup_anchors a
        on l.customer_id = a.customer_id and l.anchor_id = a.anchor_id
            and a.reopened_at is not null
),
carried as (
    select customer_id, playbook, step, anchor_id, anchor_at, variant, channel, purpose,
        priority, owner_id,
        due_at + to_days(cast(datediff('day', decided_on, $as_of) as integer)),
        fallback_channels, is_task, first_due_date, true as carried,
        case
            when audience_reason is not null then 'audience'
            when exit_reason is not null then 'exit'
        end as removed_by,
        coalesce(audience_reason, exit_reason) as removed_reason
    from rechecked
),
both_kinds as (
    select * from due
    union all
    select * from carried
)
select
    b.*,
    c.phone is not null as has_phone,
    c.email is not null as has_email,
    c.has_consent_sms as consent_sms,
    c.has_consent_email as consent_email,
    c.has_consent_phone as consent_phone,
    c.industry
from both_kinds b
left join customer_360 c on b.customer_id = c.customer_id
"""


def candidates(
    con: duckdb.DuckDBPyConnection,
    as_of: dt.date,
    start: dt.datetime,
    playbooks: list[str] | None = None,
) -> pl.DataFrame:
    """The follow-ups the run made due, and the ledger's deferred ones that come back today,
    with what the decisions need to know about their customers. With `playbooks` (an intraday
    run), their due follow-ups only: the morning brought back the deferred ones."""
    params = {"as_of": as_of, "start": start, "playbooks": playbooks}
    return con.sql(CANDIDATES, params=params).pl()


# A reply that is one of these words unsubscribes from the channel it answers (回复TD退订).
UNSUBSCRIBE_WORDS = ("T", "TD", "退订")


def opt_outs_sql(con: duckdb.DuckDBPyConnection, events: str | None, cutoff: str) -> str | None:
    """Every opt-out as rows (customer_id, scope, opted_at), scope a channel or 'all': the
    `opt_out` events of `events` (a relation with `opt_out_channel`), and the opt-out answers to
    our messages (feedback `opt_out`, or a reply that is `T`, `TD` or `退订`) for that
    message's channel; each
    whose time passes `cutoff` (e.g. `< $start`). None when there is nothing to read. The plan
    and dispatch both read opt-outs through this."""
    sources = []
    if events is not None:
        sources.append(
            "select customer_id, coalesce(lower(opt_out_channel), 'all') as scope, "
            f"occurred_at as opted_at from {events} "
            f"where event_type = 'opt_out' and occurred_at {cutoff}"
        )
    if con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'raw' and table_name = 'feedback'"
    ).fetchone()[0]:
        sources.append(
            "select coalesce(f.customer_id, l.customer_id), coalesce(l.channel, 'all'), "
            "f.responded_at "
            "from raw.feedback f left join message_ledger l on f.message_id = l.message_id "
            f"where (f.response_type = 'opt_out' or (f.response_type = 'reply' and "
            f"upper(trim(f.text)) in {UNSUBSCRIBE_WORDS})) and f.responded_at {cutoff}"
        )
    return " union all ".join(sources) or None


def opt_outs(
    con: duckdb.DuckDBPyConnection,
    start: dt.datetime,
    customers: pl.Series,
    events: str = "fct_events",
) -> dict[str, dict[str, dt.datetime]]:
    """customer -> channel (or 'all') -> the first opt-out before `start`, from `events` (the
    morning's models, or for an intraday run the raw events as loaded since), for `customers`
    (the candidates': the rest do not matter to the day's decisions)."""
    opted = opt_outs_sql(con, events, "< $start")
    rows = con.execute(
        f"select customer_id, scope, min(opted_at) from ({opted}) "
        "where customer_id in (select unnest($customers)) group by all",
        {"start": start, "customers": customers.unique().to_list()},
    ).fetchall()
    out: dict[str, dict[str, dt.datetime]] = defaultdict(dict)
    for customer, channel, at in rows:
        out[customer][channel] = at
    return out


def history(
    con: duckdb.DuckDBPyConnection, as_of: dt.date, days: int, *, today: bool = False
) -> pl.DataFrame:
    """Contacts made or planned on earlier days, within the longest cap window; `today`: and
    those already planned for today (an intraday run keeps the morning's decisions)."""
    return con.sql(
        f"""
        select customer_id, purpose, channel, planned_for
        from message_ledger
        where status in {CONTACT_STATUSES}
            and (decided_on < $as_of or attempts > 0 or $today)
            and planned_for > $as_of - to_days($days) and planned_for <= $as_of
        """,
        params={"as_of": as_of, "days": days, "today": today},
    ).pl()


def tasks_today(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dict[str, int]:
    """Tasks already given to each owner for the day (an intraday run adds to them)."""
    return dict(
        con.execute(
            f"""
            select owner_id, count(*) from message_ledger
            where status in {CONTACT_STATUSES} and planned_for = ? and owner_id is not null
                and channel in {TASK_CHANNELS}
            group by owner_id
            """,
            [as_of],
        ).fetchall()
    )


def staff(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(
        "select staff_id, role, industries, daily_capacity "
        "from staging.stg_raw__staff order by staff_id"
    ).pl()


def stopped(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dict[tuple[str, str], str]:
    """(customer, playbook) -> tier: the escalations' `stop` actions up to the day."""
    return {
        (customer, playbook): tier
        for customer, playbook, tier in con.execute(
            "select customer_id, playbook, coalesce(min(tier), 'unknown tier') "
            "from escalations where action = 'stop' and as_of_date <= ? group by all",
            [as_of],
        ).fetchall()
    }
