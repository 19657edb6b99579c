"""Everything the report shows, read in one go from the database (read only).

Tables are read by name and columns by name: a table not built yet (no feedback loaded, no A/B
test declared) is an empty frame with the columns it would have, never a crash, and a column
missing from an older table is an empty column. Every text value passes through `mask()`, so a
phone number or an address a customer wrote into a reply, or a reason that quotes one, reaches
marketing as `138****5678` / `z***@example.com`.

Timestamps are shown in the business time zone, without the zone (Excel has none)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd

from flows.analysis.columns import COLUMNS as AB_COLUMNS
from flows.reporting.backtest_data import Backtest, read_backtest
from flows.reporting.formats import is_missing, is_truthy
from flows.reporting.marketing import Marketing, Period, read_marketing
from flows.reporting.names import Names
from flows.reporting.tables import (
    clean,
    existing_tables,
    open_readonly,
    read_table,
    select_columns,
    table_columns,
)

# The columns each table is expected to have (docs/analysis.md and the contract, section 3), in
# the order the report shows them; further columns a table has follow these.
COLUMNS: dict[str, tuple[str, ...]] = {
    "followup_kpis": ("metric", "value", "numerator", "denominator", "definition"),
    "campaign_performance": (
        "playbook",
        "step",
        "channel",
        "variant",
        "planned",
        "sent",
        "still_open",
        "delivered",
        "responded",
        "response_rate",
        "customers",
        "converted",
        "conversion_rate",
        "conversion_amount",
        "execution_rate",
        "avg_lag_minutes",
    ),
    "campaign_performance_daily": (
        "sent_date",
        "playbook",
        *("sent", "still_open", "delivered", "responded", "response_rate"),
        *("customers", "converted", "conversion_rate"),
    ),
    "campaign_breakdown": (
        "dimension",
        "value",
        "playbook",
        *("sent", "still_open", "delivered", "responded", "response_rate"),
        *("customers", "converted", "conversion_rate"),
    ),
    "ab_results": AB_COLUMNS,
    "feedback_summary": (
        "playbook",
        "responses",
        "csat_responses",
        "csat",
        "nps_responses",
        "nps",
        "very_satisfied",
        "satisfied",
        "neutral",
        "unsatisfied",
    ),
    "feedback_categories": ("playbook", "category", "responses", "share"),
    "channel_mix": ("playbook", "channels", "customers", "converted", "conversion_rate"),
    "followup_execution": (
        "planned_for",
        "playbook",
        "channel",
        "planned",
        "done",
        "execution_rate",
        "avg_lag_minutes",
    ),
}
TODAY_COLUMNS = (
    "planned_for",
    "playbook",
    "step",
    "channel",
    "variant",
    "status",
    "reason",
    "customer_id",
    "owner_id",
)
MANUAL_COLUMNS = (
    *("owner_id", "owner_name", "kind", "status", "overdue", "customer_id", "reason", "due_by"),
    *("outcome", "done_at", "priority", "playbook", "task_id"),
)
COMMENT_COLUMNS = (
    *("responded_at", "playbook", "response_type", "satisfaction", "category", "score", "text"),
)
# each stage a subset of the one before (delivered and responded: of the messages whose
# response window has closed; `still_open` the rest); a conversion need not follow an answer,
# so it is a headline figure, not a stage
FUNNEL = ("planned", "sent", "delivered", "responded")
TOTALS = (*FUNNEL, "still_open", "customers", "converted", "conversion_amount")
SATISFACTION = ("very_satisfied", "satisfied", "neutral", "unsatisfied")
ALL_PLAYBOOKS = "(all)"
LATEST_COMMENTS = 200


@dataclass(frozen=True)
class ReportData:
    """The report's tables (pandas frames, text masked) and its headline figures."""

    db_path: Path
    latest_run: dt.date | None  # the day of the latest plan run (the ledger's `decided_on`)
    kpis: pd.DataFrame
    totals: dict[str, float]  # TOTALS of campaign_performance
    today: pd.DataFrame
    campaign_performance: pd.DataFrame
    campaign_performance_daily: pd.DataFrame
    campaign_breakdown: pd.DataFrame
    ab_results: pd.DataFrame
    feedback_summary: pd.DataFrame
    feedback_categories: pd.DataFrame
    feedback_comments: pd.DataFrame
    channel_mix: pd.DataFrame
    followup_execution: pd.DataFrame
    manual_followups: pd.DataFrame
    manual_by_owner: pd.DataFrame  # owner × status counts, one column per status, and total
    missing_tables: tuple[str, ...] = field(default=())
    backtest: Backtest | None = None  # the latest `followup backtest`, if one has run
    lifts: tuple[dict[str, object], ...] = ()  # per step with a holdout: see `_lifts`
    names: Names = field(default_factory=Names)  # the display names of the code names
    marketing: Marketing | None = None  # period on period, channels, sales, segments, tiers

    def headline(self) -> dict[str, float | None]:
        """The figures a reader looks at first: the funnel counts, then followup_kpis (rates
        computed from the counts when the KPI table has none)."""
        figures: dict[str, float | None] = dict(self.totals)
        kpis = {
            str(row["metric"]): (None if pd.isna(row["value"]) else float(row["value"]))
            for _, row in self.kpis.iterrows()
        }
        delivered, customers = self.totals.get("delivered"), self.totals.get("customers")
        responded, converted = self.totals.get("responded"), self.totals.get("converted")
        kpis.setdefault("response_rate", responded / delivered if delivered else None)
        kpis.setdefault("conversion_rate", converted / customers if customers else None)
        kpis.pop("still_open", None)  # the campaign table's own count is in the totals
        figures.update(kpis)
        return figures

    def decisions(self) -> list[dict[str, str]]:
        """One line per non-control A/B arm: what was decided and how to read it."""
        rows = []
        for _, row in self.ab_results.iterrows():
            if is_truthy(row.get("is_control")):
                continue
            rows.append(
                {
                    "experiment": str(row["experiment"]),
                    "variant": str(row["variant"]),
                    "decision": "" if pd.isna(row["decision"]) else str(row["decision"]),
                    "how_to_read": how_to_read(row, self.ab_results),
                }
            )
        return rows


def load_report_data(db_path: Path | str, business_tz: str, period: Period = "week") -> ReportData:
    """Read everything the report shows from `db_path`, opened read only; times in
    `business_tz`; the figures period on period by `period`."""
    with open_readonly(db_path) as con:
        present = existing_tables(con)
        frames = {
            name: read_table(con, name, columns, tables=present, business_tz=business_tz)
            for name, columns in COLUMNS.items()
        }
        latest_run, today = _today(con, present, business_tz)
        manual = _manual_followups(con, present, business_tz, latest_run)
        comments = _feedback_comments(con, present, business_tz)
        backtest = read_backtest(con, present)
        names = Names.read(con, present)
        marketing = read_marketing(con, present, business_tz, period)
    performance = frames["campaign_performance"]
    if not performance.empty:  # a table has no order: the report's is stable, by step
        keys = ["playbook", "step", "channel", "variant"]
        performance = performance.sort_values(keys, na_position="last", ignore_index=True)
    totals = {
        name: float(pd.to_numeric(performance[name], errors="coerce").fillna(0).sum())
        for name in TOTALS
    }
    shown = names.shown  # the code names stay in the database; the report shows these
    return ReportData(
        db_path=Path(db_path),
        latest_run=latest_run,
        kpis=frames["followup_kpis"],
        totals=totals,
        today=shown(today),
        campaign_performance=shown(performance),
        campaign_performance_daily=shown(frames["campaign_performance_daily"]),
        campaign_breakdown=shown(frames["campaign_breakdown"]),
        ab_results=shown(frames["ab_results"]),
        feedback_summary=shown(frames["feedback_summary"]),
        feedback_categories=shown(frames["feedback_categories"]),
        feedback_comments=shown(comments),
        channel_mix=shown(frames["channel_mix"]),
        followup_execution=shown(frames["followup_execution"]),
        manual_followups=shown(manual),
        manual_by_owner=_by_owner(manual),
        missing_tables=tuple(sorted(set(COLUMNS) - present.get("main", set()))),
        backtest=backtest,
        lifts=_lifts(frames["ab_results"], names),
        names=names,
        marketing=Marketing(
            period=period,
            period_comparison=shown(marketing.period_comparison),
            channel_health=shown(marketing.channel_health),
            sales_funnel=shown(marketing.sales_funnel),
            rfm_segments=shown(marketing.rfm_segments),
            tier_migration=shown(marketing.tier_migration),
        ),
    )


def _lifts(results: pd.DataFrame, names: Names) -> tuple[dict[str, object], ...]:
    """What sending does at all: per step with a holdout, the `sent` arm against the
    holdout (conversion, customers, windows closed), lift and 95 % interval in points;
    `results` with their code names."""
    rows = []
    for _, row in results[results["variant"].astype(str) == "sent"].iterrows():
        experiment = str(row["experiment"])
        if not experiment.endswith(".holdout"):
            continue
        arms = results[results["experiment"] == experiment]
        holdout = arms[arms["variant"].astype(str) == "holdout"]
        control = holdout.iloc[0] if not holdout.empty else pd.Series(dtype=object)
        rows.append(
            {
                "step": names.experiment(experiment.removesuffix(".holdout")),
                "rate": row.get("rate"),
                "n": row.get("n"),
                "holdout_rate": control.get("rate"),
                "holdout_n": control.get("n"),
                "abs_lift": row.get("abs_lift"),
                "ci_low": row.get("ci_low"),
                "ci_high": row.get("ci_high"),
                "decision": row.get("decision"),
            }
        )
    return tuple(rows)


def _today(
    con: duckdb.DuckDBPyConnection, present: dict[str, set[str]], business_tz: str
) -> tuple[dt.date | None, pd.DataFrame]:
    """The latest plan run's follow-ups and their fate: every ledger row that run decided
    (planned for that day, or deferred from it to a later one). A ledger without `decided_on`
    falls back to the latest `planned_for`."""
    empty = pd.DataFrame({c: pd.Series([], dtype="object") for c in TODAY_COLUMNS})
    if "message_ledger" not in present.get("main", set()):
        return None, empty
    available = table_columns(con, "message_ledger")
    day_column = "decided_on" if "decided_on" in available else "planned_for"
    if day_column not in available:
        return None, empty
    (day,) = con.execute(f'select max("{day_column}") from message_ledger').fetchone()
    if day is None:
        return None, empty
    order = [c for c in ("playbook", "step", "status", "customer_id") if c in available]
    columns = select_columns(available, TODAY_COLUMNS, "l", business_tz)
    frame = con.execute(
        f"select {columns} from message_ledger l "
        f'where l."{day_column}" = ? order by {", ".join(f"l.{c}" for c in order) or "1"}',
        [day],
    ).df()
    return day, clean(frame, business_tz)


def _manual_followups(
    con: duckdb.DuckDBPyConnection,
    present: dict[str, set[str]],
    business_tz: str,
    day: dt.date | None,
) -> pd.DataFrame:
    """Tasks for people, with the owner's name from raw.staff where the owner is known there;
    `overdue`: still open when the latest run's `day` began (its owner's list of `day` shows it
    again, marked 逾期)."""
    if "manual_followups" not in present.get("main", set()):
        return pd.DataFrame({c: pd.Series([], dtype="object") for c in MANUAL_COLUMNS})
    available = table_columns(con, "manual_followups")
    wanted = [c for c in MANUAL_COLUMNS if c not in ("owner_name", "overdue")]
    select = select_columns(available, wanted, "m", business_tz)
    if day is not None and {"status", "due_by"} <= set(available):
        start = dt.datetime.combine(day, dt.time(), ZoneInfo(business_tz))
        overdue = f"coalesce(m.status = 'open' and m.due_by <= '{start.isoformat()}', false)"
    else:
        overdue = "false"
    select = f"{select}, {overdue} as overdue"
    staff = "staff" in present.get("raw", set()) and {"staff_id", "name"} <= set(
        table_columns(con, "staff", "raw")
    )
    if staff:
        sql = (
            f"select {select}, s.name as owner_name from manual_followups m "
            "left join raw.staff s on s.staff_id = m.owner_id"
        )
    else:
        sql = f"select {select}, null as owner_name from manual_followups m"
    order = [f"m.{c}" for c in ("owner_id", "status", "due_by", "task_id") if c in available]
    frame = con.execute(f"{sql} order by {', '.join(order) or '1'}").df()
    return clean(frame[list(MANUAL_COLUMNS)], business_tz)


def _by_owner(manual: pd.DataFrame) -> pd.DataFrame:
    """One row per owner: the count of their tasks in each status, and the total."""
    if manual.empty:
        return pd.DataFrame(
            {c: pd.Series([], dtype="object") for c in ("owner_id", "owner_name", "total")}
        )
    keyed = manual.assign(
        owner_id=manual["owner_id"].fillna("(unassigned)"),
        owner_name=manual["owner_name"].fillna(""),
        status=manual["status"].fillna("(none)"),
    )
    counts = (
        keyed.groupby(["owner_id", "owner_name", "status"]).size().unstack("status", fill_value=0)
    )
    statuses = sorted(counts.columns, key=lambda s: (_STATUS_ORDER.get(s, 9), s))
    counts = counts[statuses]
    counts["total"] = counts.sum(axis=1)
    # of the open ones, those past their day (a count beside the statuses, not one of them)
    overdue = keyed.assign(overdue=keyed["overdue"].fillna(False).astype(bool))
    counts.insert(
        statuses.index("open") + 1 if "open" in statuses else 0,
        "overdue",
        overdue.groupby(["owner_id", "owner_name"])["overdue"].sum(),
    )
    counts = counts.reset_index().sort_values(["total", "owner_id"], ascending=[False, True])
    counts.columns.name = None
    return counts.reset_index(drop=True).astype(
        {s: "int64" for s in [*statuses, "overdue", "total"]}
    )


_STATUS_ORDER = {"open": 0, "done": 1, "cancelled": 2}


def _feedback_comments(
    con: duckdb.DuckDBPyConnection, present: dict[str, set[str]], business_tz: str
) -> pd.DataFrame:
    """The latest written replies (masked), with the playbook of the message they answer."""
    empty = pd.DataFrame({c: pd.Series([], dtype="object") for c in COMMENT_COLUMNS})
    if "feedback" not in present.get("raw", set()):
        return empty
    available = table_columns(con, "feedback", "raw")
    if "text" not in available:
        return empty
    wanted = [c for c in COMMENT_COLUMNS if c != "playbook"]
    ledger = "message_ledger" in present.get("main", set()) and "message_id" in available
    playbook = "l.playbook" if ledger else "null"
    join = "left join message_ledger l on l.message_id = f.message_id" if ledger else ""
    order = "f.responded_at desc nulls last" if "responded_at" in available else "1"
    frame = con.execute(
        f"select {select_columns(available, wanted, 'f', business_tz)}, {playbook} as playbook "
        f"from raw.feedback f {join} where nullif(trim(f.text), '') is not null "
        f"order by {order} limit {LATEST_COMMENTS}"
    ).df()
    return clean(frame[list(COMMENT_COLUMNS)], business_tz)


# --- reading an A/B result -------------------------------------------------------------------


def how_to_read(row: pd.Series, results: pd.DataFrame) -> str:
    """A sentence that says what an arm's decision means and what to do about it."""
    variant = str(row.get("variant"))
    experiment = row.get("experiment")
    arms = results[results["experiment"] == experiment]
    controls = arms[arms["is_control"].map(is_truthy)]
    control = str(controls["variant"].iloc[0]) if not controls.empty else "the control"
    decision = "" if pd.isna(row.get("decision")) else str(row.get("decision"))
    lift = _points(row.get("abs_lift"))
    interval = (
        f"95 % interval {_points(row.get('ci_low'))} to {_points(row.get('ci_high'))}"
        if not (pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")))
        else "no interval yet"
    )
    p = row.get("p_value")
    p_text = f"p {_p(p)}" if not pd.isna(p) else "no p-value yet"
    if decision.startswith("invalid"):
        srm = row.get("srm_p_value")
        srm_text = f" (SRM p {_p(srm)})" if not pd.isna(srm) else ""
        return (
            f"Do not read this test: the arms' sizes do not match their declared shares{srm_text}, "
            "so the split itself is broken. Fix the assignment, then start again."
        )
    if decision == "ship":
        return (
            f"{variant} converts better than {control}: {lift} ({interval}, {p_text}). "
            f"Make {variant} the default."
        )
    if decision == "keep control":
        return (
            f"{variant} converts worse than {control}: {lift} ({interval}, {p_text}). "
            f"Keep {control}."
        )
    smallest = pd.to_numeric(arms["n"], errors="coerce").min()
    needed = pd.to_numeric(arms["min_sample"], errors="coerce").max()
    if not pd.isna(smallest) and not pd.isna(needed) and smallest < needed:
        return (
            f"Too early to tell: the smallest arm has {smallest:,.0f} of the {needed:,.0f} "
            f"customers needed. So far {lift} against {control} ({interval}); keep it running."
        )
    if decision == "inconclusive":
        return (
            f"No clear difference from {control}: {lift} ({interval}, {p_text}); the interval "
            "includes zero. Either arm will do; keep running only if a smaller lift matters."
        )
    return f"{lift} against {control} ({interval}, {p_text})."


# an A/B decision in the report's words
DECISIONS = {
    "ship": "采用",
    "keep control": "保留对照",
    "inconclusive": "尚无结论",
    "invalid: sample ratio mismatch": "无效：分流比例不符",
}


def lift_sentence(lift: dict[str, object]) -> str:
    """What sending one step did, in words: `lift` is one of `ReportData.lifts`."""
    rate, holdout = lift.get("rate"), lift.get("holdout_rate")
    if is_missing(rate) or is_missing(holdout):
        return f"{lift['step']}：发送组与对照组尚无已结束窗口的客户 (no closed window yet)。"
    interval = (
        f"95 % 区间 {_points(lift['ci_low'])} 至 {_points(lift['ci_high'])}"
        if not (is_missing(lift.get("ci_low")) or is_missing(lift.get("ci_high")))
        else "尚无区间"
    )
    decision = lift.get("decision")
    verdict = "" if is_missing(decision) else f"，{DECISIONS.get(str(decision), decision)}"
    return (
        f"{lift['step']}：发送组 {_count(lift['n'])} 位客户转化 {float(rate):.1%}，"
        f"对照组（不发送）{_count(lift['holdout_n'])} 位 {float(holdout):.1%}："
        f"提升 {_points(lift['abs_lift'])}（{interval}{verdict}）。"
    )


def _count(value: object) -> str:
    return "0" if is_missing(value) else f"{float(value):,.0f}"  # type: ignore[arg-type]


def _points(value: object) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"{float(value) * 100:+.1f} pts"  # percentage points (百分点)


def _p(value: object) -> str:
    number = float(value)  # type: ignore[arg-type]
    return "< 0.0001" if number < 0.0001 else f"= {number:.4f}"
