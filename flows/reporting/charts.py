"""The report's charts as plotly figures, for the HTML page and the notebooks alike. Each
returns None when there is nothing to draw, so the caller can say so in words."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly import colors as px_colors

from flows.reporting.data import ALL_PLAYBOOKS, FUNNEL, SATISFACTION
from flows.reporting.formats import is_truthy
from flows.reporting.names import label

FONT = (
    '-apple-system, BlinkMacSystemFont, "Segoe UI", "PingFang SC", "Hiragino Sans GB", '
    '"Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", '
    "Helvetica, Arial, sans-serif"
)
DECISION_COLOURS = {
    "ship": "#2e7d32",
    "keep-control": "#c62828",
    "inconclusive": "#757575",
    "invalid": "#ef6c00",
}
SATISFACTION_COLOURS = {
    "very_satisfied": "#2e7d32",
    "satisfied": "#81c784",
    "neutral": "#bdbdbd",
    "unsatisfied": "#e57373",
}
SATISFACTION_LABELS = {
    "very_satisfied": "very satisfied 非常满意",
    "satisfied": "satisfied 满意",
    "neutral": "neutral 一般",
    "unsatisfied": "unsatisfied 不满意",
}


def decision_key(decision: str) -> str:
    """The CSS class suffix and colour key of a decision."""
    return "invalid" if decision.startswith("invalid") else decision.replace(" ", "-")


def is_control(row: pd.Series) -> bool:
    return is_truthy(row.get("is_control"))


def _style(fig: go.Figure) -> go.Figure:
    fig.update_layout(
        font={"family": FONT, "size": 13},
        template="plotly_white",
        margin={"l": 60, "r": 30, "t": 30, "b": 60},
    )
    return fig


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def funnel_figure(totals: Mapping[str, float]) -> go.Figure | None:
    """planned → sent → delivered → responded, each stage's share of the one before: the
    last is the headline response rate (responded / delivered)."""
    values = [totals.get(stage, 0.0) for stage in FUNNEL]
    if not any(values):
        return None
    fig = go.Figure(
        go.Funnel(
            y=[label(stage) for stage in FUNNEL],
            x=values,
            texttemplate="%{value:,}<br>%{percentPrevious:.1%}",
            hovertemplate=(
                "%{y}: %{value:,} (%{percentPrevious:.1%} of the stage before, "
                "%{percentInitial:.1%} of planned)<extra></extra>"
            ),
            marker={"color": ["#90caf9", "#64b5f6", "#42a5f5", "#1e88e5", "#1565c0"]},
        )
    )
    return _style(fig)


# a day's point on fewer delivered messages than this is drawn hollow: read it with care
SMALL_SAMPLE = 30


def response_rate_figure(daily: pd.DataFrame) -> go.Figure | None:
    """One line per playbook: campaign_performance_daily's response rate by sent date, each
    point sized by its sample (the messages delivered with their window closed), hollow under
    SMALL_SAMPLE, the counts in its hover."""
    frame = daily.assign(
        response_rate=_numbers(daily["response_rate"]),
        delivered=_numbers(daily["delivered"]).fillna(0),
        responded=_numbers(daily["responded"]).fillna(0),
    ).dropna(subset=["response_rate", "sent_date"])
    if frame.empty:
        return None
    fig = go.Figure()
    for playbook, rows in frame.sort_values("sent_date").groupby("playbook", sort=True):
        fig.add_trace(
            go.Scatter(
                x=rows["sent_date"],
                y=rows["response_rate"],
                mode="lines+markers",
                name=str(playbook),
                line={"width": 1.5},
                marker={
                    "size": (4 + rows["delivered"].clip(upper=400) ** 0.5 / 2).tolist(),
                    "symbol": [
                        "circle-open" if n < SMALL_SAMPLE else "circle" for n in rows["delivered"]
                    ],
                },
                customdata=rows[["responded", "delivered"]].to_numpy(),
                hovertemplate=(
                    "%{x|%Y-%m-%d}<br>%{y:.1%}: %{customdata[0]:,} / %{customdata[1]:,} 已送达"
                ),
            )
        )
    fig.update_layout(
        yaxis={"tickformat": ".0%", "title": "响应率 response rate", "rangemode": "tozero"},
        xaxis={"title": "发送日期 sent date"},
        legend={"orientation": "h", "y": -0.2},
    )
    return _style(fig)


def ab_lift_figure(results: pd.DataFrame) -> go.Figure | None:
    """One bar per non-control arm: its absolute lift, whiskers at the 95 % interval, coloured
    and labelled by the decision."""
    if results.empty:
        return None
    arms = results.assign(
        abs_lift=_numbers(results["abs_lift"]),
        ci_low=_numbers(results["ci_low"]),
        ci_high=_numbers(results["ci_high"]),
    )
    # each arm with its sample: customers (n)
    controls = {
        row["experiment"]: f"{row['variant']} (n={_n(row.get('n'))})"
        for _, row in arms.iterrows()
        if is_control(row)
    }
    arms = arms[~arms.apply(is_control, axis=1)].dropna(subset=["abs_lift"])
    if arms.empty:
        return None
    decisions = arms["decision"].fillna("").astype(str)
    labels = [
        f"{row['experiment']}<br>{row['variant']} (n={_n(row.get('n'))}) vs "
        f"{controls.get(row['experiment'], 'control')}<br><b>{decision or 'n/a'}</b>"
        for (_, row), decision in zip(arms.iterrows(), decisions, strict=True)
    ]
    upper = (arms["ci_high"] - arms["abs_lift"]).fillna(0)
    lower = (arms["abs_lift"] - arms["ci_low"]).fillna(0)
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=arms["abs_lift"],
            error_y={"type": "data", "symmetric": False, "array": upper, "arrayminus": lower},
            marker={"color": [DECISION_COLOURS.get(decision_key(d), "#9e9e9e") for d in decisions]},
            text=list(decisions),
            textposition="none",
            customdata=arms[["ci_low", "ci_high", "p_value"]].to_numpy(),
            hovertemplate=(
                "%{x}<br>lift %{y:+.1%} (95 % interval %{customdata[0]:+.1%} to "
                "%{customdata[1]:+.1%})<br>p = %{customdata[2]:.4f}<extra></extra>"
            ),
        )
    )
    fig.add_hline(y=0, line_color="#424242", line_width=1)
    fig.update_layout(
        yaxis={"tickformat": "+.0%", "title": "absolute lift in conversion rate (points)"},
        showlegend=False,
    )
    return _style(fig)


def satisfaction_figure(summary: pd.DataFrame) -> go.Figure | None:
    """feedback_summary's satisfaction answers, stacked to 100 % per playbook."""
    if summary.empty:
        return None
    counts = summary[["playbook", *SATISFACTION]].copy()
    for level in SATISFACTION:
        counts[level] = _numbers(counts[level]).fillna(0)
    counts = counts[counts[list(SATISFACTION)].sum(axis=1) > 0]
    if counts.empty:
        return None
    # every playbook together on top, then each playbook
    counts = counts.assign(_all=counts["playbook"] == ALL_PLAYBOOKS).sort_values(
        ["_all", "playbook"], ascending=[True, False]
    )
    # the bars are shares: each says its share, and each row its number of answers
    total = counts[list(SATISFACTION)].sum(axis=1)
    rows = [f"{p}（{n:,.0f} 份）" for p, n in zip(counts["playbook"], total, strict=True)]
    fig = go.Figure()
    for level in SATISFACTION:
        fig.add_trace(
            go.Bar(
                y=rows,
                x=counts[level],
                name=SATISFACTION_LABELS[level],
                orientation="h",
                marker={"color": SATISFACTION_COLOURS[level]},
                text=[
                    f"{v / t:.0%}" if v else "" for v, t in zip(counts[level], total, strict=True)
                ],
                textposition="inside",
                customdata=counts[level],
                hovertemplate="%{y}: %{customdata:,} "
                + SATISFACTION_LABELS[level]
                + " (%{x:.0f}%)<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        barnorm="percent",
        xaxis={"title": "share of satisfaction answers (%)", "ticksuffix": "%"},
        legend={"orientation": "h", "y": -0.25, "traceorder": "normal"},
    )
    return _style(fig)


def backtest_volume_figure(volume: pd.DataFrame, focus: tuple[str, ...] = ()) -> go.Figure | None:
    """Would-be messages per replayed day, stacked by playbook (the ones tried named first)."""
    frame = volume.assign(planned=_numbers(volume["planned"])).dropna(subset=["planned"])
    frame = frame[frame["planned"] > 0]
    if frame.empty:
        return None
    fig = go.Figure()
    order = sorted(frame["playbook"].unique(), key=lambda p: (p not in focus, p))
    for playbook in order:
        rows = frame[frame["playbook"] == playbook].sort_values("day")
        fig.add_trace(
            go.Bar(
                x=rows["day"],
                y=rows["planned"],
                name=f"{playbook} (tried)" if playbook in focus else str(playbook),
                hovertemplate="%{x|%Y-%m-%d}: %{y:,}<extra>" + str(playbook) + "</extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        # one colour per playbook: the default ten repeat with the fifteen shipped ones
        colorway=px_colors.qualitative.Dark24,
        # the days need no axis title (the section's heading names them): it sat under the
        # legend's first row
        yaxis={"title": "would-be messages", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.15},
    )
    return _style(fig)


def _n(value: object) -> str:
    number = pd.to_numeric(value, errors="coerce")
    return "?" if pd.isna(number) else f"{number:,.0f}"
