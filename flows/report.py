"""The `report` flow: the analysis tables as the marketing report, an Excel workbook and one
self-contained HTML page with charts, and the headline figures and A/B table as a Prefect
artifact next to the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.analysis.publish import ab_markdown
from flows.artifacts import markdown_artifact
from flows.locking import writer_lock
from flows.notify import notify_failure
from flows.reporting.data import ReportData, load_report_data
from flows.reporting.formats import display, metric_kind
from flows.reporting.html import write_html
from flows.reporting.marketing import Period
from flows.reporting.names import label
from flows.reporting.workbook import write_workbook
from flows.settings import Settings

# The period a report reviews: the `report` deployment's is the week (Mondays), the
# `monthly-report` deployment's the month (the 1st); period_comparison holds both.
PERIOD_TITLES = {"week": "Weekly", "month": "Monthly"}
WORKBOOK_NAME = "followup_report.xlsx"
HTML_NAME = "followup_report.html"


@dataclass(frozen=True)
class ReportResult:
    workbook: Path
    html: Path
    headline: dict[str, float | None]


@task(name="load-report-data", cache_policy=NO_CACHE)
def load_task(db_path: Path, business_tz: str, period: Period) -> ReportData:
    """Every table the report shows, read only, text masked."""
    return load_report_data(db_path, business_tz, period)


@task(name="write-workbook", cache_policy=NO_CACHE)
def workbook_task(data: ReportData, path: Path) -> Path:
    return write_workbook(data, path)


@task(name="write-html", cache_policy=NO_CACHE)
def html_task(data: ReportData, path: Path) -> Path:
    return write_html(data, path)


def summary_markdown(data: ReportData, workbook: Path, page: Path, period: Period = "week") -> str:
    run = data.latest_run.isoformat() if data.latest_run else "none yet"
    title = f"# {PERIOD_TITLES[period]} follow-up report (latest plan run: {run})"
    lines = [title, "", "| figure | value |", "|---|---|"]
    for metric, value in data.headline().items():
        lines.append(f"| {label(metric)} | {display(value, metric_kind(metric)) or '–'} |")
    ab = data.ab_results
    records = ab.astype(object).where(ab.notna(), None).to_dict("records")
    lines += ["", "## A/B tests", "", ab_markdown(records)]
    lines += ["", f"Workbook: `{workbook}`", "", f"Page: `{page}`"]
    return "\n".join(lines)


@flow(name="report", log_prints=True, on_failure=[notify_failure], on_crashed=[notify_failure])
def report_flow(
    db: Path | None = None, out: Path = Path("var/report"), period: Period = "week"
) -> ReportResult:
    """Write `out/followup_report.xlsx` and `out/followup_report.html` from the database.

    Args:
        db: the DuckDB database file (empty: FOLLOWUP_DB).
        out: the folder for the workbook and the page.
        period: the period the report reviews, `week` or `month` (its title; its figures
            period on period are period_comparison's rows of that kind).
    """
    settings = Settings.from_env()
    db_path = Path(db) if db else settings.db_path
    out = Path(out)
    # DuckDB refuses even a read-only open while another process writes the file: wait our turn
    with writer_lock(db_path, settings.db_lock_timeout):
        data = load_task(db_path, settings.business_tz, period)
    workbook = workbook_task(data, out / WORKBOOK_NAME)
    page = html_task(data, out / HTML_NAME)
    get_run_logger().info("%s report: %s, %s", period, workbook, page)
    markdown_artifact(summary_markdown(data, workbook, page, period), key="report")
    return ReportResult(workbook=workbook, html=page, headline=data.headline())
