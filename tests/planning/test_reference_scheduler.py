"""The reference scheduler (reference/scheduler.py) on tiny cases computed by hand from
docs/schedule-rules.md. Working days here are Monday to Friday; 2026-11-23 is a Monday."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from flows.planning.declarations import Playbook
from flows.planning.policy import Policy
from tests.planning.reference.scheduler import (
    Customer,
    Due,
    Event,
    Order,
    Profile,
    Staff,
    World,
    simulate,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
WINDOWS = {
    "sms": ("09:00", "20:00"),
    "email": ("08:00", "21:00"),
    "im": ("09:00", "21:00"),
    "call": ("09:00", "18:00"),
    "visit": ("09:00", "18:00"),
}
POLICY = Policy.load()


def at(text: str, tz: ZoneInfo = SH) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def customer(cid: str = "c1", **changes) -> Customer:
    base = Customer(
        customer_id=cid,
        timezone=None,
        customer_type="person",
        industry="education",
        owner_id=None,
        has_phone=True,
        has_email=True,
        consent_sms=True,
        consent_email=True,
        consent_phone=True,
    )
    return dataclasses.replace(base, **changes)


def world(customers, orders=(), events=(), staff=(), profiles=None) -> World:
    return World(
        customers=list(customers),
        orders=list(orders),
        events=list(events),
        complaints=[],
        contracts=[],
        replies=[],
        staff=list(staff),
        profiles=profiles or (lambda run: {}),
        send_windows=WINDOWS,
        is_workday=lambda d: d.weekday() < 5,
    )


def playbook(name: str, trigger: dict, step: dict, **fields) -> Playbook:
    return Playbook.model_validate(
        {
            "name": name,
            "description": name,
            "purpose": fields.pop("purpose", "service"),
            "priority": fields.pop("priority", 50),
            "trigger": trigger,
            "steps": [step],
            **fields,
        }
    )


def fates(result, cid: str = "c1"):
    return [f for f in result.ledger if f.customer_id == cid]


def test_refund_reentry_after_days_removes_a_second_refund_within_the_window():
    refund = playbook(
        "refund_winback",
        {"kind": "after", "anchor": "refund"},
        {"name": "offer", "offset": "3d", "at": "10:00", "channel": "sms"},
        purpose="marketing",
        reentry={"rule": "after_days", "days": 30},
    )
    events = [
        Event("e1", "c1", "refund", at("2026-11-02T12:00"), {}),
        Event("e2", "c1", "course_refund", at("2026-11-12T12:00"), {}),
    ]
    first, second = simulate(
        world([customer()], events=events), [refund], POLICY, [day("2026-11-05"), day("2026-11-15")]
    )
    assert first.due == [Due("c1", "refund_winback", "offer", at("2026-11-05T10:00"), None)]
    assert second.due == [Due("c1", "refund_winback", "offer", at("2026-11-15T10:00"), "reentry")]
    assert [f.status for f in fates(second)] == ["planned", "suppressed"]
    assert fates(second)[1].reason.startswith("re-entry: ")


def test_prospect_without_paid_order_gets_the_trial_class_call_and_a_buyer_exits():
    trial = playbook(
        "trial_class_followup",
        {"kind": "after", "anchor": "trial_class"},
        {"name": "call", "offset": "24h", "channel": "call"},
        purpose="marketing",
        exit=["ordered_again"],
    )
    events = [
        Event("t1", "c1", "trial_class", at("2026-11-23T14:00"), {}),
        Event("t2", "c2", "trial_class", at("2026-11-23T14:00"), {}),
    ]
    orders = [Order("o1", "c2", at("2026-11-23T20:00"), is_paid=True)]
    staff = [Staff("s1", "sales", ("education",), 5)]
    w = world([customer("c1"), customer("c2")], orders, events, staff)
    (run,) = simulate(w, [trial], POLICY, [day("2026-11-24")])
    assert [d.removed_by for d in run.due] == [None, "exit"]
    (call,) = fates(run, "c1")
    assert (call.status, call.due_at, call.channel, call.owner_id) == (
        "planned",
        at("2026-11-24T14:00"),
        "call",
        "s1",
    )
    (exited,) = fates(run, "c2")
    assert (exited.status, exited.reason) == ("exited", "ordered again on 2026-11-23")


def _survey(late_by: str) -> Playbook:
    return playbook(
        "new_buyer_satisfaction",
        {"kind": "after", "anchor": "first_paid_order"},
        {"name": "survey", "offset": "7d", "at": "10:00", "channel": "sms", "late_by": late_by},
    )


def test_a_missed_day_is_caught_up_by_the_next_run_unless_too_late():
    orders = [Order("o1", "c1", at("2026-11-15T12:00"), is_paid=True)]  # survey due 11-22 10:00
    runs = [day("2026-11-21"), day("2026-11-23")]  # the run of 11-22 did not happen
    w = world([customer()], orders)
    _, caught = simulate(w, [_survey("3d")], POLICY, runs)
    assert caught.due == [
        Due("c1", "new_buyer_satisfaction", "survey", at("2026-11-22T10:00"), None)
    ]
    assert [(f.status, f.planned_for) for f in caught.ledger] == [("planned", day("2026-11-23"))]
    _, late = simulate(w, [_survey("0d")], POLICY, runs)
    assert [d.removed_by for d in late.due] == ["too_late"]
    assert [(f.status, f.reason) for f in late.ledger] == [
        ("suppressed", "too late: due 2026-11-22")
    ]


def test_a_call_half_an_hour_after_yesterdays_lead_is_due_at_nine_on_the_next_working_day():
    hot = playbook(
        "hot_lead",
        {"kind": "after", "anchor": "lead_created", "where": {"intent": "A", "form": "web"}},
        {"name": "call", "offset": "30m", "channel": "call"},
    )
    web_a = {"intent": "A", "form": "web"}
    events = [
        Event("l1", "c1", "lead_created", at("2026-11-24T15:00"), web_a),  # Tuesday
        Event("l2", "c2", "lead_created", at("2026-11-20T15:00"), web_a),  # Friday
        Event("l3", "c3", "lead_created", at("2026-11-24T15:00"), {"intent": "B", "form": "web"}),
    ]
    w = world([customer("c1"), customer("c2"), customer("c3")], events=events)
    (monday,) = simulate(w, [hot], POLICY, [day("2026-11-23")])
    assert monday.due == [Due("c2", "hot_lead", "call", at("2026-11-23T09:00"), None)]
    (wednesday,) = simulate(w, [hot], POLICY, [day("2026-11-25")])
    assert wednesday.due == [Due("c1", "hot_lead", "call", at("2026-11-25T09:00"), None)]


def test_a_new_york_customer_is_due_at_ten_new_york_time_on_the_business_date():
    survey = playbook(
        "survey",
        {"kind": "after", "anchor": "paid_order"},
        {"name": "sms", "offset": "3d", "at": "10:00", "channel": "sms"},
    )
    orders = [Order("o1", "c1", at("2026-11-10T12:00", NY), is_paid=True)]
    w = world([customer(timezone="America/New_York")], orders)
    before, on_the_day = simulate(w, [survey], POLICY, [day("2026-11-12"), day("2026-11-13")])
    assert before.due == []
    (due,) = on_the_day.due
    assert due.due_at == at("2026-11-13T10:00", NY) == at("2026-11-13T23:00")
    assert [(f.status, f.planned_for) for f in on_the_day.ledger] == [
        ("planned", day("2026-11-13"))
    ]


def test_a_follow_up_deferred_by_a_cap_exits_when_the_customer_orders_before_its_new_day():
    trigger = {"kind": "after", "anchor": "lead_created"}
    step = {"name": "offer", "offset": "1d", "at": "10:00", "channel": "sms"}
    first = playbook("first", trigger, step, purpose="marketing", priority=90)
    second = playbook("second", trigger, step, purpose="marketing", exit=["ordered_again"])
    events = [Event("l1", "c1", "lead_created", at("2026-11-22T15:00"), {})]
    orders = [Order("o1", "c1", at("2026-11-24T12:00"), is_paid=True)]
    runs = [day("2026-11-23"), day("2026-11-24"), day("2026-11-25"), day("2026-11-26")]
    results = simulate(world([customer()], orders, events), [first, second], POLICY, runs)
    # marketing at most 1 per 3 days: the 23rd blocks the 23rd to the 25th
    assert [(f.playbook, f.status, f.planned_for) for f in results[0].ledger] == [
        ("first", "planned", day("2026-11-23")),
        ("second", "deferred", day("2026-11-26")),
    ]
    assert results[2].ledger == results[0].ledger
    exited = fates(results[3])[1]
    assert (exited.status, exited.decided_on, exited.reason) == (
        "exited",
        day("2026-11-26"),
        "ordered again on 2026-11-24",
    )


def test_running_a_date_again_gives_the_same_ledger_as_running_it_once():
    calls = [
        playbook(
            f"p{i}",
            {"kind": "after", "anchor": "trial_class"},
            {"name": "call", "offset": "1d", "at": "10:00", "channel": "call"},
            priority=50 + i,
        )
        for i in range(3)
    ]
    events = [Event(f"t{c}", c, "trial_class", at("2026-11-22T15:00"), {}) for c in ("c1", "c2")]
    staff = [Staff("s1", "sales", ("education",), 2), Staff("s2", "service", ("retail",), 1)]
    w = world([customer("c1"), customer("c2")], events=events, staff=staff)
    d1, d2 = day("2026-11-23"), day("2026-11-24")
    once = simulate(w, calls, POLICY, [d1, d2])
    again = simulate(w, calls, POLICY, [d1, d1, d2, d2, d2])
    statuses = sorted((f.customer_id, f.playbook, f.status) for f in once[0].ledger)
    assert [s for _, _, s in statuses].count("deferred") == 4  # s1 takes two calls a day
    assert again[1].ledger == once[0].ledger
    assert again[-1].ledger == once[-1].ledger
    assert again[-1].due == once[-1].due


def test_a_state_is_due_from_the_first_run_that_sees_it_then_every_reentry_days():
    care = playbook(
        "churn_warning_care",
        {"kind": "state", "state": "churn_warning"},
        {"name": "care", "offset": "0d", "at": "10:00", "channel": "sms"},
        reentry={"rule": "after_days", "days": 30},
    )
    since = at("2026-10-01T08:00")  # seen by the run of 10-02: 10-01 10:00 moves to 10-02 10:00

    def profiles(run):
        return {"c1": Profile(tags={"churn_warning": since})} if run < day("2026-12-01") else {}

    w = world([customer()], profiles=profiles)
    runs = [day("2026-10-01"), day("2026-10-02"), day("2026-10-31"), day("2026-11-30")]
    results = simulate(w, [care], POLICY, runs)
    assert [[d.due_at for d in r.due] for r in results] == [
        [],
        [at("2026-10-02T10:00")],
        [at("2026-10-31T10:00")],
        [at("2026-11-30T10:00")],
    ]
    gone = simulate(w, [care], POLICY, [day("2026-12-30")])
    assert gone[0].due == []
