"""The marts marketing reads beside the campaign tables (issue 25 item 5): channel_health,
channel_health_weekly, period_comparison, rfm_segment_summary and tier_migration, on the demo's
database rebuilt a week later with no new data (one dbt build for the module). Each is checked
against followup_kpis, against the demo's own build a week earlier, or against the same figures
computed here from the rows beneath (message_outcomes, customer_rfm, customer_tier_history)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from flows.building.runner import build
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import AS_OF

pytestmark = pytest.mark.slow

TZ = "Asia/Shanghai"
LATER = AS_OF + dt.timedelta(days=7)
MESSAGE_METRICS = ("response_rate", "opt_out_rate", "delivery_failure_rate")


@pytest.fixture(scope="module")
def rebuilt(demo_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's database (built as of AS_OF) built again a week later, nothing new loaded."""
    root = tmp_path_factory.mktemp("marketing")
    db = Path(shutil.copy(demo_run.db, root / "demo.duckdb"))
    settings = Settings.from_env().replace(db_path=db, data_docs_dir=root / "docs")
    nodes = build(db, RunDate.of(TZ, LATER), settings)
    failed = [n.name for n in nodes if n.status in ("error", "fail", "runtime error")]
    assert failed == []
    assert {"period_comparison", "tier_migration"} <= {n.name for n in nodes}
    return db


def frame(db: Path, sql: str) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def kpis(db: Path) -> dict[str, tuple[float, float]]:
    rows = frame(db, "select metric, numerator, denominator from followup_kpis")
    return {r.metric: (r.numerator, r.denominator) for r in rows.itertuples()}


def test_channel_health_sums_to_the_headline_figures(rebuilt: Path) -> None:
    health = frame(rebuilt, "select * from channel_health").set_index("channel")
    kpi = kpis(rebuilt)
    receipts = health.drop(index=[c for c in ("call", "visit") if c in health.index])
    assert receipts["delivery_failures"].sum() > 0
    assert (receipts["delivery_failures"].sum(), receipts["closed"].sum()) == kpi[
        "delivery_failure_rate"
    ]
    assert (health["opted_out"].sum(), health["delivered"].sum()) == kpi["opt_out_rate"]
    assert health["still_open"].sum() == kpi["still_open"][0]
    sent = frame(rebuilt, "select count(*) as n from message_outcomes where status = 'sent'")
    assert health["sent"].sum() == sent["n"][0]
    # a call has no delivery receipt: no failure rate, however many went unanswered
    for channel in {"call", "visit"} & set(health.index):
        assert pd.isna(health.loc[channel, "delivery_failure_rate"])
    rate = receipts["delivery_failures"] / receipts["closed"]
    pd.testing.assert_series_equal(
        receipts["delivery_failure_rate"].astype(float), rate.astype(float), check_names=False
    )


def test_the_weeks_of_channel_health_add_up_to_it(rebuilt: Path) -> None:
    health = frame(rebuilt, "select * from channel_health").set_index("channel").sort_index()
    weekly = frame(rebuilt, "select * from channel_health_weekly")
    assert (pd.to_datetime(weekly["week_start"]).dt.day_of_week == 0).all()  # Mondays
    counts = ["sent", "send_failed", "still_open", "closed", "delivered", "opted_out"]
    summed = weekly.groupby("channel")[counts].sum().sort_index()
    pd.testing.assert_frame_equal(summed, health[counts], check_dtype=False)


def _periods_from_outcomes(db: Path) -> pd.DataFrame:
    """period_comparison's figures from message_outcomes, in pandas, from the definitions in
    docs/analysis.md (not from the model's SQL)."""
    sent = frame(db, "select * from message_outcomes where status = 'sent'")
    day = pd.to_datetime(sent["sent_at"], utc=True).dt.tz_convert(TZ).dt.tz_localize(None)
    day = day.dt.normalize()
    sent["contact"] = sent["customer_id"] + "|" + sent["step"]
    closed = sent["is_response_window_closed"]
    receipts = closed & ~sent["channel"].isin(["call", "visit"])
    rows = []
    starts = {
        "week": day - pd.to_timedelta(day.dt.day_of_week, unit="D"),
        "month": day.dt.to_period("M").dt.start_time,
    }
    for kind, start in starts.items():
        for period, group in sent.groupby(start):
            c, r = closed[group.index], receipts[group.index]
            delivered = (c & group["is_delivered"]).sum()
            attributed = group[group["is_window_closed"]]
            figures = {
                "response_rate": ((c & group["is_responded"]).sum(), delivered),
                "opt_out_rate": ((c & group["is_opted_out"]).sum(), delivered),
                "delivery_failure_rate": ((r & ~group["is_delivered"]).sum(), r.sum()),
                "conversion_rate": (
                    attributed.loc[attributed["ordered_in_window"], "contact"].nunique(),
                    attributed["contact"].nunique(),
                ),
            }
            for metric, (numerator, denominator) in figures.items():
                rows.append((kind, period.date(), metric, int(numerator), int(denominator)))
    return pd.DataFrame(
        rows, columns=["period_kind", "period_start", "metric", "numerator", "denominator"]
    )


def test_period_comparison_counts_the_periods_sends(rebuilt: Path) -> None:
    model = frame(rebuilt, "select * from period_comparison")
    model["period_start"] = pd.to_datetime(model["period_start"]).dt.date
    keys = ["period_kind", "period_start", "metric"]
    expected = _periods_from_outcomes(rebuilt).sort_values(keys).reset_index(drop=True)
    got = model[[*keys, "numerator", "denominator"]].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert len(model[model["period_kind"] == "week"]["period_start"].unique()) >= 4

    # the messages' rates: the periods' samples add up to the headline's
    kpi = kpis(rebuilt)
    for kind in ("week", "month"):
        for metric in MESSAGE_METRICS:
            rows = model[(model["period_kind"] == kind) & (model["metric"] == metric)]
            assert (rows["numerator"].sum(), rows["denominator"].sum()) == kpi[metric], metric
        # a customer and step sent messages in two periods counts in each
        rows = model[(model["period_kind"] == kind) & (model["metric"] == "conversion_rate")]
        assert rows["denominator"].sum() >= kpi["conversion_rate"][1]


def test_period_comparison_sets_each_period_beside_the_one_before(rebuilt: Path) -> None:
    model = frame(rebuilt, "select * from period_comparison")
    for col in ("period_start", "period_end", "previous_period_start"):
        model[col] = pd.to_datetime(model[col])
    by_key = model.set_index(["period_kind", "metric", "period_start"])
    compared = 0
    for row in model.itertuples():
        step = pd.DateOffset(weeks=1) if row.period_kind == "week" else pd.DateOffset(months=1)
        assert row.previous_period_start == row.period_start - step
        assert row.period_end == row.period_start + step - pd.Timedelta(days=1)
        assert row.is_complete == (row.period_end.date() < LATER)
        key = (row.period_kind, row.metric, row.previous_period_start)
        if key not in by_key.index:  # nothing sent in the period before
            assert pd.isna(row.previous_value) and pd.isna(row.change)
            continue
        before = by_key.loc[key]
        assert row.previous_numerator == before["numerator"]
        assert row.previous_denominator == before["denominator"]
        if pd.notna(row.value) and pd.notna(before["value"]):
            assert row.change == pytest.approx(row.value - before["value"])
            compared += 1
    assert compared > 0


def test_a_periods_figures_do_not_move_a_week_later_with_no_new_data(demo_run, rebuilt: Path):
    """Rebuilt a week later with no new feedback or orders, no figure moves. The demo sent the
    day's messages after its build: they come in now, still open, in no figure."""
    keys = ["period_kind", "period_start", "metric"]
    sql = "select * from period_comparison order by period_kind, period_start, metric"
    before, after = frame(demo_run.db, sql), frame(rebuilt, sql)
    assert before["still_open"].sum() > 0  # there were open windows a week could have closed
    both = before.merge(after, on=keys, how="right", suffixes=("_before", ""), indicator=True)
    for column in ("value", "numerator", "denominator"):
        pd.testing.assert_series_equal(
            both.loc[both["_merge"] == "both", column],
            both.loc[both["_merge"] == "both", f"{column}_before"],
            check_names=False,
            check_dtype=False,  # the merge leaves the earlier build's counts as floats
        )
    new = both[both["_merge"] == "right_only"]
    assert (pd.to_datetime(new["period_start"]).dt.date >= AS_OF - dt.timedelta(days=7)).all()
    assert (new["denominator"] == 0).all() and (new["still_open"] > 0).all()


def test_rfm_segment_summary_counts_customer_rfm(rebuilt: Path) -> None:
    rfm = frame(rebuilt, "select * from customer_rfm")
    rfm["rfm_segment"] = rfm["rfm_segment"].fillna("(no order)")
    summary = frame(rebuilt, "select * from rfm_segment_summary")
    for dimension in ("rfm_segment", "tier", "value_tier"):
        rows = summary[summary["dimension"] == dimension].set_index("value").sort_index()
        groups = rfm.groupby(dimension)
        assert rows["customers"].to_dict() == groups.size().to_dict()
        assert rows["share"].sum() == pytest.approx(1.0)
        assert rows["orders_6m"].to_dict() == pytest.approx(groups["orders_6m"].sum().to_dict())
        assert rows["avg_total_amount"].to_dict() == pytest.approx(
            groups["total_amount"].mean().to_dict()
        )


def _moves(history: pd.DataFrame, earlier: dt.date, later: dt.date, dimension: str) -> dict:
    to = history[history["as_of_date"] == later].set_index("customer_id")[dimension]
    start = history[history["as_of_date"] == earlier].set_index("customer_id")[dimension]
    pairs = pd.DataFrame({"to_value": to, "from_value": start.reindex(to.index)})
    known = to.index.isin(start.index)
    pairs.loc[~known, "from_value"] = "(new)"
    return pairs.value_counts(["from_value", "to_value"]).to_dict()


def test_tier_migration_is_the_matrix_between_two_run_dates(rebuilt: Path) -> None:
    history = frame(rebuilt, "select * from customer_tier_history")
    history["as_of_date"] = pd.to_datetime(history["as_of_date"]).dt.date
    history["rfm_segment"] = history["rfm_segment"].fillna("(no order)")
    migration = frame(rebuilt, "select * from tier_migration")
    customers = frame(rebuilt, "select count(*) as n from customer_rfm")["n"][0]
    # run dates: the demo's month-ago run, AS_OF, LATER: a week back and a month back from
    # LATER, the earliest run within the span is AS_OF
    assert sorted(migration["period_kind"].unique()) == ["month", "week"]
    for kind, rows in migration.groupby("period_kind"):
        assert set(pd.to_datetime(rows["from_as_of_date"]).dt.date) == {AS_OF}, kind
        assert set(pd.to_datetime(rows["to_as_of_date"]).dt.date) == {LATER}, kind
        for dimension, cells in rows.groupby("dimension"):
            assert cells["customers"].sum() == customers, (kind, dimension)
            got = {(r.from_value, r.to_value): r.customers for r in cells.itertuples()}
            assert got == _moves(history, AS_OF, LATER, dimension), (kind, dimension)
            shares = cells.groupby("from_value")["share_of_from"].sum()
            assert shares.to_numpy() == pytest.approx([1.0] * len(shares))
    tiers = migration[migration["dimension"] == "tier"]
    up = tiers[(tiers["from_value"] == "silver") & (tiers["to_value"] == "gold")]
    assert set(up["direction"]) <= {"upgrade"}
    assert set(tiers.loc[tiers["from_value"] == tiers["to_value"], "direction"]) == {"same"}


def test_tier_migration_spans_no_more_than_its_name(demo_run) -> None:
    """As of AS_OF the demo holds a run 28 days earlier: within a month, not within a week."""
    migration = frame(demo_run.db, "select * from tier_migration")
    assert set(migration["period_kind"]) == {"month"}
    [earlier] = set(pd.to_datetime(migration["from_as_of_date"]).dt.date)
    assert AS_OF - dt.timedelta(days=31) <= earlier < AS_OF - dt.timedelta(days=7)
