"""Settings from the environment, with defaults that make the embedded DuckDB work untouched."""

from __future__ import annotations

import datetime as dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"

# Set before any tool is imported: every tool's telemetry off (no internet at run time), and
# room for Prefect's ephemeral server to start.
for _var, _value in {
    "DO_NOT_TRACK": "1",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # a command without a Prefect server starts an ephemeral one; on a busy 2-core machine that
    # has taken longer than Prefect's 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_var, _value)


# pyspark (the `spark` dependency group) warns about pandas 3 when a library merely imports it
# (Great Expectations looks for Spark); the DuckDB path never uses it.
warnings.filterwarnings(
    "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
)


@dataclass(frozen=True)
class Settings:
    db_path: Path
    business_tz: str
    max_bad_share: float
    duckdb_memory_limit: str
    duckdb_threads: int
    data_docs_dir: Path
    outbox_dir: Path
    # seconds a writing flow waits for another process writing the same database file
    db_lock_timeout: float = 1800.0
    # the engine the dbt project builds on: a target of dbt_project/profiles.yml (duckdb, spark)
    dbt_target: str = "duckdb"
    # where the sources land as Parquet for an engine that does not read the DuckDB file
    lake_dir: Path = Path("var/lake")
    # the local Spark's catalog and tables (the `spark` target's session method)
    spark_dir: Path = Path("var/spark")
    # the Prefect task runner dispatch fans its batches out on: local (threads) or dask
    task_runner: str = "local"
    # the Dask scheduler to use (`tcp://host:8786`); empty: a local cluster of dask_workers
    dask_address: str = ""
    dask_workers: int = 2

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            db_path=Path(os.environ.get("FOLLOWUP_DB", "var/followup.duckdb")),
            business_tz=os.environ.get("FOLLOWUP_TZ", "Asia/Shanghai"),
            max_bad_share=float(os.environ.get("FOLLOWUP_MAX_BAD_SHARE", "0.05")),
            duckdb_memory_limit=os.environ.get("FOLLOWUP_DUCKDB_MEMORY", "1536MB"),
            duckdb_threads=int(os.environ.get("FOLLOWUP_DUCKDB_THREADS", str(os.cpu_count() or 2))),
            data_docs_dir=Path(os.environ.get("FOLLOWUP_DATA_DOCS", "var/data_docs")),
            outbox_dir=Path(os.environ.get("FOLLOWUP_OUTBOX", "var/outbox")),
            db_lock_timeout=float(os.environ.get("FOLLOWUP_DB_LOCK_TIMEOUT", "1800")),
            dbt_target=os.environ.get("FOLLOWUP_DBT_TARGET", "duckdb"),
            lake_dir=Path(os.environ.get("FOLLOWUP_LAKE", "var/lake")),
            spark_dir=Path(os.environ.get("FOLLOWUP_SPARK_DIR", "var/spark")),
            task_runner=os.environ.get("FOLLOWUP_TASK_RUNNER", "local"),
            dask_address=os.environ.get("FOLLOWUP_DASK_ADDRESS", ""),
            dask_workers=int(os.environ.get("FOLLOWUP_DASK_WORKERS", "2")),
        )

    def today(self) -> dt.date:
        """The run date when a scheduled run gives none: today in the business timezone (the
        only place a flow reads the clock)."""
        from zoneinfo import ZoneInfo

        return dt.datetime.now(ZoneInfo(self.business_tz)).date()
