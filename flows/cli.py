"""The `followup` command. Each subcommand calls the Prefect flow of the same step."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.commands import (
    current_settings,
    run_backtest,
    run_daily,
    run_feedback,
    run_ingest,
    run_ingest_files,
    run_intraday,
    run_past_build,
    run_report,
    run_tasks,
)
from flows.console import (
    console,
    fail,
    fail_unforeseen,
    one_line_errors,
    print_analysis,
    print_backtest,
    print_build,
    print_demo_end,
    print_dispatch,
    print_intraday,
    print_models,
    print_plan,
    print_report,
    print_tasks,
    silence_teardown,
)
from flows.rundate import RunDate

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # no input may make the command print a traceback: main() keeps it for the log
    pretty_exceptions_enable=False,
    help="Customer follow-up (回访) automation: ingest, validate, model, plan, dispatch, learn.",
)


def _version(given: bool) -> None:
    if given:
        from importlib.metadata import version

        console.print(f"followup {version('followup')}")
        raise typer.Exit


@app.callback()
def _before_any_command(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version", callback=_version, is_eager=True)
    ] = False,
) -> None:
    current_settings()  # checked before a command does anything, whatever its options


def _given(**paths: Path | None) -> None:
    """Every path an option names exists, checked before Prefect or dbt starts: one line."""
    for option, path in paths.items():
        if path is not None and not path.exists():
            fail(f"{path}: no such file or folder (--{option.replace('_', '-')})")


@contextlib.contextmanager
def _reading(db: Path):
    """The writer lock while a command's summary reads the database: DuckDB lets no process read
    a file another one is writing, and another run may have started once the flow let go."""
    from flows.locking import writer_lock

    with one_line_errors(), writer_lock(db, current_settings().db_lock_timeout):
        yield


def _date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _moment(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a time (YYYY-MM-DDTHH:MM)") from None


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
        fail("give --source DIR, --sources sources.yml, or both")
    _given(source=source, sources=sources)
    db = db or current_settings().db_path
    report = run_ingest(source, db, _date(as_of), sources)
    with _reading(db):
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
    _given(source=source, sources=sources, channels=channels)
    db = db or current_settings().db_path
    if source is None and sources is None and not db.exists():
        fail(f"{db} does not exist: give --source DIR to load data first")
    result = run_daily(source, db, run_date, sources, full_refresh, dry_run, channels)
    with _reading(db):
        if result.ingest is not None:
            print_report(result.ingest, db)
        print_build(result.build)
        print_models(db)
        print_plan(result.plan)
        print_dispatch(result.dispatch)
    silence_teardown()


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
    moment = _moment(at)
    _given(source=source, sources=sources, channels=channels)
    db = db or current_settings().db_path
    if not db.exists():
        fail(f"{db} does not exist: run `followup run` for the day first")
    result = run_intraday(moment, db, source, sources, dry_run, channels, interval)
    with _reading(db):
        if result.ingest is not None:
            print_report(result.ingest, db)
        print_intraday(result, db)
    silence_teardown()


@app.command()
def feedback(
    source: Annotated[
        Path | None, typer.Option(help="Feedback file, or a folder with feedback.csv")
    ] = None,
    pull_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Pull the delivery reports and replies of this channel (aliyun_sms, tencent_sms)",
        ),
    ] = None,
    channels: Annotated[
        Path | None, typer.Option(help="Channel settings (default: channels.yml)")
    ] = None,
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run date YYYY-MM-DD (default: today)")
    ] = None,
) -> None:
    """Load feedback (replies, survey answers, call outcomes, delivery receipts), from a file or
    pulled from an SMS provider, and refresh the analysis models: campaign performance,
    satisfaction and the A/B results."""
    if (source is None) == (pull_from is None):
        fail("give either --source FILE or --from CHANNEL")
    _given(source=source, channels=channels)
    db = db or current_settings().db_path
    if not db.exists():
        fail(f"{db} does not exist: run `followup run` first (feedback answers its messages)")
    result = run_feedback(source, db, _date(as_of), pull_from=pull_from, channels=channels)
    with _reading(db):
        print_report(result.ingest, db)
        print_analysis(result.summary)
    silence_teardown()


@app.command()
def tasks(
    source: Annotated[Path, typer.Option(help="A returned call list (.xlsx, .csv) or a folder")],
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
    at: Annotated[
        str | None, typer.Option(help="When the lists came back, YYYY-MM-DDTHH:MM (default: now)")
    ] = None,
) -> None:
    """Load the call and visit lists staff return (结果, 满意度, 下次联系时间, 备注): their
    tasks are done, an agreed next contact becomes a task, execution and call outcomes count."""
    _given(source=source)
    db = db or current_settings().db_path
    if not db.exists():
        fail(f"{db} does not exist: run `followup run` first (a list answers its tasks)")
    result = run_tasks(source, db, _moment(at))
    with _reading(db):
        print_tasks(result, db)
    silence_teardown()


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for the workbook and the HTML page")] = Path(
        "var/report"
    ),
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
) -> None:
    """Write the marketing report: an Excel workbook and a single-file HTML page with charts
    (phones and emails masked)."""
    db = db or current_settings().db_path
    if not db.exists():
        fail(f"{db} does not exist: run `followup demo` or `followup run` first")
    result = run_report(db, out)
    console.print(f"workbook: {result.workbook}\nHTML page: {result.html}")
    silence_teardown()


@app.command()
def notebooks(
    out: Annotated[Path, typer.Option(help="Folder for the pages")] = Path("var/notebooks"),
    db: Annotated[Path | None, typer.Option(help="DuckDB database file")] = None,
) -> None:
    """Run the marimo notebooks and write them as pages that need no internet (phones and emails
    masked); read them through a web server, e.g. `python -m http.server -d var/notebooks`."""
    from flows.reporting.notebook_export import NotebookExportError, export_notebooks

    settings = current_settings()
    db = db or settings.db_path
    if not db.exists():
        fail(f"{db} does not exist: run `followup demo` or `followup run` first")
    try:
        pages = export_notebooks(db.absolute(), out, settings.db_lock_timeout)
    except NotebookExportError as exc:
        fail(str(exc))
    console.print("\n".join(f"notebook page: {page}" for page in pages))


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
    _given(source=source, playbooks=playbooks_dir)
    db = db or current_settings().db_path
    if source is None and not db.exists():
        fail(f"{db} does not exist: give --source, or run `followup run` first")
    result = run_backtest(_date(from_), _date(to), db, source, playbook or [], playbooks_dir)
    print_backtest(result)
    silence_teardown()


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

    from flows.demo.calls import simulate_calls
    from flows.demo.company import generate_company
    from flows.demo.story import simulate_history
    from flows.locking import writer_lock

    settings = current_settings()
    db = db or settings.db_path
    run_date = RunDate.of(settings.business_tz, _date(as_of)).day
    source = db.parent / "demo_source"
    stages = [
        "generate the company",
        "load and validate",
        "build the models a month ago",
        f"simulate {days} days of follow-ups",
        "load the later orders, the feedback and a returned call list",
        f"today's real cycle ({run_date})",
        "write the report",
    ]
    progress = Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    # Some steps write the database outside a flow (the later orders, the simulated past, the
    # month-ago build): the whole demo holds the writer lock, which its flows take again inside.
    with writer_lock(db, settings.db_lock_timeout), progress:
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
        report = run_ingest(source, db, run_date, None)
        print_report(report, db)
        step(2)
        # a build four weeks back gives the tier history a month to compare (tier_changes)
        print_build(run_past_build(db, run_date - dt.timedelta(days=28)))
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
        print_report(run_ingest_files(db, run_date, {"orders": story.orders_file}), db)
        loaded = run_feedback(story.feedback_file, db, run_date, refresh_models=False)
        print_report(loaded.ingest, db)
        calls = simulate_calls(
            db, run_date, settings.outbox_dir.parent / "call_lists", source / "returned",
            settings.business_tz,
        )  # fmt: skip
        progress.console.print(
            f"Handed {calls.handed} calls to their owners over two days; one owner returned "
            f"{calls.returned_list} with {calls.returned_rows} calls filled in"
        )
        evening = dt.datetime.combine(run_date - dt.timedelta(days=1), dt.time(19, 0))
        print_tasks(run_tasks(calls.returned_list, db, evening, refresh_models=False), db)
        step(5)
        result = run_daily(None, db, run_date, None, full_refresh=False, dry_run=False)
        print_build(result.build)
        step(6)
        written = run_report(db, out)
        step(7)
    print_models(db)
    print_plan(result.plan)
    print_dispatch(result.dispatch)
    from flows.analysis.publish import read_summary

    summary = read_summary(db)
    print_analysis(summary)
    print_demo_end(summary, settings, RunDate.of(settings.business_tz, run_date), db, written)
    silence_teardown()


def main() -> None:
    """The `followup` command: even an error nobody foresaw is one line (the traceback: log)."""
    try:
        app()
    except Exception as exc:  # the last guard: every error we foresaw is one line already
        try:
            fail_unforeseen(exc)
        except typer.Exit as stop:  # typer has returned: exit as it would have
            sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
