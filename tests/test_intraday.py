"""`followup intraday` (flows/intraday.py): the runs during the day for `intraday: true`
playbooks (the shipped `hot_lead`: a call to the owner 30 minutes after an A-intent web-form lead).

A hand-made company on Wednesday 2026-11-04: the morning run plans the day; intraday runs at
14:30, 14:30 again, 15:00 and 18:00 each decide only the leads they can see that no run has
decided, and hand the calls to the task list before they are due; the next morning plans the
evening's lead and nothing twice.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import query

TZ = ZoneInfo("Asia/Shanghai")
D = dt.date(2026, 11, 4)  # a Wednesday, a working day
NEXT = D + dt.timedelta(days=1)

CUSTOMERS = [
    # customer_id, owner, industry, consent_phone
    ("A", "", "零售", "true"),  # no owner: assigned by industry, round-robin
    ("B", "S1", "零售", "true"),
    ("C", "S1", "零售", "false"),  # no consent to marketing calls
    ("E", "S1", "零售", "true"),
    ("F", "S1", "零售", "true"),
    ("G", "S1", "零售", "true"),
    ("N", "S2", "零售", "true"),  # a new buyer: the morning's other follow-ups
]
# a customer whose record comes in during the day with their lead, in the 14:30 run's load
NEWCOMER = ("K", "S3", "零售", "true")
STAFF = [
    ("S1", "销售一", "sales", "零售", 10),
    ("S2", "销售二", "sales", "零售", 10),
    ("S3", "销售三", "sales", "零售", 10),
]
LEADS = [
    # customer, created (local time); each an A-intent web-form lead
    ("E", "2026-11-03 16:00:00"),  # yesterday afternoon: the morning plans it for 09:00
    ("C", "2026-11-04 10:00:00"),  # no consent: suppressed
    ("F", "2026-11-04 13:00:00"),  # opts out at 13:10, before the 14:30 run
    ("A", "2026-11-04 14:05:00"),  # due 14:35: the 14:30 run
    ("B", "2026-11-04 14:40:00"),  # due 15:10: the 15:00 run, invisible at 14:30
    ("G", "2026-11-04 17:50:00"),  # due 18:20, after the call window: the next morning, 09:00
]
NEWCOMER_LEAD = ("K", "2026-11-04 14:10:00")


def _write(path: Path, header: list[str], rows: list) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _company(folder: Path, *, newcomer: bool = False) -> Path:
    """The company's files; with the newcomer's record and lead (the afternoon's files)."""
    folder.mkdir(parents=True)
    customers = [*CUSTOMERS, NEWCOMER] if newcomer else CUSTOMERS
    leads = [*LEADS, NEWCOMER_LEAD] if newcomer else LEADS
    _write(
        folder / "customers.csv",
        ["customer_id", "name", "phone", "owner_id", "industry", "consent_phone"],
        [
            (c, f"客户{c}", f"+86 138 0013 80{i:02d}", owner, industry, consent)
            for i, (c, owner, industry, consent) in enumerate(customers)
        ],
    )
    _write(
        folder / "staff.csv",
        ["staff_id", "name", "role", "industries", "daily_capacity"],
        STAFF,
    )
    _write(
        folder / "orders.csv",
        ["order_id", "customer_id", "ordered_at", "amount", "status"],
        [
            ("O-1", "B", "2026-06-01 10:00:00", 100, "paid"),
            ("O-2", "N", "2026-10-28 09:00:00", 100, "paid"),  # 7 days before D
        ],
    )
    events = [
        (
            f"L-{c}",
            c,
            "lead_created",
            at,
            json.dumps({"lead_id": f"LEAD-{c}", "source": "官网", "intent": "A", "form": "web"}),
        )
        for c, at in leads
    ]
    events.append(("OPT-F", "F", "opt_out", "2026-11-04 13:10:00", json.dumps({})))
    _write(
        folder / "events.csv",
        ["event_id", "customer_id", "event_type", "occurred_at", "attributes"],
        events,
    )
    return folder


def _hot_leads(db: Path) -> dict[str, tuple]:
    """customer -> (status, owner, due time, decided on, reason) of their hot_lead call."""
    rows = query(
        db,
        "select customer_id, status, owner_id, "
        "strftime(timezone('Asia/Shanghai', due_at), '%Y-%m-%d %H:%M'), decided_on, reason "
        "from message_ledger where playbook = 'hot_lead'",
    )
    return {r[0]: r[1:] for r in rows}


def _other_due(db: Path) -> list[tuple]:
    """(playbook, follow-ups) of D's `followups_due` for every playbook but hot_lead."""
    return query(
        db,
        "select playbook, count(*) from followups_due where as_of_date = ? "
        "and playbook <> 'hot_lead' group by all order by all",
        [D],
    )


@pytest.fixture(scope="module")
def company(tmp_path_factory, prefect_server) -> dict:
    """The morning run of D, then the day's intraday runs; what each saw."""
    from flows.daily import daily_flow
    from flows.intraday import intraday_flow

    root = tmp_path_factory.mktemp("intraday")
    source = _company(root / "morning")
    afternoon = _company(root / "afternoon", newcomer=True)
    db = root / "followup.duckdb"
    seen: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOLLOWUP_DATA_DOCS", str(root / "data_docs"))
        patch.setenv("FOLLOWUP_OUTBOX", str(root / "outbox"))
        daily_flow(as_of=D, source=source, db=db, dry_run=False, dispatch=False)
        seen["morning"] = _hot_leads(db)
        seen["due_before"] = _other_due(db)

        def run(clock: str, source: Path | None = None):
            hours, minutes = map(int, clock.split(":"))
            at = dt.datetime.combine(D, dt.time(hours, minutes), TZ)
            return intraday_flow(at=at, db=db, source=source)

        seen["14:30"] = run("14:30", afternoon)
        seen["after 14:30"] = _hot_leads(db)
        seen["tasks 14:30"] = query(db, "select customer_id, owner_id from manual_followups")
        seen["14:30 again"] = run("14:30")
        seen["after 14:30 again"] = _hot_leads(db)
        seen["15:00"] = run("15:00")
        seen["after 15:00"] = _hot_leads(db)
        seen["18:00"] = run("18:00")
        seen["after 18:00"] = _hot_leads(db)
        seen["due_after"] = _other_due(db)
        # the morning run of D again (a data engineer re-runs it): the day's intraday decisions
        # stand
        daily_flow(as_of=D, db=db, dry_run=False, dispatch=False)
        seen["morning again"] = _hot_leads(db)
        daily_flow(as_of=NEXT, source=afternoon, db=db, dry_run=False, dispatch=False)
        seen["next morning"] = _hot_leads(db)
    seen["db"] = db
    return seen


def test_the_morning_plans_yesterdays_lead_and_none_of_todays(company) -> None:
    morning = company["morning"]
    assert set(morning) == {"E"}
    status, owner, due, decided_on, _ = morning["E"]
    assert (status, owner, due, decided_on) == ("pending", "S1", "2026-11-04 09:00", D)


def test_a_lead_seen_at_14_30_is_planned_for_30_minutes_after_it_and_handed_over(company) -> None:
    after = company["after 14:30"]
    status, owner, due, decided_on, reason = after["A"]
    # A has no owner: one of the industry's sales staff, named in the reason
    assert owner in {"S1", "S2", "S3"} and reason == f"assigned to {owner} by industry"
    # due 14:05 + 30 min; a task due before the next run (15:00) goes to the list now
    assert (status, due, decided_on) == ("sent", "2026-11-04 14:35", D)
    assert ("A", owner) in company["tasks 14:30"]
    # B's lead came at 14:40: the 14:30 run cannot see it
    assert "B" not in after


def test_a_customer_whose_record_came_in_with_the_lead_is_routed(company) -> None:
    status, owner, due, _, _ = company["after 14:30"]["K"]
    assert (status, owner, due) == ("sent", "S3", "2026-11-04 14:40")


def test_consent_and_an_opt_out_before_the_run_still_decide(company) -> None:
    after = company["after 14:30"]
    assert (
        after["C"][0] == "suppressed" and after["C"][4] == "no consent_phone for marketing by call"
    )
    assert after["F"][0] == "suppressed"
    assert after["F"][4].startswith("opted out of all at 2026-11-04 13:10")


def test_a_rerun_and_later_runs_never_decide_a_lead_twice(company) -> None:
    assert company["14:30 again"].plan.counts == {}
    assert company["after 14:30 again"] == company["after 14:30"]
    after = company["after 15:00"]
    assert company["15:00"].plan.counts == {"pending": 1}
    status, owner, due, _, _ = after["B"]
    assert (owner, due) == ("S1", "2026-11-04 15:10")
    assert status == "sent"  # due before the next run: on the list from 15:00
    for customer in ("A", "C", "E", "F", "K"):
        assert after[customer] == company["after 14:30"][customer]


def test_an_evening_lead_waits_for_the_next_working_morning(company) -> None:
    # 17:50 + 30 min is after the call window (09:00-18:00): due the next day, not today
    assert "G" not in company["after 18:00"]
    assert company["18:00"].plan.counts == {}
    nxt = company["next morning"]
    status, owner, due, decided_on, _ = nxt["G"]
    assert status == "pending"
    assert (owner, due, decided_on) == ("S1", "2026-11-05 09:00", NEXT)
    # the day's leads keep their one decision, through a re-run of the day's morning too
    assert company["morning again"] == company["after 18:00"]
    for customer in ("A", "B", "C", "E", "F", "K"):
        assert nxt[customer][3] == company["after 18:00"][customer][3]


def test_the_mornings_other_follow_ups_stay(company) -> None:
    assert ("new_buyer_satisfaction", 1) in company["due_before"]
    assert company["due_after"] == company["due_before"]
