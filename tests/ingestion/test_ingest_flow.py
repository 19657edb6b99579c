"""The `ingest` flow against a real (test) Prefect server, and the `followup` command around it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AS_OF, query

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = "客户ID,姓名,联系方式\nC1,张三,13812345678\nC2,李四,bad\n"
ORDERS = "订单号,客户ID,下单时间,金额\nO1,C1,2024-01-01 10:00,¥99\nO2,C1,2024-01-02 10:00,5\n"


@pytest.fixture
def company(source: Path) -> Path:
    (source / "customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    (source / "orders.csv").write_text(ORDERS, encoding="utf-8")
    return source


@pytest.mark.slow
def test_flow_loads_publishes_a_summary_and_data_docs(
    prefect_server, company, settings, monkeypatch
):
    from prefect.artifacts import Artifact

    from flows.ingest import ingest_flow

    monkeypatch.setenv("FOLLOWUP_DATA_DOCS", str(settings.data_docs_dir))
    report = ingest_flow(source=company, db=settings.db_path, as_of=AS_OF)
    assert [(x.entity, x.inserted, x.warnings) for x in report.loads] == [
        ("customers", 2, 1),
        ("orders", 2, 0),
    ]
    assert query(settings.db_path, "select count(*) from raw.orders") == [(2,)]
    artifact = Artifact.get("ingest-summary")
    assert artifact is not None
    assert "| customers | 2 | 2 | 0 | 0 | 0 | 1 |" in artifact.data
    index = settings.data_docs_dir / "index.html"
    assert index.is_file()
    assert "customers" in index.read_text(encoding="utf-8")


def _followup(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.mark.slow
def test_command_prints_one_line_error_and_writes_nothing(company, tmp_path):
    (company / "orders.csv").write_text("order_id,customer_id,amount\nO1,C1,1\n", encoding="utf-8")
    db = tmp_path / "cli.duckdb"
    result = _followup(
        "ingest", "--source", str(company), "--db", str(db), "--as-of", AS_OF.isoformat()
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (
        "error: orders.csv: missing required column ordered_at "
        "(found: order_id, customer_id, amount)"
    )
    if db.exists():
        assert query(db, "select count(*) from raw.customers") == [(0,)]
