"""The report as an Excel workbook: a summary sheet, then one sheet per table, each with a bold
header row that stays in view, a filter, fitted column widths and number formats by column
(rates as percentages, p-values to four places, counts with thousands separators).

Text goes in as text, always: a customer's reply that starts with `=` is not a formula to Excel."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import xlsxwriter
from xlsxwriter.workbook import Format
from xlsxwriter.worksheet import Worksheet

from adapters.files import write_atomically
from flows.reporting.data import ReportData, lift_sentence
from flows.reporting.formats import (
    EXCEL_FORMATS,
    Kind,
    column_kind,
    display,
    is_missing,
    metric_kind,
    text_width,
)
from flows.reporting.names import label

TITLE = "回访效果报告 · Follow-up report"
MAX_WIDTH = 60  # characters; longer text wraps within it
MIN_WIDTH = 8
HEADER_FILL = "#DCE6F1"
SUMMARY_HEADER_ROW = 3


@dataclass(frozen=True)
class Sheet:
    title: str
    table: str  # the ReportData attribute
    freeze_columns: int  # the label columns that stay in view while scrolling right
    empty: str  # what an empty table means


SHEETS = (
    Sheet("今日回访", "today", 0, "no follow-ups planned yet"),
    Sheet("活动效果", "campaign_performance", 1, "no messages sent yet"),
    Sheet("每日趋势", "campaign_performance_daily", 1, "no messages sent yet"),
    Sheet("细分", "campaign_breakdown", 2, "no messages sent yet"),
    Sheet("渠道组合", "channel_mix", 1, "no messages sent yet"),
    Sheet("执行情况", "followup_execution", 1, "no follow-ups planned yet"),
    Sheet("AB测试", "ab_results", 2, "no A/B test has data yet"),
    Sheet("满意度", "feedback_summary", 1, "no feedback loaded yet"),
    Sheet("问题类型", "feedback_categories", 1, "no feedback loaded yet"),
    Sheet("客户留言", "feedback_comments", 0, "no written replies yet"),
    Sheet("人工回访任务", "manual_followups", 2, "no tasks for staff yet"),
    Sheet("按负责人", "manual_by_owner", 2, "no tasks for staff yet"),
    Sheet("环比", "marketing.period_comparison", 1, "no period has closed yet"),
    Sheet("渠道健康", "marketing.channel_health", 1, "no messages sent yet"),
    Sheet("销售漏斗", "marketing.sales_funnel", 1, "no leads yet"),
    Sheet("RFM分层", "marketing.rfm_segments", 2, "no customers yet"),
    Sheet("等级迁移", "marketing.tier_migration", 3, "no tier history yet"),
)
SUMMARY = "汇总"
GLOSSARY_SHEET = Sheet("术语表", "glossary", 1, "")

# why two figures differ, said beside them
CLOSED_WINDOWS = (
    "Rates count closed windows only: a message's response window (per channel, 72 h by default) "
    "or attribution window (14 days by default) is closed once it ended before this run and "
    "before the latest feedback or order loaded. {open} sent messages are still open and in no "
    "rate yet. Response is counted per message (an answer answers one message); conversion "
    "per customer and step, the unit and rule of the A/B tests (an order is a customer's, "
    "whichever message came before it)."
)
AB_VS_CAMPAIGN = (
    "An arm counts every customer assigned to it, including those whose send failed (intention "
    "to treat), so it can differ slightly from the same variant's conversion in the campaign "
    "table, which counts customers sent to."
)
# What the funnel counts mean (followup_kpis brings its own definitions).
DEFINITIONS = {
    "planned": "messages the plan decided on for a day (not suppressed, held out or dry run)",
    "sent": "messages the ledger says were sent",
    "still_open": "sent messages whose response window has not closed yet (in no rate)",
    "delivered": "sent, response window closed, and no receipt says failed (a call: answered)",
    "responded": "of those, answered (reply, click, survey, answered call) within the window",
    "customers": "customers sent a message of a step whose attribution window has closed, per step",
    "converted": "of those, customers with a paid order within the attribution window",
    "conversion_amount": "the amount of the paid orders credited to their latest message before",
    "response_rate": "responded / delivered",
    "conversion_rate": "converted / customers",
}


def table_of(data: ReportData, name: str) -> pd.DataFrame:
    """The frame `name` names: a ReportData attribute, or one of its `marketing` marts."""
    owner, _, attribute = name.rpartition(".")
    holder = getattr(data, owner) if owner else data
    return pd.DataFrame() if holder is None else getattr(holder, attribute)


def write_workbook(data: ReportData, path: Path) -> Path:
    """Write the workbook to `path` (through a temporary file); returns `path`."""
    return write_atomically(Path(path), lambda tmp: _write(data, tmp))


def _write(data: ReportData, path: Path) -> None:
    workbook = xlsxwriter.Workbook(
        str(path),
        {
            "strings_to_numbers": False,
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "nan_inf_to_errors": True,
            "remove_timezone": True,
        },
    )
    try:
        formats = _Formats(workbook)
        _summary(workbook.add_worksheet(SUMMARY), data, formats)
        for sheet in SHEETS:
            frame = table_of(data, sheet.table)
            _table(workbook.add_worksheet(sheet.title), frame, sheet, formats)
        # each name shown, with its code name in the database, for the analysts
        glossary = data.names.glossary().rename(
            columns={"kind": "类别", "code": "代码", "name": "名称"}
        )
        _table(workbook.add_worksheet(GLOSSARY_SHEET.title), glossary, GLOSSARY_SHEET, formats)
    finally:
        workbook.close()


class _Formats:
    """One xlsxwriter format per (kind, wrap), made on first use."""

    def __init__(self, workbook: xlsxwriter.Workbook) -> None:
        self._workbook = workbook
        self._cache: dict[tuple, Format] = {}
        self.header = workbook.add_format(
            {"bold": True, "bg_color": HEADER_FILL, "bottom": 1, "valign": "top", "text_wrap": True}
        )
        self.title = workbook.add_format({"bold": True, "font_size": 14})
        self.note = workbook.add_format({"italic": True, "font_color": "#666666"})
        self.section = workbook.add_format({"bold": True, "font_size": 12})

    def cell(self, kind: Kind, wrap: bool = False) -> Format:
        key = (kind, wrap)
        if key not in self._cache:
            properties: dict = {"valign": "top"}
            if kind != "text":
                properties["num_format"] = EXCEL_FORMATS[kind]
            if wrap:
                properties["text_wrap"] = True
            self._cache[key] = self._workbook.add_format(properties)
        return self._cache[key]


class _Widths:
    """The widest value written to each column."""

    def __init__(self) -> None:
        self.widths: dict[int, int] = {}

    def see(self, column: int, text: str) -> None:
        widest = max((text_width(line) for line in text.splitlines()), default=0)
        self.widths[column] = max(self.widths.get(column, 0), widest)

    def wrapped(self) -> set[int]:
        """The columns whose text is wider than the cap, so it wraps."""
        return {column for column, widest in self.widths.items() if widest + 2 > MAX_WIDTH}

    def apply(self, sheet: Worksheet) -> None:
        """Set every column's width, capped."""
        for column, widest in self.widths.items():
            sheet.set_column(column, column, min(max(widest + 2, MIN_WIDTH), MAX_WIDTH))


def _put(
    sheet: Worksheet,
    row: int,
    column: int,
    value: object,
    kind: Kind,
    formats: _Formats,
    wrap: bool = False,
) -> str:
    """Write one value as its kind; returns the text a reader sees."""
    cell = formats.cell(kind, wrap)
    if is_missing(value):
        sheet.write_blank(row, column, None, cell)
        return ""
    if kind in ("rate", "p", "points", "amount", "count", "decimal") and not isinstance(value, str):
        sheet.write_number(row, column, float(value), cell)  # type: ignore[arg-type]
    elif kind in ("date", "datetime") and isinstance(value, dt.date):
        moment = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
        if not isinstance(moment, dt.datetime):
            moment = dt.datetime.combine(moment, dt.time())
        sheet.write_datetime(row, column, moment, cell)
    else:  # a boolean as 是 / 否
        sheet.write_string(row, column, display(value, "text"), cell)
    return display(value, kind)


def _table(sheet: Worksheet, frame: pd.DataFrame, spec: Sheet, formats: _Formats) -> None:
    columns = list(frame.columns)
    kinds = [column_kind(str(c), frame[c]) for c in columns]
    widths = _Widths()
    for c, name in enumerate(columns):
        sheet.write_string(0, c, label(str(name)), formats.header)
        widths.see(c, label(str(name)))
    # measure first, so that long text can be written with wrapping
    sample = frame.head(2000)
    for c, name in enumerate(columns):
        for value in sample[name]:
            widths.see(c, display(value, kinds[c]))
    wrapped = widths.wrapped()
    if frame.empty:
        sheet.write_string(1, 0, f"暂无数据 no data yet: {spec.empty}", formats.note)
    for r, values in enumerate(frame.itertuples(index=False, name=None), start=1):
        for c, value in enumerate(values):
            _put(sheet, r, c, value, kinds[c], formats, wrap=c in wrapped)
    widths.apply(sheet)
    if spec.freeze_columns and len(columns) > spec.freeze_columns + 2:
        sheet.freeze_panes(1, spec.freeze_columns)
    else:
        sheet.freeze_panes(1, 0)
    if columns:
        sheet.autofilter(0, 0, max(len(frame), 1), len(columns) - 1)


def _summary(sheet: Worksheet, data: ReportData, formats: _Formats) -> None:
    widths = _Widths()
    sheet.write_string(0, 0, TITLE, formats.title)
    run = data.latest_run.isoformat() if data.latest_run else "none yet"
    lifts = data.lifts
    lead = (
        "相对对照组的增量转化 Incremental conversion against the holdout (customers, windows "
        "closed): " + " ".join(lift_sentence(lift) for lift in lifts)
        if lifts
        else "No step has a holdout yet, so no figure here shows what sending changes: customers "
        "who would have bought anyway count as conversions. Declare `holdout:` on a step."
    )
    sheet.write_string(1, 0, lead, formats.section)
    sheet.write_string(
        2,
        0,
        f"Latest plan run: {run}. "
        + CLOSED_WINDOWS.format(open=display(data.totals.get("still_open"), "count") or "0"),
        formats.note,
    )
    header = ("指标 figure", "数值 value", "分子 numerator", "分母 denominator", "定义 definition")
    row = SUMMARY_HEADER_ROW
    for c, name in enumerate(header):
        sheet.write_string(row, c, name, formats.header)
        widths.see(c, name)
    kpis = {str(r["metric"]): r for _, r in data.kpis.iterrows()}
    for metric, value in data.headline().items():
        row += 1
        kpi = kpis.get(metric)
        kind = metric_kind(metric)
        widths.see(0, _put(sheet, row, 0, label(metric), "text", formats))
        widths.see(1, _put(sheet, row, 1, value, kind, formats))
        numerator = kpi["numerator"] if kpi is not None else None
        denominator = kpi["denominator"] if kpi is not None else None
        widths.see(2, _put(sheet, row, 2, numerator, "count", formats))
        widths.see(3, _put(sheet, row, 3, denominator, "count", formats))
        definition = kpi["definition"] if kpi is not None else DEFINITIONS.get(metric)
        _put(sheet, row, 4, definition, "text", formats, wrap=True)
    row += 2
    sheet.write_string(
        row, 0, "A/B 测试：如何解读每个结论 How to read each decision", formats.section
    )
    row += 1
    for c, name in enumerate(("实验", "版本", "结论", "", "解读")):
        sheet.write_string(row, c, name, formats.header)
    decisions = data.decisions()
    if not decisions:
        row += 1
        sheet.write_string(row, 0, "no data yet: no A/B test has data yet", formats.note)
    for decision in decisions:
        row += 1
        widths.see(0, _put(sheet, row, 0, decision["experiment"], "text", formats))
        widths.see(1, _put(sheet, row, 1, decision["variant"], "text", formats))
        widths.see(2, _put(sheet, row, 2, decision["decision"], "text", formats))
        _put(sheet, row, 4, decision["how_to_read"], "text", formats, wrap=True)
    widths.apply(sheet)
    sheet.set_column(4, 4, MAX_WIDTH)  # definitions and readings wrap within it
    sheet.freeze_panes(SUMMARY_HEADER_ROW + 1, 0)
