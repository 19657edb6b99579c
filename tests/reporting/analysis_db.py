"""A small, hand-made database holding every table the report and the notebooks read, with the
columns of docs/analysis.md and the contract: three playbooks, one A/B test with two variants and
a holdout, one test whose split is broken, four owners, and a few texts that quote a phone
number or an address (they must reach marketing masked)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from flows.analysis.columns import COMPARISON
from flows.ledger import LEDGER_DDL, ensure_tables

AS_OF = dt.date(2026, 11, 23)
YESTERDAY = AS_OF - dt.timedelta(days=1)
# Texts that must never reach a report unmasked
PHONE = "13812345678"
PHONE_IN_REASON = "13987654321"
EMAIL = "zhang.wei@example.com"
EMAIL_IN_SCRIPT = "li.ming@example.com"

# playbook, step, channel, variant, planned, sent, delivered, responded, converted, amount, lag
PERFORMANCE = [
    ("post_purchase_care", "day3_sms", "sms", "sms_a", 420, 400, 388, 62, 24, 7420.50, 12.5),
    ("post_purchase_care", "day3_sms", "sms", "sms_b", 410, 396, 380, 81, 44, 13980.00, 11.0),
    ("dormant_winback", "email_offer", "email", "subject_a", 190, 180, 171, 19, 9, 2890.00, 30.0),
    ("dormant_winback", "email_offer", "email", "subject_b", 118, 110, 104, 12, 5, 1610.00, 28.0),
    ("complaint_recovery", "call", "call", "default", 40, 36, 30, 30, 2, 960.00, 95.0),
]
_CONTROL = dict.fromkeys((*COMPARISON, "decision"))  # a control row has no lift, no decision
# Figures as flows/analysis/abtest.py computes them (Wilson, Newcombe, Katz, z-test, Beta)
AB_RESULTS = [
    {
        "experiment": "post_purchase_care.day3_sms",
        "variant": "sms_a",
        "is_control": True,
        "n": 400,
        "conversions": 24,
        "rate": 0.06,
        "rate_ci_low": 0.0406,
        "rate_ci_high": 0.0877,
        **_CONTROL,
        "srm_p_value": 0.9779,
        "min_sample": 300,
    },
    {
        "experiment": "post_purchase_care.day3_sms",
        "variant": "sms_b",
        "is_control": False,
        "n": 396,
        "conversions": 44,
        "rate": 0.1111,
        "rate_ci_low": 0.0838,
        "rate_ci_high": 0.1459,
        "abs_lift": 0.0511,
        "ci_low": 0.0122,
        "ci_high": 0.0909,
        "rel_lift": 0.8519,
        "rel_ci_low": 0.1487,
        "rel_ci_high": 1.9854,
        "p_value": 0.0099,
        "chance_to_beat_control": 0.9949,
        "srm_p_value": 0.9779,
        "min_sample": 300,
        "decision": "ship",
    },
    {
        "experiment": "post_purchase_care.day3_sms.holdout",
        "variant": "holdout",
        "is_control": True,
        "n": 90,
        "conversions": 3,
        "rate": 0.0333,
        "rate_ci_low": 0.0114,
        "rate_ci_high": 0.0935,
        **_CONTROL,
        "srm_p_value": 0.9779,
        "min_sample": 200,
    },
    {
        "experiment": "post_purchase_care.day3_sms.holdout",
        "variant": "sent",
        "is_control": False,
        "n": 796,
        "conversions": 68,
        "rate": 0.0854,
        "rate_ci_low": 0.0679,
        "rate_ci_high": 0.1069,
        "abs_lift": 0.0521,
        "ci_low": -0.0105,
        "ci_high": 0.0828,
        "rel_lift": 1.5628,
        "rel_ci_low": -0.1767,
        "rel_ci_high": 6.9777,
        "p_value": 0.0845,
        "chance_to_beat_control": 0.9517,
        "srm_p_value": 0.9779,
        "min_sample": 200,
        "decision": "inconclusive",  # the holdout arm is below its minimum sample
    },
    {
        "experiment": "dormant_winback.email_offer",
        "variant": "subject_a",
        "is_control": True,
        "n": 180,
        "conversions": 9,
        "rate": 0.05,
        "rate_ci_low": 0.0265,
        "rate_ci_high": 0.0923,
        **_CONTROL,
        "srm_p_value": 0.00004,
        "min_sample": 100,
    },
    {
        "experiment": "dormant_winback.email_offer",
        "variant": "subject_b",
        "is_control": False,
        "n": 110,
        "conversions": 5,
        "rate": 0.0455,
        "rate_ci_low": 0.0196,
        "rate_ci_high": 0.1020,
        "abs_lift": -0.0045,
        "ci_low": -0.0541,
        "ci_high": 0.0567,
        "rel_lift": -0.0909,
        "rel_ci_low": -0.6873,
        "rel_ci_high": 1.6429,
        "p_value": 0.8609,
        "chance_to_beat_control": 0.4634,
        "srm_p_value": 0.00004,  # 180 against 110 for a declared 50/50 split
        "min_sample": 100,
        "decision": "invalid: sample ratio mismatch",
    },
]
AB_ARMS = [
    ("post_purchase_care.day3_sms", "sms_a", True, 0.5, 300, 400, 24),
    ("post_purchase_care.day3_sms", "sms_b", False, 0.5, 300, 396, 44),
    ("post_purchase_care.day3_sms.holdout", "holdout", True, 0.1, 200, 90, 3),
    ("post_purchase_care.day3_sms.holdout", "sent", False, 0.9, 200, 796, 68),
    ("dormant_winback.email_offer", "subject_a", True, 0.5, 100, 180, 9),
    ("dormant_winback.email_offer", "subject_b", False, 0.5, 100, 110, 5),
]
KPIS = [
    (
        "repurchase_rate",
        0.184,
        92,
        500,
        "customers with a paid order within 90 days of a follow-up",
    ),
    ("complaint_rate", 0.021, 21, 1000, "customers with a complaint after a follow-up"),
    ("dormant_reactivation_rate", 0.048, 14, 290, "dormant customers who ordered again"),
    ("avg_followup_cycle_days", 23.5, None, None, "mean days between two follow-ups"),
    ("response_rate", 204 / 1073, 204, 1073, "responded / delivered"),
    ("conversion_rate", 84 / 1122, 84, 1122, "converted / sent"),
    ("csat", 20 / 28, 20, 28, "share of 4-5 among CSAT scores"),
    ("nps", 22.2, 9, 18, "promoters minus detractors, points"),
]
STAFF = [
    ("S001", "王芳", "客服一组", "service", "S003", "零售;医疗", 40),
    ("S002", "李强", "华东销售部", "sales", "S003", "制造", 35),
    ("S003", "张伟", "客服一组", "manager", None, None, 20),
    ("S004", "陈静", "华南销售部", "sales", "S003", "物流", 30),
]


def make_analysis_db(path: Path) -> Path:
    """Create (or replace) the database at `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'Asia/Shanghai'")
        _raw(con)
        ensure_tables(con)
        _ledger(con)
        _manual(con)
        _customer_rfm(con)
        _marts(con)
    finally:
        con.close()
    return path


def make_ledger_only_db(path: Path) -> Path:
    """A database right after a first plan run: the ledger and nothing built from feedback."""
    path = Path(path)
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'Asia/Shanghai'")
        con.execute(LEDGER_DDL)
        _ledger(con)
    finally:
        con.close()
    return path


# --- the tables ------------------------------------------------------------------------------


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[tuple]) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    con.executemany(f"insert into {table} ({columns}) values ({marks})", rows)


def _raw(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema raw")
    con.execute(
        "create table raw.staff (staff_id varchar, name varchar, team varchar, role varchar, "
        "manager_id varchar, industries varchar, daily_capacity bigint, _key varchar)"
    )
    _insert(
        con,
        "raw.staff",
        "staff_id, name, team, role, manager_id, industries, daily_capacity, _key",
        [(*row, row[0]) for row in STAFF],
    )
    con.execute(
        "create table raw.feedback (message_id varchar, customer_id varchar, "
        "responded_at timestamptz, response_type varchar, outcome varchar, score bigint, "
        "satisfaction varchar, category varchar, text varchar, _key varchar)"
    )
    at = "2026-11-22 {}:00+08"
    _insert(
        con,
        "raw.feedback",
        "message_id, customer_id, responded_at, response_type, outcome, score, satisfaction, "
        "category, text, _key",
        [
            ("m-y-01", "C0001", at.format("10:12"), "survey", None, 5, "very_satisfied", None,
             "客服很耐心，谢谢", "f1"),
            ("m-y-02", "C0002", at.format("11:40"), "reply", None, None, None, "logistics",
             f"快递还没到，请打 {PHONE} 或发邮件到 {EMAIL} 联系我", "f2"),
            ("m-y-03", "C0003", at.format("15:05"), "survey", None, 2, "unsatisfied", "price",
             "价格比别家贵", "f3"),
            ("m-y-04", "C0004", at.format("16:30"), "click", None, None, None, None, None, "f4"),
            ("m-y-05", "C0005", at.format("17:45"), "call", "answered", 4, "satisfied",
             "service", "已解决", "f5"),
        ],
    )  # fmt: skip


def _ledger(con: duckdb.DuckDBPyConnection) -> None:
    columns = (
        "message_id, idempotency_key, customer_id, playbook, step, anchor_id, variant, channel, "
        "purpose, priority, owner_id, first_due_date, planned_for, decided_on, due_at, status, "
        "reason, attempts, created_at, updated_at, sent_at, body"
    )

    def row(mid, day, customer, playbook, step, variant, channel, status, reason=None, owner=None,
            planned_for=None):  # fmt: skip
        due = dt.datetime.combine(day, dt.time(10, 0), dt.timezone(dt.timedelta(hours=8)))
        purpose = "service" if playbook == "complaint_recovery" else "marketing"
        sent = due if status == "sent" else None
        body = f"【示例】{customer} 您好，回访消息" if status in ("sent", "pending") else None
        return (
            mid, f"key-{mid}", customer, playbook, step, f"anchor-{customer}", variant, channel,
            purpose, 50, owner, day, planned_for or day, day, due, status, reason,
            1 if status == "sent" else 0, due - dt.timedelta(hours=2), due, sent, body,
        )  # fmt: skip

    t, y = AS_OF, YESTERDAY
    pp, dw, cr = "post_purchase_care", "dormant_winback", "complaint_recovery"
    rows = [
        row("m-y-01", y, "C0001", pp, "day3_sms", "sms_a", "sms", "sent", owner="S001"),
        row("m-y-02", y, "C0002", pp, "day3_sms", "sms_b", "sms", "sent", owner="S001"),
        row("m-y-03", y, "C0003", dw, "email_offer", "subject_a", "email", "sent", owner="S002"),
        row("m-y-04", y, "C0004", dw, "email_offer", "subject_b", "email", "sent", owner="S002"),
        row("m-y-05", y, "C0005", cr, "call", "default", "call", "sent", owner="S004"),
        row("m-t-01", t, "C0011", pp, "day3_sms", "sms_a", "sms", "sent", owner="S001"),
        row("m-t-02", t, "C0012", pp, "day3_sms", "sms_b", "sms", "sent", owner="S001"),
        row("m-t-03", t, "C0013", pp, "day3_sms", "sms_b", "sms", "pending", owner="S002"),
        row("m-t-04", t, "C0014", pp, "day3_sms", "holdout", None, "held_out", "holdout 10%"),
        row("m-t-05", t, "C0015", pp, "day3_sms", "sms_a", "sms", "suppressed",
            "no consent_sms for marketing by sms"),
        row("m-t-06", t, "C0016", dw, "email_offer", "subject_a", "email", "sent", owner="S002"),
        row("m-t-07", t, "C0017", dw, "email_offer", "subject_b", "email", "failed",
            f"gateway refused: wrong number {PHONE_IN_REASON}", owner="S002"),
        row("m-t-08", t, "C0018", dw, "email_offer", "subject_a", "email", "deferred",
            "cap: marketing at most 1 per 3 days", planned_for=t + dt.timedelta(days=3)),
        row("m-t-09", t, "C0019", cr, "call", "default", "call", "sent", owner="S004"),
        row("m-t-10", t, "C0020", cr, "call", "default", "call", "sent", owner="S099"),
    ]  # fmt: skip
    _insert(con, "message_ledger", columns, rows)


def _manual(con: duckdb.DuckDBPyConnection) -> None:
    columns = (
        "task_id, customer_id, owner_id, reason, priority, created_at, due_by, status, kind, "
        "playbook, step, message_id, script"
    )
    created = "2026-11-23 09:00+08"
    due = "2026-11-23 18:00+08"
    rows = [
        ("t-01", "C0019", "S004", "complaint_recovery / call", 95, created, due, "open", "call",
         "complaint_recovery", "call", "m-t-09", "致电客户：确认投诉的处理结果是否满意"),
        ("t-02", "C0020", "S099", f"客户要求回电 {PHONE}", 95, created, due, "open", "call",
         "complaint_recovery", "call", "m-t-10", "致电客户：确认投诉的处理结果"),
        ("t-03", "C0005", "S004", "complaint_recovery / call", 95, "2026-11-22 09:00+08",
         "2026-11-22 18:00+08", "done", "call", "complaint_recovery", "call", "m-y-05",
         "致电客户"),
        ("t-04", "C0003", "S003", "3 days unreachable: manager follow-up", 80, created,
         "2026-11-24 18:00+08", "open", "manager_escalation", "dormant_winback", None, None,
         f"请主管跟进，客户留言邮箱 {EMAIL_IN_SCRIPT}"),
        ("t-05", "C0017", None, "visit: key account", 60, created, "2026-11-25 18:00+08",
         "open", "visit", "dormant_winback", "email_offer", None, "上门拜访"),
        ("t-06", "C0011", "S001", "specialist: product question", 70, created,
         "2026-11-24 12:00+08", "cancelled", "specialist", "post_purchase_care", None, None,
         None),
        # a call of two days ago nobody made: overdue on the day of the latest run
        ("t-07", "C0006", "S004", "high_value_review / quarterly_call", 70,
         "2026-11-21 10:00+08", "2026-11-22 00:00+08", "open", "call", "high_value_review",
         "quarterly_call", None, "致电客户"),
    ]  # fmt: skip
    _insert(con, "manual_followups", columns, rows)


def _customer_rfm(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table customer_rfm (as_of_date date, customer_id varchar, recency_days bigint, "
        "order_count bigint, total_amount decimal(38,2), r_score integer, f_score integer, "
        "m_score integer, rfm_segment varchar, tier varchar, value_tier varchar, "
        'frequency double, recency double, "T" double, monetary_value double)'
    )
    rows = []
    segments = [
        ("Champions", "diamond", "high", 5, 5, 5),
        ("Loyal", "gold", "high", 4, 4, 4),
        ("Potential_loyalist", "silver", "mid", 4, 3, 3),
        ("At_risk", "silver", "normal", 2, 3, 3),
        ("Hibernating", "basic", "churned", 1, 1, 2),
    ]
    for i in range(20):
        segment, tier, value_tier, r, f, m = segments[i % len(segments)]
        orders = f + i % 3
        amount = 180.0 * m * orders
        rows.append(
            (AS_OF, f"C{i + 1:04d}", 10 + (5 - r) * 40 + i, orders, amount, r, f, m, segment,
             tier, value_tier, float(orders - 1), float(200 - r * 30), 400.0,
             amount / orders)
        )  # fmt: skip
    _insert(
        con,
        "customer_rfm",
        "as_of_date, customer_id, recency_days, order_count, total_amount, r_score, f_score, "
        'm_score, rfm_segment, tier, value_tier, frequency, recency, "T", monetary_value',
        rows,
    )


def _rate(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _marts(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "create table campaign_performance (playbook varchar, step varchar, channel varchar, "
        "variant varchar, planned bigint, sent bigint, delivered bigint, responded bigint, "
        "converted bigint, response_rate double, conversion_rate double, "
        "conversion_amount decimal(18,2), execution_rate double, avg_lag_minutes double)"
    )
    _insert(
        con,
        "campaign_performance",
        "playbook, step, channel, variant, planned, sent, delivered, responded, converted, "
        "response_rate, conversion_rate, conversion_amount, execution_rate, avg_lag_minutes",
        [
            (p, s, c, v, pl, se, de, re, co, _rate(re, de), _rate(co, se), amt, _rate(se, pl), lag)
            for p, s, c, v, pl, se, de, re, co, amt, lag in PERFORMANCE
        ],
    )

    con.execute(
        "create table campaign_performance_daily (sent_date date, playbook varchar, sent bigint, "
        "responded bigint, converted bigint, response_rate double, conversion_rate double)"
    )
    daily = []
    for day in range(7):
        sent_date = AS_OF - dt.timedelta(days=7 - day)
        for playbook, base, responded_per_day in (
            ("post_purchase_care", 110, (12, 15, 19, 14, 22, 18, 20)),
            ("dormant_winback", 40, (3, 5, 4, 6, 4, 5, 4)),
            ("complaint_recovery", 5, (4, 5, 3, 5, 4, 5, 4)),
        ):
            sent = base + (day * 7) % 11
            responded = responded_per_day[day]
            converted = responded // 3
            daily.append(
                (sent_date, playbook, sent, responded, converted, _rate(responded, sent),
                 _rate(converted, sent))
            )  # fmt: skip
    _insert(
        con,
        "campaign_performance_daily",
        "sent_date, playbook, sent, responded, converted, response_rate, conversion_rate",
        daily,
    )

    con.execute(
        "create table campaign_breakdown (dimension varchar, value varchar, playbook varchar, "
        "sent bigint, responded bigint, converted bigint, response_rate double, "
        "conversion_rate double)"
    )
    breakdown = [
        ("tier", "diamond", "post_purchase_care", 120, 31, 18),
        ("tier", "gold", "post_purchase_care", 260, 52, 25),
        ("tier", "silver", "post_purchase_care", 416, 60, 25),
        ("owner", "S001", "post_purchase_care", 500, 95, 45),
        ("owner", "S002", "dormant_winback", 290, 31, 14),
        ("channel", "sms", "post_purchase_care", 796, 143, 68),
        ("channel", "email", "dormant_winback", 290, 31, 14),
        ("variant", "sms_a", "post_purchase_care", 400, 62, 24),
        ("variant", "sms_b", "post_purchase_care", 396, 81, 44),
    ]
    _insert(
        con,
        "campaign_breakdown",
        "dimension, value, playbook, sent, responded, converted, response_rate, conversion_rate",
        [(*r, _rate(r[4], r[3]), _rate(r[5], r[3])) for r in breakdown],
    )

    con.execute(
        "create table followup_execution (planned_for date, playbook varchar, channel varchar, "
        "planned bigint, done bigint, execution_rate double, avg_lag_minutes double)"
    )
    execution = [
        (YESTERDAY, "post_purchase_care", "sms", 118, 115, 9.5),
        (YESTERDAY, "complaint_recovery", "call", 6, 5, 120.0),
        (AS_OF, "post_purchase_care", "sms", 121, 112, 11.0),
        (AS_OF, "dormant_winback", "email", 44, 41, 25.0),
        (AS_OF, "complaint_recovery", "call", 7, 4, 95.0),
    ]
    _insert(
        con,
        "followup_execution",
        "planned_for, playbook, channel, planned, done, execution_rate, avg_lag_minutes",
        [(d, p, c, pl, dn, _rate(dn, pl), lag) for d, p, c, pl, dn, lag in execution],
    )

    con.execute(
        "create table feedback_summary (playbook varchar, responses bigint, "
        "csat_responses bigint, csat double, nps_responses bigint, nps double, "
        "very_satisfied bigint, satisfied bigint, neutral bigint, unsatisfied bigint)"
    )
    _insert(
        con,
        "feedback_summary",
        "playbook, responses, csat_responses, csat, nps_responses, nps, very_satisfied, "
        "satisfied, neutral, unsatisfied",
        [
            ("(all)", 46, 28, 20 / 28, 18, 22.2, 12, 8, 5, 3),
            ("post_purchase_care", 30, 20, 15 / 20, 12, 25.0, 9, 6, 3, 2),
            ("dormant_winback", 9, 5, 3 / 5, 6, 16.7, 2, 1, 1, 1),
            ("complaint_recovery", 7, 3, 2 / 3, 0, None, 1, 1, 1, 0),
        ],
    )

    con.execute(
        "create table feedback_categories (playbook varchar, category varchar, "
        "responses bigint, share double)"
    )
    categories = [
        ("post_purchase_care", "logistics", 6),
        ("post_purchase_care", "function", 3),
        ("post_purchase_care", "service", 1),
        ("dormant_winback", "price", 4),
        ("dormant_winback", "other", 1),
        ("complaint_recovery", "service", 3),
    ]
    totals: dict[str, int] = {}
    for playbook, _, responses in categories:
        totals[playbook] = totals.get(playbook, 0) + responses
    _insert(
        con,
        "feedback_categories",
        "playbook, category, responses, share",
        [(p, c, r, r / totals[p]) for p, c, r in categories],
    )

    con.execute(
        "create table channel_mix (playbook varchar, channels varchar, customers bigint, "
        "converted bigint, conversion_rate double)"
    )
    mix = [
        ("post_purchase_care", "sms", 700, 58),
        ("post_purchase_care", "call+sms", 96, 10),
        ("dormant_winback", "email", 250, 11),
        ("dormant_winback", "email+sms", 40, 3),
        ("complaint_recovery", "call", 36, 2),
    ]
    _insert(
        con,
        "channel_mix",
        "playbook, channels, customers, converted, conversion_rate",
        [(p, c, n, k, _rate(k, n)) for p, c, n, k in mix],
    )

    con.execute(
        "create table followup_kpis (metric varchar, value double, numerator double, "
        "denominator double, definition varchar)"
    )
    _insert(con, "followup_kpis", "metric, value, numerator, denominator, definition", KPIS)

    con.execute(
        "create table ab_arms (experiment varchar, variant varchar, is_control boolean, "
        "weight double, min_sample bigint, n bigint, conversions bigint)"
    )
    _insert(
        con,
        "ab_arms",
        "experiment, variant, is_control, weight, min_sample, n, conversions",
        AB_ARMS,
    )

    con.execute(
        "create table ab_results (experiment varchar, variant varchar, is_control boolean, "
        "n bigint, conversions bigint, rate double, rate_ci_low double, rate_ci_high double, "
        "abs_lift double, ci_low double, ci_high double, rel_lift double, rel_ci_low double, "
        "rel_ci_high double, p_value double, chance_to_beat_control double, "
        "srm_p_value double, min_sample bigint, decision varchar)"
    )
    columns = list(AB_RESULTS[1])
    _insert(
        con,
        "ab_results",
        ", ".join(columns),
        [tuple(row.get(c) for c in columns) for row in AB_RESULTS],
    )
