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
    from flows.locking import DatabaseBusy

    try:
        yield
    except (*ours, DatabaseBusy) as exc:
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
    from flows.building.runner import BuildError
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


@app.command()
def intraday(
    at: Annotated[
        str | None,
        typer.Option(
            help="The run's moment, YYYY-MM-DDTHH:MM in the business time zone (default: now)"
        ),
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="Folder to load first (the day's leads, events, …)")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    sources: Annotated[
        Path | None, typer.Option(help="sources.yml naming HTTP API sources to load first")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Nothing leaves the machine")] = False,
    channels: Annotated[
        Path | None, typer.Option(help="Channel settings (default: channels.yml, else outbox)")
    ] = None,
    interval: Annotated[
        int, typer.Option(help="Minutes to the next run: tasks due before it are handed over now")
    ] = 30,
) -> None:
    """A run during the day for the playbooks declared `intraday: true` (a hot web-form lead:
    a call to its owner within 30 minutes). It stands on the morning's `followup run` and plans
    only what no run has planned yet."""
    moment = None
    if at is not None:
        try:
            moment = dt.datetime.fromisoformat(at)
        except ValueError:
            raise typer.BadParameter(f"{at!r} is not a time (YYYY-MM-DDTHH:MM)") from None
    db = db or Settings.from_env().db_path
    if not db.exists():
        _fail(f"{db} does not exist: run `followup run` for the day first")
    result = _run_intraday(moment, db, source, sources, dry_run, channels, interval)
    if result.ingest is not None:
        print_report(result.ingest, db)
    print_intraday(result, db)
    _silence_teardown()


def print_intraday(report, db: Path) -> None:
    import duckdb

    when = f"{report.at:%Y-%m-%d %H:%M}"
    if not report.playbooks:
        console.print(f"Intraday run at {when}: no playbook declares `intraday: true`")
        return
    console.print(
        f"Intraday run at {when} for {', '.join(report.playbooks)} "
        f"(on the {report.morning} morning plan)"
    )
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute("set TimeZone = ?", [str(report.at.tzinfo)])
        rows = con.execute(
            """
            select customer_id, playbook || ' / ' || step, channel, coalesce(owner_id, ''),
                strftime(due_at, '%H:%M'), status, coalesce(reason, '')
            from message_ledger
            where created_at = ? and origin = 'plan' and list_contains(?, playbook)
            order by due_at, customer_id
            """,
            [report.at, report.playbooks],
        ).fetchall()
    finally:
        con.close()
    table = Table(title=f"Decided at {when} (message_ledger)")
    for heading in ("customer", "follow-up", "channel", "owner", "due", "status", "reason"):
        table.add_column(heading)
    for row in rows[:30]:
        table.add_row(*row)
    if not rows:
        table.add_row("nothing new since the last run", *("" for _ in range(6)))
    elif len(rows) > 30:
        table.add_row(f"… and {len(rows) - 30:,} more", *("" for _ in range(6)))
    console.print(table)
    if report.dispatch is not None:
        print_dispatch(report.dispatch)


@app.command()
def feedback(
    source: Annotated[Path, typer.Option(help="Feedback file, or a folder with feedback.csv")],
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run date YYYY-MM-DD (default: today)")
    ] = None,
) -> None:
    """Load feedback (replies, survey answers, call outcomes, delivery receipts) and refresh the
    analysis models: campaign performance, satisfaction and the A/B results."""
    db = db or Settings.from_env().db_path
    if not db.exists():
        _fail(f"{db} does not exist: run `followup run` first (feedback answers its messages)")
    result = _run_feedback(source, db, _date(as_of))
    print_report(result.ingest, db)
    print_analysis(result.summary)
    _silence_teardown()


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for the workbook and the HTML page")] = Path(
        "var/report"
    ),
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
) -> None:
    """Write the marketing report: an Excel workbook and a single-file HTML page with charts
    (phones and emails masked)."""
    db = db or Settings.from_env().db_path
    if not db.exists():
        _fail(f"{db} does not exist: run `followup demo` or `followup run` first")
    result = _run_report(db, out)
    console.print(f"workbook: {result.workbook}\nHTML page: {result.html}")
    _silence_teardown()


@app.command()
def backtest(
    from_: Annotated[str, typer.Option("--from", help="First day to replay, YYYY-MM-DD")],
    to: Annotated[str, typer.Option("--to", help="Last day to replay (before today)")],
    playbook: Annotated[
        list[str] | None,
        typer.Option(help="A playbook to try (repeat it; a disabled one is switched on)"),
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="Source folder (default: the database's raw tables)")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    playbooks_dir: Annotated[
        Path | None, typer.Option("--playbooks", help="Folder of playbook declarations")
    ] = None,
) -> None:
    """Replay the plan for each day from --from to --to on the data as it stood that morning:
    who would have been contacted, cap and capacity collisions, and what those customers did
    anyway. Nothing is sent and the ledger is untouched; the `backtest_*` tables are written."""
    db = db or Settings.from_env().db_path
    if source is None and not db.exists():
        _fail(f"{db} does not exist: give --source, or run `followup run` first")
    result = _run_backtest(_date(from_), _date(to), db, source, playbook or [], playbooks_dir)
    print_backtest(result)
    _silence_teardown()


def print_backtest(report) -> None:
    from flows.backtest import baseline_text

    r = report.replay
    console.print(
        f"Backtest {r.start} → {r.end}: {r.days} days, {len(r.playbooks)} playbooks, "
        f"{report.seconds:.1f} s (nothing sent)"
    )
    table = Table(
        "playbook",
        "due",
        "planned",
        "deferred: cap",
        "deferred: capacity",
        "suppressed",
        "held out",
        "ordered anyway",
    )
    for p in report.per_playbook:
        table.add_row(
            f"[bold]{p['playbook']}[/]" if p["focus"] else p["playbook"],
            *(
                f"{p[k]:,}"
                for k in (
                    "due",
                    "planned",
                    "deferred_by_cap",
                    "deferred_by_capacity",
                    "suppressed",
                    "held_out",
                )
            ),
            baseline_text(p),
        )
    console.print(table)
    console.print(
        "Tables: backtest_decisions, backtest_daily, backtest_owner_load, backtest_collisions, "
        "backtest_outcomes, backtest_due; `followup report` adds a backtest section."
    )


def print_analysis(summary) -> None:
    """Headline figures, per-playbook results and the A/B table."""
    from flows.analysis.publish import kpi_text, lift_text, percent

    if summary is None:
        return
    kpis = summary.kpis
    if kpis:
        shown = ("response_rate", "conversion_rate", "csat", "nps", "repurchase_rate")
        console.print(
            "headline: "
            + ", ".join(f"{k.replace('_', ' ')} {kpi_text(k, kpis[k])}" for k in shown if k in kpis)
        )
    table = Table(title="A/B results (table ab_results)")
    headings = ("experiment", "variant", "n", "rate", "lift (95% CI)", "p", "P(beat)", "decision")
    for heading in headings:
        table.add_column(
            heading, justify="right" if heading in ("n", "rate", "p", "P(beat)") else "left"
        )
    for r in summary.ab:
        lift = "control" if r["is_control"] else lift_text(r, "[{}, {}]")
        table.add_row(
            r["experiment"],
            r["variant"],
            f"{r['n']:,}",
            percent(r["rate"]),
            lift,
            "" if r["p_value"] is None else f"{r['p_value']:.4f}",
            percent(r["chance_to_beat_control"]),
            r["decision"] or "",
        )
    if not summary.ab:
        table.add_row("no experiment has data yet", *("" for _ in headings[1:]))
    console.print(table)


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
        + (f"; {report.opted_out:,} stopped by an opt-out" if report.opted_out else "")
    )


def print_plan(report) -> None:
    from flows.planning.plan import DIFF_COUNTS

    mode = "dry run: nothing leaves the machine" if report.dry_run else "for dispatch"
    since = report.catch_up_from
    window = f"due {since} to {report.as_of}" if since and since < report.as_of else "due today"
    table = Table(title=f"Follow-ups for {report.as_of}, {window} ({mode})")
    table.add_column("playbook")
    for key in DIFF_COUNTS:
        table.add_column(key.replace("_", " "), justify="right")
    for row in report.diff:
        table.add_row(row["playbook"], *(f"{row[k]:,}" for k in DIFF_COUNTS))
    totals = report.totals()
    if report.diff:
        table.add_row("all", *(f"{totals[k]:,}" for k in DIFF_COUNTS), style="bold")
    else:
        table.add_row("nothing due", *("0" for _ in DIFF_COUNTS))
    console.print(table)
    console.print(
        f"{report.balance()}: each a row of message_ledger, the run's counts in plan_diff"
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
    from flows.demo.company import generate_company

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
    days: Annotated[int, typer.Option(help="Days of follow-ups to simulate before it")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    out: Annotated[Path, typer.Option(help="Folder for the report")] = Path("var/report"),
) -> None:
    """Generate a demo company, simulate `days` of follow-ups with their replies, survey scores and
    later orders (one A/B variant truly works better), run today's real cycle (messages go to
    the local outbox: nothing leaves the machine), load the feedback and write the report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flows.demo.company import generate_company
    from flows.demo.story import BETTER_VARIANT, EXPERIMENT, simulate_history
    from flows.locking import writer_lock

    settings = Settings.from_env()
    db = db or settings.db_path
    run_date = _date(as_of) or dt.date.today()
    source = db.parent / "demo_source"
    stages = [
        "generate the company",
        "load and validate",
        "build the models a month ago",
        f"simulate {days} days of follow-ups",
        "load the later orders and the feedback",
        f"today's real cycle ({run_date})",
        "write the report",
    ]
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    # Some steps write the database outside a flow (the later orders, the simulated past, the
    # month-ago build): the whole demo holds the writer lock, which its flows take again inside.
    with writer_lock(db), progress:
        bar = progress.add_task(stages[0], total=len(stages))

        def step(i: int) -> None:
            progress.update(bar, completed=i, description=stages[i] if i < len(stages) else "done")

        # 1 % of the rows carry the mistakes real exports do: the quarantine has something to say
        counts = generate_company(
            source, customers=customers, seed=seed, as_of=run_date, fmt="csv", dirty=0.01
        )
        progress.console.print(
            f"Generated {', '.join(f'{n:,} {e}' for e, n in counts.items())} into {source}"
        )
        step(1)
        report = _run_ingest(source, db, run_date, None)
        print_report(report, db)
        step(2)
        # a build four weeks back gives the tier history a month to compare (tier_changes)
        print_build(_run_past_build(db, run_date - dt.timedelta(days=28)))
        step(3)
        story = simulate_history(
            db,
            run_date - dt.timedelta(days=days),
            run_date - dt.timedelta(days=1),
            source / "later",
            settings.business_tz,
            seed=seed,
        )
        progress.console.print(
            f"Simulated {story.messages:,} messages ({story.held_out:,} held out) from "
            f"{story.start} to {story.end}: {story.feedback_rows:,} feedback rows and "
            f"{story.later_orders:,} later orders"
        )
        step(4)
        _run_ingest_files(db, run_date, {"orders": story.orders_file})
        loaded = _run_feedback(story.feedback_file, db, run_date, refresh_models=False)
        print_report(loaded.ingest, db)
        step(5)
        result = _run_daily(None, db, run_date, None, full_refresh=False, dry_run=False)
        print_build(result.build)
        step(6)
        written = _run_report(db, out)
        step(7)
    print_models(db)
    print_plan(result.plan)
    print_dispatch(result.dispatch)
    from flows.analysis.publish import read_summary

    summary = read_summary(db)
    print_analysis(summary)
    found = next(
        (r for r in summary.ab if r["experiment"] == EXPERIMENT and r["variant"] == BETTER_VARIANT),
        None,
    )
    if found is not None:
        verdict = (
            "found it" if found["decision"] == "ship" else f"did not find it ({found['decision']})"
        )
        console.print(
            f"The simulation made `{BETTER_VARIANT}` truly better in {EXPERIMENT}; "
            f"the A/B test {verdict}: lift {found['abs_lift']:+.1%} "
            f"[{found['ci_low']:+.1%}, {found['ci_high']:+.1%}], p = {found['p_value']:.2g}."
        )
    console.print(
        f"\nReport: {written.html} and {written.workbook}\n"
        f"messages: {settings.outbox_dir}/<channel>.jsonl; call lists: manual_followups\n"
        f"The tables are in {db} (raw.*, quarantine, the models above, campaign_performance, "
        f"ab_results), e.g.\n"
        f'  .venv/bin/python -c "import duckdb; '
        f"duckdb.connect('{db}', read_only=True).sql('from ab_results').show()\"\n"
        f"notebooks: FOLLOWUP_DB={db} .venv/bin/marimo run notebooks/ab_results.py",
        soft_wrap=True,  # a command to copy must not be wrapped
    )
    _silence_teardown()


def _run_past_build(db: Path, as_of: dt.date):
    """The models as of an earlier date, for the tier history: plain dbt, no Prefect task per
    node, and without the analysis models, which today's build makes (saves half a minute)."""
    import time

    from flows.building.runner import BuildError, BuildReport, build

    started = time.monotonic()
    with _one_line_errors(BuildError):
        nodes = build(db, as_of, Settings.from_env(), exclude="tag:analysis")
    return BuildReport(as_of, False, time.monotonic() - started, nodes)


def _run_ingest_files(db: Path, as_of: dt.date, files: dict[str, Path]):
    from flows.ingestion.load import IngestError, ingest

    with _one_line_errors(IngestError):
        return ingest(
            db, None, settings=Settings.from_env(), as_of=as_of, files=files, entities=tuple(files)
        )


def _run_feedback(source: Path, db: Path, as_of: dt.date | None, refresh_models: bool = True):
    _quiet_prefect()
    from flows.building.runner import BuildError
    from flows.feedback import feedback_flow
    from flows.ingestion.load import IngestError

    with _one_line_errors(IngestError, BuildError):
        return feedback_flow(source=source, db=db, as_of=as_of, refresh_models=refresh_models)


def _run_backtest(start, end, db, source, playbooks, playbook_dir):
    _quiet_prefect()
    from flows.backtest import backtest_flow
    from flows.backtesting.replay import BacktestError
    from flows.building.runner import BuildError
    from flows.ingestion.load import IngestError
    from flows.planning.declarations import PlaybookError

    with _one_line_errors(BacktestError, BuildError, IngestError, PlaybookError):
        return backtest_flow(
            start=start,
            end=end,
            db=db,
            source=source,
            playbooks=playbooks,
            playbook_dir=playbook_dir,
        )


def _run_intraday(at, db, source, sources_file, dry_run, channels, interval):
    _quiet_prefect()
    from flows.building.runner import BuildError
    from flows.ingestion.load import IngestError
    from flows.intraday import IntradayError, intraday_flow
    from flows.planning.declarations import PlaybookError

    with _one_line_errors(IntradayError, BuildError, IngestError, PlaybookError):
        return intraday_flow(
            at=at,
            db=db,
            source=source,
            sources_file=sources_file,
            channels=channels,
            dry_run=dry_run,
            interval_minutes=interval,
        )


def _run_report(db: Path, out: Path):
    _quiet_prefect()
    from flows.report import report_flow

    with _one_line_errors():
        return report_flow(db=db, out=out)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":
    main()
