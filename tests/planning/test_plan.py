"""The daily plan (flows/planning/plan.py) and `decide`'s rules (flows/planning/decide.py) as
properties over random customers, candidates and histories, then hand-written cases for each
rule's wording and dates, then `plan()` against a small hand-built database for idempotency and
carried deferrals.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.ledger import ensure_tables, idempotency_key, message_id
from flows.planning.calendar import Calendar
from flows.planning.decide import Day, decide
from flows.planning.declarations import TASK_CHANNELS
from flows.planning.plan import LOOKBACK_DAYS, catch_up_from, plan
from flows.planning.policy import Cap, Policy
from flows.rundate import RunDate
from tests.conftest import query
from tests.planning.plan_inputs import CANDIDATE_SCHEMA, create_plan_inputs

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
FRIDAY = dt.date(2026, 11, 27)
MONDAY = dt.date(2026, 11, 30)
BEFORE_NATIONAL_DAY = dt.date(2026, 9, 30)  # 1-7 October are holidays (chinese-calendar)
AFTER_NATIONAL_DAY = dt.date(2026, 10, 8)
AS_OF = FRIDAY
START = dt.datetime.combine(AS_OF, dt.time(), tzinfo=TZ)

CHANNELS = ("sms", "email", "im", "call", "visit")
PURPOSES = ("service", "marketing")
INDUSTRIES = ("retail", "saas", "edu")
PLANNED = ("dry_run", "pending")
CAP_REASON = re.compile(r"^cap: (\w+) at most (\d+) per (\d+) days$")
CONSENT = {
    "sms": "consent_sms",
    "email": "consent_email",
    "im": "consent_sms",
    "call": "consent_phone",
    "visit": "consent_phone",
}
# Working days from chinese-calendar alone, whatever playbooks/calendar.csv may hold.
CHINESE_CALENDAR = Calendar()
# The shipped policy's shape, written out so that these cases do not move with playbooks/.
POLICY = Policy(
    caps={"marketing": (Cap(1, 3), Cap(2, 7)), "service": (Cap(2, 1), Cap(5, 7))},
    channel_caps={"sms": (Cap(2, 1),)},
    consent=CONSENT,
    max_deferral_days=14,
    assign_roles=("sales", "service"),
    calendar=CHINESE_CALENDAR,
)

HISTORY_SCHEMA = {
    "customer_id": pl.Utf8,
    "purpose": pl.Utf8,
    "channel": pl.Utf8,
    "planned_for": pl.Date,
}
STAFF_SCHEMA = {
    "staff_id": pl.Utf8,
    "role": pl.Utf8,
    "industries": pl.Utf8,
    "daily_capacity": pl.Int32,
}


# --- building decide()'s inputs ---------------------------------------------------------------


def customer(**overrides) -> dict:
    """A reachable customer who consented to everything, unless told otherwise."""
    return {
        "has_phone": True,
        "has_email": True,
        "consent_sms": True,
        "consent_email": True,
        "consent_phone": True,
        "industry": "retail",
        **overrides,
    }


def candidate(customer_id: str = "c1", as_of: dt.date = AS_OF, **overrides) -> dict:
    row = {
        "customer_id": customer_id,
        "playbook": "promo",
        "step": "s1",
        "anchor_id": "a1",
        "variant": "default",
        "channel": "sms",
        "purpose": "marketing",
        "priority": 1,
        "owner_id": None,
        "due_at": dt.datetime.combine(as_of, dt.time(10), tzinfo=TZ),
        "fallback_channels": None,
        "first_due_date": as_of,
        "carried": False,
        **customer(),
        **overrides,
    }
    row.setdefault("is_task", row["channel"] in TASK_CHANNELS)
    return row


def candidates_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)


def history_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=HISTORY_SCHEMA)


def staff_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=STAFF_SCHEMA)


def run(
    rows: list[dict],
    history: list[dict] = (),
    staff: list[dict] = (),
    opt_outs: dict | None = None,
    as_of: dt.date = AS_OF,
    policy: Policy = POLICY,
    dry_run: bool = False,
    tasks_today: dict[str, int] | None = None,
) -> list[dict]:
    start = dt.datetime.combine(as_of, dt.time(), tzinfo=TZ)
    return decide(
        candidates_frame(rows),
        history_frame(list(history)),
        staff_frame(list(staff)),
        opt_outs or {},
        Day(as_of, start, policy, dry_run),
        tasks_today=tasks_today,
    )


def by_anchor(decisions: list[dict]) -> dict[str, dict]:
    return {d["anchor_id"]: d for d in decisions}


def key_of(row: dict) -> tuple:
    return (row["playbook"], row["step"], row["customer_id"], row["anchor_id"])


# --- random scenarios ---------------------------------------------------------------------------

caps_strategy = st.lists(st.builds(Cap, st.integers(1, 3), st.integers(1, 7)), max_size=2).map(
    tuple
)


@st.composite
def policies(draw) -> Policy:
    if draw(st.booleans()):
        return POLICY
    channel_caps = draw(st.dictionaries(st.sampled_from(CHANNELS), caps_strategy, max_size=2))
    consent = draw(st.sampled_from([CONSENT, {"sms": "consent_sms", "email": "consent_email"}]))
    return Policy(
        caps={p: draw(caps_strategy) for p in PURPOSES},
        channel_caps=channel_caps,
        consent=consent,
        max_deferral_days=draw(st.integers(0, 16)),
        assign_roles=draw(st.sampled_from([("sales", "service"), ("sales",), ("service", "ops")])),
        calendar=CHINESE_CALENDAR,
    )


OPT_OUT_TIMES = (
    START - dt.timedelta(days=30),
    START - dt.timedelta(seconds=1),
    START,  # at the run's start: not yet in force
    START + dt.timedelta(hours=9),
)


MOSTLY = st.sampled_from([True, True, True, False])
MOSTLY_OR_UNKNOWN = st.sampled_from([True, True, True, False, None])


@st.composite
def scenarios(draw) -> dict:
    policy = draw(policies())
    customers = {
        f"c{i}": {
            # mostly reachable, so that caps and owners get to decide
            "has_phone": draw(MOSTLY),
            "has_email": draw(MOSTLY),
            "consent_sms": draw(MOSTLY_OR_UNKNOWN),
            "consent_email": draw(MOSTLY_OR_UNKNOWN),
            "consent_phone": draw(MOSTLY_OR_UNKNOWN),
            "industry": draw(st.sampled_from((*INDUSTRIES, None))),
        }
        for i in range(draw(st.integers(1, 3)))
    }
    ids = sorted(customers)
    staff = [
        {
            "staff_id": f"s{j}",
            "role": draw(st.sampled_from(("sales", "service", "ops"))),
            "industries": ";".join(
                draw(st.lists(st.sampled_from(INDUSTRIES), max_size=2, unique=True))
            )
            or None,
            "daily_capacity": draw(st.integers(0, 3)),
        }
        for j in range(draw(st.sampled_from([0, 1, 2, 3, 3, 4, 4])))
    ]
    # unowned (assigned by industry) most often; ghost is missing from the staff table
    owners = [None, None, None, "ghost", *(s["staff_id"] for s in staff)]
    rows = []
    for k in range(draw(st.integers(0, 12))):
        customer_id = draw(st.sampled_from(ids))
        channel = draw(st.sampled_from(CHANNELS))
        fallback = draw(
            st.lists(
                st.sampled_from([c for c in CHANNELS if c != channel]), max_size=2, unique=True
            )
        )
        late = draw(st.sampled_from([0, 0, 0, 0, 0, 1, 2, 14, 15]))
        minutes = draw(st.one_of(st.none(), st.integers(0, 24 * 60 - 1)))
        rows.append(
            {
                "customer_id": customer_id,
                "playbook": draw(st.sampled_from(("pa", "pb", "pc"))),
                "step": draw(st.sampled_from(("s1", "s2"))),
                "anchor_id": f"a{k}",
                "variant": draw(st.sampled_from(("default", "default", "b", "holdout"))),
                "channel": channel,
                "purpose": draw(st.sampled_from(PURPOSES)),
                "priority": draw(st.integers(0, 3)),
                "owner_id": draw(st.sampled_from(owners)),
                "due_at": None if minutes is None else START + dt.timedelta(minutes=minutes),
                "fallback_channels": ",".join(fallback) or None,
                "is_task": channel in TASK_CHANNELS,
                "first_due_date": AS_OF - dt.timedelta(days=late),
                "carried": late > 0,
                **customers[customer_id],
            }
        )
    history = [
        {
            "customer_id": draw(st.sampled_from(ids)),
            "purpose": draw(st.sampled_from(PURPOSES)),
            "channel": draw(st.sampled_from(CHANNELS)),
            "planned_for": AS_OF - dt.timedelta(days=draw(st.integers(0, 9))),
        }
        for _ in range(draw(st.integers(0, 10)))
    ]
    opt_outs = {}
    for customer_id in ids:
        if draw(MOSTLY):
            continue
        chosen = draw(
            st.dictionaries(
                st.sampled_from((*CHANNELS, "all")), st.sampled_from(OPT_OUT_TIMES), max_size=2
            )
        )
        if chosen:
            opt_outs[customer_id] = chosen
    return {
        "policy": policy,
        "customers": customers,
        "staff": staff,
        "rows": rows,
        "history": history,
        "opt_outs": opt_outs,
        "dry_run": draw(st.booleans()),
        "row_order": draw(st.permutations(range(len(rows)))),
        "history_order": draw(st.permutations(range(len(history)))),
    }


def decide_scenario(s: dict, rows: list[dict] | None = None, history=None) -> list[dict]:
    return decide(
        candidates_frame(s["rows"] if rows is None else rows),
        history_frame(s["history"] if history is None else history),
        staff_frame(s["staff"]),
        s["opt_outs"],
        Day(AS_OF, START, s["policy"], s["dry_run"]),
    )


PROPERTY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _opted_out(s: dict, customer_id: str, channel: str) -> bool:
    opted = s["opt_outs"].get(customer_id, {})
    return any(opted.get(scope) is not None and opted[scope] < START for scope in (channel, "all"))


def _reachable(s: dict, row: dict, channel: str) -> bool:
    """The rules of the policy file's comments, written independently of plan.py."""
    if _opted_out(s, row["customer_id"], channel):
        return False
    if channel in ("sms", "call", "visit") and not row["has_phone"]:
        return False
    if channel == "email" and not row["has_email"]:
        return False
    flag = s["policy"].consent.get(channel)
    return not (row["purpose"] == "marketing" and flag and not row[flag])


def _contacts(s: dict, decisions: list[dict]) -> list[tuple[str, str, str, dt.date]]:
    """History plus today's planned messages and tasks, as (customer, purpose, channel, day)."""
    return [
        (h["customer_id"], h["purpose"], h["channel"], h["planned_for"]) for h in s["history"]
    ] + [
        (d["customer_id"], d["purpose"], d["channel"], AS_OF)
        for d in decisions
        if d["status"] in PLANNED
    ]


def _count(contacts, customer_id: str, purpose=None, channel=None, end=AS_OF, days=1) -> int:
    first = end - dt.timedelta(days=days - 1)
    return sum(
        1
        for c, p, ch, day in contacts
        if c == customer_id
        and (purpose is None or p == purpose)
        and (channel is None or ch == channel)
        and first <= day <= end
    )


def _blocked_on(s: dict, contacts, d: dict, day: dt.date) -> bool:
    policy = s["policy"]
    customer_id = d["customer_id"]
    return any(
        _count(contacts, customer_id, purpose=d["purpose"], end=day, days=cap.days) >= cap.max
        for cap in policy.caps.get(d["purpose"], ())
    ) or any(
        _count(contacts, customer_id, channel=d["channel"], end=day, days=cap.days) >= cap.max
        for cap in policy.channel_caps.get(d["channel"], ())
    )


@PROPERTY
@given(scenarios())
def test_every_candidate_gets_one_decision_and_the_same_inputs_the_same_ones(s: dict) -> None:
    decisions = decide_scenario(s)
    assert sorted(key_of(d) for d in decisions) == sorted(key_of(r) for r in s["rows"])
    statuses = {"dry_run" if s["dry_run"] else "pending", "deferred", "suppressed", "held_out"}
    assert {d["status"] for d in decisions} <= statuses
    assert decide_scenario(s) == decisions
    # highest priority first
    priorities = [d["priority"] for d in decisions]
    assert priorities == sorted(priorities, reverse=True)
    # the order the rows arrive in changes nothing
    shuffled = decide_scenario(
        s,
        rows=[s["rows"][i] for i in s["row_order"]],
        history=[s["history"][i] for i in s["history_order"]],
    )
    assert sorted(shuffled, key=key_of) == sorted(decisions, key=key_of)


@PROPERTY
@given(scenarios())
def test_consent_opt_outs_and_contact_details_are_respected(s: dict) -> None:
    policy = s["policy"]
    for d in decide_scenario(s):
        row = next(r for r in s["rows"] if key_of(r) == key_of(d))
        channels = [row["channel"], *(row["fallback_channels"] or "").split(",")]
        reachable = [c for c in channels if c and _reachable(s, row, c)]
        late = (AS_OF - row["first_due_date"]).days
        if late > policy.max_deferral_days:
            assert (d["status"], d["reason"]) == (
                "suppressed",
                f"deferred {late} days, beyond the limit",
            )
        elif not reachable:
            assert d["status"] == "suppressed"
            assert d["reason"]
        else:
            assert d["status"] != "suppressed"
            assert d["channel"] == reachable[0]  # the first allowed of channel and fallbacks
        if d["status"] in PLANNED:
            assert not _opted_out(s, d["customer_id"], d["channel"])
            flag = policy.consent.get(d["channel"])
            if d["purpose"] == "marketing" and flag:
                assert row[flag] is True, (d["channel"], flag)


@PROPERTY
@given(scenarios())
def test_caps_are_never_exceeded_and_deferrals_go_to_the_first_allowed_day(s: dict) -> None:
    policy = s["policy"]
    decisions = decide_scenario(s)
    planned_today = Counter()
    for d in decisions:
        if d["status"] in PLANNED:
            planned_today[("purpose", d["customer_id"], d["purpose"])] += 1
            planned_today[("channel", d["customer_id"], d["channel"])] += 1
    history = _contacts(s, [])
    for (kind, customer_id, name), today in planned_today.items():
        caps = (policy.caps if kind == "purpose" else policy.channel_caps).get(name, ())
        for cap in caps:
            earlier = _count(history, customer_id, days=cap.days, **{kind: name})
            assert earlier + today <= cap.max or today == 0, (kind, name, cap)

    for i, d in enumerate(decisions):
        if d["status"] != "deferred":
            assert d["planned_for"] == AS_OF
            continue
        assert d["planned_for"] > AS_OF
        match = CAP_REASON.match(d["reason"])
        if match is None:  # only a task waits for its owner
            assert d["channel"] in TASK_CHANNELS, d["reason"]
            assert d["planned_for"] == MONDAY
            continue
        name, most, days = match[1], int(match[2]), int(match[3])
        kind = "purpose" if name in PURPOSES else "channel"
        assert name == d[kind]
        # Given what was planned before it (decisions come in the order they were made), the
        # cap it names is full today, and it goes on the first day no cap blocks. (Something
        # of lower priority planned after it may still fill that day's window: it is then
        # deferred again when it comes back.)
        before = _contacts(s, decisions[:i])
        assert _count(before, d["customer_id"], days=days, **{kind: name}) >= most
        assert not _blocked_on(s, before, d, d["planned_for"])
        day = AS_OF + dt.timedelta(days=1)
        while day < d["planned_for"]:
            assert _blocked_on(s, before, d, day), day
            day += dt.timedelta(days=1)


@PROPERTY
@given(scenarios())
def test_a_holdout_is_never_planned(s: dict) -> None:
    for d in decide_scenario(s):
        if d["variant"] == "holdout":
            assert d["status"] in ("held_out", "suppressed")
        if d["status"] == "held_out":
            assert d["variant"] == "holdout"
            assert d["reason"] == "experiment holdout: no message"


@PROPERTY
@given(scenarios())
def test_a_lower_priority_item_never_takes_a_slot_from_a_higher_one(s: dict) -> None:
    decisions = decide_scenario(s)
    planned = [d for d in decisions if d["status"] in PLANNED]
    for high in decisions:
        if high["status"] != "deferred":
            continue
        match = CAP_REASON.match(high["reason"])
        if match:
            kind = "purpose" if match[1] in PURPOSES else "channel"
            takers = [
                low
                for low in planned
                if low["customer_id"] == high["customer_id"]
                and low[kind] == high[kind]
                and low["priority"] < high["priority"]
            ]
        else:  # waiting for an owner: nobody of lower priority got that owner's time
            takers = [
                low
                for low in planned
                if low["channel"] in TASK_CHANNELS
                and high["owner_id"] is not None
                and low["owner_id"] == high["owner_id"]
                and low["priority"] < high["priority"]
            ]
        assert takers == [], (high, takers)


@PROPERTY
@given(scenarios())
def test_tasks_fit_owners_capacity_and_go_to_staff_of_the_industry(s: dict) -> None:
    policy = s["policy"]
    decisions = decide_scenario(s)
    capacity = {m["staff_id"]: m["daily_capacity"] for m in s["staff"]}
    eligible = [m for m in s["staff"] if m["role"] in policy.assign_roles]
    tasks = Counter(
        d["owner_id"] for d in decisions if d["status"] in PLANNED and d["channel"] in TASK_CHANNELS
    )
    for owner, n in tasks.items():
        if owner in capacity:
            assert n <= capacity[owner], owner
    for d in decisions:
        row = next(r for r in s["rows"] if key_of(r) == key_of(d))
        if d["channel"] not in TASK_CHANNELS or d["status"] not in (*PLANNED, "deferred"):
            assert d["owner_id"] == row["owner_id"]
            continue
        owner = row["owner_id"]
        if owner is not None:
            assert d["owner_id"] == owner
            if d["status"] == "deferred" and d["reason"].startswith("owner "):
                # only a known owner is full, and only when every slot went to a task
                assert d["reason"] == f"owner {owner} at daily capacity {capacity[owner]}"
                assert tasks[owner] == capacity[owner]
            continue
        industry = row["industry"]
        of_industry = [
            m["staff_id"]
            for m in eligible
            if industry and industry in (m["industries"] or "").split(";")
        ]
        pool = of_industry or [m["staff_id"] for m in eligible]
        if d["status"] in PLANNED:
            assert d["owner_id"] in pool
            assert d["reason"] == f"assigned to {d['owner_id']} by industry"
        elif not CAP_REASON.match(d["reason"]):
            # deferred for want of an owner: everyone who could take it is full
            assert d["owner_id"] is None
            assert all(tasks[m] >= capacity[m] for m in pool)


# --- hand-written cases -------------------------------------------------------------------------


def test_no_email_falls_back_to_sms() -> None:
    rows = [
        candidate(channel="email", fallback_channels="sms", purpose="service", has_email=False),
        candidate(anchor_id="a2", channel="email", fallback_channels="sms", purpose="service"),
    ]
    fell_back, kept = run(rows, dry_run=True)
    assert (fell_back["anchor_id"], fell_back["status"], fell_back["channel"]) == (
        "a1",
        "dry_run",
        "sms",
    )
    assert fell_back["reason"] is None
    assert (kept["anchor_id"], kept["channel"]) == ("a2", "email")


def test_fallback_for_marketing_skips_channels_without_consent() -> None:
    row = candidate(channel="sms", fallback_channels="im,email", consent_sms=False)
    [decision] = run([row])
    assert (decision["status"], decision["channel"]) == ("pending", "email")


OPTED_AT = dt.datetime(2026, 11, 20, 9, 30, tzinfo=TZ)


@pytest.mark.parametrize(
    ("overrides", "opt_outs", "reason"),
    [
        ({"consent_sms": False}, {}, "no consent_sms for marketing by sms"),
        ({"consent_sms": None}, {}, "no consent_sms for marketing by sms"),
        (
            {"channel": "call", "consent_phone": False},
            {},
            "no consent_phone for marketing by call",
        ),
        ({}, {"c1": {"sms": OPTED_AT}}, "opted out of sms at 2026-11-20 09:30"),
        ({"purpose": "service"}, {"c1": {"all": OPTED_AT}}, "opted out of all at 2026-11-20 09:30"),
        ({"purpose": "service", "channel": "call", "has_phone": False}, {}, "no phone for call"),
        ({"purpose": "service", "channel": "visit", "has_phone": False}, {}, "no phone for visit"),
        (
            {"channel": "email", "has_email": False, "fallback_channels": "sms"},
            {"c1": {"sms": OPTED_AT}},
            "no email; opted out of sms at 2026-11-20 09:30",
        ),
    ],
)
def test_suppression_says_why(overrides: dict, opt_outs: dict, reason: str) -> None:
    [decision] = run([candidate(**overrides)], opt_outs=opt_outs, staff=[STAFF_S1])
    assert (decision["status"], decision["reason"]) == ("suppressed", reason)
    assert decision["planned_for"] == AS_OF


def test_an_opt_out_from_the_run_day_on_does_not_count_yet() -> None:
    at_start = {"c1": {"all": START, "sms": START + dt.timedelta(hours=8)}}
    [decision] = run([candidate()], opt_outs=at_start)
    assert decision["status"] == "pending"


def test_service_needs_no_consent_but_marketing_does() -> None:
    no_consent = {"consent_sms": False, "consent_email": False, "consent_phone": False}
    service, marketing = run(
        [
            candidate(purpose="service", priority=2, **no_consent),
            candidate(anchor_id="a2", purpose="marketing", **no_consent),
        ]
    )
    assert service["status"] == "pending"
    assert marketing["status"] == "suppressed"


def days_ago(n: int, purpose: str = "marketing", channel: str = "sms") -> dict:
    return {
        "customer_id": "c1",
        "purpose": purpose,
        "channel": channel,
        "planned_for": AS_OF - dt.timedelta(days=n),
    }


@pytest.mark.parametrize(
    ("history", "planned_for", "reason"),
    [
        # 1 per 3 days, a contact yesterday: the day after tomorrow
        ([days_ago(1)], AS_OF + dt.timedelta(days=2), "cap: marketing at most 1 per 3 days"),
        ([days_ago(2)], AS_OF + dt.timedelta(days=1), "cap: marketing at most 1 per 3 days"),
        # 2 per 7 days, contacts 6 and 4 days ago: tomorrow the first leaves the window
        (
            [days_ago(6), days_ago(4)],
            AS_OF + dt.timedelta(days=1),
            "cap: marketing at most 2 per 7 days",
        ),
        # both caps: 2 per 7 holds it until the contact 5 days ago has left the window
        (
            [days_ago(5), days_ago(1)],
            AS_OF + dt.timedelta(days=2),
            "cap: marketing at most 1 per 3 days",
        ),
    ],
)
def test_a_capped_message_is_deferred_to_the_next_allowed_day(
    history: list[dict], planned_for: dt.date, reason: str
) -> None:
    [decision] = run([candidate(channel="email")], history=history)
    assert (decision["status"], decision["planned_for"], decision["reason"]) == (
        "deferred",
        planned_for,
        reason,
    )


def test_service_history_does_not_count_against_marketing() -> None:
    history = [days_ago(0, "service", "email"), days_ago(1, "service", "email")]
    [decision] = run([candidate(channel="email")], history=history)
    assert decision["status"] == "pending"


def test_the_sms_channel_cap_counts_both_purposes() -> None:
    rows = [
        candidate(anchor_id="a1", purpose="marketing", priority=3),
        candidate(anchor_id="a2", purpose="service", priority=2),
        candidate(anchor_id="a3", purpose="service", priority=1),
        candidate(anchor_id="a4", purpose="service", priority=0, channel="email"),
        candidate(anchor_id="a5", purpose="service", priority=0, channel="email"),
    ]
    decisions = by_anchor(run(rows))
    assert [decisions[a]["status"] for a in ("a1", "a2", "a3")] == [
        "pending",
        "pending",
        "deferred",
    ]
    assert decisions["a3"]["reason"] == "cap: sms at most 2 per 1 days"
    assert decisions["a3"]["planned_for"] == AS_OF + dt.timedelta(days=1)
    # by email, service's own cap (2 a day) has one slot left
    assert decisions["a4"]["status"] == "pending"
    assert decisions["a5"]["reason"] == "cap: service at most 2 per 1 days"


def test_the_higher_priority_message_gets_the_slot() -> None:
    rows = [
        candidate(anchor_id="low", playbook="aaa", priority=1),
        candidate(anchor_id="high", playbook="zzz", priority=5, channel="email"),
    ]
    decisions = by_anchor(run(rows))
    assert decisions["high"]["status"] == "pending"
    assert decisions["low"]["status"] == "deferred"


@pytest.mark.parametrize(("late", "status"), [(14, "pending"), (15, "suppressed")])
def test_a_follow_up_deferred_too_long_is_suppressed(late: int, status: str) -> None:
    first = AS_OF - dt.timedelta(days=late)
    [decision] = run([candidate(first_due_date=first, carried=True)])
    assert decision["status"] == status
    if status == "suppressed":
        assert decision["reason"] == "deferred 15 days, beyond the limit"


def test_a_holdout_is_held_out_unless_suppressed_first() -> None:
    rows = [
        candidate(anchor_id="a1", variant="holdout"),
        candidate("c2", anchor_id="a2", variant="holdout", consent_sms=False),
    ]
    decisions = by_anchor(run(rows))
    assert (decisions["a1"]["status"], decisions["a1"]["reason"]) == (
        "held_out",
        "experiment holdout: no message",
    )
    assert decisions["a2"]["status"] == "suppressed"
    # a holdout takes no cap slot
    [after] = run([*rows, candidate(anchor_id="a3", priority=0)])[2:]
    assert after["status"] == "pending"


STAFF_S1 = {"staff_id": "s1", "role": "sales", "industries": "retail", "daily_capacity": 1}
STAFF = [
    STAFF_S1,
    {"staff_id": "s2", "role": "service", "industries": "retail;saas", "daily_capacity": 1},
    {"staff_id": "s3", "role": "sales", "industries": "edu", "daily_capacity": 5},
    {"staff_id": "s4", "role": "ops", "industries": "retail", "daily_capacity": 9},
]


def task(customer_id: str, anchor_id: str, as_of: dt.date = AS_OF, **overrides) -> dict:
    return candidate(
        customer_id,
        as_of,
        anchor_id=anchor_id,
        channel="call",
        purpose="service",
        **overrides,
    )


@pytest.mark.parametrize(
    ("as_of", "next_working_day"),
    [(FRIDAY, MONDAY), (BEFORE_NATIONAL_DAY, AFTER_NATIONAL_DAY)],
)
def test_an_owner_at_capacity_defers_to_the_next_working_day(
    as_of: dt.date, next_working_day: dt.date
) -> None:
    assert CHINESE_CALENDAR.next_workday(as_of + dt.timedelta(days=1)) == next_working_day
    rows = [
        task("c1", "a1", as_of, owner_id="s1", priority=2),
        task("c2", "a2", as_of, owner_id="s1", priority=1),
        task("c3", "a3", as_of, owner_id="s3"),
    ]
    decisions = by_anchor(run(rows, staff=STAFF, as_of=as_of))
    assert decisions["a1"]["status"] == "pending"
    assert (decisions["a2"]["status"], decisions["a2"]["reason"]) == (
        "deferred",
        "owner s1 at daily capacity 1",
    )
    assert decisions["a2"]["planned_for"] == next_working_day
    assert decisions["a2"]["owner_id"] == "s1"
    assert decisions["a3"]["status"] == "pending"


def test_unowned_tasks_go_round_robin_to_staff_of_the_customers_industry() -> None:
    rows = [
        task("c1", "a1", priority=3),
        task("c2", "a2", priority=2),
        task("c3", "a3", priority=1),  # both retail sellers are full; ops does not take tasks
        task("c4", "a4", industry="edu"),
        task("c5", "a5", industry="mining"),  # nobody's industry: anyone with room
    ]
    decisions = by_anchor(run(rows, staff=STAFF))
    assert {decisions["a1"]["owner_id"], decisions["a2"]["owner_id"]} == {"s1", "s2"}
    assert decisions["a1"]["reason"] == f"assigned to {decisions['a1']['owner_id']} by industry"
    assert (decisions["a3"]["status"], decisions["a3"]["reason"]) == (
        "deferred",
        "every retail owner at daily capacity",
    )
    assert decisions["a3"]["planned_for"] == MONDAY
    assert decisions["a3"]["owner_id"] is None
    assert (decisions["a4"]["status"], decisions["a4"]["owner_id"]) == ("pending", "s3")
    assert (decisions["a5"]["status"], decisions["a5"]["owner_id"]) == ("pending", "s3")


def test_a_later_run_of_the_day_counts_the_tasks_owners_already_have() -> None:
    """An intraday run: s1 took a task this morning (capacity 1), so a new retail task goes to
    s2, and the one after finds both full."""
    rows = [task("c1", "a1", priority=2), task("c2", "a2", priority=1)]
    decisions = by_anchor(run(rows, staff=STAFF, tasks_today={"s1": 1}))
    assert (decisions["a1"]["status"], decisions["a1"]["owner_id"]) == ("pending", "s2")
    assert decisions["a2"]["reason"] == "every retail owner at daily capacity"
    owned = by_anchor(run([task("c3", "a3", owner_id="s3")], staff=STAFF, tasks_today={"s3": 5}))
    assert owned["a3"]["reason"] == "owner s3 at daily capacity 5"


def test_an_owner_missing_from_staff_is_trusted_and_messages_need_no_owner() -> None:
    rows = [task(f"c{i}", f"a{i}", owner_id="ghost") for i in range(5)]
    rows.append(candidate("c9", anchor_id="m1", purpose="service"))
    decisions = run(rows, staff=[])
    assert {d["status"] for d in decisions} == {"pending"}
    assert by_anchor(decisions)["m1"]["owner_id"] is None


# --- plan() against a database --------------------------------------------------------------------

THURSDAY = dt.date(2026, 11, 26)
DB_POLICY = Policy(  # one marketing message a day, so that a deferral comes back tomorrow
    caps={"marketing": (Cap(1, 1),), "service": (Cap(3, 1),)},
    channel_caps={},
    consent=CONSENT,
    calendar=CHINESE_CALENDAR,
)
DUE_COLUMNS = (
    "as_of_date, customer_id, playbook, step, anchor_id, variant, channel, purpose, priority, "
    "owner_id, due_at, due_date, fallback_channels, is_task"
)


def _due(day: dt.date, customer_id, playbook, anchor_id, channel, purpose, priority, **extra):
    row = {
        "as_of_date": day,
        "customer_id": customer_id,
        "playbook": playbook,
        "step": "s1",
        "anchor_id": anchor_id,
        "variant": "default",
        "channel": channel,
        "purpose": purpose,
        "priority": priority,
        "owner_id": None,
        "due_at": dt.datetime.combine(day, dt.time(10), tzinfo=TZ),
        "due_date": day,
        "fallback_channels": None,
        "is_task": channel in TASK_CHANNELS,
        **extra,
    }
    return tuple(row[c.strip()] for c in DUE_COLUMNS.split(","))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The tables plan() reads, with only the columns it reads: four customers due on a Thursday
    (one of them carried over to Friday by the cap, one by its owner's capacity), one more due on
    the Friday."""
    path = tmp_path / "plan.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"set timezone = '{TZ_NAME}'")
    create_plan_inputs(con)
    con.executemany(
        "insert into customer_360 (customer_id, phone, email, has_consent_sms, "
        "has_consent_email, has_consent_phone, industry) values (?, ?, ?, ?, ?, ?, ?)",
        [
            ("c1", "+8613800000001", "c1@example.com", True, True, True, "retail"),
            ("c2", "+8613800000002", None, False, False, True, "retail"),
            ("c3", "+8613800000003", "c3@example.com", True, True, True, "saas"),
            ("c4", None, "c4@example.com", True, True, True, "retail"),
        ],
    )
    con.execute(
        "insert into fct_events values "
        "('e1', 'c4', 'opt_out', timestamptz '2026-11-20 09:00:00+08', 'email'), "
        "('e2', 'c1', 'login', timestamptz '2026-11-20 09:00:00+08', null)"
    )
    con.execute(
        "insert into staging.stg_raw__staff (staff_id, staff_name, role, industries, "
        "daily_capacity) values ('s1', '王芳', 'sales', 'retail', 1), "
        "('s2', '李雷', 'service', 'saas', null)"
    )
    con.execute(
        "insert into config.playbook_steps (playbook, step, fallback_channels, is_task) "
        "values ('promo', 's1', null, false), ('winback', 's1', 'sms', false), "
        "('care', 's1', null, true), ('survey', 's1', null, false)"
    )
    friday = THURSDAY + dt.timedelta(days=1)
    rows = [
        _due(THURSDAY, "c1", "promo", "p1", "sms", "marketing", 5),
        _due(THURSDAY, "c1", "winback", "w1", "email", "marketing", 1, fallback_channels="sms"),
        _due(THURSDAY, "c2", "promo", "p2", "sms", "marketing", 5),  # no consent
        _due(THURSDAY, "c2", "care", "k2", "call", "service", 3, owner_id="s1"),
        _due(THURSDAY, "c1", "care", "k1", "call", "service", 2, owner_id="s1"),  # s1 is full
        _due(THURSDAY, "c3", "promo", "p3", "sms", "marketing", 5, variant="holdout"),
        _due(THURSDAY, "c4", "survey", "v4", "email", "service", 1),  # opted out of email
        _due(friday, "c3", "survey", "v3", "email", "service", 1),
    ]
    con.executemany(
        f"insert into followups_due ({DUE_COLUMNS}) values ({', '.join('?' * 14)})", rows
    )
    con.close()
    return path


def _plan(db: Path, day: dt.date) -> None:
    plan(db, RunDate(day, TZ_NAME), dry_run=True, policy=DB_POLICY)


def _ledger(db: Path) -> list[tuple]:
    return query(db, "select * from message_ledger order by idempotency_key")


def _ledger_by_key(db: Path) -> dict[str, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        frame = con.sql("select * from message_ledger").pl()
    finally:
        con.close()
    return {r["idempotency_key"]: r for r in frame.iter_rows(named=True)}


def _diff(db: Path, day: dt.date) -> dict[str, dict]:
    """The last run's counts for `day`, per playbook; each run's add up."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        frame = con.sql(
            "select * exclude (run_id, run_at) from plan_diff where run_id = ("
            "select run_id from plan_diff where as_of_date = ? order by run_at desc limit 1)",
            params=[day],
        ).pl()
    finally:
        con.close()
    for r in frame.iter_rows(named=True):
        fates = r["planned"] + r["deferred"] + r["suppressed"] + r["held_out"] + r["exited"]
        assert r["made_due"] + r["carried"] == fates, r
    return {r["playbook"]: r for r in frame.iter_rows(named=True)}


def test_planning_a_date_twice_changes_nothing_and_deferrals_come_back(db: Path) -> None:
    _plan(db, THURSDAY)
    first = _ledger(db)
    first_diff = _diff(db, THURSDAY)
    ledger = _ledger_by_key(db)
    by_anchor_ = {r["anchor_id"]: r for r in ledger.values()}
    assert {a: (r["status"], r["reason"]) for a, r in by_anchor_.items()} == {
        "p1": ("dry_run", None),
        "w1": ("deferred", "cap: marketing at most 1 per 1 days"),
        "p2": ("suppressed", "no consent_sms for marketing by sms"),
        "k2": ("dry_run", None),
        "k1": ("deferred", "owner s1 at daily capacity 1"),
        "p3": ("held_out", "experiment holdout: no message"),
        "v4": ("suppressed", by_anchor_["v4"]["reason"]),
    }
    # the time in this reason is the business zone's (see the test of opt-out reasons below)
    assert by_anchor_["v4"]["reason"].startswith("opted out of email at 2026-11-20 ")
    friday = THURSDAY + dt.timedelta(days=1)
    assert by_anchor_["w1"]["planned_for"] == by_anchor_["k1"]["planned_for"] == friday
    for key, row in ledger.items():
        assert key == idempotency_key(
            row["playbook"], row["step"], row["customer_id"], row["anchor_id"]
        )
        assert row["message_id"] == message_id(key)
    assert sum(d["new"] for d in first_diff.values()) == 7

    _plan(db, THURSDAY)
    assert _ledger(db) == first
    again = _diff(db, THURSDAY)
    assert {p: {**d, "new": 0} for p, d in first_diff.items()} == again
    assert sum(d["dropped"] for d in again.values()) == 0
    # each run keeps its own counts
    assert query(db, "select count(distinct run_id) from plan_diff") == [(2,)]

    _plan(db, friday)
    after = _ledger_by_key(db)
    assert set(ledger) <= set(after)
    for key, row in ledger.items():  # a message keeps its ids for life
        assert after[key]["message_id"] == row["message_id"]
    friday_diff = _diff(db, friday)
    assert (friday_diff["winback"]["carried"], friday_diff["winback"]["new"]) == (1, 0)
    assert (friday_diff["care"]["carried"], friday_diff["care"]["new"]) == (1, 0)
    assert friday_diff["survey"]["new"] == 1
    carried = {r["anchor_id"]: r for r in after.values() if r["decided_on"] == friday}
    assert sorted(carried) == ["k1", "v3", "w1"]
    for anchor in ("k1", "w1"):
        assert carried[anchor]["status"] == "dry_run"
        assert carried[anchor]["first_due_date"] == THURSDAY
        assert carried[anchor]["due_at"] == dt.datetime.combine(friday, dt.time(10), tzinfo=TZ)
    # the rest of Thursday's decisions stand as they were
    assert {k: r for k, r in after.items() if r["decided_on"] == THURSDAY} == {
        k: r for k, r in ledger.items() if r["anchor_id"] not in ("k1", "w1")
    }


# --- re-runs and what they leave alone ---------------------------------------------------------


def test_replanning_the_day_a_deferral_came_back_keeps_it(db: Path) -> None:
    friday = THURSDAY + dt.timedelta(days=1)
    _plan(db, THURSDAY)
    _plan(db, friday)
    once = _ledger(db)
    once_diff = _diff(db, friday)
    _plan(db, friday)
    assert _diff(db, friday) == {p: {**d, "new": 0} for p, d in once_diff.items()}
    assert _ledger(db) == once


def test_replanning_a_date_after_dispatch_leaves_sent_messages_alone(db: Path) -> None:
    _plan(db, THURSDAY)
    con = duckdb.connect(str(db))
    con.execute(
        "update message_ledger set status = 'sent', attempts = 1, "
        "sent_at = timestamptz '2026-11-26 10:00:05+08', provider_message_id = 'gw-1' "
        "where anchor_id = 'p1'"
    )
    con.close()
    sent = _ledger_by_key(db)
    _plan(db, THURSDAY)
    after = _ledger_by_key(db)
    [key] = [k for k, r in sent.items() if r["anchor_id"] == "p1"]
    assert (after[key]["status"], after[key]["attempts"]) == ("sent", 1)
    assert after == sent


def test_a_re_run_counts_the_tasks_already_handed_out_that_day(db: Path) -> None:
    """s1 takes one call a day: Thursday's first run gives them c2's (k2), which goes out; a
    re-run of Thursday must not give them c1's (k1) as well."""
    _plan(db, THURSDAY)
    con = duckdb.connect(str(db))
    con.execute("update message_ledger set status = 'sent', attempts = 1 where anchor_id = 'k2'")
    con.close()
    _plan(db, THURSDAY)
    by_anchor_ = {r["anchor_id"]: r for r in _ledger_by_key(db).values()}
    assert (by_anchor_["k1"]["status"], by_anchor_["k1"]["reason"]) == (
        "deferred",
        "owner s1 at daily capacity 1",
    )


def test_a_deferred_follow_up_is_judged_again_on_its_new_day(db: Path) -> None:
    """w1 (c1's win-back, anchored on Monday) and k1 (c1's care call) are deferred from Thursday
    to Friday. c1 orders on Thursday afternoon, and care is narrowed to the saas industry: on
    Friday w1 exits and k1 is outside its audience, each a row with its reason."""
    con = duckdb.connect(str(db))
    con.execute(f"set timezone = '{TZ_NAME}'")
    con.execute(
        "update followups_due set anchor_at = timestamptz '2026-11-23 09:00:00+08' "
        "where anchor_id = 'w1'"
    )
    con.execute("update config.playbook_steps set exit_ordered_again = playbook = 'winback'")
    con.close()
    _plan(db, THURSDAY)
    con = duckdb.connect(str(db))
    con.execute(
        "update customer_360 set last_paid_order_at = timestamptz '2026-11-26 15:00:00+08' "
        "where customer_id = 'c1'"
    )
    con.execute(
        "update config.playbook_steps set audience_industry = ',saas,' where playbook = 'care'"
    )
    con.close()
    _plan(db, THURSDAY + dt.timedelta(days=1))
    by_anchor_ = {r["anchor_id"]: r for r in _ledger_by_key(db).values()}
    assert by_anchor_["w1"]["anchor_at"] == dt.datetime(2026, 11, 23, 9, tzinfo=TZ)
    assert (by_anchor_["w1"]["status"], by_anchor_["w1"]["reason"]) == (
        "exited",
        "ordered again on 2026-11-26",
    )
    assert (by_anchor_["k1"]["status"], by_anchor_["k1"]["reason"]) == (
        "suppressed",
        "audience: industry retail",
    )


def test_a_run_catches_up_what_came_due_since_the_last_plan(db: Path) -> None:
    """The watermark: no plan yet, a run makes due its own date only; after Thursday's plan,
    Sunday's run starts on Friday; never more than the look-back before the run. Saturday's
    run plans Friday's survey as caught up, once, and a re-run counts it once again."""
    con = duckdb.connect(str(db))
    ensure_tables(con)
    assert catch_up_from(con, THURSDAY) == THURSDAY
    con.close()
    _plan(db, THURSDAY)
    con = duckdb.connect(str(db))
    friday, saturday, sunday = (THURSDAY + dt.timedelta(days=n) for n in (1, 2, 3))
    assert catch_up_from(con, sunday) == friday
    assert catch_up_from(con, THURSDAY) == THURSDAY  # a re-run: nothing planned before it
    late = THURSDAY + dt.timedelta(days=40)
    assert catch_up_from(con, late) == late - dt.timedelta(days=LOOKBACK_DAYS)
    # Friday's run did not happen: Saturday's made Friday's survey due (the model's catch-up)
    con.execute("update followups_due set as_of_date = ? where anchor_id = 'v3'", [saturday])
    con.close()
    for _ in range(2):
        _plan(db, saturday)
        diff = _diff(db, saturday)
        assert (diff["survey"]["made_due"], diff["survey"]["caught_up"]) == (1, 1)
        assert diff["survey"]["carried"] == 0
    [v3] = [r for r in _ledger_by_key(db).values() if r["anchor_id"] == "v3"]
    assert (v3["first_due_date"], v3["decided_on"], v3["status"]) == (friday, saturday, "dry_run")
    runs = query(db, "select as_of_date, catch_up_from from plan_runs order by run_at")
    assert runs == [(THURSDAY, THURSDAY), (saturday, friday), (saturday, friday)]


def test_an_opt_out_reason_gives_the_time_in_the_business_zone(db: Path) -> None:
    machine = duckdb.connect().execute("select current_setting('TimeZone')").fetchone()[0]
    business = "Asia/Tokyo" if machine != "Asia/Tokyo" else "Asia/Shanghai"
    plan(db, RunDate(THURSDAY, business), dry_run=True, policy=DB_POLICY)
    opted = dt.datetime(2026, 11, 20, 9, tzinfo=TZ).astimezone(ZoneInfo(business))
    [reason] = [r["reason"] for r in _ledger_by_key(db).values() if r["anchor_id"] == "v4"]
    assert reason == f"opted out of email at {opted:%Y-%m-%d %H:%M}"


def test_an_opt_out_reply_stops_that_channel_from_its_moment(db: Path) -> None:
    """A "T" reply to an SMS (feedback `opt_out`) is an opt-out of SMS, as an `opt_out` event
    is: c1's SMS promotion is suppressed, and its e-mail win-back still goes."""
    con = duckdb.connect(str(db))
    try:
        con.execute(f"set timezone = '{TZ_NAME}'")
        ensure_tables(con)
        con.execute(
            "insert into message_ledger (message_id, idempotency_key, customer_id, playbook, "
            "step, anchor_id, channel, purpose, priority, first_due_date, planned_for, "
            "decided_on, status, created_at, updated_at) values ('m0', 'k0', 'c1', 'promo', "
            "'s1', 'p0', 'sms', 'marketing', 5, '2026-11-20', '2026-11-20', '2026-11-20', "
            "'sent', now(), now())"
        )
        con.execute(
            "insert into raw.feedback (message_id, customer_id, responded_at, response_type) "
            "values "
            "('m0', 'c1', timestamptz '2026-11-25 20:00:00+08', 'opt_out'), "
            # after the morning of Thursday: seen from Friday on
            "('m0', 'c3', timestamptz '2026-11-26 08:00:00+08', 'opt_out')"
        )
    finally:
        con.close()
    _plan(db, THURSDAY)
    by_anchor = {r["anchor_id"]: r for r in _ledger_by_key(db).values()}
    assert by_anchor["p1"]["status"] == "suppressed"
    assert by_anchor["p1"]["reason"] == "opted out of sms at 2026-11-25 20:00"
    assert (by_anchor["w1"]["status"], by_anchor["w1"]["channel"]) == ("dry_run", "email")
    assert by_anchor["p3"]["status"] == "held_out"  # c3's reply came after the morning
