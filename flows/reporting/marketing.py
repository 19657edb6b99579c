"""The marts beyond the campaigns that marketing reads in the report (docs/analysis.md): the
headline rates period on period with their samples, delivery failures and opt-outs per channel,
the sales funnel, the RFM segments and the tier migration. Each is cut to the report's period
(`week` for the weekly report, `month` for the monthly one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb
import pandas as pd

from flows.reporting.tables import read_table

Period = Literal["week", "month"]

COLUMNS = {
    "period_comparison": (
        *("period_start", "period_end", "metric", "value", "previous_value", "change"),
        *("numerator", "denominator", "previous_numerator", "previous_denominator", "still_open"),
    ),
    "channel_health": (
        *("channel", "sent", "send_failed", "still_open", "delivered", "delivery_failures"),
        *("delivery_failure_rate", "opted_out", "opt_out_rate"),
    ),
    "sales_funnel": ("stage", "leads_reached", "leads_lost_here", "leads_open_here"),
    "rfm_segment_summary": (
        *("dimension", "value", "customers", "share", "buyers", "avg_total_amount"),
        *("avg_spend_6m", "avg_orders_6m", "avg_recency_days"),
    ),
    "tier_migration": (
        *("from_as_of_date", "to_as_of_date", "dimension", "from_value", "to_value"),
        *("customers", "share_of_from", "direction"),
    ),
}


@dataclass(frozen=True)
class Marketing:
    period: Period
    period_comparison: pd.DataFrame  # the latest complete period of the kind, and the one before
    channel_health: pd.DataFrame
    sales_funnel: pd.DataFrame  # every lead together
    rfm_segments: pd.DataFrame
    tier_migration: pd.DataFrame  # over the last period of the kind


def read_marketing(
    con: duckdb.DuckDBPyConnection,
    present: dict[str, set[str]],
    business_tz: str,
    period: Period = "week",
) -> Marketing:
    def table(name: str, keep: tuple[str, ...] = ()) -> pd.DataFrame:
        wanted = (*keep, *COLUMNS[name])
        frame = read_table(con, name, wanted, tables=present, business_tz=business_tz)
        return frame[list(wanted)]

    comparison = table("period_comparison", ("period_kind", "is_complete"))
    comparison = comparison[comparison["period_kind"] == period]
    complete = comparison[comparison["is_complete"].fillna(False).astype(bool)]
    if not complete.empty:
        comparison = complete[complete["period_start"] == complete["period_start"].max()]
    funnel = table("sales_funnel", ("breakdown", "stage_order"))
    funnel = funnel[funnel["breakdown"] == "all"].sort_values("stage_order")
    migration = table("tier_migration", ("period_kind",))
    migration = migration[migration["period_kind"] == period]
    return Marketing(
        period=period,
        # every figure there is a rate
        period_comparison=_without(comparison, "period_kind", "is_complete").rename(
            columns={"value": "this_period_rate", "previous_value": "previous_period_rate"}
        ),
        channel_health=table("channel_health"),
        sales_funnel=_without(funnel, "breakdown", "stage_order"),
        rfm_segments=table("rfm_segment_summary").rename(columns=_COUNT),
        tier_migration=_without(migration, "period_kind").rename(columns=_COUNT),
    )


# customers counted, not customers reached by a message (the campaign tables' `customers`)
_COUNT = {"customers": "customer_count"}


def _without(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    return frame.drop(columns=list(columns)).reset_index(drop=True)
