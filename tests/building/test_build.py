"""The dbt build on a generated company: the contract's tables, the lifetimes definition, the
as-of boundary, incremental facts, and the build flow's errors."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest
from lifetimes.utils import summary_data_from_transaction_data

from flows.build import build_flow
from flows.building.runner import BuildError, build, run_dbt
from flows.demo.company import generate_company
from flows.ingestion.load import ingest
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import AS_OF, broken_raw_db, query

pytestmark = pytest.mark.usefixtures("prefect_server")

TZ = "Asia/Shanghai"


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("build")
    return Settings.from_env().replace(
        db_path=root / "followup.duckdb",
        data_docs_dir=root / "data_docs",
        duckdb_threads=2,
    )


@pytest.fixture(scope="module")
def built(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 600-customer company ingested and built through the build flow as of AS_OF."""
    source = tmp_path_factory.mktemp("company")
    generate_company(source, as_of=AS_OF, customers=600, seed=5)
    run = RunDate.of(module_settings.business_tz, AS_OF)
    ingest(module_settings.db_path, source, settings=module_settings, run=run)
    report = build_flow(as_of=AS_OF, db=module_settings.db_path)
    assert report.counts["error"] == report.counts["fail"] == 0
    return module_settings.db_path


def _copy(db: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copy(db, target)
    return target


def test_build_fills_the_contract_tables(built: Path) -> None:
    customers = query(built, "select count(*) from raw.customers")[0][0]
    assert query(built, "select count(*) from customer_rfm")[0][0] == customers
    assert query(built, "select count(*) from customer_360")[0][0] == customers
    # every tier, value tier and most segments occur in a realistic company
    assert {r[0] for r in query(built, "select distinct tier from customer_rfm")} == {
        "diamond",
        "gold",
        "silver",
        "basic",
    }
    value_tiers = {r[0] for r in query(built, "select distinct value_tier from customer_rfm")}
    assert value_tiers == {"high", "mid", "normal", "churned"}
    segments = query(built, "select count(distinct rfm_segment) from customer_rfm")[0][0]
    assert segments >= 9
    tags = {r[0] for r in query(built, "select distinct tag from customer_tags")}
    assert {"new_buyer", "repeat_buyer", "dormant_90d", "high_value", "churn_warning"} <= tags
    stages = query(
        built,
        "select stage, leads_reached from sales_funnel where breakdown = 'all' "
        "order by stage_order",
    )
    assert [s for s, _ in stages] == ["lead_created", "needs_analysis", "proposal", "won"]
    reached = [n for _, n in stages]
    assert reached[0] > reached[1] > reached[2] > reached[3] > 0
    # every output timestamp is a TIMESTAMP WITH TIME ZONE
    naive = query(
        built,
        """
        select table_name, column_name from information_schema.columns
        where table_schema = 'main' and data_type = 'TIMESTAMP'
        """,
    )
    assert naive == []


def test_lifetimes_columns_match_the_lifetimes_package(built: Path) -> None:
    """frequency, recency, T and monetary_value as lifetimes computes them from the paid orders
    (order days in the business time zone, observation_period_end = as_of - 1 day)."""
    orders = pd.DataFrame(
        query(
            built,
            f"""
            select customer_id, timezone('{TZ}', ordered_at) as ordered_local, amount::double
            from raw.orders where coalesce(status, 'paid') = 'paid'
            """,
        ),
        columns=["customer_id", "ordered_local", "amount"],
    )
    expected = summary_data_from_transaction_data(
        orders,
        "customer_id",
        "ordered_local",
        monetary_value_col="amount",
        freq="D",
        observation_period_end=pd.Timestamp(AS_OF - dt.timedelta(days=1)),
    )
    ours = pd.DataFrame(
        query(
            built,
            """
            select customer_id, frequency, recency, "T", monetary_value
            from customer_rfm where frequency is not null
            """,
        ),
        columns=["customer_id", "frequency", "recency", "T", "monetary_value"],
    ).set_index("customer_id")
    assert len(expected) > 300
    assert sorted(ours.index) == sorted(expected.index)
    joined = expected.join(ours.add_suffix("_ours"))
    for column in ("frequency", "recency", "T", "monetary_value"):
        diff = (joined[column] - joined[f"{column}_ours"]).abs().max()
        assert diff < 1e-6, column


def test_equal_values_always_get_equal_scores(built: Path) -> None:
    for value, score in (
        ("order_count", "f_score"),
        ("total_amount", "m_score"),
        ("recency_days", "r_score"),
    ):
        split = query(
            built,
            f"""
            select {value} from customer_rfm where {score} is not null
            group by {value} having count(distinct {score}) > 1
            """,
        )
        assert split == [], value
        # scores rise with the value (recency: fall), so they are quintiles of one order
        inversions = query(
            built,
            f"""
            select count(*) from customer_rfm a join customer_rfm b
            on a.{value} < b.{value} and a.{score} {">" if score != "r_score" else "<"} b.{score}
            """,
        )
        assert inversions == [(0,)], value


def test_nothing_from_the_as_of_day_or_later_is_visible(built: Path, tmp_path: Path) -> None:
    db = _copy(built, tmp_path, "earlier.duckdb")
    earlier = AS_OF - dt.timedelta(days=30)
    settings = Settings.from_env().replace(duckdb_threads=2)
    run_dbt(["build"], db, RunDate.of(settings.business_tz, earlier), settings)
    start = f"timezone('{TZ}', timestamp '{earlier} 00:00')"
    assert query(db, f"select count(*) from customer_360 where last_paid_order_at >= {start}") == [
        (0,)
    ]
    assert query(db, f"select count(*) from customer_360 where last_interaction_at >= {start}") == [
        (0,)
    ]
    latest = query(db, "select max(last_order_date) from customer_360")[0][0]
    assert latest == earlier - dt.timedelta(days=1)
    assert query(db, "select count(*) from customer_tags where since > " + start) == [(0,)]
    # the history now holds both run dates, and the changes between them are listed
    dates = query(db, "select distinct as_of_date from customer_tier_history order by 1")
    assert [d for (d,) in dates] == [earlier, AS_OF]


def test_rebuilding_the_same_date_gives_the_same_tables(built: Path, tmp_path: Path) -> None:
    db = _copy(built, tmp_path, "again.duckdb")
    settings = Settings.from_env().replace(duckdb_threads=2)
    run_dbt(["build"], db, RunDate.of(settings.business_tz, AS_OF), settings)
    for table in ("customer_rfm", "customer_tags", "sales_funnel", "customer_tier_history"):
        before = query(built, f"select * from {table} order by all")
        after = query(db, f"select * from {table} order by all")
        assert before == after, table


def test_one_new_day_incremental_equals_a_full_refresh(built: Path, tmp_path: Path) -> None:
    db = _copy(built, tmp_path, "incremental.duckdb")
    settings = Settings.from_env().replace(
        db_path=db, data_docs_dir=tmp_path / "docs", duckdb_threads=2
    )
    customer, first = query(db, "select customer_id, min(order_id) from raw.orders group by 1")[0]
    new_day = tmp_path / "new_day"
    new_day.mkdir()
    (new_day / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status,product_category\n"
        f"N1,{customer},2026-11-23 10:00:00,60000,paid,数码\n"
        f"{first},{customer},2023-12-01 09:00:00,1.00,refunded,数码\n",
        encoding="utf-8",
    )
    next_day = RunDate.of(settings.business_tz, AS_OF + dt.timedelta(days=1))
    ingest(db, new_day, settings=settings, run=next_day, entities=("orders",))
    run_dbt(["build"], db, next_day, settings)
    assert query(db, "select amount, order_status from fct_orders where order_id = ?", [first]) == [
        (1, "refunded")
    ]
    assert query(db, "select value_tier from customer_rfm where customer_id = ?", [customer]) == [
        ("high",)
    ]

    full = _copy(db, tmp_path, "full.duckdb")
    run_dbt(["build", "--full-refresh"], full, next_day, settings)
    for table in ("fct_orders", "fct_events", "customer_rfm", "customer_tags"):
        incremental = query(db, f"select * from {table} order by all")
        assert incremental == query(full, f"select * from {table} order by all"), table


def test_a_failing_model_is_one_line_naming_it(tmp_path: Path) -> None:
    broken = broken_raw_db(tmp_path / "broken.duckdb")
    with pytest.raises(BuildError) as caught:
        settings = Settings.from_env()
        build(broken, RunDate.of(settings.business_tz, AS_OF), settings)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dbt: model stg_raw__orders error: ")
