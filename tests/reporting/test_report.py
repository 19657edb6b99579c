"""The marketing report: what it reads, the workbook, the HTML page (rendered for real in headless
Chromium), an empty database, and the `report` flow.

Expectations are read from the database by table and column name, so the same tests run against
the hand-made database of tests/reporting/analysis_db.py and against a copy of the demo's."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from adapters.files import write_atomically
from flows.reporting.data import load_report_data
from flows.reporting.formats import display
from flows.reporting.html import write_html
from flows.reporting.names import GLOSSARY, VARIANTS
from flows.reporting.workbook import SUMMARY_HEADER_ROW, write_workbook
from tests.chromium import run_chromium
from tests.reporting.analysis_db import EMAIL, PHONE, make_analysis_db, make_ledger_only_db

TZ = "Asia/Shanghai"  # the business time zone the hand-made and demo databases are in
# An unmasked mainland mobile number (optionally +86) or an address with more than one visible
# character before the @ (mask() keeps one: z***@example.com).
UNMASKED_PHONE = re.compile(r"(?<!\d)(?:\+?86)?1[3-9]\d{9}(?!\d)")
UNMASKED_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{2,}@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
SHEETS = ("汇总", "今日回访", "活动效果", "AB测试", "满意度", "人工回访任务")
CODE = {name: code for code, name in GLOSSARY.items()}  # a header as shown -> its column
CHARTS = ("chart-funnel", "chart-response-rate", "chart-ab-lift", "chart-satisfaction")


@pytest.fixture(params=["hand-made", pytest.param("demo", marks=pytest.mark.slow)])
def db(request, tmp_path: Path) -> Path:
    """The hand-made database of tests/reporting/analysis_db.py, and a copy of what `followup demo`
    wrote (the session's demo run)."""
    if request.param == "demo":
        demo_run = request.getfixturevalue("demo_run")
        return Path(shutil.copy(demo_run.db, tmp_path / "demo.duckdb"))
    return make_analysis_db(tmp_path / "analysis.duckdb")


@pytest.fixture
def report(db: Path, tmp_path: Path) -> tuple[Path, Path]:
    data = load_report_data(db, TZ)
    out = tmp_path / "report"
    return write_workbook(data, out / "r.xlsx"), write_html(data, out / "r.html")


def rows(db: Path, sql: str) -> list[dict]:
    """The query's rows as dicts; none when a table it reads is not built (yet)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(sql)
    except duckdb.CatalogException:
        return []
    try:
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def header(ws, row: int = 1) -> dict[str, int]:
    """column name (the code name of the header shown) -> 1-based column index"""
    return {CODE.get(c.value, c.value): c.column for c in ws[row] if c.value is not None}


def find_row(ws, **match) -> int:
    names = header(ws)
    for r in range(2, ws.max_row + 1):
        if all(ws.cell(r, names[k]).value == v for k, v in match.items()):
            return r
    raise AssertionError(f"{ws.title}: no row with {match}")


def raw_texts_with_contacts(db: Path) -> list[str]:
    """Source texts the report shows that hold a phone number or an address."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {
            f"{s}.{t}"
            for s, t in con.execute(
                "select table_schema, table_name from information_schema.tables"
            ).fetchall()
        }
        sources = [("main.manual_followups", "reason"), ("main.message_ledger", "reason")]
        texts = []
        for table, column in sources:
            if table in tables:
                texts += [r[0] for r in con.execute(f"select {column} from {table}").fetchall()]
        return [t for t in texts if t and (UNMASKED_PHONE.search(t) or UNMASKED_EMAIL.search(t))]
    finally:
        con.close()


# --- the data ----------------------------------------------------------------------------------


def test_missing_database_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        load_report_data(tmp_path / "nowhere.duckdb", TZ)
    assert "nowhere.duckdb" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_data_is_read_by_name_and_masked(db: Path) -> None:
    data = load_report_data(db, TZ)
    totals = rows(db, "select sum(sent) as sent, sum(delivered) as d from campaign_performance")
    expected = totals[0] if totals else {}
    assert data.totals["sent"] == pytest.approx(float(expected.get("sent") or 0))
    assert data.totals["delivered"] == pytest.approx(float(expected.get("d") or 0))

    latest = "(select max(decided_on) from message_ledger)"
    sql = (
        f"select {latest} as day, count(*) filter (decided_on = {latest}) as n from message_ledger"
    )
    (run,) = rows(db, sql)
    assert data.latest_run == run["day"]
    assert len(data.today) == run["n"]
    assert "body" not in data.today.columns  # no message bodies for marketing

    staff = {r["id"]: r["name"] for r in rows(db, "select staff_id as id, name from raw.staff")}
    for _, task in data.manual_followups.iterrows():
        if task["owner_id"] in staff:
            assert task["owner_name"] == staff[task["owner_id"]]
    assert int(data.manual_by_owner["total"].sum()) == len(data.manual_followups)

    for frame in (data.today, data.manual_followups, data.feedback_comments):
        for value in map(str, frame.to_numpy().ravel()):
            assert not UNMASKED_PHONE.search(value), value
            assert not UNMASKED_EMAIL.search(value), value


def test_hand_made_database_reads_as_designed(tmp_path: Path) -> None:
    data = load_report_data(make_analysis_db(tmp_path / "a.duckdb"), TZ)
    assert set(data.today["status"]) >= {"sent", "suppressed", "held_out", "deferred", "failed"}
    comments = " ".join(data.feedback_comments["text"].dropna())
    assert "138****5678" in comments and "z***@example.com" in comments
    assert PHONE not in comments and EMAIL not in comments
    owners = data.manual_followups.set_index("task_id")["owner_name"]
    assert owners["t-01"] == "陈静"
    assert owners.isna()["t-02"]  # S099 is not in raw.staff
    # open when the latest run's day began: t-07 (due the day before), not t-01 (due that day)
    overdue = data.manual_followups.set_index("task_id")["overdue"]
    assert sorted(overdue[overdue].index) == ["t-07"]
    by_owner = data.manual_by_owner.set_index("owner_id")
    assert (by_owner.loc["S004", "open"], by_owner.loc["S004", "overdue"]) == (2, 1)
    readings = {d["variant"]: d for d in data.decisions()}
    assert readings["sms_b"]["decision"] == "ship"
    assert "Make sms_b the default" in readings["sms_b"]["how_to_read"]
    assert "Too early" in readings[VARIANTS["sent"]]["how_to_read"]
    assert "split itself is broken" in readings["subject_b"]["how_to_read"]
    page = write_html(data, tmp_path / "r.html").read_text(encoding="utf-8")
    assert _chart_ids(page) == list(CHARTS)


def test_each_name_shown_stands_for_one_code_name() -> None:
    """The glossary maps back: no two figures or columns share a display name."""
    assert len(set(GLOSSARY.values())) == len(GLOSSARY)


# --- the workbook ------------------------------------------------------------------------------


def test_workbook_sheets_and_formats(db: Path, report: tuple[Path, Path]) -> None:
    workbook = openpyxl.load_workbook(report[0])
    assert set(SHEETS) <= set(workbook.sheetnames)
    assert workbook.sheetnames[0] == "汇总"
    for ws in workbook.worksheets:
        header_row = SUMMARY_HEADER_ROW + 1 if ws.title == "汇总" else 1
        first = ws.cell(header_row, 1)
        assert first.font.b, f"{ws.title}: header not bold"
        assert first.fill.fgColor.rgb not in (None, "00000000"), f"{ws.title}: no header fill"
        assert ws.freeze_panes is not None and ws.freeze_panes != "A1", ws.title
        assert int(ws.freeze_panes.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) == header_row + 1
        widths = [d.width for d in ws.column_dimensions.values() if d.width]
        assert widths and max(widths) <= 61, ws.title
        if ws.title != "汇总":
            assert ws.auto_filter.ref, f"{ws.title}: no filter"

    ws = workbook["活动效果"]
    assert ws.freeze_panes == "B2"  # header row and the playbook column
    names = header(ws)
    shown = load_report_data(db, TZ).names  # the workbook shows display names
    sql = "select * from campaign_performance where delivered > 0 order by sent desc limit 1"
    performance = rows(db, sql)
    if performance:
        expected = performance[0]
        playbook, step = expected["playbook"], expected["step"]
        r = find_row(
            ws,
            playbook=shown.playbook(playbook),
            step=shown.step(playbook, step),
            variant=shown.variant(playbook, step, expected["variant"]),
        )
        rate = ws.cell(r, names["response_rate"])
        assert rate.number_format == "0.0%"
        assert rate.value == pytest.approx(expected["response_rate"])
        assert 0 <= rate.value <= 1
        sent = ws.cell(r, names["sent"])
        assert sent.value == expected["sent"]
        assert sent.number_format == "#,##0"

    ws = workbook["AB测试"]
    names = header(ws)
    if ws.max_row > 1 and ws.cell(2, 1).value and "no data yet" not in str(ws.cell(2, 1).value):
        assert ws.cell(2, names["p_value"]).number_format == "0.0000"
        for column in ("rate", "abs_lift", "ci_low", "ci_high", "chance_to_beat_control"):
            assert ws.cell(2, names[column]).number_format == "0.0%", column


def test_workbook_summary_has_kpis_and_readings(db: Path, report: tuple[Path, Path]) -> None:
    ws = openpyxl.load_workbook(report[0])["汇总"]
    figures = {}
    for r in range(SUMMARY_HEADER_ROW + 2, ws.max_row + 1):
        name = ws.cell(r, 1).value
        if name is None:
            break
        figures[CODE.get(str(name), str(name))] = ws.cell(r, 2)
    assert {"sent", "delivered", "responded", "converted", "response_rate"} <= set(figures)
    assert figures["response_rate"].number_format == "0.0%"
    assert figures["sent"].number_format == "#,##0"
    kpis = {r["metric"]: r["value"] for r in rows(db, "select metric, value from followup_kpis")}
    for metric, value in kpis.items():
        assert figures[metric].value == pytest.approx(value), metric
    decisions = rows(db, "select decision from ab_results where not is_control")
    text = [str(c.value) for row in ws.iter_rows() for c in row if c.value is not None]
    assert "A/B 测试：如何解读每个结论 How to read each decision" in text
    for decision in decisions:
        assert decision["decision"] in text


def test_workbook_has_no_unmasked_contact(db: Path, report: tuple[Path, Path]) -> None:
    workbook = openpyxl.load_workbook(report[0])
    everything = []
    for ws in workbook.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if isinstance(cell.value, str):
                    assert not UNMASKED_PHONE.search(cell.value), (ws.title, cell.value)
                    assert not UNMASKED_EMAIL.search(cell.value), (ws.title, cell.value)
                    everything.append(cell.value)
    # the texts did arrive, masked
    from adapters.channels import mask

    for text in raw_texts_with_contacts(db):
        assert mask(text) in everything


def test_files_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.xlsx"
    write_atomically(target, lambda tmp: tmp.write_text("old"))

    def half(tmp: Path) -> None:
        tmp.write_text("half a rep")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["report.xlsx"]


def test_a_failing_workbook_leaves_the_previous_one(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_report_data(db, TZ)
    path = write_workbook(data, tmp_path / "r.xlsx")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("flows.reporting.workbook._table", broken)
    with pytest.raises(RuntimeError):
        write_workbook(data, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".duckdb"] == ["r.xlsx"]


# --- the page ----------------------------------------------------------------------------------


def _without_plotly(page: str) -> str:
    """The page minus the embedded plotly.js (whose code holds URLs and @-strings of its own)."""
    return page.replace(get_plotlyjs(), "")


def test_html_is_self_contained_escaped_and_masked(db: Path, report: tuple[Path, Path]) -> None:
    page = report[1].read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page
    assert "<title>回访效果报告 · Follow-up report</title>" in page
    own = _without_plotly(page)
    charts = _chart_ids(own)
    assert set(charts) <= set(CHARTS)
    assert page.count(get_plotlyjs()) == (1 if charts else 0)  # embedded once, if needed
    assert not re.search(r"""<script[^>]*\bsrc\s*=""", own, re.I)
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", own, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", own, re.I)
    assert not UNMASKED_PHONE.search(own), UNMASKED_PHONE.search(own)
    assert not UNMASKED_EMAIL.search(own), UNMASKED_EMAIL.search(own)
    assert PHONE not in page and EMAIL not in page
    for decision in rows(db, "select distinct decision from ab_results where not is_control"):
        key = "invalid" if decision["decision"].startswith("invalid") else decision["decision"]
        assert f'class="decision decision-{key.replace(" ", "-")}"' in own


def test_html_escapes_values(tmp_path: Path) -> None:
    db = make_analysis_db(tmp_path / "a.duckdb")
    con = duckdb.connect(str(db))
    con.execute(
        "update feedback_categories set category = '<script>alert(1)</script>' "
        "where category = 'price'"
    )
    con.close()
    page = write_html(load_report_data(db, TZ), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def _chart_ids(page: str) -> list[str]:
    return re.findall(r'<div class="chart" id="(chart-[\w-]+)"', page)


def _chart_segments(dom: str) -> dict[str, str]:
    """Each chart div's markup, up to the next chart or section."""
    starts = list(re.finditer(r'<div class="chart" id="(chart-[\w-]+)"', dom))
    segments = {}
    for match in starts:
        rest = dom[match.end() :]
        end = re.search(r'<div class="chart" id=|<section\b|</main>', rest)
        segments[match[1]] = rest[: end.start() if end else len(rest)]
    return segments


@pytest.mark.slow
def test_charts_render_in_headlessrun_chromium(
    db: Path, report: tuple[Path, Path], tmp_path: Path
) -> None:
    page = report[1]
    dumped = run_chromium(["--dump-dom", page.resolve().as_uri()], tmp_path / "profile-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    segments = _chart_segments(dumped.stdout)
    charts = _chart_ids(page.read_text(encoding="utf-8"))
    assert charts, "no chart to render: the database has no analysis tables"
    assert sorted(segments) == sorted(charts)
    for chart, markup in segments.items():
        assert 'class="main-svg"' in markup, f"{chart}: plotly did not draw it"
    # the funnel's last share, as drawn, is the headline response rate: one figure, one value
    if "chart-funnel" in segments:
        data = load_report_data(db, TZ)
        rate = display(data.headline()["response_rate"], "rate")
        drawn = re.findall(r">([\d.]+%)<", segments["chart-funnel"])
        assert drawn and drawn[-1] == rate, (drawn, rate)

    png = tmp_path / "report.png"
    shot = run_chromium(
        ["--window-size=1400,3000", f"--screenshot={png}", page.resolve().as_uri()],
        tmp_path / "profile-shot",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000, len(data)  # a blank page of that size is a few KB


# --- an empty database -------------------------------------------------------------------------


def test_a_database_without_analysis_yet_gives_both_files(tmp_path: Path) -> None:
    db = make_ledger_only_db(tmp_path / "ledger.duckdb")
    data = load_report_data(db, TZ)
    assert "feedback_summary" in data.missing_tables
    workbook = write_workbook(data, tmp_path / "out" / "r.xlsx")
    page = write_html(data, tmp_path / "out" / "r.html").read_text(encoding="utf-8")

    sheets = openpyxl.load_workbook(workbook)
    assert set(SHEETS) <= set(sheets.sheetnames)
    for title in ("活动效果", "AB测试", "满意度", "人工回访任务"):
        assert "no data yet" in str(sheets[title]["A2"].value), title
    assert sheets["今日回访"].max_row > 1  # the ledger is there
    assert sheets["今日回访"]["A2"].value is not None

    for section in ("funnel", "response-rate", "ab", "feedback", "channels"):
        body = re.search(rf'<section id="{section}">(.*?)</section>', page, re.S)
        assert body and "No data yet" in body[1], section
    assert 'class="chart"' not in page
    assert "<script" not in page  # nothing to draw: no plotly.js either


# --- the flow ----------------------------------------------------------------------------------


def test_report_flow_writes_files_and_an_artifact(prefect_server, db: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    from flows.report import report_flow

    out = tmp_path / "out"
    state = report_flow(db=db, out=out, return_state=True)
    result = state.result()
    assert result.workbook == out / "followup_report.xlsx" and result.workbook.is_file()
    assert result.html == out / "followup_report.html" and result.html.is_file()
    assert result.headline["sent"] == load_report_data(db, TZ).totals["sent"]
    assert "response_rate" in result.headline

    with get_client(sync_client=True) as client:
        # this run's artifact: the other parameter's run wrote a `report` artifact too
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["report"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert len(artifacts) == 1, "no `report` artifact for this run"
    markdown = str(artifacts[0].data)
    assert str(result.workbook) in markdown and str(result.html) in markdown
    assert "| experiment | variant |" in markdown or "No A/B experiment has data yet" in markdown
    for decision in rows(db, "select distinct decision from ab_results where not is_control"):
        assert decision["decision"] in markdown


@pytest.mark.slow
def test_rebuilding_with_no_new_data_changes_no_headline_figure(demo_run, tmp_path: Path) -> None:
    """A week passes and nothing is loaded: rebuilt as of then, the models give the same headline
    figures, funnel, campaign table and A/B arms. A window closes with the data that covers it
    (the latest feedback, the latest paid order), not with the calendar, so messages whose
    replies have not been loaded do not turn into customers who never answered."""
    from flows.building.runner import build
    from flows.rundate import RunDate
    from flows.settings import Settings
    from tests.conftest import AS_OF

    db = Path(shutil.copy(demo_run.db, tmp_path / "demo.duckdb"))
    settings = Settings.from_env().replace(db_path=db, data_docs_dir=tmp_path / "docs")
    seen = []
    for day in (AS_OF, AS_OF + dt.timedelta(days=7)):
        build(db, RunDate.of(TZ, day), settings)
        data = load_report_data(db, TZ)
        campaign = data.campaign_performance.drop(columns=["avg_lag_minutes"])
        arms = data.ab_results[["experiment", "variant", "n", "conversions", "abs_lift"]]
        seen.append((data.headline(), campaign, arms))
    (headline, campaign, arms), (headline_later, campaign_later, arms_later) = seen
    assert headline["still_open"] > 0  # some windows were open: the week could have closed them
    assert headline_later == headline
    pd.testing.assert_frame_equal(campaign_later, campaign)
    pd.testing.assert_frame_equal(arms_later, arms)
