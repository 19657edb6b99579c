"""The escalation rules applied to the database (`escalate`): the ledger, the feedback, the tiers
and the opt-outs read as of the morning, the rules of flows/planning/escalation.py decided, and
each new action written once with its `escalations` row, in one transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import duckdb

from flows.atomic import transaction
from flows.ledger import ensure_tables, idempotency_key, insert, known_keys, message_id
from flows.planning.declarations import Playbook, load_playbooks
from flows.planning.escalation import (
    TIER_NAMES,
    Action,
    decide,
)
from flows.planning.policy import Policy
from flows.rundate import RunDate


@dataclass
class EscalationReport:
    as_of: dt.date
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)  # action -> new escalations


def escalate(
    db_path: Path,
    run: RunDate,
    *,
    dry_run: bool,
    playbooks: list[Playbook] | None = None,
    policy: Policy | None = None,
) -> EscalationReport:
    """Evaluate the escalation rules on the morning of `run` and record what they call for, in
    one transaction; running a day again adds nothing twice."""
    policy = policy or Policy.load()
    declared = {
        p.name: p
        for p in (load_playbooks() if playbooks is None else playbooks)
        if p.escalation.reminder_after or p.escalation.unreachable_days or p.escalation.missed
    }
    as_of, start = run.day, run.start
    report = EscalationReport(as_of=as_of, dry_run=dry_run)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("set TimeZone = ?", [run.business_tz])
        ensure_tables(con)
        with transaction(con):
            if declared:
                params = {"names": list(declared), "start": start}
                ledger = con.sql(_LEDGER, params=params).pl()
                actions = decide(
                    ledger,
                    con.sql(_FEEDBACK, params=params).pl(),
                    dict(con.execute(_TIERS, {"names": list(declared)}).fetchall()),
                    declared,
                    run,
                    dict(con.execute(_OPTED_OUT, {"start": start}).fetchall()),
                )
                known = {
                    i for (i,) in con.execute("select escalation_id from escalations").fetchall()
                }
                new = [a for a in actions if a.escalation_id not in known]
                insert(con, "escalations", [_escalation_row(a, as_of, start) for a in new])
                report.counts = dict(Counter(a.action for a in new))
                today = [
                    Action(*row)
                    for row in con.execute(
                        f"select {', '.join(f.name for f in fields(Action))} from escalations "
                        "where as_of_date = ? order by escalation_id",
                        [as_of],
                    ).fetchall()
                ]
                sources = {r["message_id"]: r for r in ledger.iter_rows(named=True)}
                _messages(con, today, sources, as_of, start, dry_run)
                if not dry_run:
                    _tasks(con, today, sources, declared, policy, as_of, start)
    finally:
        con.close()
    return report


# The escalating playbooks' sent messages (the follow-ups), and their reminders in any state.
_LEDGER = """
    select message_id, customer_id, playbook, step, anchor_id, variant, channel, purpose,
        priority, owner_id, due_at, status, sent_at
    from message_ledger
    where playbook in (select unnest($names))
        and ((status = 'sent' and sent_at < $start) or step like '%:reminder')
"""
_FEEDBACK = """
    select message_id, responded_at, lower(trim(response_type)) as response_type,
        lower(trim(outcome)) as outcome
    from raw.feedback
    where responded_at < $start
        and lower(trim(response_type)) in ('reply', 'click', 'survey', 'call')
        and message_id in (
            select message_id from message_ledger where playbook in (select unnest($names))
        )
"""
_TIERS = """
    select customer_id, tier from customer_rfm
    where customer_id in (
        select customer_id from message_ledger where playbook in (select unnest($names))
    )
"""
_OPTED_OUT = """
    select customer_id, min(occurred_at) from fct_events
    where event_type = 'opt_out' and occurred_at < $start
    group by customer_id
"""


def _escalation_row(action: Action, as_of: dt.date, start: dt.datetime) -> dict:
    return {**asdict(action), "as_of_date": as_of, "created_at": start}


def _messages(
    con: duckdb.DuckDBPyConnection,
    actions: list[Action],
    sources: dict[str, dict],
    as_of: dt.date,
    start: dt.datetime,
    dry_run: bool,
) -> None:
    """The ledger rows of the day's reminders and care messages, each once; a real run turns the
    ones an earlier dry run of the day left as `dry_run` into `pending`."""
    rows = []
    for action in actions:
        source = sources.get(action.source_message_id or "")
        if action.action not in ("reminder", "sms_care") or source is None:
            continue
        if action.action == "reminder":
            step, anchor, channel = f"{source['step']}:reminder", source["anchor_id"], None
            variant, purpose = source["variant"], source["purpose"]
            reason = f"reminder: {action.detail} to {source['message_id']}"
        else:
            step, anchor, channel = "escalation:sms_care", source["message_id"], "sms"
            variant, purpose = None, "service"
            reason = f"sms_care: {action.detail}, the last {source['message_id']}"
        key = idempotency_key(source["playbook"], step, source["customer_id"], anchor)
        clock = (source["due_at"] or source["sent_at"]).astimezone(start.tzinfo).time()
        rows.append(
            {
                "message_id": message_id(key),
                "idempotency_key": key,
                "customer_id": source["customer_id"],
                "playbook": source["playbook"],
                "step": step,
                "anchor_id": anchor,
                "variant": variant,
                "channel": channel or source["channel"],
                "purpose": purpose,
                "priority": source["priority"],
                "owner_id": source["owner_id"],
                "first_due_date": as_of,
                "planned_for": as_of,
                "decided_on": as_of,
                "due_at": dt.datetime.combine(as_of, clock, tzinfo=start.tzinfo),
                "status": "dry_run" if dry_run else "pending",
                "reason": reason,
                "attempts": 0,
                "created_at": start,
                "updated_at": start,
                "origin": "escalation",
            }
        )
    if not dry_run:
        con.execute(
            "update message_ledger set status = 'pending', updated_at = ? "
            "where origin = 'escalation' and decided_on = ? and status = 'dry_run' "
            "and attempts = 0",
            [start, as_of],
        )
    have = known_keys(con, [r["idempotency_key"] for r in rows])
    insert(con, "message_ledger", [r for r in rows if r["idempotency_key"] not in have])


def _tasks(
    con: duckdb.DuckDBPyConnection,
    actions: list[Action],
    sources: dict[str, dict],
    playbooks: dict[str, Playbook],
    policy: Policy,
    as_of: dt.date,
    start: dt.datetime,
) -> None:
    """The `manual_followups` rows of the day's manager and specialist tasks, each once."""
    wanted = [a for a in actions if a.action in ("manager_task", "specialist_task")]
    if not wanted:
        return
    have = {
        t
        for (t,) in con.execute(
            "select task_id from manual_followups where task_id in (select unnest(?::varchar[]))",
            [[a.escalation_id for a in wanted]],
        ).fetchall()
    }
    wanted = [a for a in wanted if a.escalation_id not in have]
    customers = {
        c: (owner, industry)
        for c, owner, industry in con.execute(
            "select customer_id, owner_id, industry from customer_360 "
            "where customer_id in (select unnest(?::varchar[]))",
            [sorted({a.customer_id for a in wanted})],
        ).fetchall()
    }
    staff = con.execute(
        "select staff_id, role, manager_id, industries from staging.stg_raw__staff "
        "order by staff_id"
    ).fetchall()
    managers = {staff_id: manager for staff_id, _, manager, _ in staff}
    first_manager = next((s for s, role, _, _ in staff if role == "manager"), None)
    specialists = [
        (s, industries) for s, role, _, industries in staff if role == policy.specialist_role
    ]
    due_by = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=start.tzinfo)
    rows = []
    for action in wanted:
        owner, industry = customers.get(action.customer_id, (None, None))
        source = sources.get(action.source_message_id or "") or {}
        owner = owner or source.get("owner_id")
        playbook = playbooks.get(action.playbook)
        if action.action == "manager_task":
            assignee = managers.get(owner) or first_manager
            days = playbook.escalation.unreachable_days if playbook else None
            reason = (
                f"连续 {days} 天电话未接通，请主管跟进" if days else "电话多日未接通，请主管跟进"
            )
            kind = "manager_escalation"
        else:
            assignee = _specialist(action.customer_id, industry, specialists)
            rule = playbook.escalation.missed.get(action.tier) if playbook and action.tier else None
            times = f"连续 {rule.after} 次" if rule else "多次"
            tier = TIER_NAMES.get(action.tier or "", action.tier or "")
            reason = f"{times}回访未获回应（{tier}客户），请专员一对一跟进"
            kind = "specialist"
        rows.append(
            {
                "task_id": action.escalation_id,
                "customer_id": action.customer_id,
                "owner_id": assignee,
                "reason": f"{reason} ({action.playbook}): {action.detail}",
                "priority": playbook.priority if playbook else 0,
                "created_at": start,
                "due_by": due_by,
                "status": "open",
                "kind": kind,
                "playbook": action.playbook,
                "message_id": action.source_message_id,
            }
        )
    insert(con, "manual_followups", rows)


def _specialist(
    customer_id: str, industry: str | None, specialists: list[tuple[str, str | None]]
) -> str | None:
    """A specialist for the customer, the same one every time: among those who cover the
    customer's industry if any do, else among all."""
    covering = [
        s
        for s, industries in specialists
        if industry and industry in {i.strip() for i in (industries or "").split(";")}
    ]
    pool = covering or [s for s, _ in specialists]
    if not pool:
        return None
    return pool[int(hashlib.sha256(customer_id.encode()).hexdigest()[:8], 16) % len(pool)]
