"""A small generated company (seeded), written once as the pipeline's raw tables and once as the
reference scheduler's `World`, so that the two are fed the same facts.

Every customer is drawn from a few archetypes that exercise the rules of
docs/schedule-rules.md: a first order, a refund of the only order (the order itself refunded),
a second refund within 30 days, a prospect without a paid order, customers without an owner,
without a time zone or in New York, without an industry, with replies, with a complaint ticket
resolved and reopened, with opt-outs (one channel or all), with orders after an anchor (exits),
several follow-ups a day (caps that defer), an owner whose daily capacity is one call, contracts
near their end and going live, lapsed logins (churn warning), birthdays, big spenders (high
value) and customers who bought nothing for months (dormant).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import duckdb

from tests.planning.reference.scheduler import (
    Complaint,
    Contract,
    Customer,
    Event,
    Order,
    Profile,
    Reply,
    Staff,
    World,
)

BUSINESS_TZ = "Asia/Shanghai"
SH = ZoneInfo(BUSINESS_TZ)
NEW_YORK = "America/New_York"

STAFF = [
    # staff_id, role, industries (';'), daily_capacity
    ("S1", "sales", "education", 3),
    ("S2", "service", "retail", 1),  # an owner at daily_capacity after one call
    ("S3", "sales", "saas;retail", None),  # no limit
    ("S4", "manager", "education", 5),  # not assignable
]


@dataclass
class Company:
    start: dt.date  # the first run date
    days: int
    customers: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    contracts: list[dict] = field(default_factory=list)
    feedback: list[dict] = field(default_factory=list)
    staff: list[dict] = field(default_factory=list)

    # ------------------------------------------------------------ the raw tables

    def write(self, con: duckdb.DuckDBPyConnection, *, append: bool = False) -> None:
        """Into the raw tables (`ensure_schema` made them), with the bookkeeping a load adds;
        in place of what they held, or `append`ed to it."""
        for table, rows, key in (
            ("customers", self.customers, "customer_id"),
            ("staff", self.staff, "staff_id"),
            ("orders", self.orders, "order_id"),
            ("events", self.events, "event_id"),
            ("contracts", self.contracts, "contract_id"),
            ("feedback", self.feedback, "feedback_id"),
        ):
            if not append:
                con.execute(f"delete from raw.{table}")
            for row in rows:
                values = {
                    **{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in row.items()},
                    "_key": row[key],
                    "_load_id": "generated",
                    "_source_file": "generated",
                }
                names = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                con.execute(
                    f"insert into raw.{table} ({names}) values ({marks})", list(values.values())
                )

    def __add__(self, other: Company) -> Company:
        """Both companies' facts (a small case added to the generated company)."""
        return Company(
            self.start,
            self.days,
            *(
                [*getattr(self, name), *getattr(other, name)]
                for name in ("customers", "orders", "events", "contracts", "feedback")
            ),
            staff=self.staff,
        )

    # ------------------------------------------------------------ the reference's world

    def world(self, profiles: Callable[[dt.date], dict[str, Profile]]) -> World:
        customers = [
            Customer(
                customer_id=c["customer_id"],
                timezone=c["timezone"],
                customer_type=c["customer_type"] or "person",  # the input's default
                industry=c["industry"],
                owner_id=c["owner_id"],
                has_phone=c["phone"] is not None,
                has_email=c["email"] is not None,
                consent_sms=bool(c["consent_sms"]),
                consent_email=bool(c["consent_email"]),
                consent_phone=bool(c["consent_phone"]),
            )
            for c in self.customers
        ]
        orders = [
            Order(
                o["order_id"],
                o["customer_id"],
                o["ordered_at"],
                (o["status"] or "paid") == "paid",
                o["product_category"],
            )
            for o in self.orders
        ]
        events = [
            Event(
                e["event_id"],
                e["customer_id"],
                e["event_type"],
                e["occurred_at"],
                dict(e["attributes"] or {}),
            )
            for e in self.events
        ]
        # a complaint's ticket: its resolution after the complaint, and the first reopening
        complaints = []
        by_ticket: dict[str, list[dict]] = {}
        for e in self.events:
            ticket = (e["attributes"] or {}).get("ticket_id")
            if ticket:
                by_ticket.setdefault(ticket, []).append(e)
        for ticket, rows in sorted(by_ticket.items()):
            rows.sort(key=lambda e: e["occurred_at"])
            complained = [e for e in rows if e["event_type"] == "complaint"]
            if not complained:
                continue
            resolved = [
                e
                for e in rows
                if e["event_type"] == "ticket_resolved"
                and e["occurred_at"] >= complained[0]["occurred_at"]
            ]
            if not resolved:
                continue
            at = resolved[0]["occurred_at"]
            reopened = [
                e["occurred_at"]
                for e in rows
                if e["event_type"] in ("ticket_opened", "complaint") and e["occurred_at"] > at
            ]
            complaints.append(
                Complaint(ticket, complained[0]["customer_id"], at, min(reopened, default=None))
            )
        contracts = [
            Contract(
                k["contract_id"], k["customer_id"], k["signed_at"], k["go_live_at"], k["ends_at"]
            )
            for k in self.contracts
        ]
        replies = [
            Reply(f["customer_id"], f["responded_at"])
            for f in self.feedback
            if f["response_type"] == "reply"
        ]
        staff = [
            Staff(s["staff_id"], s["role"], tuple(s["industries"].split(";")), s["daily_capacity"])
            for s in self.staff
        ]
        return World(
            customers=customers,
            orders=orders,
            events=events,
            complaints=complaints,
            contracts=contracts,
            replies=replies,
            staff=staff,
            profiles=profiles,
            business_tz=BUSINESS_TZ,
        )


class _Maker:
    def __init__(self, seed: int, start: dt.date, days: int) -> None:
        self.rng = random.Random(seed)
        self.company = Company(start=start, days=days)
        self.start = start
        self.days = days
        self.n = 0

    def id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n:04d}"

    def moment(self, first: int, last: int, tz: ZoneInfo = SH) -> dt.datetime:
        """A time between `first` and `last` days after the start (negative: before), now and
        then exactly at midnight or just before it."""
        day = self.start + dt.timedelta(days=self.rng.randint(first, last))
        roll = self.rng.random()
        if roll < 0.06:
            clock = dt.time(0, 0)
        elif roll < 0.12:
            clock = dt.time(23, 55)
        else:
            clock = dt.time(self.rng.randint(0, 23), self.rng.choice((0, 5, 30, 45)))
        return dt.datetime.combine(day, clock, tzinfo=tz)

    def in_window(self, tz: ZoneInfo = SH) -> dt.datetime:
        return self.moment(-20, self.days)

    def order(self, customer: str, at: dt.datetime, amount: float, status: str | None = "paid"):
        self.company.orders.append(
            {
                "order_id": self.id("O"),
                "customer_id": customer,
                "ordered_at": at,
                "amount": amount,
                "status": status,
                "product_category": self.rng.choice(("books", "course", "gear", None)),
            }
        )

    def event(self, customer: str, kind: str, at: dt.datetime, **attributes) -> str:
        event_id = self.id("E")
        self.company.events.append(
            {
                "event_id": event_id,
                "customer_id": customer,
                "event_type": kind,
                "occurred_at": at,
                "attributes": attributes or None,
            }
        )
        return event_id


def generate(seed: int, start: dt.date, days: int, customers: int = 40) -> Company:
    """A company whose history runs up to the last run date (a run sees only its past); now and
    then a fact at exactly 00:00 in the business zone, or just before it."""
    m = _Maker(seed, start, days)
    rng = m.rng
    company = m.company
    company.staff = [
        {"staff_id": s, "name": s, "role": r, "industries": i, "daily_capacity": c}
        for s, r, i, c in STAFF
    ]
    for index in range(customers):
        cid = f"C{index:03d}"
        roll = rng.random()
        tz_name = None if roll < 0.75 else (NEW_YORK if roll < 0.9 else BUSINESS_TZ)
        tz = ZoneInfo(tz_name) if tz_name else SH
        kind = rng.choice(("person", "person", "company"))
        industry = rng.choice(("education", "education", "retail", "saas", None))
        owner = rng.choice((None, None, "S1", "S2", "S2", "S3"))
        birthday = dt.date(1990, rng.randint(1, 12), rng.randint(1, 28))
        company.customers.append(
            {
                "customer_id": cid,
                "name": f"客户{cid}",
                "phone": None if rng.random() < 0.08 else f"138{index:08d}",
                "email": None if rng.random() < 0.3 else f"{cid.lower()}@example.com",
                "customer_type": kind,
                "industry": industry,
                "owner_id": owner,
                "timezone": tz_name,
                "birthday": birthday,
                "consent_sms": rng.random() < 0.8,
                "consent_email": rng.random() < 0.7,
                "consent_phone": rng.random() < 0.8,
            }
        )
        # purchase history: none (a prospect), a few orders, or a big spender
        shape = rng.random()
        if shape < 0.15:
            pass  # a prospect without a paid order
        elif shape < 0.25:  # one order, refunded (the refund of the only order)
            at = m.moment(-40, days - 10)
            m.order(cid, at, 300, "refunded")
            m.event(cid, "refund", at + dt.timedelta(days=2, hours=3))
        elif shape < 0.35:  # a big spender: high value, a high tier
            for _ in range(rng.randint(12, 18)):
                m.order(cid, m.moment(-150, days - 5, tz), rng.choice((3000, 6000, 9000)))
        elif shape < 0.45:  # bought long ago only: dormant
            for _ in range(rng.randint(1, 3)):
                m.order(cid, m.moment(-300, -95, tz), rng.randint(50, 800))
        else:
            for _ in range(rng.randint(1, 5)):
                status = "paid" if rng.random() < 0.85 else rng.choice(("cancelled", "refunded"))
                m.order(cid, m.moment(-120, days, tz), rng.randint(50, 3000), status)
        if rng.random() < 0.25:  # refunds, a second one within 30 days
            first = m.in_window()
            m.event(cid, rng.choice(("refund", "course_refund")), first)
            if rng.random() < 0.5:
                m.event(cid, "refund", first + dt.timedelta(days=rng.randint(1, 40), hours=2))
        if rng.random() < 0.3:
            m.event(cid, "trial_class", m.in_window())
        if rng.random() < 0.2:
            m.event(cid, "course_stage_completed", m.in_window(), stage="2")
        if rng.random() < 0.25:
            intent, form = rng.choice((("A", "web"), ("A", "web"), ("B", "web"), ("A", "app")))
            m.event(cid, "lead_created", m.in_window(), lead_id=m.id("L"), intent=intent, form=form)
        if rng.random() < 0.25:  # a complaint ticket, resolved, sometimes reopened
            ticket = m.id("T")
            complained = m.in_window()
            resolved = complained + dt.timedelta(hours=rng.randint(1, 60))
            m.event(cid, "complaint", complained, ticket_id=ticket)
            m.event(cid, "ticket_resolved", resolved, ticket_id=ticket)
            if rng.random() < 0.4:
                m.event(
                    cid,
                    "ticket_opened",
                    resolved + dt.timedelta(hours=rng.randint(2, 80)),
                    ticket_id=ticket,
                )
        if rng.random() < 0.5:  # logins; a lapsed one makes a churn warning
            for _ in range(rng.randint(1, 3)):
                m.event(cid, "login", m.moment(-80, days - 30))
        if rng.random() < 0.12:
            scope = rng.choice(("sms", "email", "all", None))
            attributes = {"channel": scope} if scope else {}
            m.event(cid, "opt_out", m.in_window(), **attributes)
        if rng.random() < 0.25:
            for _ in range(rng.randint(1, 2)):
                company.feedback.append(
                    {
                        "feedback_id": m.id("F"),
                        "message_id": None,
                        "customer_id": cid,
                        "responded_at": m.in_window(),
                        "response_type": rng.choice(("reply", "reply", "click")),
                    }
                )
        if kind == "company" and rng.random() < 0.8:
            signed = m.moment(-400, days - 20)
            go_live = signed + dt.timedelta(days=rng.randint(5, 60), hours=rng.randint(0, 9))
            ends = m.moment(10, days + 70)
            company.contracts.append(
                {
                    "contract_id": m.id("K"),
                    "customer_id": cid,
                    "signed_at": signed,
                    "go_live_at": go_live,
                    "ends_at": ends,
                    "value": 10000,
                }
            )
    company.events.sort(key=lambda e: e["occurred_at"])
    return company
