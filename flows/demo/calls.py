"""The demo's calls: the last two days' call tasks, handed to the owners on their call lists, and
the list one owner returned, so that `followup tasks` and the next morning's lists have something
to show: calls done with their outcomes, an agreed next contact due on the demo's day, and calls
nobody returned, which come back on today's lists as overdue (逾期).

The calls are the `high_value_review` playbook's `quarterly_call` for the customers with the
most paid orders that have an owner and a phone; the simulated ledger rows say
`reason = 'demo simulation'` like the rest of the simulated past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import openpyxl

from adapters.channels import Message, open_channel
from adapters.channels.call_list import NAMES
from flows.atomic import transaction
from flows.ledger import idempotency_key, insert, known_keys, message_id

PLAYBOOK, STEP = "high_value_review", "quarterly_call"
SCRIPT = "您好，我是您的专属顾问，想了解一下您最近的购物体验，有什么需要我们改进的吗？"
# what the caller wrote, by the row's place in the returned list (rows past these: not returned)
_ANSWERS = (
    {"outcome": "接通", "satisfaction": "非常满意", "note": "很满意，想了解新品"},
    {"outcome": "接通", "satisfaction": "满意"},
    {"outcome": "未接通"},
    {"outcome": "接通", "satisfaction": "一般", "note": "物流慢，已登记"},
    {"outcome": "忙线", "note": "约好今天下午再打"},  # the next contact: the demo's day, 15:00
    {"outcome": "空号"},
)
NEXT_CONTACT_ROW = 4


@dataclass
class CallStory:
    handed: int  # call tasks handed to the owners over the two days
    returned_list: Path  # the list one owner filled in
    returned_rows: int


def simulate_calls(
    db_path: Path, today: dt.date, call_lists: Path, out_dir: Path, tz: str, per_day: int = 12
) -> CallStory:
    """Hand the calls of the two days before `today` to their owners (ledger, tasks, the lists
    in `call_lists`) and write the list of yesterday's busiest owner, filled in, to `out_dir`."""
    zone = ZoneInfo(tz)
    con = duckdb.connect(str(db_path))
    try:
        customers = con.execute(
            """
            select c.customer_id, c.name, c.phone, c.owner_id
            from raw.customers c join raw.orders o using (customer_id)
            where c.owner_id is not null and c.phone is not null
                and coalesce(o.status, 'paid') = 'paid'
            group by all order by count(*) desc, c.customer_id limit ?
            """,
            [4 * per_day],
        ).fetchall()
        days = (today - dt.timedelta(days=2), today - dt.timedelta(days=1))
        # yesterday: most calls for the owner with the most such customers, whose list comes back
        owners = [c[3] for c in customers]
        busiest = max(sorted(set(owners)), key=owners.count)
        theirs = [c for c in customers if c[3] == busiest][: len(_ANSWERS) + 2]
        others = [c for c in customers if c not in theirs]
        yesterday = theirs + others[: per_day - len(theirs)]
        before = others[per_day - len(theirs) :][:per_day]
        messages = [_message(days[0], c, zone) for c in before]
        messages += [_message(days[1], c, zone) for c in yesterday]
        # a second demo on the same database hands over the same calls, once
        known = known_keys(con, [m.idempotency_key for m in messages])
        new = [m for m in messages if m.idempotency_key not in known]
        with transaction(con):
            insert(con, "message_ledger", [_ledger_row(m) for m in new])
            insert(con, "manual_followups", [_task_row(m) for m in new])
    finally:
        con.close()
    channel = open_channel("call", {"kind": "call_list", "out": str(call_lists)})
    try:
        channel.send(messages)
    finally:
        channel.close()
    written = call_lists / days[1].isoformat() / f"{busiest}.xlsx"
    returned = out_dir / f"{days[1].isoformat()}-{busiest}.xlsx"
    rows = _fill(written, returned, today)
    return CallStory(handed=len(messages), returned_list=returned, returned_rows=rows)


def _message(day: dt.date, customer: tuple, zone: ZoneInfo) -> Message:
    customer_id, name, phone, owner = customer
    key = idempotency_key(PLAYBOOK, STEP, customer_id, f"demo-{day.isoformat()}")
    return Message(
        message_id=message_id(key),
        idempotency_key=key,
        customer_id=customer_id,
        playbook=PLAYBOOK,
        step=STEP,
        variant=None,
        channel="call",
        purpose="service",
        priority=70,
        due_at=dt.datetime.combine(day, dt.time(10, 0), zone),
        text=SCRIPT,
        to=phone,
        customer_name=name,
        owner_id=owner,
    )


def _ledger_row(m: Message) -> dict:
    day = m.due_at.date()
    return {
        "message_id": m.message_id, "idempotency_key": m.idempotency_key,
        "customer_id": m.customer_id, "playbook": m.playbook, "step": m.step,
        "anchor_id": m.idempotency_key, "channel": "call", "purpose": m.purpose,
        "priority": m.priority, "owner_id": m.owner_id, "first_due_date": day,
        "planned_for": day, "decided_on": day, "due_at": m.due_at, "status": "sent",
        "reason": "demo simulation", "attempts": 1, "created_at": m.due_at,
        "updated_at": m.due_at, "sent_at": m.due_at, "origin": "plan", "body": m.text,
        "provider_message_id": f"{day.isoformat()}/{m.owner_id}.csv",
    }  # fmt: skip


def _task_row(m: Message) -> dict:
    """As dispatch records a call handed over: open, due by the end of its day."""
    end = dt.datetime.combine(m.due_at.date() + dt.timedelta(days=1), dt.time(), m.due_at.tzinfo)
    return {
        "task_id": m.message_id, "customer_id": m.customer_id, "owner_id": m.owner_id,
        "reason": f"{m.playbook} / {m.step}", "priority": m.priority, "created_at": m.due_at,
        "due_by": end, "status": "open", "kind": "call", "playbook": m.playbook,
        "step": m.step, "message_id": m.message_id, "script": m.text,
    }  # fmt: skip


def _fill(written: Path, returned: Path, today: dt.date) -> int:
    """The owner's list as they hand it back: the first rows answered (`_ANSWERS`), the rest
    left empty."""
    book = openpyxl.load_workbook(written)
    sheet = book.active
    column = {name: i for i, name in enumerate(NAMES)}
    for i, row in enumerate(sheet.iter_rows(min_row=2)):
        if i >= len(_ANSWERS):
            break
        answer = dict(_ANSWERS[i])
        answer["done_at"] = f"{today - dt.timedelta(days=1)} {10 + i}:30"
        if i == NEXT_CONTACT_ROW:
            answer["next_contact_at"] = f"{today} 15:00"
        for name, value in answer.items():
            row[column[name]].value = value
    returned.parent.mkdir(parents=True, exist_ok=True)
    book.save(returned)
    return min(len(_ANSWERS), sheet.max_row - 1)
