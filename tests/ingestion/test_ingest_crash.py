"""A load killed with SIGKILL at any point leaves the database as it was; a re-run completes it
and clears the killed load's temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from flows.ingestion.load import work_dir_of
from tests.conftest import AS_OF, query

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 50_000
ORDERS = 600_000

INGEST = """
import datetime as dt, sys
from pathlib import Path
from flows.ingestion.load import ingest
from flows.rundate import RunDate
from flows.settings import Settings
settings = Settings.from_env()
ingest(Path(sys.argv[1]), Path(sys.argv[2]), settings=settings,
       run=RunDate.of(settings.business_tz, dt.date.fromisoformat(sys.argv[3])))
print("committed", flush=True)
"""


def _company(folder: Path) -> None:
    pl.DataFrame({"customer_id": [f"C{i}" for i in range(CUSTOMERS)]}).with_columns(
        name=pl.lit("张三"), phone=pl.lit("13812345678")
    ).write_csv(folder / "customers.csv")
    pl.DataFrame({"order_id": [f"O{i}" for i in range(ORDERS)]}).with_columns(
        customer_id=pl.format("C{}", pl.int_range(ORDERS) % CUSTOMERS),
        ordered_at=pl.lit("2025-06-18 10:00:00"),
        amount=pl.lit("¥1,299.00"),
    ).write_csv(folder / "orders.csv")


def _start(folder: Path, db: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", INGEST, str(db), str(folder), AS_OF.isoformat()],
        cwd=ROOT,
        env={**os.environ, "FOLLOWUP_DUCKDB_THREADS": "2"},
        stdout=subprocess.PIPE,
        text=True,
    )


def _counts(db: Path) -> tuple[int, int, int]:
    return query(
        db,
        "select (select count(*) from raw.customers), (select count(*) from raw.orders), "
        "(select count(distinct load_id) from load_log)",
    )[0]


@pytest.mark.slow
def test_kill_during_a_load_then_rerun(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    _company(folder)
    reference_db = tmp_path / "reference.duckdb"
    started = time.perf_counter()
    assert _start(folder, reference_db).wait() == 0
    duration = time.perf_counter() - started
    complete = _counts(reference_db)
    assert complete == (CUSTOMERS, ORDERS, 1)

    killed_mid_load = left_behind = 0
    for fraction in (0.35, 0.6, 0.8, 0.95):
        db = tmp_path / f"killed-{fraction}.duckdb"
        process = _start(folder, db)
        time.sleep(duration * fraction)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed_mid_load += 1
        process.wait()
        if db.exists():
            # All or nothing: the recovered database holds the whole load or none of it.
            assert _counts(db) in {complete, (0, 0, 0)}, fraction
        left_behind += work_dir_of(db).exists()
        loads_before = _counts(db)[2] if db.exists() else 0
        assert _start(folder, db).wait() == 0
        assert _counts(db) == (CUSTOMERS, ORDERS, loads_before + 1)
        # the killed load's temporary files went with the re-run
        assert not work_dir_of(db).exists()
    assert killed_mid_load >= 2, "the loads finished too fast to be killed in the middle"
    assert left_behind >= 1, "no kill left a load's temporary files to clear"
