"""A database holding just what dispatch reads: pending ledger rows and the customers, tiers and
staff they join. For the dispatch tests and `make bench`; the rows look like the daily plan's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from flows.ledger import ensure_tables, idempotency_key, message_id

PLAYBOOK, STEP, VARIANTS = "new_buyer_satisfaction", "survey", ("value_for_money", "after_sales")


def seed_pending(
    db: Path,
    n: int,
    as_of: dt.date,
    *,
    tz: str = "Asia/Shanghai",
    channel: str = "sms",
    first: int = 0,
    status: str = "pending",
) -> list[str]:
    """`n` messages due at 10:00 on `as_of` for customers C{first}..; returns their keys."""
    due = dt.datetime.combine(as_of, dt.time(10), tzinfo=ZoneInfo(tz))
    con = duckdb.connect(str(db))
    try:
        con.execute("set TimeZone = ?", [tz])
        ensure_tables(con)
        con.execute("create schema if not exists staging")
        con.execute(
            "create table if not exists customer_360 (customer_id varchar primary key, "
            "customer_name varchar, phone varchar, email varchar, "
            "last_product_category varchar, timezone varchar)"
        )
        con.execute(
            "create table if not exists customer_rfm (customer_id varchar primary key, "
            "tier varchar)"
        )
        con.execute(
            "create table if not exists staging.stg_raw__staff (staff_id varchar, "
            "staff_name varchar, role varchar, manager_id varchar, industries varchar, "
            "daily_capacity integer)"
        )
        ids = [f"C{i:07d}" for i in range(first, first + n)]
        con.execute(
            """
            insert or ignore into customer_360
            select id, '客户' || right(id, 4), '+86138' || lpad(right(id, 8), 8, '0'),
                lower(id) || '@example.com', '家居', null
            from unnest($ids) as t(id)
            """,
            {"ids": ids},
        )
        con.execute(
            "insert or ignore into customer_rfm select id, 'gold' from unnest($ids) as t(id)",
            {"ids": ids},
        )
        keys = [idempotency_key(PLAYBOOK, STEP, c, f"O-{c}") for c in ids]
        con.execute(
            """
            insert into message_ledger by name
            select
                $mids[i] as message_id, $keys[i] as idempotency_key, $ids[i] as customer_id,
                $playbook as playbook, $step as step, 'O-' || $ids[i] as anchor_id,
                $variants[1 + i % 2] as variant, $channel as channel, 'service' as purpose,
                50 as priority, null as owner_id, $as_of as first_due_date,
                $as_of as planned_for, $as_of as decided_on, $due as due_at,
                $status as status, 0 as attempts, $due as created_at, $due as updated_at
            from range(1, len($ids) + 1) as t(i)
            """,
            {
                "mids": [message_id(k) for k in keys],
                "keys": keys,
                "ids": ids,
                "playbook": PLAYBOOK,
                "step": STEP,
                "variants": list(VARIANTS),
                "channel": channel,
                "as_of": as_of,
                "due": due,
                "status": status,
            },
        )
    finally:
        con.close()
    return keys
