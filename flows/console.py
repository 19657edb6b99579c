"""What the `followup` command prints: each step's report as a table or a line, on one console
wide enough for the tables when the output is a file or a pipe, and an error as one line."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flows.progress import prefect_console_handlers, shown_on
from flows.secrets import redact

# rich falls back to 80 columns when the output is not a terminal
# Never markup: what is printed holds user text (file names, headers, playbook names), and a
# `[/]` in it must print as it is, not stop the command. Styles are given as styles.
console = Console(width=None if sys.stdout.isatty() else 120, markup=False)
err = Console(stderr=True, markup=False)


def fail(message: str) -> None:
    line = Text.assemble(("error:", "bold red"), " ", redact(message))
    err.print(line, highlight=False, soft_wrap=True)
    silence_teardown()
    raise typer.Exit(2)


def silence_teardown() -> None:
    """Send what the interpreter prints while it shuts down to /dev/null.

    A run's state, still held by Prefect's background threads at exit, references DuckDB objects,
    and DuckDB's bindings (nanobind) then print pages of "leaked instance" lines at teardown,
    burying the one line that matters. Exiting normally matters more: it stops Prefect's
    ephemeral API server, which `os._exit` would orphan.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


def quiet_prefect() -> None:
    """Keep Prefect's console output to warnings and drop its tracebacks from the terminal: the
    one-line error is ours. The flow run's full logs still go to the Prefect API (the UI)."""
    import logging

    from prefect.logging.configuration import setup_logging

    setup_logging()
    for handler in prefect_console_handlers():
        handler.setLevel(logging.CRITICAL if os.environ.get("CI") else logging.WARNING)
        handler.addFilter(lambda record: record.levelno < logging.ERROR)


@contextmanager
def one_line_errors(*ours: type[Exception]):
    """Our own errors are already one line; an API source, a playbook or a broken file gives
    the first line of its message. Anything else is a bug and keeps its traceback."""
    from adapters.sources.http_api import HttpSourceError
    from flows.locking import DatabaseBusy

    try:
        yield
    except (*ours, DatabaseBusy) as exc:
        fail(str(exc))
    except (HttpSourceError, ValueError, FileNotFoundError) as exc:
        fail(str(exc).splitlines()[0])


def progress_shown(screen: Console | None = None):
    """While the block runs, how far the ingest and the dbt build have come, one line each
    ("building ━━━━━ 12/48 customer_rfm"), gone when the block ends. On stderr and only at a
    terminal: a pipe, a log, CI and a Prefect worker see nothing. Under a display already live on
    stdout (the demo's stages) it nests there, so the two never fight over the terminal."""
    if screen is None:
        nested = bool(getattr(console, "_live_stack", None))
        screen = console if nested else err if sys.stderr.isatty() else None
    return shown_on(screen)


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
    table = Table(title=f"Loaded into {db} (load {report.load_id}, as of {report.as_of_date})")
    headings = ("entity", "read", "new", "changed", "same", "errors", "warnings", "in table")
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "entity" else "right")
    for load in report.loads:
        counts = (load.rows_read, load.inserted, load.updated, load.unchanged)
        legacy = load.encoding not in ("utf-8", "utf-8-sig", "xlsx", "parquet")
        table.add_row(
            f"{load.entity} ({load.encoding})" if legacy else load.entity,
            *(f"{n:,}" for n in (*counts, load.errors, load.warnings)),
            f"{report.table_rows.get(load.entity, 0):,}",
        )
    console.print(table)
    print_quarantine(db, [report.load_id])


def print_quarantine(db: Path, load_ids: list[str]) -> None:
    import duckdb

    from flows.ingestion.load import generic_reason

    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            f"""
            select entity, severity, {generic_reason("r")} as reason, count(*) as n
            from (select entity, severity, unnest(reasons) as r from quarantine
                  where list_contains(?, load_id))
            group by all order by n desc, entity, reason
            """,
            [load_ids],
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
            Text(p["playbook"], style="bold") if p["focus"] else p["playbook"],
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
    # what sending changes comes first: each step's sent arm against its holdout
    by_experiment = {(r["experiment"], r["variant"]): r for r in summary.ab}
    for (experiment, variant), r in by_experiment.items():
        held = by_experiment.get((experiment, "holdout"))
        if variant == "sent" and experiment.endswith(".holdout") and held and r["rate"] is not None:
            console.print(
                f"sending {experiment.removesuffix('.holdout')}: {percent(r['rate'])} of "
                f"{r['n']:,} customers converted against {percent(held['rate'])} of "
                f"{held['n']:,} held out, lift {lift_text(r, '[{}, {}]')}"
            )
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
    if report.carried:
        console.print(
            f"Back on today's call lists: {report.carried['overdue']:,} overdue tasks (逾期), "
            f"{_next_contacts(report.carried['next_contact'])}"
        )


def _next_contacts(n: int) -> str:
    return f"{n:,} agreed next contact{'' if n == 1 else 's'}"


def print_tasks(report, db: Path) -> None:
    """The returned lists loaded, what was quarantined, and the tasks' state after."""
    table = Table(title=f"Returned call lists loaded into {db}")
    headings = ("list", "rows", "not filled", "new", "changed", "same", "errors")
    for heading in headings:
        table.add_column(heading, justify="left" if heading == "list" else "right")
    for load in report.loads:
        counts = (load.rows_read, load.skipped, load.inserted, load.updated, load.unchanged)
        table.add_row(Path(load.source_file).name, *(f"{n:,}" for n in (*counts, load.errors)))
    console.print(table)
    print_quarantine(db, report.load_ids)
    console.print(
        f"Tasks: {report.done:,} done, {report.open:,} open ({report.overdue:,} overdue), "
        f"{_next_contacts(report.next_contacts)} waiting"
    )


def print_demo_end(summary, settings, run, db: Path, written) -> None:
    """The demo's last words: the staff's tasks, whether the A/B test found the planted better
    variant, and where to look next."""
    import duckdb

    from flows.demo.story import BETTER_VARIANT, EXPERIMENT
    from flows.tasks import TasksReport, count_tasks

    tasks = TasksReport(as_of=run.day)
    con = duckdb.connect(str(db), read_only=True)
    try:
        count_tasks(con, run, tasks)
    finally:
        con.close()
    console.print(
        f"Call and visit tasks after today's run: {tasks.done:,} done, {tasks.open:,} open, "
        f"{tasks.overdue:,} of them overdue (逾期, back on today's lists), "
        f"{_next_contacts(tasks.next_contacts)}"
    )

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
        f"messages: {settings.outbox_dir}/<channel>.jsonl; "
        f"call lists: {settings.outbox_dir.parent / 'call_lists'}/<day>/<owner>.xlsx\n"
        f"The tables are in {db} (raw.*, quarantine, the models above, campaign_performance, "
        f"ab_results), e.g.\n"
        f'  .venv/bin/python -c "import duckdb; '
        f"duckdb.connect('{db}', read_only=True).sql('from ab_results').show()\"\n"
        f"notebooks: FOLLOWUP_DB={db} .venv/bin/marimo run notebooks/ab_results.py",
        soft_wrap=True,  # a command to copy must not be wrapped
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


def fail_unforeseen(exc: Exception) -> None:
    """An error nobody foresaw (a bug): its first line, its traceback to the log."""
    where = log_traceback(exc)
    first = (redact(str(exc)).strip().splitlines() or [""])[0][:300]  # redacted, then cut
    fail(f"{type(exc).__name__}: {first} (a bug: its traceback is in {where})")


def log_traceback(exc: Exception) -> Path | str:
    """Append `exc`'s traceback to var/log/followup.log (at DEBUG); returns where it went."""
    import logging
    import traceback

    path = Path("var/log/followup.log")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return "no log: var/log is not writable"
    log = logging.getLogger("followup.cli")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("".join(traceback.format_exception(exc)))
    finally:
        log.removeHandler(handler)
        handler.close()
    return path
