"""`followup backtest` (flows/backtest.py): the plan replayed over past days.

- On a hand-made history: nothing from after a replayed morning leaks into that day (an order the
  next day, or later the same day), and an opt-out stops messages from its moment on, not before.
- On the demo company: a replayed day gives exactly the `followups_due` that
  `followup run --dry-run --as-of` gives for that day, the result tables hold together, the live
  ledger is untouched, and the report gains its backtest section.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from flows.backtesting.replay import BacktestError, check_range, choose_playbooks
from flows.planning.declarations import PLAYBOOK_DIR
from tests.conftest import query

TZ = "Asia/Shanghai"
D = dt.date(2026, 11, 4)  # the replayed day the leakage cases look at (a Wednesday)
FIRST, LAST = dt.date(2026, 11, 2), dt.date(2026, 11, 6)

PLAYBOOKS = {
    # two days after the first paid order, at 10:00; ends if the customer orders again
    "t_survey": {
        "purpose": "service",
        "trigger": {"kind": "after", "anchor": "first_paid_order"},
        "steps": [{"name": "survey", "offset": "2d", "at": "10:00", "channel": "sms"}],
        "exit": ["ordered_again"],
        "reentry": {"rule": "never"},
    },
    # a message every day from day 2 to day 4 after the first paid order, at 10:00
    "t_daily": {
        "purpose": "service",
        "trigger": {"kind": "after", "anchor": "first_paid_order"},
        "steps": [
            {"name": f"day{n}", "offset": f"{n}d", "at": "10:00", "channel": "sms"}
            for n in (2, 3, 4)
        ],
        "reentry": {"rule": "never"},
        "audience": {"tags_any": ["opt_test"]},
    },
}
CUSTOMERS = ["A", "B", "C", "O", "P"]
ORDERS = [
    # A's survey is due on D at 10:00; A orders again later on D and on D+1 (in the "late" data)
    ("A-1", "A", "2026-11-02 09:00:00"),
    ("B-1", "B", "2026-11-02 09:30:00"),
    # O and P get t_daily on 11-03, 11-04 and 11-05
    ("O-1", "O", "2026-11-01 09:00:00"),
    ("P-1", "P", "2026-11-01 09:00:00"),
]
LATE_ORDERS = [
    ("A-2", "A", "2026-11-04 15:00:00"),  # later the same day: D's morning cannot see it
    ("A-3", "A", "2026-11-05 11:00:00"),  # the next day
    ("C-1", "C", "2026-11-04 12:00:00"),  # C's first order, later on D
]
EVENTS = [
    # O opts out of SMS on D at 08:00, before the 10:00 send; P at 11:00, after it
    ("E-O", "O", "opt_out", "2026-11-04 08:00:00", {"channel": "sms"}),
    ("E-P", "P", "opt_out", "2026-11-04 11:00:00", {"channel": "sms"}),
]
TAGS = [("O", "opt_test"), ("P", "opt_test")]


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _source(folder: Path, orders: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    rows = [(c, f"客户{c}", "+86 138 0013 800" + str(i), "true") for i, c in enumerate(CUSTOMERS)]
    _write_csv(folder / "customers.csv", ["customer_id", "name", "phone", "consent_sms"], rows)
    _write_csv(
        folder / "orders.csv",
        ["order_id", "customer_id", "ordered_at", "amount", "status"],
        [(*o, 100, "paid") for o in orders],
    )
    _write_csv(
        folder / "events.csv",
        ["event_id", "customer_id", "event_type", "occurred_at", "attributes"],
        [(*e[:4], json.dumps(e[4])) for e in EVENTS],
    )
    _write_csv(folder / "tags.csv", ["customer_id", "tag"], TAGS)
    return folder


def _playbooks(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(PLAYBOOK_DIR / "_policy.yml", folder / "_policy.yml")
    for name, body in PLAYBOOKS.items():
        (folder / f"{name}.yml").write_text(
            yaml.safe_dump({"name": name, "description": "test", "priority": 50, **body}),
            encoding="utf-8",
        )
        for step in body["steps"]:
            template = folder / "templates" / name / f"{step['name']}.j2"
            template.parent.mkdir(parents=True, exist_ok=True)
            template.write_text("{{ customer_name }}\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def histories(tmp_path_factory, prefect_server) -> dict[str, Path]:
    """The same company backtested twice, from 11-02 to 11-06: without and with the late orders."""
    from flows.backtest import backtest_flow

    root = tmp_path_factory.mktemp("backtest")
    playbooks = _playbooks(root / "playbooks")
    calendar = root / "calendar.csv"
    calendar.write_text("date,is_workday\n", encoding="utf-8")
    dbs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOLLOWUP_CALENDAR", str(calendar))
        patch.setenv("FOLLOWUP_DATA_DOCS", str(root / "data_docs"))
        for name, orders in (("base", ORDERS), ("late", ORDERS + LATE_ORDERS)):
            source = _source(root / name, orders)
            dbs[name] = root / f"{name}.duckdb"
            backtest_flow(
                start=FIRST, end=LAST, db=dbs[name], source=source, playbook_dir=playbooks
            )
    return dbs


def _due(db: Path, day: dt.date) -> list[tuple]:
    """The replayed day's followups_due that no rule removed: (customer, playbook, step, anchor,
    due time)."""
    return query(
        db,
        "select customer_id, playbook, step, anchor_id, "
        f"strftime(timezone('{TZ}', due_at), '%Y-%m-%d %H:%M') "
        "from backtest_due where as_of_date = ? and removed_by is null order by all",
        [day],
    )


def _decided(db: Path, customer: str, playbook: str = "t_survey") -> list[tuple]:
    """(day, step, status, reason) of every decision about the customer in the playbook."""
    return query(
        db,
        "select day, step, status, reason from backtest_decisions "
        "where customer_id = ? and playbook = ? order by all",
        [customer, playbook],
    )


def _day(db: Path, day: dt.date) -> list[tuple]:
    return query(
        db,
        "select customer_id, playbook, step, status, reason from backtest_decisions "
        "where day = ? order by all",
        [day],
    )


def test_an_order_after_the_morning_never_changes_that_days_replay(histories) -> None:
    base, late = histories["base"], histories["late"]
    for day in (FIRST, dt.date(2026, 11, 3), D):
        assert _due(late, day) == _due(base, day), day
        assert _day(late, day) == _day(base, day), day
    # A's survey is due and planned on D in both: A ordered again that afternoon, after it
    assert ("A", "t_survey", "survey", "A-1", "2026-11-04 10:00") in _due(late, D)
    assert _decided(late, "A") == [(D, "survey", "dry_run", None)]
    # the later days do see the late orders (so the comparison above can fail): C's first order,
    # at noon on D, makes a survey due two days later
    assert ("C", "t_survey", "survey", "C-1", "2026-11-06 10:00") in _due(late, LAST)
    assert [c for c, *_ in _due(base, LAST)] == []


def test_a_late_order_counts_as_ordering_anyway(histories) -> None:
    outcome = "select day, ordered, order_amount from backtest_outcomes where customer_id = 'A'"
    assert query(histories["base"], outcome) == [(D, False, 0)]
    # A-2 (D 15:00) and A-3 (D+1 11:00): within the 14 days after D 10:00
    assert query(histories["late"], outcome) == [(D, True, 200)]


def test_an_opt_out_stops_messages_from_its_moment_not_before(histories) -> None:
    db = histories["base"]
    o, p = _decided(db, "O", "t_daily"), _decided(db, "P", "t_daily")
    # O opted out of SMS at 08:00 on D: day 2 (11-03) goes out; D's 10:00 message does not, nor
    # day 4's
    assert [row[:3] for row in o] == [
        (dt.date(2026, 11, 3), "day2", "dry_run"),
        (D, "day3", "suppressed"),
        (dt.date(2026, 11, 5), "day4", "suppressed"),
    ]
    assert o[1][3] == "opted out of sms at 2026-11-04 08:00, before the send"
    assert o[2][3] == "opted out of sms at 2026-11-04 08:00"
    # P opted out at 11:00 on D, after D's 10:00 message: stopped from the next day on
    assert [row[:3] for row in p] == [
        (dt.date(2026, 11, 3), "day2", "dry_run"),
        (D, "day3", "dry_run"),
        (dt.date(2026, 11, 5), "day4", "suppressed"),
    ]


# --- on the demo company -------------------------------------------------------------------------

REPLAYED = (dt.date(2026, 11, 2), dt.date(2026, 11, 4))  # windows closed by the data's end


def _followup(*args: str, cwd: Path) -> str:
    env = {**os.environ, "COLUMNS": "200", "FOLLOWUP_OUTBOX": str(cwd / "outbox")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "followup"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def demo_backtest(demo_run, tmp_path_factory) -> tuple[Path, str, list]:
    """`followup backtest` on a copy of the demo's database, as a user runs it: the database, what
    it printed, and the ledger before it ran."""
    root = tmp_path_factory.mktemp("demo-backtest")
    db = root / "followup.duckdb"
    shutil.copy(demo_run.db, db)
    ledger = query(db, "select * from message_ledger order by message_id")
    out = _followup(
        "backtest",
        *("--db", str(db), "--from", str(REPLAYED[0]), "--to", str(REPLAYED[1])),
        cwd=root,
    )
    return db, out, ledger


@pytest.mark.parametrize("day", [REPLAYED[0] + dt.timedelta(days=1), REPLAYED[1]])
def test_a_replayed_day_is_the_days_dry_run(demo_backtest, demo_run, tmp_path, day) -> None:
    """A replayed day after the first (its models run from dbt's compiled SQL with the day put
    in, built ahead of the plan in a slot of its own, while another day is built or planned)
    gives the rows `followup run --dry-run --as-of` builds for it."""
    db, _, _ = demo_backtest
    live = tmp_path / "live.duckdb"
    shutil.copy(demo_run.db, live)
    _followup("run", "--dry-run", "--as-of", str(day), "--db", str(live), cwd=tmp_path)
    replayed = query(
        db,
        "select * exclude (as_of_date) from backtest_due where as_of_date = ? order by all",
        [day],
    )
    expected = query(
        live,
        "select * exclude (as_of_date) from followups_due where as_of_date = ? order by all",
        [day],
    )
    assert len(expected) > 100
    assert replayed == expected


def test_the_demo_backtest_tables_hold_together(demo_backtest) -> None:
    db, out, ledger_before = demo_backtest
    days = (REPLAYED[1] - REPLAYED[0]).days + 1
    assert f"Backtest {REPLAYED[0]} → {REPLAYED[1]}: {days} days" in out
    # nothing sent, the live ledger as it was
    assert query(db, "select * from message_ledger order by message_id") == ledger_before
    # every decision is in the daily counts, and every would-be message has its outcome row
    (decisions,) = query(db, "select count(*) from backtest_decisions where origin = 'plan'")[0]
    (counted,) = query(db, "select sum(due) from backtest_daily")[0]
    assert decisions == counted > 0
    planned = query(
        db,
        "select count(*) from backtest_decisions d where status = 'dry_run' and not exists "
        "(select 1 from backtest_decisions later where later.message_id = d.message_id "
        "and later.day > d.day)",
    )
    assert planned == query(db, "select count(*) from backtest_outcomes where would_send")
    # the demo's caps bite: collisions name the playbook that filled the cap
    collisions = query(db, "select playbook, blocked_by, scope from backtest_collisions")
    assert collisions
    playbooks = {p for (p,) in query(db, "select distinct playbook from backtest_decisions")}
    assert {blocked_by for _, blocked_by, _ in collisions} <= playbooks | {
        p for (p,) in query(db, "select distinct playbook from message_ledger")
    }
    (closed,) = query(db, "select bool_and(window_complete) from backtest_outcomes")[0]
    assert closed
    (run,) = query(db, "select days, focus from backtest_runs")
    assert run == (days, [])


def test_the_report_gains_a_backtest_section(demo_backtest, tmp_path) -> None:
    from flows.reporting.data import load_report_data
    from flows.reporting.html import write_html

    db, _, _ = demo_backtest
    data = load_report_data(db, "Asia/Shanghai")
    page = write_html(data, tmp_path / "r.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="backtest">(.*?)</section>', page, re.S)
    assert section, "no backtest section"
    body = section[1]
    assert f"from {REPLAYED[0]} to {REPLAYED[1]}" in body
    assert 'id="chart-backtest-volume"' in body
    for heading in ("Cap collisions", "Owner overload days", "Baseline: ordered anyway"):
        assert heading in body
    assert "No data yet: no follow-up would have met a cap" not in body
    assert "No data yet: no attribution window has closed yet" not in body
    assert "baseline_conversion_rate" in body


# --- the command's checks --------------------------------------------------------------------


def test_a_range_must_be_in_the_past_and_in_order() -> None:
    today = dt.date(2026, 11, 23)
    check_range(dt.date(2026, 8, 25), dt.date(2026, 11, 22), today)  # 90 days: fine
    with pytest.raises(BacktestError, match="before --from"):
        check_range(dt.date(2026, 11, 5), dt.date(2026, 11, 1), today)
    with pytest.raises(BacktestError, match="not in the past"):
        check_range(dt.date(2026, 11, 1), today, today)
    with pytest.raises(BacktestError, match="at most 400"):
        check_range(dt.date(2025, 1, 1), dt.date(2026, 11, 1), today)


def test_a_disabled_playbook_can_be_tried_and_an_unknown_one_is_named(tmp_path) -> None:
    folder = _playbooks(tmp_path / "playbooks")
    declaration = yaml.safe_load((folder / "t_daily.yml").read_text(encoding="utf-8"))
    (folder / "t_daily.yml").write_text(
        yaml.safe_dump({**declaration, "enabled": False}), encoding="utf-8"
    )
    assert [p.name for p in choose_playbooks(folder, [])] == ["t_survey"]
    assert [p.name for p in choose_playbooks(folder, ["t_daily"])] == ["t_daily", "t_survey"]
    with pytest.raises(BacktestError, match=r"no playbook named t_nope in .* t_daily, t_survey"):
        choose_playbooks(folder, ["t_nope"])


def test_columns_read_keeps_what_a_filter_or_a_join_reads_and_drops_the_rest() -> None:
    """The replay narrows each model to the columns later SQL reads, as DuckDB's planner sees
    them with only the removal of unused columns on: a column read in a filter, a join or an
    expression whose result is used counts; one in a result nobody selects does not."""
    import duckdb

    from flows.backtesting.replay import columns_read

    con = duckdb.connect()
    con.execute("create table t as select 1 as a, 2 as b, 3 as c, 4 as d, 5 as e")
    con.execute("create table u as select 1 as a, 'x' as f, 'y' as g")
    sql = """
        with wide as (
            select t.a, t.b * 2 as twice_b, t.e + 1 as unused_e, u.f
            from t join u on t.a = u.a
            where t.c > 0
        )
        select a, twice_b, f from wide
    """
    read = columns_read(con, sql)
    assert read == {"memory.main.t": {"a", "b", "c"}, "memory.main.u": {"a", "f"}}
    # the optimizers it turned off are on again
    assert con.execute("select current_setting('disabled_optimizers')").fetchone()[0] == ""


def test_narrowed_models_give_the_same_due_follow_ups_and_plan_candidates(
    demo_run, tmp_path
) -> None:
    """On a demo day, the models narrowed to what is read give the same `followups_due` and the
    same plan candidates as the full models, and the columns nobody reads are left null."""
    import duckdb

    from flows.backtesting.replay import compiled, narrowed
    from flows.planning.candidates import CANDIDATES
    from flows.settings import Settings

    db = tmp_path / "followup.duckdb"
    shutil.copy(demo_run.db, db)
    settings = Settings.from_env()
    models = compiled(db, settings)
    day = REPLAYED[1]
    start = dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(settings.business_tz))
    con = duckdb.connect(str(db))
    con.execute("set TimeZone = ?", [settings.business_tz])
    variants = {"whole": models, "narrow": narrowed(con, models)}
    catalog = f'"{db.stem}".'
    results = {}
    for name, chosen in variants.items():
        con.execute(f"attach ':memory:' as {name}")
        con.execute(f"create schema {name}.intermediate")
        moved = {m.relation: f"{name}." + m.relation.removeprefix(catalog) for m in chosen}
        con.execute(
            f"create table {moved[next(m.relation for m in chosen if m.name == 'followups_due')]}"
            " as select * from followups_due limit 0"
        )
        for model in chosen:
            for statement in model.moved(moved).statements(day):
                con.execute(statement)
        # the plan's query, reading the day's tables of this variant
        model_tables = r"\b(from|join) (intermediate\.|)(followups_due|customer_\w+|int_\w+)\b"
        candidates = re.sub(
            model_tables, lambda m, name=name: f"{m[1]} {name}.{m[2] or 'main.'}{m[3]}", CANDIDATES
        )
        assert not re.search(model_tables, candidates)
        assert candidates.count(f"{name}.") >= 6
        results[name] = {
            "due": con.execute(f"select * from {name}.main.followups_due order by all").fetchall(),
            "candidates": con.execute(
                f"select * from ({candidates}) order by all",
                {"as_of": day, "start": start, "playbooks": None},
            ).fetchall(),
            "rfm": con.execute(
                f"select count(r_score), count(tier) from {name}.main.customer_rfm"
            ).fetchone(),
        }
    assert len(results["whole"]["due"]) > 100 and len(results["whole"]["candidates"]) > 100
    assert results["narrow"]["due"] == results["whole"]["due"]
    assert results["narrow"]["candidates"] == results["whole"]["candidates"]
    # nothing reads the RFM scores a day's tier comes from: the narrowed model leaves them out
    scores, tiers = results["narrow"]["rfm"]
    assert scores == 0 and tiers == results["whole"]["rfm"][1] > 0


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("1536MB", 1_536_000_000), ("4GiB", 4 * 1024**3), ("1.5 gb", 1_500_000_000), ("80%", None)],
)
def test_a_memory_limit_is_read_in_duckdbs_units(limit, expected) -> None:
    import duckdb

    from flows.backtesting.replay import memory_bytes

    assert memory_bytes(duckdb.connect(), limit) == expected
