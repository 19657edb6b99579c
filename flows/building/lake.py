"""The sources of the dbt project as Parquet files, for an engine that does not read the DuckDB
file (Spark, Databricks): one folder per schema and table under the lake folder
(`FOLLOWUP_LAKE`; object storage in production), registered as that engine's tables by the dbt
macro `register_lake_sources` before each build. DuckDB reads its own tables and needs none of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb


def _select(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> str:
    """A select of the table whose types every Parquet reader knows: JSON as text, DuckDB's
    unsigned 64-bit hashes as decimals (Spark reads no UINT64)."""
    columns = []
    for name, data_type in con.execute(
        "select column_name, data_type from duckdb_columns() "
        "where schema_name = ? and table_name = ? order by column_index",
        [schema, table],
    ).fetchall():
        quoted = f'"{name}"'
        if data_type == "JSON":
            columns.append(f"cast({quoted} as varchar) as {quoted}")
        elif data_type == "UBIGINT":
            columns.append(f"cast({quoted} as decimal(20, 0)) as {quoted}")
        else:
            columns.append(quoted)
    return f"select {', '.join(columns)} from {schema}.{table}"


def land_sources(db_path: Path, lake: Path, sources: list[tuple[str, str]]) -> dict[str, int]:
    """Write each (schema, table) of `sources` (the dbt project's, from its manifest: the tables
    `dbt_project/models/staging/*/_*__sources.yml` declare) from the DuckDB database to
    `lake/<schema>/<table>/`, replacing what was there. Returns the rows written per
    `schema.table`."""
    written: dict[str, int] = {}
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        for schema, table in sources:
            folder = lake / schema / table
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            select = _select(con, schema, table)
            target = str(folder / "part-0.parquet").replace("'", "''")
            con.execute(f"copy ({select}) to '{target}' (format parquet)")
            written[f"{schema}.{table}"] = con.execute(
                f"select count(*) from {schema}.{table}"
            ).fetchall()[0][0]
    finally:
        con.close()
    return written


def build_python_models(schema: str = "main") -> dict[str, int]:
    """The dbt Python models, for an engine whose dbt adapter cannot run them where dbt runs
    (dbt-spark submits Python models to Databricks clusters only): `ab_results` computed from
    the `ab_arms` the build just wrote, with the same function the model calls, and saved as a
    table beside it. Runs in the process of the dbt build, on its Spark session."""
    import pyarrow as pa
    from pyspark.sql import SparkSession

    from flows.analysis.abtest import ab_results

    spark = SparkSession.builder.getOrCreate()
    arms = spark.table(f"{schema}.ab_arms").toPandas()
    results = ab_results(arms)
    # NaN (a control's lift) becomes NULL, as dbt-duckdb stores the model's frame
    table = pa.Table.from_pandas(results, preserve_index=False)
    spark.createDataFrame(table).write.mode("overwrite").format("parquet").saveAsTable(
        f"{schema}.ab_results"
    )
    return {"ab_results": table.num_rows}
