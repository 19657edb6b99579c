"""The report as ONE self-contained HTML page: plotly.js is embedded once, so the page opens
offline, from a mail attachment or a shared folder. Charts (response rate over time, A/B lift
with its 95 % interval, satisfaction mix, funnel) and tables (headline figures, campaign
performance, A/B results, feedback categories, channel mix, today's plan, tasks per owner).

Every value placed in the page is escaped; chart data travels as JSON, which plotly escapes. A
section without data says so in words instead of drawing an empty chart."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from adapters.files import write_atomically
from flows.analysis.columns import columns_without
from flows.reporting.charts import (
    FONT,
    SMALL_SAMPLE,
    ab_lift_figure,
    backtest_volume_figure,
    decision_key,
    funnel_figure,
    is_control,
    response_rate_figure,
    satisfaction_figure,
)
from flows.reporting.data import ReportData, lift_sentence
from flows.reporting.formats import column_kind, display, is_missing, metric_kind
from flows.reporting.names import label
from flows.reporting.workbook import AB_VS_CAMPAIGN, CLOSED_WINDOWS, DEFINITIONS, TITLE

TILES = ("sent", "responded", "converted", "response_rate", "conversion_rate", "csat", "nps")
DECISION_RULES = (
    "Each variant is compared with its step's control on conversions (a paid order within the "
    "attribution window). <b>ship</b>: p &lt; 0.05 and the lift is positive. "
    "<b>keep control</b>: p &lt; 0.05 and the lift is negative. <b>inconclusive</b>: an arm "
    "is still below its minimum sample, or the difference could be chance. "
    "<b>invalid: sample ratio mismatch</b>: the arms' sizes do not fit their declared shares "
    "(p &lt; 0.001), so the split itself is broken. The bars show the lift in percentage "
    "points, the whiskers its 95 % interval: a whisker crossing zero means no clear winner."
)

CSS = f"""
:root {{ --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #1565c0; }}
* {{ box-sizing: border-box; }}
body {{ font-family: {FONT}; color: var(--ink); margin: 0; background: #f7f8fa;
  line-height: 1.5; }}
header, main, footer {{ max-width: 1280px; margin: 0 auto; padding: 0 24px; }}
header {{ padding-top: 24px; }}
h1 {{ font-size: 26px; margin: 0 0 4px; }}
h2 {{ font-size: 19px; margin: 0 0 12px; border-left: 4px solid var(--accent);
  padding-left: 8px; }}
h3 {{ font-size: 15px; margin: 16px 0 8px; }}
.meta, .note, footer {{ color: var(--muted); font-size: 13px; }}
section {{ background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 20px; margin: 16px 0; }}
.lead {{ font-size: 16px; margin: 0 0 12px; }}
.tiles {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
  gap: 12px; margin-bottom: 16px; }}
.tile {{ border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }}
.tile .value {{ font-size: 24px; font-weight: 600; }}
.tile .name {{ color: var(--muted); font-size: 12px; }}
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 13px; width: 100%; }}
th, td {{ border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left;
  vertical-align: top; }}
th {{ background: #eef2f7; position: sticky; top: 0; white-space: nowrap; }}
th.num {{ text-align: right; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.decision {{ font-weight: 600; border-radius: 4px; padding: 1px 6px; white-space: nowrap; }}
.decision-ship {{ background: #e8f5e9; color: #2e7d32; }}
.decision-keep-control {{ background: #ffebee; color: #c62828; }}
.decision-inconclusive {{ background: #f5f5f5; color: #616161; }}
.decision-invalid {{ background: #fff3e0; color: #e65100; }}
.empty {{ color: var(--muted); font-style: italic; padding: 12px; background: #fafafa;
  border: 1px dashed var(--line); border-radius: 6px; }}
.chart {{ width: 100%; min-height: 200px; }}
ul.readings li {{ margin-bottom: 4px; }}
"""


def write_html(data: ReportData, path: Path) -> Path:
    """Write the page to `path` (through a temporary file); returns `path`."""
    page = render_html(data)
    return write_atomically(Path(path), lambda tmp: tmp.write_text(page, encoding="utf-8"))


def render_html(data: ReportData) -> str:
    charts = {
        "funnel": funnel_figure(data.totals),
        "response-rate": response_rate_figure(data.campaign_performance_daily),
        "ab-lift": ab_lift_figure(data.ab_results),
        "satisfaction": satisfaction_figure(data.feedback_summary),
        "backtest-volume": (
            backtest_volume_figure(data.backtest.volume, data.backtest.focus)
            if data.backtest
            else None
        ),
    }
    sections = [
        _section(
            "headline",
            "核心指标 Headline figures",
            _lead(data)
            + _tiles(data)
            + '<p class="note">'
            + html.escape(
                CLOSED_WINDOWS.format(open=display(data.totals.get("still_open"), "count") or "0")
            )
            + "</p>"
            + _kpi_table(data),
        ),
        _section(
            "funnel",
            "转化漏斗 Funnel",
            _chart("funnel", charts["funnel"], "no messages sent yet"),
            "planned → sent → delivered → responded, over every playbook, each with its share of"
            " the stage before; delivered and responded count the messages whose response window"
            " has closed, so the last share is the headline response rate (conversions, which"
            " need no answer first, are in the headline figures).",
        ),
        _section(
            "response-rate",
            "各方案响应率趋势 Response rate by playbook",
            _chart("response-rate", charts["response-rate"], "no messages sent yet"),
            "responded / delivered, per day the messages went out; a point's size is its sample"
            " (messages delivered with their window closed, in its hover), hollow under"
            f" {SMALL_SAMPLE}: read those with care.",
        ),
        _section(
            "campaigns",
            "活动效果 Campaign performance",
            _table(data.campaign_performance, "no messages sent yet"),
            "Per playbook, step, channel and variant. response_rate = responded / delivered, "
            "messages whose response window has closed (still_open: the others); "
            "conversion_rate = converted / customers, customers whose attribution window has "
            "closed, as in the A/B tests; conversion_amount: orders credited to the latest "
            "message before them (last touch), so that none counts twice.",
        ),
        _section(
            "ab",
            "A/B 测试 A/B tests",
            _chart("ab-lift", charts["ab-lift"], "no A/B test has data yet")
            + _readings(data)
            + _ab_table(data.ab_results),
            DECISION_RULES + " " + html.escape(AB_VS_CAMPAIGN),
            raw_intro=True,
        ),
        _section(
            "feedback",
            "满意度 Satisfaction",
            _chart("satisfaction", charts["satisfaction"], "no survey answers yet")
            + "<h3>问题类型 Feedback categories</h3>"
            + _table(data.feedback_categories, "no feedback loaded yet"),
        ),
        _section(
            "channels",
            "渠道组合 Channel mix",
            _table(data.channel_mix, "no messages sent yet"),
            "Customers by the set of channels they received, and how many converted.",
        ),
        _marketing_section(data),
        _section("today", "今日回访 Today's follow-ups", _today(data)),
        _section(
            "manual",
            "人工回访任务 Tasks for staff",
            _table(data.manual_by_owner, "no tasks for staff yet"),
            "Open, done and cancelled call, visit and escalation tasks per owner.",
        ),
    ]
    if data.backtest is not None:
        sections.append(_backtest_section(data, charts["backtest-volume"]))
    plotly_js = (
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        if any(fig is not None for fig in charts.values())
        else ""
    )
    run = data.latest_run.isoformat() if data.latest_run else "none yet"
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(TITLE)}</title>
<style>{CSS}</style>
{plotly_js}
</head>
<body>
<header>
<h1>{html.escape(TITLE)}</h1>
<p class="meta">Latest plan run: {html.escape(run)} · database {html.escape(data.db_path.name)}
 · rates are shares of their denominator, shown as percentages</p>
</header>
<main>
{"".join(sections)}
</main>
<footer><p>Phone numbers and e-mail addresses are masked. Definitions: docs/analysis.md.</p>
</footer>
</body>
</html>
"""


# --- building blocks -------------------------------------------------------------------------


def _section(key: str, title: str, body: str, intro: str = "", raw_intro: bool = False) -> str:
    text = intro if raw_intro else html.escape(intro)
    note = f'<p class="note">{text}</p>' if intro else ""
    return f'<section id="{key}"><h2>{html.escape(title)}</h2>{note}{body}</section>\n'


def _empty(what: str) -> str:
    return f'<p class="empty">No data yet: {html.escape(what)}.</p>'


def _chart(key: str, fig: go.Figure | None, empty: str, height: int = 420) -> str:
    if fig is None:
        return _empty(empty)
    fig.update_layout(height=height)
    inner = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{key}",
        default_height=f"{height}px",
        default_width="100%",
        config={"displaylogo": False, "responsive": True},
    )
    return f'<div class="chart" id="chart-{key}">{inner}</div>'


def _table(
    frame: pd.DataFrame,
    empty: str,
    columns: Sequence[str] | None = None,
    cell_class: dict[str, str] | None = None,
) -> str:
    if frame.empty:
        return _empty(empty)
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    kinds = {c: column_kind(str(c), frame[c]) for c in columns}
    head = "".join(
        f'<th title="{html.escape(str(c))}">{html.escape(label(str(c)))}</th>'
        if kinds[c] in ("text", "date", "datetime") or c == "decision"
        else f'<th class="num" title="{html.escape(str(c))}">{html.escape(label(str(c)))}</th>'
        for c in columns
    )
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            kind = kinds[c]
            text = html.escape(display(row[c], kind))
            if c == "decision":
                cells.append(f"<td>{_decision_badge(row)}</td>")
            elif kind in ("text", "date", "datetime"):
                cells.append(f"<td>{text}</td>")
            else:
                cells.append(f'<td class="num">{text}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _decision_badge(row: pd.Series) -> str:
    decision = row.get("decision")
    if is_missing(decision):
        return '<span class="note">control</span>' if is_control(row) else ""
    key = decision_key(str(decision))
    return f'<span class="decision decision-{html.escape(key)}">{html.escape(str(decision))}</span>'


def _lead(data: ReportData) -> str:
    """The first thing on the page: what sending did against the holdout, per step that has
    one, with its interval; without a holdout, say that no figure shows the effect of sending."""
    lifts = data.lifts
    if not lifts:
        return (
            '<p class="lead">No step has a holdout yet, so no figure here shows what sending '
            "changes: customers who would have bought anyway count as conversions. Declare "
            "<code>holdout:</code> on a step to measure it.</p>"
        )
    items = "".join(f"<li>{html.escape(lift_sentence(lift))}</li>" for lift in lifts)
    return (
        '<div class="lead"><p>相对对照组的增量转化 Incremental conversion against the holdout '
        "(customers, windows closed):</p>"
        f"<ul>{items}</ul></div>"
    )


def _tiles(data: ReportData) -> str:
    figures = data.headline()
    tiles = []
    for metric in TILES:
        if metric not in figures:
            continue
        value = display(figures[metric], metric_kind(metric)) or "–"
        tiles.append(
            f'<div class="tile"><div class="value">{html.escape(value)}</div>'
            f'<div class="name">{html.escape(label(metric))}</div></div>'
        )
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _kpi_table(data: ReportData) -> str:
    definitions = {
        str(r["metric"]): r["definition"]
        for _, r in data.kpis.iterrows()
        if not is_missing(r["definition"])
    }
    rows = []
    for metric, value in data.headline().items():
        definition = definitions.get(metric, DEFINITIONS.get(metric, ""))
        rows.append(
            f"<tr><td>{html.escape(label(metric))}</td>"
            f'<td class="num">{html.escape(display(value, metric_kind(metric)) or "–")}</td>'
            f"<td>{html.escape(str(definition))}</td></tr>"
        )
    return (
        '<div class="scroll"><table class="kpis"><thead><tr><th>指标</th>'
        '<th class="num">数值</th><th>定义</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _readings(data: ReportData) -> str:
    decisions = data.decisions()
    if not decisions:
        return ""
    items = "".join(
        f"<li><b>{html.escape(d['experiment'])}</b> · {html.escape(d['variant'])}: "
        f'<span class="decision decision-{html.escape(decision_key(d["decision"]))}">'
        f"{html.escape(d['decision'] or 'n/a')}</span> {html.escape(d['how_to_read'])}</li>"
        for d in decisions
    )
    return f'<h3>如何解读 How to read each decision</h3><ul class="readings">{items}</ul>'


def _ab_table(results: pd.DataFrame) -> str:
    columns = columns_without(
        "is_control", "rate_ci_low", "rate_ci_high", "rel_ci_low", "rel_ci_high"
    )
    if results.empty:
        return ""
    return "<h3>各组明细 All arms</h3>" + _table(results, "no A/B test has data yet", columns)


def _today(data: ReportData) -> str:
    today = data.today
    if today.empty:
        return _empty("no follow-ups planned yet")
    counts = (
        today.assign(status=today["status"].fillna("(none)"))
        .groupby(["playbook", "status"])
        .size()
        .unstack("status", fill_value=0)
    )
    counts["total"] = counts.sum(axis=1)
    counts = counts.reset_index()
    counts.columns.name = None
    run = data.latest_run.isoformat() if data.latest_run else ""
    note = (
        f'<p class="note">What the plan run of {html.escape(run)} decided, per playbook: '
        "the full list, with reasons, is on the workbook's Today sheet.</p>"
    )
    return note + _table(counts, "no follow-ups planned yet")


def _marketing_section(data: ReportData) -> str:
    """Period on period, channels, the sales funnel, RFM segments and tier migration."""
    m = data.marketing
    if m is None:
        return ""
    span = {"week": ("周环比", "week on week"), "month": ("月环比", "month on month")}[m.period]
    body = (
        f"<h3>{span[0]} {span[1]}</h3>"
        '<p class="note">The latest complete period against the one before, by the headline '
        "definitions (closed windows only), with each period's numerator and denominator.</p>"
        + _table(m.period_comparison, f"no {m.period} has closed yet")
        + "<h3>渠道健康 Channel health</h3>"
        '<p class="note">Per channel: sends the gateway refused, messages reported undelivered and '
        "opt-outs within the response window, of the messages whose window has closed.</p>"
        + _table(m.channel_health, "no messages sent yet")
        + "<h3>销售漏斗 Sales funnel</h3>"
        '<p class="note">Leads that reached each stage, and those lost or still open there.</p>'
        + _table(m.sales_funnel, "no leads yet")
        + "<h3>RFM 分层 RFM segments</h3>"
        + _table(m.rfm_segments, "no customers yet")
        + f"<h3>等级迁移 Tier migration ({html.escape(m.period)})</h3>"
        '<p class="note">Customers by the tier they were in at the start of the period and at its '
        "end.</p>" + _table(m.tier_migration, "no tier history yet")
    )
    return _section("marketing", "更多指标 More for marketing", body)


def _backtest_section(data: ReportData, volume: go.Figure | None) -> str:
    """The latest backtest: volume, cap collisions, owner overload, and the bar a live playbook
    must beat (how many of the customers it would have messaged ordered anyway)."""
    bt = data.backtest
    tried = ", ".join(bt.focus) if bt.focus else "every enabled playbook"
    intro = (
        f"If {tried} had been live from {bt.start} to {bt.end} ({bt.days} days), replayed on each"
        f" morning's data with {len(bt.playbooks)} playbooks competing for the caps; nothing was"
        " sent. Tables: backtest_* (docs/backtest.md)."
    )
    top = 25
    collisions = bt.collisions.head(top)
    more = (
        f" The {top} largest of {len(bt.collisions)} are shown; backtest_collisions has them all."
        if len(bt.collisions) > top
        else ""
    )
    body = (
        "<h3>每日预计触达量 Would-be messages per day</h3>"
        + _chart("backtest-volume", volume, "no follow-up would have been due")
        + "<h3>频控冲突 Cap collisions between playbooks</h3>"
        + '<p class="note">Follow-ups deferred because another contact (blocked_by) had filled '
        f"a frequency cap (scope) in its window.{html.escape(more)}</p>"
        + _table(collisions, "no follow-up would have met a cap")
        + "<h3>人工超负荷 Owner overload days</h3>"
        + '<p class="note">Days an owner had more call or visit tasks than their daily '
        "capacity; the excess moved to the next working day.</p>"
        + _table(bt.overload, "no owner would have been over capacity")
        + "<h3>无触达基线转化 Baseline: ordered anyway</h3>"
        + '<p class="note">Customers each step would have messaged who placed a paid order '
        "within its attribution window without any message (windows that have closed only, "
        "95 % Wilson interval): the conversion a live playbook must beat.</p>"
        + _table(bt.baseline, "no attribution window has closed yet")
    )
    return _section("backtest", "回测 Backtest", body, intro)
