"""Open tasks back onto their owners' lists: a call or visit task still open past its day comes
back on the owner's list of the run's day, marked 逾期 (overdue), and a task made from an agreed
next contact (flows/tasks.py) goes on the list of its day. A list already holding a task does not
get it twice, so a re-run carries nothing twice (adapters/channels/call_list.py `carry`).

Only channels whose kind is `call_list` have lists; elsewhere the tasks stay in
`manual_followups`, where the report shows the overdue ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from adapters.channels import call_list
from flows.rundate import RunDate

_OPEN_TASKS = """
select m.kind, m.task_id, m.message_id, m.owner_id, m.priority, m.playbook, m.step, m.script,
       strftime(coalesce(m.next_contact_at, l.due_at, m.due_by - interval 1 minute),
                '%Y-%m-%d %H:%M') as due_at,
       m.due_by <= $start as is_overdue,
       m.customer_id, c.name as customer_name, c.phone
from manual_followups m
left join message_ledger l on l.message_id = m.message_id
left join raw.customers c on c.customer_id = m.customer_id
where m.status = 'open' and m.kind in $kinds
    and (m.due_by <= $start or (m.message_id is null and m.due_by <= $end))
"""


def carry_open_tasks(
    con: duckdb.DuckDBPyConnection, run: RunDate, channels: dict[str, dict[str, Any]]
) -> Counter:
    """Carry the open tasks onto the day's lists; how many were added, `overdue` and
    `next_contact` (a task is counted the run it is first added to the day's list)."""
    lists = {
        kind: Path(settings.get("out", "call_lists"))
        for kind, settings in channels.items()
        if kind in ("call", "visit") and settings.get("kind") == "call_list"
    }
    added: Counter = Counter()
    if not lists or not _has_customers(con):
        return added
    cursor = con.execute(_OPEN_TASKS, {"start": run.start, "end": run.end, "kinds": list(lists)})
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    for kind, out in lists.items():
        for overdue in (True, False):
            tasks = [
                {**r, "overdue": call_list.OVERDUE if overdue else ""}
                for r in rows
                if r["kind"] == kind and r["is_overdue"] == overdue
            ]
            if tasks:
                n = call_list.carry(out, run.day.isoformat(), tasks)
                added["overdue" if overdue else "next_contact"] += n
    return added


def _has_customers(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() "
            "where schema_name = 'raw' and table_name = 'customers'"
        ).fetchone()[0]
    )
