"""The common alternative: the same RFM summary as an analyst writes it in pandas, from the CSVs."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def rfm(orders_csv: str, customers_csv: str, as_of: str) -> pd.DataFrame:
    as_of_ts = pd.Timestamp(as_of)
    orders = pd.read_csv(orders_csv, parse_dates=["ordered_at"])
    paid = orders[(orders["status"] == "paid") & (orders["ordered_at"] < as_of_ts)]
    recent = paid[paid["ordered_at"] >= as_of_ts - pd.DateOffset(months=6)]
    summary = paid.groupby("customer_id").agg(
        last_ordered_at=("ordered_at", "max"),
        order_count=("order_id", "count"),
        total_amount=("amount", "sum"),
    )
    summary = summary.join(
        recent.groupby("customer_id").agg(
            recent_orders=("order_id", "count"), recent_amount=("amount", "sum")
        )
    )
    customers = pd.read_csv(customers_csv, usecols=["customer_id"])
    out = customers.set_index("customer_id").join(summary)
    out[["order_count", "total_amount", "recent_orders", "recent_amount"]] = out[
        ["order_count", "total_amount", "recent_orders", "recent_amount"]
    ].fillna(0)
    out["recency_days"] = (as_of_ts - out["last_ordered_at"]).dt.days
    buyers = out["order_count"] > 0
    # ties get the same score: quintiles of the rank
    out.loc[buyers, "r_score"] = np.ceil(
        5 * out.loc[buyers, "recency_days"].rank(pct=True, ascending=False, method="max")
    )
    out.loc[buyers, "f_score"] = np.ceil(
        5 * out.loc[buyers, "order_count"].rank(pct=True, method="max")
    )
    out.loc[buyers, "m_score"] = np.ceil(
        5 * out.loc[buyers, "total_amount"].rank(pct=True, method="max")
    )
    out["tier"] = np.select(
        [
            (out["recent_orders"] >= 12) & (out["recent_amount"] >= 20000),
            (out["recent_orders"] >= 6) & (out["recent_amount"] >= 5000),
            (out["recent_orders"] >= 2) & (out["recent_amount"] >= 1000),
        ],
        ["diamond", "gold", "silver"],
        "basic",
    )
    out["value_tier"] = np.select(
        [
            out["recency_days"].isna() | (out["recency_days"] > 90),
            out["recent_amount"] >= 50000,
            out["recent_amount"] >= 10000,
        ],
        ["churned", "high", "mid"],
        "normal",
    )
    out["is_dormant_90d"] = out["recency_days"] > 90
    return out


if __name__ == "__main__":
    result = rfm(*sys.argv[1:4])
    result.to_parquet(sys.argv[4])
