"""The `followup` command. Each subcommand calls the Prefect flow of the same step."""

from __future__ import annotations

import datetime as dt
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flows.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Customer follow-up (回访) automation: ingest, validate, model, plan, dispatch, learn.",
)
# Wide enough for the tables when the output is a file or a pipe (rich falls back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    _silence_teardown()
    raise typer.Exit(2)


def _silence_teardown() -> None:
    """Send what the interpreter prints while it shuts down to /dev/null.

    A run's state, still held by Prefect's background threads at exit, references DuckDB objects,
    and DuckDB's bindings (nanobind) then print pages of "leaked instance" lines at teardown,
    burying the one line that matters. Exiting normally matters more: it stops Prefect's
    ephemeral API server, which `os._exit` would orphan.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def _quiet_prefect() -> None:
    """Keep Prefect's console output to warnings and drop its tracebacks from the terminal: the
    one-line error is ours. The flow run's full logs still go to the Prefect API (the UI)."""
    import logging

    from prefect.logging.configuration import setup_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    setup_logging()
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL if os.environ.get("CI") else logging.WARNING)
                handler.addFilter(lambda record: record.levelno < logging.ERROR)


@contextmanager
def _one_line_errors(*ours: type[Exception]):
    """Our own errors are already one line; an API source, a playbook or a broken file gives
    the first line of its message. Anything else is a bug and keeps its traceback."""
    from adapters.sources.http_api import HttpSourceError

    try:
        yield
    except ours as exc:
        _fail(str(exc))
    except (HttpSourceError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc).splitlines()[0])


def _run_ingest(source: Path | None, db: Path, as_of: dt.date | None, sources_file: Path | None):
    _quiet_prefect()
    from flows.ingest import ingest_flow
    from flows.ingestion.load import IngestError

    with _one_line_errors(IngestError):
        return ingest_flow(source=source, db=db, as_of=as_of, sources_file=sources_file)


def _run_daily(
    source: Path | None,
    db: Path,
    as_of: dt.date,
    sources_file: Path | None,
    full_refresh: bool,
    dry_run: bool = True,
    channels: Path | None = None,
):
    _quiet_prefect()
    from flows.build import BuildError
    from flows.daily import daily_flow
    from flows.ingestion.load import IngestError

    with _one_line_errors(IngestError, BuildError):
        return daily_flow(
            as_of=as_of,
            source=source,
            db=db,
            sources_file=sources_file,
            full_refresh=full_refresh,
            dry_run=dry_run,
            channels=channels,
        )


def print_build(build) -> None:
    counts = ", ".join(f"{status} {n}" for status, n in sorted(build.counts.items()))
    console.print(
        f"dbt build as of {build.as_of}: {len(build.nodes)} nodes in {build.seconds:.1f} s "
        f"({counts})"
    )


def print_models(db: Path) -> None:
    """What the build wrote: the tables analysts read first."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        table = Table(title=f"Models in {db}")
        for heading in ("table", "rows", "what"):
            table.add_column(heading, justify="right" if heading == "rows" else "left")
        for name, what in _MODEL_SUMMARIES.items():
            n = con.execute(f"select count(*) from main.{name}").fetchone()[0]
            table.add_row(name, f"{n:,}", what)
        console.print(table)
        tiers = con.execute(
            """
            select tier, count(*) as n from customer_rfm group by tier
            order by case tier when 'diamond' then 1 when 'gold' then 2
                when 'silver' then 3 else 4 end
            """
        ).fetchall()
        console.print("tiers: " + ", ".join(f"{t} {n:,}" for t, n in tiers))
    finally:
        con.close()


_MODEL_SUMMARIES = {
    "customer_360": "one row per customer: purchases, interactions, complaints, contracts",
    "customer_rfm": "RFM scores and segment, tier, value tier, four dimensions, lifetimes",
    "customer_tags": "rule and manual tags with the time each began",
    "customer_tier_history": "tier and value tier on every run date",
    "tier_changes": "upgrades and downgrades since the previous run date",
    "fct_leads": "one row per lead with the time it reached each stage",
    "sales_funnel": "leads per stage and conversion, overall, per source channel and owner",
    "followups_due": "follow-ups the playbooks' triggers make due, per run date",
    "message_ledger": "every follow-up's fate: sent, failed, deferred, suppressed, held out",
    "manual_followups": "call and visit tasks, and escalations, for staff",
}


def print_report(report, db: Path) -> None:
    import duckdb

    from flows.ingestion.load import generic_reason

    table = Table(title=f"Loaded into {db} (load {report.load_id}, as of {report.as_of_date})")
    headings = ("entity", "read", "new", "changed", "same", "errors", "warnings", "in table")
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "entity" else "right")
    for load in report.loads:
        counts = (load.rows_read, load.inserted, load.updated, load.unchanged)
        table.add_row(
            load.entity,
            *(f"{n:,}" for n in (*counts, load.errors, load.warnings)),
            f"{report.table_rows.get(load.entity, 0):,}",
        )
    console.print(table)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            f"""
            select entity, severity, {generic_reason("r")} as reason, count(*) as n
            from (select entity, severity, unnest(reasons) as r from quarantine where load_id = ?)
            group by all order by n desc, entity, reason
            """,
            [report.load_id],
        ).fetchall()
    finally:
        con.close()
    quarantine = Table(title="Quarantined in this load, by reason (table `quarantine`)")
    for heading in ("entity", "severity", "reason", "rows"):
        quarantine.add_column(heading, justify="right" if heading == "rows" else "left")
    for entity, severity, reason, n in rows:
        quarantine.add_row(entity, severity, reason, f"{n:,}")
    if not rows:
        quarantine.add_row("-", "-", "nothing quarantined", "0")
    console.print(quarantine)


@app.command()
def ingest(
    source: Annotated[
        Path | None, typer.Option(help="Folder with customers.csv, orders.csv, …")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run date YYYY-MM-DD (default: today)")
    ] = None,
    sources: Annotated[
        Path | None, typer.Option(help="sources.yml naming HTTP API sources")
    ] = None,
) -> None:
    """Read, validate and load a source folder (and API sources) into the database."""
    if source is None and sources is None:
        _fail("give --source DIR, --sources sources.yml, or both")
    db = db or Settings.from_env().db_path
    report = _run_ingest(source, db, _date(as_of), sources)
    print_report(report, db)


@app.command()
def run(
    as_of: Annotated[str, typer.Option("--as-of", help="Run date YYYY-MM-DD (the morning of)")],
    source: Annotated[
        Path | None, typer.Option(help="Folder with customers.csv, orders.csv, …")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    sources: Annotated[
        Path | None, typer.Option(help="sources.yml naming HTTP API sources")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Nothing leaves the machine")] = False,
    channels: Annotated[
        Path | None, typer.Option(help="Channel settings (default: channels.yml, else outbox)")
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild the incremental facts from raw")
    ] = False,
) -> None:
    """One daily cycle for a date: ingest and validate, build the models, plan the follow-ups and
    send them (with --dry-run, nothing leaves the machine)."""
    run_date = _date(as_of)
    db = db or Settings.from_env().db_path
    if source is None and sources is None and not db.exists():
        _fail(f"{db} does not exist: give --source DIR to load data first")
    result = _run_daily(source, db, run_date, sources, full_refresh, dry_run, channels)
    if result.ingest is not None:
        print_report(result.ingest, db)
    print_build(result.build)
    print_models(db)
    print_plan(result.plan)
    print_dispatch(result.dispatch)
    _silence_teardown()


def print_dispatch(report) -> None:
    mode = "dry run: rendered, nothing sent" if report.dry_run else "sent"
    table = Table(title=f"Dispatch for {report.as_of} ({mode})")
    statuses = sorted({s for counts in report.counts.values() for s in counts})
    for heading in ("channel", *statuses):
        table.add_column(heading, justify="left" if heading == "channel" else "right")
    for channel, counts in sorted(report.counts.items()):
        table.add_row(channel, *(f"{counts.get(s, 0):,}" for s in statuses))
    if not report.counts:
        table.add_column("messages", justify="right")
        table.add_row("nothing due", "0")
    console.print(table)
    console.print(
        f"{report.templates_checked} templates rendered against a sample before sending; "
        f"{report.handed_over:,} outcomes in {report.seconds:.1f} s"
        + (f"; {report.expired:,} expired" if report.expired else "")
    )


def print_plan(report) -> None:
    mode = "dry run: nothing leaves the machine" if report.dry_run else "for dispatch"
    table = Table(title=f"Follow-ups for {report.as_of} ({mode}); vs the previous run")
    headings = ("playbook", "new", "carried", "planned", "deferred", "suppressed", "held out")
    for heading in (*headings, "dropped"):
        table.add_column(heading, justify="left" if heading == "playbook" else "right")
    keys = ("new", "carried", "planned", "deferred", "suppressed", "held_out", "dropped")
    for row in report.diff:
        table.add_row(row["playbook"], *(f"{row[k]:,}" for k in keys))
    if not report.diff:
        table.add_row("nothing due", *("0" for _ in keys))
    console.print(table)
    console.print(
        "ledger: "
        + (", ".join(f"{s} {n:,}" for s, n in sorted(report.counts.items())) or "no rows")
        + " (table message_ledger; the diff is in plan_diff)"
    )


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the company's files into")],
    as_of: Annotated[str, typer.Option("--as-of", help="History ends the day before this date")],
    customers: Annotated[int, typer.Option(help="Number of customers")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files)")] = 7,
    fmt: Annotated[str, typer.Option("--format", help="csv, xlsx or parquet")] = "csv",
) -> None:
    """Write a realistic demo company (customers, orders, events, contracts, staff)."""
    from flows.demo_company import generate_company

    counts = generate_company(out, customers=customers, seed=seed, as_of=_date(as_of), fmt=fmt)
    for entity, n in counts.items():
        console.print(f"{entity:>10}: {n:,} rows → {out / f'{entity}.{fmt}'}")


@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="Size of the generated company")] = 5000,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run date YYYY-MM-DD (default: today)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
) -> None:
    """Generate a demo company, load it, and run the daily cycle a month ago and today; messages
    go to the local outbox (nothing leaves the machine)."""
    from flows.demo_company import generate_company

    settings = Settings.from_env()
    db = db or settings.db_path
    run_date = _date(as_of) or dt.date.today()
    source = db.parent / "demo_source"
    console.print(f"Generating a company of {customers:,} customers into {source} …")
    # 1 % of the rows carry the mistakes real exports do, so the quarantine has something to say.
    counts = generate_company(
        source, customers=customers, seed=seed, as_of=run_date, fmt="csv", dirty=0.01
    )
    console.print("  " + ", ".join(f"{n:,} {e}" for e, n in counts.items()))
    report = _run_ingest(source, db, run_date, None)
    print_report(report, db)
    # Two run dates four weeks apart, so the tier history has a month to compare (tier_changes).
    for day in (run_date - dt.timedelta(days=28), run_date):
        result = _run_daily(None, db, day, None, full_refresh=False, dry_run=False)
        print_build(result.build)
    print_models(db)
    print_plan(result.plan)
    print_dispatch(result.dispatch)
    console.print(f"messages: {settings.outbox_dir}/<channel>.jsonl; call lists: manual_followups")
    console.print(
        f"\nNext: the tables are in {db} (raw.*, quarantine, and the models above), e.g.\n"
        f'  .venv/bin/python -c "import duckdb; '
        f"duckdb.connect('{db}', read_only=True).sql('from customer_rfm limit 5').show()\"\n"
        f"the validation report is {settings.data_docs_dir / 'index.html'}; "
        f"the models' documentation: make docs",
        soft_wrap=True,  # a command to copy must not be wrapped
    )
    _silence_teardown()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":
    main()
