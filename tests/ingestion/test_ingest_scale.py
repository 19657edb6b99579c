"""Line numbers stay exact on a file large enough for DuckDB to read in parallel."""

from __future__ import annotations

import json

import polars as pl

from flows.ingestion.load import ingest
from flows.rundate import RunDate
from tests.conftest import AS_OF, query

ROWS = 400_000
BAD_LINES = {7, 123_457, 250_001, 399_990}  # lines (header = 1) whose amount is negative


def test_line_numbers_of_rejected_rows_in_a_large_file(source, settings):
    pl.DataFrame({"customer_id": ["C1"]}).write_csv(source / "customers.csv")
    line = pl.col("line")
    pl.DataFrame({"line": pl.int_range(2, ROWS + 2, eager=True)}).select(
        order_id=pl.format("O{}", line),
        customer_id=pl.lit("C1"),
        ordered_at=pl.lit("2025-06-18 10:00:00"),
        amount=pl.when(line.is_in(list(BAD_LINES))).then(-1).otherwise(line),
    ).write_csv(source / "orders.csv")
    # A malformed record in the middle shifts nothing after it.
    text = (source / "orders.csv").read_text().splitlines()
    text.insert(200_000, "broken,record")
    (source / "orders.csv").write_text("\n".join(text) + "\n")
    bad_lines = {n if n <= 200_000 else n + 1 for n in BAD_LINES}

    run = RunDate.of(settings.business_tz, AS_OF)
    ingest(settings.db_path, source, settings=settings, run=run)

    rows = query(settings.db_path, "select line_number, raw from quarantine order by 1")
    assert [n for n, _ in rows] == sorted([*bad_lines, 200_001])
    for number, raw in rows:
        if number != 200_001:
            order_id = json.loads(raw)["order_id"]
            assert order_id == f"O{number if number <= 200_001 else number - 1}"
    # Every loaded row remembers its own line.
    mismatched = query(
        settings.db_path,
        "select count(*) from raw.orders where order_id <> 'O' || "
        "(case when _line_number > 200001 then _line_number - 1 else _line_number end)",
    )
    assert mismatched == [(0,)]
    assert query(settings.db_path, "select count(*) from raw.orders") == [(ROWS - len(BAD_LINES),)]
