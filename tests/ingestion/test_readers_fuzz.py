"""The readers under random input (issue "Hostile input"): random bytes, random headers, random
cell text. No input raises anything but the one-line `IngestError`, and every data row of a file
that loads is either in the table or in the quarantine."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from flows.ingestion.load import IngestError, ingest
from flows.rundate import RunDate
from flows.settings import Settings
from tests.conftest import AS_OF

HEADERS = ["customer_id", "客户ID", "name", "姓名", "phone", "手机号", "email", "created_at", ""]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=30)
CELL = st.one_of(
    TEXT,
    st.sampled_from(["=1+1", "[/]", "{{ 7*7 }}", "'; drop table x; --", "\x00", "13812345678"]),
)
FUZZ = hypothesis_settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load(text: bytes | None = None, rows: list[list[str]] | None = None):
    """(report or None, the one-line error or None) of loading customers.csv alone."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        source = folder / "source"
        source.mkdir()
        if rows is not None:
            buffer = io.StringIO()
            csv.writer(buffer).writerows(rows)
            text = buffer.getvalue().encode("utf-8")
        (source / "customers.csv").write_bytes(text or b"")
        settings = Settings.from_env().replace(
            db_path=folder / "fuzz.duckdb", data_docs_dir=folder / "docs", max_bad_share=1.0
        )
        run = RunDate.of(settings.business_tz, AS_OF)
        try:
            report = ingest(
                settings.db_path, source, settings=settings, run=run, entities=("customers",)
            )
        except IngestError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 1000
            return None, str(exc)
        con = duckdb.connect(str(settings.db_path), read_only=True)
        try:
            loaded = con.execute("select count(*) from raw.customers").fetchall()[0][0]
            quarantined = con.execute(
                "select count(*) from quarantine where severity = 'error'"
            ).fetchall()[0][0]
        finally:
            con.close()
        return (report, loaded, quarantined), None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_are_loaded_or_one_line(data: bytes) -> None:
    _load(text=data)


@pytest.mark.slow
@FUZZ
@given(
    st.lists(st.sampled_from(HEADERS) | TEXT, min_size=1, max_size=6, unique=True),
    st.lists(st.lists(CELL, min_size=0, max_size=7), max_size=6),
)
def test_random_headers_and_cells_every_row_loaded_or_quarantined(
    headers: list[str], rows: list[list[str]]
) -> None:
    loaded, error = _load(rows=[headers, *rows])
    if error is not None:
        return
    report, in_table, in_quarantine = loaded
    (load,) = report.loads
    assert load.rows_read == load.inserted + load.updated + load.unchanged + load.errors
    assert in_table == load.inserted and in_quarantine == load.errors
