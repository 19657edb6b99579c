"""A small hand-made history for the feedback tests that match rows by phone number or by the
provider's id: customers (two of them sharing a number) loaded by the real ingest, and ledger
messages written as dispatch leaves them (sent, with the provider's id).

| customer | phone | messages (channel, sent at, Shanghai time) |
|---|---|---|
| C1 | 13800000001 | M1 sms 11-20 10:00, M2 sms 11-21 10:00, M3 email 11-21 12:00 |
| C2, C3 | 13800000002 (shared) | M4 (C2) sms 11-21 10:00, M5 (C3) sms 11-21 10:00 |
| C4 | 13800000004 | M6 sms 11-15 10:00 (a reply on 11-21 is long after its 72 h) |
| C5 | 13800000005 | none |
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb

from flows.ingestion.load import ingest
from flows.ledger import ensure_tables
from flows.rundate import RunDate
from flows.settings import Settings

AS_OF = dt.date(2026, 11, 23)
TZ = ZoneInfo("Asia/Shanghai")

CUSTOMERS = """customer_id,name,phone,consent_sms
C1,张伟,13800000001,是
C2,王芳,13800000002,是
C3,李娜,138 0000 0002,是
C4,刘洋,13800000004,是
C5,陈静,13800000005,是
"""
ORDERS = """order_id,customer_id,ordered_at,amount
O1,C1,2026-11-01 12:00,100
"""


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=TZ)


# message, customer, channel, sent at, the provider's id of the send
LEDGER = [
    ("M1", "C1", "sms", at(20, 10), "BIZ-1"),
    ("M2", "C1", "sms", at(21, 10), "BIZ-2"),
    ("M3", "C1", "email", at(21, 12), None),
    ("M4", "C2", "sms", at(21, 10), "BIZ-4"),
    ("M5", "C3", "sms", at(21, 10), "BIZ-5"),
    ("M6", "C4", "sms", at(15, 10), "BIZ-6"),
]


def make_history(root: Path) -> tuple[Path, Settings]:
    """The database of the history above under `root`, and its settings."""
    settings = Settings.from_env().replace(
        db_path=root / "followup.duckdb",
        data_docs_dir=root / "data_docs",
        duckdb_threads=2,
        max_bad_share=0.9,  # the files here are small and half of them wrong on purpose
    )
    source = root / "source"
    source.mkdir()
    (source / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    ingest(settings.db_path, source, settings=settings, run=RunDate.of(settings.business_tz, AS_OF))
    con = duckdb.connect(str(settings.db_path))
    try:
        ensure_tables(con)
        for mid, customer, channel, sent, provider_id in LEDGER:
            con.execute(
                """
                insert into message_ledger (message_id, idempotency_key, customer_id, playbook,
                    step, anchor_id, channel, purpose, priority, first_due_date, planned_for,
                    decided_on, due_at, status, attempts, created_at, updated_at, sent_at,
                    provider_message_id)
                values (?, ?, ?, 'post_purchase_journey', 'day3_care', 'A', ?, 'service', 30,
                    ?, ?, ?, ?, 'sent', 1, ?, ?, ?, ?)
                """,
                [mid, f"key-{mid}", customer, channel]
                + [sent.date()] * 3  # first due, planned for, decided on
                + [sent] * 4  # due, created, updated, sent
                + [provider_id],
            )
    finally:
        con.close()
    return settings.db_path, settings
