"""`followup demo` tells its story, then `followup report` writes the workbook and the page from
what it left in the database (the session's `demo_run`)."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from flows.reporting.names import GLOSSARY
from tests.conftest import AS_OF, query

pytestmark = pytest.mark.slow


def test_the_demo_finds_the_planted_difference(demo_run):
    out = demo_run.output
    assert "Simulated " in out and " later orders" in out
    assert "the A/B test found it" in out
    # what sending changes is said before the headline rates
    sending = re.search(
        r"sending new_buyer_satisfaction\.survey: [\d.]+% of [\d,]+ customers converted against "
        r"[\d.]+% of [\d,]+ held out, lift ",
        out,
    )
    assert sending and sending.start() < out.index("headline: ")
    # the verdict comes from the table, not from the story
    assert query(
        demo_run.db,
        "select decision from ab_results where experiment = 'post_purchase_journey.day3_care' "
        "and variant = 'care_coupon'",
    ) == [("ship",)]
    # nothing was counted twice: one outcome per ledger message, one row per feedback key
    unique = "select count(*) = count(distinct message_id) from message_outcomes"
    assert query(demo_run.db, unique) == [(True,)]
    assert query(demo_run.db, "select count(*) from quarantine where entity = 'feedback'") == [(0,)]


def test_report_command_writes_the_workbook_from_the_demo(demo_run, tmp_path: Path):
    out = tmp_path / "report"
    followup = Path(sys.executable).parent / "followup"
    done = subprocess.run(
        [str(followup), "report", "--db", str(demo_run.db), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "followup_report.html").stat().st_size > 100_000
    book = openpyxl.load_workbook(out / "followup_report.xlsx")
    # Chinese first: sheets, headers and the playbooks' names as declared (`label:`)
    for sheet in ("汇总", "今日回访", "活动效果", "AB测试", "满意度", "术语表"):
        assert sheet in book.sheetnames
    # what else marketing reads: channels, week on week, sales, segments
    for sheet in ("渠道健康", "环比", "销售漏斗", "RFM分层", "等级迁移"):
        assert sheet in book.sheetnames
    channels = book["渠道健康"]
    header = [c.value for c in channels[1]]
    failures = sum(
        dict(zip(header, (c.value for c in r), strict=True))["送达失败"] or 0
        for r in channels.iter_rows(2)
    )
    (kpi,) = query(
        demo_run.db, "select numerator from followup_kpis where metric = 'delivery_failure_rate'"
    )[0]
    assert failures == kpi > 0
    weeks = book["环比"]
    metrics = {r[2].value for r in weeks.iter_rows(2)}
    assert {"响应率", "转化率", "退订率", "发送失败率"} <= metrics
    code = {name: code for code, name in GLOSSARY.items()}
    ab = book["AB测试"]
    header = [code.get(c.value, c.value) for c in ab[1]]
    lines = [dict(zip(header, (c.value for c in row), strict=True)) for row in ab.iter_rows(2)]
    coupon = next(r for r in lines if r["variant"] == "关怀+配件券")
    assert coupon["experiment"] == "购后关怀旅程 · 3天关怀"
    (n, conversions, rate, p_value) = query(
        demo_run.db,
        "select n, conversions, rate, p_value from ab_results where variant = 'care_coupon'",
    )[0]
    assert (coupon["n"], coupon["conversions"], coupon["decision"]) == (n, conversions, "ship")
    assert coupon["rate"] == pytest.approx(rate) and coupon["p_value"] == pytest.approx(p_value)
    performance = book["活动效果"]
    header = [code.get(c.value, c.value) for c in performance[1]]
    sent = sum(
        dict(zip(header, (c.value for c in r), strict=True))["sent"]
        for r in performance.iter_rows(2)
    )
    assert sent == query(demo_run.db, "select sum(sent) from campaign_performance")[0][0]


def test_every_follow_up_of_the_days_plan_has_one_fate(demo_run):
    # per playbook, the follow-ups new to the ledger and those carried back each got one fate,
    # exits included (the journeys a later order ended)
    rows = query(
        demo_run.db,
        """
        select playbook, new + carried, planned + deferred + suppressed + held_out + exited, exited
        from plan_diff where as_of_date = (select max(as_of_date) from plan_diff)
        """,
    )
    assert rows, "the demo's plan wrote no plan_diff"
    assert [(p, n) for p, n, fates, _ in rows if n != fates] == []
    assert sum(exited for *_, exited in rows) > 0
    assert "exited" in demo_run.output


def test_the_returned_call_list_closes_its_calls_and_the_rest_come_back_overdue(demo_run):
    out = demo_run.output
    # the owner filled six of their calls: each is done with its outcome and a call feedback row
    done = query(
        demo_run.db,
        "select count(*), count(outcome), count(done_at) from manual_followups "
        "where status = 'done' and playbook = 'high_value_review'",
    )
    assert done == [(6, 6, 6)]
    calls = "select count(*) from raw.feedback where feedback_id like 'task:%'"
    assert query(demo_run.db, calls + " and response_type = 'call'") == [(6,)]
    # the busy line agreed to a call back on the demo's day: an open task for the same owner
    (next_contact,) = query(
        demo_run.db,
        "select n.owner_id = t.owner_id, cast(n.due_by as date) - cast(t.due_by as date) "
        "from manual_followups n join manual_followups t on n.task_id = 'next:' || t.task_id",
    )
    assert next_contact == (True, 1)
    # the calls nobody returned are still open past their day, and today's lists say so
    overdue = query(
        demo_run.db,
        "select count(*) from manual_followups where status = 'open' "
        "and playbook = 'high_value_review' and due_by <= ?",
        [dt.datetime.combine(AS_OF, dt.time(), ZoneInfo("Asia/Shanghai"))],
    )[0][0]
    assert overdue >= 10
    assert "of them overdue (逾期, back on today's lists)" in out
    lists = sorted((demo_run.db.parent / "call_lists" / AS_OF.isoformat()).glob("*.xlsx"))
    flagged = 0
    for path in lists:
        sheet = openpyxl.load_workbook(path).active
        header = [c.value for c in sheet[1]]
        column = next(i for i, h in enumerate(header) if h and "逾期" in str(h))
        flagged += sum(1 for row in sheet.iter_rows(min_row=2) if row[column].value)
    assert flagged >= overdue
