"""Feedback that names no message, only the phone number it came from (an SMS reply, 上行短信):
it answers the latest message its one customer got on its channel before it, within the channel's
response window (72 h); anything else is quarantined with its reason and nothing else changes.
The history is tests/feedback_history.py; every expected match below is read off its table."""

from __future__ import annotations

import pytest

from flows.feedback import load_feedback
from flows.rundate import RunDate
from tests.conftest import query
from tests.feedback_history import AS_OF, at, make_history

# line 2..: matched to M2 (C1's latest sms before it), M3 (the email it names), and by a message
# id although the number is shared; then no customer, a shared number, a message too old, a
# reply before C1's first message, and no number at all
FEEDBACK = """手机号,回复时间,反馈类型,回复内容,渠道,消息ID
138 0000 0001,2026-11-21 11:00,回复,TD,,
+86 138-0000-0001,2026-11-21 12:30,回复,好的,邮件,
13800000002,2026-11-21 10:30,回复,收到,,M4
13900000009,2026-11-21 11:00,回复,TD,,
13800000002,2026-11-21 11:00,回复,TD,短信,
13800000004,2026-11-21 11:00,回复,TD,,
8613800000001,2026-11-20 09:00,回复,你好,,
12345,2026-11-21 11:00,回复,TD,,
"""
NO_ID = "message_id: required value is missing (a message id, a provider id or a phone number)"
NO_CUSTOMER = "phone: no customer has this number"
SHARED = "phone: several customers have this number (ambiguous: not matched)"
NO_MESSAGE = (
    "phone: its customer got no message on this channel within the response window before "
    "responded_at"
)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("by_phone")
    db, settings = make_history(root)
    path = root / "replies.csv"
    path.write_text(FEEDBACK, encoding="utf-8")
    ledger_before = query(db, "select * from message_ledger order by message_id")
    report = load_feedback(path, db, RunDate.of(settings.business_tz, AS_OF), settings)
    return db, settings, path, report, ledger_before


def test_a_reply_by_number_answers_its_customers_latest_message_on_its_channel(loaded):
    db, *_ = loaded
    rows = query(
        db,
        "select message_id, customer_id, phone, channel, response_type, text from raw.feedback "
        "order by responded_at",
    )
    assert rows == [
        ("M4", "C2", "+8613800000002", None, "reply", "收到"),  # named its message: no guess
        ("M2", "C1", "+8613800000001", None, "reply", "TD"),
        ("M3", "C1", "+8613800000001", "email", "reply", "好的"),
    ]


def test_unmatched_numbers_are_quarantined_each_with_its_reason(loaded):
    db, *_ = loaded
    rows = query(
        db,
        "select line_number, severity, reasons from quarantine where entity = 'feedback' "
        "order by line_number",
    )
    assert rows == [
        (5, "error", [NO_CUSTOMER]),
        (6, "error", [SHARED]),
        (7, "error", [NO_MESSAGE]),
        (8, "error", [NO_MESSAGE]),
        (9, "error", [NO_ID, "phone: not a valid phone number"]),
    ]
    reasons = query(db, "select reasons from quarantine")
    shown = " ".join(r for (listed,) in reasons for r in listed)
    assert "0000" not in shown  # no number, masked or not, in a reason


def test_nothing_else_changes(loaded):
    db, _, _, report, ledger_before = loaded
    load = report.loads[0]
    assert (load.rows_read, load.inserted, load.errors) == (8, 3, 5)
    assert query(db, "select * from message_ledger order by message_id") == ledger_before
    assert query(db, "select count(*) from raw.customers") == [(5,)]


def test_a_td_by_number_unsubscribes_its_customer_from_sms(loaded):
    import duckdb

    from flows.planning.candidates import opt_outs_sql

    db, *_ = loaded
    con = duckdb.connect(str(db), read_only=True)
    try:
        opted = con.execute(f"select * from ({opt_outs_sql(con, None, '< now()')})").fetchall()
    finally:
        con.close()
    assert opted == [("C1", "sms", at(21, 11))]  # the shared number's TD unsubscribes nobody


def test_loading_the_replies_again_changes_nothing(loaded):
    db, settings, path, _, _ = loaded
    quarantine = query(db, "select count(*) from quarantine")
    again = load_feedback(path, db, RunDate.of(settings.business_tz, AS_OF), settings)
    load = again.loads[0]
    assert (load.inserted, load.updated, load.unchanged) == (0, 0, 3)
    assert query(db, "select count(*) from quarantine") == quarantine
