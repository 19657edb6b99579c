from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb
import pytest

from flows.settings import Settings

AS_OF = dt.date(2026, 11, 23)


@pytest.fixture(autouse=True)
def _no_secrets_from_other_tests():
    """Each test starts with no registered secret (flows/secrets.py keeps them per process)."""
    from flows.secrets import forget_all

    forget_all()
    yield
    forget_all()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env().replace(
        db_path=tmp_path / "followup.duckdb",
        data_docs_dir=tmp_path / "data_docs",
        duckdb_threads=2,
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    folder.mkdir()
    return folder


def broken_raw_db(path: Path) -> Path:
    """A database whose raw.orders something other than the ingest wrote: its times are text,
    so the models cannot build."""
    con = duckdb.connect(str(path))
    con.execute("create schema raw")
    con.execute(
        "create table raw.orders as select 'O1' as order_id, 'C1' as customer_id, "
        "'next tuesday' as ordered_at"
    )
    con.close()
    return path


def query(db: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server for the whole session (it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclasses.dataclass(frozen=True)
class DemoRun:
    db: Path
    report_dir: Path
    output: str


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """`followup demo` as a new user runs it (the command, default size, 60 simulated days),
    once per session: the report, the notebooks and the demo's own tests read what it wrote."""
    import os
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("demo")
    db = root / "followup.duckdb"
    command = [
        str(Path(sys.executable).parent / "followup"),
        "demo",
        "--db",
        str(db),
        "--out",
        str(root / "report"),
        "--as-of",
        AS_OF.isoformat(),
    ]
    env = {
        **os.environ,
        "FOLLOWUP_OUTBOX": str(root / "outbox"),
        "FOLLOWUP_DATA_DOCS": str(root / "data_docs"),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        command, cwd=root, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return DemoRun(db=db, report_dir=root / "report", output=done.stdout)
