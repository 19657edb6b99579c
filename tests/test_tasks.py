"""Staff close the loop (flows/tasks.py): the call lists they return close their tasks, give the
call's outcome as feedback, turn an agreed next contact into a task on its day, and a task still
open past its day comes back on the owner's next list, marked overdue."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import duckdb
import openpyxl
import pytest

from adapters.channels import open_channel
from adapters.channels.call_list import HEADER, NAMES
from flows.building.runner import build_args, run_build
from flows.dispatching.carry import carry_open_tasks
from flows.ingestion.load import IngestError, connect, ensure_schema
from flows.ledger import ensure_tables, insert
from flows.rundate import RunDate
from flows.tasks import load_task_results
from tests.adapters.channels.conftest import SHANGHAI, message
from tests.conftest import query

GIVEN = dt.datetime(2026, 11, 23, 9, 0, tzinfo=SHANGHAI)  # when the tasks were handed over
BACK = dt.datetime(2026, 11, 23, 18, 0)  # when the lists come back (business time zone)
TZ = "Asia/Shanghai"


@pytest.fixture
def company(tmp_path: Path, settings) -> Path:
    """Three customers of owner S01, each with a call task of 2026-11-23 on the owner's list
    (written by the call list channel, as a dispatch writes it)."""
    con = connect(settings.db_path, settings)
    ensure_schema(con)
    ensure_tables(con)
    for n in (1, 2, 3):
        con.execute(
            "insert into raw.customers (customer_id, name, phone, owner_id, _key) "
            "values (?, ?, ?, 'S01', ?)",
            [f"C{n:03d}", f"客户{n}", f"+86138000000{n:02d}", f"C{n:03d}"],
        )
    messages = [
        message(n, channel="call", owner_id="S01", customer_name=f"客户{n}") for n in (1, 2, 3)
    ]
    insert(con, "message_ledger", [_ledger_row(m) for m in messages])
    insert(con, "manual_followups", [_task_row(m) for m in messages])
    con.close()
    lists = tmp_path / "call_lists"
    channel = open_channel("call", {"kind": "call_list", "out": str(lists)})
    assert {o.status for o in channel.send(messages)} == {"sent"}
    return lists / "2026-11-23" / "S01.xlsx"


def _ledger_row(m) -> dict:
    return {
        "message_id": m.message_id, "idempotency_key": m.idempotency_key,
        "customer_id": m.customer_id, "playbook": m.playbook, "step": m.step,
        "anchor_id": "a", "channel": "call", "purpose": "service", "priority": m.priority,
        "owner_id": "S01", "first_due_date": GIVEN.date(), "planned_for": GIVEN.date(),
        "decided_on": GIVEN.date(), "due_at": m.due_at, "status": "sent", "attempts": 1,
        "created_at": GIVEN, "updated_at": GIVEN, "sent_at": GIVEN,
    }  # fmt: skip


def _task_row(m) -> dict:
    return {
        "task_id": m.message_id, "customer_id": m.customer_id, "owner_id": "S01",
        "reason": f"{m.playbook} / {m.step}", "priority": m.priority, "created_at": GIVEN,
        "due_by": dt.datetime(2026, 11, 24, tzinfo=SHANGHAI), "status": "open", "kind": "call",
        "playbook": m.playbook, "step": m.step, "message_id": m.message_id, "script": m.text,
    }  # fmt: skip


def _fill(path: Path, answers: dict[str, dict[str, str]]) -> Path:
    """The workbook as a caller returns it: `answers` by task id, column name -> cell text."""
    book = openpyxl.load_workbook(path)
    sheet = book.active
    header = [c.value for c in sheet[1]]
    assert header == HEADER
    for row in sheet.iter_rows(min_row=2):
        task = row[NAMES.index("task_id")].value
        for name, value in answers.get(task, {}).items():
            row[NAMES.index(name)].value = value
    book.save(path)
    return path


def _load(path: Path, settings, at: dt.datetime = BACK):
    return load_task_results(path, settings.db_path, RunDate.moment(TZ, at), settings)


def _tasks(settings) -> dict[str, tuple]:
    rows = query(
        settings.db_path,
        "select task_id, status, outcome, done_at, due_by, owner_id, next_contact_at "
        "from manual_followups order by task_id",
    )
    return {r[0]: r[1:] for r in rows}


def _feedback(settings) -> list[tuple]:
    return query(
        settings.db_path,
        "select _key, message_id, customer_id, response_type, outcome, satisfaction, text, "
        "responded_at from raw.feedback order by _key",
    )


def test_a_returned_list_closes_its_tasks_and_gives_their_outcomes(company, settings):
    _fill(company, {"m1": {"outcome": "接通", "satisfaction": "满意", "note": "很满意，下月再买"},
                    "m2": {"outcome": "未接通"}})  # fmt: skip
    report = _load(company, settings)

    [load] = report.loads
    assert (load.rows_read, load.skipped, load.inserted, load.errors) == (3, 1, 2, 0)
    back = dt.datetime(2026, 11, 23, 18, 0, tzinfo=SHANGHAI)
    tasks = _tasks(settings)
    assert tasks["m1"][:3] == ("done", "answered", back)
    assert tasks["m2"][:3] == ("done", "no_answer", back)
    assert tasks["m3"][:2] == ("open", None)  # not filled in: not done yet
    assert _feedback(settings) == [
        ("task:m1", "m1", "C001", "call", "answered", "satisfied", "很满意，下月再买", back),
        ("task:m2", "m2", "C002", "call", "no_answer", None, None, back),
    ]
    assert (report.done, report.open, report.overdue) == (2, 1, 0)


def test_execution_counts_the_calls_made_and_how_late_they_were_made(company, settings):
    # due at 10:00; made at 10:30 and 12:00 by the list's 完成时间; the third not made
    _fill(company, {"m1": {"outcome": "接通", "done_at": "2026-11-23 10:30"},
                    "m2": {"outcome": "忙线", "done_at": "2026-11-23 12:00"}})  # fmt: skip
    _load(company, settings)
    run = RunDate.of(TZ, dt.date(2026, 11, 24))
    args = build_args(select="+followup_execution", exclude="resource_type:test")
    run_build(args, settings.db_path, run, settings)
    rows = query(
        settings.db_path,
        "select channel, planned, done, execution_rate, avg_lag_minutes from followup_execution",
    )
    assert rows == [("call", 3, 2, pytest.approx(2 / 3), pytest.approx(75.0))]


def test_loading_a_list_twice_changes_nothing(company, settings):
    _fill(company, {"m1": {"outcome": "answered", "next_contact_at": "2026-11-30 15:00"}})
    _load(company, settings)
    tables = "manual_followups", "raw.feedback", "raw.task_results", "quarantine"
    before = {t: query(settings.db_path, f"from {t} order by all") for t in tables}

    [load] = _load(company, settings, at=BACK + dt.timedelta(days=2)).loads

    assert (load.inserted, load.updated, load.unchanged, load.errors) == (0, 0, 1, 0)
    assert {t: query(settings.db_path, f"from {t} order by all") for t in tables} == before


def test_a_changed_result_updates_the_task_and_its_feedback(company, settings):
    _fill(company, {"m1": {"outcome": "忙线"}})
    _load(company, settings)
    _fill(company, {"m1": {"outcome": "接通", "done_at": "2026-11-23 19:30"}})
    [load] = _load(company, settings).loads

    assert load.updated == 1
    later = dt.datetime(2026, 11, 23, 19, 30, tzinfo=SHANGHAI)
    assert _tasks(settings)["m1"][:3] == ("done", "answered", later)
    assert [(r[0], r[4], r[7]) for r in _feedback(settings)] == [("task:m1", "answered", later)]


def test_an_agreed_next_contact_is_a_task_on_its_day_and_on_that_days_list(
    company, settings, tmp_path
):
    _fill(company, {"m2": {"outcome": "接通", "next_contact_at": "2026-11-26 15:00",
                           "note": "客户出差，周四下午再打"}})  # fmt: skip
    report = _load(company, settings)

    status, _, _, due_by, owner, at = _tasks(settings)["next:m2"]
    assert (status, owner, report.next_contacts) == ("open", "S01", 1)
    assert due_by == dt.datetime(2026, 11, 27, tzinfo=SHANGHAI)  # by the end of that day
    assert at == dt.datetime(2026, 11, 26, 15, 0, tzinfo=SHANGHAI)

    lists = tmp_path / "call_lists"
    channels = {"call": {"kind": "call_list", "out": str(lists)}}
    for day, expected in ((dt.date(2026, 11, 25), 0), (dt.date(2026, 11, 26), 1)):
        added = _carry(settings, day, channels)
        assert added["next_contact"] == expected, day
    assert _carry(settings, dt.date(2026, 11, 26), channels)["next_contact"] == 0  # a re-run
    rows = _csv(lists / "2026-11-26" / "S01.csv")
    next_rows = [r for r in rows if r["task_id"] == "next:m2"]
    assert len(next_rows) == 1
    assert next_rows[0]["due_at"] == "2026-11-26 15:00"
    assert next_rows[0]["script"] == "客户出差，周四下午再打"
    assert next_rows[0]["phone"] == "+8613800000002"
    assert next_rows[0]["overdue"] == ""


def test_a_task_still_open_past_its_day_comes_back_marked_overdue(company, settings, tmp_path):
    _fill(company, {"m1": {"outcome": "接通"}})
    _load(company, settings)
    lists = tmp_path / "call_lists"
    channels = {"call": {"kind": "call_list", "out": str(lists)}}

    assert _carry(settings, dt.date(2026, 11, 23), channels)["overdue"] == 0  # still its day
    assert _carry(settings, dt.date(2026, 11, 24), channels)["overdue"] == 2
    rows = _csv(lists / "2026-11-24" / "S01.csv")
    assert sorted((r["task_id"], r["overdue"]) for r in rows) == [("m2", "是"), ("m3", "是")]
    assert rows[0]["due_at"] == "2026-11-23 10:00"  # when it was due

    # returned from the new list, it is done like any other
    _fill(lists / "2026-11-24" / "S01.xlsx", {"m3": {"outcome": "空号"}})
    _load(lists / "2026-11-24", settings, at=BACK + dt.timedelta(days=1))
    assert _tasks(settings)["m3"][:2] == ("done", "wrong_number")
    report = _load(lists / "2026-11-24", settings, at=BACK + dt.timedelta(days=1))
    assert (report.open, report.overdue) == (1, 1)


def test_bad_rows_are_quarantined_with_their_reason_and_nothing_else_changes(
    company, settings, tmp_path
):
    returned = tmp_path / "returned.csv"
    with returned.open("w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(["任务编号", "结果", "满意度", "下次联系时间", "备注"])
        writer.writerow(["m9", "接通", "", "", "没有这个任务"])
        writer.writerow(["m1", "接了", "", "", "结果不认识"])
        writer.writerow(["m2", "接通", "", "2026-11-20 10:00", "约在过去"])
        writer.writerow(["m3", "", "", "", "只写了备注"])
    before = _tasks(settings)

    [load] = _load(returned, settings).loads

    assert (load.inserted, load.errors) == (0, 4)
    quarantined = query(
        settings.db_path,
        "select line_number, reasons, raw from quarantine where entity = 'task_results'",
    )
    reasons = {line: reasons for line, reasons, _ in quarantined}
    assert "task_id: not a task we gave (manual_followups)" in reasons[2][0]
    assert reasons[3][0].startswith("outcome: not one of 接通, 未接通, 忙线, 空号, 拒绝")
    assert "接了" in dict((line, raw) for line, _, raw in quarantined)[3]
    assert reasons[4][0].startswith("next_contact_at: in the past")
    assert reasons[5][0].startswith("outcome: empty")
    assert _tasks(settings) == before
    assert _feedback(settings) == []


def test_a_folder_of_lists_reads_the_file_the_caller_filled_in(company, settings):
    folder = company.parent.parent
    _fill(company, {"m1": {"outcome": "接通"}})  # the XLSX is newer than the CSV beside it
    report = _load(folder, settings)
    assert [Path(load.source_file).name for load in report.loads] == ["S01.xlsx"]
    assert _tasks(settings)["m1"][0] == "done"


def test_a_folder_without_lists_is_one_line(tmp_path, settings, company):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="no returned call list"):
        _load(empty, settings)
    with pytest.raises(IngestError, match="no such file or folder"):
        _load(tmp_path / "missing", settings)


def _carry(settings, day: dt.date, channels: dict):
    con = duckdb.connect(str(settings.db_path))
    try:
        con.execute(f"set TimeZone = '{TZ}'")
        return carry_open_tasks(con, RunDate.of(TZ, day), channels)
    finally:
        con.close()


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        return [dict(zip(NAMES, row, strict=True)) for row in reader]
