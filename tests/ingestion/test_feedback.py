"""Feedback back into the database, and the analysis models' definitions, on a hand-made history
whose every figure is worked out below.

The history (business timezone Asia/Shanghai, run on the morning of 2026-11-23):

| message | customer | playbook.step (variant) | status | due / sent |
|---|---|---|---|---|
| M1 | C1 | post_purchase_journey.day3_care (care) | sent | 11-01 10:00 / 10:00 |
| M2 | C1 | post_purchase_journey.day7_tips | sent | 11-03 10:00 / 10:30 |
| M3 | C2 | post_purchase_journey.day3_care (care_coupon) | sent | 11-02 10:00 / 10:00 |
| M4 | C4 | post_purchase_journey.day3_care (care) | sent | 11-03 10:00 / 10:00 |
| M5 | C3 | new_buyer_satisfaction.survey (holdout) | held_out | 11-10 10:00 / – |
| M6 | C2 | dormant_winback.offer | suppressed | 11-04 10:00 / – |

Orders: C1 pays 100 on 11-05 12:00 (after M1 and M2: last touch M2); C2 pays 50 on 11-20 (18
days after M3: outside the 14-day window); C3 pays 80 on 11-12 (held out: ordered anyway).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from flows.building.runner import build
from flows.feedback import load_feedback
from flows.ingestion.load import IngestError, ingest
from flows.ledger import ensure_tables
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import query

AS_OF = dt.date(2026, 11, 23)
TZ = ZoneInfo("Asia/Shanghai")
METRICS = (
    "message_outcomes",
    "campaign_performance",
    "campaign_performance_daily",
    "campaign_breakdown",
    "followup_execution",
    "feedback_summary",
    "feedback_categories",
    "channel_mix",
    "followup_kpis",
    "ab_arms",
    "ab_results",
)

CUSTOMERS = """customer_id,name,phone,consent_sms
C1,张伟,13800000001,是
C2,王芳,13800000002,是
C3,李娜,13800000003,是
C4,刘洋,13800000004,是
"""
ORDERS = """order_id,customer_id,ordered_at,amount,status
O0,C1,2026-09-01 09:00,30,paid
O1,C1,2026-11-05 12:00,100,paid
O2,C2,2026-11-20 10:00,50,paid
O3,C3,2026-11-12 09:00,80,paid
"""
# F4 answers a message nobody sent; F5 comes back through the survey link.
FEEDBACK = """消息ID,反馈时间,反馈类型,outcome,score,量表,满意度,问题类型,text
M1,2026-11-01 12:00,回复,,,,,,收到，谢谢
M3,2026-11-06 10:00,问卷,,5,,非常满意,物流,快递很快 13812345678
M4,2026-11-03 10:01,送达回执,failed,,,,,
NOPE,2026-11-03 12:00,回复,,,,,,谁？
https://survey.example.com/s?m=M2&utm=sms,2026-11-03 11:00,点击,,,,,,
M1,2026-11-02 09:00,问卷,,9,NPS,,价格,
"""


def _at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=TZ)


LEDGER = [
    # message, customer, playbook, step, variant, channel, purpose, status, due, sent
    ("M1", "C1", "post_purchase_journey", "day3_care", "care", "sms", "sent", _at(1, 10), 0),
    ("M2", "C1", "post_purchase_journey", "day7_tips", None, "email", "sent", _at(3, 10), 30),
    ("M3", "C2", "post_purchase_journey", "day3_care", "care_coupon", "sms", "sent", _at(2, 10), 0),
    ("M4", "C4", "post_purchase_journey", "day3_care", "care", "sms", "sent", _at(3, 10), 0),
    (
        "M5",
        "C3",
        "new_buyer_satisfaction",
        "survey",
        "holdout",
        "sms",
        "held_out",
        _at(10, 10),
        None,
    ),
    ("M6", "C2", "dormant_winback", "offer", None, "sms", "suppressed", _at(4, 10), None),
]


def _write_ledger(db: Path) -> None:
    con = duckdb.connect(str(db))
    try:
        ensure_tables(con)
        for mid, customer, playbook, step, variant, channel, status, due, lag in LEDGER:
            sent = None if lag is None else due + dt.timedelta(minutes=lag)
            con.execute(
                """
                insert into message_ledger (message_id, idempotency_key, customer_id, playbook,
                    step, anchor_id, variant, channel, purpose, priority, first_due_date,
                    planned_for, decided_on, due_at, status, attempts, created_at, updated_at,
                    sent_at)
                values (?, ?, ?, ?, ?, 'A', ?, ?, 'marketing', 30, ?, ?, ?, ?, ?, 1, ?, ?, ?)
                """,
                [
                    mid,
                    f"key-{mid}",
                    customer,
                    playbook,
                    step,
                    variant,
                    channel,
                    due.date(),
                    due.date(),
                    due.date(),
                    due,
                    status,
                    due,
                    due,
                    sent,
                ],
            )
    finally:
        con.close()


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, Settings, Path]:
    root = tmp_path_factory.mktemp("feedback")
    settings = Settings.from_env().replace(
        db_path=root / "followup.duckdb",
        data_docs_dir=root / "data_docs",
        duckdb_threads=2,
        max_bad_share=0.5,  # one bad row in six, on purpose
    )
    source = root / "source"
    source.mkdir()
    (source / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    (root / "feedback.csv").write_text(FEEDBACK, encoding="utf-8")
    run = RunDate.of(settings.business_tz, AS_OF)
    ingest(settings.db_path, source, settings=settings, run=run)
    _write_ledger(settings.db_path)
    load_feedback(root / "feedback.csv", settings.db_path, run, settings)
    build(settings.db_path, run, settings)
    return settings.db_path, settings, root


def _outcomes(db: Path) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute("select * from message_outcomes")
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
    finally:
        con.close()


def test_feedback_for_an_unknown_message_is_quarantined_with_its_reason(history):
    db, _, _ = history
    rows = query(db, "select line_number, reasons from quarantine where entity = 'feedback'")
    assert rows == [(5, ["message_id: not found in main.message_ledger.message_id"])]
    assert query(db, "select count(*) from raw.feedback") == [(5,)]


def test_the_survey_link_and_the_chinese_labels_are_read(history):
    db, _, _ = history
    assert query(
        db,
        "select message_id, response_type from raw.feedback where response_type = 'click'",
    ) == [("M2", "click")]
    assert query(db, "select satisfaction, category from raw.feedback where message_id = 'M3'") == [
        ("very_satisfied", "logistics")
    ]


def test_a_row_without_its_customer_is_its_messages_customers(history):
    """The file names no customer: each row's is its message's, so the opt-outs and the
    `replied` exits, which read the customer, see every row."""
    db, _, _ = history
    assert query(db, "select distinct message_id, customer_id from raw.feedback order by 1") == [
        ("M1", "C1"),
        ("M2", "C1"),
        ("M3", "C2"),
        ("M4", "C4"),
    ]


def test_message_outcomes_follow_the_definitions(history):
    db, _, _ = history
    out = _outcomes(db)
    assert set(out) == {"M1", "M2", "M3", "M4", "M5"}  # M6 was suppressed: no outcome
    # M1: replied 2 h after the send; C1's order on 11-05 goes to M2, the later message
    assert (out["M1"]["is_responded"], out["M1"]["is_converted"]) == (True, False)
    assert out["M1"]["ordered_in_window"] is True
    assert out["M1"]["first_response_at"] == _at(1, 12)
    # M2: the click came back through the survey link; the last touch before the order
    assert (out["M2"]["is_responded"], out["M2"]["is_converted"]) == (True, True)
    assert out["M2"]["conversion_amount"] == 100
    assert out["M2"]["lag_minutes"] == 30
    # M3: answered 96 h later (window 72 h); C2's order came 18 days later (window 14 days)
    assert (out["M3"]["is_responded"], out["M3"]["is_converted"]) == (False, False)
    assert out["M3"]["ordered_in_window"] is False
    assert (out["M3"]["score"], out["M3"]["satisfaction"]) == (5, "very_satisfied")
    # M4: the gateway reported the delivery failed
    assert (out["M4"]["is_delivered"], out["M4"]["is_responded"]) == (False, False)
    # M5: held out; C3 ordered anyway within the window after the planned time
    assert (out["M5"]["status"], out["M5"]["is_converted"]) == ("held_out", False)
    assert out["M5"]["ordered_in_window"] is True


def test_campaign_performance_counts_and_rates(history):
    db, _, _ = history
    rows = query(
        db,
        """
        select step, variant, planned, sent, still_open, delivered, responded, customers,
            converted, response_rate, conversion_rate, execution_rate, conversion_amount,
            avg_lag_minutes
        from campaign_performance where playbook = 'post_purchase_journey' order by step, variant
        """,
    )
    # The latest feedback loaded is M3's survey (11-06 10:00), the latest paid order O2
    # (11-20): a response window is closed when it ended by 11-06 10:00, an attribution window
    # by 11-20 10:00.
    assert rows == [
        # M1 (C1) delivered and answered, M4 (C4) failed; C1 ordered within M1's window (the
        # order's last touch is M2, so the amount is M2's)
        ("day3_care", "care", 2, 2, 0, 1, 1, 2, 1, 1.0, 0.5, 1.0, 0, 0.0),
        # M3: delivered, answered too late; C2 ordered after the window
        ("day3_care", "care_coupon", 1, 1, 0, 1, 0, 1, 0, 0.0, 0.0, 1.0, 0, 0.0),
        # M2 (e-mail, sent 10:30): its response window ends 11-06 10:30, after the latest
        # feedback, so it is still open and in no response rate, though clicked; converted,
        # sent 30 minutes late
        ("day7_tips", "default", 1, 1, 1, 0, 0, 1, 1, None, 1.0, 1.0, 100, 30.0),
    ]


def test_satisfaction_csat_and_nps(history):
    db, _, _ = history
    rows = query(
        db,
        """
        select responses, csat_responses, csat, nps_responses, nps, very_satisfied
        from feedback_summary where playbook = '(all)'
        """,
    )
    # responses: M1's reply, M3's survey, M2's click, M1's survey; CSAT: M3's 5 (1–5, no scale
    # given); NPS: M1's 9 (scale NPS): one promoter, no detractor = 100 points
    assert rows == [(4, 1, 1.0, 1, 100.0, 1)]
    categories = query(
        db,
        "select category, responses, share from feedback_categories where playbook = '(all)' "
        "order by category",
    )
    assert categories == [("logistics", 1, 0.5), ("price", 1, 0.5)]


def test_kpis_state_numerator_and_denominator(history):
    db, _, _ = history
    kpis = {
        m: (v, n, d)
        for m, v, n, d in query(
            db, "select metric, value, numerator, denominator from followup_kpis"
        )
    }
    # response: M1 answered of M1, M3 delivered with their windows closed (M2's is open);
    # conversion: C1 for day3_care and for day7_tips, of C1, C2, C4 (day3_care) and C1
    # (day7_tips): customers per step, as the A/B tests count them
    assert kpis["response_rate"] == (0.5, 1, 2)
    assert kpis["conversion_rate"] == (0.5, 2, 4)
    assert kpis["still_open"][1] == 1  # M2
    # repurchase: C1 has two paid orders; C1, C2, C3 have at least one
    assert kpis["repurchase_rate"] == (pytest.approx(1 / 3), 1, 3)


def test_loading_the_same_feedback_again_changes_no_metric(history, tmp_path):
    db, settings, root = history
    before = {t: sorted(query(db, f"select * from {t}"), key=repr) for t in METRICS}
    run = RunDate.of(settings.business_tz, AS_OF)
    again = load_feedback(root / "feedback.csv", db, run, settings)
    assert (again.loads[0].inserted, again.loads[0].updated) == (0, 0)
    assert (again.loads[0].unchanged, again.loads[0].blank_rows) == (5, 0)
    # re-sent later, in another order, with a line twice: nothing new either
    lines = FEEDBACK.strip().splitlines()
    resent = tmp_path / "feedback.csv"
    resent.write_text("\n".join([lines[0], *reversed(lines[1:]), lines[1]]) + "\n", "utf-8")
    late = load_feedback(
        resent, db, RunDate.of(settings.business_tz, AS_OF + dt.timedelta(days=2)), settings
    )
    assert (late.loads[0].inserted, late.loads[0].updated) == (0, 0)
    build(db, run, settings)
    after = {t: sorted(query(db, f"select * from {t}"), key=repr) for t in METRICS}
    assert after == before


def test_a_missing_feedback_file_is_one_clear_error(history, tmp_path):
    db, settings, _ = history
    run = RunDate.of(settings.business_tz, AS_OF)
    with pytest.raises(IngestError, match="no such file or folder"):
        load_feedback(tmp_path / "nope.csv", db, run, settings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="no feedback file"):
        load_feedback(empty, db, run, settings)


def test_the_feedback_flow_publishes_the_figures_and_the_ab_table(
    history, prefect_server, monkeypatch
):
    from prefect.artifacts import Artifact

    from flows.feedback import feedback_flow

    monkeypatch.setenv("FOLLOWUP_MAX_BAD_SHARE", "0.5")  # the flow reads its settings itself
    db, _, root = history
    report = feedback_flow(source=root / "feedback.csv", db=db, as_of=AS_OF)
    assert report.ingest.loads[0].unchanged == 5
    assert any(n.name == "ab_results" for n in report.nodes)
    assert not any(n.name == "customer_rfm" for n in report.nodes)  # only the analysis models
    analysis = Artifact.get("analysis")
    assert analysis is not None
    assert "| response_rate | 50.0% |" in analysis.data
    assert "| conversion_rate | 50.0% |" in analysis.data
    # day3_care: care M1 and M4 (C1, C4), care_coupon M3 (C2); C1 ordered within the window
    assert "| post_purchase_journey.day3_care | care | 2 | 1 | 50.0% | control |" in analysis.data
    table = Artifact.get("ab-results")
    assert table is not None and "care_coupon" in str(table.data)


def test_a_td_reply_unsubscribes_from_the_channel_it_answers(history, tmp_path):
    """回复TD退订: a reply `TD` to an SMS is an opt-out from SMS from its moment, also for a row
    loaded before rows took their message's customer."""
    import shutil

    from flows.planning.candidates import opt_outs_sql

    db, _, _ = history
    copy = tmp_path / "followup.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    try:
        con.execute(
            "insert into raw.feedback (message_id, responded_at, response_type, text, _key) "
            "values ('M4', ?, 'reply', ' td ', 'old-row'), ('M3', ?, 'reply', '不要', 'other')",
            [_at(3, 12), _at(3, 13)],
        )
        opted = con.execute(f"select * from ({opt_outs_sql(con, None, '< now()')})").fetchall()
    finally:
        con.close()
    assert opted == [("C4", "sms", _at(3, 12))]
