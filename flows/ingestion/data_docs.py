"""Great Expectations Data Docs of the checks our DuckDB engine ran.

The rules are GX suites, so the report is GX's own: each `CheckResult` becomes the
`ExpectationSuiteValidationResult` GX would have produced for the same counts, and GX's renderers
(`ValidationResultsPageRenderer`, `ExpectationSuitePageRenderer`, `DefaultJinjaPageView`) turn it
into the usual pages, laid out as a GX site does (`validations/<suite>/<run name>/<run time>/`,
`expectations/<suite>.html`, `static/`). No data context is involved, so nothing is written outside
`site_dir`. Each page's validation result is kept next to it as JSON, and the index is rebuilt from
those files, so earlier runs stay listed.

Each page and the index say how the load went (`data_docs_site`): "Passed with warnings" and how
many rows were quarantined when rules found bad rows (GX alone would say "Failed"), "Failed" when
the load stopped. The site reads offline: no page fetches anything when opened.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.ingestion import data_docs_site as site
from flows.ingestion.data_docs_site import FAILED, SUCCEEDED, WARNED

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    from flows.ingestion.entities import Expectation
    from flows.ingestion.load import EntityLoad
    from flows.ingestion.validate import CheckParams, CheckResult, ExpectationOutcome

_NOT_NULL = "expect_column_values_to_not_be_null"
_EXISTS = "expect_column_to_exist"
_SEVERITY = {"fatal": "critical", "error": "critical", "warning": "warning"}  # GX FailureSeverity


def load_status(
    check: CheckResult, load: EntityLoad | None = None, stopped: str | None = None
) -> dict[str, Any]:
    """How the load of `check`'s file went, in our terms (GX's `success` is false on any bad row).

    `stopped` is the error that stopped the run (nothing was loaded); `load` gives the counts of
    rows quarantined (`errors`: broken `error` rules, malformed lines) and loaded with a field
    cleared (`warnings`).
    """
    if stopped:
        return {"status": FAILED, "stopped": stopped}
    found_bad = any(o.unexpected_count for o in check.outcomes) or bool(check.source.malformed)
    if load is not None:
        found_bad = found_bad or bool(load.errors or load.warnings)
    if not found_bad:
        return {"status": SUCCEEDED}
    counts = (
        {} if load is None else {"quarantined_rows": load.errors, "cleared_rows": load.warnings}
    )
    return {"status": WARNED, **counts}


def validation_result(
    check: CheckResult,
    *,
    run_name: str,
    run_time: dt.datetime,
    load: dict[str, Any] | None = None,
) -> ExpectationSuiteValidationResult:
    """The GX validation result our SQL engine's counts amount to.

    An expectation succeeds when it found no unexpected row. `expect_column_to_exist` expectations
    are successes: a missing required column stops the load before any check. Suite parameters
    with a value (`future_cutoff`, `as_of_date`) are resolved into the kwargs; a foreign key keeps
    GX's `{"$PARAMETER": ...}` form and gets a description, since its value set is a table.
    `load` (a `load_status`) is kept in `meta.followup.load`; GX's own `success` stays as GX
    computes it.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    run_time = _utc(run_time)
    outcomes = {o.expectation.index: o for o in check.outcomes}
    results = []
    for e in check.entity.expectations:
        if e.type == _EXISTS:
            result: dict[str, Any] = {}
            success = True
        elif e.index in outcomes:
            result = _result(outcomes[e.index], check.element_count)
            success = result["unexpected_count"] == 0
        else:
            continue  # not evaluated, so not reported (GX counts evaluated expectations only)
        results.append(
            ExpectationValidationResult(
                success=success, expectation_config=_configuration(e, check.params), result=result
            )
        )
    statistics = calc_validation_statistics(results)
    entity, source = check.entity.name, check.source
    return ExpectationSuiteValidationResult(
        success=statistics.success,
        results=results,
        suite_name=entity,
        suite_parameters=_suite_parameters(check),
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta={
            "great_expectations_version": gx.__version__,
            "run_id": {"run_name": run_name, "run_time": run_time.isoformat()},
            "batch_spec": {
                "data_asset_name": source.path.name,
                "path": str(source.path),
                "rows_checked": check.element_count,
                "malformed_lines": len(source.malformed),
                "engine": "DuckDB SQL (flows.ingestion.validate)",
            },
            "active_batch_definition": {
                "datasource_name": "followup",
                "data_connector_name": "duckdb",
                "data_asset_name": entity,
                "batch_identifiers": {"path": str(source.path)},
            },
            "followup": {
                "entity": entity,
                "source": str(source.path),
                "run_name": run_name,
                "as_of_date": check.params.as_of_date.isoformat(),
                "business_tz": check.params.business_tz,
                "load": load or load_status(check),
            },
        },
        batch_id=f"followup-{entity}",
    )


def write_data_docs(
    checks: list[CheckResult],
    site_dir: Path,
    *,
    run_name: str,
    run_time: dt.datetime,
    loads: Iterable[EntityLoad] = (),
    stopped: str | None = None,
) -> Path:
    """Render one GX page per entity validation into `site_dir` and rebuild its `index.html`.

    `loads` are the run's loads (their quarantined rows are counted on the pages); `stopped` is
    the error that stopped the run, when it did. Pages of earlier runs are kept; the index lists
    every run found under `site_dir`, newest first. Returns the index path.
    """
    from great_expectations.render.renderer import (
        ExpectationSuitePageRenderer,
        ValidationResultsPageRenderer,
    )

    site_dir = Path(site_dir)
    view = site.view(site_dir)
    by_entity = {load.entity: load for load in loads}
    run_time = _utc(run_time)
    run_folder = Path(_safe(run_name), run_time.strftime("%Y%m%dT%H%M%S.%fZ"))
    for check in checks:
        suite = _safe(check.entity.name)
        load = load_status(check, by_entity.get(check.entity.name), stopped)
        result = validation_result(check, run_name=run_name, run_time=run_time, load=load)
        page = (
            site_dir / "validations" / suite / run_folder / f"{_safe(check.source.path.name)}.html"
        )
        document = ValidationResultsPageRenderer().render(result)
        _say_load_status(document.sections[0].content_blocks[0], load)
        document.sections[0].content_blocks.insert(2, _severity_table(result))  # after Statistics
        site.write_page(view, document, page, site_dir)
        page.with_suffix(site.RESULT_SUFFIX).write_text(
            json.dumps(result.to_json_dict(), ensure_ascii=False, indent=1), encoding="utf-8"
        )
        # The validation page links its suite; render the suite as it was declared for this run.
        suite_document = ExpectationSuitePageRenderer().render(_suite(check))
        site.write_page(view, suite_document, site_dir / "expectations" / f"{suite}.html", site_dir)
    index = site_dir / "index.html"
    site.write_page(view, site.index_document(site_dir), index, site_dir)
    return index


def _say_load_status(header: Any, load: dict[str, Any]) -> None:
    """GX's overview header says "Status: Failed" on any bad row; it says the load's status."""
    icon, colour, words = site.status_words(load)
    params = header.subheader.string_template["params"]
    params["success"] = words
    params["html_success_icon"] = f'<i class="fas {icon} {colour}" aria-hidden="true"></i>'


def _utc(moment: dt.datetime) -> dt.datetime:
    """GX prints run times with a `Z`; a naive time is taken to be UTC already."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _safe(name: str) -> str:
    """A path segment: word characters (Chinese included), dots and dashes."""
    return re.sub(r"[^\w.-]+", "_", name).strip(".") or "_"


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


# columns holding contact data: their rejected values are shown masked, as everywhere else
_CONTACT = re.compile(r"phone|mobile|tel|email|mail|wechat|contact", re.IGNORECASE)


def _shown(value: Any, contact: bool) -> Any:
    if not contact or not isinstance(value, str) or not value:
        return value
    return value[:3] + "****" + value[-2:] if len(value) > 7 else "****"


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole > 0 else None


def _result(outcome: ExpectationOutcome, element_count: int) -> dict[str, Any]:
    """GX's SUMMARY result dict for a column map expectation (`_format_map_output`)."""
    e, unexpected = outcome.expectation, outcome.unexpected_count
    contact = _CONTACT.search(e.column or "") is not None
    partial = [_shown(_json_value(v), contact) for v in outcome.partial_unexpected]
    counts = Counter(partial).most_common()
    result: dict[str, Any] = {
        "element_count": element_count,
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, element_count),
        "partial_unexpected_list": partial,
        "partial_unexpected_counts": [
            {"value": v, "count": n} for v, n in sorted(counts, key=lambda x: (-x[1], str(x[0])))
        ],
    }
    if e.type == _NOT_NULL:
        return result  # GX counts the nulls as unexpected here, and reports no missing share
    missing = outcome.missing_count  # the rows this check skipped as empty
    present = element_count - missing
    result.update(
        unexpected_percent=_percent(unexpected, present),
        missing_count=missing,
        missing_percent=_percent(missing, element_count),
        unexpected_percent_total=_percent(unexpected, element_count),
        unexpected_percent_nonmissing=_percent(unexpected, present),
    )
    return result


def _foreign_key(value: Any) -> str | None:
    """`customers.customer_id` for `{"$PARAMETER": "customers.customer_id"}` (our convention)."""
    if isinstance(value, dict) and "." in str(value.get("$PARAMETER", "")):
        return value["$PARAMETER"]
    return None


def _configuration(e: Expectation, params: CheckParams) -> Any:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    kwargs, description, notes = {}, None, [f"Severity: **{e.severity}**"]
    for key, value in e.kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            notes.append(f"`{key}` is the suite parameter `{value['$PARAMETER']}`.")
        if reference := _foreign_key(value):
            other, column = reference.split(".", 1)
            kwargs[key] = value  # GX's renderer would spell out a value set; this one is a table
            description = f"{e.column} values must be a {column} found in {other}."
        else:
            kwargs[key] = _json_value(params.resolve(value))
    return ExpectationConfiguration(
        type=e.type,
        kwargs=kwargs,
        meta={"severity": e.severity, "index": e.index},
        notes=notes,
        description=description,
        severity=_SEVERITY.get(e.severity, "critical"),
    )


def _suite_parameters(check: CheckResult) -> dict[str, Any]:
    values = {}
    for e in check.entity.expectations:
        for value in e.kwargs.values():
            if isinstance(value, dict) and "$PARAMETER" in value and not _foreign_key(value):
                values[value["$PARAMETER"]] = _json_value(check.params.resolve(value))
    return values


def _suite(check: CheckResult) -> Any:
    """The entity's suite with this run's parameter values, as GX's suite page renders it."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite

    entity = check.entity
    return ExpectationSuite(
        name=entity.name,
        expectations=[_configuration(e, check.params) for e in entity.expectations],
        meta={"great_expectations_version": gx.__version__},
        notes=entity.description or None,
    )


def _severity_table(result: ExpectationSuiteValidationResult) -> Any:
    """Failures by our severity: GX calls the run failed even when only warnings failed."""
    from great_expectations.render import RenderedStringTemplateContent, RenderedTableContent

    evaluated, failed = Counter(), Counter()
    for r in result.results:
        severity = r.expectation_config.meta.get("severity", "error")
        evaluated[severity] += 1
        failed[severity] += not r.success
    return RenderedTableContent(
        header=RenderedStringTemplateContent(
            content_block_type="string_template",
            string_template={
                "template": "By severity",
                "tag": "h6",
                "styling": {"classes": ["m-0"]},
            },
        ),
        header_row=["Severity", "Evaluated", "Unsuccessful"],
        table=[[s, evaluated[s], failed[s]] for s in ("fatal", "error", "warning") if evaluated[s]],
        styling={
            "classes": ["col-6", "table-responsive", "mt-1", "p-1"],
            "body": {"classes": ["table", "table-sm"]},
        },
    )
