"""The demo's story: weeks of follow-ups, their feedback and the orders that followed, simulated
set-based so that `followup demo` has something to analyse, and one A/B variant that truly works
better, so the statistics have something to find.

A full daily run per simulated day would take minutes; instead the past is simulated in one
pass over the loaded data, and the real pipeline (build, plan, dispatch, feedback, report) runs for
the last day. What the past applies: the order-anchored playbook steps that run an experiment
(variants or a holdout, `after` a first or any paid order), their send times in the business
timezone, marketing consent,
the steps' variants and holdouts with the plan's own hash buckets, and the plan's own message ids.
What it leaves out, on purpose: caps, arbitration between playbooks, exits and audiences. Those are
the real planner's job, and the simulated ledger rows say `reason = 'demo simulation'`.

The truth the simulation plants (`TRUTH`): for the experiment `post_purchase_journey.day3_care`,
the `care_coupon` variant brings an extra order from 30 % of its customers against 5 % for the
`care` control (on top of what they order anyway); the other arms respond and convert at base
rates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import polars as pl

from flows.atomic import transaction
from flows.ledger import idempotency_key, message_id

EXPERIMENT = "post_purchase_journey.day3_care"
SIM_PREFIX = "SIM-"  # the ids of the orders the simulation plants
BETTER_VARIANT = "care_coupon"


@dataclass(frozen=True)
class Arm:
    response: float  # chance a delivered message is answered (reply, click or survey)
    conversion: float  # chance of an extra paid order within two weeks, on top of organic ones
    satisfied: float  # chance a survey score is 4 or 5


BASE = Arm(response=0.12, conversion=0.04, satisfied=0.72)
TRUTH = {
    "care": Arm(response=0.12, conversion=0.05, satisfied=0.70),
    "care_coupon": Arm(response=0.18, conversion=0.30, satisfied=0.78),
    "value_for_money": Arm(response=0.25, conversion=0.04, satisfied=0.68),
    "after_sales": Arm(response=0.30, conversion=0.05, satisfied=0.80),
}
DELIVERY_FAILURE = 0.03
CONSENT = {"sms": "consent_sms", "email": "consent_email", "im": "consent_sms"}
# the plan's variant bucket: dbt macro hash_unit over `<playbook>.<step>:<customer_id>`
_BUCKET = (
    "cast(('0x' || substr(md5(m.playbook || '.' || m.step || ':' || m.customer_id), 1, 8)) "
    "as ubigint) / 4294967296.0"
)
_CATEGORIES = ["function", "service", "price", "logistics", "other"]
_CATEGORY_WORDS = {"function": "功能", "service": "服务", "price": "价格", "logistics": "物流"}
_CATEGORY_WORDS["other"] = "其他"
_SATISFACTION_WORDS = {5: "非常满意", 4: "满意", 3: "一般", 2: "不满意", 1: "不满意"}
_TEXTS = {
    "function": "用起来挺顺手，希望再多几个颜色",
    "service": "客服回复很及时，点赞",
    "price": "价格再优惠一点就更好了",
    "logistics": "快递有点慢，包装不错",
    "other": "整体还可以",
}


@dataclass
class Story:
    start: dt.date
    end: dt.date
    messages: int
    held_out: int
    feedback_rows: int
    later_orders: int
    feedback_file: Path
    orders_file: Path


def simulate_history(
    db_path: Path, start: dt.date, end: dt.date, out_dir: Path, business_tz: str, seed: int = 7
) -> Story:
    """Write the simulated ledger rows for the days `start`..`end` into the database, and the
    feedback and later orders they caused as files in `out_dir` (`feedback.csv`, and
    `orders.csv` for the ingest), for the real flows to load."""
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))
    try:
        messages = _messages(con, start, end, business_tz)
        rng = np.random.default_rng(seed)
        ledger = _ledger_rows(messages)
        feedback, orders = _outcomes(ledger, rng, end, business_tz)
        with transaction(con):
            con.register("simulated", ledger.drop("bucket").to_arrow())
            con.execute(
                """
                insert into message_ledger by name
                select * from simulated
                where idempotency_key not in (select idempotency_key from message_ledger)
                """
            )
    finally:
        con.close()
    feedback_file, orders_file = out_dir / "feedback.csv", out_dir / "orders.csv"
    feedback.write_csv(feedback_file)
    # the shop's back office exports its orders as Excel opens them: GB18030, CRLF, Chinese
    # headers, the marketplace's statuses and amounts such as ¥1,299.00
    orders_file.write_bytes(orders.write_csv(line_terminator="\r\n").encode("gb18030"))
    return Story(
        start=start,
        end=end,
        messages=ledger.filter(pl.col("status") == "sent").height,
        held_out=ledger.filter(pl.col("status") == "held_out").height,
        feedback_rows=feedback.height,
        later_orders=orders.height,
        feedback_file=feedback_file,
        orders_file=orders_file,
    )


def _messages(
    con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date, tz: str
) -> pl.DataFrame:
    """Every order-anchored message step due between `start` and `end`, with its variant."""
    consent = " ".join(f"when '{ch}' then c.{col}" for ch, col in CONSENT.items())
    result = con.sql(
        f"""
        with paid as (
            select order_id, customer_id, ordered_at, product_category,
                row_number() over (partition by customer_id order by ordered_at, order_id) as nth
            from raw.orders
            -- the orders this simulation planted are outcomes, not anchors: a second demo on
            -- the same database must simulate the same past, not one grown from the first
            where coalesce(status, 'paid') = 'paid' and not starts_with(order_id, '{SIM_PREFIX}')
        ),
        anchors as (
            select 'paid_order' as anchor, * from paid
            union all
            select 'first_paid_order' as anchor, * from paid where nth = 1
        ),
        steps as (
            select * from config.playbook_steps
            where trigger_kind = 'after' and anchor in ('paid_order', 'first_paid_order')
              and not is_task and send_at is not null
              and (playbook, step) in (
                  select (playbook, step) from config.playbook_variants where variant != 'default'
              )
        ),
        due as (
            select s.playbook, s.step, s.channel, s.purpose, s.priority, a.customer_id,
                a.order_id as anchor_id,
                timezone('{tz}', cast(cast(timezone('{tz}', a.ordered_at) as date)
                    + cast(s.offset_minutes / 1440 as integer) as timestamp)
                    + to_minutes(s.send_at_minutes)) as due_at
            from steps s join anchors a using (anchor)
        ),
        m as (
            select due.*, c.owner_id, c.email,
                case due.channel {consent} end as has_consent
            from due join raw.customers c using (customer_id)
            where cast(timezone('{tz}', due.due_at) as date) between ? and ?
        )
        select m.playbook, m.step, m.channel, m.purpose, m.priority, m.customer_id, m.anchor_id,
            m.owner_id, m.due_at, v.variant, {_BUCKET} as bucket
        from m
        join config.playbook_variants v
          on v.playbook = m.playbook and v.step = m.step
         and {_BUCKET} >= v.bucket_low and {_BUCKET} < v.bucket_high
        where (m.purpose = 'service' or coalesce(m.has_consent, false))
          and (m.channel != 'email' or m.email is not null)
        -- a fixed order, so that the seeded draws fall on the same messages every time
        order by m.due_at, m.customer_id, m.playbook, m.step, m.anchor_id
        """,
        params=[start, end],
    )
    return pl.from_arrow(result.to_arrow_table())


def _ledger_rows(messages: pl.DataFrame) -> pl.DataFrame:
    keys = [
        idempotency_key(p, s, c, a)
        for p, s, c, a in messages.select("playbook", "step", "customer_id", "anchor_id").rows()
    ]
    held = pl.col("variant") == "holdout"
    return messages.with_columns(
        pl.Series("idempotency_key", keys),
        pl.Series("message_id", [message_id(k) for k in keys]),
        pl.col("due_at").dt.date().alias("first_due_date"),
        pl.col("due_at").dt.date().alias("planned_for"),
        pl.col("due_at").dt.date().alias("decided_on"),
        pl.when(held).then(pl.lit("held_out")).otherwise(pl.lit("sent")).alias("status"),
        pl.lit("demo simulation").alias("reason"),
        pl.when(held).then(0).otherwise(1).alias("attempts"),
        pl.col("due_at").alias("created_at"),
        pl.col("due_at").alias("updated_at"),
        pl.when(held).then(None).otherwise(pl.col("due_at")).alias("sent_at"),
        pl.lit("plan").alias("origin"),
    )


def _outcomes(
    ledger: pl.DataFrame, rng: np.random.Generator, end: dt.date, tz: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Delivery receipts, answers and survey scores, and the extra orders the messages caused
    (none for the holdout: its customers only order as they would have anyway)."""
    sent = ledger.filter(pl.col("status") == "sent")
    n = sent.height
    arms = [TRUTH.get(v, BASE) for v in sent["variant"]]
    response = np.array([a.response for a in arms])
    conversion = np.array([a.conversion for a in arms])
    satisfied = np.array([a.satisfied for a in arms])
    delivered = rng.random(n) >= DELIVERY_FAILURE
    answered = delivered & (rng.random(n) < response)
    # most answers come within hours, a tail after the 72-hour window
    delay_hours = rng.exponential(14.0, n)
    converts = rng.random(n) < conversion
    order_delay_days = rng.uniform(0.2, 13.5, n)
    score = np.where(
        rng.random(n) < satisfied, rng.choice([4, 5], n, p=[0.45, 0.55]), rng.choice([1, 2, 3], n)
    )
    nps = np.where(score >= 4, rng.choice([8, 9, 10], n), rng.choice(range(0, 8), n))
    category = rng.choice(_CATEGORIES, n, p=[0.3, 0.3, 0.2, 0.15, 0.05])
    with_text = rng.random(n) < 0.3
    cutoff = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=ZoneInfo(tz))

    rows = []
    for i, (mid, customer, step, sent_at) in enumerate(
        sent.select("message_id", "customer_id", "step", "sent_at").rows()
    ):
        receipt_at = sent_at + dt.timedelta(minutes=1)
        if receipt_at < cutoff:
            outcome = "delivered" if delivered[i] else "failed"
            rows.append(_Feedback(mid, customer, _local(receipt_at, tz), "送达回执", outcome))
        answered_at = sent_at + dt.timedelta(hours=float(delay_hours[i]))
        if not answered[i] or answered_at >= cutoff:
            continue
        answered_at = _local(answered_at, tz)
        # half the answers come back through the survey link; the care step asks 0–10 (NPS)
        link = f"https://survey.example.com/s?m={mid}" if i % 2 else mid
        if step == "day3_care":
            rows.append(
                _Feedback(
                    link,
                    customer,
                    answered_at,
                    "问卷",
                    score=int(nps[i]),
                    scale="NPS",
                    category=_CATEGORY_WORDS[category[i]],
                )
            )
        elif step == "survey":
            rows.append(
                _Feedback(
                    link,
                    customer,
                    answered_at,
                    "问卷",
                    score=int(score[i]),
                    scale="CSAT",
                    satisfaction=_SATISFACTION_WORDS[int(score[i])],
                    category=_CATEGORY_WORDS[category[i]],
                    text=_TEXTS[category[i]] if with_text[i] else None,
                )
            )
        else:
            rows.append(_Feedback(mid, customer, answered_at, "点击"))
    feedback = pl.DataFrame(rows, schema=_FEEDBACK_SCHEMA, orient="row")

    amounts = np.round(rng.lognormal(5.6, 0.6, n), 2)
    orders = []
    for i, (mid, customer, sent_at) in enumerate(
        sent.select("message_id", "customer_id", "sent_at").rows()
    ):
        ordered_at = sent_at + dt.timedelta(days=float(order_delay_days[i]))
        if converts[i] and ordered_at < cutoff:
            orders.append(
                (
                    f"{SIM_PREFIX}{mid[:13]}",
                    customer,
                    _local(ordered_at, tz),
                    f"¥{amounts[i]:,.2f}",
                    _PAID_LABELS[i % len(_PAID_LABELS)],
                )
            )
    schema = {k: pl.String for k in ("订单编号", "会员ID", "订单创建时间", "实付金额", "交易状态")}
    return feedback, pl.DataFrame(orders, schema=schema, orient="row")


# what a marketplace calls a paid order, by how far it got
_PAID_LABELS = ("交易成功", "买家已付款", "卖家已发货", "已签收")


_FEEDBACK_SCHEMA = {
    "消息ID": pl.String,
    "客户ID": pl.String,
    "反馈时间": pl.String,
    "反馈类型": pl.String,
    "outcome": pl.String,
    "score": pl.Int64,
    "量表": pl.String,
    "满意度": pl.String,
    "问题类型": pl.String,
    "text": pl.String,
}


class _Feedback(NamedTuple):
    """One row of the simulated feedback export, in its columns' order."""

    message: str
    customer: str
    at: str
    kind: str
    outcome: str | None = None
    score: int | None = None
    scale: str | None = None
    satisfaction: str | None = None
    category: str | None = None
    text: str | None = None


def _local(at: dt.datetime, tz: str) -> str:
    """A time as the exports write it: local to the business, without a zone."""
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")
