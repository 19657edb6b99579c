"""The same dbt project on Apache Spark (`make test-spark`): a small generated company with a
simulated month of follow-ups and feedback, built on DuckDB and then, from the same sources
landed as Parquet, on a local Spark (dbt-spark's session method); the marts users read must be
the same row for row.

Compared: timestamps as instants (UTC), floating values within a relative 1e-9, rows in any
order. Not compared: `customer_tier_history` and `tier_changes` keep one slice per run date,
and the DuckDB file holds the demo's month-ago run besides today's."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import math
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from flows.building.runner import build
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import AS_OF

pytestmark = [pytest.mark.spark, pytest.mark.slow]

MARTS = (
    "customer_360",
    "customer_rfm",
    "customer_tags",
    "followups_due",
    "campaign_performance",
    "ab_results",
)


@dataclasses.dataclass(frozen=True)
class Built:
    db: Path
    spark_nodes: list


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`followup demo` for 1,000 customers and 30 simulated days (sources: raw tables, ledger,
    feedback, playbooks), rebuilt on DuckDB as of AS_OF, then built on Spark from its lake."""
    root = tmp_path_factory.mktemp("spark")
    db = root / "followup.duckdb"
    env = {
        **os.environ,
        "FOLLOWUP_OUTBOX": str(root / "outbox"),
        "FOLLOWUP_DATA_DOCS": str(root / "data_docs"),
        "COLUMNS": "200",
    }
    command = [
        str(Path(sys.executable).parent / "followup"),
        "demo",
        *("--customers", "1000", "--days", "30", "--as-of", AS_OF.isoformat()),
        # the seed the comparison was measured with (docs/scale-out.md)
        *("--seed", "3"),
        *("--db", str(db), "--out", str(root / "report")),
    ]
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    duck = Settings.from_env().replace(
        db_path=db, data_docs_dir=root / "data_docs", duckdb_threads=2
    )
    run = RunDate.of(duck.business_tz, AS_OF)
    build(db, run, duck)
    spark = duck.replace(dbt_target="spark", lake_dir=root / "lake", spark_dir=root / "spark")
    nodes = build(db, run, spark, every_test=True)
    return Built(db=db, spark_nodes=nodes)


def _value(value):
    """One cell as a comparable Python value: instants in UTC, decimals as floats."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # Spark's session time zone is UTC
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _sort_key(row: tuple) -> tuple:
    # floats rounded so a last-digit difference cannot reorder rows; None first
    return tuple(
        (0, "") if v is None else (1, round(v, 6) if isinstance(v, float) else str(v)) for v in row
    )


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _duckdb_rows(db: Path, table: str) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        cursor = con.execute(f"select * from main.{table}")
        columns = [c[0] for c in cursor.description]
        return columns, [tuple(_value(v) for v in row) for row in cursor.fetchall()]
    finally:
        con.close()


def _spark_rows(table: str, columns: list[str]) -> list[tuple]:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    frame = spark.table(f"main.{table}")
    assert sorted(frame.columns) == sorted(columns), table
    # timestamps as text in the session's zone (UTC): collect() would use the machine's zone
    selected = [
        f"cast(`{name}` as string) as `{name}`" if kind == "timestamp" else f"`{name}`"
        for name, kind in frame.dtypes
        if name in columns
    ]
    kinds = dict(frame.dtypes)
    rows = frame.selectExpr(*selected).select(*columns).collect()
    out = []
    for row in rows:
        values = []
        for name, v in zip(columns, row, strict=True):
            if kinds[name] == "timestamp" and v is not None:
                v = dt.datetime.fromisoformat(v).replace(tzinfo=dt.UTC)
            values.append(_value(v))
        out.append(tuple(values))
    return out


def _differences(columns: list[str], duck: list[tuple], spark: list[tuple]) -> list[str]:
    if len(duck) != len(spark):
        return [f"{len(duck)} rows on DuckDB, {len(spark)} on Spark"]
    found = []
    for left, right in zip(sorted(duck, key=_sort_key), sorted(spark, key=_sort_key), strict=True):
        for name, a, b in zip(columns, left, right, strict=True):
            if not _same(a, b):
                row = dict(zip(columns, left, strict=True))
                found.append(f"{name}: duckdb {a!r} spark {b!r} in {row}")
                break
        if len(found) >= 5:
            break
    return found


def test_spark_builds_every_model_and_test(built: Built) -> None:
    failed = [(n.name, n.status) for n in built.spark_nodes if n.status not in ("success", "pass")]
    assert failed == []
    kinds = {n.resource_type for n in built.spark_nodes}
    assert {"model", "test", "seed", "unit_test"} <= kinds


@pytest.mark.parametrize("mart", MARTS)
def test_the_mart_is_the_same_on_spark_and_duckdb(built: Built, mart: str) -> None:
    columns, duck = _duckdb_rows(built.db, mart)
    if mart == "followups_due":  # the DuckDB file also keeps the month-ago run's due list
        at = columns.index("as_of_date")
        duck = [row for row in duck if row[at] == AS_OF]
    assert duck, f"{mart} is empty: the comparison would prove nothing"
    spark = _spark_rows(mart, columns)
    assert _differences(columns, duck, spark) == []
