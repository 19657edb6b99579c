"""Escalation: the rules' `decide` (flows/planning/escalation.py) on small hand-made histories,
one behaviour per test, then `escalate()` (flows/planning/escalate.py) against a small hand-built
database (what it writes, dry run then real run, idempotency) and the daily plan's suppression of
a stopped customer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from flows.ledger import ensure_tables, idempotency_key, message_id
from flows.planning import plan as planning
from flows.planning.decide import Day
from flows.planning.decide import decide as plan_decide
from flows.planning.declarations import Playbook
from flows.planning.escalate import escalate
from flows.planning.escalation import Action, decide, escalation_id
from flows.planning.policy import Cap, Policy
from flows.rundate import RunDate
from tests.conftest import query
from tests.planning.plan_inputs import CANDIDATE_SCHEMA, create_plan_inputs

TZ_NAME = "Asia/Shanghai"
TZ = ZoneInfo(TZ_NAME)
D0 = dt.date(2026, 11, 2)  # a Monday

LEDGER_SCHEMA = {
    "message_id": pl.Utf8,
    "customer_id": pl.Utf8,
    "playbook": pl.Utf8,
    "step": pl.Utf8,
    "anchor_id": pl.Utf8,
    "channel": pl.Utf8,
    "status": pl.Utf8,
    "sent_at": pl.Datetime("us", TZ_NAME),
}
FEEDBACK_SCHEMA = {
    "message_id": pl.Utf8,
    "responded_at": pl.Datetime("us", TZ_NAME),
    "response_type": pl.Utf8,
    "outcome": pl.Utf8,
}
TIER_RULES = {
    "diamond": {"after": 2, "then": "specialist_task"},
    "gold": {"after": 1, "then": "sms_care"},
    "silver": {"after": 2, "then": "flag_downgrade"},
    "basic": {"after": 1, "then": "stop"},
}


# --- building decide()'s inputs ---------------------------------------------------------------


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def at(n: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    """Day `n` after D0, at a local time."""
    return dt.datetime.combine(day(n), dt.time(hour, minute), tzinfo=TZ)


def playbook(name: str = "care", channel: str = "sms", **escalation) -> Playbook:
    return Playbook.model_validate(
        {
            "name": name,
            "description": "test",
            "purpose": "service",
            "priority": 40,
            "trigger": {"kind": "after", "anchor": "paid_order"},
            "steps": [{"name": "s1", "offset": "1d", "channel": channel}],
            "escalation": escalation,
        }
    )


REMINDING = playbook(reminder_after="24h")
TIERED = playbook(missed=TIER_RULES)  # no reminder: a follow-up's window is 72 h
REMINDING_TIERED = playbook(reminder_after="24h", missed=TIER_RULES)
CALLS = playbook("complaint", channel="call", unreachable_days=3)


def sent(
    mid: str,
    sent_at: dt.datetime | None,
    customer: str = "c1",
    name: str = "care",
    channel: str = "sms",
    step: str = "s1",
    status: str = "sent",
    anchor: str | None = None,
) -> dict:
    return {
        "message_id": mid,
        "customer_id": customer,
        "playbook": name,
        "step": step,
        "anchor_id": anchor or f"anchor-{mid}",
        "channel": channel,
        "status": status,
        "sent_at": sent_at,
    }


def reminder(original: dict, mid: str, sent_at: dt.datetime | None, status: str = "sent") -> dict:
    return sent(
        mid,
        sent_at,
        customer=original["customer_id"],
        name=original["playbook"],
        channel=original["channel"],
        step=f"{original['step']}:reminder",
        status=status,
        anchor=original["anchor_id"],
    )


def reply(mid: str, when: dt.datetime, kind: str = "reply", outcome: str | None = None) -> dict:
    return {"message_id": mid, "responded_at": when, "response_type": kind, "outcome": outcome}


def call(mid: str, when: dt.datetime, outcome: str) -> dict:
    return reply(mid, when, kind="call", outcome=outcome)


def run(
    ledger: list[dict],
    feedback: list[dict] = (),
    as_of: dt.date = D0 + dt.timedelta(days=2),
    playbooks: tuple[Playbook, ...] = (REMINDING,),
    tiers: dict[str, str] | None = None,
    opted_out: dict[str, dt.datetime] | None = None,
) -> list[Action]:
    return decide(
        pl.DataFrame(ledger, schema=LEDGER_SCHEMA),
        pl.DataFrame(list(feedback), schema=FEEDBACK_SCHEMA),
        tiers or {},
        {p.name: p for p in playbooks},
        RunDate(as_of, TZ_NAME),
        opted_out,
    )


def kinds(actions: list[Action]) -> list[tuple[str, str, str | None]]:
    return [(a.customer_id, a.action, a.source_message_id) for a in actions]


# --- reminders ----------------------------------------------------------------------------------


def test_no_answer_within_24h_gets_one_reminder() -> None:
    [action] = run([sent("m1", at(0))], as_of=day(2))
    assert action == Action(
        escalation_id=escalation_id("m1", "reminder"),
        customer_id="c1",
        playbook="care",
        rule="reminder",
        action="reminder",
        tier=None,
        source_message_id="m1",
        detail="no answer within 24h",
    )
    assert action.escalation_id.startswith("esc-") and len(action.escalation_id) == 36


def test_a_reply_within_24h_means_no_reminder() -> None:
    assert run([sent("m1", at(0))], [reply("m1", at(1, 9))]) == []  # 23 hours later
    # a click or a survey answer is an answer too; an answered call on a message is as well
    assert run([sent("m1", at(0))], [reply("m1", at(0, 12), kind="click")]) == []
    assert run([sent("m1", at(0))], [reply("m1", at(0, 12), kind="survey")]) == []
    # a delivery receipt is not
    assert kinds(run([sent("m1", at(0))], [reply("m1", at(0, 11), "delivery", "delivered")])) == [
        ("c1", "reminder", "m1")
    ]


def test_a_late_answer_before_the_morning_also_means_no_reminder() -> None:
    # 25 hours: past the window, but before the morning that would send the reminder
    assert run([sent("m1", at(0))], [reply("m1", at(1, 11))]) == []


def test_no_reminder_before_24h_have_passed() -> None:
    assert run([sent("m1", at(0))], as_of=day(1)) == []  # 14 hours on the morning after
    # feedback from the morning on is not seen yet
    assert kinds(run([sent("m1", at(0))], [reply("m1", at(2, 8))], as_of=day(2))) == [
        ("c1", "reminder", "m1")
    ]


def test_exactly_one_reminder_over_several_mornings() -> None:
    original = sent("m1", at(0))
    [first] = run([original], as_of=day(2))
    # the reminder's ledger row, waiting to go out, then sent
    waiting = reminder(original, "r1", None, status="pending")
    assert run([original, waiting], as_of=day(2)) == []
    for later in (3, 4, 5):
        assert run([original, reminder(original, "r1", at(2))], as_of=day(later)) == []
    # even without its row, a later morning names the same escalation (escalate() skips it)
    assert [a.escalation_id for a in run([original], as_of=day(3))] == [first.escalation_id]


def test_only_message_channels_get_reminders() -> None:
    calls = playbook("calls", channel="call", reminder_after="24h")
    assert run([sent("k1", at(0), name="calls", channel="call")], playbooks=(calls,)) == []


def test_an_opted_out_customer_gets_no_reminder() -> None:
    opted = {"c1": at(0, 18)}  # after the message was sent
    assert run([sent("m1", at(0))], opted_out=opted) == []
    # an opt-out from the morning on is not known yet
    assert kinds(run([sent("m1", at(0))], opted_out={"c1": at(2, 7)})) == [("c1", "reminder", "m1")]


def test_an_answer_to_the_reminder_answers_the_original() -> None:
    gold = {"c1": "gold"}
    original = sent("m1", at(0))
    remind = reminder(original, "r1", at(2))
    books = (REMINDING_TIERED,)
    # the morning the reminder is made: the follow-up waits for it, no care message yet
    assert kinds(run([original], as_of=day(2), tiers=gold, playbooks=books)) == [
        ("c1", "reminder", "m1")
    ]
    assert run([original, remind], as_of=day(3), tiers=gold, playbooks=books) == []
    # unanswered 24 h after the reminder too: missed, and gold's one miss is a care message
    [care] = run([original, remind], as_of=day(4), tiers=gold, playbooks=books)
    assert (care.rule, care.action, care.tier, care.source_message_id) == (
        "missed",
        "sms_care",
        "gold",
        "m1",
    )
    # answered through the reminder: the original is answered
    answered = [reply("r1", at(2, 15))]
    assert run([original, remind], answered, as_of=day(4), tiers=gold, playbooks=books) == []
    assert run([original, remind], answered, as_of=day(9), tiers=gold, playbooks=books) == []


# --- unreachable --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "as_of", "expected"),
    [
        # three days in a row, however the calls failed
        ({0: ["no_answer"], 1: ["busy"], 2: ["failed"]}, 3, True),
        ({0: ["no_answer"], 1: ["no_answer"]}, 3, False),  # two days
        ({0: ["no_answer"], 1: ["no_answer"], 3: ["no_answer"]}, 4, False),  # a gap
        # answered on the second day (after a failed attempt): the run is broken
        ({0: ["no_answer"], 1: ["no_answer", "answered"], 2: ["no_answer"]}, 3, False),
        # the third day's call is not known before the morning after it
        ({0: ["no_answer"], 1: ["no_answer"], 2: ["no_answer"]}, 2, False),
    ],
)
def test_calls_unanswered_on_three_days_in_a_row_go_to_the_manager(
    outcomes: dict[int, list[str]], as_of: int, expected: bool
) -> None:
    ledger = [sent("k1", at(0, 9), name="complaint", channel="call")]
    feedback = [
        call("k1", at(n, 11 + i), outcome)
        for n, results in outcomes.items()
        for i, outcome in enumerate(results)
    ]
    actions = run(ledger, feedback, as_of=day(as_of), playbooks=(CALLS,))
    if not expected:
        assert actions == []
        return
    [action] = actions
    assert (action.rule, action.action, action.source_message_id) == (
        "unreachable",
        "manager_task",
        "k1",
    )
    assert action.escalation_id == escalation_id("c1", "complaint", "unreachable", D0.isoformat())
    # a fourth day in the same run is the same escalation
    feedback.append(call("k1", at(3, 11), "no_answer"))
    again = run(ledger, feedback, as_of=day(4), playbooks=(CALLS,))
    assert [a.escalation_id for a in again] == [action.escalation_id]


def test_calls_of_other_playbooks_do_not_count() -> None:
    other = playbook("other", channel="call")
    ledger = [
        sent("k1", at(0, 9), name="complaint", channel="call"),
        sent("k2", at(1, 9), name="other", channel="call"),
    ]
    feedback = [
        call("k1", at(0, 11), "no_answer"),
        call("k2", at(1, 11), "no_answer"),
        call("k1", at(2, 11), "no_answer"),
    ]
    assert run(ledger, feedback, as_of=day(3), playbooks=(CALLS, other)) == []


# --- missed follow-ups by tier -----------------------------------------------------------------


def misses(n: int, customer: str = "c1", first: int = 0, every: int = 2) -> list[dict]:
    """`n` unanswered sms follow-ups, `every` days apart."""
    return [sent(f"m{i + 1}", at(first + every * i), customer=customer) for i in range(n)]


def decided_morning(ledger: list[dict]) -> dt.date:
    """The morning the last follow-up's 72 h window has passed."""
    return max(r["sent_at"] for r in ledger).date() + dt.timedelta(days=4)


@pytest.mark.parametrize(
    ("tier", "missed", "expected"),
    [
        ("diamond", 1, None),
        ("diamond", 2, "specialist_task"),
        ("gold", 1, "sms_care"),
        ("silver", 1, None),
        ("silver", 2, "flag_downgrade"),
        ("basic", 1, "stop"),
    ],
)
def test_each_tier_acts_after_its_number_of_misses(
    tier: str, missed: int, expected: str | None
) -> None:
    ledger = misses(missed)
    as_of = decided_morning(ledger)
    actions = run(ledger, as_of=as_of, tiers={"c1": tier}, playbooks=(TIERED,))
    # the morning before the last window closes, nothing
    before = run(
        ledger, as_of=as_of - dt.timedelta(days=1), tiers={"c1": tier}, playbooks=(TIERED,)
    )
    assert before == []
    if expected is None:
        assert actions == []
        return
    [action] = actions
    source = f"m{missed}"
    assert action == Action(
        escalation_id=escalation_id("c1", "care", "missed", source),
        customer_id="c1",
        playbook="care",
        rule="missed",
        action=expected,
        tier=tier,
        source_message_id=source,
        detail=f"{missed} follow-ups in a row missed ({tier})",
    )


def test_an_answered_follow_up_ends_the_run() -> None:
    ledger = misses(4)  # m1 missed, m2 answered, m3 and m4 missed
    answered = [reply("m2", at(3, 9))]
    diamond = {"c1": "diamond"}
    three = ledger[:3]
    assert (
        run(three, answered, as_of=decided_morning(three), tiers=diamond, playbooks=(TIERED,)) == []
    )
    [action] = run(
        ledger, answered, as_of=decided_morning(ledger), tiers=diamond, playbooks=(TIERED,)
    )
    assert (action.action, action.source_message_id) == ("specialist_task", "m4")


def test_a_fourth_miss_in_a_row_does_not_trigger_again() -> None:
    diamond = {"c1": "diamond"}
    ledger = misses(4)
    [first] = run(ledger[:2], as_of=decided_morning(ledger[:2]), tiers=diamond, playbooks=(TIERED,))
    assert first.source_message_id == "m2"
    for n in (3, 4):
        later = run(
            ledger[:n], as_of=decided_morning(ledger[:n]), tiers=diamond, playbooks=(TIERED,)
        )
        # the same run of misses: the same escalation, which escalate() does not act on twice
        assert {a.escalation_id for a in later} <= {first.escalation_id}


def test_a_customer_without_a_tier_has_no_missed_rule() -> None:
    ledger = misses(2)
    assert run(ledger, as_of=decided_morning(ledger), tiers={}, playbooks=(TIERED,)) == []


def test_an_unanswered_call_is_missed_at_once() -> None:
    calls = playbook("calls", channel="call", missed=TIER_RULES)
    ledger = [sent("k1", at(0, 9), name="calls", channel="call")]
    basic = {"c1": "basic"}
    assert run(ledger, as_of=day(1), tiers=basic, playbooks=(calls,)) == []  # no outcome yet
    [stop] = run(
        ledger, [call("k1", at(0, 11), "busy")], as_of=day(1), tiers=basic, playbooks=(calls,)
    )
    assert (stop.action, stop.source_message_id) == ("stop", "k1")
    # answered at the second attempt: answered
    both = [call("k1", at(0, 11), "busy"), call("k1", at(0, 15), "answered")]
    assert run(ledger, both, as_of=day(1), tiers=basic, playbooks=(calls,)) == []


def test_old_history_is_not_escalated_on_a_first_run() -> None:
    ledger = misses(1)
    late = decided_morning(ledger) + dt.timedelta(days=30)
    assert run(ledger, as_of=late, tiers={"c1": "basic"}, playbooks=(REMINDING_TIERED,)) == []


# --- escalate() against a database -----------------------------------------------------------

AS_OF = dt.date(2026, 11, 27)  # a Friday


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ)


DB_PLAYBOOKS = [
    playbook("care", reminder_after="24h", missed=TIER_RULES),
    playbook("complaint", channel="call", unreachable_days=3),
]
DB_TIERS = {
    "c1": "gold",
    "c2": "gold",
    "c3": "silver",
    "c4": "diamond",
    "c5": "basic",
    "c6": "gold",
    "c7": "gold",
}
DB_POLICY = Policy(
    caps={"service": (Cap(5, 1),)},
    channel_caps={},
    consent={},
    specialist_role="service",
)


def _ledger_row(mid: str, customer: str, sent_at: str, **overrides) -> dict:
    when = _at(sent_at)
    row = {
        "message_id": mid,
        "idempotency_key": f"key-{mid}",
        "customer_id": customer,
        "playbook": "care",
        "step": "s1",
        "anchor_id": f"anchor-{mid}",
        "variant": "default",
        "channel": "sms",
        "purpose": "service",
        "priority": 40,
        "owner_id": None,
        "first_due_date": when.date(),
        "planned_for": when.date(),
        "decided_on": when.date(),
        "due_at": when,
        "status": "sent",
        "reason": None,
        "attempts": 1,
        "created_at": when,
        "updated_at": when,
        "sent_at": when,
        "origin": "plan",
        **overrides,
    }
    return row


def _with_reminder(mid: str, customer: str, sent_at: str, reminded_at: str) -> list[dict]:
    original = _ledger_row(mid, customer, sent_at)
    return [
        original,
        _ledger_row(
            f"{mid}r",
            customer,
            reminded_at,
            step="s1:reminder",
            anchor_id=original["anchor_id"],
            origin="escalation",
        ),
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """What escalate() reads, and what the plan needs for the morning after.

    c1 gold: a message two days ago, unanswered -> a reminder today;
    c2 gold: reminded and still unanswered -> an SMS care message;
    c3: the complaint call unanswered three days running -> a task for s1's manager mgr2;
    c4 diamond (retail): two reminded follow-ups unanswered -> a retail specialist's task;
    c5 basic: one reminded follow-up unanswered -> stop;
    c6 gold: unanswered, but opted out -> nothing; c7: answered -> nothing."""
    path = tmp_path / "escalation.duckdb"
    con = duckdb.connect(str(path))
    con.execute(f"set timezone = '{TZ_NAME}'")
    ensure_tables(con)
    ledger = [
        _ledger_row("m1", "c1", "2026-11-25 10:00", variant="warm"),
        *_with_reminder("m2", "c2", "2026-11-20 10:00", "2026-11-22 10:00"),
        _ledger_row(
            "k1", "c3", "2026-11-24 09:30", playbook="complaint", channel="call", owner_id="s1"
        ),
        *_with_reminder("m3", "c4", "2026-11-18 10:00", "2026-11-20 10:00"),
        *_with_reminder("m4", "c4", "2026-11-21 10:00", "2026-11-23 10:00"),
        *_with_reminder("m5", "c5", "2026-11-19 10:00", "2026-11-21 10:00"),
        _ledger_row("m6", "c6", "2026-11-25 10:00"),
        _ledger_row("m7", "c7", "2026-11-25 10:00"),
    ]
    frame = pl.DataFrame(ledger)  # noqa: F841 - read by the insert
    con.execute("insert into message_ledger by name select * from frame")
    create_plan_inputs(con)
    con.executemany(
        "insert into raw.feedback (message_id, customer_id, responded_at, response_type, outcome) "
        "values (?, ?, ?, ?, ?)",
        [
            ("m1", "c1", _at("2026-11-25 10:01"), "delivery", "delivered"),
            ("k1", "c3", _at("2026-11-24 11:00"), "call", "no_answer"),
            ("k1", "c3", _at("2026-11-25 15:00"), "call", "busy"),
            ("k1", "c3", _at("2026-11-26 10:00"), "call", "no_answer"),
            ("m7", "c7", _at("2026-11-25 12:00"), "reply", None),
            ("m1", "c1", _at("2026-11-27 08:00"), "reply", None),  # after the morning
        ],
    )
    con.executemany(
        "insert into staging.stg_raw__staff values (?, ?, ?, ?, ?, ?)",
        [
            ("mgr1", "赵敏", "manager", None, None, None),
            ("mgr2", "钱进", "manager", None, None, None),
            ("s1", "王芳", "sales", "mgr2", "retail", 10),
            ("sp1", "孙丽", "service", "mgr1", "saas", 10),
            ("sp2", "周杰", "service", "mgr1", "edu;retail", 10),
        ],
    )
    con.executemany(
        "insert into customer_rfm (customer_id, tier) values (?, ?)",
        list(DB_TIERS.items()),
    )
    con.executemany(
        "insert into customer_360 (customer_id, owner_id, industry, phone, email, "
        "has_consent_sms, has_consent_email, has_consent_phone) "
        "values (?, ?, ?, '+8613800000000', null, true, true, true)",
        [(f"c{i}", "s1" if i == 3 else None, "retail") for i in range(1, 8)],
    )
    con.execute(
        "insert into fct_events (customer_id, event_type, occurred_at, opt_out_channel) "
        "values ('c6', 'opt_out', ?, 'sms'), ('c7', 'login', ?, null)",
        [_at("2026-11-26 09:00"), _at("2026-11-26 09:00")],
    )
    con.close()
    return path


def _escalate(db: Path, as_of: dt.date = AS_OF, dry_run: bool = False):
    return escalate(
        db,
        RunDate(as_of, TZ_NAME),
        dry_run=dry_run,
        playbooks=DB_PLAYBOOKS,
        policy=DB_POLICY,
    )


def _rows(db: Path, sql: str) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute(f"set timezone = '{TZ_NAME}'")
        return con.sql(sql).pl().to_dicts()
    finally:
        con.close()


def _snapshot(db: Path) -> tuple:
    return tuple(
        query(db, f"select * from {table} order by all")
        for table in ("escalations", "message_ledger", "manual_followups")
    )


EXPECTED = {
    ("c1", "reminder", "reminder", "m1"),
    ("c2", "missed", "sms_care", "m2"),
    ("c3", "unreachable", "manager_task", "k1"),
    ("c4", "missed", "specialist_task", "m4"),
    ("c5", "missed", "stop", "m5"),
}


def test_escalate_writes_each_escalation_once_and_a_real_run_makes_a_dry_run_real(
    db: Path,
) -> None:
    dry = _escalate(db, dry_run=True)
    assert dry.counts == {
        "reminder": 1,
        "sms_care": 1,
        "manager_task": 1,
        "specialist_task": 1,
        "stop": 1,
    }
    escalations = _rows(db, "select * from escalations")
    assert {
        (e["customer_id"], e["rule"], e["action"], e["source_message_id"]) for e in escalations
    } == EXPECTED
    assert {e["as_of_date"] for e in escalations} == {AS_OF}
    assert {e["created_at"] for e in escalations} == {_at("2026-11-27 00:00")}
    made = _rows(
        db,
        "select * from message_ledger where origin = 'escalation' and decided_on = "
        f"'{AS_OF}' order by step",
    )
    assert [m["status"] for m in made] == ["dry_run", "dry_run"]
    assert _rows(db, "select * from manual_followups") == []  # a dry run gives staff no tasks

    real = _escalate(db)
    assert real.counts == {}  # nothing new: the dry run's escalations are made real
    made = {
        m["step"]: m
        for m in _rows(
            db,
            f"select * from message_ledger where origin = 'escalation' and decided_on = '{AS_OF}'",
        )
    }
    remind = made["s1:reminder"]
    key = idempotency_key("care", "s1:reminder", "c1", "anchor-m1")
    assert (remind["idempotency_key"], remind["message_id"]) == (key, message_id(key))
    assert (remind["customer_id"], remind["channel"], remind["variant"]) == ("c1", "sms", "warm")
    assert (remind["status"], remind["origin"], remind["attempts"]) == ("pending", "escalation", 0)
    assert remind["due_at"] == _at("2026-11-27 10:00")
    assert remind["first_due_date"] == remind["planned_for"] == AS_OF
    assert remind["reason"] == "reminder: no answer within 24h to m1"
    care = made["escalation:sms_care"]
    key = idempotency_key("care", "escalation:sms_care", "c2", "m2")
    assert (care["idempotency_key"], care["message_id"]) == (key, message_id(key))
    assert (care["anchor_id"], care["channel"], care["purpose"], care["variant"]) == (
        "m2",
        "sms",
        "service",
        None,
    )
    assert (care["status"], care["due_at"]) == ("pending", _at("2026-11-27 10:00"))

    tasks = {t["kind"]: t for t in _rows(db, "select * from manual_followups")}
    assert sorted(tasks) == ["manager_escalation", "specialist"]
    manager = tasks["manager_escalation"]
    assert (manager["customer_id"], manager["owner_id"], manager["playbook"]) == (
        "c3",
        "mgr2",  # s1's manager, not the first manager
        "complaint",
    )
    assert manager["reason"].startswith("连续 3 天电话未接通，请主管跟进 (complaint)")
    assert (manager["status"], manager["priority"]) == ("open", 40)
    assert manager["due_by"] == _at("2026-11-28 00:00")
    assert manager["task_id"] == escalation_id("c3", "complaint", "unreachable", "2026-11-24")
    specialist = tasks["specialist"]
    assert (specialist["customer_id"], specialist["owner_id"]) == ("c4", "sp2")  # covers retail
    assert "钻石" in specialist["reason"]

    # again today, and the next morning: nothing new
    once = _snapshot(db)
    assert _escalate(db).counts == {}
    assert _snapshot(db) == once
    assert _escalate(db, AS_OF + dt.timedelta(days=1)).counts == {}
    assert _snapshot(db) == once


def test_a_manager_task_without_the_owners_manager_goes_to_the_first_manager(db: Path) -> None:
    con = duckdb.connect(str(db))
    con.execute("update customer_360 set owner_id = null where customer_id = 'c3'")
    con.execute("update message_ledger set owner_id = null where message_id = 'k1'")
    con.close()
    _escalate(db)
    [owner] = query(db, "select owner_id from manual_followups where kind = 'manager_escalation'")
    assert owner == ("mgr1",)


def test_the_plan_suppresses_a_stopped_customers_follow_ups(db: Path) -> None:
    _escalate(db)
    friday = AS_OF + dt.timedelta(days=1)
    con = duckdb.connect(str(db))
    con.execute(
        "insert into config.playbook_steps (playbook, step, fallback_channels, is_task) "
        "values ('care', 's1', null, false)"
    )
    con.executemany(
        "insert into followups_due (as_of_date, customer_id, playbook, step, anchor_id, "
        "variant, channel, purpose, priority, due_at, due_date, is_task) "
        "values (?, ?, 'care', 's1', ?, 'default', 'sms', 'service', 40, ?, ?, false)",
        [(friday, c, f"next-{c}", _at("2026-11-28 10:00"), friday) for c in ("c5", "c7")],
    )
    con.close()
    planning.plan(db, RunDate(friday, TZ_NAME), dry_run=True, policy=DB_POLICY)
    decided = dict(
        query(
            db,
            "select customer_id, status || ': ' || coalesce(reason, '') from message_ledger "
            "where decided_on = ? and origin = 'plan'",
            [friday],
        )
    )
    assert decided == {
        "c5": "suppressed: stopped by escalation: basic missed",
        "c7": "dry_run: ",
    }


# --- the plan's decide() with stops -----------------------------------------------------------


def test_plan_decide_suppresses_a_stopped_customer_and_playbook() -> None:
    def candidate(customer: str, name: str) -> dict:
        return {
            "customer_id": customer,
            "playbook": name,
            "step": "s1",
            "anchor_id": f"{customer}-{name}",
            "variant": "default",
            "channel": "sms",
            "purpose": "service",
            "priority": 1,
            "owner_id": None,
            "due_at": dt.datetime.combine(AS_OF, dt.time(10), tzinfo=TZ),
            "fallback_channels": None,
            "is_task": False,
            "first_due_date": AS_OF,
            "carried": False,
            "has_phone": True,
            "has_email": True,
            "consent_sms": True,
            "consent_email": True,
            "consent_phone": True,
            "industry": "retail",
        }

    rows = [candidate("c1", "care"), candidate("c1", "other"), candidate("c2", "care")]
    decisions = plan_decide(
        pl.DataFrame(rows, schema=CANDIDATE_SCHEMA),
        pl.DataFrame(
            [],
            schema={
                "customer_id": pl.Utf8,
                "purpose": pl.Utf8,
                "channel": pl.Utf8,
                "planned_for": pl.Date,
            },
        ),
        pl.DataFrame(
            [],
            schema={
                "staff_id": pl.Utf8,
                "role": pl.Utf8,
                "industries": pl.Utf8,
                "daily_capacity": pl.Int32,
            },
        ),
        {},
        Day(AS_OF, dt.datetime.combine(AS_OF, dt.time(), tzinfo=TZ), DB_POLICY, dry_run=False),
        stopped={("c1", "care"): "basic"},
    )
    outcome = {(d["customer_id"], d["playbook"]): (d["status"], d["reason"]) for d in decisions}
    assert outcome == {
        ("c1", "care"): ("suppressed", "stopped by escalation: basic missed"),
        ("c1", "other"): ("pending", None),
        ("c2", "care"): ("pending", None),
    }
