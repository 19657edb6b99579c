"""Stages that `benchmarks.run` times, each in its own process (`python -m benchmarks.stages`)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

ENTITIES = ("customers", "orders", "events")


def duckdb_read(source: Path, db: Path) -> None:
    """The reference: DuckDB's own `read_csv` of the same files into tables, nothing else."""
    import duckdb

    from flows.settings import Settings

    settings = Settings.from_env()
    con = duckdb.connect(str(db))
    con.execute(f"set memory_limit = '{settings.duckdb_memory_limit}'")
    con.execute(f"set threads = {settings.duckdb_threads}")
    for name in ENTITIES:
        con.execute(f"set variable {name}_csv = ?", [str(source / f"{name}.csv")])
    con.execute((Path(__file__).parent / "sql" / "duckdb_read.sql").read_text())
    con.close()


def ingest_core(source: Path, db: Path, as_of: str) -> None:
    """Our ingest without Prefect or Data Docs: read, type, validate, quarantine, upsert."""
    from flows.ingestion.load import ingest
    from flows.settings import Settings

    ingest(
        db,
        source,
        settings=Settings.from_env(),
        as_of=dt.date.fromisoformat(as_of),
        entities=ENTITIES,
    )


def generate(source: Path, customers: int, as_of: str) -> None:
    from flows.demo_company import generate_company

    generate_company(source, customers=customers, as_of=dt.date.fromisoformat(as_of), fmt="csv")


if __name__ == "__main__":
    stage, *args = sys.argv[1:]
    if stage == "duckdb_read":
        duckdb_read(Path(args[0]), Path(args[1]))
    elif stage == "ingest_core":
        ingest_core(Path(args[0]), Path(args[1]), args[2])
    elif stage == "generate":
        generate(Path(args[0]), int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown stage {stage!r}")
