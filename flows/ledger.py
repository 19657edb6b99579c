"""The ledger: the tables planning, escalation and dispatch write and analysis reads, their schema
and the rows' insertion: `message_ledger` (one row per message, written before it is sent and
updated after), `manual_followups` (tasks for people) and `escalations` (what the escalation
rules decided, once each)."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import duckdb
import polars as pl

# a message id is derived from its idempotency key, in this namespace, for life
_NAMESPACE = uuid.UUID("0f6b1a52-52c1-4a8e-9b66-6f6c3e0a4d11")

LEDGER_DDL = """
create table if not exists message_ledger (
    message_id varchar primary key,
    idempotency_key varchar not null unique,
    customer_id varchar not null,
    playbook varchar not null,
    step varchar not null,
    anchor_id varchar not null,
    variant varchar,
    channel varchar,
    purpose varchar not null,
    priority integer not null,
    owner_id varchar,
    first_due_date date not null,
    planned_for date not null,
    decided_on date not null,
    due_at timestamptz,
    anchor_at timestamptz,  -- when the trigger's anchor happened: a deferral's exits read it
    status varchar not null,
    reason varchar,
    attempts integer not null default 0,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    next_attempt_at timestamptz,
    sent_at timestamptz,
    provider_message_id varchar,
    error varchar,
    origin varchar not null default 'plan',  -- plan, or escalation (reminders, care messages)
    subject varchar,
    body varchar,
    segments integer
)
"""

MANUAL_DDL = """
create table if not exists manual_followups (
    task_id varchar primary key,
    customer_id varchar not null,
    owner_id varchar,
    reason varchar not null,
    priority integer not null,
    created_at timestamptz not null,
    due_by timestamptz,
    status varchar not null,  -- open, done, cancelled
    kind varchar not null,  -- call, visit, manager_escalation, specialist
    playbook varchar,
    step varchar,
    message_id varchar,  -- the ledger's message, for a call or visit task
    script varchar,
    -- what the caller returned on the list (flows/tasks.py)
    outcome varchar,  -- answered, no_answer, busy, wrong_number, refused
    done_at timestamptz,
    next_contact_at timestamptz  -- for a task made from an agreed next contact: when
)
"""
# columns a table from an earlier version gains
_ADDED_COLUMNS = {
    "message_ledger": (
        ("origin", "varchar default 'plan'"),
        ("subject", "varchar"),
        ("body", "varchar"),
        ("segments", "integer"),
        ("anchor_at", "timestamptz"),
    ),
    "manual_followups": (
        ("outcome", "varchar"),
        ("done_at", "timestamptz"),
        ("next_contact_at", "timestamptz"),
    ),
}

ESCALATIONS_DDL = """
create table if not exists escalations (
    escalation_id varchar primary key,
    as_of_date date not null,
    customer_id varchar not null,
    playbook varchar not null,
    rule varchar not null,  -- reminder, unreachable, missed
    -- reminder, manager_task, specialist_task, sms_care, flag_downgrade, stop
    action varchar not null,
    tier varchar,
    source_message_id varchar,
    detail varchar,
    created_at timestamptz not null
)
"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(LEDGER_DDL)
    con.execute(MANUAL_DDL)
    con.execute(ESCALATIONS_DDL)
    for table, columns in _ADDED_COLUMNS.items():
        have = {r[0] for r in con.execute(f"describe {table}").fetchall()}
        for column, kind in columns:
            if column not in have:
                con.execute(f"alter table {table} add column {column} {kind}")


def known_keys(con: duckdb.DuckDBPyConnection, keys: list[str]) -> set[str]:
    """The idempotency keys among `keys` the ledger already holds (only those: the ledger may
    hold hundreds of thousands)."""
    return {
        k
        for (k,) in con.execute(
            "select idempotency_key from message_ledger "
            "where idempotency_key in (select unnest(?::varchar[]))",
            [keys],
        ).fetchall()
    }


LEDGER_TABLES = ("message_ledger", "manual_followups", "escalations")


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    """`rows` into one of the ledger's tables, by column name: the table's DDL types them, and a
    column the rows leave out takes its default (or null)."""
    if table not in LEDGER_TABLES:
        raise ValueError(f"{table}: not a ledger table")
    if rows:
        # every row typed from all rows: a reason may first appear after a hundred without one
        frame = pl.DataFrame(rows, infer_schema_length=None)  # noqa: F841 - read by the insert
        con.execute(f"insert into {table} by name select * from frame")


def idempotency_key(playbook: str, step: str, customer_id: str, anchor_id: str) -> str:
    raw = "\x1f".join((playbook, step, customer_id, anchor_id))
    return "fu1-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def message_id(key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, key))


# --- a pending message that must not go ---------------------------------------------------------


def expire_pending(con, as_of: dt.date, start: dt.datetime, days: int) -> int:
    """Pending messages that never went out within `days` of their due day are failed, not sent
    weeks late."""
    (n,) = con.execute(
        """
        update message_ledger set status = 'failed', reason = 'expired',
            error = 'not sent within ' || $days || ' days of its due day', updated_at = $start
        where status = 'pending' and first_due_date < $as_of - to_days($days)
        """,
        {"as_of": as_of, "days": days, "start": start},
    ).fetchone()
    return n


def suppress_opted_out(con, as_of: dt.date, now: dt.datetime, opted: str) -> int:
    """An opt-out wins from its moment: a message the morning's plan made, not handed over yet,
    whose customer has since opted out of its channel (`opted`: the opt-outs as rows, customer_id,
    scope, opted_at, up to `$now`) is suppressed, not sent."""
    (n,) = con.execute(
        f"""
        with opted as ({opted}),
        stopped as (
            select l.message_id, min(opted.opted_at) as opted_at,
                arg_min(opted.scope, opted.opted_at) as scope
            from message_ledger l
            join opted on opted.customer_id = l.customer_id and opted.scope in (l.channel, 'all')
            where l.status = 'pending' and l.attempts = 0 and l.planned_for <= $as_of
            group by l.message_id
        )
        update message_ledger set status = 'suppressed', updated_at = $now,
            reason = 'opted out of ' || stopped.scope || ' at '
                || strftime(stopped.opted_at, '%Y-%m-%d %H:%M') || ', before the send'
        from stopped
        where message_ledger.message_id = stopped.message_id
        """,
        {"as_of": as_of, "now": now},
    ).fetchone()
    return n
