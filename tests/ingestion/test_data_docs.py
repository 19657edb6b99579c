"""Data Docs: our SQL engine's counts as GX validation results, rendered by GX's own renderers.

Importing Great Expectations takes seconds, so every test that renders or validates is `slow`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from flows.ingestion.data_docs import validation_result, write_data_docs
from flows.ingestion.entities import Entity, Expectation, load_entity
from flows.ingestion.load import EntityLoad
from flows.ingestion.readers import SourceTable
from flows.ingestion.validate import CheckParams, CheckResult, ExpectationOutcome
from tests.chromium import offline_dom, visible_text
from tests.conftest import AS_OF

ROOT = Path(__file__).resolve().parents[2]
PARAMS = CheckParams(
    as_of_date=AS_OF,
    future_cutoff=dt.datetime(2026, 11, 24, tzinfo=dt.UTC),
    business_tz="Asia/Shanghai",
)
RUN_TIME = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)
NOT_NULL = "expect_column_values_to_not_be_null"
UNIQUE = "expect_column_values_to_be_unique"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
OF_TYPE = "expect_column_values_to_be_of_type"


def _expectation(entity: Entity, kind: str, column: str) -> Expectation:
    return next(e for e in entity.expectations if e.type == kind and e.column == column)


def _check(
    counts: dict[tuple[str, str], tuple[int, int, list[Any]]],
    *,
    entity: Entity | None = None,
    element_count: int = 10,
    path: str = "orders.csv",
) -> CheckResult:
    """A CheckResult as the SQL engine builds it: one outcome per row expectation, with
    `(unexpected, missing, partial unexpected)` from `counts` (keyed by type and column)."""
    entity = entity or load_entity("orders")
    outcomes = []
    for e in entity.row_expectations:
        unexpected, missing, partial = counts.get((e.type, e.column), (0, 0, []))
        outcomes.append(ExpectationOutcome(e, "'reason sql'", unexpected, missing, partial))
    source = SourceTable(
        entity=entity.name,
        path=Path("/incoming") / path,
        table=f"src_{entity.name}",
        headers=[],
        columns={},
        extras={},
        rows=element_count,
    )
    return CheckResult(
        entity, source, f"src_{entity.name}_checked", element_count, outcomes, PARAMS
    )


ORDERS_COUNTS = {
    (BETWEEN, "amount"): (3, 1, ["-5", "-7.5", "-5"]),
    (IN_SET, "customer_id"): (1, 0, ["C404"]),
    # 2 unreadable timestamps and 1 empty cell: the engine counts only the empty one as missing.
    (OF_TYPE, "ordered_at"): (2, 1, ["2024-13-45", "昨天"]),
}


def test_rejected_contact_data_is_shown_masked():
    customers = load_entity("customers")
    regex = "expect_column_values_to_match_regex"
    counts = {
        (regex, "phone"): (2, 0, ["1381234567", "12"]),
        (regex, "email"): (1, 0, ["zhang.san@example"]),
    }
    result = validation_result(
        _check(counts, entity=customers, path="customers.csv"), run_name="n", run_time=RUN_TIME
    )
    assert _result_for(result, regex, "phone").result["partial_unexpected_list"] == [
        "138****67",
        "****",
    ]
    assert _result_for(result, regex, "email").result["partial_unexpected_list"] == ["zha****le"]


def _result_for(result, kind: str, column: str) -> Any:
    return next(
        r
        for r in result.results
        if r.expectation_config.type == kind and r.expectation_config.kwargs["column"] == column
    )


def test_module_imports_without_great_expectations(tmp_path):
    # a script, not `python -c`: under -c, pyspark (which GX looks for) takes the process for a
    # doctest run and exits it with 0 when GX is imported, so the check could never fail
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, flows.ingestion.data_docs\n"
        "assert 'great_expectations' not in sys.modules, 'GX imported eagerly'\n"
        "print('checked')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr[-2000:]


@pytest.mark.slow
def test_validation_result_statistics_and_results_match_the_counts():
    check = _check(ORDERS_COUNTS)
    result = validation_result(check, run_name="nightly", run_time=RUN_TIME)

    # 4 column-exists + 12 row expectations; 3 of the row expectations found unexpected rows.
    assert result.statistics == {
        "evaluated_expectations": 16,
        "successful_expectations": 13,
        "unsuccessful_expectations": 3,
        "success_percent": pytest.approx(81.25),
    }
    assert result.success is False
    assert result.suite_name == "orders"
    exists = [r for r in result.results if r.expectation_config.type == "expect_column_to_exist"]
    assert len(exists) == 4
    assert all(r.success for r in exists)

    between = _result_for(result, BETWEEN, "amount")
    assert between.success is False
    assert between.result == {
        "element_count": 10,
        "unexpected_count": 3,
        "unexpected_percent": pytest.approx(100 * 3 / 9),  # of the 9 non-missing rows, as GX
        "unexpected_percent_total": pytest.approx(30.0),
        "unexpected_percent_nonmissing": pytest.approx(100 * 3 / 9),
        "missing_count": 1,
        "missing_percent": pytest.approx(10.0),
        "partial_unexpected_list": ["-5", "-7.5", "-5"],
        "partial_unexpected_counts": [{"value": "-5", "count": 2}, {"value": "-7.5", "count": 1}],
    }
    # A value that fails to type is present, of the wrong type, as for GX.
    of_type = _result_for(result, OF_TYPE, "ordered_at").result
    assert (of_type["missing_count"], of_type["unexpected_percent"]) == (1, pytest.approx(200 / 9))
    # GX's not-null result has no missing share: the nulls are the unexpected values.
    not_null = _result_for(result, NOT_NULL, "amount")
    assert not_null.success is True
    assert "missing_count" not in not_null.result
    assert not_null.result["unexpected_percent"] == 0

    # Parameters: a date is resolved for GX; the foreign key keeps its reference.
    cutoff = _result_for(result, BETWEEN, "ordered_at").expectation_config
    assert cutoff.kwargs["max_value"] == PARAMS.future_cutoff.isoformat()
    foreign_key = _result_for(result, IN_SET, "customer_id").expectation_config
    assert foreign_key.kwargs["value_set"] == {"$PARAMETER": "customers.customer_id"}
    assert foreign_key.meta["severity"] == "error"
    assert result.suite_parameters == {
        "future_cutoff": PARAMS.future_cutoff.isoformat(),
        "earliest_date": PARAMS.earliest_date.isoformat(),
    }

    assert result.meta["run_id"] == {"run_name": "nightly", "run_time": RUN_TIME.isoformat()}
    assert result.meta["followup"]["source"] == "/incoming/orders.csv"
    assert result.meta["followup"]["entity"] == "orders"
    assert result.to_json_dict()["statistics"]["unsuccessful_expectations"] == 3


def _text(page: Path) -> str:
    body = page.read_text(encoding="utf-8")
    body = re.sub(r"<script.*?</script>", " ", body, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def _local_links(page: Path) -> list[str]:
    links = re.findall(r'(?:href|src)="([^"#?]+)', page.read_text(encoding="utf-8"))
    return [link for link in links if not link.startswith(("http:", "https:"))]


@pytest.mark.slow
def test_pages_show_failures_and_the_index_lists_every_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything GX wrote to the working directory would show up here
    site = tmp_path / "site"
    first = write_data_docs(
        [_check(ORDERS_COUNTS)],
        site,
        run_name="20261123T093000Z",
        run_time=RUN_TIME,
        loads=[QUARANTINED],
    )
    later = RUN_TIME + dt.timedelta(days=1)
    index = write_data_docs(
        [_check({}, path="订单.csv")], site, run_name="20261124T093000Z-failed", run_time=later
    )
    assert first == index == site / "index.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]

    pages = sorted((site / "validations" / "orders").glob("*/*/*.html"))
    assert [p.relative_to(site / "validations" / "orders").parts[0] for p in pages] == [
        "20261123T093000Z",
        "20261124T093000Z-failed",
    ]
    page = pages[0]
    text = _text(page)
    # bad rows were quarantined by design: the load passed, and says how many rows went where
    assert (
        "Status: Passed with warnings (4 rows quarantined, 1 loaded with a field cleared; "
        "each row's reasons are in the quarantine table)" in text
    )
    assert "Failed" not in text.replace("Failed Only", "")  # GX's filter button says it
    assert "3 unexpected values found" in text
    assert "-7.5" in text and "C404" in text and "昨天" in text
    assert "customer_id values must be a customer_id found in customers" in text
    assert (
        "values must be greater than or equal to 2000-01-01 and less than or equal to "
        "2026-11-24T00:00:00+00:00" in text
    )
    assert "Unsuccessful Expectations 3" in text
    assert "Status: Succeeded" in _text(pages[1])

    index_text = _text(index)
    newer, older = index_text.index("20261124T093000Z-failed"), index_text.index("20261123T093000Z")
    assert newer < older  # newest first
    assert "Succeeded" in index_text and "Passed with warnings (4 rows quarantined" in index_text
    assert "/incoming/订单.csv" in index_text and "/incoming/orders.csv" in index_text
    for html_page in (index, *pages, site / "expectations" / "orders.html"):
        for link in _local_links(html_page):
            target = html_page.parent / unquote(link)
            assert target.resolve().is_file(), f"{html_page.name}: broken link {link}"
    assert (site / "static" / "images" / "favicon.ico").is_file()


QUARANTINED = EntityLoad(
    "orders", "/incoming/orders.csv", "utf-8", rows_read=10, inserted=6, errors=4, warnings=1
)
STOPPED = "订单.csv: 40 of 200 rows rejected (20.0%, limit 5% and 10 rows); commonest: x (40)"


@pytest.mark.slow
def test_a_load_that_stopped_is_failed_and_one_that_quarantined_is_not(tmp_path):
    site = tmp_path / "site"
    write_data_docs(
        [_check(ORDERS_COUNTS)], site, run_name="ok", run_time=RUN_TIME, loads=[QUARANTINED]
    )
    # the same bad rows, in a file the bad-rows limits refused: nothing was loaded
    index = write_data_docs(
        [_check(ORDERS_COUNTS, path="订单.csv")],
        site,
        run_name="stopped-failed",
        run_time=RUN_TIME + dt.timedelta(hours=1),
        stopped=STOPPED,
    )
    refused = next((site / "validations" / "orders" / "stopped-failed").glob("*/*.html"))
    said = f"Failed (the load stopped, nothing was loaded: {STOPPED})"
    assert f"Status: {said}" in _text(refused)
    assert said in _text(index)
    result = json.loads(refused.with_suffix(".json").read_text(encoding="utf-8"))
    assert result["success"] is False  # GX's own verdict is kept as GX computes it
    assert result["meta"]["followup"]["load"] == {"status": "failed", "stopped": STOPPED}
    passed = next((site / "validations" / "orders" / "ok").glob("*/*.json"))
    passed_result = json.loads(passed.read_text(encoding="utf-8"))
    assert passed_result["success"] is False
    assert passed_result["meta"]["followup"]["load"] == {
        "status": "passed_with_warnings",
        "quarantined_rows": 4,
        "cleared_rows": 1,
    }


@pytest.mark.slow
def test_the_pages_read_in_chromium_with_no_network_and_ask_for_nothing(tmp_path):
    site = tmp_path / "site"
    index = write_data_docs(
        [_check(ORDERS_COUNTS)], site, run_name="offline", run_time=RUN_TIME, loads=[QUARANTINED]
    )
    page = next((site / "validations" / "orders").glob("*/*/*.html"))
    for html_page in (index, page, site / "expectations" / "orders.html"):
        assert not re.search(r'<(script|link|img)[^>]*\s(src|href)="https?:', _raw(html_page))

    visit = offline_dom(page.as_uri(), tmp_path / "page")
    assert visit.remote == []  # GX's templates alone fetch Bootstrap, jQuery, Vega and a logo
    shown = visible_text(visit.dom)
    assert "Status: Passed with warnings (4 rows quarantined" in shown
    assert "Unsuccessful Expectations 3" in shown and "C404" in shown
    visit = offline_dom(index.as_uri(), tmp_path / "index")
    assert visit.remote == []
    assert "orders /incoming/orders.csv Passed with warnings (4 rows quarantined" in (
        visible_text(visit.dom)
    )


def _raw(page: Path) -> str:
    return page.read_text(encoding="utf-8")


# --- Cross-check: the same data through Great Expectations' own pandas engine ---------------------

ROWS = [  # order_id, amount, status
    ("O1", 1.5, "paid"),
    ("O2", -2.0, "refunded"),
    ("O2", None, "bogus"),
    (None, 3.0, None),
    ("O5", -0.5, "x"),
    ("O6", 0.0, "paid"),
]
CROSS_CHECKED = {
    "not_null": (NOT_NULL, "order_id"),
    "unique": (UNIQUE, "order_id"),
    "between": (BETWEEN, "amount"),
    "in_set": (IN_SET, "status"),
}
COLUMNS = {"order_id": 0, "amount": 1, "status": 2}
RESULT_KEYS = (
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
    "missing_count",
    "missing_percent",
)


def _engine_counts(e: Expectation) -> tuple[int, int, list[Any]]:
    """What the SQL engine's predicates count for `e` on ROWS (see `validate._predicate`)."""
    values = [row[COLUMNS[e.column]] for row in ROWS]
    present = [v for v in values if v is not None]
    if e.type == NOT_NULL:
        flagged = [v for v in values if v is None]
    elif e.type == UNIQUE:  # a repeat after the value's first row
        flagged = [v for i, v in enumerate(values) if v is not None and v in values[:i]]
    elif e.type == BETWEEN:
        flagged = [v for v in present if v < e.kwargs["min_value"]]
    elif e.type == IN_SET:
        flagged = [v for v in present if v not in e.kwargs["value_set"]]
    else:
        raise AssertionError(e.type)
    partial = [None if v is None else str(v) for v in flagged]
    return len(flagged), len(values) - len(present), partial


@pytest.fixture(scope="module")
def cross_checked() -> tuple[Any, Any]:
    """(GX's own validation result, ours) for the same rows and the same orders expectations."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    orders = load_entity("orders")
    picked = tuple(_expectation(orders, *key) for key in CROSS_CHECKED.values())
    frame = pd.DataFrame(
        {
            "order_id": pd.array([r[0] for r in ROWS], dtype="string"),
            "amount": pd.array([r[1] for r in ROWS], dtype="Float64"),
            "status": pd.array([r[2] for r in ROWS], dtype="string"),
        }
    )
    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("followup").add_dataframe_asset("orders")
    batch = asset.add_batch_definition_whole_dataframe("all rows").get_batch(
        batch_parameters={"dataframe": frame}
    )
    suite = gx.ExpectationSuite(
        name="orders",
        expectations=[ExpectationConfiguration(type=e.type, kwargs=e.kwargs) for e in picked],
    )
    theirs = batch.validate(suite, result_format="SUMMARY")

    entity = dataclasses.replace(orders, expectations=picked)
    counts = {(e.type, e.column): _engine_counts(e) for e in picked}
    ours = validation_result(
        _check(counts, entity=entity, element_count=len(ROWS)), run_name="x", run_time=RUN_TIME
    )
    return theirs, ours


def _comparable(result) -> dict[str, Any]:
    import pandas as pd

    values = {k: result.result[k] for k in RESULT_KEYS if k in result.result}
    partial = result.result.get("partial_unexpected_list", [])
    values["partial"] = [None if pd.isna(v) else str(v) for v in partial]
    return {"success": result.success, **values}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "not_null",
        pytest.param(
            "unique",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the engine flags only the repeats after a value's first row; GX flags "
                "every row of a duplicated value (O2, O2: engine 1, GX 2)",
            ),
        ),
        "between",
        "in_set",
    ],
)
def test_our_result_means_what_gx_means(cross_checked, name):
    theirs, ours = cross_checked
    kind, column = CROSS_CHECKED[name]
    gx_result, our_result = (_result_for(r, kind, column) for r in (theirs, ours))
    expected = _comparable(gx_result)
    got = _comparable(our_result)
    assert got.keys() == expected.keys()
    assert got == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in expected.items()}


@pytest.mark.slow
def test_statistics_match_gx(cross_checked):
    theirs, ours = cross_checked
    assert ours.statistics == theirs.statistics
    assert ours.success == theirs.success
