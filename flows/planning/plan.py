"""Today's plan: every follow-up due (and every one deferred to today) gets its fate as a row in
`message_ledger`: suppressed (no consent, opted out, no contact, deferred too long), held out (the
experiment's control group that gets nothing), deferred (over a frequency cap or its owner's
capacity, to the next allowed day), or planned (`dry_run`, or `pending` for dispatch).

Re-planning a date is idempotent: the decisions an earlier run made for that date and that were
not sent are made again from the same inputs; a message keeps its idempotency key for life.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import yaml

from flows.atomic import transaction
from flows.ledger import ensure_tables, insert, known_keys
from flows.planning import calendar
from flows.planning.declarations import PLAYBOOK_DIR, TASK_CHANNELS
from flows.settings import PROJECT_ROOT

CONTACT_STATUSES = ("sent", "pending", "dry_run")  # a contact, for the caps
_NAMESPACE = uuid.UUID("0f6b1a52-52c1-4a8e-9b66-6f6c3e0a4d11")

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


@dataclass(frozen=True)
class Cap:
    max: int
    days: int


@dataclass(frozen=True)
class Policy:
    caps: dict[str, tuple[Cap, ...]]
    channel_caps: dict[str, tuple[Cap, ...]]
    consent: dict[str, str]
    max_deferral_days: int = 14
    assign_roles: tuple[str, ...] = ("sales", "service")
    specialist_role: str = "service"  # who gets an escalation's 1-to-1 task (escalation.py)

    @classmethod
    def load(cls, path: Path = PLAYBOOK_DIR / "_policy.yml") -> Policy:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

        def caps(block: dict) -> dict[str, tuple[Cap, ...]]:
            out = {
                k: tuple(Cap(int(c["max"]), int(c["days"])) for c in v) for k, v in block.items()
            }
            for name, limits in out.items():
                if any(cap.max < 1 or cap.days < 1 for cap in limits):
                    raise ValueError(f"{path}: cap {name}: max and days must be at least 1")
            return out

        return cls(
            caps=caps(data.get("caps", {})),
            channel_caps=caps(data.get("channel_caps", {})),
            consent=dict(data.get("consent", {})),
            max_deferral_days=int(data.get("max_deferral_days", 14)),
            assign_roles=tuple(data.get("assign_roles", ("sales", "service"))),
            specialist_role=str(data.get("specialist_role", "service")),
        )


def idempotency_key(playbook: str, step: str, customer_id: str, anchor_id: str) -> str:
    raw = "\x1f".join((playbook, step, customer_id, anchor_id))
    return "fu1-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def message_id(key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, key))


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
replies as (
    select customer_id, max(responded_at) as last_reply_at
    from raw.feedback
    where response_type = 'reply' and responded_at < $start
    group by customer_id
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


def _candidates(
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


def opt_outs_sql(con: duckdb.DuckDBPyConnection, events: str | None, cutoff: str) -> str | None:
    """Every opt-out as rows (customer_id, scope, opted_at), scope a channel or 'all': the
    `opt_out` events of `events` (a relation with `opt_out_channel`), and the opt-out answers to
    our messages (feedback `opt_out`, a "T" reply to an SMS) for that message's channel; each
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
            "select f.customer_id, coalesce(l.channel, 'all'), f.responded_at "
            "from raw.feedback f left join message_ledger l on f.message_id = l.message_id "
            f"where f.response_type = 'opt_out' and f.responded_at {cutoff}"
        )
    return " union all ".join(sources) or None


def _opt_outs(
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


def _history(
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


def _tasks_today(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dict[str, int]:
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


def _staff(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(
        "select staff_id, role, industries, daily_capacity "
        "from staging.stg_raw__staff order by staff_id"
    ).pl()


class _Caps:
    """Contacts per customer by day, checked against rolling-window caps."""

    def __init__(self, history: pl.DataFrame, policy: Policy) -> None:
        self.policy = policy
        self.by_purpose: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
        self.by_channel: dict[tuple[str, str], list[dt.date]] = defaultdict(list)
        for row in history.iter_rows(named=True):
            self.add(row["customer_id"], row["purpose"], row["channel"], row["planned_for"])

    def add(self, customer: str, purpose: str, channel: str, day: dt.date) -> None:
        self.by_purpose[(customer, purpose)].append(day)
        self.by_channel[(customer, channel)].append(day)

    def _over(self, days: list[dt.date], caps, day: dt.date) -> Cap | None:
        for cap in caps:
            start = day - dt.timedelta(days=cap.days - 1)
            if sum(1 for d in days if start <= d <= day) >= cap.max:
                return cap
        return None

    def blocking(self, customer: str, purpose: str, channel: str, day: dt.date) -> str | None:
        cap = self._over(
            self.by_purpose[(customer, purpose)], self.policy.caps.get(purpose, ()), day
        )
        if cap:
            return f"cap: {purpose} at most {cap.max} per {cap.days} days"
        cap = self._over(
            self.by_channel[(customer, channel)], self.policy.channel_caps.get(channel, ()), day
        )
        if cap:
            return f"cap: {channel} at most {cap.max} per {cap.days} days"
        return None

    def next_allowed(self, customer: str, purpose: str, channel: str, day: dt.date) -> dt.date:
        candidate = day + dt.timedelta(days=1)
        while self.blocking(customer, purpose, channel, candidate):
            candidate += dt.timedelta(days=1)
        return candidate


class _Owners:
    """Daily capacity per owner, and round-robin assignment by industry for unowned customers."""

    def __init__(self, staff: pl.DataFrame, policy: Policy) -> None:
        # a staff member without a daily_capacity is not limited
        self.capacity = {
            r["staff_id"]: math.inf if r["daily_capacity"] is None else r["daily_capacity"]
            for r in staff.iter_rows(named=True)
        }
        self.used: dict[str, int] = defaultdict(int)
        eligible = staff.filter(pl.col("role").is_in(list(policy.assign_roles)))
        self.by_industry: dict[str, list[str]] = defaultdict(list)
        self.anyone = eligible["staff_id"].to_list()
        for row in eligible.iter_rows(named=True):
            for industry in (row["industries"] or "").split(";"):
                if industry.strip():
                    self.by_industry[industry.strip()].append(row["staff_id"])
        self.turn: dict[str, int] = defaultdict(int)

    def preload(self, used: dict[str, int]) -> None:
        """Tasks an owner already has for the day; each round-robin carries on after the
        colleagues those went to."""
        for staff_id, n in used.items():
            self.used[staff_id] += n
        for industry, pool in self.by_industry.items():
            self.turn[industry] = sum(self.used[s] for s in pool) % len(pool)
        if self.anyone:
            self.turn[""] = sum(self.used[s] for s in self.anyone) % len(self.anyone)

    def take(self, owner: str | None, industry: str | None) -> tuple[str | None, str | None]:
        """(owner, None) when someone has room today, else (owner or None, reason)."""
        if owner is not None:
            if owner not in self.capacity:
                return owner, None  # an owner missing from staff: no capacity known, trust them
            if self.used[owner] < self.capacity[owner]:
                self.used[owner] += 1
                return owner, None
            return owner, f"owner {owner} at daily capacity {self.capacity[owner]}"
        pool = self.by_industry.get(industry or "", []) or self.anyone
        if not pool:
            return None, "no staff to assign the task to"
        key = industry or ""
        for i in range(len(pool)):
            staff_id = pool[(self.turn[key] + i) % len(pool)]
            if self.used[staff_id] < self.capacity.get(staff_id, 0):
                self.used[staff_id] += 1
                self.turn[key] = (self.turn[key] + i + 1) % len(pool)
                return staff_id, None
        return None, f"every {industry or 'assignable'} owner at daily capacity"


def _channel(
    row: dict, policy: Policy, opt_outs: dict, start: dt.datetime
) -> tuple[str | None, str]:
    """The first of the step's channel and its fallbacks that may reach the customer, or why
    none may."""
    fallbacks = [c.strip() for c in (row["fallback_channels"] or "").split(",") if c.strip()]
    channels = [row["channel"], *fallbacks]
    reasons = []
    for channel in channels:
        why = _blocked(row, channel, policy, opt_outs.get(row["customer_id"], {}), start)
        if why is None:
            return channel, ""
        reasons.append(why)
    return None, "; ".join(reasons)


def _blocked(
    row: dict, channel: str, policy: Policy, opted: dict, start: dt.datetime
) -> str | None:
    for scope in (channel, "all"):
        at = opted.get(scope)
        if at is not None and at < start:
            return f"opted out of {scope} at {at.astimezone(start.tzinfo):%Y-%m-%d %H:%M}"
    if channel in ("sms", "call", "visit") and not row["has_phone"]:
        return f"no phone for {channel}"
    if channel == "email" and not row["has_email"]:
        return "no email"
    if row["purpose"] == "marketing":
        flag = policy.consent.get(channel)
        if flag and not row.get(flag):
            return f"no {flag} for marketing by {channel}"
    return None


def decide(
    candidates: pl.DataFrame,
    history: pl.DataFrame,
    staff: pl.DataFrame,
    opt_outs: dict,
    as_of: dt.date,
    start: dt.datetime,
    policy: Policy,
    dry_run: bool,
    stopped: dict[tuple[str, str], str] | None = None,
    tasks_today: dict[str, int] | None = None,
) -> list[dict]:
    """One decision per candidate, highest priority first within each customer's day.
    `stopped`: (customer_id, playbook) -> tier, the escalations' `stop` actions; `tasks_today`:
    owner -> tasks the day's earlier runs gave them."""
    stopped = stopped or {}
    # the caps of the day's customers only: the others' contacts cannot block a decision
    caps = _Caps(
        history.join(candidates.select("customer_id"), on="customer_id", how="semi"), policy
    )
    owners = _Owners(staff, policy)
    owners.preload(tasks_today or {})
    ordered = candidates.sort(
        ["priority", "due_at", "playbook", "step", "customer_id", "anchor_id"],
        descending=[True, False, False, False, False, False],
        nulls_last=True,
    )
    decisions = []
    for row in ordered.iter_rows(named=True):
        decision = dict(row)
        decision["planned_for"] = as_of
        late = (as_of - row["first_due_date"]).days
        channel, why = _channel(row, policy, opt_outs, start)
        decision["channel"] = channel or row["channel"]
        if row.get("removed_by") is not None:
            # a re-entry, audience or exit rule, or too late (followups_due): a row with its reason
            status = "exited" if row["removed_by"] == "exit" else "suppressed"
            decision.update(status=status, reason=row["removed_reason"])
        elif row["carried"] and late > policy.max_deferral_days:
            decision.update(status="suppressed", reason=f"deferred {late} days, beyond the limit")
        elif (row["customer_id"], row["playbook"]) in stopped:
            tier = stopped[(row["customer_id"], row["playbook"])]
            decision.update(status="suppressed", reason=f"stopped by escalation: {tier} missed")
        elif channel is None:
            decision.update(status="suppressed", reason=why)
        elif row["variant"] == "holdout":
            decision.update(status="held_out", reason="experiment holdout: no message")
        elif blocking := caps.blocking(row["customer_id"], row["purpose"], channel, as_of):
            later = caps.next_allowed(row["customer_id"], row["purpose"], channel, as_of)
            decision.update(status="deferred", reason=blocking, planned_for=later)
        else:
            reason = ""
            if channel in TASK_CHANNELS:
                owner, full = owners.take(row["owner_id"], row["industry"])
                decision["owner_id"] = owner
                if full:
                    later = calendar.next_workday(as_of + dt.timedelta(days=1))
                    decision.update(status="deferred", reason=full, planned_for=later)
                    decisions.append(decision)
                    continue
                if row["owner_id"] is None:
                    reason = f"assigned to {owner} by industry"
            caps.add(row["customer_id"], row["purpose"], channel, as_of)
            decision.update(status="dry_run" if dry_run else "pending", reason=reason or None)
        decisions.append(decision)
    return decisions


def plan(
    db_path: Path, as_of: dt.date, *, dry_run: bool, business_tz: str, policy: Policy | None = None
) -> PlanReport:
    """Decide the follow-ups the run made due (its catch-up: everything due since the last
    completed plan) and those deferred to today, and write them to the ledger with the run in
    `plan_runs` and its counts in `plan_diff`, in one transaction."""
    policy = policy or Policy.load()
    start = dt.datetime.combine(as_of, dt.time(), tzinfo=ZoneInfo(business_tz))
    run = _Run(as_of, "plan", dry_run)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = ?", [business_tz])
        _ensure_plan_tables(con)
        with transaction(con):
            run.catch_up_from = catch_up_from(con, as_of)
            candidates = _candidates(con, as_of, start)
            keys = _keys(candidates)
            # the ledger's rows for today's candidates (not every key it holds: 650k after a 90-day
            # backtest at 100k customers, read again every day)
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
            history = _history(con, as_of, _longest_cap(policy))
            stopped = _stopped(con, as_of)
            decisions = decide(
                candidates,
                history,
                _staff(con),
                _opt_outs(con, start, candidates["customer_id"]),
                as_of,
                start,
                policy,
                dry_run,
                stopped=stopped,
                # the tasks handed out today that this run does not decide again (sent, or an
                # intraday run's) take their owners' room
                tasks_today=_tasks_today(con, as_of),
            )
            rows = _ledger_rows(decisions, as_of, start)
            con.execute(
                "delete from message_ledger where idempotency_key in (select unnest(?))",
                [[r["idempotency_key"] for r in rows]],
            )
            insert(con, "message_ledger", [_without_carried(r) for r in rows])
            report = _report(run, rows, earlier, known)
            _record_run(con, run, report)
    finally:
        con.close()
    return report


def plan_intraday(
    db_path: Path,
    at: dt.datetime,
    playbooks: list[str],
    *,
    dry_run: bool,
    business_tz: str,
    policy: Policy | None = None,
) -> PlanReport:
    """A run during the day (`followup intraday`): the follow-ups of `playbooks` due today that
    no run has decided yet (a lead that came in at 14:05) are decided as of `at`, in one
    transaction. The day's earlier decisions stand, and count: the caps see today's contacts,
    owners' capacity today's tasks, and an opt-out counts up to `at`."""
    policy = policy or Policy.load()
    at = at.astimezone(ZoneInfo(business_tz))
    as_of = at.date()
    run = _Run(as_of, "intraday", dry_run)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = ?", [business_tz])
        _ensure_plan_tables(con)
        with transaction(con):
            run.catch_up_from = catch_up_from(con, as_of)
            candidates = _candidates(con, as_of, at, playbooks)
            keys = _keys(candidates)
            known = known_keys(con, keys)
            fresh = pl.Series([k not in known for k in keys], dtype=pl.Boolean)
            candidates = candidates.filter(fresh)
            history = _history(con, as_of, _longest_cap(policy), today=True)
            stopped = _stopped(con, as_of)
            decisions = decide(
                candidates,
                history,
                _staff(con),
                _opt_outs(con, at, candidates["customer_id"], "staging.stg_raw__events"),
                as_of,
                at,
                policy,
                dry_run,
                stopped=stopped,
                tasks_today=_tasks_today(con, as_of),
            )
            rows = _ledger_rows(decisions, as_of, at)
            insert(con, "message_ledger", [_without_carried(r) for r in rows])
            report = _report(run, rows, [], known)
            _record_run(con, run, report)
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


def _stopped(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> dict[tuple[str, str], str]:
    """(customer, playbook) -> tier: the escalations' `stop` actions up to the day."""
    return {
        (customer, playbook): tier
        for customer, playbook, tier in con.execute(
            "select customer_id, playbook, coalesce(min(tier), 'unknown tier') "
            "from escalations where action = 'stop' and as_of_date <= ? group by all",
            [as_of],
        ).fetchall()
    }


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
