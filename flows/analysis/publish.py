"""What the analysis models found, read back for the terminal and the Prefect UI: the headline
figures (`followup_kpis`), campaign totals per playbook and the A/B table (`ab_results`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from flows.analysis.columns import columns_without
from flows.artifacts import markdown_artifact, table_artifact

# the run's summary leaves out the intervals of the rate and the relative lift
AB_COLUMNS = columns_without(
    "rate_ci_low", "rate_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "min_sample"
)


@dataclass
class AnalysisSummary:
    kpis: dict[str, float | None] = field(default_factory=dict)
    playbooks: list[dict] = field(default_factory=list)  # sent, responded, converted per playbook
    ab: list[dict] = field(default_factory=list)


def read_summary(db_path: Path) -> AnalysisSummary:
    """The summary, or an empty one where the analysis models have not been built yet."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        have = {r[0] for r in con.execute("select table_name from duckdb_tables()").fetchall()}
        summary = AnalysisSummary()
        if "followup_kpis" in have:
            summary.kpis = dict(con.execute("select metric, value from followup_kpis").fetchall())
        if "campaign_performance" in have:
            summary.playbooks = _records(
                con,
                """
                select playbook, sum(planned) as planned, sum(sent) as sent,
                    sum(responded) as responded, sum(converted) as converted,
                    sum(responded) / nullif(sum(delivered), 0) as response_rate,
                    sum(converted) / nullif(sum(sent), 0) as conversion_rate
                from campaign_performance group by playbook order by sent desc, playbook
                """,
            )
        if "ab_results" in have:
            summary.ab = _records(
                con,
                f"select {', '.join(AB_COLUMNS)} from ab_results "
                "order by experiment, is_control desc, variant",
            )
        return summary
    finally:
        con.close()


def _records(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def lift_text(row: dict, interval: str) -> str:
    """A variant's absolute lift with its 95 % interval, e.g. `+15.5% [+10.5%, +20.4%]`."""
    bounds = interval.format(percent(row["ci_low"]), percent(row["ci_high"]))
    return f"{percent(row['abs_lift'])} {bounds}"


def ab_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No A/B experiment has data yet."
    lines = [
        "| experiment | variant | n | conversions | rate | lift (95 % CI) | p | P(beats control) "
        "| SRM p | decision |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lift = "control" if r["is_control"] else lift_text(r, "({} to {})")
        p = "" if r["p_value"] is None else f"{r['p_value']:.4f}"
        srm = "" if r["srm_p_value"] is None else f"{r['srm_p_value']:.3f}"
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {r['n']:,} | {r['conversions']:,} "
            f"| {percent(r['rate'])} | {lift} | {p} | {percent(r['chance_to_beat_control'])} "
            f"| {srm} | {r['decision'] or ''} |"
        )
    return "\n".join(lines)


def summary_markdown(summary: AnalysisSummary, as_of: dt.date) -> str:
    kpis = summary.kpis
    lines = [f"# What worked, as of {as_of}", ""]
    if kpis:
        lines += [
            "| metric | value |",
            "|---|---:|",
            *(
                f"| {metric} | {kpi_text(metric, value)} |"
                for metric, value in sorted(kpis.items())
            ),
            "",
        ]
    if summary.playbooks:
        lines += [
            "| playbook | planned | sent | responded | converted | response rate | conversion |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {p['playbook']} | {p['planned']:,} | {p['sent']:,} | {p['responded']:,} "
                f"| {p['converted']:,} | {percent(p['response_rate'])} "
                f"| {percent(p['conversion_rate'])} |"
                for p in summary.playbooks
            ),
            "",
        ]
    lines += ["## A/B results", "", ab_markdown(summary.ab)]
    return "\n".join(lines)


def kpi_text(metric: str, value: float | None) -> str:
    """A headline figure as read: NPS in points, cycles in days, the rest as percentages."""
    if value is None:
        return "–"
    if metric == "nps":
        return f"{value:.1f}"
    if metric.endswith("_days"):
        return f"{value:.1f} days"
    return percent(value)


def publish_analysis(summary: AnalysisSummary, as_of: dt.date) -> None:
    """The headline figures and the A/B table as artifacts of the current flow run."""
    markdown_artifact(summary_markdown(summary, as_of), key="analysis", description="what worked")
    if summary.ab:
        table_artifact(
            summary.ab,
            key="ab-results",
            description="A/B results per experiment and variant",
        )
