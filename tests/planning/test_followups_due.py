"""`followups_due` on a hand-made company: exact rows (customer, playbook, step, anchor, channel,
due time in Asia/Shanghai) for chosen run dates.

One database serves the cases that pass: the sources below are ingested once and built for five
run dates (`followups_due` keeps each date's rows). Its playbook folder holds the shipped playbooks
and, next to them, small `t_*` playbooks declared here whose timing makes each expectation easy to
read; where a shipped playbook has the same shape, its rows are checked against the `t_*` one's.
The known bugs (xfail) get a three-customer database of their own, built for one date.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from flows.building.runner import build
from flows.ingestion.load import ingest
from flows.planning.declarations import PLAYBOOK_DIR, Playbook
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import query

TZ = "Asia/Shanghai"
NATIONAL_DAY_CALL = dt.date(2026, 10, 8)  # first working day after 1-7 October (chinese-calendar)
MAKE_UP_SATURDAY = dt.date(2026, 10, 10)  # 调休: a working Saturday
SUNDAY = dt.date(2026, 11, 22)
MONDAY = dt.date(2026, 11, 23)
TUESDAY = dt.date(2026, 11, 24)
RUN_DATES = (NATIONAL_DAY_CALL, MAKE_UP_SATURDAY, SUNDAY, MONDAY, TUESDAY)
BULK = 600  # customers who all buy once on 2026-11-16, for shares of variants and holdouts

# Playbooks declared for these tests (the shipped ones are in the folder too).
PLAYBOOKS = {
    "t_first_order": """
        trigger: {kind: after, anchor: first_paid_order}
        steps:
          - {name: survey, offset: 7d, at: "10:00", channel: sms}
        reentry: {rule: never}
    """,
    "t_complaint": """
        trigger: {kind: after, anchor: complaint_resolved}
        steps:
          - {name: call, offset: 24h, channel: call}
          - {name: survey, offset: 72h, channel: sms}
        exit: [ticket_reopened]
    """,
    "t_renewal": """
        trigger: {kind: before, anchor: contract_end}
        steps:
          - {name: notice_60d, offset: -60d, at: "10:00", channel: email}
          - {name: call_30d, offset: -30d, channel: call}
    """,
    "t_journey": """
        trigger: {kind: after, anchor: paid_order}
        steps:
          - {name: day3_care, offset: 3d, at: "10:00", channel: sms}
          - {name: day7_tips, offset: 7d, at: "10:00", channel: sms}
          - {name: day30_review, offset: 30d, at: "10:00", channel: sms}
          - {name: day90_repurchase, offset: 90d, at: "10:00", channel: sms}
        exit: [ordered_again]
    """,
    # two days between re-entries, so that three consecutive run dates show due / not / due
    "t_dormant": """
        trigger: {kind: state, state: dormant}
        steps:
          - {name: offer, offset: 0d, at: "10:00", channel: sms}
        exit: [ordered_again]
        reentry: {rule: after_days, days: 2}
    """,
    "t_cadence": """
        trigger: {kind: cadence, every_days: {diamond: 2, gold: 2, silver: 3, basic: 2}}
        steps:
          - {name: care, offset: 0d, at: "10:00", channel: sms}
    """,
    # due for everyone every day: the variant a customer gets can be compared across run dates
    "t_variants": """
        trigger: {kind: cadence, every_days: {diamond: 1, gold: 1, silver: 1, basic: 1}}
        steps:
          - name: touch
            offset: 0d
            at: "10:00"
            channel: sms
            variants: [{name: a, weight: 1}, {name: b, weight: 3}]
            holdout: 0.2
    """,
    "t_order_call": """
        trigger: {kind: after, anchor: paid_order}
        steps:
          - {name: call, offset: 30m, channel: call}
    """,
}

CUSTOMERS = [
    # customer_id, timezone
    ("F1", ""),  # first order 11-16 15:00, a second one 11-17
    ("N1", "America/New_York"),  # first order 11-16 12:00 Shanghai = 11-15 23:00 New York
    ("N2", "America/New_York"),  # first order 11-16 15:00 Shanghai = 11-16 02:00 New York
    ("M1", ""),  # complaint resolved Thu 11-19 22:30
    ("M3", ""),  # complaint resolved Wed 11-18 23:00
    ("M4", ""),  # complaint resolved 11-19 10:00, ticket reopened 11-20
    ("H1", ""),  # complaint resolved Wed 09-30 10:00, the eve of National Day
    ("H2", ""),  # complaint resolved Fri 10-09 11:00, before a make-up Saturday
    ("R1", ""),  # contract ends 2027-01-22 12:00
    ("R2", ""),  # contract ends 2026-12-23 14:00
    ("R3", ""),  # contract ends 2026-12-22 15:00 (30 days before: a Sunday)
    ("J", ""),  # orders 08-25 and 11-20
    ("K", ""),  # one order 08-25
    ("K2", ""),  # orders 08-25 and 11-23 00:05 (after the 11-23 run's morning)
    ("D", ""),  # one order 08-24
    ("P1", ""),  # one order 11-22 23:55
    ("P3", ""),  # one order Mon 11-23 14:00
    ("L1", ""),  # A-intent web lead Mon 11-23 14:00
    ("L2", ""),  # A-intent web lead Sun 11-22 19:00
]
ORDERS = [
    # order_id, customer_id, ordered_at, amount
    ("F1-1", "F1", "2026-11-16 15:00:00", 200),
    ("F1-2", "F1", "2026-11-17 11:00:00", 200),
    ("N1-1", "N1", "2026-11-16 12:00:00", 200),
    ("N2-1", "N2", "2026-11-16 15:00:00", 200),
    ("J-1", "J", "2026-08-25 10:00:00", 600),
    ("J-2", "J", "2026-11-20 10:00:00", 600),
    ("K-1", "K", "2026-08-25 10:00:00", 300),
    ("K2-1", "K2", "2026-08-25 11:00:00", 300),
    ("K2-2", "K2", "2026-11-23 00:05:00", 300),
    ("D-1", "D", "2026-08-24 10:00:00", 100),
    ("P1-1", "P1", "2026-11-22 23:55:00", 100),
    ("P3-1", "P3", "2026-11-23 14:00:00", 100),
]
EVENTS = [
    # event_id, customer_id, event_type, occurred_at, attributes
    ("E1", "M1", "complaint", "2026-11-19 09:00:00", {"ticket_id": "T-M1"}),
    ("E2", "M1", "ticket_resolved", "2026-11-19 22:30:00", {"ticket_id": "T-M1"}),
    ("E3", "M3", "complaint", "2026-11-18 10:00:00", {"ticket_id": "T-M3"}),
    ("E4", "M3", "ticket_resolved", "2026-11-18 23:00:00", {"ticket_id": "T-M3"}),
    ("E5", "M4", "complaint", "2026-11-19 08:00:00", {"ticket_id": "T-M4"}),
    ("E6", "M4", "ticket_resolved", "2026-11-19 10:00:00", {"ticket_id": "T-M4"}),
    ("E7", "M4", "ticket_opened", "2026-11-20 09:00:00", {"ticket_id": "T-M4"}),
    ("E8", "H1", "complaint", "2026-09-29 10:00:00", {"ticket_id": "T-H1"}),
    ("E9", "H1", "ticket_resolved", "2026-09-30 10:00:00", {"ticket_id": "T-H1"}),
    ("E10", "H2", "complaint", "2026-10-09 09:00:00", {"ticket_id": "T-H2"}),
    ("E11", "H2", "ticket_resolved", "2026-10-09 11:00:00", {"ticket_id": "T-H2"}),
    (
        "E12",
        "L1",
        "lead_created",
        "2026-11-23 14:00:00",
        {"lead_id": "L-1", "intent": "A", "form": "web"},
    ),
    (
        "E13",
        "L2",
        "lead_created",
        "2026-11-22 19:00:00",
        {"lead_id": "L-2", "intent": "A", "form": "web"},
    ),
]
CONTRACTS = [
    # contract_id, customer_id, signed_at, ends_at
    ("CT-R1", "R1", "2025-11-01 10:00:00", "2027-01-22 12:00:00"),
    ("CT-R2", "R2", "2025-11-01 10:00:00", "2026-12-23 14:00:00"),
    ("CT-R3", "R3", "2025-11-01 10:00:00", "2026-12-22 15:00:00"),
]


def _bulk_ids() -> list[str]:
    return [f"BULK{i:04d}" for i in range(1, BULK + 1)]


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_sources(
    folder: Path,
    customers: list[tuple],
    orders: list[tuple],
    events: list[tuple],
    contracts: list[tuple],
) -> None:
    folder.mkdir()
    rows = [(c, f"客户{c}", tz) for c, tz in customers]
    _write_csv(folder / "customers.csv", ["customer_id", "name", "timezone"], rows)
    rows = [(*row, "paid") for row in orders]
    _write_csv(
        folder / "orders.csv", ["order_id", "customer_id", "ordered_at", "amount", "status"], rows
    )
    rows = [(*row[:4], json.dumps(row[4])) for row in events]
    _write_csv(
        folder / "events.csv",
        ["event_id", "customer_id", "event_type", "occurred_at", "attributes"],
        rows,
    )
    _write_csv(
        folder / "contracts.csv", ["contract_id", "customer_id", "signed_at", "ends_at"], contracts
    )


def _write_playbooks(folder: Path) -> None:
    """The shipped playbooks and the `t_*` ones above, with a template per step and variant."""
    shutil.copytree(PLAYBOOK_DIR, folder, ignore=shutil.ignore_patterns("calendar.csv"))
    for name, body in PLAYBOOKS.items():
        declaration = {
            "name": name,
            "description": "test",
            "purpose": "service",
            "priority": 50,
            **yaml.safe_load(body),
        }
        playbook = Playbook.model_validate(declaration)
        (folder / f"{name}.yml").write_text(yaml.safe_dump(declaration), encoding="utf-8")
        for template in playbook.template_paths(folder):
            template.parent.mkdir(parents=True, exist_ok=True)
            template.write_text("{{ customer_name }}\n", encoding="utf-8")


def _build_company(
    root: Path, source: Path, playbooks: Path | None, run_dates: tuple[dt.date, ...]
) -> Path:
    """Ingest `source` (as of the last run date) and build each run date; the database."""
    # chinese-calendar only: no user table, whatever the environment or the checkout holds
    empty_calendar = root / "calendar.csv"
    empty_calendar.write_text("date,is_workday\n", encoding="utf-8")
    settings = Settings.from_env().replace(
        db_path=root / "followup.duckdb",
        data_docs_dir=root / "data_docs",
        duckdb_threads=2,
        calendar_file=empty_calendar,
    )
    tz = settings.business_tz
    ingest(settings.db_path, source, settings=settings, run=RunDate(run_dates[-1], tz))
    for as_of in run_dates:
        build(settings.db_path, RunDate(as_of, tz), settings, playbook_dir=playbooks)
    assert query(settings.db_path, "select count(*) from quarantine") == [(0,)]
    return settings.db_path


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made company and a bulk of one-order customers, built for every run date."""
    root = tmp_path_factory.mktemp("followups")
    bulk = _bulk_ids()
    _write_sources(
        root / "source",
        customers=[*CUSTOMERS, *((c, "") for c in bulk)],
        orders=[*ORDERS, *((f"{c}-1", c, "2026-11-16 10:00:00", 100) for c in bulk)],
        events=EVENTS,
        contracts=CONTRACTS,
    )
    _write_playbooks(root / "playbooks")
    return _build_company(root, root / "source", root / "playbooks", RUN_DATES)


# a complaint anchor is the ticket and the resolution it is a follow-up of
M1_TICKET = "T-M1@2026-11-19 22:30:00+08"


def _due(db: Path, as_of: dt.date, playbook: str) -> list[tuple]:
    """(customer, step, anchor, channel, due time in Asia/Shanghai) of the named customers,
    that no rule removed."""
    return query(
        db,
        f"""
        select customer_id, step, anchor_id, channel,
            strftime(timezone('{TZ}', due_at), '%Y-%m-%d %H:%M')
        from followups_due
        where as_of_date = ? and playbook = ? and customer_id not like 'BULK%'
            and removed_by is null
        order by all
        """,
        [as_of, playbook],
    )


def _removed(db: Path, as_of: dt.date, playbook: str) -> list[tuple]:
    """(customer, step, removed_by, removed_reason) of the follow-ups a rule removed."""
    return query(
        db,
        """
        select customer_id, step, removed_by, removed_reason from followups_due
        where as_of_date = ? and playbook = ? and removed_by is not null
            and customer_id not like 'BULK%'
        order by all
        """,
        [as_of, playbook],
    )


def _hash_unit(text: str) -> float:
    """The models' stable hash: the first 32 bits of the MD5, in [0, 1)."""
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 2**32


def _customers(db: Path) -> list[str]:
    return [c for (c,) in query(db, "select customer_id from raw.customers order by 1")]


def _tiers(db: Path, as_of: dt.date) -> dict[str, str]:
    rows = query(
        db, "select customer_id, tier from customer_tier_history where as_of_date = ?", [as_of]
    )
    return dict(rows)


# --- after: first paid order ----------------------------------------------------------------


def test_first_order_survey_is_due_seven_days_later_at_ten_local(db: Path) -> None:
    assert _due(db, SUNDAY, "t_first_order") == [
        # New York: the order was 11-15 23:00 there, so 11-22 10:00 New York (23:00 Shanghai)
        ("N1", "survey", "N1-1", "sms", "2026-11-22 23:00"),
    ]
    assert _due(db, MONDAY, "t_first_order") == [
        ("F1", "survey", "F1-1", "sms", "2026-11-23 10:00"),  # the first order, not F1-2
        ("N2", "survey", "N2-1", "sms", "2026-11-23 23:00"),  # 10:00 in New York
    ]
    assert _due(db, TUESDAY, "t_first_order") == []
    local = query(
        db,
        """
        select customer_id, strftime(timezone('America/New_York', due_at), '%Y-%m-%d %H:%M')
        from followups_due where playbook = 't_first_order' and customer_id like 'N%' order by 1
        """,
    )
    assert local == [("N1", "2026-11-22 10:00"), ("N2", "2026-11-23 10:00")]
    # the bulk bought on 11-16: due on day 7 only, not on day 6 or day 8
    bulk = query(
        db,
        """
        select as_of_date, count(*) from followups_due
        where playbook = 't_first_order' and customer_id like 'BULK%' group by 1
        """,
    )
    assert bulk == [(MONDAY, BULK)]


def test_the_shipped_new_buyer_survey_has_the_same_timing(db: Path) -> None:
    for as_of in (SUNDAY, MONDAY, TUESDAY):
        assert _due(db, as_of, "new_buyer_satisfaction") == _due(db, as_of, "t_first_order")


# --- after: complaint resolved --------------------------------------------------------------


def test_complaint_call_moves_into_the_call_window_and_onto_a_working_day(db: Path) -> None:
    # M1 resolved Thu 22:30: call 24 h later is Fri 22:30, after 18:00 -> Sat 09:00 -> Mon 09:00;
    # the SMS survey 72 h later is Sun 22:30, after 20:00 -> Mon 09:00
    assert _due(db, MONDAY, "t_complaint") == [
        ("M1", "call", M1_TICKET, "call", "2026-11-23 09:00"),
        ("M1", "survey", M1_TICKET, "sms", "2026-11-23 09:00"),
    ]
    # M3 resolved Wed 23:00: the survey (Sat 23:00) goes out on Sunday morning, an SMS needs no
    # working day; M4's ticket was opened again, so its survey (Sun 10:00) is not due
    assert _due(db, SUNDAY, "t_complaint") == [
        ("M3", "survey", "T-M3@2026-11-18 23:00:00+08", "sms", "2026-11-22 09:00"),
    ]
    # ... and stays a row that says why
    assert _removed(db, SUNDAY, "t_complaint") == [
        ("M4", "survey", "exit", "ticket reopened on 2026-11-20"),
    ]
    assert _due(db, TUESDAY, "t_complaint") == []


def test_a_complaint_call_due_on_national_day_moves_to_the_first_working_day_after(
    db: Path,
) -> None:
    # H1 resolved 09-30 10:00: 24 h later is 10-01, National Day (1-7 October); chinese-calendar
    # makes Thursday 10-08 the first working day after it
    assert _due(db, NATIONAL_DAY_CALL, "t_complaint") == [
        ("H1", "call", "T-H1@2026-09-30 10:00:00+08", "call", "2026-10-08 09:00"),
    ]
    planned = query(
        db,
        f"""
        select strftime(timezone('{TZ}', planned_at), '%Y-%m-%d %H:%M') from followups_due
        where as_of_date = ? and customer_id = 'H1' and playbook = 't_complaint'
        """,
        [NATIONAL_DAY_CALL],
    )
    assert planned == [("2026-10-01 10:00",)]
    # ... and on the make-up Saturday, 10-10, a call is due (H2 resolved Fri 10-09 11:00)
    assert _due(db, MAKE_UP_SATURDAY, "t_complaint") == [
        ("H2", "call", "T-H2@2026-10-09 11:00:00+08", "call", "2026-10-10 11:00"),
    ]


def test_the_shipped_complaint_recovery_has_the_same_timing(db: Path) -> None:
    for as_of in RUN_DATES:
        assert _due(db, as_of, "complaint_recovery") == _due(db, as_of, "t_complaint"), as_of


# --- before: contract end -------------------------------------------------------------------


def test_renewal_notice_sixty_days_and_call_thirty_days_before_the_contract_ends(
    db: Path,
) -> None:
    assert _due(db, MONDAY, "t_renewal") == [
        ("R1", "notice_60d", "CT-R1", "email", "2026-11-23 10:00"),  # ends 2027-01-22
        ("R2", "call_30d", "CT-R2", "call", "2026-11-23 14:00"),  # ends 2026-12-23 14:00
        ("R3", "call_30d", "CT-R3", "call", "2026-11-23 09:00"),  # Sun 11-22 15:00 -> Monday
    ]
    for as_of in (SUNDAY, TUESDAY, NATIONAL_DAY_CALL, MAKE_UP_SATURDAY):
        assert _due(db, as_of, "t_renewal") == [], as_of
    for as_of in RUN_DATES:
        assert _due(db, as_of, "contract_renewal") == _due(db, as_of, "t_renewal"), as_of


# --- a journey per paid order ---------------------------------------------------------------


def test_each_paid_order_starts_a_journey_and_a_later_order_exits_it(db: Path) -> None:
    assert _due(db, SUNDAY, "t_journey") == [
        ("D", "day90_repurchase", "D-1", "sms", "2026-11-22 10:00"),
        ("N1", "day7_tips", "N1-1", "sms", "2026-11-22 23:00"),
    ]
    # J's 08-25 order would reach day 90 today (as K's does), but J ordered again on 11-20:
    # that journey is over and the new order's own is on day 3
    assert _due(db, MONDAY, "t_journey") == [
        ("J", "day3_care", "J-2", "sms", "2026-11-23 10:00"),
        ("K", "day90_repurchase", "K-1", "sms", "2026-11-23 10:00"),
        # K2's next order came at 00:05 on the run's own day: not seen yet, so no exit
        ("K2", "day90_repurchase", "K2-1", "sms", "2026-11-23 10:00"),
        ("N2", "day7_tips", "N2-1", "sms", "2026-11-23 23:00"),
    ]
    # F1 ordered again on 11-17, so only the second order's day 7 is due (11-24)
    assert _due(db, TUESDAY, "t_journey") == [
        ("F1", "day7_tips", "F1-2", "sms", "2026-11-24 10:00"),
    ]


def test_the_shipped_post_purchase_journey_has_the_same_timing(db: Path) -> None:
    for as_of in (SUNDAY, MONDAY, TUESDAY):
        ours = [(c, s, a, t) for c, s, a, _, t in _due(db, as_of, "t_journey")]
        shipped = [(c, s, a, t) for c, s, a, _, t in _due(db, as_of, "post_purchase_journey")]
        assert shipped == ours, as_of
    channels = query(
        db,
        "select distinct step, channel from followups_due "
        "where playbook = 'post_purchase_journey' order by 1",
    )
    assert ("day7_tips", "email") in channels


# --- state: dormant, re-entering after days -------------------------------------------------


def test_dormant_is_due_when_dormancy_begins_and_again_after_the_reentry_days(db: Path) -> None:
    # D's last order was 08-24: dormant (90 days) from 11-22; due then and every 2 days after
    assert _due(db, SUNDAY, "t_dormant") == [
        ("D", "offer", "dormant_90d:2026-11-22:0", "sms", "2026-11-22 10:00"),
    ]
    # K and K2 (last order 08-25) turn dormant on 11-23; K2's order at 00:05 that day is not
    # seen by the 11-23 run, and ends its dormancy for the 11-24 run
    assert _due(db, MONDAY, "t_dormant") == [
        ("K", "offer", "dormant_90d:2026-11-23:0", "sms", "2026-11-23 10:00"),
        ("K2", "offer", "dormant_90d:2026-11-23:0", "sms", "2026-11-23 10:00"),
    ]
    assert _due(db, TUESDAY, "t_dormant") == [
        ("D", "offer", "dormant_90d:2026-11-22:1", "sms", "2026-11-24 10:00"),
    ]


def test_the_shipped_dormant_winback_reenters_after_sixty_days(db: Path) -> None:
    got = {as_of: [c for c, *_ in _due(db, as_of, "dormant_winback")] for as_of in RUN_DATES}
    assert got == {
        NATIONAL_DAY_CALL: [],
        MAKE_UP_SATURDAY: [],
        SUNDAY: ["D"],
        MONDAY: ["K", "K2"],
        TUESDAY: [],
    }


# --- cadence by tier ------------------------------------------------------------------------


def _cadence_due(customer: str, playbook: str, every_days: int, as_of: dt.date) -> bool:
    """Due when the run date falls on the customer's fixed day of the cycle."""
    phase = int(_hash_unit(f"{playbook}:{customer}") * every_days)
    return ((as_of - dt.date(1970, 1, 1)).days + phase) % every_days == 0


def test_cadence_recurs_every_n_days_per_tier_on_a_stable_day(db: Path) -> None:
    every = {"diamond": 2, "gold": 2, "silver": 3, "basic": 2}
    customers = _customers(db)
    seen: dict[str, list[dt.date]] = {c: [] for c in customers}
    for as_of in (SUNDAY, MONDAY, TUESDAY):
        tiers = _tiers(db, as_of)
        assert tiers["J"] == "silver"  # two orders, 1,200 in six months
        assert set(tiers.values()) == {"silver", "basic"}
        rows = query(
            db,
            f"""
            select customer_id, anchor_id, strftime(timezone('{TZ}', due_at), '%H:%M')
            from followups_due where as_of_date = ? and playbook = 't_cadence'
            """,
            [as_of],
        )
        expected = {c for c in customers if _cadence_due(c, "t_cadence", every[tiers[c]], as_of)}
        assert {c for c, *_ in rows} == expected, as_of
        for customer, anchor, clock in rows:
            assert anchor == f"cadence:{tiers[customer]}:{as_of}"
            assert clock == ("23:00" if customer.startswith("N") else "10:00")
            seen[customer].append(as_of)
    # every 2 days for basic: the 22nd and the 24th, or the 23rd alone; both phases occur
    patterns = Counter(tuple(days) for customer, days in seen.items() if customer != "J")
    assert set(patterns) == {(SUNDAY, TUESDAY), (MONDAY,)}
    assert min(patterns.values()) > BULK // 4
    # every 3 days for silver: once in three consecutive days
    assert len(seen["J"]) == 1


def test_the_shipped_tier_cadence_matches_its_declared_days(db: Path) -> None:
    every = {"diamond": 15, "gold": 30, "silver": 91, "basic": 182}
    customers = _customers(db)
    for as_of in RUN_DATES:
        tiers = _tiers(db, as_of)
        got = query(
            db,
            "select customer_id from followups_due where as_of_date = ? "
            "and playbook = 'tier_cadence'",
            [as_of],
        )
        expected = {
            c
            for c in customers
            if c in tiers and _cadence_due(c, "tier_cadence", every[tiers[c]], as_of)
        }
        assert {c for (c,) in got} == expected, as_of


# --- variants and holdout -------------------------------------------------------------------


def _expected_variant(customer: str) -> str:
    bucket = _hash_unit(f"t_variants.touch:{customer}")
    # holdout [0, 0.2), then a and b share the rest 1:3
    return "holdout" if bucket < 0.2 else "a" if bucket < 0.4 else "b"


def test_a_customer_keeps_the_same_variant_on_every_run_date(db: Path) -> None:
    rows = query(
        db,
        "select customer_id, list(distinct variant), count(*) from followups_due "
        "where playbook = 't_variants' group by 1",
    )
    customers = _customers(db)
    assert len(rows) == len(customers)
    for customer, variants, runs in rows:
        assert runs == len(RUN_DATES)
        assert variants == [_expected_variant(customer)], customer


def test_holdout_and_variant_shares_are_roughly_as_declared(db: Path) -> None:
    shares = dict(
        query(
            db,
            "select variant, count(*) / sum(count(*)) over () from followups_due "
            "where playbook = 't_variants' and as_of_date = ? group by 1",
            [MONDAY],
        )
    )
    assert shares.keys() == {"holdout", "a", "b"}
    assert shares["holdout"] == pytest.approx(0.2, abs=0.05)
    assert shares["a"] == pytest.approx(0.2, abs=0.05)
    assert shares["b"] == pytest.approx(0.6, abs=0.05)
    # the shipped new-buyer survey: 10% holdout, two variants of equal weight
    shipped = dict(
        query(
            db,
            "select variant, count(*) / sum(count(*)) over () from followups_due "
            "where playbook = 'new_buyer_satisfaction' and as_of_date = ? group by 1",
            [MONDAY],
        )
    )
    assert shipped.keys() == {"holdout", "value_for_money", "after_sales"}
    assert shipped["holdout"] == pytest.approx(0.1, abs=0.04)
    assert shipped["value_for_money"] == pytest.approx(0.45, abs=0.06)
    assert shipped["after_sales"] == pytest.approx(0.45, abs=0.06)


# --- the whole table ------------------------------------------------------------------------


def test_no_follow_up_is_due_twice(db: Path) -> None:
    twice = query(
        db,
        """
        select as_of_date, customer_id, playbook, step, anchor_id, count(*)
        from followups_due group by all having count(*) > 1
        """,
    )
    assert twice == []
    dates = query(db, "select distinct as_of_date from followups_due order by 1")
    assert [d for (d,) in dates] == list(RUN_DATES)


def test_nothing_from_the_run_morning_or_later_triggers_anything(db: Path) -> None:
    # P1 ordered 23:55 the evening before: the 30-minute call moves into Monday's window;
    # J's order of Friday 10:00 was first seen on Saturday, so its call waited for Monday
    assert _due(db, MONDAY, "t_order_call") == [
        ("J", "call", "J-2", "call", "2026-11-23 09:00"),
        ("P1", "call", "P1-1", "call", "2026-11-23 09:00"),
    ]
    # K2's order at 2026-11-23 00:05 is after the 11-23 run's morning: it triggers nothing then
    late = query(
        db,
        """
        select customer_id, playbook, step, anchor_id from followups_due
        where as_of_date = ? and customer_id in ('K2', 'P3', 'L1') and anchor_kind <> 'cadence'
        order by all
        """,
        [MONDAY],
    )
    assert late == [
        ("K2", "dormant_winback", "offer", "dormant_90d:2026-11-23:0"),
        ("K2", "post_purchase_journey", "day90_repurchase", "K2-1"),
        ("K2", "t_dormant", "offer", "dormant_90d:2026-11-23:0"),
        ("K2", "t_journey", "day90_repurchase", "K2-1"),
    ]
    # the evening lead of Sunday gets its call on Monday morning
    assert _due(db, MONDAY, "hot_lead") == [("L2", "call", "L-2", "call", "2026-11-23 09:00")]


def test_a_short_offset_follow_up_is_due_on_the_first_run_that_sees_its_anchor(
    db: Path,
) -> None:
    # P3 ordered Mon 11-23 14:00 (call due 14:30), L1 is an A-intent web lead of Mon 11-23 14:00
    # (hot_lead: call within 30 minutes). The 11-24 run is the first that sees either.
    rows = query(
        db,
        "select customer_id, playbook from followups_due "
        "where customer_id in ('P3', 'L1') and playbook in ('t_order_call', 'hot_lead') order by 1",
    )
    assert rows == [("L1", "hot_lead"), ("P3", "t_order_call")]


# --- bugs found and fixed, on a company of their own (so that the cases above stay exact) ----


@pytest.fixture(scope="module")
def bug_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three customers that hit the bugs below, built on 11-23 with the shipped playbooks."""
    root = tmp_path_factory.mktemp("followup_bugs")
    ticket = {"ticket_id": "T-CD"}
    _write_sources(
        root / "source",
        customers=[("CD", ""), ("KN", "America/New_York"), ("CW", ""), ("RF", ""), ("TP", "")],
        orders=[
            ("KN-1", "KN", "2026-08-25 10:00:00", 300),
            ("RF-1", "RF", "2026-11-10 10:00:00", 300),
        ],
        events=[
            # CD complained twice about one ticket (by phone, then in the app) before it was
            # resolved on Thu 11-19 22:30
            ("B1", "CD", "complaint", "2026-11-19 09:00:00", ticket),
            ("B2", "CD", "complaint", "2026-11-19 15:00:00", ticket),
            ("B3", "CD", "ticket_resolved", "2026-11-19 22:30:00", ticket),
            # CW's last login: 10-23 15:00, so the churn warning (30 days) is first seen on 11-23
            ("B4", "CW", "login", "2026-10-23 15:00:00", {}),
            # RF's first refund, of the only order RF ever made: no earlier refund, no later order
            ("B5", "RF", "refund", "2026-11-20 15:00:00", {}),
            # TP is a prospect: a trial class on Sun 11-22 08:00 and no paid order at all
            ("B6", "TP", "trial_class", "2026-11-22 08:00:00", {}),
        ],
        contracts=[],
    )
    return _build_company(root, root / "source", None, (MONDAY,))


def test_a_first_refund_of_the_only_order_triggers_the_winback(bug_db: Path) -> None:
    # re-entry after 30 days with no earlier refund is no reason to skip; ordered_again with no
    # paid order after the refund is no exit (both compared a missing value, and dropped it)
    due = [(c, s, ch, t) for c, s, _, ch, t in _due(bug_db, MONDAY, "refund_winback")]
    assert due == [("RF", "offer", "sms", "2026-11-23 10:00")]
    assert _removed(bug_db, MONDAY, "refund_winback") == []


def test_a_prospect_without_a_paid_order_gets_the_trial_class_call(bug_db: Path) -> None:
    due = [(c, s, ch, t) for c, s, _, ch, t in _due(bug_db, MONDAY, "trial_class_followup")]
    assert due == [("TP", "call", "call", "2026-11-23 09:00")]


def test_two_complaints_on_one_ticket_give_one_call_and_one_survey(bug_db: Path) -> None:
    assert _due(bug_db, MONDAY, "complaint_recovery") == [
        ("CD", "call", "T-CD@2026-11-19 22:30:00+08", "call", "2026-11-23 09:00"),
        ("CD", "survey", "T-CD@2026-11-19 22:30:00+08", "sms", "2026-11-23 09:00"),
    ]


def test_dormancy_of_a_new_york_customer_is_due_on_the_day_it_began(bug_db: Path) -> None:
    # KN's last order was 08-25, as K's: dormant from 11-23, as K is
    since = query(bug_db, "select since from customer_tags where customer_id = 'KN'")
    assert len(since) == 1
    due = [(c, s, ch, t) for c, s, _, ch, t in _due(bug_db, MONDAY, "dormant_winback")]
    assert due == [("KN", "offer", "sms", "2026-11-23 23:00")]  # 10:00 in New York


def test_churn_warning_care_is_due_on_the_first_run_that_sees_the_warning(bug_db: Path) -> None:
    tags = query(
        bug_db,
        f"""
        select tag, strftime(timezone('{TZ}', since), '%Y-%m-%d %H:%M') from customer_tags
        where customer_id = 'CW'
        """,
    )
    assert tags == [("churn_warning", "2026-11-22 15:00")]  # seen by the 11-23 run
    due = [(c, s, ch, t) for c, s, _, ch, t in _due(bug_db, MONDAY, "churn_warning_care")]
    assert due == [("CW", "care", "sms", "2026-11-23 10:00")]
